"""Forward optimizer: per-epoch cosine schedule and coupled weight decay (design §2.5-2.6)."""

import math

import chex
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdtp import algorithms, architectures, config_base, optim


def test_cosine_epoch_values_including_rise_after_t_max():
    lr0, eta_min, t_max = 0.05, 1e-5, 85
    for epoch in (0, 1, 40, 84, 85, 86, 89):
        expected = eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2
        np.testing.assert_allclose(
            float(optim.cosine_epoch_lr(epoch, lr0, t_max, eta_min)), expected, rtol=1e-6, atol=1e-9
        )
    np.testing.assert_allclose(float(optim.cosine_epoch_lr(85, lr0)), eta_min, rtol=1e-4)
    # After T_max the rate rises again (90-epoch runs, design §2.6).
    assert optim.cosine_epoch_lr(89, lr0) > optim.cosine_epoch_lr(86, lr0) > optim.cosine_epoch_lr(85, lr0)
    # 40-epoch runs only decay to ≈ 55 % of lr0.
    np.testing.assert_allclose(float(optim.cosine_epoch_lr(39, lr0)) / lr0, 0.5628, atol=2e-3)


def test_schedule_is_constant_within_an_epoch():
    sched = optim.make_schedule(0.1, steps_per_epoch=10)
    vals = [float(sched(c)) for c in range(30)]
    assert vals[0] == vals[9] and vals[10] == vals[19] < vals[9]
    np.testing.assert_allclose(vals[0], 0.1, rtol=1e-6)
    np.testing.assert_allclose(vals[25], float(optim.cosine_epoch_lr(2, 0.1)), rtol=1e-6)
    step = optim.make_schedule(0.01, steps_per_epoch=2, kind="step", step_size=30)
    np.testing.assert_allclose([float(step(59)), float(step(60))], [0.01, 0.001], rtol=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        optim.make_schedule(0.1, 10, kind="linear")


def test_fwd_optimizer_is_pytorch_sgd_with_coupled_weight_decay():
    """buf ← μ·buf + (g + wd·θ); θ ← θ − lr·buf, with PyTorch's first step buf = g + wd·θ."""
    lr, mu, wd = 0.1, 0.9, 1e-2
    tx = optim.make_fwd_optimizer(optax.constant_schedule(lr), mu, wd)
    theta = {"w": jnp.array([1.0, -2.0, 3.0])}
    state = tx.init(theta)
    grads = [np.array([0.5, 0.1, -0.2]), np.array([-0.3, 0.2, 0.4]), np.array([0.1, 0.1, 0.1])]
    ref_theta, buf = np.array([1.0, -2.0, 3.0]), None
    for g in grads:
        d = g + wd * ref_theta
        buf = d if buf is None else mu * buf + d
        ref_theta = ref_theta - lr * buf
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, theta)
        theta = optax.apply_updates(theta, updates)
    chex.assert_trees_all_close(theta["w"], jnp.asarray(ref_theta, jnp.float32), rtol=1e-6)


def test_adam_forward_optimizer_is_pytorch_adam_with_coupled_weight_decay_and_the_schedule():
    """optim.optimizer='adam': m, v of g + wd·θ, bias-corrected, θ ← θ − lr_e·m̂/(√v̂ + eps), lr_e per epoch."""
    o = optim.default_config()
    o.optimizer, o.lr, o.weight_decay, o.schedule, o.t_max = "adam", 0.01, 1e-2, "cosine", 4
    tx, schedule = optim.forward_optimizer(o, num_layers=1)(steps_per_epoch=2)
    theta = {"w": jnp.array([1.0, -2.0, 3.0])}
    state = tx.init(theta)
    grads = [np.array([0.5, 0.1, -0.2]), np.array([-0.3, 0.2, 0.4]), np.array([0.1, 0.1, 0.1])]
    ref, m, v = np.array([1.0, -2.0, 3.0]), np.zeros(3), np.zeros(3)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t, g in enumerate(grads, start=1):
        d = g + 1e-2 * ref
        m, v = b1 * m + (1 - b1) * d, b2 * v + (1 - b2) * d**2
        lr_e = 1e-5 + (0.01 - 1e-5) * (1 + np.cos(np.pi * ((t - 1) // 2) / 4)) / 2  # epoch (t-1)//2
        ref = ref - lr_e * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, theta)
        theta = optax.apply_updates(theta, updates)
    chex.assert_trees_all_close(theta["w"], jnp.asarray(ref, jnp.float32), rtol=1e-5)
    np.testing.assert_allclose(float(schedule(2)), float(optim.cosine_epoch_lr(1, 0.01, 4)), rtol=1e-6)


def test_unknown_forward_optimizer_fails_naming_the_field():
    o = optim.default_config()
    o.lr, o.optimizer = 0.1, "rmsprop"
    with pytest.raises(
        optim.cc.ConfigError, match=r"config.optim.optimizer='rmsprop', expected one of \('sgd', 'adam'\)"
    ):
        optim.validate_config(o)


def test_layer_lr_scale_multiplies_each_layers_step_after_the_optimizer():
    """layer n moves by scales[n] times the unscaled optimizer's step (weight decay included)."""
    o = optim.default_config()
    o.lr, o.optimizer, o.weight_decay = 0.01, "adam", 1e-2
    plain, _ = optim.forward_optimizer(o, num_layers=3)(steps_per_epoch=2)
    o.layer_lr_scale = (0.0, 0.5, 1.0)
    scaled, _ = optim.forward_optimizer(o, num_layers=3)(steps_per_epoch=2)
    params = tuple({"w": jnp.array([1.0, -2.0]) * (n + 1)} for n in range(3))
    s_plain, s_scaled = plain.init(params), scaled.init(params)
    rng = np.random.default_rng(0)
    for _ in range(3):  # the optimizer's state is the unscaled one: the factor acts after it
        grads = tuple({"w": jnp.asarray(rng.normal(size=2), jnp.float32)} for _ in range(3))
        u_plain, s_plain = plain.update(grads, s_plain, params)
        u_scaled, s_scaled = scaled.update(grads, s_scaled, params)
        assert np.all(np.asarray(u_scaled[0]["w"]) == 0.0) and np.any(np.asarray(u_plain[0]["w"]) != 0)
        chex.assert_trees_all_close(u_scaled[1]["w"], 0.5 * u_plain[1]["w"], rtol=1e-6)
        chex.assert_trees_all_equal(u_scaled[2], u_plain[2])


def test_layer_lr_scale_needs_one_nonnegative_entry_per_forward_layer():
    config = config_base.load_config_file("configs/lenet_fmnist.py", "bp")
    net = architectures.build_from_config(config.model, (28, 28, 1), 10)
    assert len(net.block_names) == 4
    config.optim.layer_lr_scale = (1.0, 1.0, 0.0)
    with pytest.raises(
        optim.cc.ConfigError,
        match=r"config.optim.layer_lr_scale has 3 entries .*expected 4: one per forward layer",
    ):
        algorithms.create(config, net)
    config.optim.layer_lr_scale = (1.0, -1.0, 1.0, 1.0)
    with pytest.raises(optim.cc.ConfigError, match=r"config.optim.layer_lr_scale\[1\]=-1.0, expected >= 0"):
        algorithms.create(config, net)
