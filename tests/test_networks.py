"""Blocks, pooling, unpooling, init and architectures (spec §1.3, §3, §11)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdtp import networks as nets


def _np_max_pool(x, k, s, p):
    """Independent NumPy max-pool: first max in row-major window order, padding = -inf."""
    b, h, w, c = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.zeros((b, ho, wo, c), x.dtype)
    idx = np.zeros((b, ho, wo, c), np.int64)
    for bi in range(b):
        for ci in range(c):
            for i in range(ho):
                for j in range(wo):
                    best, arg = -np.inf, -1
                    for di in range(k):
                        for dj in range(k):
                            r, q = i * s - p + di, j * s - p + dj
                            if 0 <= r < h and 0 <= q < w and x[bi, r, q, ci] > best:
                                best, arg = x[bi, r, q, ci], r * w + q
                    out[bi, i, j, ci], idx[bi, i, j, ci] = best, arg
    return out, idx


def _np_unpool_set(v, idx, h, w):
    """Independent NumPy scatter-set: windows written in raster order, so the last one wins."""
    b, ho, wo, c = v.shape
    out = np.zeros((b, h * w, c), v.dtype)
    for bi in range(b):
        for ci in range(c):
            for i in range(ho):
                for j in range(wo):
                    out[bi, idx[bi, i, j, ci], ci] = v[bi, i, j, ci]
    return out.reshape(b, h, w, c)


def _tied_input(shape, seed=0):
    # Few distinct values -> many ties inside and across windows.
    return np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.float32)


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0)])
def test_max_pool_matches_numpy_with_ties(k, s, p):
    x = _tied_input((2, 8, 7, 3))
    out, idx = nets.max_pool_with_indices(jnp.asarray(x), nets.Pool(k, s, p))
    ref_out, ref_idx = _np_max_pool(x, k, s, p)
    np.testing.assert_array_equal(np.asarray(out), ref_out)
    np.testing.assert_array_equal(np.asarray(idx), ref_idx)


def test_unpool_add_is_vjp_of_max_pool():
    pool = nets.Pool(3, 2, 1)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    out, idx = nets.max_pool_with_indices(x, pool)
    v = jax.random.normal(jax.random.key(1), out.shape)
    unpooled = nets.max_unpool(v, idx, pool, (8, 8), "add")
    # VJP of our pool and of XLA's reduce_window max (continuous values: no ties).
    _, vjp_ours = jax.vjp(lambda z: nets.max_pool_with_indices(z, pool)[0], x)
    _, vjp_xla = jax.vjp(
        lambda z: jax.lax.reduce_window(
            z, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
        ),
        x,
    )
    chex.assert_trees_all_close(unpooled, vjp_ours(v)[0], atol=1e-6)
    chex.assert_trees_all_close(unpooled, vjp_xla(v)[0], atol=1e-6)
    # Overlapping windows do share argmaxes here, so 'set' must differ from 'add'.
    assert not np.allclose(nets.max_unpool(v, idx, pool, (8, 8), "set"), unpooled)


def test_unpool_set_matches_numpy_on_overlapping_windows_with_ties():
    pool = nets.Pool(3, 2, 1)
    x = _tied_input((2, 9, 9, 2), seed=3)
    _, idx = nets.max_pool_with_indices(jnp.asarray(x), pool)
    idx = np.asarray(idx)
    v = np.random.default_rng(1).normal(size=idx.shape).astype(np.float32)
    # The test is only meaningful with duplicate indices among windows.
    flat = idx.reshape(2, -1, 2)
    assert any(len(np.unique(flat[b, :, c])) < flat.shape[1] for b in range(2) for c in range(2))
    got = nets.max_unpool(jnp.asarray(v), jnp.asarray(idx), pool, (9, 9), "set")
    np.testing.assert_array_equal(np.asarray(got), _np_unpool_set(v, idx, 9, 9))


def test_unpool_modes_agree_for_non_overlapping_pools():
    pool = nets.Pool(2, 2, 0)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    out, idx = nets.max_pool_with_indices(x, pool)
    a = nets.max_unpool(out, idx, pool, (8, 8), "add")
    b = nets.max_unpool(out, idx, pool, (8, 8), "set")
    chex.assert_trees_all_equal(a, b)
    # Unpooling the maxima puts each back where it came from.
    chex.assert_trees_all_close(jnp.where(a != 0, x, 0.0), a)


@pytest.mark.parametrize("impl", nets.CONV_IMPLS)
@pytest.mark.parametrize(
    "k,stride,pad,hw", [(5, 1, 2, 8), (3, 1, 1, 8), (3, 2, 1, 9), (4, 2, 1, 8), (3, 1, 0, 6)]
)
def test_conv_transpose_is_adjoint_of_conv(k, stride, pad, hw, impl):
    kx, ky, kw = jax.random.split(jax.random.key(0), 3)
    w = jax.random.normal(kw, (k, k, 3, 5))
    x = jax.random.normal(kx, (2, hw, hw, 3))
    fx = nets.conv(x, w, stride, pad, impl)
    y = jax.random.normal(ky, fx.shape)
    gy = nets.conv_transpose(y, w, stride, pad, (hw, hw), impl)
    chex.assert_shape(gy, x.shape)
    np.testing.assert_allclose(jnp.vdot(gy, x), jnp.vdot(y, fx), rtol=1e-5)


@pytest.mark.parametrize("k,stride,pad", [(5, 1, 2), (3, 1, 1), (3, 2, 1)])
def test_im2col_conv_equals_xla_conv_and_its_gradients(k, stride, pad):
    kx, ky, kw = jax.random.split(jax.random.key(1), 3)
    w = jax.random.normal(kw, (k, k, 3, 4))
    x = jax.random.normal(kx, (2, 9, 9, 3))
    ref = nets.conv(x, w, stride, pad, "xla")
    chex.assert_trees_all_close(nets.conv(x, w, stride, pad, "im2col"), ref, atol=1e-4, rtol=1e-5)
    y = jax.random.normal(ky, ref.shape)

    def loss(w, impl):
        return jnp.sum(nets.conv_transpose(y, w, stride, pad, (9, 9), impl) ** 2)

    for impl in ("im2col", "mixed"):
        chex.assert_trees_all_close(jax.grad(loss)(w, impl), jax.grad(loss)(w, "xla"), atol=1e-3, rtol=1e-4)
    assert nets.resolve_conv_impl("auto") == "mixed"  # tests run on CPU
    with pytest.raises(ValueError, match="conv implementation"):
        nets.resolve_conv_impl("fft")


@pytest.mark.parametrize("block_index", [1, 2, 3])
def test_feedback_linear_part_is_adjoint_when_weights_equal(block_index):
    """⟨G_lin(y), x⟩ = ⟨y, F_lin(x)⟩ with G = sym(F), no activation, pool or bias."""
    net = nets.lenet(
        (16, 16, 3), 10, channels=(4, 6), hidden=8, activation="identity", pool=False, use_bias=False
    )
    fwd, _ = nets.init_params(jax.random.key(0), net)
    fb = nets.symmetric_fb_params(net, fwd)
    block = net.blocks[block_index]
    x = jax.random.normal(jax.random.key(1), (3, *block.in_shape))
    fx, _ = nets.forward_block(block, fwd[block_index], x)
    y = jax.random.normal(jax.random.key(2), fx.shape)
    gy = nets.feedback_block(block, fb[block_index], y, None)
    np.testing.assert_allclose(jnp.vdot(gy, x), jnp.vdot(y, fx), rtol=1e-5)


def test_vgg_conv_feedback_is_adjoint_when_weights_equal():
    net = nets.simple_vgg((32, 32, 3), 10, channels=(4, 4, 8, 8, 8), activation="identity", use_bias=False)
    fwd, _ = nets.init_params(jax.random.key(0), net)
    fb = nets.symmetric_fb_params(net, fwd)
    block = net.blocks[1]
    x = jax.random.normal(jax.random.key(1), (3, *block.in_shape))
    h = nets.conv(x, fwd[1]["kernel"], 1, 1)
    y = jax.random.normal(jax.random.key(2), h.shape)
    g = nets.conv_transpose(y, fb[1]["kernel"], 1, 1, block.in_shape[:2])
    np.testing.assert_allclose(jnp.vdot(g, x), jnp.vdot(y, h), rtol=1e-5)


def test_lenet_shapes_and_parameter_counts():
    net = nets.lenet()
    assert [b.out_shape for b in net.blocks] == [(16, 16, 32), (8, 8, 64), (512,), (10,)]
    assert net.blocks[2].in_features == 4096
    assert nets.lenet((28, 28, 1)).blocks[2].in_features == 3136
    fwd, fb = nets.init_params(jax.random.key(0), net)
    size = lambda t: sum(a.size for a in jax.tree.leaves(t))  # noqa: E731
    # Spec §3.6.
    assert size(fwd) == 2_156_490
    assert [size(g) for g in fb] == [2_403, 51_232, 2_101_248, 5_632]


def test_vgg_shapes_and_roundtrip():
    net = nets.simple_vgg((32, 32, 3), 1000)
    assert [b.out_shape for b in net.blocks] == [
        (16, 16, 128),
        (8, 8, 128),
        (4, 4, 256),
        (2, 2, 256),
        (1, 1, 512),
        (1000,),
    ]
    fwd, fb = nets.init_params(jax.random.key(0), nets.simple_vgg((32, 32, 3), 10, channels=(4, 4, 4, 4, 4)))
    small = nets.simple_vgg((32, 32, 3), 10, channels=(4, 4, 4, 4, 4))
    x = jnp.ones((2, 32, 32, 3))
    for n, block in enumerate(small.blocks):
        y, idx = nets.forward_block(block, fwd[n], x)
        chex.assert_shape(nets.feedback_block(block, fb[n], y, idx), x.shape)
        x = y


def test_init_is_uniform_with_reference_fan_in():
    net = nets.lenet()
    fwd, fb = nets.init_params(jax.random.key(0), net)
    expect = {  # (F fan-in, G fan-in) per block, spec §3.5
        0: (3 * 25, 3 * 25),
        1: (32 * 25, 32 * 25),
        2: (4096, 512),
        3: (512, 10),
    }
    for n, (ff, gf) in expect.items():
        for params, fan_in in ((fwd[n], ff), (fb[n], gf)):
            bound = 1 / math.sqrt(fan_in)
            for leaf in jax.tree.leaves(params):
                assert float(jnp.max(jnp.abs(leaf))) <= bound
                if leaf.size > 200:  # fills the interval: not He (√6 larger) nor a smaller bound
                    assert float(jnp.max(jnp.abs(leaf))) > 0.95 * bound
    # G's conv kernel is stored in F's layout.
    chex.assert_equal_shape([fwd[1]["kernel"], fb[1]["kernel"]])
    chex.assert_shape(fb[2]["kernel"], (512, 4096))


def test_init_is_reproducible_and_seed_dependent():
    net = nets.lenet((28, 28, 1))
    a = nets.init_params(jax.random.key(3), net)
    b = nets.init_params(jax.random.key(3), net)
    c = nets.init_params(jax.random.key(4), net)
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a[0][0]["kernel"], c[0][0]["kernel"])


def test_feedback_applies_activation_to_its_input():
    """G = convᵀ ∘ ELU ∘ unpool (spec §3.1): check one conv block against a manual composition."""
    net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=5)
    fwd, fb = nets.init_params(jax.random.key(0), net)
    block = net.blocks[1]
    x = jax.random.normal(jax.random.key(1), (2, *block.in_shape))
    y, idx = nets.forward_block(block, fwd[1], x)
    t = y + 0.3 * jax.random.normal(jax.random.key(2), y.shape)
    got = nets.feedback_block(block, fb[1], t, idx, "add")
    manual = (
        nets.conv_transpose(
            jax.nn.elu(nets.max_unpool(t, idx, block.pool, block.conv_shape[:2], "add")),
            fb[1]["kernel"],
            1,
            2,
            block.in_shape[:2],
        )
        + fb[1]["bias"]
    )
    chex.assert_trees_all_close(got, manual, atol=1e-6)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="model.name"):
        nets.build_network("resnet99", (32, 32, 3), 10)
    with pytest.raises(ValueError, match="unpool mode"):
        nets.max_unpool(
            jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 1), jnp.int32), nets.Pool(2, 2), (4, 4), "max"
        )


@pytest.mark.parametrize("impl", ["im2col", "mixed"])
@pytest.mark.parametrize("k,stride,pad", [(5, 1, 2), (3, 1, 0), (3, 2, 1)])
def test_conv_impls_agree_with_xla_in_jvp_vjp_and_kernel_grad(impl, k, stride, pad):
    """im2col and mixed vs XLA convs: JVP, VJP and the explicit kernel gradient ``conv_kernel_grad``."""
    kx, ky, kw, kt = jax.random.split(jax.random.key(3), 4)
    w = jax.random.normal(kw, (k, k, 3, 4))
    x = jax.random.normal(kx, (2, 9, 9, 3))
    ref = nets.conv(x, w, stride, pad, "xla")
    ct = jax.random.normal(ky, ref.shape)
    tx, tw = jax.random.normal(kt, x.shape), jax.random.normal(kt, w.shape)

    def f(impl):
        return lambda x, w: nets.conv(x, w, stride, pad, impl)

    tol = {"atol": 1e-3, "rtol": 1e-4}
    fm = nets.forward_mode_impl(impl)
    chex.assert_trees_all_close(jax.jvp(f(fm), (x, w), (tx, tw)), jax.jvp(f("xla"), (x, w), (tx, tw)), **tol)
    if impl == "mixed":  # reverse mode only, by design: a clear error, not wrong numbers
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jvp(f(impl), (x, w), (tx, tw))
    vjp = jax.vjp(f(impl), x, w)[1](ct)
    chex.assert_trees_all_close(vjp, jax.vjp(f("xla"), x, w)[1](ct), **tol)
    chex.assert_trees_all_close(jax.grad(lambda w: jnp.vdot(ct, f(impl)(x, w)))(w), vjp[1], **tol)
    for kg_impl in ("xla", impl):
        chex.assert_trees_all_close(nets.conv_kernel_grad(x, ct, k, stride, pad, kg_impl), vjp[1], **tol)


@pytest.mark.parametrize("block_index", [1, 2, 3])
def test_feedback_linear_kernel_grad_equals_autodiff(block_index):
    net = nets.lenet((16, 16, 3), 10, channels=(4, 6), hidden=8)
    block = net.blocks[block_index]
    _, g = nets.init_block(jax.random.key(0), block)
    ka, kc = jax.random.split(jax.random.key(1))
    a = jax.random.normal(
        ka, (3, *(block.conv_shape if isinstance(block, nets.ConvBlock) else (block.features,)))
    )
    ct = jax.random.normal(kc, (3, *block.in_shape))
    ref = jax.grad(lambda gk: jnp.vdot(ct, nets.feedback_linear(block, {**g, "kernel": gk}, a)))(g["kernel"])
    chex.assert_trees_all_close(nets.feedback_linear_kernel_grad(block, a, ct), ref, atol=1e-4, rtol=1e-4)
