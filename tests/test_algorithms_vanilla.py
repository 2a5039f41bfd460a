"""Vanilla DTP and TP (jdtp.algorithms.vanilla, design §8.2): feedback loss, targets, GMP of their own update."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from helpers import build_algorithm, tiny_config

from jdtp import feedback
from jdtp import targets as tg


def _setup(name):
    algo = build_algorithm(tiny_config(name, **{f"{name}.fb_lr": (1e-3, 1e-3, 1e-3)}))
    state = algo.init_state(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    return algo, state, x, jnp.array([0, 1, 2, 3])


def test_vanilla_feedback_is_trained_on_the_reconstruction_loss():
    algo, state, x, labels = _setup("vanilla_dtp")
    key = jax.random.key(3)
    new, _ = algo.update(state, x, labels, key, phase="train")
    s, _ = tg.forward_pass(algo.net, state.fwd_params, x)
    n, block = 2, algo.net.blocks[2]
    tx = optax.sgd(1e-3, momentum=0.9)
    g, _, _ = feedback.scan_optimize(
        lambda g_, k: feedback.reconstruction_loss(block, g_, state.fwd_params[n], s[n], k, 0.1),
        state.fb_params[n],
        tx.init(state.fb_params[n]),
        tx,
        jax.random.fold_in(key, n),
        2,
    )
    chex.assert_trees_all_close(new.fb_params[n], g, rtol=1e-5, atol=1e-7)
    # G's bias is trained by the reconstruction loss (unlike L-DRL, where it cancels).
    assert not np.allclose(new.fb_params[n]["bias"], state.fb_params[n]["bias"])


def test_tp_gmp_uses_tp_targets():
    """TP's logged angle compares TP's own update (no difference correction), not DTP's."""
    algo, state, x, labels = _setup("tp")
    update, beta = algo.gmp_update(state.fwd_params, state.fb_params, x, labels)

    def tp_targets(s, aux):
        t_last = tg.output_target(s[-1], labels, beta)
        return tg.propagate_targets_tp(algo.net, state.fb_params, s, aux, t_last)

    ref, _ = tg.forward_update(algo.net, state.fwd_params, x, targets=tp_targets)
    chex.assert_trees_all_close(update, ref)
    dtp_update, _ = tg.dtp_forward_grads(algo.net, state.fwd_params, state.fb_params, x, labels, beta)
    assert not np.allclose(update[1]["kernel"], dtp_update[1]["kernel"])


def test_vanilla_dtp_gmp_uses_difference_targets():
    algo, state, x, labels = _setup("vanilla_dtp")
    update, beta = algo.gmp_update(state.fwd_params, state.fb_params, x, labels)
    ref, _ = tg.dtp_forward_grads(algo.net, state.fwd_params, state.fb_params, x, labels, beta)
    chex.assert_trees_all_close(update, ref)
