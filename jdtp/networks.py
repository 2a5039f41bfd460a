"""Forward blocks F^n and feedback blocks G^n as pure functions (spec §3).

A network is a static tuple of block descriptions. Parameters live in explicit
per-layer pytrees: ``fwd_params[n]`` for F^n and ``fb_params[n]`` for G^n, so the
algorithm code (``jdtp.dtp``, ``jdtp.feedback``) can differentiate, scan and
probe each block with plain JAX transforms.

Layout: activations are NHWC. Conv kernels of F *and* G are stored in the
forward layout HWIO ``[k, k, C_in, C_out]`` of F^n, and G's transposed conv is
defined as the exact adjoint of F's conv with G's kernel, so ``G.kernel ==
F.kernel`` means the linear part of G is the transpose of F's (spec §11). Dense
kernels are ``[in, out]`` for F and ``[out_F, in_F]`` for G, so the adjoint is
``G.kernel == F.kernel.T``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Params = dict[str, jax.Array]
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


@dataclasses.dataclass(frozen=True)
class ConvBlock:
    """F = pool ∘ act ∘ conv; G = convᵀ ∘ act ∘ unpool (spec §3.1)."""

    name: str
    in_shape: tuple[int, int, int]  # (H, W, C_in)
    features: int
    kernel_size: int
    padding: int
    stride: int = 1
    pool: Pool | None = None
    activation: str = "elu"
    use_bias: bool = True
    conv_impl: str = "xla"  # 'xla', 'im2col' or 'mixed' (see resolve_conv_impl)

    @property
    def conv_shape(self) -> tuple[int, int, int]:
        h, w, _ = self.in_shape
        k, p, s = self.kernel_size, self.padding, self.stride
        return ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, self.features)

    @property
    def out_shape(self) -> tuple[int, ...]:
        h, w, c = self.conv_shape
        if self.pool is None:
            return (h, w, c)
        return (self.pool.out_size(h), self.pool.out_size(w), c)

    @property
    def has_pool(self) -> bool:
        return self.pool is not None


@dataclasses.dataclass(frozen=True)
class DenseBlock:
    """F = act ∘ dense ∘ flatten; G = reshape ∘ dense ∘ act (spec §3.1).

    The output block uses ``activation='identity'`` (logits), so its G is a
    single dense layer.
    """

    name: str
    in_shape: tuple[int, ...]
    features: int
    activation: str = "elu"
    use_bias: bool = True

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.features,)

    @property
    def has_pool(self) -> bool:
        return False


Block = ConvBlock | DenseBlock


@dataclasses.dataclass(frozen=True)
class Network:
    """A sequence of (F^n, G^n) pairs; ``blocks[n]`` maps s^n to s^{n+1}."""

    name: str
    blocks: tuple[Block, ...]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_trainable_fb(self) -> int:
        """Trainable feedback blocks G^1..G^{N-1}; G^0 is never trained (spec §0.2)."""
        return len(self.blocks) - 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.blocks[0].in_shape

    @property
    def num_classes(self) -> int:
        return self.blocks[-1].features


# ---------------------------------------------------------------------------
# Activations.


def activation_fn(name: str):
    if name == "elu":
        return jax.nn.elu
    if name == "identity":
        return lambda x: x
    if name == "tanh":
        return jnp.tanh
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unknown activation {name!r}; expected one of elu, identity, tanh, relu")


# ---------------------------------------------------------------------------
# Max-pool with indices and max-unpool (spec §1.3, §11).


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
      as −∞, as in ``torch.nn.MaxPool2d``.
    """
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
    rows = (jnp.arange(ho) * s - p)[None, :, None, None] + local // k
    cols = (jnp.arange(wo) * s - p)[None, None, :, None] + local % k
    return out, (rows * w + cols).astype(jnp.int32)


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


# ---------------------------------------------------------------------------
# Convolutions. G's transposed conv is the adjoint of F's conv (spec §11).


CONV_IMPLS = ("xla", "im2col", "mixed")


def resolve_conv_impl(impl: str = "auto") -> str:
    """``'auto'`` picks ``'mixed'`` on CPU and XLA's library convolutions elsewhere.

    * ``'xla'``: ``lax.conv_general_dilated`` and its autodiff rules.
    * ``'im2col'``: one matrix product over explicit patches, in both directions.
    * ``'mixed'``: XLA's convolution for the forward and (stride 1) transposed
      convolutions, patches only for kernel gradients, which it routes through
      a ``jax.custom_vjp``. On the 2-core CPU, XLA's forward conv runs near the
      matrix-product peak, while its kernel gradient is slow standalone and
      about 30× slower again inside a ``lax.scan`` body, i.e. the L-DRL loop
      (benchmarks/NOTES.md). Reverse mode only: forward-mode users (the
      ``'jvp'`` L-DRL probe) get ``'im2col'`` (:func:`forward_mode_impl`).
    """
    if impl == "auto":
        return "mixed" if jax.default_backend() == "cpu" else "xla"
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv implementation {impl!r}; expected 'auto' or one of {CONV_IMPLS}")
    return impl


def _patches(x: jax.Array, k: int, stride: int, padding: int) -> jax.Array:
    """``[B, H_out, W_out, k·k·C_in]`` patches in (di, dj, c) order, matching an HWIO kernel."""
    _, h, w, _ = x.shape
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    cols = [
        xp[:, di : di + stride * (ho - 1) + 1 : stride, dj : dj + stride * (wo - 1) + 1 : stride, :]
        for di in range(k)
        for dj in range(k)
    ]
    return jnp.concatenate(cols, axis=-1)


def _xla_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


# 'mixed' runs planes smaller than this (H·W) as im2col products: XLA's CPU
# convolution takes ~320 ms for SimpleVGG's conv_4 (2×2 plane, 1.2 GFLOP at
# batch 128), 25× its time on the 4×4 plane of conv_3 with twice the FLOPs.
MIXED_MIN_XLA_PIXELS = 16


def forward_mode_impl(impl: str) -> str:
    """The implementation to use under ``jax.jvp``: ``'mixed'`` is reverse-mode only."""
    return "im2col" if impl == "mixed" else impl


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _mixed_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    return _xla_conv(x, kernel, stride, padding)


def _mixed_conv_fwd(x, kernel, stride, padding):
    return _xla_conv(x, kernel, stride, padding), (x, kernel)


def _mixed_conv_bwd(stride, padding, res, ct):
    x, kernel = res
    dx = conv_transpose(ct, kernel, stride, padding, x.shape[1:3], "mixed")
    dk = conv_kernel_grad(x, ct, kernel.shape[0], stride, padding, "mixed")
    return dx, dk


_mixed_conv.defvjp(_mixed_conv_fwd, _mixed_conv_bwd)


def conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int, impl: str = "xla") -> jax.Array:
    """Cross-correlation as ``nn.Conv2d``: ``x [B,H,W,Cin]``, ``kernel [k,k,Cin,Cout]``.

    ``impl='im2col'`` computes the same numbers as one matrix product over
    explicit patches; ``'mixed'`` runs XLA's convolution with patch-product
    kernel gradients under reverse-mode autodiff (see :func:`resolve_conv_impl`).
    """
    if impl == "mixed" and x.shape[1] * x.shape[2] < MIXED_MIN_XLA_PIXELS:
        impl = "im2col"
    if impl == "im2col":
        k, _, cin, cout = kernel.shape
        return _patches(x, k, stride, padding) @ kernel.reshape(k * k * cin, cout)
    if impl == "mixed":
        return _mixed_conv(x, kernel, stride, padding)
    return _xla_conv(x, kernel, stride, padding)


def _kernel_grad_row_patches(x: jax.Array, ct: jax.Array, k: int, padding: int) -> jax.Array:
    """Stride-1 :func:`conv_kernel_grad` as one matrix product without full patches.

    ∇W[di, dj, c, o] = Σ_{b,i,j} x_pad[b, i+di, j+dj, c] · ct[b, i, j, o]. Width
    offsets go into the columns of ``x``'s side (k·C_in wide, over all padded
    rows) and height offsets into ``ct``'s side (k·C_out wide: ct shifted down
    by di rows), so a single product over rows (b, padded i, j) yields every
    (dj, c) × (di, o) entry. Both operands together are about k·(C_in + C_out)
    per pixel instead of im2col's k²·C_in, which is what matters on a CPU where
    building the patch matrix, not the product, dominates (benchmarks/NOTES.md).
    """
    _, h, w, cin = x.shape
    ho, wo, cout = ct.shape[1], ct.shape[2], ct.shape[3]
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    hp = h + 2 * padding
    rows_x = jnp.concatenate([xp[:, :, dj : dj + wo, :] for dj in range(k)], axis=-1)
    rows_ct = jnp.concatenate(
        [jnp.pad(ct, ((0, 0), (di, hp - ho - di), (0, 0), (0, 0))) for di in range(k)], axis=-1
    )
    g = rows_x.reshape(-1, k * cin).T @ rows_ct.reshape(-1, k * cout)  # [(dj, c), (di, o)]
    return g.reshape(k, cin, k, cout).transpose(2, 0, 1, 3)


def conv_kernel_grad(
    x: jax.Array, ct: jax.Array, kernel_size: int, stride: int, padding: int, impl: str = "xla"
) -> jax.Array:
    """∇_W ⟨ct, conv(x, W)⟩, the kernel gradient of :func:`conv` at input x (HWIO).

    Since conv is linear in W this does not depend on W. By adjointness it is
    also ∇_W ⟨x, conv_transpose(ct, W)⟩.
    """
    k, cin, cout = kernel_size, x.shape[-1], ct.shape[-1]
    if impl == "mixed" and stride == 1 and x.shape[1] * x.shape[2] >= MIXED_MIN_XLA_PIXELS:
        return _kernel_grad_row_patches(x, ct, k, padding)
    if impl in ("im2col", "mixed"):  # 'mixed': XLA's kernel gradient is the slow op on CPU
        patches = _patches(x, k, stride, padding).reshape(-1, k * k * cin)
        return (patches.T @ ct.reshape(-1, cout)).reshape(k, k, cin, cout)
    w_struct = jax.ShapeDtypeStruct((k, k, cin, cout), ct.dtype)
    (g,) = jax.linear_transpose(lambda w: _xla_conv(x, w, stride, padding), w_struct)(ct)
    return g


def conv_transpose(
    y: jax.Array,
    kernel: jax.Array,
    stride: int,
    padding: int,
    out_hw: tuple[int, int],
    impl: str = "xla",
) -> jax.Array:
    """Adjoint of :func:`conv` with the same kernel (``nn.ConvTranspose2d``).

    ``⟨conv_transpose(y, W), x⟩ = ⟨y, conv(x, W)⟩`` for every x, y; the output
    has the spatial size ``out_hw`` of conv's input (PyTorch's output_padding).
    """
    k = kernel.shape[0]
    same_size = tuple(out_hw) == (y.shape[1] - 2 * padding + k - 1, y.shape[2] - 2 * padding + k - 1)
    if stride == 1 and same_size:
        # Stride 1: the adjoint is a convolution with the spatially flipped kernel
        # and in/out channels swapped, padded by k − 1 − p. Written as a plain
        # convolution because XLA's own transpose rule yields a convolution
        # with swapped kernel dimensions that runs slowly on CPU.
        flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
        return conv(y, flipped, 1, k - 1 - padding, impl)
    b = y.shape[0]
    x_struct = jax.ShapeDtypeStruct((b, *out_hw, kernel.shape[2]), y.dtype)
    impl = "xla" if impl == "mixed" else impl  # custom_vjp functions are not transposable
    (x,) = jax.linear_transpose(lambda x: conv(x, kernel, stride, padding, impl), x_struct)(y)
    return x


# ---------------------------------------------------------------------------
# Blocks.


def forward_block(block: Block, params: Params, x: jax.Array) -> tuple[jax.Array, Any]:
    """F^n: maps s^n to s^{n+1} (paper Eq. 1).

    Returns:
      ``(s_next, idx)`` where ``idx`` are the max-pool indices ι(x) that the
      paired G^n needs, or ``None`` for blocks without a pool.
    """
    act = activation_fn(block.activation)
    if isinstance(block, ConvBlock):
        h = conv(x, params["kernel"], block.stride, block.padding, block.conv_impl)
        if block.use_bias:
            h = h + params["bias"]
        h = act(h)
        if block.pool is None:
            return h, None
        return max_pool_with_indices(h, block.pool)
    h = x.reshape(x.shape[0], -1) @ params["kernel"]
    if block.use_bias:
        h = h + params["bias"]
    return act(h), None


def feedback_input(block: Block, y: jax.Array, idx: Any, unpool_mode: UnpoolMode = "set") -> jax.Array:
    """The parameter-free first part of G^n: act(unpool(y)) for conv blocks, act(y) for dense.

    The activation is applied to G's *input* (spec §3.1, paper App. B), and the
    pool indices ``idx`` must come from the F^n pass that G^n is paired with.
    """
    act = activation_fn(block.activation)
    if isinstance(block, ConvBlock) and block.pool is not None:
        hc, wc, _ = block.conv_shape
        y = max_unpool(y, idx, block.pool, (hc, wc), unpool_mode)
    return act(y)


def feedback_linear(block: Block, params: Params, a: jax.Array) -> jax.Array:
    """The linear part of G^n (transposed conv, or dense then reshape), without bias."""
    if isinstance(block, ConvBlock):
        return conv_transpose(
            a, params["kernel"], block.stride, block.padding, block.in_shape[:2], block.conv_impl
        )
    return (a @ params["kernel"]).reshape(a.shape[0], *block.in_shape)


def feedback_linear_kernel_grad(block: Block, a: jax.Array, ct: jax.Array) -> jax.Array:
    """∇ of ⟨ct, feedback_linear(block, params, a)⟩ w.r.t. G's kernel (independent of it).

    G's linear part is linear in its kernel, so this is the whole L-DRL
    gradient machinery (``jdtp.feedback.ldrl_value_and_grad``): for a conv
    block the adjoint identity turns it into F's conv kernel gradient at input
    ``ct`` with cotangent ``a``; for a dense block it is ``aᵀ ct``.
    """
    if isinstance(block, ConvBlock):
        return conv_kernel_grad(ct, a, block.kernel_size, block.stride, block.padding, block.conv_impl)
    return a.reshape(a.shape[0], -1).T @ ct.reshape(ct.shape[0], -1)


def feedback_block(
    block: Block,
    params: Params,
    y: jax.Array,
    idx: Any,
    unpool_mode: UnpoolMode = "set",
    with_bias: bool = True,
) -> jax.Array:
    """G^n(y) = feedback_linear(feedback_input(y)) + bias: maps s^{n+1}-space values to s^n-space.

    Every difference G(a) − G(b) that DTP and L-DRL take is computed instead
    as ``feedback_linear(feedback_input(a) − feedback_input(b))``: G's bias
    cancels exactly, and one linear map (one transposed convolution) replaces
    two. :func:`feedback_difference` does that.
    """
    h = feedback_linear(block, params, feedback_input(block, y, idx, unpool_mode))
    if block.use_bias and with_bias:
        bias = params["bias"]
        h = h + (bias if isinstance(block, ConvBlock) else bias.reshape(block.in_shape))
    return h


def feedback_difference(
    block: Block, params: Params, a: jax.Array, idx_a: Any, b: jax.Array, idx_b: Any, unpool_mode="set"
) -> jax.Array:
    """G^n(a; ι_a) − G^n(b; ι_b), computed through one linear map (bias cancels exactly)."""
    diff = feedback_input(block, a, idx_a, unpool_mode) - feedback_input(block, b, idx_b, unpool_mode)
    return feedback_linear(block, params, diff)


# ---------------------------------------------------------------------------
# Initialisation: U(±1/sqrt(fan_in)) for weights and biases (spec §3.5).


def _block_param_specs(block: Block) -> tuple[list, list]:
    """[(name, shape, fan_in)] for F^n and G^n, with the fan-ins of spec §3.5."""
    if isinstance(block, ConvBlock):
        k, cin, cout = block.kernel_size, block.in_shape[2], block.features
        fan_in = cin * k * k  # Conv2d and its ConvTranspose2d share Cin_F·k² (spec §3.5)
        f = [("kernel", (k, k, cin, cout), fan_in)]
        g = [("kernel", (k, k, cin, cout), fan_in)]  # G's kernel in F's layout
        if block.use_bias:
            f.append(("bias", (cout,), fan_in))
            g.append(("bias", (cin,), fan_in))
        return f, g
    fin, fout = block.in_features, block.features
    f = [("kernel", (fin, fout), fin)]
    g = [("kernel", (fout, fin), fout)]  # G's fan-in is F's out_features
    if block.use_bias:
        f.append(("bias", (fout,), fin))
        g.append(("bias", (fin,), fout))
    return f, g


def init_params(
    key: jax.Array, net: Network, dtype=jnp.float32
) -> tuple[tuple[Params, ...], tuple[Params, ...]]:
    """PyTorch-default init of every (F^n, G^n): kaiming_uniform(a=√5) ≡ U(±1/√fan_in).

    Weights and biases alike are U(−1/√fan_in, 1/√fan_in), with fan_in = C_in·k²
    for a conv and its paired transposed conv and the input size of each dense
    layer (spec §3.5; not Flax's defaults). All values come from one uniform
    draw of ``key`` that is cut into the parameters on the host: one random
    kernel to compile instead of one per parameter shape, which keeps start-up
    fast on CPU.

    Returns:
      ``(fwd_params, fb_params)``, tuples of length N. ``fb_params[0]`` (G^0)
      is built for parity with the reference but never trained or used.
    """
    specs = [_block_param_specs(b) for b in net.blocks]
    total = sum(math.prod(shape) for f, g in specs for _, shape, _ in (*f, *g))
    u = np.asarray(jax.random.uniform(key, (total,), jnp.float32, -1.0, 1.0), np.float64)
    offset = 0

    def take(group):
        nonlocal offset
        out = {}
        for name, shape, fan_in in group:
            size = math.prod(shape)
            values = u[offset : offset + size].reshape(shape) / math.sqrt(fan_in)
            out[name] = jnp.asarray(values, dtype)
            offset += size
        return out

    fwd, fb = [], []
    for f, g in specs:
        fwd.append(take(f))
        fb.append(take(g))
    return tuple(fwd), tuple(fb)


def init_block(key: jax.Array, block: Block, dtype=jnp.float32) -> tuple[Params, Params]:
    """Initialise one (F, G) pair as :func:`init_params` does."""
    (f,), (g,) = init_params(key, Network("block", (block,)), dtype)
    return f, g


def symmetric_fb_params(net: Network, fwd_params):
    """Feedback parameters with G^n's weights equal to F^n's adjoint (copied, not aliased).

    G's biases are zero, as in the reference's ``init_symetric_weights``; they
    cancel in every DTP difference anyway (spec §1.2, §3.5).
    """
    out = []
    for block, f in zip(net.blocks, fwd_params):
        kernel = f["kernel"] if isinstance(block, ConvBlock) else f["kernel"].T
        g = {"kernel": jnp.array(kernel)}
        if block.use_bias:
            cin = block.in_shape[2] if isinstance(block, ConvBlock) else block.in_features
            g["bias"] = jnp.zeros((cin,), kernel.dtype)
        out.append(g)
    return tuple(out)


def fb_weight_as_forward(block: Block, g: Params) -> jax.Array:
    """G^n's weight in F^n's layout (for the JMC metric, spec §6.2)."""
    return g["kernel"] if isinstance(block, ConvBlock) else g["kernel"].T


# ---------------------------------------------------------------------------
# Architectures.


def lenet(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    channels: tuple[int, int] = (32, 64),
    hidden: int = 512,
    activation: str = "elu",
    pool: bool = True,
    use_bias: bool = True,
    conv_impl: str = "auto",
) -> Network:
    """LeNet of the paper (spec §3.2): 2 × [conv5×5 p2 → act → maxpool 3×3 s2 p1], fc 512, fc.

    fc1's input size is inferred from ``input_shape`` (4096 for 32×32, 3136 for
    28×28), as the paper's runs did with LazyLinear (spec §10.8).
    """
    blocks: list[Block] = []
    shape = tuple(input_shape)
    for i, c in enumerate(channels):
        b = ConvBlock(
            name=f"conv_{i}",
            in_shape=shape,
            features=c,
            kernel_size=5,
            padding=2,
            pool=Pool(3, 2, 1) if pool else None,
            activation=activation,
            use_bias=use_bias,
            conv_impl=resolve_conv_impl(conv_impl),
        )
        blocks.append(b)
        shape = b.out_shape
    fc1 = DenseBlock("fc1", shape, hidden, activation, use_bias)
    fc2 = DenseBlock("fc2", fc1.out_shape, num_classes, "identity", use_bias)
    return Network("lenet", (*blocks, fc1, fc2))


def simple_vgg(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    channels: tuple[int, ...] = (128, 128, 256, 256, 512),
    activation: str = "elu",
    use_bias: bool = True,
    conv_impl: str = "auto",
) -> Network:
    """SimpleVGG of the paper (spec §3.3): 5 × [conv3×3 p1 → act → maxpool 2×2 s2], fc."""
    blocks: list[Block] = []
    shape = tuple(input_shape)
    for i, c in enumerate(channels):
        b = ConvBlock(
            f"conv_{i}",
            shape,
            c,
            3,
            1,
            pool=Pool(2, 2, 0),
            activation=activation,
            use_bias=use_bias,
            conv_impl=resolve_conv_impl(conv_impl),
        )
        blocks.append(b)
        shape = b.out_shape
    blocks.append(DenseBlock("fc", shape, num_classes, "identity", use_bias))
    return Network("simple_vgg", tuple(blocks))


ARCHITECTURES = {"lenet": lenet, "simple_vgg": simple_vgg}


def build_network(name: str, input_shape, num_classes: int, **kwargs) -> Network:
    """Build a registered architecture by name."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model.name {name!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](tuple(input_shape), num_classes, **kwargs)
