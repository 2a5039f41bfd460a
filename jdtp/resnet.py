"""ResNet-18/34 for 32×32 inputs with DTP feedback blocks (design §3.4; ``resnet18``/``resnet34`` in ``jdtp.architectures``).

Forward network (the reference's ``S:target_prop/networks/resnet.py``, BatchNorm off, its default):

* ``layer_0``: conv3×3 (C → width, stride 1, pad 1, no bias) → ReLU (:class:`StemBlock`);
* ``layer_1 … layer_4``: stages of BasicBlocks ([2,2,2,2] / [3,4,6,3]) with planes
  width·(1, 2, 4, 8) and first strides 1/2/2/2 (:class:`ResidualStage`). A BasicBlock is
  ``relu(conv2(relu(conv1 x)) + shortcut(x))``; the shortcut is a 1×1 conv (stride s, no
  bias) when the stride or the width changes and the identity otherwise;
* ``fc``: global average pool → dense (bias) to the classes (:class:`PoolDenseBlock`).

DTP treats each top-level stage as one layer: 6 blocks, so the per-layer lists (σ, K, lr_b)
have 5 entries, for G^1 … G^5 = layer_1 … layer_4, fc (design §3.4).

Feedback blocks, ``feedback=`` (a model option):

* ``'reference'`` (default; the reference's "inverted" blocks): a stage's G is the reversed
  sequence of inverted BasicBlocks ``v ← act(v); out = act(convT2(v)); out = convT1(out) +
  shortcutT(v)`` (no final activation); the stem's G is ``convT ∘ act``; the head's G is
  ``dense(classes → C)`` (+ bias), then the vector copied to every pixel of the pooled H×W
  (the reference's AdaptiveAvgPool2d up-sampling, *without* the 1/(H·W) of the average).
* ``'adjoint'``: G is the transpose of F's *linear part* (F with every activation removed):
  per BasicBlock in reverse order ``convT1(convT2(v)) + shortcutT(v)``, the stem ``convT``, the
  head's dense transpose copied to every pixel and divided by H·W (the transpose of the mean).
  G is linear in its input; with G's weights equal to F's it equals (linear part of F)ᵀ
  exactly, as ``'add'`` unpooling is the exact transpose of max-pooling elsewhere in jdtp.
* ``'jacobian'``: the exact transpose of F's Jacobian *at F's pass*. F's ``forward`` then
  returns, as ``aux``, the activation derivatives at its pre-activations (per BasicBlock
  ``(act'(conv1 x), act'(conv2 … + shortcut x))``, the stem ``act'(conv x)``; ``None`` for the
  identity activation) and G multiplies by them where the reference applies the activation:
  ``convT1(D1 · convT2(D2 v)) + shortcutT(D2 v)``. DTP hands G^n the clean aux of F^n(s^n)
  for targets, so with symmetric weights the DTP update is the BP gradient times β (Thm. 4.3
  without its β → 0 limit). L-DRL's ``'difference'`` probe evaluates its noisy term with the
  derivatives of the noisy pass (as it uses the noisy pool indices, design §1.2), which is not
  a small perturbation where units change sign; the ``'jvp'`` probe uses the clean ones, and
  as G is then linear in its input, each of its terms is one pass of G
  (:meth:`ResidualStage.feedback_is_linear`). ``configs/resnet18_fmnist.py`` trains this G with
  the ``'jvp'`` probe and Adam: the recipe that aligns every stage (README).

Is the reference's G the adjoint of F's linearisation when G's weights equal F's? Not in
general. A BasicBlock ``u ↦ relu(A relu(B u) + S u)`` has the Jacobian ``D2 (A D1 B + S)``
with D1, D2 the ReLU derivatives at F's pre-activations, so its transpose is
``Bᵀ D1 Aᵀ D2 + Sᵀ D2``. The inverted block ``v ↦ Bᵀ relu(Aᵀ relu(v)) + Sᵀ relu(v)`` applies
ReLU to its own values instead: its Jacobian is ``Bᵀ E1 Aᵀ E2 + Sᵀ E2`` with E2 = 1[v > 0] and
E1 = 1[Aᵀ relu(v) > 0]. E2 equals D2 only where v is F's own post-ReLU output of that block
(not at targets or noisy values, and not for the inner blocks of a stage, whose G input is
the previous inverted block's output), and E1, the sign pattern of a transposed convolution,
has nothing to do with D1. So JMC = 0 (equal weights) does not make G^n the transpose of
∂F^n, and L-DRL cannot make it one either. The head's G is H·W times the transpose of the
average pool (a scale). With the identity activation the reference and adjoint feedbacks
agree up to that head scale. ``'adjoint'`` and ``'jacobian'`` are the two exact variants:
the transpose of the linear part, and the transpose of the Jacobian at F's clean pass.

Parameters: convolutions have no bias (as the reference); the head has F and G biases. G's
kernels are separate parameters stored in F's HWIO layout (``jdtp.conv.conv_transpose`` is
the exact adjoint of ``conv`` with the same kernel), initialised U(±1/√fan_in) with the paired
forward conv's fan-in (PyTorch's ConvTranspose2d rule, design §3.5). Residual stages are not
:class:`~jdtp.blocks.LinearFeedbackBlock` (G multiplies weights along the residual branch), so
their L-DRL gradient comes from autodiff; the stem and head keep the closed form.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jdtp import blocks as blk
from jdtp import conv as convs
from jdtp import networks as nets

FEEDBACK_MODES = ("reference", "adjoint", "jacobian")
STAGE_PLANES = (1, 2, 4, 8)  # multiples of ``width`` for layer_1 … layer_4
STAGE_STRIDES = (1, 2, 2, 2)


def _check_mode(name: str, mode: str) -> None:
    if mode not in FEEDBACK_MODES:
        raise ValueError(f"{name}: feedback={mode!r}, expected one of {FEEDBACK_MODES}")


def _act_and_derivative(activation: str, pre: jax.Array, with_derivative: bool):
    """``(act(pre), act'(pre) or None)``; ``None`` for the identity (all ones)."""
    fn = blk.activation_fn(activation)
    if not with_derivative or activation == "identity":
        return fn(pre), None
    out, deriv = jax.jvp(fn, (pre,), (jnp.ones_like(pre),))
    return out, jax.lax.stop_gradient(deriv)


def _feedback_is_linear(mode: str, activation: str, aux_a, aux_b) -> bool:
    """A stem's or stage's G is linear in its input: always (adjoint), given one aux (jacobian:
    F's derivatives), or when the activation is the identity (reference)."""
    if mode == "adjoint":
        return True
    if mode == "jacobian":
        return aux_a is aux_b
    return activation == "identity"


def _scale(deriv, v: jax.Array) -> jax.Array:
    return v if deriv is None else deriv * v


def _conv_out(hw: tuple[int, int], k: int, stride: int, padding: int) -> tuple[int, int]:
    return tuple((s + 2 * padding - k) // stride + 1 for s in hw)


@dataclasses.dataclass(frozen=True)
class StemBlock(blk.ConvBlock):
    """``layer_0``: F = act ∘ conv (no bias, no pool); G per ``feedback`` (module docstring).

    A :class:`~jdtp.blocks.ConvBlock` whose G input transform is ``act`` (reference),
    the identity (adjoint) or F's activation derivative from ``aux`` (jacobian).
    """

    feedback_mode: str = "reference"

    def __post_init__(self):
        super().__post_init__()
        _check_mode(self.name, self.feedback_mode)
        if self.pool is not None:
            raise ValueError(f"{self.name}: the ResNet stem has no pool")

    def forward(self, params, x):
        h = convs.conv(x, params["kernel"], self.stride, self.padding, self.conv_impl)
        if self.use_bias:
            h = h + params["bias"]
        return _act_and_derivative(self.activation, h, self.feedback_mode == "jacobian")

    def feedback_is_linear(self, aux_a, aux_b):
        return _feedback_is_linear(self.feedback_mode, self.activation, aux_a, aux_b)

    def feedback_input(self, y, aux, *, unpool_mode="set"):
        del unpool_mode
        if self.feedback_mode == "reference":
            return blk.activation_fn(self.activation)(y)
        if self.feedback_mode == "adjoint":
            return y
        return _scale(aux, y)


@dataclasses.dataclass(frozen=True)
class _Unit:
    """One BasicBlock of a stage: its input shape, stride and whether it has a 1×1 shortcut conv."""

    index: int
    in_shape: tuple[int, int, int]
    planes: int
    stride: int

    @property
    def has_shortcut(self) -> bool:
        return self.stride != 1 or self.in_shape[2] != self.planes

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (*_conv_out(self.in_shape[:2], 3, self.stride, 1), self.planes)

    def kernel_shapes(self) -> dict[str, tuple[int, int, int, int]]:
        cin, p, i = self.in_shape[2], self.planes, self.index
        shapes = {f"b{i}_conv1": (3, 3, cin, p), f"b{i}_conv2": (3, 3, p, p)}
        if self.has_shortcut:
            shapes[f"b{i}_short"] = (1, 1, cin, p)
        return shapes


@dataclasses.dataclass(frozen=True)
class ResidualStage(blk.Block):
    """``layer_k``: ``num_blocks`` BasicBlocks as one DTP block; G per ``feedback_mode`` (module docstring).

    Parameters (F and G alike, G's in F's HWIO layout): ``b{i}_conv1`` [3,3,C_in,planes],
    ``b{i}_conv2`` [3,3,planes,planes] and, when the stride or width changes, ``b{i}_short``
    [1,1,C_in,planes]; no biases. ``aux`` is ``None`` except in ``'jacobian'`` mode (a tuple
    of ``(act'(conv1 …), act'(conv2 … + shortcut …))`` per BasicBlock).
    """

    name: str
    in_shape: tuple[int, int, int]  # (H, W, C_in)
    planes: int
    num_blocks: int
    stride: int = 1
    activation: str = "relu"
    feedback_mode: str = "reference"
    conv_impl: str = "xla"

    def __post_init__(self):
        blk._check_positive(self.name, planes=self.planes, num_blocks=self.num_blocks, stride=self.stride)
        blk.activation_fn(self.activation)
        _check_mode(self.name, self.feedback_mode)
        if self.conv_impl not in convs.CONV_IMPLS:
            raise ValueError(f"{self.name}: conv_impl={self.conv_impl!r}, expected one of {convs.CONV_IMPLS}")
        if min(self.out_shape[:2]) < 1:
            raise ValueError(f"{self.name}: input {self.in_shape} is too small for this stage")

    @property
    def units(self) -> tuple[_Unit, ...]:
        units, shape = [], tuple(self.in_shape)
        for i in range(self.num_blocks):
            u = _Unit(i, shape, self.planes, self.stride if i == 0 else 1)
            units.append(u)
            shape = u.out_shape
        return tuple(units)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (*_conv_out(self.in_shape[:2], 3, self.stride, 1), self.planes)

    def forward(self, params, x):
        impl = self.conv_impl
        with_deriv = self.feedback_mode == "jacobian"
        derivs = []
        for u in self.units:
            i = u.index
            h, d1 = _act_and_derivative(
                self.activation, convs.conv(x, params[f"b{i}_conv1"], u.stride, 1, impl), with_deriv
            )
            pre = convs.conv(h, params[f"b{i}_conv2"], 1, 1, impl)
            pre = pre + (convs.conv(x, params[f"b{i}_short"], u.stride, 0, impl) if u.has_shortcut else x)
            x, d2 = _act_and_derivative(self.activation, pre, with_deriv)
            derivs.append((d1, d2))
        return x, (tuple(derivs) if with_deriv else None)

    def feedback(self, params, y, aux, *, unpool_mode="set", with_bias=True):
        del unpool_mode, with_bias  # no pool, no bias
        act = blk.activation_fn(self.activation)
        mode, impl = self.feedback_mode, self.conv_impl
        for u in reversed(self.units):
            i = u.index
            if mode == "reference":
                y = act(y)
            elif mode == "jacobian":
                y = _scale(aux[i][1], y)
            h = convs.conv_transpose(y, params[f"b{i}_conv2"], 1, 1, u.out_shape[:2], impl)
            if mode == "reference":
                h = act(h)
            elif mode == "jacobian":
                h = _scale(aux[i][0], h)
            out = convs.conv_transpose(h, params[f"b{i}_conv1"], u.stride, 1, u.in_shape[:2], impl)
            if u.has_shortcut:
                out = out + convs.conv_transpose(y, params[f"b{i}_short"], u.stride, 0, u.in_shape[:2], impl)
            else:
                out = out + y
            y = out
        return y

    def feedback_is_linear(self, aux_a: Any, aux_b: Any) -> bool:
        """Whether G(a; aux_a) − G(b; aux_b) = G(a − b; aux_a): G linear in its input, same aux."""
        return _feedback_is_linear(self.feedback_mode, self.activation, aux_a, aux_b)

    def feedback_difference(self, params, a, aux_a, b, aux_b, *, unpool_mode="set"):
        if self.feedback_is_linear(aux_a, aux_b):  # one G pass, and no cancellation
            return self.feedback(params, a - b, aux_a, unpool_mode=unpool_mode)
        return super().feedback_difference(params, a, aux_a, b, aux_b, unpool_mode=unpool_mode)

    def param_specs(self):
        specs = []
        for u in self.units:
            for name, shape in u.kernel_shapes().items():
                k, _, cin, cout = shape
                # ConvTranspose2d's fan-in is C_in_F·k², the paired forward conv's (design §3.5).
                specs.append(blk.ParamSpec(name, shape, cin * k * k, cout * k * k))
        return tuple(specs), tuple(specs)

    def jmc_pairs(self, f_params, g_params):
        return tuple((f_params[s.name], g_params[s.name]) for s in self.param_specs()[0])

    def symmetric_feedback(self, f_params):
        return {s.name: jnp.array(f_params[s.name]) for s in self.param_specs()[1]}

    def linear_flops(self, batch):
        total = 0
        for u in self.units:
            ho, wo, _ = u.out_shape
            for k, _, cin, cout in u.kernel_shapes().values():
                total += 2 * batch * ho * wo * k * k * cin * cout
        return total

    def for_forward_mode(self, reverse_after=True):
        return dataclasses.replace(self, conv_impl=convs.forward_mode_impl(self.conv_impl, reverse_after))


@dataclasses.dataclass(frozen=True)
class PoolDenseBlock(blk.LinearFeedbackBlock):
    """``fc``: F = dense(mean over H×W) + bias (logits); G = copy of ``y @ G.kernel`` to every pixel + bias.

    ``'reference'``: the copy is the reference's AdaptiveAvgPool2d up-sampling (no 1/(H·W));
    ``'adjoint'`` and ``'jacobian'``: divided by H·W, the exact transpose of the mean. Kernels:
    F ``[C, classes]``, G ``[classes, C]`` (G's fan-in is the number of classes), as DenseBlock.
    """

    name: str
    in_shape: tuple[int, int, int]
    features: int
    feedback_mode: str = "reference"

    def __post_init__(self):
        blk._check_positive(self.name, features=self.features)
        _check_mode(self.name, self.feedback_mode)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.features,)

    @property
    def _copy_scale(self) -> float:
        h, w, _ = self.in_shape
        return 1.0 if self.feedback_mode == "reference" else 1.0 / (h * w)

    def forward(self, params, x):
        return jnp.mean(x, axis=(1, 2)) @ params["kernel"] + params["bias"], None

    def feedback_is_linear(self, aux_a, aux_b):
        del aux_a, aux_b
        return True  # a dense map of its input, copied to every pixel

    def feedback_input(self, y, aux, *, unpool_mode="set"):
        del aux, unpool_mode
        return y

    def feedback_linear(self, params, a):
        h, w, c = self.in_shape
        v = (a @ params["kernel"]) * self._copy_scale
        return jnp.broadcast_to(v[:, None, None, :], (a.shape[0], h, w, c))

    def feedback_weight_grads(self, a, ct):
        return {"kernel": a.T @ jnp.sum(ct, axis=(1, 2)) * self._copy_scale}

    def feedback_bias(self, params):
        return params["bias"]  # (C,) broadcasts over H×W: the bias is added before the copy

    def param_specs(self):
        c, k = self.in_shape[2], self.features
        f = (blk.ParamSpec("kernel", (c, k), c, k), blk.ParamSpec("bias", (k,), c, weight=False))
        g = (blk.ParamSpec("kernel", (k, c), k, c), blk.ParamSpec("bias", (c,), k, weight=False))
        return f, g

    def jmc_pairs(self, f_params, g_params):
        return ((f_params["kernel"], g_params["kernel"].T),)

    def symmetric_feedback(self, f_params):
        return {
            "kernel": jnp.array(f_params["kernel"].T),
            "bias": jnp.zeros((self.in_shape[2],), f_params["kernel"].dtype),
        }

    def linear_flops(self, batch):
        return 2 * batch * self.in_shape[2] * self.features


def resnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    stage_blocks: tuple[int, int, int, int],
    name: str = "resnet",
    width: int = 64,
    activation: str = "relu",
    feedback: str = "reference",
    conv_impl: str = "auto",
) -> nets.Network:
    """A CIFAR-style ResNet (module docstring) with ``stage_blocks`` BasicBlocks per stage.

    ``width``: planes of layer_0/layer_1 (64 in the reference); ``activation``: 'relu'
    (reference) or another of ``jdtp.blocks.ACTIVATIONS`` ('identity' for linear checks);
    ``feedback``: 'reference', 'adjoint' or 'jacobian' (module docstring).
    """
    _check_mode(name, feedback)
    if activation not in blk.ACTIVATIONS:
        raise ValueError(
            f"{name}: unknown activation {activation!r}; expected one of {sorted(blk.ACTIVATIONS)}"
        )
    impl = convs.resolve_conv_impl(conv_impl)
    stem = StemBlock(
        name="layer_0",
        in_shape=tuple(input_shape),
        features=width,
        kernel_size=3,
        padding=1,
        activation=activation,
        use_bias=False,
        conv_impl=impl,
        feedback_mode=feedback,
    )
    blocks: list[blk.Block] = [stem]
    shape = stem.out_shape
    for k, (mult, stride, n) in enumerate(zip(STAGE_PLANES, STAGE_STRIDES, stage_blocks, strict=True)):
        stage = ResidualStage(
            f"layer_{k + 1}", shape, width * mult, int(n), stride, activation, feedback, impl
        )
        blocks.append(stage)
        shape = stage.out_shape
    blocks.append(PoolDenseBlock("fc", shape, num_classes, feedback))
    return nets.Network(name, tuple(blocks))


# The model options of both are resnet's keyword-only arguments after these two (design §3.4).
resnet18 = functools.partial(resnet, stage_blocks=(2, 2, 2, 2), name="resnet18")
resnet34 = functools.partial(resnet, stage_blocks=(3, 4, 6, 3), name="resnet34")
