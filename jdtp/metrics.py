"""Alignment metrics, exactly as the reference computes them (spec §6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jdtp import networks as nets


def relative_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    """dist(A, B) = sqrt(Σ(A − B)² / ΣA²), relative to the *first* argument (spec §6.1)."""
    return jnp.sqrt(jnp.sum((a - b) ** 2) / jnp.sum(a**2))


def angle(a: jax.Array, b: jax.Array) -> jax.Array:
    """Global angle in degrees between two tensors, both flattened (spec §6.1).

    arccos(clip(⟨A, B⟩ / (‖A‖·‖B‖ + 1e-8), −1, 1)), as the reference.
    """
    a, b = a.ravel(), b.ravel()
    cos = jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-8)
    return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))


def jmc_metrics(net: nets.Network, fwd_params, fb_params) -> tuple[jax.Array, jax.Array]:
    """Distance and angle between F^n's and G^n's weights, n = 1 … N−1 (spec §6.2).

    Dense blocks compare ``F.kernel`` with ``G.kernel.T``; conv blocks compare
    the kernels as stored (G's kernel is kept in F's layout, so equality means
    G is F's adjoint: no flip). Biases are never compared.

    Returns:
      ``(distances, angles)``, each ``[N − 1]``.
    """
    dists, angles = [], []
    for n in range(1, net.num_blocks):
        a = fwd_params[n]["kernel"]
        b = nets.fb_weight_as_forward(net.blocks[n], fb_params[n])
        dists.append(relative_distance(a, b))
        angles.append(angle(a, b))
    return jnp.stack(dists), jnp.stack(angles)


def gmp_metrics(dtp_grads, bp_grads, beta: float) -> tuple[jax.Array, jax.Array]:
    """Angle and distance between DTP updates / β and BP gradients, per block (spec §6.3).

    Only weights (``kernel``) are compared; biases are dropped as in the
    paper's plots. ``dist`` is relative to the DTP update / β
    (the CompareToBackprop callback's argument order).

    Returns:
      ``(distances, angles)``, each ``[N]`` (one per forward block).
    """
    dists, angles = [], []
    for d, b in zip(dtp_grads, bp_grads):
        scaled = d["kernel"] / beta
        dists.append(relative_distance(scaled, b["kernel"]))
        angles.append(angle(scaled, b["kernel"]))
    return jnp.stack(dists), jnp.stack(angles)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, -1) == labels)


def top_k_accuracy(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """Fraction of samples whose label is among the k largest logits."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.mean(jnp.any(top == labels[:, None], axis=-1))
