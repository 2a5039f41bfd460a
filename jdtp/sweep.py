"""Sweeps: run a declared set of (config, overrides, seed) runs, each in its own workdir, resumably.

    python -m jdtp.sweep --sweep=configs/sweeps/table1_mnist.py --dir=results/sweeps/table1_mnist \\
        [--set=data.data_dir=/path/to/tfds] [--parallel=N] [--only=dtp,bp] [--seeds=0,1,2]
    python -m jdtp.sweep --sweep=... --dir=... --print_commands > commands.txt   # one line per run

A sweep file (``configs/sweeps/*.py``) defines ``get_config()`` returning an ml-collections
config with ``runs`` (a list of ``{label, config, overrides}``: ``config`` is an experiment file
with optional ``:variant``), ``seeds`` and ``overrides`` applied to every run (nested dicts,
e.g. ``{'data': {'download': False}}``; ``--set`` takes dotted keys). Run
``label`` with seed ``s`` trains in ``DIR/<label>/seed_<s>`` through ``python -m jdtp.main``, so a
sweep is exactly a list of ordinary runs:

* a run whose workdir holds a complete result is skipped (and never rewritten);
* an interrupted run resumes from its last checkpoint (the run loop's own resume);
* ``--parallel=N`` runs N at once (on a small CPU they share the cores: see the README);
* a failed run is reported at the end and the sweep exits non-zero; the others still run;
* SIGTERM or Ctrl-C stops the running runs cleanly (each saves a checkpoint); rerun to continue.

``--print_commands`` prints one shell command per pending run instead, for a cluster
(``launch/slurm_sweep.sbatch`` runs line ``$SLURM_ARRAY_TASK_ID`` of such a file).
``python -m jdtp.tables`` turns the finished sweep into tables and plots.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import app, flags

from jdtp import config_base, run_files

SWEEP_FILE = "sweep.json"


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep."""

    label: str
    config: str  # path[:variant]
    seed: int
    overrides: tuple[tuple[str, Any], ...]
    workdir: str

    def command(self, python: str = sys.executable) -> list[str]:
        args = [python, "-m", "jdtp.main", f"--config={self.config}", f"--workdir={self.workdir}"]
        args.append(f"--config.seed={self.seed}")
        args += [f"--config.{k}={format_value(v)}" for k, v in self.overrides]
        return args

    def status(self) -> str:
        """'complete', 'partial' (has checkpoints: will resume) or 'new'."""
        if run_files.read_results(self.workdir) is not None:
            return "complete"
        ckpt = os.path.join(self.workdir, "checkpoints")
        if os.path.isdir(ckpt) and any(name.isdigit() for name in os.listdir(ckpt)):
            return "partial"
        return "new"


def format_value(v: Any) -> str:
    """A value as ``--config.KEY=VALUE`` parses it back (tuples as ``(a,b)``)."""
    if isinstance(v, tuple | list):
        inner = ",".join(format_value(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    return str(v)


def _dotted(overrides) -> dict[str, Any]:
    """Nested override dicts (``{'data': {'download': False}}``) as dotted keys."""
    if not overrides:
        return {}
    if isinstance(overrides, ml_collections.ConfigDict):
        overrides = overrides.to_dict()
    return run_files.flatten(dict(overrides))


def table1(dataset: str, seeds=(0, 1, 2), num_epochs: int = 3) -> ml_collections.ConfigDict:
    """The sweep of paper Table 1's LeNet rows on ``dataset`` (``mnist`` or ``fmnist``).

    BP, DTP (L-DRL), s-DDTP and p-DDTP with the experiment files' hyperparameters, every run
    evaluated 16 times per epoch (learning curves, and the steps ``jdtp.reference_curves``
    compares with the authors' training) and logging its GMP angles every 50 steps.
    """
    c = ml_collections.ConfigDict()
    c.seeds = tuple(seeds)
    c.overrides = {
        "num_epochs": num_epochs,
        "data": {"download": False},
        "gmp_every_steps": 50,  # angle between each algorithm's update and the BP gradient
        "evals_per_epoch": 16,
    }
    c.runs = [
        {"label": "bp", "config": f"configs/lenet_{dataset}.py:bp"},
        {"label": "dtp", "config": f"configs/lenet_{dataset}.py"},
        {"label": "s-ddtp", "config": f"configs/ddtp_{dataset}.py"},
        {"label": "p-ddtp", "config": f"configs/ddtp_{dataset}.py:p"},
    ]
    return c


def load_sweep(path: str) -> ml_collections.ConfigDict:
    sweep = config_base.load_config_file(path)
    for key in ("runs", "seeds"):
        config_base.cc.check(key in sweep, f"sweep file {path}: missing {key!r}")
    labels = [r["label"] for r in sweep.runs]
    config_base.cc.check(len(set(labels)) == len(labels), f"sweep file {path}: duplicate labels {labels}")
    return sweep


def plan(
    sweep: ml_collections.ConfigDict,
    directory: str,
    *,
    extra_overrides: dict[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    only: Sequence[str] | None = None,
) -> list[Run]:
    """The runs of a sweep, seed-major (every label gets its first seed before any gets a second)."""
    base_dir = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(base_dir)
    common = {**_dotted(sweep.get("overrides")), **(extra_overrides or {})}
    runs = []
    labels = [r["label"] for r in sweep.runs]
    unknown = set(only or ()) - set(labels)
    config_base.cc.check(not unknown, f"--only: unknown label(s) {sorted(unknown)}; the sweep has {labels}")
    for seed in seeds if seeds is not None else tuple(sweep.seeds):
        for r in sweep.runs:
            if only and r["label"] not in only:
                continue
            config = r["config"]
            path = config.split(":", 1)[0]
            if not os.path.isabs(path) and not os.path.exists(path):
                config = os.path.join(repo, config)  # relative to the repository
            overrides = {**common, **_dotted(r.get("overrides"))}
            workdir = os.path.join(os.path.abspath(directory), r["label"], f"seed_{int(seed)}")
            runs.append(Run(r["label"], config, int(seed), tuple(sorted(overrides.items())), workdir))
    return runs


def _describe(run: Run) -> str:
    return f"{run.label} seed {run.seed}"


def execute(runs: Sequence[Run], parallel: int = 1, poll_s: float = 2.0) -> dict[str, list[Run]]:
    """Run the pending runs, ``parallel`` at a time; returns runs by outcome."""
    outcome: dict[str, list[Run]] = {"skipped": [], "done": [], "failed": [], "stopped": []}
    pending = []
    for run in runs:
        if run.status() == "complete":
            outcome["skipped"].append(run)
            print(f"[sweep] {_describe(run)}: complete, skipped ({run.workdir})", flush=True)
        else:
            pending.append(run)
    active: list[tuple[Run, subprocess.Popen, float, Any]] = []
    stop = {"requested": False}

    def _stop(signum, frame):
        stop["requested"] = True
        for _, proc, _, _ in active:
            proc.send_signal(signal.SIGTERM)  # each run saves a checkpoint and exits

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    total = len(pending)
    started = 0
    try:
        while (pending and not stop["requested"]) or active:
            while pending and len(active) < max(1, parallel) and not stop["requested"]:
                run = pending.pop(0)
                started += 1
                os.makedirs(run.workdir, exist_ok=True)
                log = open(os.path.join(run.workdir, "log.txt"), "a")
                log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(run.command())}\n")
                log.flush()
                status = run.status()
                proc = subprocess.Popen(run.command(), stdout=log, stderr=subprocess.STDOUT)
                active.append((run, proc, time.time(), log))
                print(
                    f"[sweep] {started}/{total} {_describe(run)}: started ({status}) -> {run.workdir}",
                    flush=True,
                )
            time.sleep(poll_s)
            for item in list(active):
                run, proc, t0, log = item
                rc = proc.poll()
                if rc is None:
                    continue
                active.remove(item)
                log.close()
                elapsed = time.time() - t0
                result = run_files.read_results(run.workdir)
                if rc == 0 and result is not None:
                    outcome["done"].append(run)
                    print(
                        f"[sweep] {_describe(run)}: done in {elapsed:.0f} s, final "
                        f"{result['eval_set']} accuracy {result['final_test_accuracy']:.4f}",
                        flush=True,
                    )
                elif stop["requested"] or rc not in (0, 1):
                    outcome["stopped"].append(run)
                    print(
                        f"[sweep] {_describe(run)}: stopped (exit {rc}); rerun the sweep to resume",
                        flush=True,
                    )
                else:
                    outcome["failed"].append(run)
                    print(
                        f"[sweep] {_describe(run)}: FAILED (exit {rc}); see {run.workdir}/log.txt", flush=True
                    )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    outcome["stopped"] += pending
    return outcome


def main(argv):
    f = flags.FLAGS
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}")
    try:
        sweep = load_sweep(f.sweep)
        runs = plan(
            sweep,
            f.dir,
            extra_overrides=config_base.parse_assignments(f.set),
            seeds=[int(s) for s in f.seeds] if f.seeds else None,
            only=f.only or None,
        )
    except config_base.ConfigError as e:
        sys.exit(f"error: {e}")
    if f.print_commands:
        try:
            for run in runs:
                if run.status() != "complete":
                    print(shlex.join(run.command("python")), flush=True)
        except BrokenPipeError:  # the reader stopped early (``| head``): not an error of the sweep
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return
    os.makedirs(f.dir, exist_ok=True)
    manifest = {
        "sweep_file": os.path.abspath(f.sweep),
        "sweep": sweep.to_dict(),
        "runs": [
            {
                "label": r.label,
                "config": r.config,
                "seed": r.seed,
                "overrides": dict(r.overrides),
                "workdir": r.workdir,
            }
            for r in runs
        ],
    }
    run_files.write_json_atomic(os.path.join(f.dir, SWEEP_FILE), manifest)
    t0 = time.time()
    out = execute(runs, f.parallel)
    print(
        f"[sweep] {len(out['done'])} done, {len(out['skipped'])} already complete, {len(out['stopped'])} stopped, "
        f"{len(out['failed'])} failed in {time.time() - t0:.0f} s. Tables: python -m jdtp.tables --sweep_dir={f.dir}",
        flush=True,
    )
    if out["failed"]:
        sys.exit(1)
    if out["stopped"]:
        sys.exit(3)


def _define_flags():
    flags.DEFINE_string("sweep", None, "Sweep file (configs/sweeps/*.py).", required=True)
    flags.DEFINE_string("dir", None, "Sweep directory (one workdir per run inside).", required=True)
    flags.DEFINE_multi_string("set", [], "KEY=VALUE config override for every run (repeatable).")
    flags.DEFINE_list("seeds", [], "Seeds to run instead of the sweep file's.")
    flags.DEFINE_list("only", [], "Labels to run (default: all).")
    flags.DEFINE_integer("parallel", 1, "Runs at the same time.")
    flags.DEFINE_bool("print_commands", False, "Print one command per pending run and exit.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
