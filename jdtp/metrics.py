"""Alignment metrics, exactly as the reference computes them (design §6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdtp import networks as nets


def relative_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    """dist(A, B) = sqrt(Σ(A − B)² / ΣA²), relative to the *first* argument (design §6.1)."""
    return jnp.sqrt(jnp.sum((a - b) ** 2) / jnp.sum(a**2))


def angle(a: jax.Array, b: jax.Array) -> jax.Array:
    """Global angle in degrees between two tensors, both flattened (design §6.1).

    arccos(clip(⟨A, B⟩ / (‖A‖·‖B‖ + 1e-8), −1, 1)), as the reference.
    """
    a, b = a.ravel(), b.ravel()
    cos = jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-8)
    return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))


def _flat(arrays) -> jax.Array:
    return jnp.concatenate([jnp.ravel(a) for a in arrays])


def jmc_metrics(net: nets.Network, fwd_params, fb_params) -> tuple[jax.Array, jax.Array]:
    """Distance and angle between F^n's and G^n's weights, n = 1 … N−1 (design §6.2).

    Each block names the pairs to compare (:meth:`jdtp.blocks.Block.jmc_pairs`:
    dense blocks ``F.kernel`` vs ``G.kernel.T``, conv blocks the kernels as
    stored, since G's kernel is kept in F's layout). A block with several
    weights is compared as one vector (all its pairs concatenated). Biases are
    never compared.

    Returns:
      ``(distances, angles)``, each ``[N − 1]``.
    """
    dists, angles = [], []
    for n in range(1, net.num_blocks):
        pairs = net.blocks[n].jmc_pairs(fwd_params[n], fb_params[n])
        a, b = _flat([p[0] for p in pairs]), _flat([p[1] for p in pairs])
        dists.append(relative_distance(a, b))
        angles.append(angle(a, b))
    return jnp.stack(dists), jnp.stack(angles)


def gmp_metrics(net: nets.Network, update, bp_grads, nudge: float) -> tuple[jax.Array, jax.Array]:
    """Angle and distance between an algorithm's update / nudge and the BP gradient, per block (design §6.3).

    Only weights are compared (:meth:`jdtp.blocks.Block.forward_weights`,
    concatenated per block); biases are dropped as in the paper's plots.
    ``dist`` is relative to the update / nudge (the CompareToBackprop
    callback's argument order); ``nudge`` is DTP's β or DDTP's η.

    Returns:
      ``(distances, angles)``, each ``[N]`` (one per forward block).
    """
    dists, angles = [], []
    for block, d, b in zip(net.blocks, update, bp_grads, strict=True):
        scaled = _flat(block.forward_weights(d)) / nudge
        ref = _flat(block.forward_weights(b))
        dists.append(relative_distance(scaled, ref))
        angles.append(angle(scaled, ref))
    return jnp.stack(dists), jnp.stack(angles)


def gmp_norm_ratios(net: nets.Network, update, bp_grads, nudge: float) -> jax.Array:
    """‖update / nudge‖ / ‖BP gradient‖ per block, weights only (what the GMP angle leaves out).

    The angle says where an update points; this says how long it is against the BP gradient it
    stands for: 1 when the feedback carries the gradient's scale, above 1 when the propagated
    targets amplify it (a forward step that many times BP's at the same learning rate).

    Returns:
      ``[N]``, one ratio per forward block.
    """
    ratios = []
    for block, d, b in zip(net.blocks, update, bp_grads, strict=True):
        scaled = _flat(block.forward_weights(d)) / nudge
        ratios.append(jnp.linalg.norm(scaled) / (jnp.linalg.norm(_flat(block.forward_weights(b))) + 1e-30))
    return jnp.stack(ratios)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, -1) == labels)


def top_k_accuracy(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """Fraction of samples whose label is among the k largest logits."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.mean(jnp.any(top == labels[:, None], axis=-1))
