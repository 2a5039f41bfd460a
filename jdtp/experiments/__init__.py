"""Alignment experiments of the paper: Fig. 2 (``jmc``), Fig. 3 (``gmp``) and Fig. 4 (``angles_plot``).

Each experiment module has a ``run(config, out_dir) -> dict`` function that does
the work and writes its PNG and JSON. Experiments are configured like training:
an ml-collections config file in ``configs/figures/`` (``fig2_jmc.py``, ``fig3_gmp.py``)
with ``--config.KEY=VALUE`` overrides, run under the config's
``matmul_precision`` (:func:`main`). This package module holds what they share:
the entry point, seeds, the single input batch per seed, JSON output and small
statistics helpers.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from jdtp import datasets

SYNTHETIC = "synthetic"


def seed_list(num_seeds: int, base: int = 123, stride: int = 1) -> list[int]:
    """``[base, base + stride, …]``: Fig. 2 uses 123, 234, … (stride 111), Fig. 3 123 … 127 (design §7)."""
    return [base + stride * i for i in range(int(num_seeds))]


@functools.lru_cache(maxsize=2)
def _train_source(name: str, data_dir: str):
    return datasets.open_split(name, "train", data_dir or None)


def single_batch(
    data: str,
    data_dir: str,
    batch_size: int,
    seed: int,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    dtype=jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """The one input batch of a seed (design §7.1: fixed within a seed, different across seeds).

    Args:
      data: ``'synthetic'`` (i.i.d. N(0, 1) images of ``input_shape`` and
        uniform random labels) or a dataset name for
        :func:`jdtp.datasets.open_split`, whose train split is sampled
        without replacement by the seed and normalised with mean 0.5, std 0.5.
      data_dir: TFDS data_dir for real datasets (empty: the pipeline's default).
      batch_size: B.
      seed: the experiment seed.
      input_shape: image shape for synthetic data.
      num_classes: label range for synthetic data.
      dtype: float dtype of the images.

    Returns:
      ``(x [B, H, W, C], labels [B] int32)``.
    """
    if data == SYNTHETIC:
        kx, ky = jax.random.split(jax.random.fold_in(jax.random.key(seed), 7))
        x = jax.random.normal(kx, (batch_size, *input_shape), dtype)
        labels = jax.random.randint(ky, (batch_size,), 0, num_classes, jnp.int32)
        return x, labels
    source = _train_source(data, data_dir)
    if batch_size > len(source):
        raise ValueError(f"batch_size={batch_size} exceeds the {len(source)} examples of {data}[train]")
    # Only the picked rows are decoded (not the whole split).
    images, labels = source.read(np.random.default_rng(seed).permutation(len(source))[:batch_size])
    x = (images.astype(np.float32) / 255.0 - 0.5) / 0.5
    return jnp.asarray(x, dtype), jnp.asarray(labels, jnp.int32)


def num_classes_of(data: str) -> int:
    """Number of classes of ``data`` (10 for synthetic data)."""
    if data == SYNTHETIC:
        return 10
    return int(datasets.get_info(data).num_classes)


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, population std (as ``np.std``), min, max and the values themselves."""
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "per_seed": [float(a) for a in v],
    }


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as indented JSON (NaN/inf become null), creating the folder."""

    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        if isinstance(o, np.generic | np.ndarray):
            return clean(o.tolist())
        if isinstance(o, float) and not math.isfinite(o):
            return None
        return o

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(clean(obj), f, indent=1)
    logging.info("Wrote %s", path)


def config_file(name: str) -> str:
    """Path of ``configs/figures/<name>`` in the repository this package runs from."""
    return os.path.join(os.path.dirname(__file__), "..", "..", "configs", "figures", name)


def main(run_fn, config_name: str, out_default: str) -> None:
    """``python -m jdtp.experiments.X [--config=configs/X.py[:variant]] [--config.KEY=V] [--out=DIR]``."""
    config_flags.DEFINE_config_file(
        "config",
        config_file(config_name),
        f"Experiment config file (default configs/figures/{config_name}).",
        lock_config=True,
    )
    flags.DEFINE_string("out", out_default, "Output folder for the PNG and the JSON.")

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        config = flags.FLAGS.config
        try:
            with jax.default_matmul_precision(config.matmul_precision):
                run_fn(config, flags.FLAGS.out)
        except ValueError as e:
            sys.exit(f"error: {e}")

    app.run(_main)
