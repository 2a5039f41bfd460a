"""Base config: every field a run can set, with defaults (conventions §3.5).

Experiment files in ``configs/`` start from :func:`get_base_config` and change
what they need; the config is locked, so every overridable key must exist here.
Per-layer values are tuples (in forward order over G^1 … G^{N−1}) so that they
can be overridden from the command line, e.g. ``--config.dtp.beta=0.5`` or
``--config.dtp.num_fb_iters='(10,10,10)'``.
"""

from __future__ import annotations

from typing import Any

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # 'dtp' (L-DRL DTP), 'bp' (backprop), 'vanilla_dtp' or 'tp' (spec §8.2), 'ddtp' (s-/p-DDTP, §8.4)
    c.algorithm = "dtp"

    c.model = ml_collections.ConfigDict()
    c.model.name = "lenet"  # 'lenet' or 'simple_vgg'
    c.model.channels = (32, 64)
    c.model.hidden = 512  # LeNet's fc1 width (ignored by simple_vgg)
    c.model.activation = "elu"
    # 'auto' ('mixed' on CPU, 'xla' elsewhere), 'xla', 'im2col' or 'mixed' (networks.resolve_conv_impl)
    c.model.conv_impl = "auto"

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic"  # mnist, fashion_mnist, cifar10, imagenet32, digits, synthetic
    c.data.data_dir = ""  # TFDS data_dir; '' uses $TFDS_DATA_DIR, then ~/tensorflow_datasets
    c.data.batch_size = 128  # global batch, over all devices and hosts
    c.data.eval_batch_size = 512  # a multiple of common device counts
    c.data.augment = True  # flip + random crop 32 (pad 4, edge), spec §5
    c.data.validation_split = 0.0  # 0 = the paper's protocol: train on all, test on the test set
    c.data.download = True  # prepare a missing TFDS dataset (needs network and tensorflow)
    c.data.synthetic_shape = (32, 32, 3)  # only for data.name='synthetic'
    c.data.synthetic_num_classes = 10
    c.data.synthetic_train_size = 512
    c.data.synthetic_eval_size = 256

    c.dtp = ml_collections.ConfigDict()
    c.dtp.beta = 0.7
    c.dtp.noise_scale = (0.41640228838517584, 0.3826261146623929, 0.13953820693586017)
    c.dtp.num_fb_iters = (41, 51, 24)
    c.dtp.fb_lr = (0.0007188427494432325, 0.00012510321884615596, 0.03541466958291287)
    c.dtp.fb_momentum = 0.9
    c.dtp.unpool_mode = "set"  # 'set' (reference) or 'add' (exact transpose of max-pool)
    c.dtp.probe = "difference"  # 'difference' (reference) or 'jvp' (small-noise limit)
    c.dtp.unroll = 1  # lax.scan unroll of the K feedback iterations
    # L-DRL gradient of the 'difference' probe: closed form (True; 4 instead of 5
    # linear maps per iteration, see jdtp.feedback.ldrl_value_and_grad) or autodiff.
    c.dtp.ldrl_closed_form = True

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 0.05
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4  # coupled (added to the gradient before momentum)
    c.optim.schedule = "cosine"  # 'cosine' (T_max, eta_min per epoch), 'step' or 'constant'
    c.optim.t_max = 85
    c.optim.eta_min = 1e-5
    c.optim.step_size = 30
    c.optim.gamma = 0.1

    c.num_epochs = 90
    c.num_train_steps = -1  # -1: num_epochs × steps per epoch
    c.log_every_steps = 50
    c.gmp_every_steps = 500  # angle(DTP update, BP gradient) per layer; 0 disables
    c.gmp_beta = 0.005  # β used for that angle (paper Fig. 4)
    c.eval_every_epochs = 1
    c.checkpoint_every_steps = 1000
    c.max_checkpoints_to_keep = 2
    c.matmul_precision = "highest"  # recorded in the run's hyperparameters
    c.mesh_devices = -1  # devices on the ('data',) mesh; -1 = all, across hosts
    # DDTP-linear baseline (algorithm='ddtp'; spec §8.4). Defaults: s-DDTP CIFAR-10
    # (P:meulemans_dtp/final_configs/cifar10_DDTPConv.py). Per-layer: lr and eps one
    # per block (N), num_fb_iters and sigma one per hidden layer (N - 1).
    c.ddtp = ml_collections.ConfigDict()
    c.ddtp.target_stepsize = 0.015962099947441903
    c.ddtp.lr = (2.5935571806476586e-4, 8.85500279951265e-4, 1.423047695105589e-4, 3.3871035558126015e-6)
    c.ddtp.eps = (2.7867895625009e-08, 1.9868935703787622e-08, 4.515242618159344e-06, 4.046144976139705e-05)
    c.ddtp.normalize_lr = True  # forward lr_i / target_stepsize, as the reference
    c.ddtp.num_fb_iters = (1, 1, 1)
    c.ddtp.sigma = (0.00921040366516759,) * 3
    c.ddtp.lr_fb = 0.0045157498494467095
    c.ddtp.eps_fb = 7.529093372180766e-07
    c.ddtp.b1_fb = 0.9
    c.ddtp.b2_fb = 0.999
    c.ddtp.feedback_wd = 6.169295107849636e-05
    c.ddtp.semantics = "fork"  # 'fork' (the paper's runs) or 'original' (Meulemans), spec §10.16
    c.ddtp.epochs_fb = 10  # s-DDTP: feedback-only epochs first
    c.ddtp.extra_fb_epochs = 1  # s-DDTP: feedback-only epochs after each joint epoch
    c.ddtp.float64 = False  # the reference's double precision (slower; CPU/GPU only)
    return c


class ConfigError(ValueError):
    """A config value is out of range or a per-layer list has the wrong length."""


ALGORITHMS = ("dtp", "bp", "vanilla_dtp", "tp", "ddtp")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("default", "high", "highest")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate_config(config: ml_collections.ConfigDict, num_trainable_fb: int, model_name: str = "") -> None:
    """Strict checks run when a run starts; raises one :class:`ConfigError` naming the field.

    Args:
      config: the run's config.
      num_trainable_fb: number of trainable feedback blocks G^1..G^{N-1} of the network.
      model_name: used in messages.
    """
    _check(
        config.algorithm in ALGORITHMS, f"config.algorithm={config.algorithm!r}, expected one of {ALGORITHMS}"
    )
    d = config.dtp
    for field in ("noise_scale", "num_fb_iters", "fb_lr"):
        value = tuple(d[field])
        _check(
            len(value) == num_trainable_fb,
            f"config.dtp.{field} has {len(value)} entries {value}, expected {num_trainable_fb}: one per "
            f"trainable feedback block G^1..G^{num_trainable_fb} of {model_name or config.model.name}",
        )
    for i, v in enumerate(d.noise_scale):
        _check(v > 0, f"config.dtp.noise_scale[{i}]={v}, expected > 0")
    for i, v in enumerate(d.num_fb_iters):
        _check(int(v) == v and v >= 1, f"config.dtp.num_fb_iters[{i}]={v}, expected an integer >= 1")
    for i, v in enumerate(d.fb_lr):
        _check(v > 0, f"config.dtp.fb_lr[{i}]={v}, expected > 0")
    _check(d.beta > 0, f"config.dtp.beta={d.beta}, expected > 0")
    _check(0 <= d.fb_momentum < 1, f"config.dtp.fb_momentum={d.fb_momentum}, expected in [0, 1)")
    _check(
        d.unpool_mode in ("set", "add"), f"config.dtp.unpool_mode={d.unpool_mode!r}, expected 'set' or 'add'"
    )
    _check(d.probe in ("difference", "jvp"), f"config.dtp.probe={d.probe!r}, expected 'difference' or 'jvp'")
    _check(d.unroll >= 1, f"config.dtp.unroll={d.unroll}, expected >= 1")
    if config.algorithm == "ddtp":
        _validate_ddtp(config.ddtp, num_trainable_fb, model_name or config.model.name)
    o = config.optim
    _check(o.lr > 0, f"config.optim.lr={o.lr}, expected > 0")
    _check(0 <= o.momentum < 1, f"config.optim.momentum={o.momentum}, expected in [0, 1)")
    _check(o.weight_decay >= 0, f"config.optim.weight_decay={o.weight_decay}, expected >= 0")
    _check(o.schedule in SCHEDULES, f"config.optim.schedule={o.schedule!r}, expected one of {SCHEDULES}")
    _check(o.t_max >= 1, f"config.optim.t_max={o.t_max}, expected >= 1")
    _check(config.data.batch_size >= 1, f"config.data.batch_size={config.data.batch_size}, expected >= 1")
    _check(
        config.data.eval_batch_size >= 1,
        f"config.data.eval_batch_size={config.data.eval_batch_size}, expected >= 1",
    )
    _check(
        0 <= config.data.validation_split < 1,
        f"config.data.validation_split={config.data.validation_split}, expected in [0, 1)",
    )
    _check(config.num_epochs >= 1, f"config.num_epochs={config.num_epochs}, expected >= 1")
    _check(
        config.num_train_steps == -1 or config.num_train_steps >= 1,
        f"config.num_train_steps={config.num_train_steps}, expected -1 (derive from epochs) or >= 1",
    )
    for field in ("log_every_steps", "checkpoint_every_steps", "eval_every_epochs"):
        _check(config[field] >= 1, f"config.{field}={config[field]}, expected >= 1")
    _check(config.gmp_every_steps >= 0, f"config.gmp_every_steps={config.gmp_every_steps}, expected >= 0")
    _check(config.gmp_beta > 0, f"config.gmp_beta={config.gmp_beta}, expected > 0")
    _check(
        config.matmul_precision in PRECISIONS,
        f"config.matmul_precision={config.matmul_precision!r}, expected one of {PRECISIONS}",
    )
    _check(
        config.mesh_devices == -1 or config.mesh_devices >= 1, f"config.mesh_devices={config.mesh_devices}"
    )


def _validate_ddtp(d, num_hidden: int, model_name: str) -> None:
    for field, expected, what in (
        ("lr", num_hidden + 1, "block"),
        ("eps", num_hidden + 1, "block"),
        ("num_fb_iters", num_hidden, "hidden layer"),
        ("sigma", num_hidden, "hidden layer"),
    ):
        value = tuple(d[field])
        _check(
            len(value) == expected,
            f"config.ddtp.{field} has {len(value)} entries {value}, expected {expected}: one per {what} "
            f"of {model_name}",
        )
    for field in ("lr", "eps", "sigma"):
        for i, v in enumerate(d[field]):
            _check(v > 0, f"config.ddtp.{field}[{i}]={v}, expected > 0")
    for i, v in enumerate(d.num_fb_iters):
        _check(int(v) == v and v >= 0, f"config.ddtp.num_fb_iters[{i}]={v}, expected an integer >= 0")
    for field in ("target_stepsize", "lr_fb", "eps_fb"):
        _check(d[field] > 0, f"config.ddtp.{field}={d[field]}, expected > 0")
    _check(d.feedback_wd >= 0, f"config.ddtp.feedback_wd={d.feedback_wd}, expected >= 0")
    _check(
        d.semantics in ("fork", "original"),
        f"config.ddtp.semantics={d.semantics!r}, expected 'fork' or 'original'",
    )
    for field in ("epochs_fb", "extra_fb_epochs"):
        _check(
            int(d[field]) == d[field] and d[field] >= 0,
            f"config.ddtp.{field}={d[field]}, expected an integer >= 0",
        )


def parse_variant(variant: str) -> set[str]:
    """``'bp,smoke'`` -> ``{'bp', 'smoke'}``."""
    return {v.strip() for v in (variant or "").split(",") if v.strip()}


def apply_common_variants(
    config: ml_collections.ConfigDict,
    variants: set[str],
    bp: dict[str, Any] | None = None,
    known: tuple[str, ...] = (),
) -> ml_collections.ConfigDict:
    """Variants shared by every experiment file.

    - ``bp``: the backprop baseline of the experiment (spec §4.5); ``bp`` holds
      its overrides as dotted keys, e.g. ``{'optim.lr': 0.03, 'data.batch_size': 193}``.
    - ``smoke``: the same experiment shrunk to seconds on a CPU: synthetic data
      with the real shapes, tiny batch, 2 feedback iterations per layer, 4 steps.
    - ``gpu`` / ``tpu``: accelerator runs at the paper's batch size (global, over
      all devices), XLA's library convolutions, and the matmul precision set
      explicitly to ``highest`` (recorded with the run's config). Without it GPUs
      use TF32 and TPUs bf16 passes for float32 matmuls, which blunts DTP's
      small differences; lower it only after checking the JMC angles.

    Raises:
      ConfigError: for a variant the file does not know.
    """
    allowed = {"bp", "smoke", "gpu", "tpu", *known}
    unknown = variants - allowed
    if unknown:
        raise ConfigError(f"unknown config variant(s) {sorted(unknown)}; this file knows {sorted(allowed)}")
    if "bp" in variants:
        config.algorithm = "bp"
        for dotted, value in (bp or {}).items():
            node = config
            *path, leaf = dotted.split(".")
            for part in path:
                node = node[part]
            node[leaf] = value
    if variants & {"gpu", "tpu"}:
        config.model.conv_impl = "xla"
        config.matmul_precision = "highest"
    if "smoke" in variants:
        config.data.synthetic_shape = SHAPES.get(config.data.name, tuple(config.data.synthetic_shape))
        config.data.synthetic_num_classes = CLASSES.get(config.data.name, config.data.synthetic_num_classes)
        config.data.name = "synthetic"
        config.data.batch_size = 8
        config.data.eval_batch_size = 16
        config.data.synthetic_train_size = 32
        config.data.synthetic_eval_size = 32
        config.dtp.num_fb_iters = tuple(2 for _ in config.dtp.num_fb_iters)
        config.num_train_steps = 4
        config.log_every_steps = 2
        config.gmp_every_steps = 2
        config.checkpoint_every_steps = 2
        config.ddtp.num_fb_iters = tuple(min(int(k), 2) for k in config.ddtp.num_fb_iters)
        if config.algorithm == "ddtp":  # one feedback-only epoch, then one joint epoch
            config.ddtp.epochs_fb = min(int(config.ddtp.epochs_fb), 1)
            config.ddtp.extra_fb_epochs = min(int(config.ddtp.extra_fb_epochs), 1)
            config.num_train_steps = 8
    return config


# Input shapes and classes of the registered datasets (for the smoke variant only;
# the real values come from jdtp.input_pipeline at run time).
SHAPES = {
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "imagenet32": (32, 32, 3),
    "digits": (8, 8, 1),
}
CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "imagenet32": 1000, "digits": 10}
