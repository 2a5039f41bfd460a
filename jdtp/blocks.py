"""The block protocol: a forward block F^n and its feedback block G^n as pure functions (design §3).

A network (``jdtp.networks``) is a tuple of blocks; parameters live outside
them in explicit per-layer pytrees (``fwd_params[n]`` for F^n, ``fb_params[n]``
for G^n), so the algorithms can differentiate, scan and probe each block with
plain JAX transforms. Every block type implements :class:`Block`:

* ``forward(params, x) -> (y, aux)``: F^n (paper Eq. 1); ``aux`` is what the
  paired G^n needs from that pass (pool indices ι(x), or ``None``);
* ``feedback(params, y, aux, unpool_mode=…)``: G^n, mapping s^{n+1}-space
  values back to s^n-space, and ``feedback_difference`` (G(a) − G(b), what DTP
  and L-DRL actually use);
* ``param_specs()``: shapes and fan-ins of F's and G's parameters (init);
* ``jmc_pairs(f, g)``: the (F weight, G weight in F's layout) pairs that the
  JMC compares (Def. 4.1), ``symmetric_feedback(f)`` (G's weights = F's
  adjoint) and ``forward_weights(f)`` (the weights the GMP compares);
* optionally the closed-form L-DRL gradient: blocks whose G is
  ``linear ∘ input transform + bias`` (:class:`LinearFeedbackBlock`) expose the
  linear part and its parameter gradient, and ``jdtp.feedback`` uses them
  instead of autodiff.

Layout: activations are NHWC. Conv kernels of F *and* G are stored in F's
layout HWIO ``[k, k, C_in, C_out]`` and G's transposed conv is the exact
adjoint of F's conv with G's kernel, so ``G.kernel == F.kernel`` means G's
linear part is F's transpose (design §11). Dense kernels are ``[in, out]`` for F
and ``[out_F, in_F]`` for G, so the adjoint is ``G.kernel == F.kernel.T``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jdtp import conv as convs
from jdtp import pooling

Params = dict[str, jax.Array]

ACTIVATIONS = {
    "elu": jax.nn.elu,
    "identity": lambda x: x,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


def activation_fn(name: str):
    """The activation function registered under ``name``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _check_positive(name: str, **values: int) -> None:
    for key, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{name}: {key}={v}, expected >= 1")


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter of F^n or G^n.

    Attributes:
      name: key in the block's parameter dict.
      shape: array shape.
      fan_in: PyTorch's fan-in; the default init is U(±1/√fan_in) (design §3.5).
      fan_out: PyTorch's fan-out (xavier init of the DDTP baseline).
      weight: ``True`` for weights (kernels), ``False`` for biases.
    """

    name: str
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int = 0
    weight: bool = True


class Block(abc.ABC):
    """The protocol of a (F^n, G^n) pair; see the module docstring.

    Subclasses are frozen dataclasses with at least ``name`` and ``in_shape``
    (per-example shape of s^n).
    """

    name: str
    in_shape: tuple[int, ...]

    @property
    @abc.abstractmethod
    def out_shape(self) -> tuple[int, ...]:
        """Per-example shape of s^{n+1}."""

    @abc.abstractmethod
    def forward(self, params: Params, x: jax.Array) -> tuple[jax.Array, Any]:
        """F^n: ``(s^{n+1}, aux)`` from s^n; ``aux`` (e.g. pool indices) is what G^n needs."""

    @abc.abstractmethod
    def feedback(
        self, params: Params, y: jax.Array, aux: Any, *, unpool_mode: str = "set", with_bias: bool = True
    ) -> jax.Array:
        """G^n(y): an s^{n+1}-space value to s^n-space, with the ``aux`` of the paired F^n pass."""

    def feedback_is_linear(self, aux_a: Any, aux_b: Any) -> bool:
        """Whether G(a; aux_a) − G(b; aux_b) = G(a − b; aux_a) without its bias (G linear in its input).

        False unless a block knows better (its G applies an activation or unpools with the aux).
        """
        del aux_a, aux_b
        return False

    def feedback_difference(
        self, params: Params, a: jax.Array, aux_a: Any, b: jax.Array, aux_b: Any, *, unpool_mode: str = "set"
    ) -> jax.Array:
        """G^n(a; aux_a) − G^n(b; aux_b) (the difference DTP targets and L-DRL use)."""
        ga = self.feedback(params, a, aux_a, unpool_mode=unpool_mode)
        return ga - self.feedback(params, b, aux_b, unpool_mode=unpool_mode)

    @abc.abstractmethod
    def param_specs(self) -> tuple[tuple[ParamSpec, ...], tuple[ParamSpec, ...]]:
        """``(F's specs, G's specs)``."""

    @abc.abstractmethod
    def jmc_pairs(self, f_params: Params, g_params: Params) -> tuple[tuple[jax.Array, jax.Array], ...]:
        """(F weight, G weight in F's layout) pairs; equal pairs mean G's linear part is F's adjoint."""

    @abc.abstractmethod
    def symmetric_feedback(self, f_params: Params) -> Params:
        """G's parameters with every weight equal to F's adjoint (copied) and zero biases."""

    @abc.abstractmethod
    def linear_flops(self, batch: int) -> int:
        """FLOPs (2 per multiply-add) of F's linear maps on a batch (G's are the same count)."""

    def forward_weights(self, f_params: Params) -> tuple[jax.Array, ...]:
        """F's weights (no biases), in ``param_specs`` order: what the GMP angle compares (design §6.3)."""
        return tuple(f_params[s.name] for s in self.param_specs()[0] if s.weight)

    def for_forward_mode(self, reverse_after: bool = True) -> Block:
        """A numerically identical block usable under ``jax.jvp`` (some CPU convs are reverse-mode only).

        ``reverse_after``: whether the jvp is then differentiated in reverse mode
        (:func:`jdtp.conv.forward_mode_impl`).
        """
        return self

    # Closed-form L-DRL gradient (optional): see LinearFeedbackBlock.
    closed_form_ldrl: ClassVar[bool] = False


class LinearFeedbackBlock(Block):
    """A block whose G is ``feedback_linear(feedback_input(y)) + bias``.

    ``feedback_input`` is parameter-free (unpool, activation) and
    ``feedback_linear`` is linear in G's weights and in its input. Then every
    difference G(a) − G(b) is one linear map of ``feedback_input(a) −
    feedback_input(b)`` (G's bias cancels exactly), and the L-DRL gradient has
    a closed form (``jdtp.feedback.ldrl_layer_loss``) built on
    :meth:`feedback_weight_grads`.
    """

    closed_form_ldrl: ClassVar[bool] = True

    @abc.abstractmethod
    def feedback_input(self, y: jax.Array, aux: Any, *, unpool_mode: str = "set") -> jax.Array:
        """The parameter-free first part of G^n."""

    @abc.abstractmethod
    def feedback_linear(self, params: Params, a: jax.Array) -> jax.Array:
        """The linear part of G^n, without bias."""

    @abc.abstractmethod
    def feedback_weight_grads(self, a: jax.Array, ct: jax.Array) -> Params:
        """∇ of ⟨ct, feedback_linear(params, a)⟩ w.r.t. G's weights (biases left out: their gradient is 0).

        The map is linear in the weights, so this does not depend on them.
        """

    @abc.abstractmethod
    def feedback_bias(self, params: Params) -> jax.Array | None:
        """G's bias, broadcastable to s^n, or ``None``."""

    def feedback(self, params, y, aux, *, unpool_mode="set", with_bias=True):
        h = self.feedback_linear(params, self.feedback_input(y, aux, unpool_mode=unpool_mode))
        bias = self.feedback_bias(params) if with_bias else None
        return h if bias is None else h + bias

    def feedback_difference(self, params, a, aux_a, b, aux_b, *, unpool_mode="set"):
        # One linear map of the difference of transformed inputs instead of two
        # G passes: the bias cancels exactly and one transposed conv is saved.
        diff = self.feedback_input(a, aux_a, unpool_mode=unpool_mode) - self.feedback_input(
            b, aux_b, unpool_mode=unpool_mode
        )
        return self.feedback_linear(params, diff)


@dataclasses.dataclass(frozen=True)
class ConvBlock(LinearFeedbackBlock):
    """F = pool ∘ act ∘ conv; G = convᵀ ∘ act ∘ unpool (design §3.1).

    G applies the activation to its *input* (design §3.1, paper App. B), and the
    unpool uses the indices of the F pass it is paired with.
    """

    name: str
    in_shape: tuple[int, int, int]  # (H, W, C_in)
    features: int
    kernel_size: int
    padding: int
    stride: int = 1
    pool: pooling.Pool | None = None
    activation: str = "elu"
    use_bias: bool = True
    conv_impl: str = "xla"  # 'xla', 'im2col' or 'mixed' (jdtp.conv.resolve_conv_impl)

    def __post_init__(self):
        _check_positive(self.name, features=self.features, kernel_size=self.kernel_size, stride=self.stride)
        activation_fn(self.activation)
        if self.conv_impl not in convs.CONV_IMPLS:
            raise ValueError(f"{self.name}: conv_impl={self.conv_impl!r}, expected one of {convs.CONV_IMPLS}")
        if min(self.conv_shape[:2]) < 1 or (self.pool is not None and min(self.out_shape[:2]) < 1):
            raise ValueError(f"{self.name}: input {self.in_shape} is too small for this block")

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

    def forward(self, params, x):
        h = convs.conv(x, params["kernel"], self.stride, self.padding, self.conv_impl)
        if self.use_bias:
            h = h + params["bias"]
        h = activation_fn(self.activation)(h)
        if self.pool is None:
            return h, None
        return pooling.max_pool_with_indices(h, self.pool)

    def feedback_input(self, y, aux, *, unpool_mode="set"):
        if self.pool is not None:
            hc, wc, _ = self.conv_shape
            y = pooling.max_unpool(y, aux, self.pool, (hc, wc), unpool_mode)
        return activation_fn(self.activation)(y)

    def feedback_linear(self, params, a):
        return convs.conv_transpose(
            a, params["kernel"], self.stride, self.padding, self.in_shape[:2], self.conv_impl
        )

    def feedback_weight_grads(self, a, ct):
        # By adjointness, ∇_W ⟨ct, convᵀ(a; W)⟩ = ∇_W ⟨a, conv(ct; W)⟩: F's kernel gradient at input ct.
        k, s, p = self.kernel_size, self.stride, self.padding
        return {"kernel": convs.conv_kernel_grad(ct, a, k, s, p, self.conv_impl)}

    def feedback_bias(self, params):
        return params["bias"] if self.use_bias else None

    def param_specs(self):
        k, cin, cout = self.kernel_size, self.in_shape[2], self.features
        fan_in = cin * k * k  # Conv2d and its ConvTranspose2d share Cin_F·k² (design §3.5)
        fan_out = cout * k * k
        f = [ParamSpec("kernel", (k, k, cin, cout), fan_in, fan_out)]
        g = [ParamSpec("kernel", (k, k, cin, cout), fan_in, fan_out)]  # G's kernel in F's layout
        if self.use_bias:
            f.append(ParamSpec("bias", (cout,), fan_in, weight=False))
            g.append(ParamSpec("bias", (cin,), fan_in, weight=False))
        return tuple(f), tuple(g)

    def jmc_pairs(self, f_params, g_params):
        return ((f_params["kernel"], g_params["kernel"]),)  # same layout: no flip (design §6.2)

    def symmetric_feedback(self, f_params):
        g = {"kernel": jnp.array(f_params["kernel"])}
        if self.use_bias:
            g["bias"] = jnp.zeros((self.in_shape[2],), f_params["kernel"].dtype)
        return g

    def linear_flops(self, batch):
        ho, wo, cout = self.conv_shape
        return 2 * batch * ho * wo * self.kernel_size**2 * self.in_shape[2] * cout

    def for_forward_mode(self, reverse_after=True):
        return dataclasses.replace(self, conv_impl=convs.forward_mode_impl(self.conv_impl, reverse_after))


@dataclasses.dataclass(frozen=True)
class DenseBlock(LinearFeedbackBlock):
    """F = act ∘ dense ∘ flatten; G = reshape ∘ dense ∘ act (design §3.1).

    The output block uses ``activation='identity'`` (logits), so its G is a
    single dense layer.
    """

    name: str
    in_shape: tuple[int, ...]
    features: int
    activation: str = "elu"
    use_bias: bool = True

    def __post_init__(self):
        _check_positive(self.name, features=self.features)
        activation_fn(self.activation)

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.features,)

    def forward(self, params, x):
        h = x.reshape(x.shape[0], -1) @ params["kernel"]
        if self.use_bias:
            h = h + params["bias"]
        return activation_fn(self.activation)(h), None

    def feedback_input(self, y, aux, *, unpool_mode="set"):
        del aux, unpool_mode
        return activation_fn(self.activation)(y)

    def feedback_linear(self, params, a):
        return (a @ params["kernel"]).reshape(a.shape[0], *self.in_shape)

    def feedback_weight_grads(self, a, ct):
        return {"kernel": a.reshape(a.shape[0], -1).T @ ct.reshape(ct.shape[0], -1)}

    def feedback_bias(self, params):
        return params["bias"].reshape(self.in_shape) if self.use_bias else None

    def param_specs(self):
        fin, fout = self.in_features, self.features
        f = [ParamSpec("kernel", (fin, fout), fin, fout)]
        g = [ParamSpec("kernel", (fout, fin), fout, fin)]  # G's fan-in is F's out_features
        if self.use_bias:
            f.append(ParamSpec("bias", (fout,), fin, weight=False))
            g.append(ParamSpec("bias", (fin,), fout, weight=False))
        return tuple(f), tuple(g)

    def jmc_pairs(self, f_params, g_params):
        return ((f_params["kernel"], g_params["kernel"].T),)

    def symmetric_feedback(self, f_params):
        g = {"kernel": jnp.array(f_params["kernel"].T)}
        if self.use_bias:
            g["bias"] = jnp.zeros((self.in_features,), f_params["kernel"].dtype)
        return g

    def linear_flops(self, batch):
        return 2 * batch * self.in_features * self.features
