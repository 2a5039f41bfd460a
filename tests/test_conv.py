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
    for reverse_after in (True, False):
        fm = convs.forward_mode_impl(impl, reverse_after)
        chex.assert_trees_all_close(
            jax.jvp(f(fm), (x, w), (tx, tw)), jax.jvp(f("xla"), (x, w), (tx, tw)), **tol
        )
    if impl == "mixed":  # reverse mode only, by design: a clear error, not wrong numbers
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jvp(f(impl), (x, w), (tx, tw))
    vjp = jax.vjp(f(impl), x, w)[1](ct)
    chex.assert_trees_all_close(vjp, jax.vjp(f("xla"), x, w)[1](ct), **tol)
    chex.assert_trees_all_close(jax.grad(lambda w: jnp.vdot(ct, f(impl)(x, w)))(w), vjp[1], **tol)
    for kg_impl in ("xla", impl):
        chex.assert_trees_all_close(convs.conv_kernel_grad(x, ct, k, stride, pad, kg_impl), vjp[1], **tol)


@pytest.mark.parametrize("k,stride,pad", [(5, 1, 2), (3, 1, 1), (3, 2, 1), (1, 2, 0), (3, 2, 0), (4, 2, 1)])
def test_every_kernel_gradient_form_equals_xla(k, stride, pad):
    """im2col, row patches (stride 1) and the explicit canonical convolution = XLA's own kernel gradient."""
    kx, kc = jax.random.split(jax.random.key(4))
    x = jax.random.normal(kx, (2, 9, 9, 3))
    ho = (9 + 2 * pad - k) // stride + 1
    ct = jax.random.normal(kc, (2, ho, ho, 4))
    ref = convs.conv_kernel_grad(x, ct, k, stride, pad, "xla")
    forms = ["im2col", "canonical"] + (["row_patches", "fft"] if stride == 1 else [])
    for form in forms:
        chex.assert_trees_all_close(
            convs.conv_kernel_grad(x, ct, k, stride, pad, form), ref, atol=1e-4, rtol=1e-5
        )
    # The canonical form is XLA's own computation in the layout XLA gives it outside loops: bitwise
    # equal on an Intel Sapphire Rapids CPU, while on an AMD EPYC XLA sums the k=4, stride-2 case in
    # another order (4 of 192 entries off by 1-8 float32 ulps, 1e-6 absolute). So: float32 rounding
    # of the same sum, far below the other forms' tolerance above.
    np.testing.assert_allclose(
        jax.jit(lambda a, b: convs.conv_kernel_grad(a, b, k, stride, pad, "canonical"))(x, ct),
        jax.jit(lambda a, b: convs.conv_kernel_grad(a, b, k, stride, pad, "xla"))(x, ct),
        rtol=0,
        atol=4e-6,
    )


def test_kernel_gradient_rule_picks_each_form():
    assert convs.kernel_grad_impl((2, 32, 32, 3), (2, 32, 32, 32), 3, 1) == "im2col"
    assert convs.kernel_grad_impl((2, 16, 16, 128), (2, 16, 16, 128), 3, 1) == "row_patches"
    assert convs.kernel_grad_impl((2, 16, 16, 128), (2, 8, 8, 128), 3, 2) == "canonical"
    assert convs.kernel_grad_impl((2, 16, 16, 32), (2, 16, 16, 64), 5, 1) == "fft"
    assert convs.kernel_grad_impl((2, 4, 4, 256), (2, 4, 4, 256), 3, 1) == "canonical"
