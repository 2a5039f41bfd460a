"""Convolutions on explicit NHWC/HWIO arrays, with the CPU implementations DTP needs.

G's transposed convolution is the exact adjoint of F's convolution with the
same kernel, so ``G.kernel == F.kernel`` means G's linear part is F's
transpose. Three implementations compute the same numbers:

* ``'xla'``: ``lax.conv_general_dilated`` and its autodiff rules (accelerators).
* ``'im2col'``: one matrix product over explicit patches, in both directions.
* ``'mixed'`` (the CPU default): XLA's forward convolution, the stride-1
  transposed convolution as a forward convolution with the flipped kernel, and
  kernel gradients behind a ``jax.custom_vjp`` in the fastest form for their
  shapes (:func:`kernel_grad_impl`: im2col, row patches, the FFT, or XLA's own
  convolution written in the layout XLA gives it outside loops). XLA's autodiff
  kernel gradient runs 100-600× slower inside the ``lax.scan`` of the L-DRL
  loop on CPU; every form chosen here keeps its speed there (benchmarks/NOTES.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("xla", "im2col", "mixed")


def resolve_conv_impl(impl: str = "auto") -> str:
    """``'auto'`` picks ``'mixed'`` on CPU and XLA's library convolutions elsewhere.

    ``'mixed'`` is reverse-mode only (its kernel gradient is a ``jax.custom_vjp``): forward-mode
    users (the ``'jvp'`` L-DRL probe) get ``'im2col'`` or ``'xla'`` (:func:`forward_mode_impl`).
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
    if x.shape[-1] == 3 and kernel.shape[0] >= 5 and jax.default_backend() == "cpu":
        # XLA's CPU convolution has a slow path for 3 input channels with 5×5 kernels: a zero
        # fourth channel (exact: it adds zeros) makes LeNet's conv_0 on RGB images 2× faster
        # (10.3 → 4.7 ms, benchmarks/NOTES.md, fourth round).
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, 1)))
        kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, 1), (0, 0)))
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


def forward_mode_impl(impl: str, reverse_after: bool = True) -> str:
    """The implementation to use under ``jax.jvp``: ``'mixed'`` is reverse-mode only.

    ``reverse_after``: the jvp is itself differentiated in reverse mode (G's, under the L-DRL
    gradient), where XLA's autodiff kernel gradient is slow inside loops on CPU: ``'im2col'``.
    A tangent that is only evaluated (F's, computed before the loop) takes XLA's convolution.
    """
    if impl != "mixed":
        return impl
    return "im2col" if reverse_after else "xla"


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


def _kernel_grad_canonical(x: jax.Array, ct: jax.Array, k: int, stride: int, padding: int) -> jax.Array:
    """:func:`conv_kernel_grad` as the forward convolution XLA itself lowers it to outside loops.

    ∇W[di, dj, c, o] = Σ_{b,i,j} x_pad[b, s·i+di, s·j+dj, c] · ct[b, i, j, o] is a convolution of
    x with C_in as its batch and the batch as its features, by ct as an H_out × W_out kernel
    (dilated by the stride) with the batch as its input features. XLA's own kernel gradient
    (``jax.linear_transpose`` of the convolution) becomes this layout only where layout
    assignment may insert the transposes, i.e. outside loop bodies; inside a ``lax.scan`` it
    stays a convolution in a non-canonical layout that runs 100-600× slower on CPU. Written out,
    it is the same computation (bitwise equal outside loops on an Intel Sapphire Rapids CPU;
    on an AMD EPYC XLA sums a k=4, stride-2 case in another order, within float32 rounding) and
    keeps its speed inside them.
    """
    xt = x.transpose(3, 1, 2, 0)  # [C_in, H, W, B]
    ctt = ct.transpose(1, 2, 0, 3)  # [H_out, W_out, B, C_out]: an HWIO kernel
    g = lax.conv_general_dilated(
        xt,
        ctt,
        window_strides=(1, 1),
        padding=((padding, padding), (padding, padding)),
        rhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # [C_in, ≥k, ≥k, C_out]: a stride that does not divide the padded size leaves extra rows
    return g[:, :k, :k, :].transpose(1, 2, 0, 3)


def _kernel_grad_fft(x: jax.Array, ct: jax.Array, k: int, padding: int) -> jax.Array:
    """Stride-1 :func:`conv_kernel_grad` through the FFT: a cross-correlation of x and ct per channel pair.

    ∇W[·, ·, c, o] = Σ_b corr(x_pad[b, :, :, c], ct[b, :, :, o]) at lags 0 … k−1. With the FFT
    of size H_pad × W_pad (no wrap-around reaches those lags), that is one matrix product per
    frequency over the batch, Σ_b X_b(ω) conj(CT_b(ω)), written in real arithmetic, and one
    inverse FFT. For 5×5 kernels this needs about a fifth of the direct product's FLOPs
    (LeNet's conv_1: 15.6 ms instead of 28-31 ms on the 2-core CPU, benchmarks/NOTES.md); its
    rounding error is that of the direct forms (≈ 5e-7 of the largest entry in float32).
    """
    _, h, w, cin = x.shape
    cout = ct.shape[-1]
    hp, wp = h + 2 * padding, w + 2 * padding
    # Materialise the operands: XLA would otherwise fuse their producers (e.g. the gather of a
    # 'set' unpool) into the transposing copies before the FFT, which then run several times slower.
    x, ct = lax.optimization_barrier((x, ct))
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    fx = jnp.fft.rfft2(xp, axes=(1, 2))  # [B, H_pad, W_pad//2+1, C_in]
    fc = jnp.fft.rfft2(ct, s=(hp, wp), axes=(1, 2))  # [B, H_pad, W_pad//2+1, C_out]
    # Re(X conj C) = Xr Cr + Xi Ci and Im = Xi Cr − Xr Ci from one real product per frequency.
    xs = jnp.concatenate([fx.real, fx.imag], -1).transpose(1, 2, 3, 0)  # [H, W', 2C_in, B]
    cs = jnp.concatenate([fc.real, fc.imag], -1).transpose(1, 2, 0, 3)  # [H, W', B, 2C_out]
    prod = xs @ cs
    re = prod[..., :cin, :cout] + prod[..., cin:, cout:]
    im = prod[..., cin:, :cout] - prod[..., :cin, cout:]
    g = jnp.fft.irfft2(lax.complex(re, im), s=(hp, wp), axes=(0, 1))
    return g[:k, :k].astype(x.dtype)


def kernel_grad_impl(x_shape: tuple[int, ...], ct_shape: tuple[int, ...], k: int, stride: int) -> str:
    """The fastest CPU kernel gradient for these shapes (loop-safe; benchmarks/NOTES.md, fourth round).

    ``'im2col'`` for very thin inputs (k²·C_in ≤ 32: the first layer), ``'fft'`` for large
    kernels (k ≥ 5, C_in ≥ 16, stride 1: LeNet's conv_1), ``'row_patches'`` for wide inputs on
    larger planes (C_in ≥ 64 and ≥ 64 output pixels, stride 1), ``'canonical'``
    (:func:`_kernel_grad_canonical`, XLA's own convolution) otherwise.
    """
    cin = x_shape[-1]
    if k * k * cin <= 32:
        return "im2col"
    if stride == 1 and k >= 5 and cin >= 16:
        return "fft"
    if stride == 1 and cin >= 64 and ct_shape[1] * ct_shape[2] >= 64:
        return "row_patches"
    return "canonical"


def conv_kernel_grad(
    x: jax.Array, ct: jax.Array, kernel_size: int, stride: int, padding: int, impl: str = "xla"
) -> jax.Array:
    """∇_W ⟨ct, conv(x, W)⟩, the kernel gradient of :func:`conv` at input x (HWIO).

    Since conv is linear in W this does not depend on W. By adjointness it is
    also ∇_W ⟨x, conv_transpose(ct, W)⟩. ``impl='mixed'`` picks the fastest CPU form for the
    shapes (:func:`kernel_grad_impl`); every form it picks is as fast inside a ``lax.scan``
    body as outside.
    """
    k, cin, cout = kernel_size, x.shape[-1], ct.shape[-1]
    if impl == "mixed":
        impl = kernel_grad_impl(x.shape, ct.shape, k, stride)
    if impl == "row_patches":
        return _kernel_grad_row_patches(x, ct, k, padding)
    if impl == "fft":
        return _kernel_grad_fft(x, ct, k, padding)
    if impl == "canonical":
        return _kernel_grad_canonical(x, ct, k, stride, padding)
    if impl == "im2col":
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
    if impl in ("mixed", "im2col") and k - 1 - padding >= 0:
        # Strided: dilate y by the stride (zeros between values), pad, and correlate with the
        # flipped kernel at stride 1. This keeps the loop-safe kernel gradient of 'mixed' (a
        # transposed strided XLA conv would be differentiated with XLA's slow in-loop rule).
        lo = k - 1 - padding
        extra = [out_hw[i] - ((y.shape[1 + i] - 1) * stride - 2 * padding + k) for i in (0, 1)]
        zero = jnp.zeros((), y.dtype)
        dilated = lax.pad(
            y, zero, ((0, 0, 0), (lo, lo + extra[0], stride - 1), (lo, lo + extra[1], stride - 1), (0, 0, 0))
        )
        flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
        return conv(dilated, flipped, 1, 0, impl)
    b = y.shape[0]
    x_struct = jax.ShapeDtypeStruct((b, *out_hw, kernel.shape[2]), y.dtype)
    impl = "xla" if impl == "mixed" else impl  # custom_vjp functions are not transposable
    (x,) = jax.linear_transpose(lambda x: conv(x, kernel, stride, padding, impl), x_struct)(y)
    return x
