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
from jdtp import feedback, optim
from jdtp.algorithms import layerwise, registry


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
    c.gmp_beta = layerwise.GMP_BETA
    return c


def tile(a, n: int):
    """Each example repeated ``n`` times consecutively (the reference's ``repeat_batch``); ``None`` stays."""
    return None if a is None else jnp.repeat(a, n, axis=0)


@dataclasses.dataclass(frozen=True)
class ParallelHParams(layerwise.StepHParams):
    """The ``parallel_dtp`` section: the shared step's keys and the two Adam settings."""

    num_samples: int
    fb_lr: float
    fb_weight_decay: float
    fwd_lr: float
    fwd_weight_decay: float


@registry.register
class ParallelDTP(layerwise.LayerwiseAlgorithm):
    """The DTP family's step with one coupled-Adam feedback update for all layers (module docstring).

    It is the shared step (:class:`jdtp.algorithms.layerwise.LayerwiseAlgorithm`) with four parts
    replaced: its section, the forward optimizer, the feedback optimizer and the feedback phase.
    """

    name = "parallel_dtp"
    sections = ("parallel_dtp",)
    variant = "parallel_dtp"  # β, σ and the unpool mode carried over from the experiment's DTP section

    @classmethod
    def default_sections(cls):
        return {"parallel_dtp": section_defaults()}

    @classmethod
    def shrink_for_smoke(cls, config):
        config.parallel_dtp.num_samples = min(int(config.parallel_dtp.num_samples), 2)

    @classmethod
    def parse_hparams(cls, section, prefix, net):
        step = layerwise.parse_step_keys(section, prefix, net)
        cc.check(int(section.num_samples) >= 1, f"{prefix}.num_samples={section.num_samples}, expected >= 1")
        for key in ("fb_lr", "fwd_lr"):
            cc.check(section[key] > 0, f"{prefix}.{key}={section[key]}, expected > 0")
        for key in ("fb_weight_decay", "fwd_weight_decay"):
            cc.check(section[key] >= 0, f"{prefix}.{key}={section[key]}, expected >= 0")
        return ParallelHParams(
            **step,
            num_samples=int(section.num_samples),
            fb_lr=float(section.fb_lr),
            fb_weight_decay=float(section.fb_weight_decay),
            fwd_lr=float(section.fwd_lr),
            fwd_weight_decay=float(section.fwd_weight_decay),
        )

    def forward_optimizer(self, config):
        s = config.parallel_dtp  # its values are checked with the rest of the section
        lr = float(s.fwd_lr)
        tx = optim.torch_adam(lr, float(s.fwd_weight_decay))
        return lambda steps_per_epoch: (tx, lambda step: lr)  # no schedule

    def feedback_optimizer(self):
        return optim.torch_adam(self.hp.fb_lr, self.hp.fb_weight_decay)  # one Adam over G^1 … G^{N−1}

    def init_feedback_opt_state(self, fb_params):
        return self.fb_optimizer.init(fb_params[1:])

    def benchmark_record(self, batch_size):
        return {
            "beta": self.hp.beta,
            "noise_scale": list(self.hp.noise_scale),
            "num_samples": self.hp.num_samples,
        }

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
        updates, fb_opt_state = self.fb_optimizer.update(tuple(grads), state.fb_opt_state, fb_trainable)
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
