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

from jdtp import checkpointing, config_base, input_pipeline, steps, train


def tiny_config(**overrides):
    """LeNet (narrow) on synthetic 16×16×3 data: seconds per run on 2 cores."""
    c = config_base.get_base_config()
    c.model.channels = (4, 8)
    c.model.hidden = 16
    c.data.name = "synthetic"
    c.data.synthetic_shape = (16, 16, 3)
    c.data.synthetic_train_size = 64
    c.data.synthetic_eval_size = 24
    c.data.batch_size = 16
    c.data.eval_batch_size = 16
    c.dtp.noise_scale = (0.1, 0.1, 0.1)
    c.dtp.num_fb_iters = (2, 2, 2)
    c.dtp.fb_lr = (0.01, 0.01, 0.01)
    c.optim.lr = 0.01
    c.num_train_steps = 4
    c.log_every_steps = 1
    c.gmp_every_steps = 2
    c.checkpoint_every_steps = 2
    c.mesh_devices = 1
    for k, v in overrides.items():
        node = c
        *path, leaf = k.split(".")
        for p in path:
            node = node[p]
        node[leaf] = v
    return c


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _restore(workdir, like):
    manager = checkpointing.make_manager(workdir)
    state, step = checkpointing.restore_or_init(manager, like)
    checkpointing.wait_and_close(manager)
    return state, step


def _abstract_like(config):
    info = input_pipeline.get_info(config.data.name, config.data)
    net = train.build_network(config, info)
    fwd_tx, _ = train.make_fwd_tx(config, 4)
    hp = train.make_hparams(config)
    from jdtp import feedback

    txs = feedback.make_fb_optimizers(hp.fb_lr) if config.algorithm != "bp" else ()
    return steps.create_train_state(jax.random.key(0), net, fwd_tx, txs)


@pytest.mark.parametrize("algorithm", ["dtp", "bp"])
def test_end_to_end_synthetic_writes_everything(tmp_path, algorithm):
    config = tiny_config(algorithm=algorithm)
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
    like = _abstract_like(config)
    a, _ = _restore(str(tmp_path / "a"), like)
    b, _ = _restore(str(tmp_path / "b"), like)
    chex.assert_trees_all_equal(a, b)
    assert straight["final_test_accuracy"] == second["final_test_accuracy"]
    # metrics.jsonl of the resumed run has each step once.
    steps_logged = [r["step"] for r in _read_jsonl(tmp_path / "b" / "metrics.jsonl") if "train/loss" in r]
    assert steps_logged == [1, 2, 3, 4]


def test_nan_stops_run_naming_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    real = steps.make_dtp_train_step

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(state, batch, key):
            new_state, metrics = step(state, batch, key)
            bad = jax.numpy.where(new_state.step >= 3, jax.numpy.nan, 0.0)  # state was donated
            return new_state, {**metrics, "loss": metrics["loss"] + bad}

        return wrapped

    monkeypatch.setattr(train.steps, "make_dtp_train_step", poisoned)
    config = tiny_config(num_train_steps=6)
    with pytest.raises(
        train.NonFiniteError, match=r"train/loss=nan at step 3 \(last good checkpoint: step 2\)"
    ):
        train.train_and_evaluate(config, str(tmp_path))
    state, step = _restore(str(tmp_path), _abstract_like(config))
    assert step == 2 and int(state.step) == 2
    chex.assert_tree_all_finite(state.fwd_params)


def test_missing_dataset_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    config = tiny_config(**{"data.name": "cifar10", "data.data_dir": str(tmp_path / "nowhere")})
    t0 = time.time()
    with pytest.raises(input_pipeline.DatasetNotFoundError) as e:
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
