"""Evaluation: exact (masked) test loss, top-1 and top-5 accuracy of the forward network."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import optax

from jdtp import networks as nets
from jdtp import targets

Preprocess = Callable[[dict, jax.Array | None], tuple[jax.Array, jax.Array]]


def make_eval_step(net: nets.Network, top_k: int = 5, preprocess: Preprocess | None = None):
    """Jitted ``(fwd_params, batch) -> sums`` over one batch, weighted by ``batch['mask']``.

    ``batch['mask']`` (1 for real examples, 0 for the padding of the last eval
    batch) weights every sum, so :func:`evaluate` gets exact averages.

    Returns:
      A function returning ``{'count', 'loss_sum', 'correct', 'correct_top5'}``.
    """

    def step(fwd_params, batch):
        if preprocess is None:
            x, labels = batch["image"], batch["label"]
        else:
            x, labels = preprocess(batch, None)
        x = x.astype(jax.tree.leaves(fwd_params)[0].dtype)  # float64 runs (DDTP) take float32 data
        s, _ = targets.forward_pass(net, fwd_params, x)
        logits = s[-1]
        weight = batch.get("mask", jnp.ones(labels.shape, logits.dtype)).astype(logits.dtype)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels).astype(logits.dtype)
        k = min(top_k, logits.shape[-1])
        top = jax.lax.top_k(logits, k)[1]
        correct_k = jnp.any(top == labels[:, None], axis=-1).astype(logits.dtype)
        return {
            "count": jnp.sum(weight),
            "loss_sum": jnp.sum(ce * weight),
            "correct": jnp.sum(correct * weight),
            "correct_top5": jnp.sum(correct_k * weight),
        }

    return jax.jit(step)


def evaluate(eval_step, fwd_params, batches: Iterable[dict]) -> dict[str, float]:
    """Sum :func:`make_eval_step`'s outputs over ``batches`` and divide by the real example count."""
    totals: dict[str, float] = {}
    for batch in batches:
        out = eval_step(fwd_params, batch)
        for k, v in jax.device_get(out).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    n = totals["count"]
    return {
        "eval/loss": totals["loss_sum"] / n,
        "eval/accuracy": totals["correct"] / n,
        "eval/top5_accuracy": totals["correct_top5"] / n,
    }
