"""Fault injection: kills (-9) at any moment, damaged checkpoints, reruns, another device count.

Every case ends with the final parameters bitwise equal to an uninterrupted run (a damaged step
is set aside and the run resumes from the previous one, which is exact) and no result lost.
Runs are subprocesses of tests/fault_worker.py (tiny LeNet DTP, 6 steps, checkpoints every 2).
"""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest
from helpers import abstract_state, tiny_config

from jdtp import checkpointing, preemption, run_files

WORKER = os.path.join(os.path.dirname(__file__), "fault_worker.py")
pytestmark = pytest.mark.slow


def _run(workdir, mode="none", *overrides, timeout=300):
    return subprocess.run(
        [sys.executable, WORKER, str(workdir), mode, *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _final_state(workdir, config=None):
    manager = checkpointing.make_manager(str(workdir))
    manager, state, step = checkpointing.restore_latest_good(manager, abstract_state(config or _config()))
    checkpointing.wait_and_close(manager)
    return jax.device_get(state), step


def _config():
    return tiny_config(num_train_steps=6, checkpoint_every_steps=2, log_every_steps=1, gmp_every_steps=3)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    wd = tmp_path_factory.mktemp("straight")
    out = _run(wd)
    assert out.returncode == 0, out.stderr[-2000:]
    state, step = _final_state(wd)
    assert step == 6
    return state, run_files.read_results(str(wd)), run_files.read_metrics(str(wd / "metrics.jsonl"))


def _assert_same_as_straight(wd, straight):
    state, step = _final_state(wd)
    assert step == 6
    chex.assert_trees_all_equal(state, straight[0])
    results = run_files.read_results(str(wd))
    assert results is not None and results["final_test_loss"] == straight[1]["final_test_loss"]
    steps = [r["step"] for r in run_files.read_metrics(str(wd / "metrics.jsonl")) if "train/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # each step logged once, no half line left


@pytest.mark.parametrize("mode", ["kill_in_checkpoint:4", "kill_in_metrics:3", "kill_at:5"])
def test_kill_9_then_rerun_is_bitwise_identical(tmp_path, straight, mode):
    killed = _run(tmp_path, mode)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = _run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same_as_straight(tmp_path, straight)


def test_kill_9_at_a_random_moment(tmp_path, straight):
    delay = random.Random(int(time.time())).uniform(3.0, 12.0)  # compiling, training or saving
    proc = subprocess.Popen(
        [sys.executable, WORKER, str(tmp_path), "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    resumed = _run(tmp_path)
    assert resumed.returncode == 0, f"killed after {delay:.1f} s: " + resumed.stderr[-2000:]
    _assert_same_as_straight(tmp_path, straight)


def _damage(path, how):
    if how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(max(1, os.path.getsize(path) // 3))
    elif how == "garble":
        with open(path, "r+b") as f:
            size = os.path.getsize(path)
            f.seek(max(0, size // 2 - 2048))
            f.write(os.urandom(min(4096, size)))
    elif how == "delete":
        os.remove(path)


@pytest.mark.parametrize("how", ["truncate", "garble", "delete", "swap"])
def test_damaged_checkpoint_is_set_aside_and_the_previous_step_used(tmp_path, straight, how):
    """``swap``: step 4's files replaced by step 2's, readable but not the bytes step 4 saved:
    only the checksum comparison can tell (the other kinds of damage fail to read)."""
    import shutil

    stopped = _run(tmp_path, "sigterm_at:4")
    assert stopped.returncode == preemption.EXIT_CODE, stopped.stderr[-2000:]
    step_dir = tmp_path / "checkpoints" / "4"
    if how == "swap":
        shutil.rmtree(step_dir / "default")
        shutil.copytree(tmp_path / "checkpoints" / "2" / "default", step_dir / "default")
        target = None
    elif how == "delete":
        target = glob.glob(str(step_dir / "default" / "**" / "manifest.ocdbt"), recursive=True)[0]
    else:  # the largest data file holds the parameters
        files = [
            f
            for f in glob.glob(str(step_dir / "default" / "**" / "d" / "*"), recursive=True)
            if os.path.isfile(f)
        ]
        target = max(files, key=os.path.getsize)
    if target:
        _damage(target, how)
    resumed = _run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warnings = [line for line in resumed.stderr.splitlines() if "is damaged" in line]
    assert len(warnings) == 1 and "step 4" in warnings[0], resumed.stderr[-3000:]
    if how == "swap":
        assert "do not match the checksum" in warnings[0]
    assert "Restored checkpoint of step 2" in resumed.stderr
    assert os.listdir(tmp_path / checkpointing.DAMAGED_DIR)  # kept, not deleted
    _assert_same_as_straight(tmp_path, straight)


def test_rerun_of_a_finished_run_keeps_its_result(tmp_path, straight):
    assert _run(tmp_path).returncode == 0
    path = tmp_path / "results.json"
    before, mtime = path.read_bytes(), os.path.getmtime(path)
    again = _run(tmp_path)
    assert again.returncode == 0 and "RESULT 6 False True" in again.stdout
    assert path.read_bytes() == before and os.path.getmtime(path) == mtime
    # A harmless change (logging) is allowed on a rerun; a defining one stops with the keys named.
    assert _run(tmp_path, "none", "log_every_steps=2").returncode == 0
    changed = _run(tmp_path, "none", "dtp.beta=0.25")
    assert changed.returncode != 0 and "dtp.beta: 0.5 -> 0.25" in changed.stderr
    # The forward optimizer's settings define the run too.
    changed = _run(tmp_path, "none", "optim.lr=0.02")
    assert changed.returncode != 0 and "optim.lr: 0.01 -> 0.02" in changed.stderr
    assert path.read_bytes() == before


def test_resume_on_8_devices_after_1(tmp_path, straight):
    stopped = _run(tmp_path, "sigterm_at:2", "mesh_devices=1")
    assert stopped.returncode == preemption.EXIT_CODE
    resumed = _run(tmp_path, "none", "mesh_devices=8")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state, step = _final_state(tmp_path)
    assert step == 6
    # Another device count changes the reduction order only: equal to float32 rounding, not bitwise.
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(straight[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert json.load(open(tmp_path / "results.json"))["complete"]
