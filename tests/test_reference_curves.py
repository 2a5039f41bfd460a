"""jdtp.reference_curves: settings taken from the jdtp runs, the reference runs' bookkeeping, summaries."""

import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from helpers import CONFIG_DIR

from jdtp import config_base, run_files, sweep
from jdtp import reference_curves as rc

FAKE_REF_TRAIN = """
import argparse, json
p = argparse.ArgumentParser()
for a in ("--data", "--algo", "--out"):
    p.add_argument(a)
for a in ("--seed", "--steps", "--batch", "--eval_every", "--threads"):
    p.add_argument(a, type=int)
p.add_argument("--k", type=int, nargs=3)
a = p.parse_args()
recs = [{"step": s, "test_acc": 0.5 + 0.001 * s + 0.01 * a.seed} for s in range(0, a.steps + 1, a.eval_every)]
json.dump({"args": vars(a), "records": recs}, open(a.out, "w"))
"""

REPO = os.path.join(CONFIG_DIR, "..")


def _runs(tmp_path, seeds=(0, 1)):
    sw = sweep.table1("fmnist", seeds=seeds)
    return sweep.plan(sw, str(tmp_path / "sweep"), only=("dtp", "bp"))


def test_reference_plan_takes_batch_k_steps_and_eval_interval_from_the_jdtp_runs(tmp_path):
    plan = rc.reference_plan(_runs(tmp_path), epochs=1.0, num_train=60000)
    assert plan["dtp"] == {
        "batch": 33,
        "steps_per_epoch": 1818,
        "steps": 1818,
        "eval_every": 113,
        "k": [41, 15, 19],
    }
    assert plan["bp"]["batch"] == 140 and plan["bp"]["steps"] == 428 and plan["bp"]["k"] is None
    mnist = sweep.plan(sweep.table1("mnist"), str(tmp_path / "m"), only=("dtp",))
    with pytest.raises(config_base.ConfigError, match="Fashion-MNIST only"):
        rc.reference_plan(mnist, 1.0, 60000)


def _complete_jdtp_run(run, accs):
    os.makedirs(run.workdir, exist_ok=True)
    with open(os.path.join(run.workdir, run_files.METRICS), "w") as f:
        for step, acc in accs:
            f.write(json.dumps({"step": step, "eval/accuracy": acc}) + "\n")
            f.write(json.dumps({"step": step, "train/loss": 1.0}) + "\n")
        f.write('{"step": 99')  # a half-written last line is ignored
    results = {"final_test_accuracy": accs[-1][1], "complete": True}
    run_files.write_json_atomic(os.path.join(run.workdir, run_files.RESULTS), results)


def _fake_bench(tmp_path):
    """The bench's layout with a ref_train.py that writes a made-up curve, and the exported data."""
    bench, env = tmp_path / "bench", tmp_path / "env"
    bench.mkdir()
    (bench / "ref_train.py").write_text(FAKE_REF_TRAIN)
    (env / "venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, env / "venv" / "bin" / "python")
    npz = tmp_path / "work" / "fashion_mnist.npz"
    npz.parent.mkdir()
    np.savez(npz, xtr=np.zeros((1, 28, 28, 1), np.uint8))  # present: not exported again
    return bench, env


def test_run_all_runs_pending_reference_runs_once_and_summarises(tmp_path):
    runs = _runs(tmp_path)
    plan = {"dtp": {"batch": 33, "steps_per_epoch": 40, "steps": 40, "eval_every": 10, "k": [41, 15, 19]}}
    for run in runs:
        if run.label == "dtp":
            _complete_jdtp_run(
                run, [(10, 0.6), (20, 0.62 + run.seed / 100), (30, 0.64), (40, 0.66), (50, 0.7)]
            )
    bench, env = _fake_bench(tmp_path)
    args = types.SimpleNamespace(
        ref_bench=str(bench), ref_env=str(env), data_dir=None, sweep=rc.DEFAULT_SWEEP,
        sweep_dir=str(tmp_path / "sweep"), set=[], work=str(tmp_path / "work"), out=str(tmp_path / "out"),
        seeds=[0, 1], parallel=2, ref_threads=1, store=str(tmp_path / "out" / "runs"),
    )  # fmt: skip
    runs = [r for r in runs if r.label == "dtp"]
    assert rc.run_all(args, runs, plan) == 0
    for seed in (0, 1):
        final = rc.ref_json(args.work, "dtp", seed)
        assert rc.ref_complete(final, plan["dtp"]) and not os.path.exists(
            final.replace(".json", ".partial.json")
        )
    before = os.path.getmtime(rc.ref_json(args.work, "dtp", 0))
    assert rc.run_all(args, runs, plan) == 0  # nothing left to run: complete results are never rewritten
    assert os.path.getmtime(rc.ref_json(args.work, "dtp", 0)) == before

    curves = rc.collect(args, runs, plan, [0, 1])
    assert sorted(curves["dtp"]["jdtp"]) == [10, 20, 30, 40]  # up to the compared steps only
    summary = rc.write_outputs(args, curves, plan)
    row = next(r for r in summary["rows"]["dtp"] if r["step"] == 20)
    np.testing.assert_allclose(row["jdtp"]["mean"], 0.625)
    np.testing.assert_allclose(row["authors"]["mean"], 0.5 + 0.02 + 0.005)
    np.testing.assert_allclose(row["gap"]["mean"], 0.625 - 0.525)
    np.testing.assert_allclose(row["gap"]["se"], np.sqrt(2 * np.std([0.62, 0.63], ddof=1) ** 2 / 2))
    assert [r["step"] for r in summary["rows"]["dtp"]] == [10, 20, 30, 40]  # steps both have
    assert os.path.getsize(os.path.join(args.out, "curves.png")) > 1000
    assert "| 20 | 0.50 |" in open(os.path.join(args.out, "table.md")).read()


def test_unfinished_reference_runs_count_only_when_asked(tmp_path):
    runs = [r for r in _runs(tmp_path, seeds=(0,)) if r.label == "dtp"]
    plan = {"dtp": {"batch": 33, "steps_per_epoch": 40, "steps": 40, "eval_every": 10, "k": [41, 15, 19]}}
    _complete_jdtp_run(runs[0], [(10, 0.6), (20, 0.62), (30, 0.64), (40, 0.66)])
    partial = rc.ref_json(str(tmp_path / "work"), "dtp", 0).replace(".json", ".partial.json")
    os.makedirs(os.path.dirname(partial))
    recs = [{"step": 0, "test_acc": 0.1}, {"step": 10, "test_acc": 0.55}, {"step": 20, "test_acc": 0.58}]
    run_files.write_json_atomic(partial, {"args": {}, "records": recs})
    args = types.SimpleNamespace(
        work=str(tmp_path / "work"), include_unfinished=False, store=str(tmp_path / "st")
    )
    assert rc.collect(args, runs, plan, [0])["dtp"]["authors"] == {}
    args.include_unfinished = True
    authors = rc.collect(args, runs, plan, [0])["dtp"]["authors"]
    assert authors == {0: {0: 0.1}, 10: {0: 0.55}, 20: {0: 0.58}}
    rows = rc.summarise(rc.collect(args, runs, plan, [0])["dtp"])
    assert [r["step"] for r in rows] == [10, 20]  # the steps both have reached
    np.testing.assert_allclose(rows[1]["gap"]["mean"], 0.62 - 0.58)


def _record_launches(monkeypatch) -> list[list[str]]:
    """Commands run_all would start; each is replaced by a process that does nothing."""
    jobs = []
    real_launch = rc._launch

    def launch(cmd, log, env=None):
        jobs.append(cmd)
        return real_launch([sys.executable, "-c", ""], log)

    monkeypatch.setattr(rc, "_launch", launch)
    return jobs


def test_finished_runs_are_stored_once_and_a_fresh_work_dir_reruns_nothing(tmp_path, monkeypatch):
    plan = {"dtp": {"batch": 33, "steps_per_epoch": 40, "steps": 40, "eval_every": 10, "k": [41, 15, 19]}}
    runs = [r for r in _runs(tmp_path) if r.label == "dtp"]
    _complete_jdtp_run(runs[0], [(10, 0.6), (20, 0.62), (30, 0.64), (40, 0.66)])
    _complete_jdtp_run(runs[1], [(10, 0.6), (20, 0.61)])  # not yet at the last compared step
    bench, env = _fake_bench(tmp_path)
    store = tmp_path / "out" / "runs"
    args = types.SimpleNamespace(
        ref_bench=str(bench), ref_env=str(env), data_dir=None, sweep=rc.DEFAULT_SWEEP,
        sweep_dir=str(tmp_path / "sweep"), set=[], work=str(tmp_path / "work"), out=str(tmp_path / "out"),
        seeds=[0, 1], parallel=1, ref_threads=1, store=str(store), include_unfinished=False,
    )  # fmt: skip
    added = rc.store_finished(args, runs, plan, [0, 1])
    assert added == [rc.stored_path(str(store), "jdtp", "dtp", 0)]  # seed 1 has not reached step 40
    stored = run_files.read_json(added[0])
    assert stored["setting"] == plan["dtp"] and [r["step"] for r in stored["records"]] == [10, 20, 30, 40]
    # jdtp seed 1 finished in another session: its stored curve stands for it, the authors' two
    # seeds run and are stored as they finish; then the store is all that is left
    rc.store_run(str(store), "jdtp", "dtp", 1, plan["dtp"], [{"step": 40, "test_acc": 0.7}], "elsewhere")
    assert rc.run_all(args, runs, plan) == 0
    assert sorted(os.listdir(store)) == [f"{i}_dtp_seed{s}.json" for i in ("authors", "jdtp") for s in (0, 1)]
    for path in [tmp_path / "work", tmp_path / "sweep"]:
        shutil.rmtree(path)
    curves = rc.collect(args, runs, plan, [0, 1])
    assert curves["dtp"]["jdtp"][40] == {0: 0.66, 1: 0.7} and curves["dtp"]["authors"][40] == {
        0: 0.54,
        1: 0.55,
    }
    jobs = _record_launches(monkeypatch)
    assert rc.run_all(args, runs, plan) == 0
    assert jobs == []  # every run is stored: nothing is run again
    # a stored run is never overwritten, and one made with another setting is refused by name
    mtime = os.path.getmtime(rc.stored_path(str(store), "jdtp", "dtp", 0))
    assert not rc.store_run(str(store), "jdtp", "dtp", 0, plan["dtp"], [], "again")
    assert os.path.getmtime(rc.stored_path(str(store), "jdtp", "dtp", 0)) == mtime
    other = {**plan["dtp"], "k": [20, 15, 19]}
    with pytest.raises(config_base.ConfigError, match="jdtp_dtp_seed0.json: stored with"):
        rc.read_stored(str(store), "jdtp", "dtp", 0, other)


def test_pending_jdtp_seeds_run_in_one_sweep_per_algorithm(tmp_path, monkeypatch):
    plan = {
        "dtp": {"batch": 33, "steps_per_epoch": 40, "steps": 40, "eval_every": 10, "k": [41, 15, 19]},
        "bp": {"batch": 140, "steps_per_epoch": 40, "steps": 40, "eval_every": 10, "k": None},
    }
    runs = _runs(tmp_path, seeds=(0, 1, 2))
    store = str(tmp_path / "runs")
    for algo, seed in (("dtp", 0), ("dtp", 2), ("bp", 1)):
        rc.store_run(store, "jdtp", algo, seed, plan[algo], [{"step": 40, "test_acc": 0.7}], "x")
    for algo in plan:
        for seed in (0, 1, 2):
            rc.store_run(store, "authors", algo, seed, plan[algo], [{"step": 40, "test_acc": 0.7}], "x")
    bench, env = _fake_bench(tmp_path)
    args = types.SimpleNamespace(
        ref_bench=str(bench), ref_env=str(env), data_dir=None, sweep=rc.DEFAULT_SWEEP,
        sweep_dir=str(tmp_path / "sweep"), set=["num_epochs=1"], work=str(tmp_path / "work"),
        out=str(tmp_path / "out"), seeds=[0, 1, 2], parallel=1, ref_threads=1, store=store,
    )  # fmt: skip
    jobs = _record_launches(monkeypatch)
    assert rc.run_all(args, runs, plan) == 0
    sweeps = {tuple(c for c in cmd if c.startswith(("--only", "--seeds", "--set"))) for cmd in jobs}
    assert sweeps == {
        ("--only=dtp", "--seeds=1", "--set=num_epochs=1"),
        ("--only=bp", "--seeds=0,2", "--set=num_epochs=1"),
    }


def test_outputs_cover_every_stored_algorithm_and_seed_whatever_this_invocation_runs(tmp_path):
    """A run of one algorithm and seed (``--algos=dtp --seeds=1``) redraws the others too."""
    runs = _runs(tmp_path, seeds=(0,))
    plan = rc.reference_plan(runs, epochs=1.0, num_train=60000)
    store = tmp_path / "out" / "runs"
    last = {a: rc.last_eval_step(s) for a, s in plan.items()}
    for impl, algo, seed, acc in [
        ("jdtp", "bp", 0, 0.80), ("authors", "bp", 0, 0.82), ("jdtp", "bp", 2, 0.81),
        ("authors", "bp", 2, 0.83), ("jdtp", "dtp", 0, 0.73), ("authors", "dtp", 0, 0.72),
    ]:  # fmt: skip
        recs = [{"step": plan[algo]["eval_every"], "test_acc": 0.5}, {"step": last[algo], "test_acc": acc}]
        rc.store_run(str(store), impl, algo, seed, plan[algo], recs, "x")
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "jdtp.reference_curves", "--plot_only", "--algos=dtp", "--seeds=1",
        f"--store={store}", f"--out={out}", f"--sweep_dir={tmp_path / 'sweep'}",
        f"--work={tmp_path / 'work'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = run_files.read_json(str(out / "summary.json"))
    assert summary["seeds"] == [0, 1, 2] and sorted(summary["rows"]) == ["bp", "dtp"]
    bp = next(r for r in summary["rows"]["bp"] if r["step"] == last["bp"])
    assert bp["jdtp"]["seeds"] == 2 and bp["authors"]["seeds"] == 2
    np.testing.assert_allclose(bp["gap"]["mean"], 0.805 - 0.825)
    dtp = next(r for r in summary["rows"]["dtp"] if r["step"] == last["dtp"])
    assert dtp["jdtp"]["seeds"] == 1 and dtp["authors"]["seeds"] == 1
    table = (out / "table.md").read_text()
    assert "### BP" in table and "### DTP" in table
    # the stored runs were only read
    assert sorted(os.listdir(store)) == sorted(
        f"{i}_{a}_seed{s}.json" for i in ("jdtp", "authors") for a, s in (("bp", 0), ("bp", 2), ("dtp", 0))
    )


def test_legend_says_where_a_curve_loses_seeds():
    assert rc.seed_label("jdtp", {113: 3, 226: 3}) == "jdtp (3 seeds)"
    # an unfinished seed: 2 seeds to step 791, then only the finished one
    assert (
        rc.seed_label("jdtp", {113: 2, 791: 2, 904: 1, 1808: 1}) == "jdtp (2 seeds to step 791, fewer after)"
    )
