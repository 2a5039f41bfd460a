"""Tables and plots generated from runs: a sweep directory in, CSV, Markdown and PNGs out.

    python -m jdtp.tables --sweep_dir=results/sweeps/table1_mnist --out=docs/results/table1_mnist

For every (dataset, model, label) of the sweep (``jdtp.sweep``) it reads each seed's
``results.json`` and ``metrics.jsonl`` and writes

* ``table.csv`` / ``table.md``: seeds, mean ± sample std (ddof 1) of the final test accuracy (and
  top-5), epochs that trained the forward weights, steps, wall time per run and the hardware,
  beside the paper's number for that row (``jdtp.paper_results``);
* ``gaps.csv`` (and a section of ``table.md``): DTP (or the ``--reference`` label) − each other
  label, per seed (same seeds paired), mean ± std, beside the paper's gap;
* ``accuracy.png``: test accuracy against forward epochs per label (mean over seeds, min-max band);
* ``gmp_angles.png``: per-layer angle between each algorithm's update and the BP gradient against
  forward epochs (mean over seeds, min-max band);
* ``gmp.csv`` (and a section of ``table.md``): per label and layer, the median, largest and last
  of each run's logged GMP angles over its whole training and the share of them above 60°, mean
  over seeds.

Incomplete runs are listed and left out of the numbers (``--include_unfinished`` also draws them,
dashed, and lists how far they got). Nothing is typed by hand: the README's result tables are
these files.

``--keep_runs`` also keeps every finished run's ``config.json``, ``results.json`` and
``metrics.jsonl`` in ``<out>/runs/<label>/seed_<s>/`` (a few hundred kB a run, small enough for the
repository) and draws the tables from those stored runs together with the sweep's: a table can
grow over several sessions whose sweep directories are lost in between. A stored file is never
replaced by a different one: a finished run that differs from its stored copy is an error that
names both, and nothing is copied.
"""

from __future__ import annotations

import csv
import dataclasses
import filecmp
import glob
import math
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from typing import Any

import numpy as np
from absl import app, flags

from jdtp import paper_results, plotting, run_files

REFERENCE_LABEL = "dtp"
# What --keep_runs keeps of a finished run: all that the tables read, none of its checkpoints.
KEPT_FILES = (run_files.CONFIG, run_files.RESULTS, run_files.METRICS)
RUNS_DIR = "runs"
# An update more than 60° from the BP gradient keeps under half its length along it (cos 60° = 0.5):
# the bound the GMP tables count logged steps against.
GMP_BOUND_DEG = 60.0


@dataclasses.dataclass
class RunRecord:
    """What one run of a sweep contributes."""

    label: str
    seed: int
    workdir: str
    results: dict[str, Any] | None
    eval_curve: list[tuple[float, float]]  # (forward epoch, test accuracy)
    gmp_curves: dict[str, list[tuple[float, float]]]  # layer -> (forward epoch, angle)

    config: dict | None = None  # the stored config.json (names an unfinished run's dataset and model)

    @property
    def complete(self) -> bool:
        return self.results is not None

    @property
    def key(self) -> tuple[str, str, str]:
        if self.results:
            return (self.results.get("dataset", "?"), self.results.get("model", "?"), self.label)
        c = self.config or {}
        dataset = (c.get("data") or {}).get("name", "?")
        return (dataset, (c.get("model") or {}).get("name", "?"), self.label)


def _curves(records: list[dict]) -> tuple[list, dict]:
    eval_curve, gmp = [], defaultdict(list)
    for r in records:
        x = r.get("forward_epoch", r.get("epoch"))
        if x is None:
            continue
        if "eval/accuracy" in r:
            eval_curve.append((float(x), float(r["eval/accuracy"])))
        for k, v in r.items():
            if k.startswith("gmp_angle/"):
                gmp[k.split("/", 1)[1]].append((float(x), float(v)))
    return eval_curve, dict(gmp)


def collect(sweep_dir: str) -> list[RunRecord]:
    """Every ``<label>/seed_<s>`` workdir under ``sweep_dir``."""
    records = []
    for wd in sorted(glob.glob(os.path.join(sweep_dir, "*", "seed_*"))):
        label = os.path.basename(os.path.dirname(wd))
        seed = int(os.path.basename(wd).split("_", 1)[1])
        metrics = run_files.read_metrics(os.path.join(wd, run_files.METRICS))
        eval_curve, gmp = _curves(metrics)
        config = run_files.read_json(os.path.join(wd, run_files.CONFIG))
        records.append(
            RunRecord(
                label,
                seed,
                wd,
                run_files.read_results(wd),
                eval_curve,
                gmp,
                config if isinstance(config, dict) else None,
            )
        )
    return records


def merge(records: list[RunRecord], stored: list[RunRecord]) -> list[RunRecord]:
    """``records`` plus the ``stored`` runs whose (label, seed) they lack or have only unfinished."""
    by_run = {(r.label, r.seed): r for r in records}
    for r in stored:
        have = by_run.get((r.label, r.seed))
        if have is None or (r.complete and not have.complete):
            by_run[(r.label, r.seed)] = r
    return [by_run[k] for k in sorted(by_run)]


def keep_runs(records: list[RunRecord], store_dir: str) -> list[str]:
    """Copy each finished run's :data:`KEPT_FILES` to ``store_dir/<label>/seed_<s>/``.

    Files already stored with the same bytes are left as they are; returns the run folders that
    gained files.

    Raises:
      ValueError: a finished run's file differs from the one stored for the same label and seed
        (checked for every run before anything is copied, so the store is unchanged).
    """
    plan = []
    for r in records:
        if not r.complete:
            continue
        dst_dir = os.path.join(store_dir, r.label, f"seed_{r.seed}")
        if os.path.abspath(dst_dir) == os.path.abspath(r.workdir):
            continue  # the tables are drawn from the store itself
        for name in KEPT_FILES:
            src, dst = os.path.join(r.workdir, name), os.path.join(dst_dir, name)
            if not os.path.exists(src):
                continue
            if not os.path.exists(dst):
                plan.append((src, dst))
            elif not filecmp.cmp(src, dst, shallow=False):
                raise ValueError(
                    f"{src} differs from the stored {dst}: two different runs under one label and seed. "
                    "Nothing was copied; store this sweep under another --out, or rename one of the labels"
                )
    for src, dst in plan:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=os.path.dirname(dst))
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)  # whole or not at all
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    return sorted({os.path.dirname(dst) for _, dst in plan})


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def summarize(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per (dataset, model, label) over its complete runs (accuracies in percent)."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.complete:
            groups[r.key].append(r)
    rows = []
    for (dataset, model, label), runs in sorted(groups.items()):
        runs.sort(key=lambda r: r.seed)
        acc = [100 * r.results["final_test_accuracy"] for r in runs]
        top5 = [
            100 * r.results["final_test_top5_accuracy"]
            for r in runs
            if r.results.get("final_test_top5_accuracy") is not None
        ]
        mean, std = _mean_std(acc)
        t5_mean, t5_std = _mean_std(top5)
        paper = paper_results.lookup(dataset, model, label)
        hardware = sorted({_hardware_name(r.results) for r in runs})
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "label": label,
                "algorithm": runs[0].results["algorithm"],
                "seeds": len(runs),
                "seed_list": " ".join(str(r.seed) for r in runs),
                "accuracy_mean": mean,
                "accuracy_std": std,
                "accuracy_per_seed": " ".join(f"{a:.2f}" for a in acc),
                "top5_mean": t5_mean,
                "top5_std": t5_std,
                "forward_epochs": float(
                    np.mean([r.results.get("forward_epochs", r.results["epochs"]) for r in runs])
                ),
                "data_epochs": float(np.mean([r.results["epochs"] for r in runs])),
                "steps": int(np.mean([r.results["steps"] for r in runs])),
                "wall_time_s": float(np.mean([r.results["wall_time_s"] for r in runs])),
                "hardware": "; ".join(hardware),
                "paper_mean": paper[0] if paper else math.nan,
                "paper_std": paper[1] if paper and paper[1] is not None else math.nan,
                "paper_epochs": paper_results.EPOCHS.get((dataset, model, label), math.nan),
            }
        )
    return rows


def _hardware_name(results: dict) -> str:
    h = results.get("hardware") or {}
    if h.get("backend") == "cpu":
        return f"{h.get('cpu', 'CPU')} ({h.get('cpu_count', '?')} cores)"
    return f"{h.get('devices', '?')}× {h.get('device_kind', '?')}"


def gaps(records: list[RunRecord], reference: str = REFERENCE_LABEL) -> list[dict[str, Any]]:
    """Per (dataset, model): accuracy(reference) − accuracy(label) over the seeds both completed."""
    by_key: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in records:
        if r.complete:
            by_key[r.key][r.seed] = 100 * r.results["final_test_accuracy"]
    rows = []
    for (dataset, model, label), accs in sorted(by_key.items()):
        ref = by_key.get((dataset, model, reference))
        if label == reference or not ref:
            continue
        seeds = sorted(set(ref) & set(accs))
        diffs = [ref[s] - accs[s] for s in seeds]
        mean, std = _mean_std(diffs)
        p_ref, p_other = (
            paper_results.lookup(dataset, model, reference),
            paper_results.lookup(dataset, model, label),
        )
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "gap": f"{reference} - {label}",
                "seeds": len(seeds),
                "gap_mean": mean,
                "gap_std": std,
                "gap_per_seed": " ".join(f"{d:+.2f}" for d in diffs),
                "paper_gap": p_ref[0] - p_other[0] if p_ref and p_other else math.nan,
            }
        )
    return rows


def gmp_summary(records: list[RunRecord], include_unfinished: bool = False) -> list[dict[str, Any]]:
    """Per (dataset, model, label, layer): each complete run's median, max and last logged GMP
    angle over its training, then the mean over seeds (and the largest max of any seed), and the
    share of its logged angles above ``GMP_BOUND_DEG``, mean over seeds.

    ``include_unfinished``: also one row per unfinished run (label ``'<label> seed <s>
    (unfinished)'``), over what it logged. Non-finite angles (a diverged run) are left out of the
    median and max and counted in ``non_finite``; ``last`` is the last logged value as it is.
    """
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.complete and r.gmp_curves:
            groups[r.key].append(r)
        elif include_unfinished and not r.complete and r.gmp_curves:
            dataset, model, label = r.key
            groups[(dataset, model, f"{label} seed {r.seed} (unfinished)")].append(r)
    rows = []
    for (dataset, model, label), runs in sorted(groups.items()):
        layers: list[str] = []
        for r in runs:
            layers += [name for name in r.gmp_curves if name not in layers]
        for layer in layers:
            angles = [np.array([a for _, a in r.gmp_curves[layer]]) for r in runs if r.gmp_curves.get(layer)]
            finite = [a[np.isfinite(a)] for a in angles]
            if not all(f.size for f in finite):
                continue
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "label": label,
                    "layer": layer,
                    "seeds": len(angles),
                    "evaluations_per_run": int(np.mean([len(a) for a in angles])),
                    "median_deg": float(np.mean([np.median(f) for f in finite])),
                    "max_deg": float(np.mean([f.max() for f in finite])),
                    "max_any_seed_deg": float(max(f.max() for f in finite)),
                    "last_deg": float(np.mean([a[-1] for a in angles])),
                    "above_bound_pct": float(np.mean([100 * np.mean(f > GMP_BOUND_DEG) for f in finite])),
                    "non_finite": int(sum(a.size - f.size for a, f in zip(angles, finite, strict=True))),
                }
            )
    return rows


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def markdown(
    rows, gap_rows, incomplete: list[RunRecord], title: str, gmp_rows=(), unfinished_shown=False
) -> str:
    epochs = sorted({f"{r['forward_epochs']:g}" for r in rows})
    hardware = sorted({r["hardware"] for r in rows})
    lines = [
        f"## {title}",
        "",
        f"Generated by `python -m jdtp.tables` from the runs' `results.json` and `metrics.jsonl`. "
        f"Budget: {', '.join(epochs)} epoch(s) of forward training per run "
        f"(s-DDTP adds its feedback-only epochs), {', '.join(hardware) or '–'}. "
        "Mean ± sample std over seeds; the paper's numbers are after its own budget (last column).",
        "",
        "| dataset | model | algorithm | seeds | test accuracy % | top-5 % | forward epochs | steps | wall time per run | paper (epochs) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = _fmt(r["paper_mean"], r["paper_std"])
        if paper != "–":
            paper += f" ({r['paper_epochs']:g})"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['label']} | {r['seeds']} | "
            f"{_fmt(r['accuracy_mean'], r['accuracy_std'])} | {_fmt(r['top5_mean'], r['top5_std'])} | "
            f"{r['forward_epochs']:g} | {r['steps']} | {_duration(r['wall_time_s'])} | {paper} |"
        )
    if gap_rows:
        lines += [
            "",
            "Gaps at equal forward epochs (same seeds paired; per-seed values in `gaps.csv`):",
            "",
            "| dataset | gap | seeds | ours (points) | paper (points) |",
            "|---|---|---|---|---|",
        ]
        for g in gap_rows:
            paper = "–" if math.isnan(g["paper_gap"]) else f"{g['paper_gap']:+.2f}"
            lines.append(
                f"| {g['dataset']} | {g['gap']} | {g['seeds']} | {_fmt(g['gap_mean'], g['gap_std'])} | {paper} |"
            )
    if gmp_rows:
        lines += [
            "",
            "GMP angles over training (degrees between each update / its nudge and the BP gradient, every "
            "logged step of each run: median, largest, last and the share above the bound per run, mean over seeds; "
            "`gmp.csv`):",
            "",
            "| dataset | algorithm | layer | seeds | logged steps per run | median | max | max of any seed | last | "
            f"% of logged steps > {GMP_BOUND_DEG:g}° | non-finite |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for g in gmp_rows:
            lines.append(
                f"| {g['dataset']} | {g['label']} | {g['layer']} | {g['seeds']} | {g['evaluations_per_run']} | "
                f"{g['median_deg']:.1f} | {g['max_deg']:.1f} | {g['max_any_seed_deg']:.1f} | {g['last_deg']:.1f} | "
                f"{g['above_bound_pct']:.0f} | {g['non_finite']} |"
            )
    if incomplete:
        lines += [
            "",
            "Incomplete runs (not counted): " + ", ".join(f"{r.label} seed {r.seed}" for r in incomplete),
        ]
    if unfinished_shown:
        lines += [
            "",
            "Unfinished runs, as far as they got (drawn dashed in the figures, not in the means):",
            "",
        ]
        for r in incomplete:
            if r.eval_curve:
                epoch, acc = r.eval_curve[-1]
                trail = ", ".join(f"{100 * a:.1f} % at {e:.2f}" for e, a in r.eval_curve)
                lines.append(
                    f"- {r.label} seed {r.seed}: last evaluation {100 * acc:.2f} % at epoch {epoch:.2f} "
                    f"(test accuracy % at forward epochs: {trail})"
                )
            else:
                lines.append(f"- {r.label} seed {r.seed}: no evaluation yet")
    return "\n".join(lines) + "\n"


def _write_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        if not rows:
            return
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _band(curves: list[list[tuple[float, float]]]):
    """Mean and min/max over seeds at the x values all seeds share."""
    common = sorted(set.intersection(*[{round(x, 6) for x, _ in c} for c in curves])) if curves else []
    ys = np.array([[dict((round(x, 6), y) for x, y in c)[x] for x in common] for c in curves])
    return np.asarray(common), ys.mean(0), ys.min(0), ys.max(0)


def plot(records: list[RunRecord], out_dir: str, title: str, include_unfinished: bool = False) -> list[str]:
    plt = plotting.plt
    done = [r for r in records if r.complete]
    unfinished = [r for r in records if include_unfinished and not r.complete]
    labels = sorted({r.label for r in done})
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in labels:
        curves = [r.eval_curve for r in done if r.label == label and r.eval_curve]
        if not curves:
            continue
        x, mean, lo, hi = _band(curves)
        if x.size == 0:
            continue
        line = ax.plot(x, 100 * mean, marker="o", ms=3, label=f"{label} ({len(curves)} seeds)")[0]
        ax.fill_between(x, 100 * lo, 100 * hi, color=line.get_color(), alpha=0.2, lw=0)
    for r in unfinished:
        if r.eval_curve:
            x, acc = zip(*r.eval_curve, strict=True)
            ax.plot(
                x,
                100 * np.asarray(acc),
                ls="--",
                marker="x",
                ms=3,
                label=f"{r.label} seed {r.seed} (unfinished)",
            )
    ax.set_xlabel("epochs of forward training")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written.append(plotting.save_figure(fig, os.path.join(out_dir, "accuracy.png")))

    layers = []
    for r in done + unfinished:
        layers += [name for name in r.gmp_curves if name not in layers]
    if layers:
        fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.2), squeeze=False)
        for ax, layer in zip(axes[0], layers, strict=True):
            for label in labels:
                curves = [r.gmp_curves[layer] for r in done if r.label == label and layer in r.gmp_curves]
                if not curves:
                    continue
                x, mean, lo, hi = _band(curves)
                if x.size == 0:
                    continue
                line = ax.plot(x, mean, label=label, lw=1)[0]
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
            for r in unfinished:
                if r.gmp_curves.get(layer):
                    x, angle = zip(*r.gmp_curves[layer], strict=True)
                    ax.plot(x, angle, ls="--", lw=1, label=f"{r.label} seed {r.seed} (unfinished)")
            ax.set_title(layer, fontsize=9)
            ax.set_xlabel("epochs of forward training")
            ax.set_ylim(0, 180 if ax.dataLim.ymax > 100 else 100)  # above 90°: against the gradient
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("∠(update, BP gradient) (degrees)")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"{title}: per-layer GMP angle (mean over seeds, min-max band)", fontsize=9)
        written.append(plotting.save_figure(fig, os.path.join(out_dir, "gmp_angles.png")))
    return written


def make_tables(
    sweep_dir: str,
    out_dir: str,
    title: str | None = None,
    include_unfinished: bool = False,
    reference: str | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Write ``table.csv``, ``gaps.csv``, ``gmp.csv``, ``table.md`` and the PNGs; returns what was written.

    ``reference``: the label whose accuracy the gaps start from (``reference − label``); named, a
    label the sweep does not have is an error, not an empty gap table; ``None``: DTP's label, and
    a sweep without it has no gaps.
    ``keep``: first keep the finished runs in ``out_dir/runs`` (:func:`keep_runs`), then draw the
    tables from the sweep's runs and the stored ones together.
    """
    records = collect(sweep_dir)
    kept = []
    if keep:
        store = os.path.join(out_dir, RUNS_DIR)
        kept = keep_runs(records, store)
        records = merge(records, collect(store))
    if not records:
        raise FileNotFoundError(f"no <label>/seed_<s> workdirs under {sweep_dir}")
    labels = sorted({r.label for r in records})
    if reference is not None and reference not in labels:
        raise ValueError(f"--reference={reference!r} is not a label of {sweep_dir}; its labels are {labels}")
    title = title or os.path.basename(os.path.normpath(sweep_dir))
    rows, gap_rows = summarize(records), gaps(records, reference or REFERENCE_LABEL)
    incomplete = [r for r in records if not r.complete]
    os.makedirs(out_dir, exist_ok=True)
    _write_csv(os.path.join(out_dir, "table.csv"), rows)
    _write_csv(os.path.join(out_dir, "gaps.csv"), gap_rows)
    gmp_rows = gmp_summary(records, include_unfinished)
    _write_csv(os.path.join(out_dir, "gmp.csv"), gmp_rows)
    md = markdown(rows, gap_rows, incomplete, title, gmp_rows, include_unfinished and bool(incomplete))
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(md)
    pngs = plot(records, out_dir, title, include_unfinished)
    return {
        "rows": rows,
        "gaps": gap_rows,
        "gmp": gmp_rows,
        "incomplete": incomplete,
        "markdown": md,
        "pngs": pngs,
        "kept": kept,
    }


def main(argv):
    f = flags.FLAGS
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    out = f.out or os.path.join(f.sweep_dir, "tables")
    try:
        result = make_tables(
            f.sweep_dir, out, f.title or None, f.include_unfinished, f.reference or None, f.keep_runs
        )
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(result["markdown"])
    print(
        f"wrote {out}/table.csv, gaps.csv, gmp.csv, table.md, "
        + ", ".join(os.path.basename(p) for p in result["pngs"])
    )
    if f.keep_runs:
        print(f"kept {len(result['kept'])} finished run(s) newly in {os.path.join(out, RUNS_DIR)}")


def _define_flags():
    flags.DEFINE_string("sweep_dir", None, "Sweep directory (jdtp.sweep --dir).", required=True)
    flags.DEFINE_string("out", "", "Output folder (default: <sweep_dir>/tables).")
    flags.DEFINE_string("title", "", "Title of the table and plots (default: the sweep folder's name).")
    flags.DEFINE_string(
        "reference",
        "",
        f"The label the gaps are measured from (gap = reference - label; default {REFERENCE_LABEL!r}).",
    )
    flags.DEFINE_bool(
        "include_unfinished",
        False,
        "Also draw unfinished runs (dashed) and list how far they got, with their GMP angles "
        "(never in the means and gaps).",
    )
    flags.DEFINE_bool(
        "keep_runs",
        False,
        "Keep each finished run's config, results and metrics in <out>/runs (never replacing a "
        "different stored file) and draw the tables from those and the sweep's runs together.",
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
