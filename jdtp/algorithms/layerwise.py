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

# β of the logged GMP angle (paper Fig. 4; the reference's ``beta=0.005`` in its angle metric).
GMP_BETA = 0.005


def section_defaults() -> ml_collections.ConfigDict:
    """Keys every layer-wise algorithm's section has. Per-layer lists: forward order over G^1 … G^{N−1}."""
    c = ml_collections.ConfigDict()
    c.beta = ml_collections.config_dict.placeholder(float)  # output-target nudge β (paper Eq. 3)
    c.noise_scale = ()  # σ_n per trainable feedback block
    c.num_fb_iters = ()  # K_n per trainable feedback block
    c.fb_lr = ()  # feedback SGD learning rate per trainable feedback block
    c.fb_momentum = 0.9
    # 'sgd' (paper Alg. 3, with fb_momentum) or 'adam' (ours, jdtp.feedback.make_fb_optimizers)
    c.fb_optimizer = "sgd"
    c.unpool_mode = "set"  # 'set' (reference) or 'add' (exact transpose of max-pool)
    c.unroll = 1  # lax.scan unroll of the K feedback iterations
    # 'sequential' (one loop per layer) or 'concurrent' (one loop over max K_n for all layers;
    # the same numbers, jdtp.feedback.train_feedback)
    c.feedback_mode = "sequential"
    # Memory (MiB) for one chunk of a layer's G-independent terms (noise, noisy F passes, constant
    # gradient terms), computed before the loop that uses them (jdtp.feedback.LayerLoss);
    # 0: automatic (one iteration per chunk on CPU, 1 GiB on accelerators).
    c.fb_chunk_mib = 0.0
    c.gmp_beta = GMP_BETA  # β of the logged angle between the update / β and the BP gradient (paper Fig. 4)
    return c


@dataclasses.dataclass(frozen=True)
class StepHParams:
    """What the DTP family's shared step reads (:meth:`LayerwiseAlgorithm.update`, GMP)."""

    beta: float
    noise_scale: tuple[float, ...]
    unpool_mode: str
    gmp_beta: float


@dataclasses.dataclass(frozen=True)
class LayerwiseHParams(StepHParams):
    """The parsed, validated section (see :func:`section_defaults`)."""

    num_fb_iters: tuple[int, ...]
    fb_lr: tuple[float, ...]
    fb_momentum: float
    unroll: int
    fb_optimizer: str = "sgd"
    feedback_mode: str = "sequential"
    fb_chunk_mib: float = 0.0


def parse_step_keys(section: ml_collections.ConfigDict, prefix: str, net: nets.Network) -> dict:
    """Validate the keys the shared step reads (:class:`StepHParams`): β, σ per layer, unpooling, GMP β."""
    cc.require(section.beta, f"{prefix}.beta")
    cc.check(section.beta > 0, f"{prefix}.beta={section.beta}, expected > 0")
    noise_scale = per_layer_list(section, prefix, "noise_scale", net)
    cc.check_each(f"{prefix}.noise_scale", noise_scale, lambda v: v > 0, "> 0")
    cc.check_one_of(f"{prefix}.unpool_mode", section.unpool_mode, pooling.UNPOOL_MODES)
    cc.check(section.gmp_beta > 0, f"{prefix}.gmp_beta={section.gmp_beta}, expected > 0")
    return {
        "beta": float(section.beta),
        "noise_scale": tuple(float(v) for v in noise_scale),
        "unpool_mode": section.unpool_mode,
        "gmp_beta": float(section.gmp_beta),
    }


def per_layer_list(section: ml_collections.ConfigDict, prefix: str, field: str, net: nets.Network) -> tuple:
    """A per-layer list with one entry per trainable G^n; one ConfigError when unset or of another length."""
    n = net.num_trainable_fb
    what = f"trainable feedback block G^1..G^{n} of {net.name}"
    cc.check(
        len(tuple(section[field])) > 0,
        f"{prefix}.{field} is not set; set one value per {what} in the experiment file or with "
        f"--{prefix}.{field}='(...)'",
    )
    return cc.check_per_layer(f"{prefix}.{field}", section[field], n, what)


def parse_section(section: ml_collections.ConfigDict, prefix: str, net: nets.Network) -> LayerwiseHParams:
    """Validate a layer-wise section (:func:`section_defaults`); one ConfigError naming the field."""
    step = parse_step_keys(section, prefix, net)
    lists = {field: per_layer_list(section, prefix, field, net) for field in ("num_fb_iters", "fb_lr")}
    cc.check_each(
        f"{prefix}.num_fb_iters", lists["num_fb_iters"], lambda v: int(v) == v and v >= 1, "an integer >= 1"
    )
    cc.check_each(f"{prefix}.fb_lr", lists["fb_lr"], lambda v: v > 0, "> 0")
    cc.check(0 <= section.fb_momentum < 1, f"{prefix}.fb_momentum={section.fb_momentum}, expected in [0, 1)")
    cc.check_one_of(f"{prefix}.fb_optimizer", section.fb_optimizer, feedback.FB_OPTIMIZERS)
    cc.check(section.unroll >= 1, f"{prefix}.unroll={section.unroll}, expected >= 1")
    cc.check_one_of(f"{prefix}.feedback_mode", section.feedback_mode, feedback.FEEDBACK_MODES)
    cc.check(
        section.fb_chunk_mib >= 0,
        f"{prefix}.fb_chunk_mib={section.fb_chunk_mib}, expected >= 0 (0: automatic)",
    )
    return LayerwiseHParams(
        **step,
        num_fb_iters=tuple(int(v) for v in lists["num_fb_iters"]),
        fb_lr=tuple(float(v) for v in lists["fb_lr"]),
        fb_momentum=float(section.fb_momentum),
        unroll=int(section.unroll),
        fb_optimizer=section.fb_optimizer,
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

    def __init__(self, config, net):
        super().__init__(config, net)
        self._forward_optimizer = self.forward_optimizer(config)
        self.hp = self.parse_hparams(config[self.name], f"config.{self.name}", net)
        self.fb_optimizer = self.feedback_optimizer()
        self.fb_names = net.block_names[1:]

    # -- parts a variant of the step replaces ---------------------------------

    @classmethod
    def parse_hparams(cls, section, prefix: str, net: nets.Network) -> StepHParams:
        """The validated section; the shared step reads its :class:`StepHParams` fields."""
        return parse_section(section, prefix, net)

    def forward_optimizer(self, config):
        """``steps_per_epoch -> (optimizer, schedule)`` of the forward weights (``optim`` section)."""
        return optim.forward_optimizer(config.optim, len(self.net.block_names))

    def feedback_optimizer(self):
        """The feedback weights' optimizers: one per trainable G^n (``fb_optimizer``)."""
        return feedback.make_fb_optimizers(self.hp.fb_lr, self.hp.fb_momentum, self.hp.fb_optimizer)

    def init_feedback_opt_state(self, fb_params):
        return tuple(tx.init(fb_params[n + 1]) for n, tx in enumerate(self.fb_optimizer))

    def _bind(self):
        self.fwd_tx, self.schedule = self._forward_optimizer(self.steps_per_epoch)

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

    def benchmark_record(self, batch_size):
        """Settings of the step and its analytic FLOPs: hoisted terms, the sequential chain, the forward update."""
        hp = self.hp
        maps = self.fb_iteration_maps()
        flops = {} if maps is None else step_flops(self.net, batch_size, hp.num_fb_iters, maps)
        return {
            "num_fb_iters": list(hp.num_fb_iters),
            "noise_scale": list(hp.noise_scale),
            "fb_lr": list(hp.fb_lr),
            "beta": hp.beta,
            "unroll": hp.unroll,
            "feedback_mode": hp.feedback_mode,
            # Sequential loop iterations of the feedback phase per step (the latency bound on devices
            # where an iteration is a few small kernels): ΣK_n sequentially, max K_n concurrently.
            "fb_loop_iterations": {"sequential": sum(hp.num_fb_iters), "concurrent": max(hp.num_fb_iters)},
            "fb_chunk_mib": hp.fb_chunk_mib,
            "fb_chunks": self.fb_chunks(batch_size),
            **flops,
        }

    def fb_iteration_maps(self) -> dict[str, int] | None:
        """Linear maps (each of one block's FLOPs) per feedback iteration, ``hoisted`` out of the
        sequential loop and in its ``chain``; ``None`` when not counted."""
        return None

    def fb_chunks(self, batch_size: int) -> list[int]:
        """Iterations per chunk of hoisted terms, per trainable G^n (``feedback.chunk_size``)."""
        chunks = []

        def trace(fwd_params, x):
            s, aux = targets.forward_pass(self.net, fwd_params, x)
            for n in range(1, self.net.num_blocks):
                layer = self.layer_loss(n, fwd_params[n], s[n], s[n + 1], aux[n])
                chunks.append(feedback.chunk_size(layer, self.hp.num_fb_iters[n - 1], self.hp.fb_chunk_mib))
            return 0

        fwd, _ = nets.init_params(jax.random.key(0), self.net, self.dtype)  # only the shapes are used
        jax.eval_shape(trace, fwd, jax.ShapeDtypeStruct((batch_size, *self.net.input_shape), self.dtype))
        return chunks

    def init_state(self, key):
        fwd_params, fb_params = nets.init_params(key, self.net, self.dtype)
        return base.TrainState(
            step=jnp.zeros((), jnp.int32),
            fwd_params=fwd_params,
            fb_params=fb_params,
            fwd_opt_state=self.fwd_tx.init(fwd_params),
            fb_opt_state=self.init_feedback_opt_state(fb_params),
        )

    def train_feedback(self, state, s, aux, key):
        """Step 2 of the module docstring: ``(fb_params, fb_opt_state, per-layer losses)``."""
        return feedback.train_feedback(
            self.net,
            state.fwd_params,
            state.fb_params,
            state.fb_opt_state,
            self.fb_optimizer,
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


def step_flops(net: nets.Network, batch: int, num_fb_iters, maps: dict[str, int]) -> dict[str, int]:
    """Matrix-product/convolution FLOPs of one step of the DTP family (benchmark records).

    Feedback phase: Σ_n K_n × (maps per iteration) × M_n, split into the part hoisted out of the
    sequential loop and the chain inside it (``maps``); forward update: forward pass (M_n each),
    target propagation (one G map per n ≥ 1) and the weight gradients (M_n each).
    """
    m = [b.linear_flops(batch) for b in net.blocks]
    per_layer = sum(int(k) * m[n] for n, k in enumerate(num_fb_iters, start=1))
    hoisted, chain = maps["hoisted"] * per_layer, maps["chain"] * per_layer
    fwd_update = 2 * sum(m) + sum(m[1:])
    return {
        "flops_analytic": hoisted + chain + fwd_update,
        "flops_analytic_feedback": hoisted + chain,
        "flops_analytic_feedback_hoisted": hoisted,
        "flops_analytic_feedback_chain": chain,
        "flops_analytic_forward_update": fwd_update,
    }


def difference_targets(net, fb_params, labels, beta, unpool_mode):
    """DTP's targets (paper Eq. 3-5) as a ``targets(s, aux)`` function for :func:`jdtp.targets.forward_update`."""

    def fn(s, aux):
        t_last = targets.output_target(s[-1], labels, beta)
        return targets.propagate_targets(net, fb_params, s, aux, t_last, unpool_mode=unpool_mode)

    return fn
