"""The neutral base config and the variants every experiment file shares (design §13).

:func:`get_base_config` holds the keys every run has (seed, model, data, the
run loop) with neutral defaults, plus the config sections of the chosen
algorithm (its own defaults, from the algorithm registry; keys an experiment
must state, such as learning rates and per-layer lists, have none). Experiment
files in ``configs/`` start from it and state their values once; the config is
locked, so every overridable key exists here or in an algorithm's section:
``--config.dtp.beta=0.5``, ``--config.dtp.num_fb_iters='(10,10,10)'``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from jdtp import algorithms, architectures, datasets
from jdtp import config_checks as cc

ConfigError = cc.ConfigError
PRECISIONS = ("default", "high", "highest")


def get_base_config(algorithm: str = "dtp", model: str = "lenet") -> ml_collections.ConfigDict:
    """Common keys with neutral defaults, the ``model`` section of ``model`` and ``algorithm``'s sections."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.algorithm = algorithm  # a name from jdtp.algorithms (see README "Training")
    c.model = architectures.model_config(model)

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic"  # a name from jdtp.datasets.DATASETS
    c.data.data_dir = ""  # TFDS data_dir; '' uses $TFDS_DATA_DIR, then ~/tensorflow_datasets
    c.data.batch_size = 128  # global batch, over all devices and hosts
    c.data.eval_batch_size = 512  # a multiple of common device counts
    c.data.augment = True  # flip + random crop (pad 4, edge), design §5
    c.data.pad_to = 0  # > 0: zero-pad the images to pad_to × pad_to (e.g. 32 for 28×28 datasets)
    c.data.validation_split = 0.0  # 0 = the paper's protocol: train on all, test on the test set
    c.data.download = True  # prepare a missing TFDS dataset (needs network and tensorflow)
    synthetic = datasets.DATASETS["synthetic"]  # only for data.name='synthetic'
    c.data.synthetic_shape = synthetic.shape
    c.data.synthetic_num_classes = synthetic.num_classes
    c.data.synthetic_train_size = synthetic.train_size
    c.data.synthetic_eval_size = synthetic.test_size

    c.num_epochs = 1
    c.num_train_steps = -1  # -1: derived from num_epochs (and the algorithm's schedule)
    c.log_every_steps = 50
    c.gmp_every_steps = 500  # angle(update, BP gradient) per layer, for algorithms with targets; 0 disables
    # A finite training loss above this stops the run as diverged, like a NaN (0 disables): DTP runs
    # have blown up to losses of 1e18-1e26 with finite weights and trained on for hours.
    c.max_train_loss = 1e4
    c.eval_every_epochs = 1
    c.eval_every_steps = 0  # also evaluate every this many steps (0: only per epoch and at the end)
    c.evals_per_epoch = 1  # also evaluate this many times per epoch, evenly spaced (for curves)
    c.checkpoint_every_steps = 1000
    c.max_checkpoints_to_keep = 2
    c.matmul_precision = "highest"  # recorded in the run's hyperparameters
    c.mesh_devices = -1  # devices on the ('data',) mesh; -1 = all, across hosts
    # Resuming (or rerunning) a workdir with other run-defining values stops with the differing keys
    # unless this is True (HARMLESS_KEYS below lists the keys that may always change).
    c.allow_config_change = False
    algorithms.add_sections(c, algorithm)
    return c


# Keys that do not change what a run computes (or only extend it): a resume may change them.
HARMLESS_KEYS = frozenset(
    {
        "allow_config_change",
        "checkpoint_every_steps",
        "data.data_dir",
        "data.download",
        "data.eval_batch_size",
        "eval_every_epochs",
        "eval_every_steps",
        "evals_per_epoch",
        "gmp_every_steps",
        "log_every_steps",
        "max_checkpoints_to_keep",
        "max_train_loss",
        "mesh_devices",
        "num_epochs",
        "num_train_steps",
    }
)


def validate_common(config: ml_collections.ConfigDict) -> None:
    """Checks of the keys every run has (the algorithm checks its own sections); one ConfigError."""
    check = cc.check
    d = config.data
    check(d.batch_size >= 1, f"config.data.batch_size={d.batch_size}, expected >= 1")
    check(d.eval_batch_size >= 1, f"config.data.eval_batch_size={d.eval_batch_size}, expected >= 1")
    check(
        0 <= d.validation_split < 1,
        f"config.data.validation_split={d.validation_split}, expected in [0, 1)",
    )
    check(config.num_epochs >= 1, f"config.num_epochs={config.num_epochs}, expected >= 1")
    check(
        config.num_train_steps == -1 or config.num_train_steps >= 1,
        f"config.num_train_steps={config.num_train_steps}, expected -1 (derive from epochs) or >= 1",
    )
    for field in (
        "log_every_steps",
        "checkpoint_every_steps",
        "eval_every_epochs",
        "evals_per_epoch",
        "max_checkpoints_to_keep",
    ):
        check(config[field] >= 1, f"config.{field}={config[field]}, expected >= 1")
    for field in ("gmp_every_steps", "eval_every_steps", "max_train_loss"):
        check(config[field] >= 0, f"config.{field}={config[field]}, expected >= 0 (0 disables)")
    cc.check_one_of("config.matmul_precision", config.matmul_precision, PRECISIONS)
    check(
        config.mesh_devices == -1 or config.mesh_devices >= 1,
        f"config.mesh_devices={config.mesh_devices}, expected -1 (all devices) or >= 1",
    )


def load_config_file(path: str, variant: str = "") -> ml_collections.ConfigDict:
    """``get_config(variant)`` of a config file (``path`` may end in ``:variant``, as on the command line)."""
    if ":" in os.path.basename(path) and not variant:
        path, variant = path.rsplit(":", 1)
    cc.check(os.path.isfile(path), f"config file {path!r} does not exist")
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"jdtp_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def parse_variant(variant: str) -> set[str]:
    """``'bp,smoke'`` -> ``{'bp', 'smoke'}``."""
    return {v.strip() for v in (variant or "").split(",") if v.strip()}


def parse_assignments(items: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    """``['data.data_dir=/d', 'dtp.beta=0.5']`` -> ``{'data.data_dir': '/d', 'dtp.beta': 0.5}``.

    Values are Python literals where they parse as one, else strings (paths, names).
    """
    out = {}
    for item in items:
        cc.check("=" in item, f"{flag}={item!r}: expected KEY=VALUE, e.g. data.data_dir=/data/tfds")
        k, v = item.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def set_dotted(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    """``set_dotted(c, 'optim.lr', 0.1)`` sets ``c.optim.lr``."""
    node = config
    *path, leaf = dotted.split(".")
    for part in path:
        node = node[part]
    node[leaf] = value


RUN_VARIANTS = ("smoke", "gpu", "tpu")


def apply_common_variants(
    config: ml_collections.ConfigDict,
    variants: set[str],
    variant_values: Mapping[str, Mapping[str, Any]] | None = None,
    known: tuple[str, ...] = (),
) -> ml_collections.ConfigDict:
    """Variants shared by every experiment file.

    - an algorithm's variant (``jdtp.algorithms.variants()``: ``bp``, ``vanilla_dtp``, ``tp``,
      ``parallel_dtp``) makes the experiment's config that algorithm's (the algorithm's
      ``adapt_variant`` says what it carries over and sets: the baselines of design §4.5 and
      §8.1-8.2), then applies the experiment's own values for it from ``variant_values``,
      dotted keys per variant, e.g. ``{'bp': {'optim.lr': 0.03, 'data.batch_size': 193}}``.
    - ``smoke``: the same experiment shrunk to seconds on a CPU: synthetic data
      with the real shapes, tiny batch, a few steps (and the algorithm's own
      shrinking, e.g. 2 feedback iterations per layer).
    - ``gpu`` / ``tpu``: accelerator runs at the paper's batch size (global, over
      all devices), XLA's library convolutions, and the matmul precision set
      explicitly to ``highest`` (recorded with the run's config). Without it GPUs
      use TF32 and TPUs bf16 passes for float32 matmuls, which blunts DTP's
      small differences; lower it only after checking the JMC angles.

    Raises:
      ConfigError: for a variant the file does not know, or two algorithm variants.
    """
    algorithm_variants = set(algorithms.variants())
    allowed = {*algorithm_variants, *RUN_VARIANTS, *known}
    unknown = variants - allowed
    cc.check(not unknown, f"unknown config variant(s) {sorted(unknown)}; this file knows {sorted(allowed)}")
    chosen = variants & algorithm_variants
    cc.check(len(chosen) <= 1, f"config variants {sorted(chosen)} each choose an algorithm; pick one")
    for variant in chosen:
        algorithms.apply_variant(config, variant)
        for dotted, value in (variant_values or {}).get(variant, {}).items():
            set_dotted(config, dotted, value)
    if variants & {"gpu", "tpu"}:
        config.model.conv_impl = "xla"
        config.matmul_precision = "highest"
    if "smoke" in variants:
        info = datasets.get_info(config.data.name, config.data)
        config.data.synthetic_shape = tuple(info.shape)
        config.data.synthetic_num_classes = info.num_classes
        config.data.name = "synthetic"
        config.data.batch_size = 8
        config.data.eval_batch_size = 16
        config.data.synthetic_train_size = 32
        config.data.synthetic_eval_size = 32
        config.num_train_steps = 4
        config.log_every_steps = 2
        config.gmp_every_steps = 2
        config.checkpoint_every_steps = 2
        algorithms.get(config.algorithm).shrink_for_smoke(config)
    return config
