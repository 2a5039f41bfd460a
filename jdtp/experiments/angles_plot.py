r"""Fig. 4: GMP angles per layer during training, read from training workdirs (paper §5.3, design §7.3).

Training (``jdtp.main`` with ``config.gmp_every_steps > 0``) appends JSON lines
to ``<workdir>/metrics.jsonl``; the lines with GMP angles look like::

  {"step": 1560, "epoch": 4.0, "gmp_angle/conv_0": 31.2, "gmp_angle/conv_1": 9.8, ...}

This tool collects, for every workdir, the ``gmp_angle/<layer>`` series against
``epoch`` (or ``step`` when a line has no epoch), plots one panel per layer
with one line style per workdir, and writes the plotted numbers to a JSON file
next to the PNG (same name, ``.json``).

Example::

  python -m jdtp.experiments.angles_plot --workdirs=workdirs/dtp,workdirs/bp --labels=DTP,BP --out=fig4.png
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from absl import app, flags, logging

from jdtp import experiments as ex
from jdtp import plotting

PREFIX = "gmp_angle/"
LINESTYLES = ("-", "--", ":", "-.")


def define_flags() -> None:
    """Defines the command-line flags (only when run as a program)."""
    flags.DEFINE_list("workdirs", [], "Training workdirs holding metrics.jsonl.")
    flags.DEFINE_list("labels", [], "Legend label per workdir (default: the workdir's base name).")
    flags.DEFINE_string("out", "fig4.png", "Output PNG; the plotted numbers go to the same path with .json.")


def read_gmp_angles(workdir: str) -> dict[str, Any]:
    """The GMP angle series of one workdir.

    Args:
      workdir: folder with ``metrics.jsonl`` (or the path of the file itself).

    Returns:
      ``{"x_key": "epoch" | "step", "layers": {layer: {"x": [...], "angle": [...]}}}``,
      sorted by step; a later line for the same step (a resumed run) replaces
      the earlier one. ``x_key`` is ``"epoch"`` only if every GMP line has one.

    Raises:
      FileNotFoundError: no ``metrics.jsonl``.
    """
    path = workdir if workdir.endswith(".jsonl") else os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist (is {workdir!r} a training workdir?)")
    by_step: dict[int, dict[str, Any]] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logging.warning("%s:%d: not JSON, skipped", path, lineno)
                continue
            angles = {k[len(PREFIX) :]: v for k, v in record.items() if k.startswith(PREFIX)}
            if not angles or "step" not in record:
                continue
            entry = by_step.setdefault(int(record["step"]), {"epoch": None, "angles": {}})
            if record.get("epoch") is not None:
                entry["epoch"] = float(record["epoch"])
            entry["angles"].update(angles)
    steps = sorted(by_step)
    x_key = "epoch" if steps and all(by_step[s]["epoch"] is not None for s in steps) else "step"
    layers: dict[str, dict[str, list]] = {}
    for s in steps:
        entry = by_step[s]
        x = entry["epoch"] if x_key == "epoch" else s
        for layer, v in entry["angles"].items():
            series = layers.setdefault(layer, {"x": [], "step": [], "angle": []})
            series["x"].append(x)
            series["step"].append(s)
            series["angle"].append(None if v is None else float(v))
    return {"x_key": x_key, "layers": layers}


def run(workdirs: Sequence[str], out: str, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Reads every workdir, writes the figure to ``out`` and the numbers to ``out`` with ``.json``.

    Returns:
      The dictionary written to the JSON file.
    """
    if not workdirs:
        raise ValueError("no workdirs given")
    labels = list(labels or [])
    if labels and len(labels) != len(workdirs):
        raise ValueError(f"{len(labels)} labels for {len(workdirs)} workdirs")
    if not labels:
        labels = [os.path.basename(os.path.normpath(w)) for w in workdirs]
    runs = {}
    for label, w in zip(labels, workdirs, strict=True):
        runs[label] = {"workdir": os.path.abspath(w), **read_gmp_angles(w)}
        if not runs[label]["layers"]:
            logging.warning("%s: no %s* entries in metrics.jsonl", w, PREFIX)
    layer_names: list[str] = []
    for r in runs.values():
        layer_names += [name for name in r["layers"] if name not in layer_names]
    result = {"figure": "fig4_gmp_angles", "layers": layer_names, "runs": runs}

    plt = plotting.plt
    ncols = max(1, len(layer_names))
    fig, axes = plt.subplots(1, ncols, figsize=(3.2 * ncols, 3.2), squeeze=False)
    for ax, layer in zip(axes[0], layer_names, strict=False):  # one empty axis when nothing was logged
        for i, (label, r) in enumerate(runs.items()):
            series = r["layers"].get(layer)
            if series is None:
                continue
            ax.plot(
                series["x"], series["angle"], LINESTYLES[i % len(LINESTYLES)], color=f"C{i % 10}", label=label
            )
        ax.set_title(layer)
        x_keys = {r["x_key"] for r in runs.values()}
        ax.set_xlabel(x_keys.pop() if len(x_keys) == 1 else "epoch / step")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("∠(ΔθDTP, ΔθBP) (degrees)")
    axes[0][0].legend(fontsize=8)
    plotting.save_figure(fig, out)
    ex.write_json(os.path.splitext(out)[0] + ".json", result)
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run(flags.FLAGS.workdirs, flags.FLAGS.out, flags.FLAGS.labels)


if __name__ == "__main__":
    define_flags()
    app.run(main)
