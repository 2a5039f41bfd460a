"""ParallelDTP (the reference's variant, not in the paper; design §8.1): ``config.algorithm = 'parallel_dtp'``.

What changes relative to L-DRL DTP (``jdtp.algorithms.dtp``):

* **one** feedback update per batch for all layers at once: every trainable G^n's L-DRL loss is
  computed on the batch (the layers do not wait for each other), the losses are summed, and one
  Adam step updates all feedback weights;
* each layer's loss uses ``num_samples`` noise draws per example (the reference's
  ``feedback_samples_per_iteration = 10``): the batch is tiled, each example repeated
  ``num_samples`` times consecutively, and the L-DRL expression is averaged over all B·n rows — one
  vectorised computation, not a loop over samples. With the clean pool indices tiled alike, this is
  the reference's loss (its ``r = G(y)`` on the untiled batch equals the tiled one row for row);
* optimizers: one Adam over all feedback weights (lr 3e-4, *coupled* weight decay 1e-4, as
  ``torch.optim.Adam(weight_decay=…)``), G^0 untouched; Adam (lr 3e-4, coupled wd 1e-4) for the
  forward weights; no schedule;
* the forward update is DTP's (difference targets, Eq. 6 as coded), with the *updated* G (the
  reference steps the feedback optimizer first).

Section ``parallel_dtp``: β, per-layer σ, ``num_samples``, the two Adam settings, ``unpool_mode``
and ``gmp_beta``. The ``:parallel_dtp`` variant takes β and σ from the experiment's DTP section.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jdtp import config_checks as cc
from jdtp import feedback, pooling
from jdtp import networks as nets
from jdtp.algorithms import base, layerwise, register


def section_defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.beta = ml_collections.config_dict.placeholder(float)
    c.noise_scale = ()  # σ_n per trainable feedback block G^1 … G^{N−1}
    c.num_samples = 10  # noise draws per example (the reference's feedback_samples_per_iteration)
    c.fb_lr = 3e-4
    c.fb_weight_decay = 1e-4  # coupled, as torch.optim.Adam(weight_decay=...)
    c.fwd_lr = 3e-4
    c.fwd_weight_decay = 1e-4
    c.unpool_mode = "set"
    c.gmp_beta = 0.005
    return c


def adam_coupled(lr: float, weight_decay: float) -> optax.GradientTransformation:
    """``torch.optim.Adam(lr, weight_decay=wd)``: wd·θ added to the gradient before the moments."""
    parts = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
    return optax.chain(*parts, optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8))


def tile(a, n: int):
    """Each example repeated ``n`` times consecutively (the reference's ``repeat_batch``); ``None`` stays."""
    return None if a is None else jnp.repeat(a, n, axis=0)


@dataclasses.dataclass(frozen=True)
class ParallelHParams:
    """What :class:`jdtp.algorithms.layerwise.LayerwiseAlgorithm`'s shared step reads."""

    beta: float
    noise_scale: tuple[float, ...]
    num_samples: int
    unpool_mode: str
    gmp_beta: float


@register
class ParallelDTP(layerwise.LayerwiseAlgorithm):
    """The DTP family's step with one coupled-Adam feedback update for all layers (module docstring)."""

    name = "parallel_dtp"
    sections = ("parallel_dtp",)

    @classmethod
    def default_sections(cls):
        return {"parallel_dtp": section_defaults()}

    @classmethod
    def shrink_for_smoke(cls, config):
        config.parallel_dtp.num_samples = min(int(config.parallel_dtp.num_samples), 2)

    def __init__(self, config, net, steps_per_epoch):
        base.Algorithm.__init__(self, config, net, steps_per_epoch)  # its own section, no ``optim``
        s, n = config.parallel_dtp, net.num_trainable_fb
        what = f"trainable feedback block G^1..G^{n} of {net.name}"
        cc.require(s.beta, "config.parallel_dtp.beta")
        cc.check(s.beta > 0, f"config.parallel_dtp.beta={s.beta}, expected > 0")
        cc.check(
            len(tuple(s.noise_scale)) > 0, f"config.parallel_dtp.noise_scale is not set; one value per {what}"
        )
        sigma = cc.check_per_layer("config.parallel_dtp.noise_scale", s.noise_scale, n, what)
        cc.check_each("config.parallel_dtp.noise_scale", sigma, lambda v: v > 0, "> 0")
        cc.check(int(s.num_samples) >= 1, f"config.parallel_dtp.num_samples={s.num_samples}, expected >= 1")
        for key in ("fb_lr", "fwd_lr"):
            cc.check(s[key] > 0, f"config.parallel_dtp.{key}={s[key]}, expected > 0")
        for key in ("fb_weight_decay", "fwd_weight_decay"):
            cc.check(s[key] >= 0, f"config.parallel_dtp.{key}={s[key]}, expected >= 0")
        cc.check_one_of("config.parallel_dtp.unpool_mode", s.unpool_mode, pooling.UNPOOL_MODES)
        cc.check(s.gmp_beta > 0, f"config.parallel_dtp.gmp_beta={s.gmp_beta}, expected > 0")
        self.hp = ParallelHParams(
            float(s.beta),
            tuple(float(v) for v in sigma),
            int(s.num_samples),
            s.unpool_mode,
            float(s.gmp_beta),
        )
        self.fb_tx = adam_coupled(float(s.fb_lr), float(s.fb_weight_decay))
        self.fwd_tx = adam_coupled(float(s.fwd_lr), float(s.fwd_weight_decay))
        self.fwd_lr = float(s.fwd_lr)
        self.fb_names = net.block_names[1:]

    def learning_rate(self, step):
        del step
        return self.fwd_lr

    def init_state(self, key):
        fwd_params, fb_params = nets.init_params(key, self.net, self.dtype)
        return base.TrainState(
            step=jnp.zeros((), jnp.int32),
            fwd_params=fwd_params,
            fb_params=fb_params,
            fwd_opt_state=self.fwd_tx.init(fwd_params),
            fb_opt_state=self.fb_tx.init(fb_params[1:]),  # one Adam over G^1 … G^{N−1}
        )

    def train_feedback(self, state, s, aux, key):
        """One Adam step of every G^n on its L-DRL loss over the tiled batch; returns (params, opt, losses).

        The summed loss's gradient w.r.t. G^n is G^n's own loss gradient, so each layer's gradient is
        computed on its own, in closed form where the block allows (``feedback.ldrl_layer_loss``).
        """
        losses, grads = [], []
        fb_trainable = tuple(state.fb_params[1:])
        for n in range(1, self.net.num_blocks):
            layer = self.layer_loss(n, state.fwd_params[n], s[n], s[n + 1], aux[n])
            terms = layer.prepare(jax.random.fold_in(key, n)[None])
            loss, g = layer.value_and_grad(fb_trainable[n - 1], jax.tree.map(lambda a: a[0], terms))
            losses.append(loss)
            grads.append(g)
        updates, fb_opt_state = self.fb_tx.update(tuple(grads), state.fb_opt_state, fb_trainable)
        fb_params = (state.fb_params[0], *optax.apply_updates(fb_trainable, updates))
        return fb_params, fb_opt_state, jnp.stack(losses)

    def layer_loss(self, n, f_params, x, y, aux):
        """G^n's L-DRL loss on the batch tiled ``num_samples`` times (one noise draw per row)."""
        reps = self.hp.num_samples
        return feedback.ldrl_layer_loss(
            self.net.blocks[n],
            f_params,
            tile(x, reps),
            tile(y, reps),
            jax.tree.map(lambda a: tile(a, reps), aux),
            sigma=self.hp.noise_scale[n - 1],
            unpool_mode=self.hp.unpool_mode,
        )

    def feedback_metrics(self, fb_losses):
        return {"fb_loss": fb_losses}

    def make_targets(self, fb_params, labels, beta):
        return layerwise.difference_targets(self.net, fb_params, labels, beta, self.hp.unpool_mode)

    @property
    def divergence_hint(self):
        return (
            "lower the learning rates (config.parallel_dtp.fwd_lr, config.parallel_dtp.fb_lr) "
            "or config.parallel_dtp.noise_scale"
        )

    @property
    def gmp_label(self):
        return f"ParallelDTP update vs BP gradient, β={self.hp.gmp_beta:g}"
