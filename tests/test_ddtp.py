"""s-DDTP / p-DDTP training (jdtp.ddtp): schedule, feedback-only steps, forward Adam, end to end."""

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdtp import config_base, ddtp, drl, train
from jdtp import networks as nets

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


def _tiny():
    net = nets.lenet((16, 16, 3), 10, channels=(4, 8), hidden=16, activation="tanh")
    hp = ddtp.DDTPHParams(
        target_stepsize=0.05,
        lr=(1e-3, 2e-3, 3e-3, 4e-3),
        eps=(1e-8, 1e-7, 1e-6, 1e-5),
        num_fb_iters=(2, 1, 3),
        drl=drl.DRLHParams(sigma=(0.01, 0.02, 0.03), lr=1e-3, eps=1e-8, weight_decay=1e-4),
    )
    x = jax.random.normal(jax.random.key(1), (6, 16, 16, 3))
    labels = jnp.arange(6) % 10
    return net, hp, x, labels


def test_schedule_sddtp_and_pddtp():
    s = [ddtp.phase_of_epoch(e, 10, 1) for e in range(15)]
    assert s == ["feedback"] * 10 + ["joint", "feedback", "joint", "feedback", "joint"]
    assert {ddtp.phase_of_epoch(e, 0, 0) for e in range(5)} == {"joint"}
    assert ddtp.total_epochs(40, 10, 1) == 90 and ddtp.total_epochs(40, 0, 0) == 40


def test_xavier_normal_forward_init_with_zero_biases():
    net = nets.lenet(activation="tanh")
    params = ddtp.init_forward_params(jax.random.key(0), net)
    for block, p in zip(net.blocks, params):
        if isinstance(block, nets.ConvBlock):
            k, cin, cout = block.kernel_size, block.in_shape[2], block.features
            std = math.sqrt(2.0 / (cin * k * k + cout * k * k))
        else:
            std = math.sqrt(2.0 / (block.in_features + block.features))
        np.testing.assert_allclose(float(jnp.std(p["kernel"])), std, rtol=0.1)
        assert float(jnp.abs(jnp.mean(p["kernel"]))) < 0.1 * std
        assert not np.any(np.asarray(p["bias"]))


def test_feedback_only_step_moves_q_and_not_the_forward_weights():
    net, hp, x, labels = _tiny()
    state = ddtp.create_train_state(jax.random.key(0), net, hp)
    fb_state, m = ddtp.ddtp_update(net, hp, state, x, labels, jax.random.key(2), "feedback")
    chex.assert_trees_all_equal(fb_state.fwd_params, state.fwd_params)
    chex.assert_trees_all_equal(fb_state.fwd_opt_state, state.fwd_opt_state)
    for q0, q1 in zip(state.fb_params, fb_state.fb_params):
        assert float(jnp.max(jnp.abs(q1["kernel"] - q0["kernel"]))) > 0
    chex.assert_shape((m["fb_loss_first"], m["fb_loss_last"]), (3,))
    joint, _ = ddtp.ddtp_update(net, hp, state, x, labels, jax.random.key(2), "joint")
    # Same feedback update in both phases (same key), but the forward weights move.
    chex.assert_trees_all_equal(joint.fb_params, fb_state.fb_params)
    for p0, p1 in zip(state.fwd_params, joint.fwd_params):
        assert float(jnp.max(jnp.abs(p1["kernel"] - p0["kernel"]))) > 0
    with pytest.raises(ValueError, match="phase"):
        ddtp.ddtp_update(net, hp, state, x, labels, jax.random.key(2), "both")


def test_first_joint_step_is_per_layer_adam_with_lr_over_eta():
    """Adam's first step is −lr·g/(|g| + ε) per element, with lr_i/η and ε_i of each block."""
    net, hp, x, labels = _tiny()
    state = ddtp.create_train_state(jax.random.key(0), net, hp)
    new, _ = ddtp.ddtp_update(net, hp, state, x, labels, jax.random.key(2), "joint")
    grads, _ = drl.ddtp_forward_grads(net, state.fwd_params, state.fb_params, x, labels, hp.target_stepsize)
    for i, (p0, p1, g) in enumerate(zip(state.fwd_params, new.fwd_params, grads)):
        lr = hp.lr[i] / hp.target_stepsize
        for name in p0:
            gn = np.asarray(g[name], np.float64)
            expected = np.asarray(p0[name]) - lr * gn / (np.abs(gn) + hp.eps[i])
            # Steps are ~lr = 0.02-0.08 per element; float32 g vs float64 leaves ~1e-7.
            np.testing.assert_allclose(np.asarray(p1[name]), expected, rtol=1e-5, atol=1e-6)


def test_validate_names_the_field():
    net, hp, _, _ = _tiny()
    bad = ddtp.DDTPHParams(**{**hp.__dict__, "eps": (1e-8,)})
    with pytest.raises(ValueError, match=r"ddtp.eps has 1 entries .* expected 4"):
        bad.validate(net)


def _load(name, variant):
    from absl import flags
    from ml_collections import config_flags

    arg = f"{os.path.join(CONFIG_DIR, name)}:{variant}"
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=["p"])
    fv(["p", f"--config={arg}"])
    return fv.config


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
    config = _load("ddtp_mnist.py", variant)
    with config.unlocked():
        _shrink(config)
        config.ddtp.float64 = variant.startswith("p")
    config_base.validate_config(config, 3)
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
