"""ParallelDTP (jdtp.algorithms.parallel_dtp, design §8.1): one step for all layers, tiled noise, Adam."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from helpers import build_algorithm, tiny_config

from jdtp import feedback
from jdtp import targets as tg
from jdtp.algorithms import parallel_dtp

SIGMA = (0.1, 0.2, 0.3)


def _setup(**overrides):
    config = tiny_config(
        "parallel_dtp",
        **{
            "parallel_dtp.noise_scale": SIGMA,
            "parallel_dtp.num_samples": 3,
            "parallel_dtp.fb_lr": 1e-2,
            **overrides,
        },
    )
    algo = build_algorithm(config)
    state = algo.init_state(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    return algo, state, x, jnp.array([0, 1, 2, 3])


def test_tile_repeats_each_example_consecutively():
    x = jnp.arange(6).reshape(3, 2)
    t = parallel_dtp.tile(x, 2)
    np.testing.assert_array_equal(np.asarray(t), np.array([[0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5]]))
    assert parallel_dtp.tile(None, 2) is None


def test_one_coupled_adam_step_for_every_layer_on_its_tiled_ldrl_loss():
    algo, state, x, labels = _setup()
    key = jax.random.key(5)
    new, metrics = algo.update(state, x, labels, key, phase="train")
    s, aux = tg.forward_pass(algo.net, state.fwd_params, x)
    lr, wd, eps = 1e-2, 1e-4, 1e-8
    for n in (1, 2, 3):
        tile = lambda a: None if a is None else jnp.repeat(a, 3, axis=0)  # noqa: E731
        # Independent gradient: autodiff of the L-DRL loss on the tiled batch (3 draws per example).
        loss, g = jax.value_and_grad(
            lambda g_, n=n: feedback.ldrl_loss(
                algo.net.blocks[n],
                g_,
                state.fwd_params[n],
                tile(s[n]),
                tile(s[n + 1]),
                jax.tree.map(tile, aux[n]),
                jax.random.fold_in(key, n),
                SIGMA[n - 1],
            )
        )(state.fb_params[n])
        np.testing.assert_allclose(metrics["fb_loss"][n - 1], loss, rtol=1e-4, atol=1e-6)
        # First Adam step with coupled weight decay: θ − lr·ĝ/(|ĝ| + ε), ĝ = g + wd·θ.
        for name, p0 in state.fb_params[n].items():
            gn = np.asarray(g[name], np.float64) + wd * np.asarray(p0, np.float64)
            expected = np.asarray(p0) - lr * gn / (np.abs(gn) + eps)
            np.testing.assert_allclose(np.asarray(new.fb_params[n][name]), expected, rtol=1e-4, atol=2e-5)
    chex.assert_trees_all_equal(new.fb_params[0], state.fb_params[0])  # G^0 is never trained


def test_forward_update_uses_the_updated_feedback_weights():
    algo, state, x, labels = _setup()
    new, _ = algo.update(state, x, labels, jax.random.key(5), phase="train")
    grads, _ = tg.dtp_forward_grads(algo.net, state.fwd_params, new.fb_params, x, labels, algo.hp.beta)
    updates, _ = algo.fwd_tx.update(grads, state.fwd_opt_state, state.fwd_params)
    expected = jax.tree.map(lambda p, u: p + u, state.fwd_params, updates)
    chex.assert_trees_all_close(new.fwd_params, expected, rtol=1e-5, atol=1e-7)


def test_variant_takes_beta_and_sigma_from_the_experiment():
    from helpers import load_config

    c = load_config("lenet_mnist.py", "parallel_dtp")
    mnist = load_config("lenet_mnist.py")
    assert c.parallel_dtp.beta == mnist.dtp.beta and tuple(c.parallel_dtp.noise_scale) == tuple(
        mnist.dtp.noise_scale
    )
    assert (
        c.parallel_dtp.fb_lr == 3e-4
        and c.parallel_dtp.num_samples == 10
        and "dtp" not in c
        and "optim" not in c
    )
