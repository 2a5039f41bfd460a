"""s-DDTP and p-DDTP: the DDTP-linear baseline of paper Table 1 (design §8.4): ``config.algorithm = 'ddtp'``.

Meulemans et al. (2020)'s LeNet-equivalent (tanh, max-pool 3×3/s2/p1, fc 512,
output) with direct linear feedback Q_n from the output to every hidden layer
(``jdtp.drl``), trained as the paper's runs did:

* per batch (design §8.4 "Per-batch order"): forward pass; the DDTP forward
  gradients with the *current* Q (:func:`jdtp.drl.ddtp_forward_grads`); the DRL
  feedback training of all Q_n (:func:`jdtp.drl.train_feedback`, one Adam over
  all feedback weights, fork or original semantics); then the forward step,
  one Adam per layer with lr_i / η (``normalize_lr``) and eps_i, no schedule;
* **s-DDTP**: ``epochs_fb`` feedback-only epochs first, then each epoch joint
  training followed by ``extra_fb_epochs`` feedback-only epochs, K = 1;
* **p-DDTP**: no feedback-only epochs, K_n per layer (Table 9).

A feedback-only step (phase ``'feedback'``) runs the same forward pass and DRL
training but leaves the forward weights and their optimizer state untouched.
The paper's values are in ``jdtp.ddtp_configs`` (``configs/ddtp_*.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jdtp import config_checks as cc
from jdtp import drl, optim, targets
from jdtp import metrics as mt
from jdtp import networks as nets
from jdtp.algorithms import base, registry

PHASES = ("joint", "feedback")


def section_defaults() -> ml_collections.ConfigDict:
    """The ``ddtp`` section. Per-layer: ``lr`` and ``eps`` one per block (N), ``num_fb_iters`` and
    ``sigma`` one per hidden layer (N − 1). Values of the paper: ``jdtp.ddtp_configs``."""
    placeholder = ml_collections.config_dict.placeholder
    c = ml_collections.ConfigDict()
    c.target_stepsize = placeholder(float)  # η of the output target (mean CE)
    c.lr = ()  # forward Adam lr per block, before ÷η
    c.eps = ()  # forward Adam ε per block
    c.normalize_lr = True  # forward lr_i / target_stepsize, as the reference
    c.num_fb_iters = ()  # K_n per hidden layer
    c.sigma = ()  # DRL noise σ per hidden layer
    c.lr_fb = placeholder(float)
    c.eps_fb = placeholder(float)
    c.b1_fb = optim.ADAM_B1
    c.b2_fb = optim.ADAM_B2
    c.feedback_wd = placeholder(float)
    c.semantics = "fork"  # 'fork' (the paper's runs) or 'original' (Meulemans), design §10.16
    c.epochs_fb = 0  # feedback-only epochs first (s-DDTP: 10)
    c.extra_fb_epochs = 0  # feedback-only epochs after each joint epoch (s-DDTP: 1)
    c.float64 = False  # the reference's double precision (slower; CPU/GPU only)
    return c


@dataclasses.dataclass(frozen=True)
class DDTPHParams:
    """DDTP hyperparameters (design §8.4, paper Tables 8 and 9).

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


def parse_section(d: ml_collections.ConfigDict, net: nets.Network) -> DDTPHParams:
    """Validate the ``ddtp`` section against ``net``; one ConfigError naming the field."""
    n_hidden = net.num_blocks - 1
    lists = {}
    for field, expected, what in (
        ("lr", n_hidden + 1, "block"),
        ("eps", n_hidden + 1, "block"),
        ("num_fb_iters", n_hidden, "hidden layer (s^1..s^{N-1})"),
        ("sigma", n_hidden, "hidden layer (s^1..s^{N-1})"),
    ):
        lists[field] = cc.check_per_layer(f"config.ddtp.{field}", d[field], expected, f"{what} of {net.name}")
    for field in ("lr", "eps", "sigma"):
        cc.check_each(f"config.ddtp.{field}", lists[field], lambda v: v > 0, "> 0")
    cc.check_each(
        "config.ddtp.num_fb_iters", lists["num_fb_iters"], lambda v: int(v) == v and v >= 0, "an integer >= 0"
    )
    for field in ("target_stepsize", "lr_fb", "eps_fb", "feedback_wd"):
        cc.require(d[field], f"config.ddtp.{field}")
    for field in ("target_stepsize", "lr_fb", "eps_fb"):
        cc.check(d[field] > 0, f"config.ddtp.{field}={d[field]}, expected > 0")
    cc.check(d.feedback_wd >= 0, f"config.ddtp.feedback_wd={d.feedback_wd}, expected >= 0")
    cc.check_one_of("config.ddtp.semantics", d.semantics, drl.SEMANTICS)
    for field in ("epochs_fb", "extra_fb_epochs"):
        cc.check(
            int(d[field]) == d[field] and d[field] >= 0,
            f"config.ddtp.{field}={d[field]}, expected an integer >= 0",
        )
    return DDTPHParams(
        target_stepsize=float(d.target_stepsize),
        lr=tuple(float(v) for v in lists["lr"]),
        eps=tuple(float(v) for v in lists["eps"]),
        num_fb_iters=tuple(int(v) for v in lists["num_fb_iters"]),
        drl=drl.DRLHParams(
            sigma=tuple(float(v) for v in lists["sigma"]),
            lr=float(d.lr_fb),
            eps=float(d.eps_fb),
            b1=float(d.b1_fb),
            b2=float(d.b2_fb),
            weight_decay=float(d.feedback_wd),
            semantics=d.semantics,
        ),
        epochs_fb=int(d.epochs_fb),
        extra_fb_epochs=int(d.extra_fb_epochs),
        normalize_lr=bool(d.normalize_lr),
    )


def phase_of_epoch(epoch: int, epochs_fb: int, extra_fb_epochs: int) -> str:
    """'feedback' or 'joint' for a (0-based) data epoch of the DDTP schedule."""
    if epoch < epochs_fb:
        return "feedback"
    return "joint" if (epoch - epochs_fb) % (1 + extra_fb_epochs) == 0 else "feedback"


def total_epochs(num_epochs: int, epochs_fb: int, extra_fb_epochs: int) -> int:
    """Data epochs of a run with ``num_epochs`` joint epochs."""
    return epochs_fb + num_epochs * (1 + extra_fb_epochs)


def init_forward_params(key: jax.Array, net: nets.Network, dtype=jnp.float32) -> tuple[dict, ...]:
    """Xavier-normal forward weights, zero biases (design §8.4 "Initialisation").

    std = sqrt(2 / (fan_in + fan_out)) with torch's fans from each block's
    param specs (conv: C_in·k² and C_out·k²; dense: in and out). Block n's
    weights are drawn from ``fold_in(key, n)``.
    """
    params = []
    for n, block in enumerate(net.blocks):
        p, k = {}, jax.random.fold_in(key, n)
        for i, spec in enumerate(block.param_specs()[0]):
            if spec.weight:
                std = math.sqrt(2.0 / (spec.fan_in + spec.fan_out))
                p[spec.name] = std * jax.random.normal(
                    k if i == 0 else jax.random.fold_in(k, i), spec.shape, dtype
                )
            else:
                p[spec.name] = jnp.zeros(spec.shape, dtype)
        params.append(p)
    return tuple(params)


def make_forward_optimizers(hp: DDTPHParams) -> tuple[optax.GradientTransformation, ...]:
    """One Adam per block: lr_i (÷η when ``normalize_lr``), eps_i, PyTorch's β, no decay.

    optax's Adam divides by ``sqrt(v̂) + ε`` exactly as ``torch.optim.Adam`` does.
    """
    scale = 1.0 / hp.target_stepsize if hp.normalize_lr else 1.0
    return tuple(
        optax.adam(float(lr) * scale, b1=optim.ADAM_B1, b2=optim.ADAM_B2, eps=float(eps))
        for lr, eps in zip(hp.lr, hp.eps, strict=True)
    )


@registry.register
class DDTP(base.Algorithm):
    name = "ddtp"
    sections = ("ddtp",)
    phases = PHASES

    @classmethod
    def default_sections(cls):
        return {"ddtp": section_defaults()}

    @classmethod
    def shrink_for_smoke(cls, config):
        d = config.ddtp
        d.num_fb_iters = tuple(min(int(k), 2) for k in d.num_fb_iters)
        # one feedback-only epoch, then one joint epoch
        d.epochs_fb = min(int(d.epochs_fb), 1)
        d.extra_fb_epochs = min(int(d.extra_fb_epochs), 1)
        config.num_train_steps = 8

    def __init__(self, config, net):
        super().__init__(config, net)
        self.hp = parse_section(config.ddtp, net)
        self.float64 = bool(config.ddtp.float64)
        self.fwd_txs = make_forward_optimizers(self.hp)
        self.fb_names = net.block_names[:-1]  # Q_n is named by the block producing s^n

    @property
    def dtype(self):
        return jnp.float64 if self.float64 else jnp.float32

    def precision_context(self):
        return jax.enable_x64(True) if self.float64 else contextlib.nullcontext()

    def total_steps(self, num_epochs):
        # num_epochs counts joint epochs; feedback-only epochs come on top
        epochs = total_epochs(int(num_epochs), self.hp.epochs_fb, self.hp.extra_fb_epochs)
        return epochs * self.steps_per_epoch

    def forward_epochs(self, step):
        # Only joint epochs train the forward weights; s-DDTP's feedback-only epochs do not count.
        full, rest = divmod(int(step), self.steps_per_epoch)
        joint = sum(self._phase_of_epoch(e) == "joint" for e in range(full))
        if rest and self._phase_of_epoch(full) == "joint":
            joint += rest / self.steps_per_epoch
        return float(joint)

    def _phase_of_epoch(self, epoch):
        return phase_of_epoch(epoch, self.hp.epochs_fb, self.hp.extra_fb_epochs)

    def phase_of_step(self, step):
        return phase_of_epoch(step // self.steps_per_epoch, self.hp.epochs_fb, self.hp.extra_fb_epochs)

    def learning_rate(self, step):
        # No schedule (design §8.4); the first block's lr as used.
        del step
        return self.hp.lr[0] / (self.hp.target_stepsize if self.hp.normalize_lr else 1.0)

    def init_state(self, key):
        k_f, k_q = jax.random.split(key)
        fwd = init_forward_params(k_f, self.net, self.dtype)
        q = drl.init_direct_feedback(k_q, self.net, self.dtype)
        state = base.TrainState(
            step=jnp.zeros((), jnp.int32),
            fwd_params=fwd,
            fb_params=q,
            fwd_opt_state=tuple(tx.init(p) for tx, p in zip(self.fwd_txs, fwd, strict=True)),
            fb_opt_state=drl.init_opt_state(q),
        )
        # One buffer per leaf: the Adam moments start as shared zero arrays, and the
        # jitted steps donate the state (a buffer may be donated only once).
        return jax.tree.map(jnp.copy, state)

    def update(self, state, x, labels, key, *, phase):
        if phase not in PHASES:
            raise ValueError(f"unknown DDTP phase {phase!r}; expected one of {PHASES}")
        hp = self.hp
        # Forward gradients with the current Q, before the feedback update (design §8.4 step 2).
        grads, out = drl.ddtp_forward_grads(
            self.net, state.fwd_params, state.fb_params, x, labels, hp.target_stepsize
        )
        s = jax.tree.map(jax.lax.stop_gradient, out["s"])
        q, fb_opt_state, losses = drl.train_feedback(
            self.net, state.fwd_params, state.fb_params, state.fb_opt_state, s, key, hp.num_fb_iters, hp.drl
        )
        fwd_params, fwd_opt_state = state.fwd_params, state.fwd_opt_state
        if phase == "joint":
            new_p, new_s = [], []
            for tx, g, p, st in zip(self.fwd_txs, grads, fwd_params, fwd_opt_state, strict=True):
                updates, st = tx.update(g, st, p)
                new_p.append(optax.apply_updates(p, updates))
                new_s.append(st)
            fwd_params, fwd_opt_state = tuple(new_p), tuple(new_s)
        logits = s[-1]
        first = jnp.stack([ls[0] if ls.shape[0] else jnp.zeros((), logits.dtype) for ls in losses])
        last = jnp.stack([ls[-1] if ls.shape[0] else jnp.zeros((), logits.dtype) for ls in losses])
        metrics = {
            "loss": targets.cross_entropy(logits, labels),
            "accuracy": mt.accuracy(logits, labels),
            "local_loss": out["loss"],
            "fb_loss_first": first,
            "fb_loss_last": last,
        }
        new_state = base.TrainState(state.step + 1, fwd_params, q, fwd_opt_state, fb_opt_state)
        return new_state, metrics

    def scalars(self, metrics, phase):
        out = super().scalars(metrics, phase)
        out["train/local_loss"] = float(metrics["local_loss"])
        out["train/feedback_only"] = float(phase == "feedback")
        out.update(base.per_layer("train/fb_loss_first", metrics["fb_loss_first"], self.fb_names))
        out.update(base.per_layer("train/fb_loss_last", metrics["fb_loss_last"], self.fb_names))
        return out

    @property
    def divergence_hint(self):
        return "lower the learning rates (config.ddtp.lr, config.ddtp.lr_fb) or config.ddtp.sigma"

    def gmp_update(self, fwd_params, fb_params, x, labels):
        eta = self.hp.target_stepsize
        grads, _ = drl.ddtp_forward_grads(self.net, fwd_params, fb_params, x, labels, eta)
        return grads, eta

    @property
    def gmp_label(self):
        return f"DDTP update vs BP gradient, η={self.hp.target_stepsize:g}"
