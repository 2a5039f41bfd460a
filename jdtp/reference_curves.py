"""Learning curves of jdtp beside the authors' own training, at equal steps on the same data.

    python -m jdtp.reference_curves --ref_bench=../shared/tools/reference_bench --ref_env=DEST \\
        --data_dir=/path/to/tfds [--seeds=0,1,2] [--algos=dtp,bp] [--epochs=1] [--parallel=2]

Runs, resumably and side by side:

* jdtp: the Fashion-MNIST runs of a sweep (default ``configs/sweeps/table1_fmnist.py``, labels
  ``dtp`` and ``bp``) through ``jdtp.sweep``, in ``--sweep_dir``; the curves read their
  ``metrics.jsonl`` (test accuracy every ``steps_per_epoch // evals_per_epoch`` steps);
* the authors' code: the reference bench's ``ref_train.py`` (their ``DTP`` / ``BaselineModel``,
  optimizers, training step and preprocessing; it lives outside this project and its
  dependencies, set up by the bench's ``setup.sh`` in ``--ref_env``), one process per algorithm
  and seed, on the same images exported from the same TFDS files, for the same number of steps
  with the same batch size, K and evaluation steps. A finished reference run is never rerun; an
  interrupted one restarts (the authors' loop cannot resume).

Every run of either implementation that has reached the last compared evaluation is kept in
``--store`` (default ``OUT/runs``: its test-accuracy curve and the setting it ran with, one small
JSON file per implementation, algorithm and seed, never overwritten) and is not run again, so a
comparison too long for one machine session accumulates over sessions from a committed store,
and the figure and summaries always cover every stored run of every algorithm, whatever
``--algos`` and ``--seeds`` this invocation runs.

Then it draws, per algorithm, both implementations' test accuracy against the step (mean and
min-max band over seeds) and the gap jdtp − authors at each common evaluation (difference of
the means, band ±2 standard errors), and writes ``curves.png``, ``summary.json`` and
``table.md`` to ``--out``. Seeds are seed numbers in each implementation's own generators (JAX
vs. torch): the comparison is between seed distributions, not seed by seed.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags

from jdtp import config_base, datasets, plotting, run_files, sweep

DEFAULT_SWEEP = "configs/sweeps/table1_fmnist.py"
ALGOS = ("dtp", "bp")  # the reference bench trains these two


def _run_config(run: sweep.Run):
    config = config_base.load_config_file(*_split_variant(run.config))
    for key, value in run.overrides:
        config_base.set_dotted(config, key, value)
    return config


def _split_variant(spec: str) -> tuple[str, str]:
    path, _, variant = spec.partition(":")
    return path, variant


def reference_plan(runs: Sequence[sweep.Run], epochs: float, num_train: int) -> dict[str, dict[str, Any]]:
    """Per algorithm: batch size, K, steps and evaluation interval of the matching jdtp runs.

    Raises:
      config_base.ConfigError: a run is not on Fashion-MNIST (the bench's only dataset), or the
        seeds of one algorithm disagree on a setting.
    """
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        c = _run_config(run)
        config_base.cc.check(
            c.data.name == "fashion_mnist",
            f"{run.config}: the reference bench trains Fashion-MNIST only, this run uses {c.data.name!r}",
        )
        batch = int(c.data.batch_size)
        spe = num_train // batch  # jdtp drops the last partial batch (jdtp.batching.steps_per_epoch)
        every = max(1, spe // int(c.evals_per_epoch))
        entry = {
            "batch": batch,
            "steps_per_epoch": spe,
            "steps": int(round(epochs * spe)),
            "eval_every": every,
            "k": list(c.dtp.num_fb_iters) if run.label == "dtp" else None,
        }
        prev = out.setdefault(run.label, entry)
        config_base.cc.check(
            prev == entry, f"{run.label}: seeds differ in their settings ({prev} vs {entry})"
        )
    return out


def export_npz(path: str, data_dir: str) -> None:
    """Fashion-MNIST train and test as the uint8 NHWC arrays the bench reads (written atomically)."""
    if os.path.exists(path):
        return
    xtr, ytr = datasets.load_split("fashion_mnist", "train", data_dir, download=False)
    xte, yte = datasets.load_split("fashion_mnist", "test", data_dir, download=False)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
    os.replace(tmp, path)


def ref_json(work: str, algo: str, seed: int) -> str:
    return os.path.join(work, "reference", algo, f"seed_{seed}.json")


def read_ref(path: str) -> list[dict] | None:
    data = run_files.read_json(path)
    return None if data is None else data["records"]


def last_eval_step(setting: dict) -> int:
    """The last compared evaluation (both implementations evaluate every ``eval_every`` steps)."""
    return setting["steps"] - setting["steps"] % setting["eval_every"]


def ref_complete(path: str, setting: dict) -> bool:
    """The reference run evaluated at its last evaluation step."""
    recs = read_ref(path)
    return bool(recs) and recs[-1]["step"] >= last_eval_step(setting)


def stored_path(store: str, impl: str, algo: str, seed: int) -> str:
    return os.path.join(store, f"{impl}_{algo}_seed{seed}.json")


def read_stored(store: str, impl: str, algo: str, seed: int, setting: dict) -> list[dict] | None:
    """The stored curve ``[{step, test_acc}]`` of one run, or None when the store has none.

    Raises:
      config_base.ConfigError: the stored run was made with another setting (batch, steps, K or
        evaluation interval) than the one compared now.
    """
    path = stored_path(store, impl, algo, seed)
    data = run_files.read_json(path)
    if data is None:
        return None
    config_base.cc.check(
        data.get("setting") == setting,
        f"{path}: stored with {data.get('setting')}, this comparison plans {setting}; "
        "compare into another --store (stored runs are never overwritten)",
    )
    return data["records"]


def store_run(store: str, impl: str, algo: str, seed: int, setting: dict, records, source: str) -> bool:
    """Keep a finished curve in the store; an existing stored run is never replaced."""
    path = stored_path(store, impl, algo, seed)
    if os.path.exists(path):
        return False
    os.makedirs(store, exist_ok=True)
    data = {
        "implementation": impl,
        "algo": algo,
        "seed": seed,
        "setting": setting,
        "source": source,
        "records": [{"step": int(r["step"]), "test_acc": float(r["test_acc"])} for r in records],
    }
    run_files.write_json_atomic(path, data)
    return True


def _jdtp_records(run: sweep.Run, setting: dict) -> list[dict]:
    return [{"step": s, "test_acc": a} for s, a in jdtp_curve(run.workdir, setting["steps"])]


def _reached(records: list[dict] | None, setting: dict) -> bool:
    return bool(records) and max(r["step"] for r in records) >= last_eval_step(setting)


def store_finished(args, runs, plan, seeds) -> list[str]:
    """Store every run of either implementation that has reached its last compared evaluation."""
    added = []
    for algo, setting in plan.items():
        for run in runs:
            if run.label == algo and read_stored(args.store, "jdtp", algo, run.seed, setting) is None:
                recs = _jdtp_records(run, setting)
                if _reached(recs, setting) and store_run(
                    args.store, "jdtp", algo, run.seed, setting, recs, run.workdir
                ):
                    added.append(stored_path(args.store, "jdtp", algo, run.seed))
        for seed in seeds:
            final = ref_json(args.work, algo, seed)
            if read_stored(args.store, "authors", algo, seed, setting) is None and ref_complete(
                final, setting
            ):
                if store_run(args.store, "authors", algo, seed, setting, read_ref(final), final):
                    added.append(stored_path(args.store, "authors", algo, seed))
    return added


_STORED_NAME = re.compile(r"(jdtp|authors)_([a-z]+)_seed(\d+)\.json")


def stored_seeds(store: str) -> set[int]:
    """The seeds of every run in the store, of either implementation and any algorithm."""
    if not os.path.isdir(store):
        return set()
    return {int(m.group(3)) for m in map(_STORED_NAME.fullmatch, os.listdir(store)) if m}


def drawn(args, sweep_def) -> tuple[Any, list[sweep.Run], dict[str, dict[str, Any]]]:
    """What the figure and summaries cover: every algorithm of the bench in the sweep, and every
    seed asked for or stored, whatever this invocation runs (``--algos``, ``--seeds``).

    So adding one algorithm's seed to the store never drops the others from ``curves.png``,
    ``summary.json`` and ``table.md``.

    Returns:
      ``args`` with ``seeds`` widened to the drawn seeds, the drawn jdtp runs, and their plan.

    Raises:
      config_base.ConfigError: a stored run was made with another setting.
    """
    labels = {r["label"] for r in sweep_def.runs}
    seeds = sorted(set(args.seeds) | stored_seeds(args.store))
    runs = sweep.plan(
        sweep_def,
        args.sweep_dir,
        extra_overrides=config_base.parse_assignments(args.set),
        seeds=seeds,
        only=[a for a in ALGOS if a in labels],
    )
    plan = reference_plan(runs, args.epochs, num_train=datasets.DATASETS["fashion_mnist"].train_size)
    for algo, setting in plan.items():
        for seed in seeds:
            for impl in ("jdtp", "authors"):
                read_stored(args.store, impl, algo, seed, setting)
    return types.SimpleNamespace(**{**vars(args), "seeds": seeds}), runs, plan


def ref_command(args, algo: str, seed: int, setting: dict, npz: str, out: str) -> list[str]:
    cmd = [
        os.path.join(args.ref_env, "venv", "bin", "python"),
        os.path.join(args.ref_bench, "ref_train.py"),
        f"--data={npz}",
        f"--algo={algo}",
        f"--seed={seed}",
        f"--steps={setting['steps']}",
        f"--batch={setting['batch']}",
        f"--eval_every={setting['eval_every']}",
        f"--threads={args.ref_threads}",
        f"--out={out}",
    ]
    if setting["k"]:
        cmd += ["--k", *[str(k) for k in setting["k"]]]
    return cmd


def jdtp_curve(workdir: str, max_step: int) -> list[tuple[int, float]]:
    """``(step, test accuracy)`` of a jdtp run up to ``max_step`` (the evaluation records)."""
    path = os.path.join(workdir, run_files.METRICS)
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line
            if "eval/accuracy" in rec and rec["step"] <= max_step:
                out.append((int(rec["step"]), float(rec["eval/accuracy"])))
    return out


def summarise(curves: dict[str, dict[int, dict[int, float]]]) -> list[dict[str, Any]]:
    """Rows per common evaluation step: means, sample stds and seeds of both, and the gap."""
    steps = sorted(set.intersection(*(set(s) for s in curves.values())) if curves else set())
    rows = []
    for step in steps:
        row: dict[str, Any] = {"step": step}
        for impl, by_step in curves.items():
            v = np.asarray(list(by_step[step].values()), np.float64)
            row[impl] = {
                "mean": float(v.mean()),
                "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                "min": float(v.min()),
                "max": float(v.max()),
                "seeds": int(v.size),
            }
        if {"jdtp", "authors"} <= set(row):
            a, b = row["jdtp"], row["authors"]
            se = math.sqrt(a["std"] ** 2 / a["seeds"] + b["std"] ** 2 / b["seeds"])
            row["gap"] = {"mean": a["mean"] - b["mean"], "se": se}
        rows.append(row)
    return rows


def collect(args, runs, plan, seeds) -> dict[str, dict[str, dict[int, dict[int, float]]]]:
    """``{algo: {impl: {step: {seed: accuracy}}}}`` of the finished evaluations so far.

    jdtp's runs count with every evaluation they have logged; a reference run counts once it is
    complete, or, with ``args.include_unfinished``, with the evaluations its unfinished run has
    written so far (``seed_N.partial.json``).
    """
    out: dict[str, dict[str, dict[int, dict[int, float]]]] = {}
    for algo, setting in plan.items():
        by_impl: dict[str, dict[int, dict[int, float]]] = {"jdtp": {}, "authors": {}}
        for run in runs:
            if run.label == algo:
                recs = read_stored(args.store, "jdtp", algo, run.seed, setting)
                for rec in recs if recs is not None else _jdtp_records(run, setting):
                    by_impl["jdtp"].setdefault(int(rec["step"]), {})[run.seed] = float(rec["test_acc"])
        for seed in seeds:
            final = ref_json(args.work, algo, seed)
            recs = read_stored(args.store, "authors", algo, seed, setting)
            if recs is None:
                recs = read_ref(final)
            if recs is None and getattr(args, "include_unfinished", False):
                recs = read_ref(final.replace(".json", ".partial.json"))
            for rec in recs or []:
                by_impl["authors"].setdefault(int(rec["step"]), {})[seed] = float(rec["test_acc"])
        out[algo] = by_impl
    return out


def seed_label(impl: str, seeds_per_step: dict[int, int]) -> str:
    """Legend entry naming how many seeds each part of a curve averages (unfinished runs have fewer later)."""
    most = max(seeds_per_step.values())
    if min(seeds_per_step.values()) == most:
        return f"{impl} ({most} seeds)"
    last = max(step for step, n in seeds_per_step.items() if n == most)
    return f"{impl} ({most} seeds to step {last}, fewer after)"


def plot(curves, rows_by_algo, path: str, title: str) -> None:
    plt = plotting.plt
    algos = list(curves)
    fig, axes = plt.subplots(2, len(algos), figsize=(6 * len(algos), 7), squeeze=False, sharex="col")
    colours = {"jdtp": "tab:blue", "authors": "tab:orange"}
    for j, algo in enumerate(algos):
        ax = axes[0, j]
        for impl, by_step in curves[algo].items():
            steps = sorted(by_step)
            if not steps:
                continue
            vals = [np.asarray(list(by_step[s].values())) * 100 for s in steps]
            label = seed_label(impl, {s: len(by_step[s]) for s in steps})
            ax.plot(steps, [v.mean() for v in vals], color=colours[impl], label=label)
            ax.fill_between(
                steps, [v.min() for v in vals], [v.max() for v in vals], color=colours[impl], alpha=0.2
            )
        ax.set_title(f"{algo.upper()}: test accuracy (mean, min-max band)")
        ax.set_ylabel("test accuracy %")
        ax.grid(alpha=0.3)
        ax.legend()
        gx = axes[1, j]
        rows = [r for r in rows_by_algo[algo] if "gap" in r]
        if rows:
            s = [r["step"] for r in rows]
            g = np.array([r["gap"]["mean"] for r in rows]) * 100
            se = np.array([r["gap"]["se"] for r in rows]) * 100
            gx.plot(s, g, color="black", marker=".")
            gx.fill_between(s, g - 2 * se, g + 2 * se, color="grey", alpha=0.3, label="±2 standard errors")
            gx.axhline(0, color="grey", lw=0.8)
            gx.legend()
        gx.set_title(f"{algo.upper()}: gap jdtp − authors (points)")
        gx.set_xlabel("training step")
        gx.grid(alpha=0.3)
    fig.suptitle(title)
    plotting.save_figure(fig, path, dpi=110)


def write_outputs(args, curves, plan) -> dict:
    rows = {algo: summarise(by_impl) for algo, by_impl in curves.items()}
    os.makedirs(args.out, exist_ok=True)
    summary = {"settings": plan, "seeds": list(args.seeds), "sweep_dir": args.sweep_dir, "rows": rows}
    run_files.write_json_atomic(os.path.join(args.out, "summary.json"), summary)
    lines = []
    for algo, algo_rows in rows.items():
        setting = plan[algo]
        lines.append(
            f"### {algo.upper()} (batch {setting['batch']}, {setting['steps_per_epoch']} steps per epoch)"
        )
        lines.append("")
        lines.append(
            "| step | epoch | jdtp % (mean ± std, seeds) | authors % (mean ± std, seeds) | gap (points, ±2 SE) |"
        )
        lines.append("|---|---|---|---|---|")
        for r in algo_rows:
            if "gap" not in r:
                continue
            j, a, g = r["jdtp"], r["authors"], r["gap"]
            lines.append(
                f"| {r['step']} | {r['step'] / setting['steps_per_epoch']:.2f} "
                f"| {100 * j['mean']:.2f} ± {100 * j['std']:.2f} ({j['seeds']}) "
                f"| {100 * a['mean']:.2f} ± {100 * a['std']:.2f} ({a['seeds']}) "
                f"| {100 * g['mean']:+.2f} ± {200 * g['se']:.2f} |"
            )
        lines.append("")
    tmp = os.path.join(args.out, "table.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, os.path.join(args.out, "table.md"))
    title = "Fashion-MNIST LeNet: jdtp beside the authors' code at equal steps"
    if getattr(args, "include_unfinished", False):
        title += " (unfinished runs included: seeds per step in table.md)"
    plot(curves, rows, os.path.join(args.out, "curves.png"), title)
    return summary


def _launch(cmd: list[str], log_path: str, env: dict | None = None) -> subprocess.Popen:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    log = open(log_path, "a")
    log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
    log.flush()
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def run_all(args, runs, plan) -> int:
    """Run the pending jdtp seeds (one sweep process per algorithm) and reference runs, ``args.parallel`` at a time."""
    jobs: list[tuple[str, list[str], dict | None, Any]] = []
    for algo, setting in plan.items():
        pending = [
            run.seed
            for run in runs
            if run.label == algo
            and read_stored(args.store, "jdtp", algo, run.seed, setting) is None
            and not _reached(_jdtp_records(run, setting), setting)
        ]
        if pending:  # one sweep per algorithm, so that a stored run is not run again for another
            cmd = [sys.executable, "-m", "jdtp.sweep", f"--sweep={args.sweep}", f"--dir={args.sweep_dir}"]
            cmd += [f"--only={algo}", f"--seeds={','.join(str(s) for s in pending)}"]
            cmd += [f"--set={kv}" for kv in args.set]
            jobs.append((f"jdtp {algo} sweep", cmd, None, None))
    npz = os.path.join(args.work, "fashion_mnist.npz")
    for algo, setting in plan.items():
        for seed in args.seeds:
            final = ref_json(args.work, algo, seed)
            if read_stored(args.store, "authors", algo, seed, setting) is not None or ref_complete(
                final, setting
            ):
                print(f"[curves] authors' {algo} seed {seed}: complete, skipped", flush=True)
                continue
            if not os.path.exists(npz):
                export_npz(npz, args.data_dir)
            partial = final.replace(".json", ".partial.json")
            os.makedirs(os.path.dirname(final), exist_ok=True)
            env = {**os.environ, "REF_DIR": os.path.join(args.ref_env, "ref")}
            cmd = ref_command(args, algo, seed, setting, npz, partial)
            jobs.append((f"authors' {algo} seed {seed}", cmd, env, (partial, final, setting)))
    active: list[tuple[str, subprocess.Popen, Any]] = []
    stop = {"requested": False}

    def _stop(signum, frame):
        stop["requested"] = True
        for _, proc, _ in active:
            proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    failed = 0
    try:
        while (jobs and not stop["requested"]) or active:
            while jobs and len(active) < max(1, args.parallel) and not stop["requested"]:
                name, cmd, env, ref = jobs.pop(0)
                log = os.path.join(args.work, "logs", name.replace(" ", "_").replace("'", "") + ".txt")
                active.append((name, _launch(cmd, log, env), ref))
                print(f"[curves] {name}: started (log {log})", flush=True)
            time.sleep(2.0)
            for item in list(active):
                name, proc, ref = item
                rc = proc.poll()
                if rc is None:
                    continue
                active.remove(item)
                if ref is not None and rc == 0 and ref_complete(ref[0], ref[2]):
                    os.replace(ref[0], ref[1])  # a finished reference run, never rerun
                store_finished(args, runs, plan, args.seeds)
                ok = rc == 0
                failed += 0 if ok or stop["requested"] else 1
                print(f"[curves] {name}: {'done' if ok else f'exit {rc}'}", flush=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stop["requested"]:
        return 3
    return 1 if failed else 0


def main(argv):
    flags_ = flags.FLAGS
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    f = types.SimpleNamespace(**{name: flags_[name].value for name in _FLAG_NAMES})
    f.seeds = [int(s) for s in f.seeds]
    f.store = f.store or os.path.join(f.out, "runs")
    try:
        unknown = set(f.algos) - set(ALGOS)
        config_base.cc.check(not unknown, f"--algos: {sorted(unknown)} unknown; the bench trains {ALGOS}")
        sweep_def = sweep.load_sweep(f.sweep)
        runs = sweep.plan(
            sweep_def,
            f.sweep_dir,
            extra_overrides=config_base.parse_assignments(f.set),
            seeds=f.seeds,
            only=f.algos,
        )
        plan = reference_plan(runs, f.epochs, num_train=datasets.DATASETS["fashion_mnist"].train_size)
        drawn(f, sweep_def)  # a store made with other settings fails here, before any run
    except config_base.ConfigError as e:
        sys.exit(f"error: {e}")
    rc = 0
    if not f.plot_only:
        for what, path in (
            ("--ref_bench", os.path.join(f.ref_bench, "ref_train.py")),
            ("--ref_env", os.path.join(f.ref_env, "venv", "bin", "python")),
        ):
            if not os.path.exists(path):
                sys.exit(
                    f"error: {what}: {path} not found (the reference bench's ref_train.py and setup.sh folder)"
                )
        rc = run_all(f, runs, plan)
    for path in store_finished(f, runs, plan, f.seeds):
        print(f"[curves] stored {path}", flush=True)
    d_args, d_runs, d_plan = drawn(f, sweep_def)
    summary = write_outputs(d_args, collect(d_args, d_runs, d_plan, d_args.seeds), d_plan)
    if rc:
        sys.exit(rc)
    for algo, rows in summary["rows"].items():
        last = next((r for r in reversed(rows) if "gap" in r), None)
        if last:
            print(
                f"[curves] {algo} at step {last['step']}: jdtp {100 * last['jdtp']['mean']:.2f} % "
                f"({last['jdtp']['seeds']} seeds), authors {100 * last['authors']['mean']:.2f} % "
                f"({last['authors']['seeds']} seeds), gap {100 * last['gap']['mean']:+.2f} points",
                flush=True,
            )
    print(f"[curves] wrote {f.out}/curves.png, summary.json, table.md", flush=True)


_FLAG_NAMES = (
    "ref_bench",
    "ref_env",
    "data_dir",
    "sweep",
    "sweep_dir",
    "set",
    "work",
    "out",
    "algos",
    "seeds",
    "epochs",
    "parallel",
    "ref_threads",
    "plot_only",
    "include_unfinished",
    "store",
)


def _define_flags():
    flags.DEFINE_string(
        "ref_bench", "../shared/tools/reference_bench", "Folder with the bench's ref_train.py."
    )
    flags.DEFINE_string("ref_env", None, "Folder the bench's setup.sh prepared (ref/ and venv/).")
    flags.DEFINE_string("data_dir", None, "TFDS data_dir holding fashion_mnist.")
    flags.DEFINE_string("sweep", DEFAULT_SWEEP, "Sweep file whose dtp/bp runs are jdtp's side.")
    flags.DEFINE_string("sweep_dir", "results/sweeps/table1_fmnist", "That sweep's directory.")
    flags.DEFINE_multi_string("set", [], "KEY=VALUE override for the jdtp runs (as jdtp.sweep --set).")
    flags.DEFINE_string("work", "results/reference_curves", "Exported data, reference runs and logs.")
    flags.DEFINE_string("out", "docs/results/reference_curves", "Figure, summary.json and table.md.")
    flags.DEFINE_string(
        "store",
        None,
        "Finished runs' curves, kept and never rerun (default: OUT/runs; commit it to resume later).",
    )
    flags.DEFINE_list("algos", list(ALGOS), "Algorithms to compare (dtp, bp).")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of both implementations.")
    flags.DEFINE_float("epochs", 1.0, "Epochs of jdtp's steps per epoch to compare.")
    flags.DEFINE_integer("parallel", 2, "Processes at a time (each algorithm's jdtp sweep counts as one).")
    flags.DEFINE_integer("ref_threads", 1, "torch threads per reference run.")
    flags.DEFINE_bool("plot_only", False, "Only draw and summarise what has finished.")
    flags.DEFINE_bool(
        "include_unfinished",
        False,
        "Also draw the evaluations of unfinished runs (the authors' partial files; jdtp's always count).",
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
