"""Max-pool with PyTorch-style argmax indices, and max-unpool in two modes (design §1.3, §11).

The indices ι(x) of a forward pool are what the paired feedback block G^n
unpools with: the noisy L-DRL reconstruction uses the noisy pass's indices, the
η term and all targets the clean ones, so they are returned and passed
explicitly rather than kept in hidden state.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

UnpoolMode = Literal["set", "add"]
UNPOOL_MODES = ("set", "add")


@dataclasses.dataclass(frozen=True)
class Pool:
    """Max-pool geometry (window, stride, padding), as ``nn.MaxPool2d``."""

    window: int
    stride: int
    padding: int = 0

    def out_size(self, n: int) -> int:
        return (n + 2 * self.padding - self.window) // self.stride + 1

    @property
    def overlapping(self) -> bool:
        return self.stride < self.window


def _window_slices(xp: jax.Array, pool: Pool, out_hw: tuple[int, int]):
    k, s = pool.window, pool.stride
    ho, wo = out_hw
    for di in range(k):
        for dj in range(k):
            yield xp[:, di : di + s * (ho - 1) + 1 : s, dj : dj + s * (wo - 1) + 1 : s, :]


def max_pool_with_indices(x: jax.Array, pool: Pool) -> tuple[jax.Array, jax.Array]:
    """Max-pool that also returns PyTorch-style argmax indices.

    Args:
      x: ``[batch, H, W, C]``.
      pool: window geometry.

    Returns:
      ``(out, idx)``, both ``[batch, H_out, W_out, C]``; ``idx`` holds the flat
      position ``row * W + col`` of each maximum in the *unpadded* H×W plane.
      Ties go to the first maximum in row-major window order and padding counts
      as −∞, as in ``torch.nn.MaxPool2d``. Derivatives pass through the selected
      maxima (:func:`_pool_jvp`); the reverse mode is the ``add`` unpool of the
      cotangent, without XLA's ``select_and_scatter`` (≈ 6× slower on CPU).
    """
    out, local = _pool_with_local(x, pool)
    return out, _flat_from_local(local, pool, x.shape[2])


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _pool_with_local(x: jax.Array, pool: Pool) -> tuple[jax.Array, jax.Array]:
    """``(max-pooled x, offset of each maximum inside its window)``."""
    _, h, w, _ = x.shape
    k, s, p = pool.window, pool.stride, pool.padding
    ho, wo = pool.out_size(h), pool.out_size(w)
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-jnp.inf)
    out = lax.reduce_window(xp, -jnp.inf, lax.max, (1, k, k, 1), (1, s, s, 1), "VALID")
    # First maximum in row-major window order, as torch: scan the offsets from
    # last to first so the earliest match is written last. Elementwise selects
    # fuse into one pass, unlike stacking k² slices for an argmax.
    local = jnp.zeros(out.shape, jnp.int32)
    for o, window in reversed(list(enumerate(_window_slices(xp, pool, (ho, wo))))):
        local = jnp.where(window == out, o, local)
    return out, local


@_pool_with_local.defjvp
def _pool_jvp(pool, primals, tangents):
    """The tangent of each output is the input tangent at its selected maximum.

    Written as k² strided slices and selects, so that its transpose (reverse mode) is a few
    strided pads and adds: the ``add`` unpool of the cotangent.
    """
    (x,), (dx,) = primals, tangents
    out, local = _pool_with_local(x, pool)
    p = pool.padding
    dxp = jnp.pad(dx, ((0, 0), (p, p), (p, p), (0, 0)))
    zero = jnp.zeros((), dx.dtype)
    d_out = jnp.zeros(out.shape, dx.dtype)
    for o, window in enumerate(_window_slices(dxp, pool, out.shape[1:3])):
        d_out = d_out + jnp.where(local == o, window, zero)
    return (out, local), (d_out, np.zeros(local.shape, jax.dtypes.float0))


def _flat_from_local(local: jax.Array, pool: Pool, in_w: int) -> jax.Array:
    """Flat ``row * W + col`` index in the unpadded plane from the in-window offset."""
    _, ho, wo, _ = local.shape
    k, s, p = pool.window, pool.stride, pool.padding
    rows = (jnp.arange(ho) * s - p)[None, :, None, None] + local // k
    cols = (jnp.arange(wo) * s - p)[None, None, :, None] + local % k
    return (rows * in_w + cols).astype(jnp.int32)


def _local_from_flat(idx: jax.Array, pool: Pool, in_w: int) -> jax.Array:
    """Position of each flat index inside its own pooling window (row-major)."""
    _, ho, wo, _ = idx.shape
    k, s, p = pool.window, pool.stride, pool.padding
    di = idx // in_w - (jnp.arange(ho) * s - p)[None, :, None, None]
    dj = idx % in_w - (jnp.arange(wo) * s - p)[None, None, :, None]
    return di * k + dj


def max_unpool(
    y: jax.Array, idx: jax.Array, pool: Pool, out_hw: tuple[int, int], mode: UnpoolMode
) -> jax.Array:
    """Max-unpool ``y`` to the pre-pool plane at ``idx`` (``nn.MaxUnpool2d``).

    Args:
      y: pooled values ``[batch, H_out, W_out, C]``.
      idx: flat argmax indices from :func:`max_pool_with_indices`.
      pool: the paired pool's geometry.
      out_hw: the pre-pool spatial size ``(H, W)``.
      mode: ``'add'`` sums values that share a position (the exact transpose of
        max-pool, i.e. its VJP); ``'set'`` writes one of them, as the reference
        does: when overlapping windows share an argmax, the window that comes
        *last in raster order* wins (PyTorch's CPU behaviour, made
        deterministic here). For non-overlapping pools the two agree.

    Returns:
      ``[batch, H, W, C]`` with zeros away from the indices.
    """
    if mode not in UNPOOL_MODES:
        raise ValueError(f"unknown unpool mode {mode!r}; expected one of {UNPOOL_MODES}")
    h, w = out_hw
    if _tiles(pool, y.shape[1:3], (h, w)):
        return _unpool_tiled(y, idx, pool, (h, w))
    if mode == "add" or not pool.overlapping:
        return _unpool_add(y, idx, pool, (h, w))
    b, ho, wo, c = y.shape
    flat_idx = idx.reshape(b, ho * wo, c)
    window_id = jnp.broadcast_to(jnp.arange(ho * wo, dtype=jnp.int32)[None, :, None], flat_idx.shape)
    bi = jnp.arange(b)[:, None, None]
    ci = jnp.arange(c)[None, None, :]
    # Scatter-max of the window's raster number decides the winner
    # deterministically; XLA's scatter-set order for duplicates is unspecified.
    winner = jnp.full((b, h * w, c), -1, jnp.int32).at[bi, flat_idx, ci].max(window_id)
    gathered = jnp.take_along_axis(y.reshape(b, ho * wo, c), jnp.maximum(winner, 0), axis=1)
    out = jnp.where(winner >= 0, gathered, jnp.zeros((), y.dtype))
    return out.reshape(b, h, w, c)


def _tiles(pool: Pool, pooled_hw, out_hw) -> bool:
    """Windows that tile the plane: no overlap, no padding, every window inside it."""
    s = pool.stride
    return (
        pool.window == s
        and pool.padding == 0
        and all(o * s <= n < o * s + s for o, n in zip(pooled_hw, out_hw, strict=True))
    )


def _unpool_tiled(y: jax.Array, idx: jax.Array, pool: Pool, out_hw: tuple[int, int]) -> jax.Array:
    # Non-overlapping windows (SimpleVGG's 2×2/2): every output position belongs to one window,
    # so the unpool is an interleave (stack and reshape) of k² selects, both modes alike. Unlike
    # strided pads, it evaluates y once per output position: XLA fuses y's producer (e.g. the
    # L-DRL noise) into this, and with one pad per offset it recomputed it k² times (5× slower).
    h, w = out_hw
    b, ho, wo, c = y.shape
    k = pool.window
    local = _local_from_flat(idx, pool, w)
    zero = jnp.zeros((), y.dtype)
    rows = [
        jnp.stack([jnp.where(local == di * k + dj, y, zero) for dj in range(k)], axis=3) for di in range(k)
    ]
    out = jnp.stack(rows, axis=2).reshape(b, ho * k, wo * k, c)  # [b, ho, di, wo, dj, c] → [b, h, w, c]
    return jnp.pad(out, ((0, 0), (0, h - ho * k), (0, w - wo * k), (0, 0)))


def _unpool_add(y: jax.Array, idx: jax.Array, pool: Pool, out_hw: tuple[int, int]) -> jax.Array:
    # Dense formulation (no scatter): each window offset contributes a strided,
    # zero-interleaved copy of the values whose argmax sits at that offset.
    # This is exactly the transpose of gathering the window maxima.
    h, w = out_hw
    b, ho, wo, c = y.shape
    k, s, p = pool.window, pool.stride, pool.padding
    local = _local_from_flat(idx, pool, w)
    hp, wp = h + 2 * p, w + 2 * p
    zero = jnp.zeros((), y.dtype)
    out = jnp.zeros((b, hp, wp, c), y.dtype)
    for di in range(k):
        for dj in range(k):
            v = jnp.where(local == di * k + dj, y, zero)
            hi = hp - di - s * (ho - 1) - 1
            wi = wp - dj - s * (wo - 1) - 1
            out = out + lax.pad(v, zero, ((0, 0, 0), (di, hi, s - 1), (dj, wi, s - 1), (0, 0, 0)))
    return out[:, p : p + h, p : p + w, :]
