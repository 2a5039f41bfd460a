"""The training program end to end: data, checkpoints, resume, logs, errors."""

import json
import os
import signal
import time

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from helpers import abstract_state, tiny_config

from jdtp import algorithms, checkpointing, config_base, datasets, train


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _restore(workdir, like):
    manager = checkpointing.make_manager(workdir)
    manager, state, step = checkpointing.restore_latest_good(manager, like)
    checkpointing.wait_and_close(manager)
    return state, step


@pytest.mark.parametrize("algorithm", ["dtp", "bp"])
def test_end_to_end_synthetic_writes_everything(tmp_path, algorithm):
    config = tiny_config(algorithm)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == 4 and not results["preempted"]
    assert 0.0 <= results["final_test_accuracy"] <= 1.0
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["final_test_accuracy"] == results["final_test_accuracy"]
    assert saved["config"]["algorithm"] == algorithm
    records = _read_jsonl(tmp_path / "metrics.jsonl")
    keys = set().union(*records)
    assert {"train/loss", "train/accuracy", "eval/accuracy", "perf/images_per_sec"} <= keys
    if algorithm == "dtp":
        for layer in ("conv_1", "fc1", "fc2"):
            assert {
                f"train/fb_loss_first/{layer}",
                f"train/fb_loss_last/{layer}",
                f"jmc_angle/{layer}",
            } <= keys
        assert {"gmp_angle/conv_0", "gmp_angle/fc2"} <= keys
    else:  # BP has no update of its own to compare with its gradient, and no feedback weights
        assert not any(k.startswith(("gmp_angle/", "jmc_", "train/fb_loss")) for k in keys), keys
        state, _ = _restore(str(tmp_path), abstract_state(config))
        assert state.fb_params == () and state.fb_opt_state == ()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
    assert os.listdir(tmp_path / "tensorboard")


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    config = tiny_config()
    straight = train.train_and_evaluate(config, str(tmp_path / "a"))

    def sigterm_at_2(step, state):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train.train_and_evaluate(config, str(tmp_path / "b"), callbacks=[sigterm_at_2])
    assert first["preempted"] and first["steps"] == 2
    assert not os.path.exists(tmp_path / "b" / "results.json")
    second = train.train_and_evaluate(config, str(tmp_path / "b"))
    assert second["steps"] == 4 and not second["preempted"]
    like = abstract_state(config)
    a, _ = _restore(str(tmp_path / "a"), like)
    b, _ = _restore(str(tmp_path / "b"), like)
    chex.assert_trees_all_equal(a, b)
    assert straight["final_test_accuracy"] == second["final_test_accuracy"]
    # metrics.jsonl of the resumed run has each step once.
    steps_logged = [r["step"] for r in _read_jsonl(tmp_path / "b" / "metrics.jsonl") if "train/loss" in r]
    assert steps_logged == [1, 2, 3, 4]


def _add_to_loss_from_step_3(monkeypatch, value: float) -> None:
    """Make every train step from step 3 on report its loss plus ``value`` (weights untouched)."""
    real = algorithms.make_train_steps

    def poisoned(*args, **kwargs):
        steps = real(*args, **kwargs)

        def wrap(step):
            def wrapped(state, batch, key):
                new_state, metrics = step(state, batch, key)
                bad = jax.numpy.where(new_state.step >= 3, value, 0.0)  # state was donated
                return new_state, {**metrics, "loss": metrics["loss"] + bad}

            return wrapped

        return {phase: wrap(step) for phase, step in steps.items()}

    monkeypatch.setattr(train.algorithms, "make_train_steps", poisoned)


def test_nan_stops_run_naming_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    _add_to_loss_from_step_3(monkeypatch, float("nan"))
    config = tiny_config(num_train_steps=6)
    with pytest.raises(
        train.NonFiniteError,
        match=r"train/loss=nan at step 3 \(this run started from scratch; newest checkpoint: step 2\)",
    ):
        train.train_and_evaluate(config, str(tmp_path))
    state, step = _restore(str(tmp_path), abstract_state(config))
    assert step == 2 and int(state.step) == 2
    chex.assert_tree_all_finite(state.fwd_params)


def test_a_finite_loss_above_max_train_loss_stops_the_run_as_diverged(tmp_path, monkeypatch):
    """Losses of 1e18-1e26 with finite weights were seen: above config.max_train_loss the run stops."""
    _add_to_loss_from_step_3(monkeypatch, 1e20)
    config = tiny_config(num_train_steps=6, max_train_loss=1e6)
    with pytest.raises(
        train.NonFiniteError,
        match=r"train/loss=1e\+20 at step 3 is above config.max_train_loss=1e\+06: training diverged "
        r"\(this run started from scratch; newest checkpoint: step 2\)",
    ):
        train.train_and_evaluate(config, str(tmp_path / "a"))
    state, step = _restore(str(tmp_path / "a"), abstract_state(config))
    assert step == 2 and int(state.step) == 2
    # 0 disables the check: the same run finishes, with the loss it logged.
    done = train.train_and_evaluate(tiny_config(num_train_steps=6, max_train_loss=0.0), str(tmp_path / "b"))
    assert done["complete"] and done["steps"] == 6
    losses = [r["train/loss"] for r in _read_jsonl(tmp_path / "b" / "metrics.jsonl") if "train/loss" in r]
    assert losses[-1] > 1e19


def test_nan_gmp_angle_stops_run_before_saving_the_diverged_weights(tmp_path, monkeypatch):
    """Weights can diverge while the loss stays finite (1e26 seen): a NaN GMP angle stops the run."""
    real = train.algorithms.make_gmp_fn

    def poisoned(algo):
        fn = real(algo)

        def wrapped(fwd_params, fb_params, x, labels):
            dists, angles, ratios = fn(fwd_params, fb_params, x, labels)
            return dists, angles.at[0].set(jax.numpy.nan), ratios

        return wrapped

    monkeypatch.setattr(train.algorithms, "make_gmp_fn", poisoned)
    config = tiny_config(num_train_steps=6, gmp_every_steps=3, checkpoint_every_steps=2)
    with pytest.raises(
        train.NonFiniteError, match=r"gmp_angle/conv_0=nan at step 3 .*newest checkpoint: step 2"
    ):
        train.train_and_evaluate(config, str(tmp_path))
    _, step = _restore(str(tmp_path), abstract_state(config))
    assert step == 2


def test_missing_dataset_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    config = tiny_config(**{"data.name": "cifar10", "data.data_dir": str(tmp_path / "nowhere")})
    t0 = time.time()
    with pytest.raises(datasets.DatasetNotFoundError) as e:
        train.train_and_evaluate(config, str(tmp_path / "wd"))
    assert time.time() - t0 < 10
    assert "download_and_prepare" in str(e.value) and "nowhere" in str(e.value)
    assert not os.path.exists(tmp_path / "wd" / "checkpoints")


def test_bad_config_fails_before_writing_anything(tmp_path):
    config = tiny_config(**{"dtp.num_fb_iters": (2, 2)})
    with pytest.raises(config_base.ConfigError, match="config.dtp.num_fb_iters has 2 entries"):
        train.train_and_evaluate(config, str(tmp_path / "wd"))
    assert not os.path.exists(tmp_path / "wd")


@pytest.mark.parametrize(
    "name,split",
    [("mnist", "test"), ("fashion_mnist", "test"), ("cifar10", "test"), ("imagenet32", "validation")],
)
def test_end_to_end_under_tfds_mock_data(tmp_path, name, split):
    config = tiny_config(**{"data.name": name, "data.batch_size": 8, "data.eval_batch_size": 8})
    config.num_train_steps = 2
    config.gmp_every_steps = 0
    with tfds.testing.mock_data(num_examples=16):
        results = train.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == 2 and results["eval_set"] == split
    assert results["final_test_top5_accuracy"] >= results["final_test_accuracy"]
    assert os.path.exists(tmp_path / "results.json")
    assert "2" in os.listdir(tmp_path / "checkpoints")


def test_orbax_checkpoint_is_readable_without_jdtp(tmp_path):
    train.train_and_evaluate(tiny_config(num_train_steps=2), str(tmp_path))
    with ocp.CheckpointManager(str(tmp_path / "checkpoints")) as m:
        raw = m.restore(2)
    assert int(np.asarray(raw["default"]["step"] if "default" in raw else raw["step"])) == 2


def _tb_events(directory):
    """(wall_time, step, kind, tag) of every event in the TensorBoard files (TFRecord framing)."""
    import struct

    from tensorboardX.proto import event_pb2

    out = []
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log"):
                out.append((name, event.step, "session_log", event.session_log.status))
            for v in event.summary.value:
                out.append((name, event.step, "scalar", v.tag))
    return out


def test_resume_counts_wall_time_of_all_segments_and_purges_tensorboard(tmp_path):
    config = tiny_config()

    def sigterm_at_2(step, state):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train.train_and_evaluate(config, str(tmp_path), callbacks=[sigterm_at_2])
    assert first["preempted"] and not (tmp_path / "results.json").exists()
    second = train.train_and_evaluate(config, str(tmp_path))
    assert (
        second["complete"]
        and second["wall_time_s"] > second["segment_wall_time_s"] + 0.5 * first["wall_time_s"]
    )
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["wall_time_s"] == second["wall_time_s"] and saved["hardware"]["backend"] == "cpu"
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # TensorBoard: the resumed writer starts with a purge marker at the first redone step, so
    # readers drop the first segment's events after the checkpoint (no duplicate steps).
    events = _tb_events(str(tmp_path / "tensorboard"))
    files = sorted({e[0] for e in events})
    assert len(files) == 2
    starts = [e for e in events if e[0] == files[1] and e[2] == "session_log"]
    assert starts and starts[0][1] == 3 and starts[0][3] == 1  # SessionLog.START at step 3


def test_another_algorithm_in_a_workdir_stops_with_one_line(tmp_path):
    train.train_and_evaluate(tiny_config(num_train_steps=2), str(tmp_path))
    bp = tiny_config("bp", num_train_steps=2)
    with pytest.raises(
        config_base.ConfigError, match=r"holds a run with another config \(algorithm: dtp -> bp"
    ):
        train.train_and_evaluate(bp, str(tmp_path))
    bp.allow_config_change = True
    bp.num_train_steps = 4
    with pytest.raises(checkpointing.CheckpointError, match="another structure"):
        train.train_and_evaluate(bp, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]  # nothing was moved or deleted
