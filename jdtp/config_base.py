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

from typing import Any

import ml_collections

from jdtp import config_checks as cc
from jdtp import networks

ConfigError = cc.ConfigError
PRECISIONS = ("default", "high", "highest")


def get_base_config(algorithm: str = "dtp", model: str = "lenet") -> ml_collections.ConfigDict:
    """Common keys with neutral defaults, the ``model`` section of ``model`` and ``algorithm``'s sections."""
    from jdtp import algorithms  # the registry imports this module's helpers

    c = ml_collections.ConfigDict()
    c.seed = 0
    c.algorithm = algorithm  # a name from jdtp.algorithms (see README "Training")
    c.model = networks.model_config(model)

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic"  # a name from jdtp.input_pipeline.DATASETS
    c.data.data_dir = ""  # TFDS data_dir; '' uses $TFDS_DATA_DIR, then ~/tensorflow_datasets
    c.data.batch_size = 128  # global batch, over all devices and hosts
    c.data.eval_batch_size = 512  # a multiple of common device counts
    c.data.augment = True  # flip + random crop (pad 4, edge), design §5
    c.data.pad_to = 0  # > 0: zero-pad the images to pad_to × pad_to (e.g. 32 for 28×28 datasets)
    c.data.validation_split = 0.0  # 0 = the paper's protocol: train on all, test on the test set
    c.data.download = True  # prepare a missing TFDS dataset (needs network and tensorflow)
    c.data.synthetic_shape = (32, 32, 3)  # only for data.name='synthetic'
    c.data.synthetic_num_classes = 10
    c.data.synthetic_train_size = 512
    c.data.synthetic_eval_size = 256

    c.num_epochs = 1
    c.num_train_steps = -1  # -1: derived from num_epochs (and the algorithm's schedule)
    c.log_every_steps = 50
    c.gmp_every_steps = 500  # angle(update, BP gradient) per layer, for algorithms with targets; 0 disables
    c.eval_every_epochs = 1
    c.eval_every_steps = 0  # also evaluate every this many steps (0: only per epoch and at the end)
    c.evals_per_epoch = 1  # also evaluate this many times per epoch, evenly spaced (for curves)
    c.checkpoint_every_steps = 1000
    c.max_checkpoints_to_keep = 2
    c.matmul_precision = "highest"  # recorded in the run's hyperparameters
    c.mesh_devices = -1  # devices on the ('data',) mesh; -1 = all, across hosts
    # Resuming (or rerunning) a workdir with other run-defining values stops with the differing keys
    # unless this is True (jdtp.run_files.HARMLESS_KEYS lists the keys that may always change).
    c.allow_config_change = False
    algorithms.add_sections(c, algorithm)
    return c


def validate_common(config: ml_collections.ConfigDict) -> None:
    """Checks of the keys every run has (the algorithm checks its own sections); one ConfigError."""
    from jdtp import algorithms

    algorithms.check_sections(config)
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
        "max_checkpoints_to_keep",
    ):
        check(config[field] >= 1, f"config.{field}={config[field]}, expected >= 1")
    check(config.gmp_every_steps >= 0, f"config.gmp_every_steps={config.gmp_every_steps}, expected >= 0")
    cc.check_one_of("config.matmul_precision", config.matmul_precision, PRECISIONS)
    check(
        config.mesh_devices == -1 or config.mesh_devices >= 1,
        f"config.mesh_devices={config.mesh_devices}, expected -1 (all devices) or >= 1",
    )


def load_config_file(path: str, variant: str = "") -> ml_collections.ConfigDict:
    """``get_config(variant)`` of a config file (``path`` may end in ``:variant``, as on the command line)."""
    import importlib.util
    import os

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


def set_dotted(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    """``set_dotted(c, 'optim.lr', 0.1)`` sets ``c.optim.lr``."""
    node = config
    *path, leaf = dotted.split(".")
    for part in path:
        node = node[part]
    node[leaf] = value


ALGORITHM_VARIANTS = ("bp", "vanilla_dtp", "tp", "parallel_dtp")
COMMON_VARIANTS = (*ALGORITHM_VARIANTS, "smoke", "gpu", "tpu")


def apply_common_variants(
    config: ml_collections.ConfigDict,
    variants: set[str],
    bp: dict[str, Any] | None = None,
    known: tuple[str, ...] = (),
) -> ml_collections.ConfigDict:
    """Variants shared by every experiment file.

    - ``bp``: the experiment's backprop baseline (design §4.5): the algorithm
      becomes ``bp`` (its DTP section is dropped) and ``bp`` holds the
      baseline's own values as dotted keys, e.g. ``{'optim.lr': 0.03, 'data.batch_size': 193}``.
    - ``vanilla_dtp`` / ``tp``: the untuned baselines of design §8.2 with the
      experiment's DTP per-layer lists and β, and forward lr 1e-3.
    - ``parallel_dtp``: the reference's ParallelDTP (design §8.1) with the experiment's β and σ
      and its own Adam settings (lr 3e-4, coupled wd 1e-4, 10 noise samples per example).
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
    from jdtp import algorithms, input_pipeline

    allowed = {*COMMON_VARIANTS, *known}
    unknown = variants - allowed
    cc.check(not unknown, f"unknown config variant(s) {sorted(unknown)}; this file knows {sorted(allowed)}")
    chosen = variants & set(ALGORITHM_VARIANTS)
    cc.check(len(chosen) <= 1, f"config variants {sorted(chosen)} each choose an algorithm; pick one")
    if "bp" in variants:
        algorithms.switch(config, "bp")
        for dotted, value in (bp or {}).items():
            set_dotted(config, dotted, value)
    for name in chosen & {"vanilla_dtp", "tp"}:
        algorithms.switch(config, name)  # copies the shared per-layer keys from the DTP section
        config.optim.lr = 1e-3  # design §8.2: "Hparams not tuned"
    if "parallel_dtp" in chosen:
        algorithms.switch(config, "parallel_dtp")  # β, σ and the unpool mode from the DTP section
    if variants & {"gpu", "tpu"}:
        config.model.conv_impl = "xla"
        config.matmul_precision = "highest"
    if "smoke" in variants:
        info = input_pipeline.get_info(config.data.name, config.data)
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
