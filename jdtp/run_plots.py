"""A small PNG of one run: loss, accuracy and per-layer angles against the step.

    python -m jdtp.run_plots --workdir=DIR [--out=DIR/summary.png]

Training writes it at the end of every run (``summary.png`` in the workdir); this command
redraws it from ``metrics.jsonl`` at any time, e.g. while a run is still going.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict

from absl import app, flags

from jdtp import plotting, run_files


def _series(records, key):
    pts = [(r["step"], r[key]) for r in records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_workdir(workdir: str, out: str | None = None) -> str:
    """Draw ``metrics.jsonl`` of ``workdir``; returns the PNG's path."""
    path = os.path.join(workdir, run_files.METRICS)
    records = run_files.read_metrics(path)
    if not records:
        raise FileNotFoundError(f"no metrics in {path}")
    plt = plotting.plt
    groups = defaultdict(list)
    for key in sorted({k for r in records for k in r}):
        if "/" in key and key.split("/", 1)[0] in ("gmp_angle", "jmc_angle"):
            groups[key.split("/", 1)[0]].append(key)
    panels = [("loss", ["train/loss", "eval/loss"]), ("accuracy", ["train/accuracy", "eval/accuracy"])]
    panels += [(name, keys) for name, keys in sorted(groups.items())]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            x, y = _series(records, key)
            if x:
                ax.plot(
                    x,
                    y,
                    lw=1,
                    marker="o" if key.startswith("eval") else None,
                    ms=3,
                    label=key.split("/")[-1] if "/" in key else key,
                )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if title.endswith("angle"):
            ax.set_ylabel("degrees")
    fig.suptitle(os.path.abspath(workdir), fontsize=8)
    return plotting.save_figure(fig, out or os.path.join(workdir, "summary.png"), dpi=100)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    try:
        print(plot_workdir(flags.FLAGS.workdir, flags.FLAGS.out or None))
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A run's workdir.", required=True)
    flags.DEFINE_string("out", "", "Output PNG (default: WORKDIR/summary.png).")
    app.run(main)
