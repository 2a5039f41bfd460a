"""Max-pool with indices and max-unpool in both modes (design §1.3, §11)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdtp import pooling


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
    out, idx = pooling.max_pool_with_indices(jnp.asarray(x), pooling.Pool(k, s, p))
    ref_out, ref_idx = _np_max_pool(x, k, s, p)
    np.testing.assert_array_equal(np.asarray(out), ref_out)
    np.testing.assert_array_equal(np.asarray(idx), ref_idx)


def test_unpool_add_is_vjp_of_max_pool():
    pool = pooling.Pool(3, 2, 1)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    out, idx = pooling.max_pool_with_indices(x, pool)
    v = jax.random.normal(jax.random.key(1), out.shape)
    unpooled = pooling.max_unpool(v, idx, pool, (8, 8), "add")
    # VJP of our pool and of XLA's reduce_window max (continuous values: no ties).
    _, vjp_ours = jax.vjp(lambda z: pooling.max_pool_with_indices(z, pool)[0], x)
    _, vjp_xla = jax.vjp(
        lambda z: jax.lax.reduce_window(
            z, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
        ),
        x,
    )
    chex.assert_trees_all_close(unpooled, vjp_ours(v)[0], atol=1e-6)
    chex.assert_trees_all_close(unpooled, vjp_xla(v)[0], atol=1e-6)
    # Overlapping windows do share argmaxes here, so 'set' must differ from 'add'.
    assert not np.allclose(pooling.max_unpool(v, idx, pool, (8, 8), "set"), unpooled)


def test_unpool_set_matches_numpy_on_overlapping_windows_with_ties():
    pool = pooling.Pool(3, 2, 1)
    x = _tied_input((2, 9, 9, 2), seed=3)
    _, idx = pooling.max_pool_with_indices(jnp.asarray(x), pool)
    idx = np.asarray(idx)
    v = np.random.default_rng(1).normal(size=idx.shape).astype(np.float32)
    # The test is only meaningful with duplicate indices among windows.
    flat = idx.reshape(2, -1, 2)
    assert any(len(np.unique(flat[b, :, c])) < flat.shape[1] for b in range(2) for c in range(2))
    got = pooling.max_unpool(jnp.asarray(v), jnp.asarray(idx), pool, (9, 9), "set")
    np.testing.assert_array_equal(np.asarray(got), _np_unpool_set(v, idx, 9, 9))


def test_unpool_modes_agree_for_non_overlapping_pools():
    pool = pooling.Pool(2, 2, 0)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    out, idx = pooling.max_pool_with_indices(x, pool)
    a = pooling.max_unpool(out, idx, pool, (8, 8), "add")
    b = pooling.max_unpool(out, idx, pool, (8, 8), "set")
    chex.assert_trees_all_equal(a, b)
    # Unpooling the maxima puts each back where it came from.
    chex.assert_trees_all_close(jnp.where(a != 0, x, 0.0), a)


@pytest.mark.parametrize("hw", [8, 9])
def test_tiled_unpool_equals_the_strided_pad_form(hw):
    """SimpleVGG's 2×2/2 unpool as an interleave = the dense pad formulation (odd sizes: last row empty)."""
    pool = pooling.Pool(2, 2, 0)
    x = jax.random.normal(jax.random.key(1), (2, hw, hw, 3))
    out, idx = pooling.max_pool_with_indices(x, pool)
    v = jax.random.normal(jax.random.key(2), out.shape)
    assert pooling._tiles(pool, out.shape[1:3], (hw, hw))
    got = pooling.max_unpool(v, idx, pool, (hw, hw), "set")
    chex.assert_trees_all_equal(got, pooling._unpool_add(v, idx, pool, (hw, hw)))
    assert int(jnp.sum(got != 0)) == v.size  # every value placed once
    assert not pooling._tiles(pooling.Pool(3, 2, 1), out.shape[1:3], (hw, hw))


def test_pool_jvp_matches_reduce_window():
    """Forward mode through the custom rule (the 'jvp' L-DRL probe differentiates F's pool)."""
    pool = pooling.Pool(3, 2, 1)
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
    t = jax.random.normal(jax.random.key(1), x.shape)
    _, ours = jax.jvp(lambda z: pooling.max_pool_with_indices(z, pool)[0], (x,), (t,))
    _, ref = jax.jvp(
        lambda z: jax.lax.reduce_window(
            z, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
        ),
        (x,),
        (t,),
    )
    chex.assert_trees_all_close(ours, ref, atol=1e-6)
