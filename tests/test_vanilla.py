"""Vanilla DTP and TP baselines (paper Alg. 1, spec §8.2)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_train import tiny_config

from jdtp import dtp, feedback, train, vanilla
from jdtp import networks as nets


def test_reconstruction_loss_matches_float64_numpy():
    with jax.enable_x64(True):
        block = nets.DenseBlock("d", (5,), 4, "elu")
        f, g = nets.init_block(jax.random.key(0), block, jnp.float64)
        x = jax.random.normal(jax.random.key(1), (6, 5), jnp.float64)
        key, sigma = jax.random.key(2), 0.3
        got = float(vanilla.reconstruction_loss(block, g, f, x, key, sigma))
        xn = np.asarray(x + sigma * jax.random.normal(key, x.shape, x.dtype))
    W, b, V, c = (np.asarray(a) for a in (f["kernel"], f["bias"], g["kernel"], g["bias"]))
    elu = lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0)))  # noqa: E731
    r = elu(elu(xn @ W + b)) @ V + c  # G applies ELU to its input, bias active
    np.testing.assert_allclose(got, np.mean(np.sum((xn - r) ** 2, 1)), rtol=1e-10)


def test_reconstruction_training_inverts_an_invertible_linear_layer():
    """For square invertible W, E‖(x+dx) − V W (x+dx) − c‖² is minimised by V = W⁻¹ (c = 0)."""
    block = nets.DenseBlock("d", (4,), 4, "identity")
    f, g = nets.init_block(jax.random.key(0), block)
    f = {"kernel": jnp.eye(4) + 0.3 * jax.random.normal(jax.random.key(3), (4, 4)), "bias": jnp.zeros(4)}
    x = jax.random.normal(jax.random.key(1), (256, 4))
    tx = optax.sgd(0.02, momentum=0.9)
    run = jax.jit(
        lambda g, st: feedback.scan_optimize(
            lambda g_, k: vanilla.reconstruction_loss(block, g_, f, x, k, 0.3),
            g,
            st,
            tx,
            jax.random.key(2),
            1500,
        )
    )
    g, _, losses = run(g, tx.init(g))
    # Row-vector convention: G(F(x)) = x W V, so V = W⁻¹.
    np.testing.assert_allclose(np.asarray(g["kernel"]), np.linalg.inv(np.asarray(f["kernel"])), atol=0.05)
    assert float(losses[-1]) < 0.05 * float(losses[0])


def test_tp_targets_have_no_difference_correction():
    net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=6)
    fwd, fb = nets.init_params(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 2))
    s, idx = dtp.forward_pass(net, fwd, x)
    t_last = dtp.output_target(s[-1], jnp.array([0, 1, 2, 0]), 0.5)
    t = vanilla.propagate_targets_tp(net, fb, s, idx, t_last)
    expected = nets.feedback_block(net.blocks[3], fb[3], t_last, None)
    chex.assert_trees_all_close(t[3], expected)
    chex.assert_trees_all_close(t[2], nets.feedback_block(net.blocks[2], fb[2], expected, None), atol=1e-6)
    t_dtp = dtp.propagate_targets(net, fb, s, idx, t_last)
    assert not np.allclose(t[3], t_dtp[3])


@pytest.mark.parametrize("algorithm", vanilla.ALGORITHMS)
def test_vanilla_and_tp_train_end_to_end(tmp_path, algorithm):
    results = train.train_and_evaluate(tiny_config(algorithm=algorithm, gmp_every_steps=0), str(tmp_path))
    assert results["steps"] == 4 and results["algorithm"] == algorithm
    assert np.isfinite(results["final_test_loss"])
