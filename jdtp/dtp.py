"""Forward pass, target recursion and layer-local forward losses (paper §3.1, spec §2).

All functions are pure over explicit per-layer parameter tuples. Activations
are collected as ``s = (s^0, …, s^N)`` with ``s^0 = x`` and ``s^N`` the logits;
``idx[n]`` are the pool indices of F^n (``None`` without a pool). Targets use
the same indexing: ``t[n]`` is the target of ``s^n`` for n = 1..N and
``t[0] = None`` (no target is computed for the input).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jdtp import networks as nets


def forward_pass(net: nets.Network, fwd_params, x: jax.Array) -> tuple[tuple, tuple]:
    """s^{n+1} = F^n(s^n) for all blocks (paper Eq. 1).

    Returns:
      ``(s, idx)``: the N + 1 activations and the N blocks' pool indices.
    """
    s, idx = [x], []
    for block, p in zip(net.blocks, fwd_params):
        y, i = nets.forward_block(block, p, s[-1])
        s.append(y)
        idx.append(i)
    return tuple(s), tuple(idx)


def output_gradient(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """∂/∂s^N of the per-sample cross-entropy: softmax(s^N) − onehot(y) (spec §2.1.2)."""
    return jax.nn.softmax(logits) - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)


def output_target(logits: jax.Array, labels: jax.Array, beta: float) -> jax.Array:
    """First target, paper Eq. 3: t^N = s^N − β ∂L_pred/∂s^N (sign as in the code, spec §2.1.2)."""
    return logits - beta * output_gradient(logits, labels)


def propagate_targets(
    net: nets.Network, fb_params, s: tuple, idx: tuple, t_last: jax.Array, unpool_mode: str = "set"
) -> tuple:
    """Difference target propagation, paper Eq. 4 / Eq. 5.

    t^n = s^n + G^n(t^{n+1}; ι(s^n)) − G^n(s^{n+1}; ι(s^n)) for n = N−1 … 1,
    with the *clean* pool indices of F^n. Computed without gradients, as one
    linear map of the difference of G's transformed inputs, so G's bias
    cancels exactly (``networks.feedback_difference``).

    Returns:
      Tuple of length N + 1: ``(None, t^1, …, t^N)``.
    """
    n_blocks = net.num_blocks
    t: list[Any] = [None] * (n_blocks + 1)
    t[n_blocks] = jax.lax.stop_gradient(t_last)
    for n in range(n_blocks - 1, 0, -1):
        block, g = net.blocks[n], fb_params[n]
        diff = nets.feedback_difference(block, g, t[n + 1], idx[n], s[n + 1], idx[n], unpool_mode)
        t[n] = jax.lax.stop_gradient(s[n] + diff)
    return tuple(t)


def block_local_loss(s_next: jax.Array, t_next: jax.Array) -> jax.Array:
    """½ · mean_b ‖s^{n+1}_b − t^{n+1}_b‖², paper Eq. 6 without its 1/β (spec §2.1.4)."""
    diff = (s_next - t_next).reshape(s_next.shape[0], -1)
    return 0.5 * jnp.mean(jnp.sum(diff**2, axis=-1))


def local_loss(net: nets.Network, fwd_params, s: tuple, t: tuple) -> jax.Array:
    """L_F = Σ_n ½ mean_b ‖F^n(sg(s^n)) − t^{n+1}‖² with detached block inputs (spec §2.1.4).

    Because each block sees a detached input, ∇_{θ^n} L_F equals the gradient
    of the n-th term alone: every block learns only from its own target.
    """
    total = 0.0
    for n, (block, p) in enumerate(zip(net.blocks, fwd_params)):
        y, _ = nets.forward_block(block, p, jax.lax.stop_gradient(s[n]))
        total = total + block_local_loss(y, jax.lax.stop_gradient(t[n + 1]))
    return total


def forward_with_block_vjps(net: nets.Network, fwd_params, x: jax.Array):
    """Forward pass where each block sees its *detached* input, keeping each block's VJP.

    Local (per-layer) losses train each F^n on its own input only, so the
    gradients of all blocks come from these per-block VJPs without a second
    forward pass.

    Returns:
      ``(s, idx, vjps)``: activations ``(s^0, …, s^N)``, pool indices per block,
      and ``vjps[n]`` mapping a cotangent of ``(s^{n+1}, idx)`` to ∇θ^n.
    """
    s, idx, vjps = [x], [], []
    for block, p in zip(net.blocks, fwd_params):
        inp = jax.lax.stop_gradient(s[-1])
        (y, i), vjp = jax.vjp(lambda p_, b=block, x_=inp: nets.forward_block(b, p_, x_), p)
        s.append(y)
        idx.append(i)
        vjps.append(vjp)
    return tuple(s), tuple(idx), vjps


def dtp_forward_grads(
    net: nets.Network,
    fwd_params,
    fb_params,
    x: jax.Array,
    labels: jax.Array,
    beta: float,
    unpool_mode: str = "set",
):
    """DTP update direction for the forward weights: ∇θ L_F (spec §2.1).

    One forward pass keeps a VJP per block (inputs detached), targets are
    computed from it, and each block's gradient is its VJP of
    (s^{n+1} − t^{n+1}) / B, i.e. exactly ∇θ^n of :func:`local_loss` without a
    second forward pass.

    Returns:
      ``(grads, aux)`` where ``aux`` holds ``s``, ``idx``, ``t`` and ``loss``
      (the local loss L_F).
    """
    s, idx, vjps = forward_with_block_vjps(net, fwd_params, x)
    t = propagate_targets(net, fb_params, s, idx, output_target(s[-1], labels, beta), unpool_mode)
    grads, loss = [], 0.0
    batch = x.shape[0]
    for n, vjp in enumerate(vjps):
        diff = s[n + 1] - t[n + 1]
        loss = loss + block_local_loss(s[n + 1], t[n + 1])
        i_ct = None if idx[n] is None else jnp.zeros(idx[n].shape, jax.dtypes.float0)
        (g,) = vjp((diff / batch, i_ct))
        grads.append(g)
    return tuple(grads), {"s": s, "idx": idx, "t": t, "loss": loss}


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy on the logits (the reference's ``F.cross_entropy``)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def bp_loss(net: nets.Network, fwd_params, x: jax.Array, labels: jax.Array):
    s, _ = forward_pass(net, fwd_params, x)
    return cross_entropy(s[-1], labels), s[-1]


def bp_grads(net: nets.Network, fwd_params, x: jax.Array, labels: jax.Array):
    """Backprop gradient of the mean cross-entropy through the whole network (spec §4.5, §6.3).

    Returns:
      ``(grads, (loss, logits))``.
    """
    (loss, logits), grads = jax.value_and_grad(lambda p: bp_loss(net, p, x, labels), has_aux=True)(fwd_params)
    return grads, (loss, logits)
