"""Sweeps (jdtp.sweep): a tiny sweep on synthetic data, one run interrupted and resumed, then skipped."""

import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import CONFIG_DIR

from jdtp import config_base, run_files, sweep, train

SWEEP_FILE = """
import ml_collections


def get_config(variant=""):
    c = ml_collections.ConfigDict()
    c.seeds = (0, 1)
    c.overrides = {"num_train_steps": 4, "mesh_devices": 1, "data": {"synthetic_shape": (16, 16, 3)}}
    c.runs = [
        {"label": "bp", "config": "configs/lenet_cifar10.py:bp,smoke"},
        {"label": "dtp", "config": "configs/lenet_cifar10.py:smoke", "overrides": {"gmp_every_steps": 2}},
    ]
    return c
"""
REPO = os.path.join(CONFIG_DIR, "..")


def _write_sweep(tmp_path):
    path = tmp_path / "tiny_sweep.py"
    path.write_text(SWEEP_FILE)
    return str(path)


def _sweep_env():
    # One device per run, as a user's machine.
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _run_sweep(args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "jdtp.sweep", *args],
        cwd=cwd,
        env=_sweep_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _config_of(run):
    c = config_base.load_config_file(run.config)
    config_base.set_dotted(c, "seed", run.seed)
    for k, v in run.overrides:
        config_base.set_dotted(c, k, tuple(v) if isinstance(v, list) else v)
    return c


def test_plan_is_seed_major_with_one_workdir_per_run(tmp_path):
    s = sweep.load_sweep(_write_sweep(tmp_path))
    runs = sweep.plan(s, str(tmp_path / "sw"), extra_overrides={"data.data_dir": "/d"})
    assert [(r.label, r.seed) for r in runs] == [("bp", 0), ("dtp", 0), ("bp", 1), ("dtp", 1)]
    assert runs[3].workdir == str(tmp_path / "sw" / "dtp" / "seed_1")
    assert dict(runs[1].overrides) == {
        "num_train_steps": 4,
        "mesh_devices": 1,
        "data.synthetic_shape": [16, 16, 3],
        "data.data_dir": "/d",
        "gmp_every_steps": 2,
    }
    cmd = runs[1].command("python")
    assert "--config.data.synthetic_shape=(16,16,3)" in cmd and "--config.seed=0" in cmd
    with pytest.raises(config_base.ConfigError, match="unknown label"):
        sweep.plan(s, str(tmp_path), only=["nope"])
    assert sweep.format_value((3,)) == "(3,)" and sweep.format_value(0.5) == "0.5"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIG_DIR, "sweeps", "*.py"))))
def test_every_shipped_sweep_plans_runs_whose_configs_validate(path):
    runs = sweep.plan(sweep.load_sweep(path), "/unused")
    assert runs and len({(r.label, r.seed) for r in runs}) == len(runs)
    for run in runs:
        config = _config_of(run)
        assert config.seed == run.seed
        train.setup(config)  # the checks a run makes before it loads data


def test_forward_lr_sweep_controls_differ_from_their_baselines_only_in_step_and_batch():
    """BP at DTP's batch and aligned step (beta * lr_f), and DTP at BP's step: nothing else changes."""
    runs = {r.label: r for r in sweep.plan(sweep.load_sweep(os.path.join(CONFIG_DIR, "sweeps", "fmnist_dtp_forward_lr.py")), "/x")
            if r.seed == 0}  # fmt: skip
    cfg = {label: _config_of(run).to_dict() for label, run in runs.items()}
    bp, dtp, control = cfg["bp"], cfg["dtp"], cfg["bp-dtp-step"]
    assert control["optim"]["lr"] == pytest.approx(dtp["dtp"]["beta"] * dtp["optim"]["lr"])
    assert control["data"]["batch_size"] == dtp["data"]["batch_size"] == 33 != bp["data"]["batch_size"]
    strip = lambda c: {**c, "optim": {**c["optim"], "lr": None}, "data": {**c["data"], "batch_size": None}}  # noqa: E731
    assert strip(control) == strip(bp) and control["algorithm"] == "bp"
    assert cfg["dtp-bp-step"]["dtp"]["beta"] * cfg["dtp-bp-step"]["optim"]["lr"] == pytest.approx(
        bp["optim"]["lr"]
    )


def test_print_commands_into_a_reader_that_stopped_early_is_not_an_error(tmp_path):
    """``--print_commands | head -n 1``: the closed pipe ends the listing quietly, exit 0."""
    args = [
        sys.executable,
        "-m",
        "jdtp.sweep",
        f"--sweep={_write_sweep(tmp_path)}",
        f"--dir={tmp_path / 'sw'}",
    ]
    proc = subprocess.Popen(
        [*args, "--print_commands"],
        cwd=REPO,
        env=_sweep_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first line is written
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()[-2000:]


def test_resnet_adam_sweep_arms_differ_only_in_the_lower_stages_step_and_the_algorithm():
    """The slowed-lower-stages arm is the Adam DTP arm with layer_0-layer_2 at 0.1; BP-Adam its bp variant."""
    runs = {r.label: r for r in sweep.plan(sweep.load_sweep(os.path.join(CONFIG_DIR, "sweeps", "resnet18_fmnist_adam.py")), "/x")
            if r.seed == 0}  # fmt: skip
    cfg = {label: _config_of(run).to_dict() for label, run in runs.items()}
    dtp, lower, bp = cfg["dtp-adam"], cfg["dtp-adam-lower0.1"], cfg["bp-adam"]
    assert tuple(lower["optim"]["layer_lr_scale"]) == (0.1, 0.1, 0.1, 1.0, 1.0, 1.0)
    assert tuple(dtp["optim"]["layer_lr_scale"]) == ()
    assert {**lower, "optim": {**lower["optim"], "layer_lr_scale": ()}} == dtp
    assert dtp["optim"]["optimizer"] == bp["optim"]["optimizer"] == "adam"
    assert dtp["optim"]["lr"] == bp["optim"]["lr"] == 1e-3
    assert dtp["algorithm"] == "dtp" and bp["algorithm"] == "bp"


def test_resnet_adam_sweep_plans_exactly_the_configs_of_its_stored_runs():
    """docs/results/resnet18_fmnist_adam_lower/runs holds what the sweep ran: the sweep file (now through
    the config's ``adam`` variant) must still plan those configs, value for value."""
    stored_dir = os.path.join(CONFIG_DIR, "..", "docs", "results", "resnet18_fmnist_adam_lower", "runs")
    runs = sweep.plan(sweep.load_sweep(os.path.join(CONFIG_DIR, "sweeps", "resnet18_fmnist_adam.py")), "/x")
    checked = 0
    for run in runs:
        path = os.path.join(stored_dir, run.label, f"seed_{run.seed}", "config.json")
        with open(path) as f:
            stored = json.load(f)
        config = _config_of(run)
        config.data.data_dir = stored["data"]["data_dir"]
        assert json.loads(json.dumps(config.to_dict())) == stored, run.label
        checked += 1
    assert checked == 8


@pytest.mark.slow
def test_sweep_runs_resumes_an_interrupted_run_and_skips_finished_ones(tmp_path):
    sweep_file, directory = _write_sweep(tmp_path), str(tmp_path / "sw")
    runs = sweep.plan(sweep.load_sweep(sweep_file), directory)
    interrupted = runs[3]  # dtp seed 1: stopped by SIGTERM after 2 of its 4 steps

    def stop_at_2(step, state):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cwd = os.getcwd()
    os.chdir(REPO)  # the sweep file's config paths are relative to the repository
    try:
        first = train.train_and_evaluate(_config_of(interrupted), interrupted.workdir, callbacks=[stop_at_2])
        reference = train.train_and_evaluate(_config_of(interrupted), str(tmp_path / "straight"))
    finally:
        os.chdir(cwd)
    assert first["preempted"] and interrupted.status() == "partial"

    out = _run_sweep([f"--sweep={sweep_file}", f"--dir={directory}"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "4 done" in out.stdout and "started (partial)" in out.stdout
    for run in runs:
        assert run.status() == "complete", run
    resumed = run_files.read_results(interrupted.workdir)
    assert resumed["final_test_loss"] == reference["final_test_loss"]  # resumed = uninterrupted
    metrics = run_files.read_metrics(os.path.join(interrupted.workdir, "metrics.jsonl"))
    assert [r["step"] for r in metrics if "train/loss" in r] == [2, 4]  # each step logged once
    manifest = json.load(open(os.path.join(directory, sweep.SWEEP_FILE)))
    assert len(manifest["runs"]) == 4

    before = {r.workdir: os.path.getmtime(os.path.join(r.workdir, "results.json")) for r in runs}
    again = _run_sweep([f"--sweep={sweep_file}", f"--dir={directory}"])
    assert again.returncode == 0 and "4 already complete" in again.stdout
    assert before == {r.workdir: os.path.getmtime(os.path.join(r.workdir, "results.json")) for r in runs}
    printed = _run_sweep([f"--sweep={sweep_file}", f"--dir={directory}", "--print_commands"])
    assert printed.stdout == ""  # nothing pending
    assert np.isfinite(resumed["final_test_accuracy"])
