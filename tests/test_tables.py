"""Tables from runs (jdtp.tables): rows, means, stds and gaps against an independent computation."""

import csv
import json
import os

import numpy as np
import pytest

from jdtp import paper_results, run_files, tables

# (label, seed) -> final test accuracy; two configs × two seeds, plus an unfinished run.
ACC = {("dtp", 0): 0.9810, ("dtp", 1): 0.9790, ("bp", 0): 0.9750, ("bp", 1): 0.9800}


def _fake_run(root, label, seed, acc, complete=True):
    wd = os.path.join(root, label, f"seed_{seed}")
    os.makedirs(wd)
    records = [
        {"step": 10, "epoch": 0.5, "forward_epoch": 0.5, "eval/accuracy": acc - 0.1},
        {"step": 5, "epoch": 0.25, "forward_epoch": 0.25, "gmp_angle/conv_0": 70.0 - seed},
        {"step": 15, "epoch": 0.75, "forward_epoch": 0.75, "gmp_angle/conv_0": 10.0 * seed},
        {
            "step": 20,
            "epoch": 1.0,
            "forward_epoch": 1.0,
            "gmp_angle/conv_0": 40.0 + seed,
            "gmp_angle/fc2": 0.0,
        },
        {"step": 20, "epoch": 1.0, "forward_epoch": 1.0, "eval/accuracy": acc},
    ]
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    if complete:
        results = {
            "complete": True,
            "algorithm": label,
            "dataset": "mnist",
            "model": "lenet",
            "eval_set": "test",
            "final_test_accuracy": acc,
            "final_test_top5_accuracy": 1.0,
            "steps": 20,
            "epochs": 1.0,
            "forward_epochs": 1.0,
            "wall_time_s": 100.0 + seed,
            "hardware": {"backend": "cpu", "cpu": "Test CPU", "cpu_count": 2},
        }
        run_files.write_json_atomic(os.path.join(wd, "results.json"), results)
    return wd


def test_table_rows_means_stds_and_gaps_match_an_independent_computation(tmp_path):
    root = str(tmp_path / "sweep")
    for (label, seed), acc in ACC.items():
        _fake_run(root, label, seed, acc)
    _fake_run(root, "dtp", 2, 0.5, complete=False)  # interrupted: listed, not counted
    out = tables.make_tables(root, str(tmp_path / "out"), "test sweep")

    rows = {r["label"]: r for r in out["rows"]}
    assert set(rows) == {"dtp", "bp"}
    for label in rows:
        accs = [100 * ACC[(label, s)] for s in (0, 1)]
        assert rows[label]["seeds"] == 2
        assert rows[label]["accuracy_mean"] == pytest.approx(sum(accs) / 2)
        assert rows[label]["accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / np.sqrt(2))  # ddof 1
        assert rows[label]["wall_time_s"] == pytest.approx(100.5)
        assert rows[label]["paper_mean"] == paper_results.ACCURACY[("mnist", "lenet", label)][0]
    (gap,) = out["gaps"]
    diffs = [100 * (ACC[("dtp", s)] - ACC[("bp", s)]) for s in (0, 1)]
    assert gap["gap"] == "dtp - bp" and gap["seeds"] == 2
    assert gap["gap_mean"] == pytest.approx(np.mean(diffs))
    assert gap["gap_std"] == pytest.approx(np.std(diffs, ddof=1))
    assert gap["paper_gap"] == pytest.approx(98.93 - 98.92)

    # GMP over training: seed s logs conv_0 at 70 − s, 10 s, 40 + s (fc2 once, at 0).
    gmp = {(g["label"], g["layer"]): g for g in out["gmp"]}
    assert set(gmp) == {(label, layer) for label in ("bp", "dtp") for layer in ("conv_0", "fc2")}
    per_seed = {s: [70.0 - s, 10.0 * s, 40.0 + s] for s in (0, 1)}
    conv = gmp[("dtp", "conv_0")]
    assert conv["seeds"] == 2 and conv["evaluations_per_run"] == 3
    assert conv["median_deg"] == pytest.approx(np.mean([np.median(v) for v in per_seed.values()]))
    assert conv["max_deg"] == pytest.approx(np.mean([max(v) for v in per_seed.values()]))
    assert conv["max_any_seed_deg"] == pytest.approx(70.0)
    assert conv["last_deg"] == pytest.approx(40.5)
    assert conv["above_bound_pct"] == pytest.approx(
        100 * np.mean([np.mean(np.array(v) > 60) for v in per_seed.values()])
    )
    assert gmp[("dtp", "fc2")]["max_deg"] == 0.0
    assert (
        "| mnist | dtp | conv_0 | 2 | 3 | 40.5 | 69.5 | 70.0 | 40.5 | 33 | 0 |"
        in (tmp_path / "out" / "table.md").read_text()
    )

    with open(tmp_path / "out" / "table.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["label"] for r in csv_rows] == ["bp", "dtp"]
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| mnist | lenet | dtp | 2 | 98.00 ± 0.14 |" in md
    assert "Incomplete runs (not counted): dtp seed 2" in md
    assert "Test CPU (2 cores)" in md
    for name in ("accuracy.png", "gmp_angles.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unfinished_runs_are_drawn_and_listed_only_when_asked(tmp_path):
    root = str(tmp_path / "sweep")
    for (label, seed), acc in ACC.items():
        _fake_run(root, label, seed, acc)
    wd = _fake_run(root, "dtp", 2, 0.5, complete=False)
    run_files.write_json_atomic(
        os.path.join(wd, "config.json"), {"data": {"name": "mnist"}, "model": {"name": "lenet"}}
    )
    with open(os.path.join(wd, "metrics.jsonl"), "a") as f:  # a diverged last angle
        f.write(
            json.dumps({"step": 25, "epoch": 1.25, "forward_epoch": 1.25, "gmp_angle/conv_0": float("nan")})
            + "\n"
        )
    plain = tables.make_tables(root, str(tmp_path / "plain"))
    assert all("unfinished" not in g["label"] for g in plain["gmp"])
    assert "as far as they got" not in plain["markdown"]

    out = tables.make_tables(root, str(tmp_path / "out"), include_unfinished=True)
    assert [r["label"] for r in out["rows"]] == ["bp", "dtp"]  # never in the means
    assert out["rows"][1]["seeds"] == 2
    row = {(g["label"], g["layer"]): g for g in out["gmp"]}[("dtp seed 2 (unfinished)", "conv_0")]
    # seed 2 logs conv_0 at 68, 20, 42 and then NaN: the NaN is counted, not averaged.
    assert row["dataset"] == "mnist" and row["evaluations_per_run"] == 4 and row["non_finite"] == 1
    assert row["median_deg"] == pytest.approx(42.0) and row["max_deg"] == pytest.approx(68.0)
    assert np.isnan(row["last_deg"])
    assert row["above_bound_pct"] == pytest.approx(100 / 3)  # 68 of 68, 20, 42 (the NaN not counted)
    assert (
        "- dtp seed 2: last evaluation 50.00 % at epoch 1.00 (test accuracy % at forward epochs: 40.0 % at 0.50, 50.0 % at 1.00)"
        in out["markdown"]
    )


def test_gaps_start_from_the_named_reference_label_and_an_unknown_one_is_an_error(tmp_path):
    root = str(tmp_path / "sweep")
    for (label, seed), acc in ACC.items():
        _fake_run(root, label, seed, acc)
    out = tables.make_tables(root, str(tmp_path / "out"), reference="bp")
    (gap,) = out["gaps"]
    diffs = [100 * (ACC[("bp", s)] - ACC[("dtp", s)]) for s in (0, 1)]
    assert gap["gap"] == "bp - dtp" and gap["gap_mean"] == pytest.approx(np.mean(diffs))
    assert gap["gap_std"] == pytest.approx(np.std(diffs, ddof=1))
    with pytest.raises(ValueError, match=r"--reference='bp-adam' is not a label .*\['bp', 'dtp'\]"):
        tables.make_tables(root, str(tmp_path / "out2"), reference="bp-adam")
    assert not (tmp_path / "out2").exists()


def test_empty_sweep_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no <label>/seed_<s> workdirs"):
        tables.make_tables(str(tmp_path), str(tmp_path / "out"))


def test_keep_runs_stores_finished_runs_and_tables_grow_across_sweep_dirs(tmp_path):
    out = str(tmp_path / "out")
    first, second = str(tmp_path / "session1"), str(tmp_path / "session2")
    for lab in ("dtp", "bp"):
        wd = _fake_run(first, lab, 0, ACC[(lab, 0)])
        run_files.write_json_atomic(os.path.join(wd, "config.json"), {"algorithm": lab, "seed": 0})
    os.makedirs(os.path.join(first, "bp", "seed_0", "checkpoints", "20"))
    _fake_run(first, "dtp", 1, 0.5, complete=False)  # unfinished: not kept
    kept = tables.make_tables(first, out, keep=True)["kept"]
    assert kept == [os.path.join(out, "runs", lab, "seed_0") for lab in ("bp", "dtp")]
    for lab in ("bp", "dtp"):
        src, dst = os.path.join(first, lab, "seed_0"), os.path.join(out, "runs", lab, "seed_0")
        assert sorted(os.listdir(dst)) == sorted(tables.KEPT_FILES)
        for name in tables.KEPT_FILES:
            with open(os.path.join(src, name), "rb") as a, open(os.path.join(dst, name), "rb") as b:
                assert a.read() == b.read()
    assert not os.path.exists(os.path.join(out, "runs", "dtp", "seed_1"))

    # A later session's sweep dir holds only seed 1 (seed 0's folder is gone): the table has both.
    _fake_run(second, "dtp", 1, ACC[("dtp", 1)])
    _fake_run(second, "bp", 1, ACC[("bp", 1)])
    res = tables.make_tables(second, out, keep=True)
    assert len(res["kept"]) == 2 and not res["incomplete"]
    rows = {r["label"]: r for r in res["rows"]}
    for lab in ("bp", "dtp"):
        accs = [100 * ACC[(lab, s)] for s in (0, 1)]
        assert rows[lab]["seeds"] == 2
        assert rows[lab]["seed_list"] == "0 1"
        assert rows[lab]["accuracy_mean"] == pytest.approx(np.mean(accs))
    # Drawn again from the store alone, or a second time: the same table, nothing new kept.
    again = tables.make_tables(os.path.join(out, "runs"), str(tmp_path / "out2"))
    key = [(r["label"], r["seed_list"], r["accuracy_per_seed"]) for r in res["rows"]]
    assert [(r["label"], r["seed_list"], r["accuracy_per_seed"]) for r in again["rows"]] == key
    assert tables.make_tables(second, out, keep=True)["kept"] == []


def test_keep_runs_never_replaces_a_different_stored_run(tmp_path):
    out, sweep = str(tmp_path / "out"), str(tmp_path / "sweep")
    _fake_run(sweep, "dtp", 0, ACC[("dtp", 0)])
    tables.make_tables(sweep, out, keep=True)
    stored = os.path.join(out, "runs", "dtp", "seed_0", "results.json")
    before = open(stored, "rb").read()
    other = str(tmp_path / "other")
    _fake_run(other, "dtp", 0, 0.1)  # another run under the same label and seed
    _fake_run(other, "bp", 0, ACC[("bp", 0)])
    with pytest.raises(ValueError, match=r"results.json differs from the stored .*Nothing was copied"):
        tables.make_tables(other, out, keep=True)
    assert open(stored, "rb").read() == before
    assert not os.path.exists(os.path.join(out, "runs", "bp"))  # checked before anything is copied
