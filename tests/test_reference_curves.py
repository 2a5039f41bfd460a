"""jdtp.reference_curves: settings taken from the jdtp runs, the reference runs' bookkeeping, summaries."""

import json
import os
import sys
import types

import numpy as np
import pytest

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


def test_run_all_runs_pending_reference_runs_once_and_summarises(tmp_path):
    runs = _runs(tmp_path)
    plan = {"dtp": {"batch": 33, "steps_per_epoch": 40, "steps": 40, "eval_every": 10, "k": [41, 15, 19]}}
    for run in runs:
        if run.label == "dtp":
            _complete_jdtp_run(
                run, [(10, 0.6), (20, 0.62 + run.seed / 100), (30, 0.64), (40, 0.66), (50, 0.7)]
            )
    bench, env = tmp_path / "bench", tmp_path / "env"
    bench.mkdir()
    (bench / "ref_train.py").write_text(FAKE_REF_TRAIN)
    (env / "venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, env / "venv" / "bin" / "python")
    npz = tmp_path / "work" / "fashion_mnist.npz"
    npz.parent.mkdir()
    np.savez(npz, xtr=np.zeros((1, 28, 28, 1), np.uint8))  # present: not exported again
    args = types.SimpleNamespace(
        ref_bench=str(bench), ref_env=str(env), data_dir=None, sweep=rc.DEFAULT_SWEEP,
        sweep_dir=str(tmp_path / "sweep"), set=[], work=str(tmp_path / "work"), out=str(tmp_path / "out"),
        seeds=[0, 1], parallel=2, ref_threads=1,
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
    args = types.SimpleNamespace(work=str(tmp_path / "work"), include_unfinished=False)
    assert rc.collect(args, runs, plan, [0])["dtp"]["authors"] == {}
    args.include_unfinished = True
    authors = rc.collect(args, runs, plan, [0])["dtp"]["authors"]
    assert authors == {0: {0: 0.1}, 10: {0: 0.55}, 20: {0: 0.58}}
    rows = rc.summarise(rc.collect(args, runs, plan, [0])["dtp"])
    assert [r["step"] for r in rows] == [10, 20]  # the steps both have reached
    np.testing.assert_allclose(rows[1]["gap"]["mean"], 0.62 - 0.58)
