"""s-DDTP and p-DDTP training: the DDTP-linear baseline of paper Table 1 (spec §8.4).

Meulemans et al. (2020)'s LeNet-equivalent (tanh, max-pool 3×3/s2/p1, fc 512,
output) with direct linear feedback Q_n from the output to every hidden layer,
trained as the paper's runs did:

* per batch (spec §8.4 "Per-batch order"): forward pass; the DDTP forward
  gradients with the *current* Q (:func:`jdtp.drl.ddtp_forward_grads`); the DRL
  feedback training of all Q_n (:func:`jdtp.drl.train_feedback`, one Adam over
  all feedback weights, fork or original semantics); then the forward step,
  one Adam per layer with lr_i / η (``normalize_lr``) and eps_i, no schedule;
* **s-DDTP**: ``epochs_fb`` feedback-only epochs first, then each epoch joint
  training followed by ``extra_fb_epochs`` feedback-only epochs, K = 1;
* **p-DDTP**: no feedback-only epochs, K_n per layer (Table 9).

A feedback-only step runs the same forward pass and DRL training but leaves the
forward weights and their optimizer state untouched (tested).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jdtp import drl, dtp, steps
from jdtp import metrics as mt
from jdtp import networks as nets

PHASES = ("joint", "feedback")


@dataclasses.dataclass(frozen=True)
class DDTPHParams:
    """DDTP hyperparameters (spec §8.4, paper Tables 8 and 9).

    Attributes:
      target_stepsize: η, the output target's step on the mean cross-entropy.
      lr: forward Adam learning rate per block (all N blocks), *before* ÷η.
      eps: forward Adam ε per block.
      num_fb_iters: K_n per hidden layer n = 1 … N−1.
      drl: the feedback optimizer and noise (:class:`jdtp.drl.DRLHParams`).
      epochs_fb: feedback-only epochs before the first joint epoch (s-DDTP: 10).
      extra_fb_epochs: feedback-only epochs after each joint epoch (s-DDTP: 1).
      normalize_lr: divide ``lr`` by η, as the reference's ``normalize_lr``.
    """

    target_stepsize: float
    lr: tuple[float, ...]
    eps: tuple[float, ...]
    num_fb_iters: tuple[int, ...]
    drl: drl.DRLHParams
    epochs_fb: int = 0
    extra_fb_epochs: int = 0
    normalize_lr: bool = True
    b1: float = 0.9
    b2: float = 0.999

    def validate(self, net: nets.Network) -> None:
        n = net.num_blocks
        for field, expected in (("lr", n), ("eps", n), ("num_fb_iters", n - 1)):
            value = tuple(getattr(self, field))
            if len(value) != expected:
                what = "block" if expected == n else "hidden layer (s^1..s^{N-1})"
                raise ValueError(
                    f"ddtp.{field} has {len(value)} entries {value}, expected {expected}: one per {what} "
                    f"of {net.name}"
                )
        if self.target_stepsize <= 0:
            raise ValueError(f"ddtp.target_stepsize={self.target_stepsize}, expected > 0")
        if any(k < 0 or int(k) != k for k in self.num_fb_iters):
            raise ValueError(f"ddtp.num_fb_iters={self.num_fb_iters}, expected integers >= 0")
        if self.epochs_fb < 0 or self.extra_fb_epochs < 0:
            raise ValueError("ddtp.epochs_fb and ddtp.extra_fb_epochs must be >= 0")
        self.drl.validate()


def phase_of_epoch(epoch: int, epochs_fb: int, extra_fb_epochs: int) -> str:
    """'feedback' or 'joint' for a (0-based) data epoch of the DDTP schedule."""
    if epoch < epochs_fb:
        return "feedback"
    return "joint" if (epoch - epochs_fb) % (1 + extra_fb_epochs) == 0 else "feedback"


def total_epochs(num_epochs: int, epochs_fb: int, extra_fb_epochs: int) -> int:
    """Data epochs of a run with ``num_epochs`` joint epochs."""
    return epochs_fb + num_epochs * (1 + extra_fb_epochs)


def init_forward_params(key: jax.Array, net: nets.Network, dtype=jnp.float32) -> tuple[dict, ...]:
    """Xavier-normal forward weights, zero biases (spec §8.4 "Initialisation").

    Conv kernels ``[k, k, C_in, C_out]`` use torch's fans C_in·k² and C_out·k²;
    dense kernels ``[in, out]`` use in and out.
    """
    params = []
    for n, block in enumerate(net.blocks):
        if isinstance(block, nets.ConvBlock):
            k, cin, cout = block.kernel_size, block.in_shape[2], block.features
            shape, fans = (k, k, cin, cout), (cin * k * k, cout * k * k)
        else:
            shape, fans = (block.in_features, block.features), (block.in_features, block.features)
        std = math.sqrt(2.0 / sum(fans))
        p = {"kernel": std * jax.random.normal(jax.random.fold_in(key, n), shape, dtype)}
        if block.use_bias:
            p["bias"] = jnp.zeros((block.features,), dtype)
        params.append(p)
    return tuple(params)


def make_forward_optimizers(hp: DDTPHParams) -> tuple[optax.GradientTransformation, ...]:
    """One Adam per block: lr_i (÷η when ``normalize_lr``), eps_i, β = (0.9, 0.999), no decay.

    optax's Adam divides by ``sqrt(v̂) + ε`` exactly as ``torch.optim.Adam`` does.
    """
    scale = 1.0 / hp.target_stepsize if hp.normalize_lr else 1.0
    return tuple(
        optax.adam(float(lr) * scale, b1=hp.b1, b2=hp.b2, eps=float(eps)) for lr, eps in zip(hp.lr, hp.eps)
    )


def create_train_state(key: jax.Array, net: nets.Network, hp: DDTPHParams, dtype=jnp.float32):
    """A :class:`jdtp.steps.TrainState` whose feedback parameters are the direct Q_n."""
    k_f, k_q = jax.random.split(key)
    fwd = init_forward_params(k_f, net, dtype)
    q = drl.init_direct_feedback(k_q, net, dtype)
    txs = make_forward_optimizers(hp)
    state = steps.TrainState(
        step=jnp.zeros((), jnp.int32),
        fwd_params=fwd,
        fb_params=q,
        fwd_opt_state=tuple(tx.init(p) for tx, p in zip(txs, fwd)),
        fb_opt_state=drl.init_opt_state(q),
    )
    # One buffer per leaf: the Adam moments start as shared zero arrays, and the
    # jitted steps donate the state (a buffer may be donated only once).
    return jax.tree.map(jnp.copy, state)


def ddtp_update(net: nets.Network, hp: DDTPHParams, state, x: jax.Array, labels: jax.Array, key, phase: str):
    """One DDTP step on a batch; ``phase='feedback'`` trains only Q (spec §8.4).

    Returns:
      ``(new_state, metrics)`` with the cross-entropy and accuracy of the
      pre-update logits, the DDTP local loss, and the first/last DRL loss of each
      hidden layer.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown DDTP phase {phase!r}; expected one of {PHASES}")
    x = x.astype(jax.tree.leaves(state.fwd_params)[0].dtype)
    # Forward gradients with the current Q, before the feedback update (spec §8.4 step 2).
    grads, aux = drl.ddtp_forward_grads(net, state.fwd_params, state.fb_params, x, labels, hp.target_stepsize)
    s = jax.tree.map(jax.lax.stop_gradient, aux["s"])
    q, fb_opt_state, losses = drl.train_feedback(
        net, state.fwd_params, state.fb_params, state.fb_opt_state, s, key, hp.num_fb_iters, hp.drl
    )
    fwd_params, fwd_opt_state = state.fwd_params, state.fwd_opt_state
    if phase == "joint":
        new_p, new_s = [], []
        for tx, g, p, st in zip(make_forward_optimizers(hp), grads, fwd_params, fwd_opt_state):
            updates, st = tx.update(g, st, p)
            new_p.append(optax.apply_updates(p, updates))
            new_s.append(st)
        fwd_params, fwd_opt_state = tuple(new_p), tuple(new_s)
    logits = s[-1]
    first = jnp.stack([ls[0] if ls.shape[0] else jnp.zeros((), logits.dtype) for ls in losses])
    last = jnp.stack([ls[-1] if ls.shape[0] else jnp.zeros((), logits.dtype) for ls in losses])
    metrics = {
        "loss": dtp.cross_entropy(logits, labels),
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        "local_loss": aux["loss"],
        "fb_loss_first": first,
        "fb_loss_last": last,
    }
    new_state = steps.TrainState(state.step + 1, fwd_params, q, fwd_opt_state, fb_opt_state)
    return new_state, metrics


def make_train_steps(net: nets.Network, hp: DDTPHParams, preprocess=None) -> dict[str, Any]:
    """Jitted ``(state, batch, key) -> (state, metrics)`` for each phase (buffers donated)."""
    hp.validate(net)
    preprocess = preprocess or steps._default_preprocess

    def make(phase):
        def step(state, batch, key):
            k_aug, k_fb = jax.random.split(key)
            x, labels = preprocess(batch, k_aug)
            return ddtp_update(net, hp, state, x, labels, k_fb, phase)

        return jax.jit(step, donate_argnums=(0,))

    return {phase: make(phase) for phase in PHASES}


def make_gmp_fn(net: nets.Network, target_stepsize: float):
    """Jitted ``(fwd_params, q_params, x, labels) -> (dists, angles)``: DDTP update vs BP gradient (Fig. 4)."""

    def fn(fwd_params, q_params, x, labels):
        x = x.astype(jax.tree.leaves(fwd_params)[0].dtype)
        g, _ = drl.ddtp_forward_grads(net, fwd_params, q_params, x, labels, target_stepsize)
        bp_g, _ = dtp.bp_grads(net, fwd_params, x, labels)
        return mt.gmp_metrics(g, bp_g, target_stepsize)

    return jax.jit(fn)
