"""The DTP family's shared step: train every G^n on its local feedback loss, then the forward update.

L-DRL DTP, vanilla DTP and TP (and their variants) all:

1. run the forward pass once and keep s^n and the pool indices (design §1.1);
2. train each layer-wise feedback block G^n, n = 1 … N−1, for K_n iterations
   of *its* feedback loss with its own SGD-momentum optimizer
   (:func:`jdtp.feedback.train_feedback`);
3. propagate *their* targets with the new G and take one SGD step of the
   forward weights on the layer-local losses (:func:`jdtp.targets.forward_update`).

A subclass states its feedback loss (:meth:`LayerwiseAlgorithm.layer_loss`)
and its targets (:meth:`LayerwiseAlgorithm.make_targets`); its config section (named
after the algorithm) holds β, the per-layer lists and the feedback options.
"""

from __future__ import annotations

import abc
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jdtp import config_checks as cc
from jdtp import feedback, optim, pooling, targets
from jdtp import metrics as mt
from jdtp import networks as nets
from jdtp.algorithms import base


def section_defaults() -> ml_collections.ConfigDict:
    """Keys every layer-wise algorithm's section has. Per-layer lists: forward order over G^1 … G^{N−1}."""
    c = ml_collections.ConfigDict()
    c.beta = ml_collections.config_dict.placeholder(float)  # output-target nudge β (paper Eq. 3)
    c.noise_scale = ()  # σ_n per trainable feedback block
    c.num_fb_iters = ()  # K_n per trainable feedback block
    c.fb_lr = ()  # feedback SGD learning rate per trainable feedback block
    c.fb_momentum = 0.9
    c.unpool_mode = "set"  # 'set' (reference) or 'add' (exact transpose of max-pool)
    c.unroll = 1  # lax.scan unroll of the K feedback iterations
    # 'sequential' (one loop per layer) or 'concurrent' (one loop over max K_n for all layers;
    # the same numbers, jdtp.feedback.train_feedback)
    c.feedback_mode = "sequential"
    # Memory (MiB) for one chunk of a layer's G-independent terms (noise, noisy F passes, constant
    # gradient terms), computed before the loop that uses them (jdtp.feedback.LayerLoss);
    # 0: automatic (one iteration per chunk on CPU, 1 GiB on accelerators).
    c.fb_chunk_mib = 0.0
    c.gmp_beta = 0.005  # β of the logged angle between the update / β and the BP gradient (paper Fig. 4)
    return c


@dataclasses.dataclass(frozen=True)
class LayerwiseHParams:
    """The parsed, validated section (see :func:`section_defaults`)."""

    beta: float
    noise_scale: tuple[float, ...]
    num_fb_iters: tuple[int, ...]
    fb_lr: tuple[float, ...]
    fb_momentum: float
    unpool_mode: str
    unroll: int
    gmp_beta: float
    feedback_mode: str = "sequential"
    fb_chunk_mib: float = 0.0


def parse_section(section: ml_collections.ConfigDict, prefix: str, net: nets.Network) -> LayerwiseHParams:
    """Validate the shared keys of a layer-wise section; one ConfigError naming the field."""
    n = net.num_trainable_fb
    what = f"trainable feedback block G^1..G^{n} of {net.name}"
    cc.require(section.beta, f"{prefix}.beta")
    cc.check(section.beta > 0, f"{prefix}.beta={section.beta}, expected > 0")
    lists = {}
    for field in ("noise_scale", "num_fb_iters", "fb_lr"):
        cc.check(
            len(tuple(section[field])) > 0,
            f"{prefix}.{field} is not set; set one value per {what} in the experiment file or with "
            f"--{prefix}.{field}='(...)'",
        )
        lists[field] = cc.check_per_layer(f"{prefix}.{field}", section[field], n, what)
    cc.check_each(f"{prefix}.noise_scale", lists["noise_scale"], lambda v: v > 0, "> 0")
    cc.check_each(
        f"{prefix}.num_fb_iters", lists["num_fb_iters"], lambda v: int(v) == v and v >= 1, "an integer >= 1"
    )
    cc.check_each(f"{prefix}.fb_lr", lists["fb_lr"], lambda v: v > 0, "> 0")
    cc.check(0 <= section.fb_momentum < 1, f"{prefix}.fb_momentum={section.fb_momentum}, expected in [0, 1)")
    cc.check_one_of(f"{prefix}.unpool_mode", section.unpool_mode, pooling.UNPOOL_MODES)
    cc.check(section.unroll >= 1, f"{prefix}.unroll={section.unroll}, expected >= 1")
    cc.check(section.gmp_beta > 0, f"{prefix}.gmp_beta={section.gmp_beta}, expected > 0")
    cc.check_one_of(f"{prefix}.feedback_mode", section.feedback_mode, feedback.FEEDBACK_MODES)
    cc.check(
        section.fb_chunk_mib >= 0,
        f"{prefix}.fb_chunk_mib={section.fb_chunk_mib}, expected >= 0 (0: automatic)",
    )
    return LayerwiseHParams(
        beta=float(section.beta),
        noise_scale=tuple(float(v) for v in lists["noise_scale"]),
        num_fb_iters=tuple(int(v) for v in lists["num_fb_iters"]),
        fb_lr=tuple(float(v) for v in lists["fb_lr"]),
        fb_momentum=float(section.fb_momentum),
        unpool_mode=section.unpool_mode,
        unroll=int(section.unroll),
        gmp_beta=float(section.gmp_beta),
        feedback_mode=section.feedback_mode,
        fb_chunk_mib=float(section.fb_chunk_mib),
    )


class LayerwiseAlgorithm(base.Algorithm):
    """Base of the algorithms that train layer-wise G^n with SGD and the forward weights with ``optim``."""

    @classmethod
    def default_sections(cls):
        return {"optim": optim.default_config(), cls.name: section_defaults()}

    @classmethod
    def shrink_for_smoke(cls, config):
        section = config[cls.name]
        section.num_fb_iters = tuple(2 for _ in section.num_fb_iters)

    def __init__(self, config, net, steps_per_epoch):
        super().__init__(config, net, steps_per_epoch)
        optim.validate_config(config.optim)
        self.hp = parse_section(config[self.name], f"config.{self.name}", net)
        self.fwd_tx, self.schedule = optim.fwd_optimizer_from_config(config.optim, steps_per_epoch)
        self.fb_txs = feedback.make_fb_optimizers(self.hp.fb_lr, self.hp.fb_momentum)
        self.fb_names = net.block_names[1:]

    # -- what a subclass states ---------------------------------------------

    @abc.abstractmethod
    def layer_loss(self, n: int, f_params, x, y, aux) -> feedback.LayerLoss:
        """G^n's feedback loss on this batch, split at what depends on G's weights."""

    @abc.abstractmethod
    def make_targets(self, fb_params, labels, beta: float):
        """``(s, aux) -> (None, t^1, …, t^N)`` with the current feedback weights."""

    # -- the shared step -------------------------------------------------------

    def learning_rate(self, step):
        return float(self.schedule(step))

    def init_state(self, key):
        fwd_params, fb_params = nets.init_params(key, self.net, self.dtype)
        fb_opt_state = tuple(tx.init(fb_params[n + 1]) for n, tx in enumerate(self.fb_txs))
        return base.TrainState(
            step=jnp.zeros((), jnp.int32),
            fwd_params=fwd_params,
            fb_params=fb_params,
            fwd_opt_state=self.fwd_tx.init(fwd_params),
            fb_opt_state=fb_opt_state,
        )

    def train_feedback(self, state, s, aux, key):
        """Step 2 of the module docstring: ``(fb_params, fb_opt_state, per-layer losses)``."""
        return feedback.train_feedback(
            self.net,
            state.fwd_params,
            state.fb_params,
            state.fb_opt_state,
            self.fb_txs,
            s,
            aux,
            key,
            num_fb_iters=self.hp.num_fb_iters,
            layer_loss=self.layer_loss,
            unroll=self.hp.unroll,
            mode=self.hp.feedback_mode,
            chunk_mib=self.hp.fb_chunk_mib,
        )

    def feedback_metrics(self, fb_losses) -> dict:
        """Per-layer feedback losses to log (``fb_loss*`` keys, one value per trainable G^n)."""
        return {
            "fb_loss_first": jnp.stack([l[0] for l in fb_losses]),
            "fb_loss_last": jnp.stack([l[-1] for l in fb_losses]),
        }

    def update(self, state, x, labels, key, *, phase):
        del phase
        net = self.net
        # Activations and clean indices once per batch, shared by all K iterations (design §1.1).
        s, aux = targets.forward_pass(net, state.fwd_params, x)
        fb_params, fb_opt_state, fb_losses = self.train_feedback(state, jax.lax.stop_gradient(s), aux, key)
        grads, out = targets.forward_update(
            net, state.fwd_params, x, targets=self.make_targets(fb_params, labels, self.hp.beta)
        )
        updates, fwd_opt_state = self.fwd_tx.update(grads, state.fwd_opt_state, state.fwd_params)
        logits = out["s"][-1]  # pre-update logits, as the reference logs (design §2.1, step 6)
        jmc_dist, jmc_angle = mt.jmc_metrics(net, state.fwd_params, fb_params)
        metrics = {
            "loss": targets.cross_entropy(logits, labels),
            "accuracy": mt.accuracy(logits, labels),
            "local_loss": out["loss"],
            **self.feedback_metrics(fb_losses),
            "jmc_angle": jmc_angle,
            "jmc_dist": jmc_dist,
        }
        new_state = state.replace(
            step=state.step + 1,
            fwd_params=optax.apply_updates(state.fwd_params, updates),
            fb_params=fb_params,
            fwd_opt_state=fwd_opt_state,
            fb_opt_state=fb_opt_state,
        )
        return new_state, metrics

    def scalars(self, metrics, phase):
        out = super().scalars(metrics, phase)
        out["train/local_loss"] = float(metrics["local_loss"])
        for key in sorted(k for k in metrics if k.startswith("fb_loss")):
            out.update(base.per_layer(f"train/{key}", metrics[key], self.fb_names))
        out.update(base.per_layer("jmc_angle", metrics["jmc_angle"], self.fb_names))
        out.update(base.per_layer("jmc_dist", metrics["jmc_dist"], self.fb_names))
        return out

    @property
    def divergence_hint(self):
        return (
            f"lower the learning rates (config.optim.lr, config.{self.name}.fb_lr) "
            f"or config.{self.name}.noise_scale"
        )

    def gmp_update(self, fwd_params, fb_params, x, labels):
        beta = self.hp.gmp_beta
        grads, _ = targets.forward_update(
            self.net, fwd_params, x, targets=self.make_targets(fb_params, labels, beta)
        )
        return grads, beta

    @property
    def gmp_label(self):
        return f"{self.name.upper()} update vs BP gradient, β={self.hp.gmp_beta:g}"


def difference_targets(net, fb_params, labels, beta, unpool_mode):
    """DTP's targets (paper Eq. 3-5) as a ``targets(s, aux)`` function for :func:`jdtp.targets.forward_update`."""

    def fn(s, aux):
        t_last = targets.output_target(s[-1], labels, beta)
        return targets.propagate_targets(net, fb_params, s, aux, t_last, unpool_mode=unpool_mode)

    return fn
