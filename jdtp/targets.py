"""Forward pass, targets, layer-local losses and the forward-update primitive (paper §3, design §2).

All functions are pure over explicit per-layer parameter tuples. Activations
are collected as ``s = (s^0, …, s^N)`` with ``s^0 = x`` and ``s^N`` the logits;
``aux[n]`` is what F^n's pass hands to G^n (pool indices, or ``None``). Targets
use the same indexing: ``t[n]`` is the target of ``s^n`` for n = 1..N and
``t[0] = None`` (no target is computed for the input).

Every target-based algorithm (DTP, vanilla DTP, TP, DDTP, ParallelDTP) updates
its forward weights through :func:`forward_update`; they differ only in their
targets and block loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jdtp import networks as nets


def forward_pass(net: nets.Network, fwd_params, x: jax.Array) -> tuple[tuple, tuple]:
    """s^{n+1} = F^n(s^n) for all blocks (paper Eq. 1).

    Returns:
      ``(s, aux)``: the N + 1 activations and the N blocks' aux (pool indices).
    """
    s, aux = [x], []
    for block, p in zip(net.blocks, fwd_params, strict=True):
        y, a = block.forward(p, s[-1])
        s.append(y)
        aux.append(a)
    return tuple(s), tuple(aux)


def output_gradient(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """∂/∂s^N of the per-sample cross-entropy: softmax(s^N) − onehot(y) (design §2.1.2)."""
    return jax.nn.softmax(logits) - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)


def output_target(logits: jax.Array, labels: jax.Array, beta: float) -> jax.Array:
    """First target, paper Eq. 3: t^N = s^N − β ∂L_pred/∂s^N (sign as in the code, design §2.1.2)."""
    return logits - beta * output_gradient(logits, labels)


def propagate_targets(
    net: nets.Network, fb_params, s: tuple, aux: tuple, t_last: jax.Array, *, unpool_mode: str = "set"
) -> tuple:
    """Difference target propagation, paper Eq. 4 / Eq. 5.

    t^n = s^n + G^n(t^{n+1}; ι(s^n)) − G^n(s^{n+1}; ι(s^n)) for n = N−1 … 1,
    with the *clean* pool indices of F^n. Computed without gradients, through
    each block's ``feedback_difference`` (one linear map of the difference of
    G's transformed inputs where G allows it, so G's bias cancels exactly).

    Returns:
      Tuple of length N + 1: ``(None, t^1, …, t^N)``.
    """
    n_blocks = net.num_blocks
    t: list[Any] = [None] * (n_blocks + 1)
    t[n_blocks] = jax.lax.stop_gradient(t_last)
    for n in range(n_blocks - 1, 0, -1):
        block, g = net.blocks[n], fb_params[n]
        diff = block.feedback_difference(g, t[n + 1], aux[n], s[n + 1], aux[n], unpool_mode=unpool_mode)
        t[n] = jax.lax.stop_gradient(s[n] + diff)
    return tuple(t)


def propagate_targets_tp(
    net: nets.Network, fb_params, s: tuple, aux: tuple, t_last: jax.Array, *, unpool_mode: str = "set"
) -> tuple:
    """TP targets t^n = G^n(t^{n+1}; ι(s^n)) for n = N−1 … 1 (no difference correction, design §8.2)."""
    t: list[Any] = [None] * (net.num_blocks + 1)
    t[-1] = jax.lax.stop_gradient(t_last)
    for n in range(net.num_blocks - 1, 0, -1):
        g = net.blocks[n].feedback(fb_params[n], t[n + 1], aux[n], unpool_mode=unpool_mode)
        t[n] = jax.lax.stop_gradient(g)
    return tuple(t)


def block_local_loss(block, s_next: jax.Array, t_next: jax.Array) -> jax.Array:
    """½ · mean_b ‖s^{n+1}_b − t^{n+1}_b‖², paper Eq. 6 without its 1/β (design §2.1.4)."""
    del block
    diff = (s_next - t_next).reshape(s_next.shape[0], -1)
    return 0.5 * jnp.mean(jnp.sum(diff**2, axis=-1))


def forward_with_block_vjps(net: nets.Network, fwd_params, x: jax.Array):
    """Forward pass where each block sees its *detached* input, keeping each block's VJP.

    Local (per-layer) losses train each F^n on its own input only, so the
    gradients of all blocks come from these per-block VJPs without a second
    forward pass.

    Returns:
      ``(s, aux, vjps)``: activations ``(s^0, …, s^N)``, aux per block, and
      ``vjps[n]`` mapping a cotangent of s^{n+1} to ∇θ^n.
    """
    s, aux, vjps = [x], [], []
    for block, p in zip(net.blocks, fwd_params, strict=True):
        inp = jax.lax.stop_gradient(s[-1])
        y, vjp, a = jax.vjp(lambda p_, b=block, x_=inp: b.forward(p_, x_), p, has_aux=True)
        s.append(y)
        aux.append(a)
        vjps.append(vjp)
    return tuple(s), tuple(aux), vjps


BlockLoss = Callable[[Any, jax.Array, jax.Array], jax.Array]


def forward_update(
    net: nets.Network,
    fwd_params,
    x: jax.Array,
    *,
    targets: Callable[[tuple, tuple], tuple],
    block_loss: BlockLoss = block_local_loss,
):
    """The forward-weight update of a target-based algorithm: ∇θ Σ_n block_loss(F^n(sg(s^n)), t^{n+1}).

    One forward pass keeps each block's VJP (inputs detached, design §2.1.1);
    ``targets(s, aux)`` gives ``(None, t^1, …, t^N)`` (held constant); each
    block's gradient is its VJP of ``∂ block_loss / ∂ s^{n+1}``
    (``jax.value_and_grad``), i.e. ∇θ^n of its own loss term alone: every
    block learns only from its own target.

    Args:
      net: the network.
      fwd_params: forward parameters.
      x: the input batch.
      targets: the algorithm's targets from the activations and aux.
      block_loss: ``(block, s^{n+1}, t^{n+1}) -> scalar``; default Eq. 6 as coded.

    Returns:
      ``(grads, aux)`` where ``aux`` holds ``s``, ``aux``, ``t`` and ``loss``
      (the sum of the block losses).
    """
    s, aux, vjps = forward_with_block_vjps(net, fwd_params, x)
    t = targets(s, aux)
    grads, loss = [], 0.0
    for n, (block, vjp) in enumerate(zip(net.blocks, vjps, strict=True)):
        t_next = jax.lax.stop_gradient(t[n + 1])
        value, ct = jax.value_and_grad(lambda y, b=block, t_=t_next: block_loss(b, y, t_))(s[n + 1])
        (g,) = vjp(ct)
        grads.append(g)
        loss = loss + value
    return tuple(grads), {"s": s, "aux": aux, "t": t, "loss": loss}


def dtp_forward_grads(
    net: nets.Network,
    fwd_params,
    fb_params,
    x: jax.Array,
    labels: jax.Array,
    beta: float,
    *,
    unpool_mode: str = "set",
):
    """DTP update direction for the forward weights: ∇θ L_F with difference targets (design §2.1)."""

    def targets(s, aux):
        t_last = output_target(s[-1], labels, beta)
        return propagate_targets(net, fb_params, s, aux, t_last, unpool_mode=unpool_mode)

    return forward_update(net, fwd_params, x, targets=targets)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy on the logits (the reference's ``F.cross_entropy``)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def bp_loss(net: nets.Network, fwd_params, x: jax.Array, labels: jax.Array):
    s, _ = forward_pass(net, fwd_params, x)
    return cross_entropy(s[-1], labels), s[-1]


def bp_grads(net: nets.Network, fwd_params, x: jax.Array, labels: jax.Array):
    """Backprop gradient of the mean cross-entropy through the whole network (design §4.5, §6.3).

    Returns:
      ``(grads, (loss, logits))``.
    """
    (loss, logits), grads = jax.value_and_grad(lambda p: bp_loss(net, p, x, labels), has_aux=True)(fwd_params)
    return grads, (loss, logits)
