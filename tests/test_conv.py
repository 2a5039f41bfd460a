"""Convolutions: adjointness of the transposed conv, and the im2col / mixed CPU implementations vs XLA."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdtp import conv as convs


@pytest.mark.parametrize("impl", convs.CONV_IMPLS)
@pytest.mark.parametrize(
    "k,stride,pad,hw", [(5, 1, 2, 8), (3, 1, 1, 8), (3, 2, 1, 9), (4, 2, 1, 8), (3, 1, 0, 6)]
)
def test_conv_transpose_is_adjoint_of_conv(k, stride, pad, hw, impl):
    kx, ky, kw = jax.random.split(jax.random.key(0), 3)
    w = jax.random.normal(kw, (k, k, 3, 5))
    x = jax.random.normal(kx, (2, hw, hw, 3))
    fx = convs.conv(x, w, stride, pad, impl)
    y = jax.random.normal(ky, fx.shape)
    gy = convs.conv_transpose(y, w, stride, pad, (hw, hw), impl)
    chex.assert_shape(gy, x.shape)
    np.testing.assert_allclose(jnp.vdot(gy, x), jnp.vdot(y, fx), rtol=1e-5)


@pytest.mark.parametrize("k,stride,pad", [(5, 1, 2), (3, 1, 1), (3, 2, 1)])
def test_im2col_conv_equals_xla_conv_and_its_gradients(k, stride, pad):
    kx, ky, kw = jax.random.split(jax.random.key(1), 3)
    w = jax.random.normal(kw, (k, k, 3, 4))
    x = jax.random.normal(kx, (2, 9, 9, 3))
    ref = convs.conv(x, w, stride, pad, "xla")
    chex.assert_trees_all_close(convs.conv(x, w, stride, pad, "im2col"), ref, atol=1e-4, rtol=1e-5)
    y = jax.random.normal(ky, ref.shape)

    def loss(w, impl):
        return jnp.sum(convs.conv_transpose(y, w, stride, pad, (9, 9), impl) ** 2)

    for impl in ("im2col", "mixed"):
        chex.assert_trees_all_close(jax.grad(loss)(w, impl), jax.grad(loss)(w, "xla"), atol=1e-3, rtol=1e-4)
    assert convs.resolve_conv_impl("auto") == "mixed"  # tests run on CPU
    with pytest.raises(ValueError, match="conv implementation"):
        convs.resolve_conv_impl("fft")


@pytest.mark.parametrize("impl", ["im2col", "mixed"])
@pytest.mark.parametrize("k,stride,pad", [(5, 1, 2), (3, 1, 0), (3, 2, 1)])
def test_conv_impls_agree_with_xla_in_jvp_vjp_and_kernel_grad(impl, k, stride, pad):
    """im2col and mixed vs XLA convs: JVP, VJP and the explicit kernel gradient ``conv_kernel_grad``."""
    kx, ky, kw, kt = jax.random.split(jax.random.key(3), 4)
    w = jax.random.normal(kw, (k, k, 3, 4))
    x = jax.random.normal(kx, (2, 9, 9, 3))
    ref = convs.conv(x, w, stride, pad, "xla")
    ct = jax.random.normal(ky, ref.shape)
    tx, tw = jax.random.normal(kt, x.shape), jax.random.normal(kt, w.shape)

    def f(impl):
        return lambda x, w: convs.conv(x, w, stride, pad, impl)

    tol = {"atol": 1e-3, "rtol": 1e-4}
    fm = convs.forward_mode_impl(impl)
    chex.assert_trees_all_close(jax.jvp(f(fm), (x, w), (tx, tw)), jax.jvp(f("xla"), (x, w), (tx, tw)), **tol)
    if impl == "mixed":  # reverse mode only, by design: a clear error, not wrong numbers
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jvp(f(impl), (x, w), (tx, tw))
    vjp = jax.vjp(f(impl), x, w)[1](ct)
    chex.assert_trees_all_close(vjp, jax.vjp(f("xla"), x, w)[1](ct), **tol)
    chex.assert_trees_all_close(jax.grad(lambda w: jnp.vdot(ct, f(impl)(x, w)))(w), vjp[1], **tol)
    for kg_impl in ("xla", impl):
        chex.assert_trees_all_close(convs.conv_kernel_grad(x, ct, k, stride, pad, kg_impl), vjp[1], **tol)


@pytest.mark.parametrize(
    "hw,cin,k",
    [(8, 2, 3), (8, 3, 5), (16, 64, 3), (8, 8, 3)],  # im2col, xla, row patches, xla branches
)
def test_outer_kernel_gradient_rules_agree_with_xla(hw, cin, k):
    """F's convolutions (differentiated outside loops) pick their kernel gradient by shape."""
    kx, kw, kc = jax.random.split(jax.random.key(4), 3)
    x = jax.random.normal(kx, (2, hw, hw, cin))
    w = jax.random.normal(kw, (k, k, cin, 4))
    ct = jax.random.normal(kc, (2, hw, hw, 4))

    def vjp(impl):
        return jax.vjp(lambda x, w: convs.conv(x, w, 1, k // 2, impl), x, w)[1](ct)

    chex.assert_trees_all_close(vjp(convs.outer_impl("mixed")), vjp("xla"), atol=1e-3, rtol=1e-4)
