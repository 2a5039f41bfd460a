"""Distance and angle metrics (design §6)."""

import jax
import jax.numpy as jnp
import numpy as np

from jdtp import blocks as blk
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
    net = nets.Network("one", (blk.DenseBlock("d", (2,), 1, "identity"),))
    g = ({"kernel": jnp.array([[1.0], [2.0]]), "bias": jnp.array([5.0])},)
    d, a = mt.gmp_metrics(net, g, g, nudge=1.0)
    np.testing.assert_allclose(np.asarray(d), 0.0, atol=1e-6)
    d, a2 = mt.gmp_metrics(net, jax.tree.map(lambda x: 0.1 * x, g), g, nudge=0.1)
    np.testing.assert_allclose(np.asarray(d), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(a2), np.asarray(a), atol=1e-3)
    # Biases are not compared: a different bias changes nothing.
    other = ({"kernel": g[0]["kernel"], "bias": jnp.array([-7.0])},)
    np.testing.assert_allclose(np.asarray(mt.gmp_metrics(net, other, g, 1.0)[1]), np.asarray(a), atol=1e-6)


def test_gmp_norm_ratio_is_the_update_length_over_the_gradient_length_weights_only():
    net = nets.Network("one", (blk.DenseBlock("d", (2,), 1, "identity"),))
    g = ({"kernel": jnp.array([[3.0], [4.0]]), "bias": jnp.array([5.0])},)
    # an update of 0.1 * 2.5 * g with nudge 0.1 is 2.5 BP gradients long, whatever its bias
    update = ({"kernel": 0.25 * g[0]["kernel"], "bias": jnp.array([100.0])},)
    np.testing.assert_allclose(np.asarray(mt.gmp_norm_ratios(net, update, g, nudge=0.1)), [2.5], rtol=1e-6)
    rotated = ({"kernel": jnp.array([[-4.0], [3.0]]), "bias": g[0]["bias"]},)  # orthogonal, same length
    np.testing.assert_allclose(np.asarray(mt.gmp_norm_ratios(net, rotated, g, nudge=1.0)), [1.0], rtol=1e-6)


def test_gmp_and_jmc_concatenate_the_weights_of_a_block():
    """A block with several weights is compared as one vector (numpy oracle)."""
    rng = np.random.default_rng(0)
    w1, w2, b1, b2 = (rng.normal(size=s).astype(np.float32) for s in ((3, 4), (2, 5), (3, 4), (2, 5)))

    class TwoKernels(blk.DenseBlock):
        def param_specs(self):
            return (
                (
                    blk.ParamSpec("k1", (3, 4), 3),
                    blk.ParamSpec("k2", (2, 5), 2),
                    blk.ParamSpec("b", (1,), 1, weight=False),
                ),
                (blk.ParamSpec("k1", (3, 4), 3), blk.ParamSpec("k2", (2, 5), 2)),
            )

        def jmc_pairs(self, f, g):
            return ((f["k1"], g["k1"]), (f["k2"], g["k2"]))

    block = TwoKernels("two", (3,), 4)
    net = nets.Network("two", (block, block.__class__("two_b", (3,), 4)))
    f = {"k1": jnp.asarray(w1), "k2": jnp.asarray(w2), "b": jnp.zeros(1)}
    g = {"k1": jnp.asarray(b1), "k2": jnp.asarray(b2), "b": jnp.ones(1)}
    a, b = np.concatenate([w1.ravel(), w2.ravel()]), np.concatenate([b1.ravel(), b2.ravel()])
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    _, gmp_angles = mt.gmp_metrics(net, (f, f), (g, g), nudge=1.0)
    np.testing.assert_allclose(np.asarray(gmp_angles), np.degrees(np.arccos(cos)), rtol=1e-5)
    dists, jmc_angles = mt.jmc_metrics(net, (f, f), (g, g))
    np.testing.assert_allclose(float(jmc_angles[0]), np.degrees(np.arccos(cos)), rtol=1e-5)
    np.testing.assert_allclose(float(dists[0]), np.linalg.norm(a - b) / np.linalg.norm(a), rtol=1e-5)


def test_top_k_accuracy():
    logits = jnp.array([[0.1, 0.5, 0.4], [0.9, 0.01, 0.09]])
    labels = jnp.array([2, 1])
    assert float(mt.accuracy(logits, labels)) == 0.0
    assert float(mt.top_k_accuracy(logits, labels, 2)) == 0.5
    assert float(mt.top_k_accuracy(logits, labels, 3)) == 1.0


def test_gmp_pairs_each_layer_with_its_own_bp_gradient_where_layers_share_a_shape():
    """Through the algorithm interface (make_gmp_fn): layers 1 and 2 have the same shape, so pairing
    a layer's update with another layer's gradient would go unnoticed by shapes; here each angle
    is recomputed independently (float64 NumPy, BP gradient by jax.grad of a plain forward)."""
    from helpers import tiny_config

    from jdtp import algorithms

    net = nets.Network(
        "mlp",
        (
            blk.DenseBlock("d0", (6,), 8, "elu"),
            blk.DenseBlock("d1", (8,), 8, "elu"),
            blk.DenseBlock("d2", (8,), 8, "elu"),
            blk.DenseBlock("d3", (8,), 3, "identity"),
        ),
    )
    config = tiny_config(**{"dtp.gmp_beta": 0.01})
    algo = algorithms.create(config, net, steps_per_epoch=4)
    state = algo.init_state(jax.random.key(0))
    # G = Fᵀ: every layer's update is close to its own BP gradient, far from the other's.
    state = state.replace(fb_params=nets.symmetric_fb_params(net, state.fwd_params))
    x = jax.random.normal(jax.random.key(1), (16, 6))
    labels = jnp.arange(16) % 3
    _, angles, ratios = algorithms.make_gmp_fn(algo)(state.fwd_params, state.fb_params, x, labels)

    update, nudge = algo.gmp_update(state.fwd_params, state.fb_params, x, labels)

    def loss(fwd):
        h = x
        for block, p in zip(net.blocks, fwd, strict=True):
            h, _ = block.forward(p, h)
        return jnp.mean(-jax.nn.log_softmax(h)[jnp.arange(16), labels])

    bp = jax.grad(loss)(state.fwd_params)

    def np_angle(a, b):
        a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
        return np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8), -1, 1)))

    want = [np_angle(update[n]["kernel"] / nudge, bp[n]["kernel"]) for n in range(4)]
    np.testing.assert_allclose(np.asarray(angles), want, atol=0.05)
    norm = lambda a: np.linalg.norm(np.asarray(a, np.float64))  # noqa: E731
    want_ratios = [norm(update[n]["kernel"]) / float(nudge) / norm(bp[n]["kernel"]) for n in range(4)]
    np.testing.assert_allclose(np.asarray(ratios), want_ratios, rtol=1e-4)
    crossed = np_angle(update[1]["kernel"] / nudge, bp[2]["kernel"])
    assert max(want) < 20.0 and crossed > 60.0, (want, crossed)  # the wrong pairing would show
