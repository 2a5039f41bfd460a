"""Distance and angle metrics (spec §6)."""

import jax
import jax.numpy as jnp
import numpy as np

from jdtp import metrics as mt
from jdtp import networks as nets


def test_distance_and_angle_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2))
    np.testing.assert_allclose(
        float(mt.relative_distance(a, b)), np.sqrt(((a - b) ** 2).sum() / (a**2).sum()), rtol=1e-5
    )
    cos = (a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))
    np.testing.assert_allclose(float(mt.angle(a, b)), np.degrees(np.arccos(cos)), rtol=1e-4)
    np.testing.assert_allclose(float(mt.angle(a, 3 * a)), 0.0, atol=0.05)
    np.testing.assert_allclose(float(mt.angle(a, -a)), 180.0, atol=0.05)
    # Distance is relative to the first argument, so it is not symmetric.
    assert abs(float(mt.relative_distance(a, 2 * a)) - 1.0) < 1e-5
    assert abs(float(mt.relative_distance(2 * a, a)) - 0.5) < 1e-5


def test_jmc_metrics_zero_for_adjoint_and_compare_transposed_dense():
    net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=6)
    fwd, fb = nets.init_params(jax.random.key(0), net)
    dists, angles = mt.jmc_metrics(net, fwd, nets.symmetric_fb_params(net, fwd))
    np.testing.assert_allclose(np.asarray(dists), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(angles), 0.0, atol=0.05)
    dists, angles = mt.jmc_metrics(net, fwd, fb)
    assert dists.shape == (3,)
    expected = mt.angle(fwd[2]["kernel"], fb[2]["kernel"].T)
    np.testing.assert_allclose(float(angles[1]), float(expected), rtol=1e-6)
    assert float(jnp.min(angles)) > 60  # random init is near-orthogonal


def test_gmp_metrics_is_scale_invariant_in_angle_and_scales_distance():
    g = ({"kernel": jnp.array([[1.0, 2.0]]), "bias": jnp.array([5.0])},)
    d, a = mt.gmp_metrics(g, g, beta=1.0)
    np.testing.assert_allclose(np.asarray(d), 0.0, atol=1e-6)
    d, a2 = mt.gmp_metrics(jax.tree.map(lambda x: 0.1 * x, g), g, beta=0.1)
    np.testing.assert_allclose(np.asarray(d), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(a2), np.asarray(a), atol=1e-3)


def test_top_k_accuracy():
    logits = jnp.array([[0.1, 0.5, 0.4], [0.9, 0.01, 0.09]])
    labels = jnp.array([2, 1])
    assert float(mt.accuracy(logits, labels)) == 0.0
    assert float(mt.top_k_accuracy(logits, labels, 2)) == 0.5
    assert float(mt.top_k_accuracy(logits, labels, 3)) == 1.0
