"""Forward optimizer and its per-epoch cosine schedule (design §2.5-2.6, §4.5)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jdtp import config_checks as cc

SCHEDULES = ("cosine", "step", "constant")
OPTIMIZERS = ("sgd", "adam")
# torch.optim.Adam's defaults, which the reference keeps for every Adam it builds (design §8.1, §8.4).
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
# The reference's forward schedules (design §2.6, §4.5): CosineAnnealingLR(T_max, eta_min), StepLR.
T_MAX, ETA_MIN, STEP_SIZE, GAMMA = 85, 1e-5, 30, 0.1


def default_config() -> ml_collections.ConfigDict:
    """The ``optim`` section: SGD-momentum forward optimizer and its per-epoch schedule (design §2.5-2.6).

    ``lr`` has no default: each experiment file states its own.
    """
    c = ml_collections.ConfigDict()
    # 'sgd' (with momentum, the paper's) or 'adam' (torch.optim.Adam's defaults; momentum unused):
    # Adam's step does not scale with the update's length, which a feedback pathway may get wrong.
    c.optimizer = "sgd"
    c.lr = ml_collections.config_dict.placeholder(float)
    c.momentum = 0.9
    c.weight_decay = 1e-4  # coupled (added to the gradient before momentum)
    c.schedule = "cosine"  # 'cosine' (t_max, eta_min per epoch), 'step' (step_size, gamma) or 'constant'
    c.t_max = T_MAX
    c.eta_min = ETA_MIN
    c.step_size = STEP_SIZE
    c.gamma = GAMMA
    # One factor per forward layer on that layer's step (after the optimizer, weight decay
    # included): () is 1 everywhere; 0 freezes a layer. Not the paper's: for asking which layers
    # a feedback pathway trains usefully, or slowing the layers whose G cannot keep up.
    c.layer_lr_scale = ()
    return c


def validate_config(o: ml_collections.ConfigDict) -> None:
    """Checks of the ``optim`` section; raises one :class:`jdtp.config_checks.ConfigError`."""
    check = cc.check
    cc.require(o.lr, "config.optim.lr")
    check(o.lr > 0, f"config.optim.lr={o.lr}, expected > 0")
    check(0 <= o.momentum < 1, f"config.optim.momentum={o.momentum}, expected in [0, 1)")
    check(o.weight_decay >= 0, f"config.optim.weight_decay={o.weight_decay}, expected >= 0")
    cc.check_one_of("config.optim.schedule", o.schedule, SCHEDULES)
    cc.check_one_of("config.optim.optimizer", o.optimizer, OPTIMIZERS)
    check(o.t_max >= 1, f"config.optim.t_max={o.t_max}, expected >= 1")
    check(o.step_size >= 1, f"config.optim.step_size={o.step_size}, expected >= 1")
    cc.check_each("config.optim.layer_lr_scale", o.layer_lr_scale, lambda v: v >= 0, ">= 0")


def cosine_epoch_lr(epoch, base_lr: float, t_max: int = T_MAX, eta_min: float = ETA_MIN):
    """Closed form of ``CosineAnnealingLR`` stepped once per epoch (design §2.6).

    lr(e) = η_min + (lr_0 − η_min)·(1 + cos(π e / T_max)) / 2. The formula is
    periodic, so for e > T_max the rate rises again, as in the reference's
    90-epoch runs with T_max = 85.
    """
    return eta_min + (base_lr - eta_min) * (1.0 + jnp.cos(math.pi * epoch / t_max)) / 2.0


def step_epoch_lr(epoch, base_lr: float, step_size: int = STEP_SIZE, gamma: float = GAMMA):
    """``StepLR`` stepped per epoch (the ImageNet 32×32 BP baseline, design §4.5)."""
    return base_lr * gamma ** (epoch // step_size)


def make_schedule(
    base_lr: float,
    steps_per_epoch: int,
    kind: str = "cosine",
    *,
    t_max: int = T_MAX,
    eta_min: float = ETA_MIN,
    step_size: int = STEP_SIZE,
    gamma: float = GAMMA,
):
    """An optax schedule of the update count that is constant within an epoch."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if kind == "cosine":
        return lambda count: cosine_epoch_lr(count // steps_per_epoch, base_lr, t_max, eta_min)
    if kind == "step":
        return lambda count: step_epoch_lr(count // steps_per_epoch, base_lr, step_size, gamma)
    if kind == "constant":
        return lambda count: jnp.asarray(base_lr, jnp.float32)
    raise ValueError(f"unknown schedule {kind!r}; expected one of {SCHEDULES}")


def make_fwd_optimizer(schedule, momentum: float = 0.9, weight_decay: float = 1e-4):
    """Coupled L2 weight decay, then SGD with momentum (PyTorch ``SGD(weight_decay=…)``).

    PyTorch adds wd·θ to the gradient *before* the momentum buffer; optax's
    ``add_decayed_weights`` followed by ``sgd`` does the same (design §2.1, step 5).
    Biases are decayed too, as in the reference.
    """
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.sgd(schedule, momentum=momentum))
    return optax.chain(*parts)


def forward_optimizer(o: ml_collections.ConfigDict, num_layers: int):
    """Validate an ``optim`` section for a network of ``num_layers`` forward layers.

    Returns:
      ``steps_per_epoch -> (optimizer, schedule)``; the optimizer takes the tuple of per-layer
      forward parameters.
    """
    validate_config(o)
    scales = tuple(float(v) for v in o.layer_lr_scale)
    if scales:
        cc.check_per_layer("config.optim.layer_lr_scale", scales, num_layers, "forward layer")
    lr, kind, momentum, wd = float(o.lr), o.schedule, float(o.momentum), float(o.weight_decay)
    adam = o.optimizer == "adam"
    options = {
        "t_max": int(o.t_max),
        "eta_min": float(o.eta_min),
        "step_size": int(o.step_size),
        "gamma": float(o.gamma),
    }

    def build(steps_per_epoch: int):
        schedule = make_schedule(lr, steps_per_epoch, kind, **options)
        tx = torch_adam(schedule, wd) if adam else make_fwd_optimizer(schedule, momentum, wd)
        if scales and any(v != 1.0 for v in scales):
            tx = optax.chain(tx, scale_by_layer(scales))
        return tx, schedule

    return build


def torch_adam(lr, weight_decay: float = 0.0, eps: float = ADAM_EPS) -> optax.GradientTransformation:
    """``torch.optim.Adam(lr, eps=eps, weight_decay=wd)``: wd·θ added to the gradient before the moments."""
    parts = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
    return optax.chain(*parts, optax.adam(lr, b1=ADAM_B1, b2=ADAM_B2, eps=eps))


def scale_by_layer(scales: tuple[float, ...]) -> optax.GradientTransformation:
    """Multiplies layer n's update (the n-th entry of a per-layer tuple) by ``scales[n]``.

    A factor of 1 leaves that layer's update untouched (bit for bit); 0 makes it exactly zero.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        if len(updates) != len(scales):
            raise ValueError(f"{len(scales)} layer scales for {len(updates)} layers")
        scaled = tuple(
            u if s == 1.0 else jax.tree.map(lambda x, s=s: x * jnp.asarray(s, x.dtype), u)
            for u, s in zip(updates, scales, strict=True)
        )
        return scaled, state

    return optax.GradientTransformation(init, update)
