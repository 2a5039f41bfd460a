"""Train state and the jitted DTP and BP train steps (spec §1.1, §2).

``make_dtp_train_step`` and ``make_bp_train_step`` close over everything static
(network, optimizers, hyperparameters) and return one jitted function
``(state, batch, key) -> (state, metrics)`` that never retraces between steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jdtp import dtp, feedback
from jdtp import metrics as mt
from jdtp import networks as nets


class TrainState(flax.struct.PyTreeNode):
    """Everything a run needs to continue; keys are derived from (seed, step), not stored."""

    step: jax.Array
    fwd_params: Any
    fb_params: Any
    fwd_opt_state: Any
    fb_opt_state: Any


@dataclasses.dataclass(frozen=True)
class DTPHParams:
    """L-DRL DTP hyperparameters. Per-layer tuples are in forward order over G^1 … G^{N−1}."""

    beta: float
    noise_scale: tuple[float, ...]
    num_fb_iters: tuple[int, ...]
    fb_lr: tuple[float, ...]
    fb_momentum: float = 0.9
    unpool_mode: str = "set"
    probe: str = "difference"
    unroll: int = 1
    ldrl_closed_form: bool = True  # closed-form L-DRL gradient (feedback.ldrl_value_and_grad)

    def validate(self, net: nets.Network) -> None:
        """Strict per-layer length checks (the reference silently truncates, spec §10.6)."""
        n = net.num_trainable_fb
        for field in ("noise_scale", "num_fb_iters", "fb_lr"):
            value = getattr(self, field)
            if len(value) != n:
                raise ValueError(
                    f"dtp.{field} has {len(value)} entries {tuple(value)}, expected {n} "
                    f"(one per trainable feedback block G^1..G^{n} of {net.name})"
                )
        if self.unpool_mode not in nets.UNPOOL_MODES:
            raise ValueError(f"dtp.unpool_mode={self.unpool_mode!r}, expected one of {nets.UNPOOL_MODES}")
        if self.probe not in feedback.PROBES:
            raise ValueError(f"dtp.probe={self.probe!r}, expected one of {feedback.PROBES}")


Preprocess = Callable[[dict, jax.Array], tuple[jax.Array, jax.Array]]


def _default_preprocess(batch, key):
    del key
    return batch["image"], batch["label"]


def create_train_state(
    key: jax.Array,
    net: nets.Network,
    fwd_tx: optax.GradientTransformation,
    fb_txs: tuple[optax.GradientTransformation, ...] = (),
    dtype=jnp.float32,
) -> TrainState:
    """Initialise parameters (spec §3.5) and optimizer states.

    ``fb_txs`` holds one optimizer per trainable G^n (empty for BP, whose state
    still carries the unused feedback parameters so both algorithms share a
    checkpoint layout).
    """
    fwd_params, fb_params = nets.init_params(key, net, dtype)
    fb_opt_state = tuple(tx.init(fb_params[n + 1]) for n, tx in enumerate(fb_txs))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        fwd_params=fwd_params,
        fb_params=fb_params,
        fwd_opt_state=fwd_tx.init(fwd_params),
        fb_opt_state=fb_opt_state,
    )


def dtp_update(
    state: TrainState,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    net: nets.Network,
    fwd_tx: optax.GradientTransformation,
    fb_txs,
    hp: DTPHParams,
):
    """One DTP step, unjitted: feedback training, then the forward update (spec §1.1, §2.1)."""
    # Activations and clean indices once per batch, shared by all K iterations.
    s, idx = dtp.forward_pass(net, state.fwd_params, x)
    s = jax.lax.stop_gradient(s)
    fb_params, fb_opt_state, fb_losses = feedback.train_feedback(
        net,
        state.fwd_params,
        state.fb_params,
        state.fb_opt_state,
        fb_txs,
        s,
        idx,
        key,
        hp.num_fb_iters,
        hp.noise_scale,
        hp.unpool_mode,
        hp.probe,
        hp.unroll,
        hp.ldrl_closed_form,
    )
    grads, aux = dtp.dtp_forward_grads(net, state.fwd_params, fb_params, x, labels, hp.beta, hp.unpool_mode)
    updates, fwd_opt_state = fwd_tx.update(grads, state.fwd_opt_state, state.fwd_params)
    fwd_params = optax.apply_updates(state.fwd_params, updates)
    logits = aux["s"][-1]  # pre-update logits, as the reference logs (spec §2.1.7)
    jmc_dist, jmc_angle = mt.jmc_metrics(net, state.fwd_params, fb_params)
    metrics = {
        "loss": dtp.cross_entropy(logits, labels),
        "accuracy": mt.accuracy(logits, labels),
        "local_loss": aux["loss"],
        "fb_loss_first": jnp.stack([l[0] for l in fb_losses]),
        "fb_loss_last": jnp.stack([l[-1] for l in fb_losses]),
        "jmc_angle": jmc_angle,
        "jmc_dist": jmc_dist,
    }
    new_state = state.replace(
        step=state.step + 1,
        fwd_params=fwd_params,
        fb_params=fb_params,
        fwd_opt_state=fwd_opt_state,
        fb_opt_state=fb_opt_state,
    )
    return new_state, metrics


def bp_update(state: TrainState, x, labels, net: nets.Network, fwd_tx):
    """One backprop step on the same network (mean cross-entropy)."""
    grads, (loss, logits) = dtp.bp_grads(net, state.fwd_params, x, labels)
    updates, fwd_opt_state = fwd_tx.update(grads, state.fwd_opt_state, state.fwd_params)
    new_state = state.replace(
        step=state.step + 1,
        fwd_params=optax.apply_updates(state.fwd_params, updates),
        fwd_opt_state=fwd_opt_state,
    )
    return new_state, {"loss": loss, "accuracy": mt.accuracy(logits, labels)}


def make_dtp_train_step(
    net: nets.Network,
    fwd_tx: optax.GradientTransformation,
    fb_txs,
    hp: DTPHParams,
    preprocess: Preprocess | None = None,
    donate: bool = True,
):
    """Jitted ``(state, batch, key) -> (state, metrics)`` for L-DRL DTP.

    ``preprocess(batch, key) -> (x, labels)`` (e.g. augmentation) runs inside
    the step from ``fold_in(key, 0)``; feedback noise uses ``fold_in(key, 1)``.
    """
    hp.validate(net)
    preprocess = preprocess or _default_preprocess

    def step(state, batch, key):
        x, labels = preprocess(batch, jax.random.fold_in(key, 0))
        return dtp_update(state, x, labels, jax.random.fold_in(key, 1), net, fwd_tx, fb_txs, hp)

    return jax.jit(step, donate_argnums=(0,) if donate else ())


def make_bp_train_step(
    net: nets.Network,
    fwd_tx: optax.GradientTransformation,
    preprocess: Preprocess | None = None,
    donate: bool = True,
):
    """Jitted ``(state, batch, key) -> (state, metrics)`` for the backprop baseline."""
    preprocess = preprocess or _default_preprocess

    def step(state, batch, key):
        x, labels = preprocess(batch, jax.random.fold_in(key, 0))
        return bp_update(state, x, labels, net, fwd_tx)

    return jax.jit(step, donate_argnums=(0,) if donate else ())


def make_eval_step(net: nets.Network, top_k: int = 5, preprocess: Preprocess | None = None):
    """Jitted ``(fwd_params, batch) -> metrics`` with masked per-batch sums (for exact averages).

    ``batch['mask']`` (1 for real examples, 0 for padding) weights every sum.
    """
    preprocess = preprocess or _default_preprocess

    def step(fwd_params, batch):
        x, labels = preprocess(batch, None)
        x = x.astype(jax.tree.leaves(fwd_params)[0].dtype)  # float64 runs (DDTP) take float32 data
        s, _ = dtp.forward_pass(net, fwd_params, x)
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


def make_gmp_fn(net: nets.Network, beta: float = 0.005, unpool_mode: str = "set"):
    """Jitted ``(fwd_params, fb_params, x, labels) -> (dists, angles)``: DTP update/β vs BP gradient.

    Spec §6.3; β defaults to the paper's Fig. 4 value 0.005.
    """

    def fn(fwd_params, fb_params, x, labels):
        dtp_g, _ = dtp.dtp_forward_grads(net, fwd_params, fb_params, x, labels, beta, unpool_mode)
        bp_g, _ = dtp.bp_grads(net, fwd_params, x, labels)
        return mt.gmp_metrics(dtp_g, bp_g, beta)

    return jax.jit(fn)
