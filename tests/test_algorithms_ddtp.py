"""s-DDTP / p-DDTP (jdtp.algorithms.ddtp): schedule, feedback-only steps, forward Adam, end to end."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import build_algorithm, load_config, tiny_config

from jdtp import config_base, drl, train
from jdtp import networks as nets
from jdtp.algorithms import ddtp


def _tiny():
    config = tiny_config("ddtp", **{"model.activation": "tanh", "ddtp.eps": (1e-8, 1e-7, 1e-6, 1e-5)})
    algo = build_algorithm(config)
    x = jax.random.normal(jax.random.key(1), (6, 16, 16, 3))
    labels = jnp.arange(6) % 10
    return algo, algo.hp, x, labels


def test_schedule_sddtp_and_pddtp():
    s = [ddtp.phase_of_epoch(e, 10, 1) for e in range(15)]
    assert s == ["feedback"] * 10 + ["joint", "feedback", "joint", "feedback", "joint"]
    assert {ddtp.phase_of_epoch(e, 0, 0) for e in range(5)} == {"joint"}
    assert ddtp.total_epochs(40, 10, 1) == 90 and ddtp.total_epochs(40, 0, 0) == 40


def test_xavier_normal_forward_init_with_zero_biases():
    net = nets.lenet(activation="tanh")
    params = ddtp.init_forward_params(jax.random.key(0), net)
    stds = [
        math.sqrt(2.0 / (3 * 25 + 32 * 25)),  # conv: fans C_in·k², C_out·k²
        math.sqrt(2.0 / (32 * 25 + 64 * 25)),
        math.sqrt(2.0 / (4096 + 512)),  # dense: in, out
        math.sqrt(2.0 / (512 + 10)),
    ]
    for p, std in zip(params, stds, strict=True):
        np.testing.assert_allclose(float(jnp.std(p["kernel"])), std, rtol=0.1)
        assert float(jnp.abs(jnp.mean(p["kernel"]))) < 0.1 * std
        assert not np.any(np.asarray(p["bias"]))


def test_feedback_only_step_moves_q_and_not_the_forward_weights():
    algo, hp, x, labels = _tiny()
    state = algo.init_state(jax.random.key(0))
    fb_state, m = algo.update(state, x, labels, jax.random.key(2), phase="feedback")
    chex.assert_trees_all_equal(fb_state.fwd_params, state.fwd_params)
    chex.assert_trees_all_equal(fb_state.fwd_opt_state, state.fwd_opt_state)
    for q0, q1 in zip(state.fb_params, fb_state.fb_params, strict=True):
        assert float(jnp.max(jnp.abs(q1["kernel"] - q0["kernel"]))) > 0
    chex.assert_shape((m["fb_loss_first"], m["fb_loss_last"]), (3,))
    joint, _ = algo.update(state, x, labels, jax.random.key(2), phase="joint")
    # Same feedback update in both phases (same key), but the forward weights move.
    chex.assert_trees_all_equal(joint.fb_params, fb_state.fb_params)
    for p0, p1 in zip(state.fwd_params, joint.fwd_params, strict=True):
        assert float(jnp.max(jnp.abs(p1["kernel"] - p0["kernel"]))) > 0
    with pytest.raises(ValueError, match="phase"):
        algo.update(state, x, labels, jax.random.key(2), phase="both")


def test_first_joint_step_is_per_layer_adam_with_lr_over_eta():
    """Adam's first step is −lr·g/(|g| + ε) per element, with lr_i/η and ε_i of each block."""
    algo, hp, x, labels = _tiny()
    state = algo.init_state(jax.random.key(0))
    new, _ = algo.update(state, x, labels, jax.random.key(2), phase="joint")
    grads, _ = drl.ddtp_forward_grads(
        algo.net, state.fwd_params, state.fb_params, x, labels, hp.target_stepsize
    )
    for i, (p0, p1, g) in enumerate(zip(state.fwd_params, new.fwd_params, grads, strict=True)):
        lr = hp.lr[i] / hp.target_stepsize
        for name in p0:
            gn = np.asarray(g[name], np.float64)
            expected = np.asarray(p0[name]) - lr * gn / (np.abs(gn) + hp.eps[i])
            # Steps are ~lr = 0.02-0.08 per element; float32 g vs float64 leaves ~1e-7.
            np.testing.assert_allclose(np.asarray(p1[name]), expected, rtol=1e-5, atol=1e-6)


def test_validate_names_the_field():
    config = tiny_config("ddtp", **{"ddtp.eps": (1e-8,)})
    with pytest.raises(config_base.ConfigError, match=r"ddtp.eps has 1 entries .* expected 4"):
        build_algorithm(config)


def _shrink(c):
    c.model.channels = (4, 8)
    c.model.hidden = 16
    c.data.synthetic_shape = (12, 12, 1)
    c.mesh_devices = 1


@pytest.mark.parametrize("variant", ["smoke", "p,smoke"])
def test_train_and_evaluate_epoch_structure(tmp_path, variant):
    """s-DDTP: the feedback-only first epoch leaves the forward weights alone; p-DDTP trains every step.

    The p-DDTP case also runs in float64 (the reference's precision).
    """
    config = load_config("ddtp_mnist.py", variant)
    with config.unlocked():
        _shrink(config)
        config.ddtp.float64 = variant.startswith("p")
    seen = []

    def record(step, state):
        seen.append((step, jax.device_get(state.fwd_params[0]["kernel"]).copy()))

    results = train.train_and_evaluate(config, str(tmp_path), callbacks=[record])
    assert results["steps"] == 8 and results["algorithm"] == "ddtp"
    assert seen[0][1].dtype == (np.float64 if config.ddtp.float64 else np.float32)
    assert results["final_test_accuracy"] is not None
    per_epoch = 4  # 32 synthetic examples, batch 8
    moved = [not np.array_equal(k, seen[i - 1][1]) if i else None for i, (_, k) in enumerate(seen)]
    if variant == "smoke":  # epochs_fb = 1, extra_fb_epochs = 1: epoch 0 feedback-only, epoch 1 joint
        first = seen[0][1]
        assert all(np.array_equal(k, first) for _, k in seen[:per_epoch])
        assert all(moved[per_epoch + 1 :]) and not np.array_equal(seen[per_epoch][1], first)
    else:
        assert all(moved[1:])
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    keys = set().union(*records)
    for name in ("conv_0", "conv_1", "fc1"):
        assert f"train/fb_loss_first/{name}" in keys
        assert f"gmp_angle/{name}" in keys
    assert "eval/accuracy" in keys and (tmp_path / "results.json").exists()
