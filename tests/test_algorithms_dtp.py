"""L-DRL DTP's step (jdtp.algorithms.dtp): per-layer hyperparameters, order of updates, keys."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import build_algorithm, tiny_config

from jdtp import algorithms, config_base, feedback
from jdtp import targets as tg

SIGMA = (0.05, 0.2, 0.4)
FB_LR = (0.003, 0.02, 0.05)
K = (2, 3, 4)


def _setup(**overrides):
    config = tiny_config(
        "dtp",
        **{"dtp.noise_scale": SIGMA, "dtp.fb_lr": FB_LR, "dtp.num_fb_iters": K, "dtp.beta": 0.3, **overrides},
    )
    algo = build_algorithm(config)
    state = algo.init_state(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    labels = jnp.array([0, 1, 2, 3])
    return config, algo, state, x, labels


@pytest.mark.parametrize("unpool_mode", ["set", "add"])
def test_step_equals_each_layer_trained_alone_with_its_own_values(unpool_mode):
    """Layer n's σ_n, lr_n and K_n (forward order, G^1 first) and nothing else shape G^n."""
    _, algo, state, x, labels = _setup(**{"dtp.unpool_mode": unpool_mode})
    key = jax.random.key(7)
    new, _ = jax.jit(lambda s, k: algo.update(s, x, labels, k, phase="train"))(state, key)
    s, aux = tg.forward_pass(algo.net, state.fwd_params, x)
    alone = list(state.fb_params)
    for n in (1, 2, 3):
        tx = optax.sgd(FB_LR[n - 1], momentum=0.9)
        alone[n], _, _ = feedback.train_feedback_layer(
            algo.net.blocks[n],
            state.fb_params[n],
            tx.init(state.fb_params[n]),
            tx,
            state.fwd_params[n],
            s[n],
            s[n + 1],
            aux[n],
            jax.random.fold_in(key, n),
            num_fb_iters=K[n - 1],
            sigma=SIGMA[n - 1],
            unpool_mode=unpool_mode,
        )
        assert not np.allclose(alone[n]["kernel"], state.fb_params[n]["kernel"])
    chex.assert_trees_all_close(new.fb_params, tuple(alone), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(new.fb_params[0], state.fb_params[0])  # G^0 is never trained
    # The forward update uses the *new* feedback weights (feedback training comes first, design §1.1).
    grads, _ = tg.dtp_forward_grads(
        algo.net, state.fwd_params, tuple(alone), x, labels, 0.3, unpool_mode=unpool_mode
    )
    updates, _ = algo.fwd_tx.update(grads, state.fwd_opt_state, state.fwd_params)
    chex.assert_trees_all_close(
        new.fwd_params, optax.apply_updates(state.fwd_params, updates), rtol=1e-5, atol=1e-6
    )


def test_reversed_per_layer_lists_change_the_result():
    """Control for the test above: the same values in reverse order give other feedback weights."""
    _, algo, state, x, labels = _setup()
    _, rev, _, _, _ = _setup(**{"dtp.noise_scale": SIGMA[::-1], "dtp.fb_lr": FB_LR[::-1]})
    a, _ = algo.update(state, x, labels, jax.random.key(7), phase="train")
    b, _ = rev.update(state, x, labels, jax.random.key(7), phase="train")
    assert not np.allclose(a.fb_params[1]["kernel"], b.fb_params[1]["kernel"])


def test_metrics_have_one_entry_per_trainable_feedback_block():
    _, algo, state, x, labels = _setup()
    chex.clear_trace_counter()

    @chex.assert_max_traces(n=1)
    def update(state, key):
        return algo.update(state, x, labels, key, phase="train")

    step = jax.jit(update)
    for i in range(2):
        state, metrics = step(state, jax.random.key(i))
    for k in ("fb_loss_first", "fb_loss_last", "jmc_angle", "jmc_dist"):
        chex.assert_shape(metrics[k], (3,))
    names = algo.scalars(jax.device_get(metrics), "train")
    assert {"jmc_angle/conv_1", "jmc_angle/fc1", "jmc_angle/fc2", "train/fb_loss_last/conv_1"} <= set(names)
    assert "jmc_angle/conv_0" not in names  # G^0 is not trained


def test_hparam_lengths_are_validated():
    config = tiny_config("dtp", **{"dtp.noise_scale": (0.1, 0.1)})
    with pytest.raises(config_base.ConfigError, match=r"config.dtp.noise_scale has 2 entries .* expected 3"):
        build_algorithm(config)


def test_gmp_update_is_the_dtp_update_at_gmp_beta():
    _, algo, state, x, labels = _setup(**{"dtp.gmp_beta": 0.01})
    update, nudge = algo.gmp_update(state.fwd_params, state.fb_params, x, labels)
    ref, _ = tg.dtp_forward_grads(algo.net, state.fwd_params, state.fb_params, x, labels, 0.01)
    assert nudge == 0.01
    chex.assert_trees_all_close(update, ref)
    assert algorithms.make_gmp_fn(algo) is not None


@pytest.mark.parametrize("name", ["dtp", "vanilla_dtp"])
def test_concurrent_mode_step_equals_sequential_step(name):
    batch = {"image": jax.random.normal(jax.random.key(1), (4, 16, 16, 3)), "label": jnp.array([0, 1, 2, 3])}
    out = {}
    for mode in ("sequential", "concurrent"):
        algo = build_algorithm(
            tiny_config(name, **{f"{name}.feedback_mode": mode, f"{name}.num_fb_iters": K})
        )
        step = algorithms.make_train_steps(algo, donate=False)["train"]
        out[mode], _ = step(algo.init_state(jax.random.key(0)), batch, jax.random.key(3))
    chex.assert_trees_all_close(out["concurrent"], out["sequential"], rtol=1e-5, atol=1e-7)
