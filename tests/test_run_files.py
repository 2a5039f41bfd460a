"""Workdir files (jdtp.run_files): atomic JSON, tolerant metrics reading, config comparison, wall time."""

import json
import os

import pytest

from jdtp import run_files


def test_write_json_atomic_leaves_no_temp_file_and_replaces(tmp_path):
    path = str(tmp_path / "r.json")
    run_files.write_json_atomic(path, {"a": 1})
    run_files.write_json_atomic(path, {"a": 2})
    assert json.load(open(path)) == {"a": 2}
    assert os.listdir(tmp_path) == ["r.json"]
    assert run_files.read_json(str(tmp_path / "missing.json")) is None
    (tmp_path / "bad.json").write_text('{"a": ')
    assert run_files.read_json(str(tmp_path / "bad.json")) is None


def test_read_metrics_drops_a_half_written_last_line_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "train/lo')
    assert [r["step"] for r in run_files.read_metrics(str(path))] == [1, 2]
    run_files.truncate_metrics(str(path), 1)
    assert path.read_text() == '{"step": 1}\n'
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2 of 3 is not JSON"):
        run_files.read_metrics(str(path))


def test_config_differences_split_defining_and_harmless_keys():
    old = {"seed": 0, "dtp": {"beta": 0.5, "fb_lr": (0.1, 0.2)}, "log_every_steps": 50, "num_epochs": 1}
    new = {"seed": 0, "dtp": {"beta": 0.25, "fb_lr": [0.1, 0.2]}, "log_every_steps": 10, "num_epochs": 2}
    defining, harmless = run_files.config_differences(old, new)
    assert defining == ["dtp.beta"]
    assert harmless == ["log_every_steps", "num_epochs"]
    bp = {"seed": 0, "optim": {"lr": 0.1}}
    defining, _ = run_files.config_differences({**bp, "dtp": {"beta": 0.5}}, bp)
    assert defining == ["dtp.beta"]
    # Every optimizer key defines the run (none is in HARMLESS_KEYS).
    opt = {"optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine"}}
    for key, value in (("lr", 0.2), ("momentum", 0.5), ("weight_decay", 0.0), ("schedule", "constant")):
        changed = {"optim": {**opt["optim"], key: value}}
        assert run_files.config_differences(opt, changed) == ([f"optim.{key}"], [])


def test_cumulative_wall_time_per_checkpointed_step(tmp_path):
    wd = str(tmp_path)
    assert run_files.cumulative_wall_time(wd, None) == 0.0
    run_files.record_wall_time(wd, 2, 10.0)
    run_files.record_wall_time(wd, 4, 25.0)
    assert run_files.cumulative_wall_time(wd, 2) == 10.0 and run_files.cumulative_wall_time(wd, 4) == 25.0


def test_complete_results_only_and_set_aside_keeps_them(tmp_path):
    wd = str(tmp_path)
    assert run_files.read_results(wd) is None
    run_files.write_json_atomic(
        os.path.join(wd, "results.json"), {"complete": False, "final_test_accuracy": 0.5}
    )
    assert run_files.read_results(wd) is None
    run_files.write_json_atomic(
        os.path.join(wd, "results.json"), {"complete": True, "final_test_accuracy": 0.5}
    )
    assert run_files.read_results(wd)["final_test_accuracy"] == 0.5
    kept = run_files.set_aside_results(wd, 40)
    assert kept.endswith("results.step40.json") and json.load(open(kept))["complete"]


def test_keys_added_by_a_later_version_at_their_default_are_not_a_change():
    stored = {"seed": 0, "data": {"name": "mnist"}}
    current = {"seed": 0, "data": {"name": "mnist", "pad_to": 0}}
    defaults = {"seed": 0, "data": {"name": "synthetic", "pad_to": 0}}
    assert run_files.config_differences(stored, current, defaults) == ([], [])
    current["data"]["pad_to"] = 32
    assert run_files.config_differences(stored, current, defaults)[0] == ["data.pad_to"]
