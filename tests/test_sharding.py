"""Data parallelism: device-count invariance, multi-process runs, 8-device training (CPU only)."""

import json
import os
import socket
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import abstract_state, build_algorithm, tiny_config
from test_train import _read_jsonl, _restore

from jdtp import algorithms, sharding, train


def _one_step_each(mesh_devices):
    mesh = sharding.make_mesh(mesh_devices)
    batch = {
        "image": jax.random.normal(jax.random.key(1), (16, 16, 16, 3)),
        "label": jnp.arange(16) % 10,
    }
    batch = sharding.global_batch({k: np.asarray(v) for k, v in batch.items()}, mesh)
    out = {}
    for name in ("dtp", "bp"):
        algo = build_algorithm(tiny_config(name, **{"dtp.num_fb_iters": (3, 3, 3)} if name == "dtp" else {}))
        state = sharding.replicate(algo.init_state(jax.random.key(0)), mesh)
        state, _ = algorithms.make_train_steps(algo)["train"](state, batch, jax.random.key(2))
        assert state.fwd_params[0]["kernel"].sharding.is_fully_replicated
        out[name] = jax.device_get(state)
    return out


def test_one_step_same_on_1_and_8_devices():
    one, eight = _one_step_each(1), _one_step_each(8)
    for name in ("dtp", "bp"):
        a = jax.tree.leaves((one[name].fwd_params, one[name].fb_params))
        b = jax.tree.leaves((eight[name].fwd_params, eight[name].fb_params))
        rel = max(
            float(np.max(np.abs(x - y)) / (np.max(np.abs(x)) + 1e-12)) for x, y in zip(a, b, strict=True)
        )
        print(f"{name}: max relative difference 1 vs 8 devices = {rel:.2e}")
        assert rel < 1e-5, (name, rel)


def test_batch_must_divide_over_devices():
    mesh = sharding.make_mesh(8)
    with pytest.raises(ValueError, match=r"config.data.batch_size=107 is not divisible by the 8 devices"):
        sharding.check_batch_divisible(107, mesh)
    with pytest.raises(ValueError, match="config.mesh_devices=9"):
        sharding.make_mesh(9)


def test_train_on_8_devices_resumes_and_logs_once(tmp_path):
    config = tiny_config(mesh_devices=-1, num_train_steps=2, gmp_every_steps=0)
    first = train.train_and_evaluate(config, str(tmp_path))
    assert first["devices"] == 8 and first["steps"] == 2
    config.num_train_steps = 4
    second = train.train_and_evaluate(config, str(tmp_path))
    assert second["steps"] == 4
    records = [r["step"] for r in _read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r]
    assert records == [1, 2, 3, 4]
    reference = train.train_and_evaluate(
        tiny_config(mesh_devices=1, gmp_every_steps=0), str(tmp_path / "ref")
    )
    np.testing.assert_allclose(second["final_test_accuracy"], reference["final_test_accuracy"])


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(workdir, *extra):
    """Run tests/multiprocess_worker.py as 2 processes × 2 CPU devices; returns (returncodes, outputs)."""
    port = _free_port()
    worker = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(port), "2", str(i), str(workdir), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    return [p.returncode for p in procs], outputs


def test_two_processes_match_one_process_with_four_devices(tmp_path):
    codes, outputs = _two_processes(tmp_path / "mp")
    for rc, out in zip(codes, outputs, strict=True):
        assert rc == 0, out[-3000:]
    assert all("devices 4 local 2 steps 3" in out for out in outputs), [o[-500:] for o in outputs]
    # Checkpoint written once, at step 3, and restorable; results and logs from process 0 only.
    assert sorted(os.listdir(tmp_path / "mp" / "checkpoints")) == ["3"]
    assert json.load(open(tmp_path / "mp" / "results.json"))["processes"] == 2
    steps_logged = [r["step"] for r in _read_jsonl(tmp_path / "mp" / "metrics.jsonl") if "train/loss" in r]
    assert steps_logged == [1, 2, 3]

    config = tiny_config(num_train_steps=3, mesh_devices=4, checkpoint_every_steps=3, gmp_every_steps=0)
    train.train_and_evaluate(config, str(tmp_path / "single"))
    like = abstract_state(config)
    multi, _ = _restore(str(tmp_path / "mp"), like)
    single, _ = _restore(str(tmp_path / "single"), like)
    a = jax.tree.leaves((multi.fwd_params, multi.fb_params))
    b = jax.tree.leaves((single.fwd_params, single.fb_params))
    rel = max(float(np.max(np.abs(x - y)) / (np.max(np.abs(x)) + 1e-12)) for x, y in zip(a, b, strict=True))
    print(f"2 processes x 2 devices vs 1 process x 4 devices: max relative difference {rel:.2e}")
    assert rel < 1e-5
    chex.assert_trees_all_equal(int(multi.step), 3)


def test_sigterm_on_one_of_two_processes_stops_both_at_one_step(tmp_path):
    """Preemption reaching one host: both agree on the step, save one checkpoint, exit 75; the rerun
    resumes and ends bitwise equal to an uninterrupted 2-process run."""
    from jdtp import preemption

    codes, outputs = _two_processes(tmp_path / "pre", "1:1")  # only process 1, after step 1
    assert codes == [preemption.EXIT_CODE] * 2, [o[-2000:] for o in outputs]
    assert all("steps 1 preempted True" in out for out in outputs), [o[-500:] for o in outputs]
    assert sorted(os.listdir(tmp_path / "pre" / "checkpoints")) == ["1"]
    assert not os.path.exists(tmp_path / "pre" / "results.json")
    codes, outputs = _two_processes(tmp_path / "pre")
    assert codes == [0, 0], [o[-2000:] for o in outputs]
    codes, outputs = _two_processes(tmp_path / "straight")
    assert codes == [0, 0], [o[-2000:] for o in outputs]
    config = tiny_config(num_train_steps=3, mesh_devices=4, checkpoint_every_steps=3, gmp_every_steps=0)
    like = abstract_state(config)
    resumed, step_a = _restore(str(tmp_path / "pre"), like)
    straight, step_b = _restore(str(tmp_path / "straight"), like)
    assert step_a == step_b == 3
    chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(straight))
