"""DRL / DDTP-linear baseline: targets, update, loss, Adam and call semantics (design §7, §8.4)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdtp import blocks as blk
from jdtp import ddtp_configs, drl, feedback
from jdtp import metrics as mt
from jdtp import networks as nets
from jdtp import targets as tg

_CIFAR = ddtp_configs.S_DDTP["cifar10"]


def _hp(**kw):
    """DRL hyperparameters: the fork's CIFAR-10 values unless given."""
    defaults = dict(
        sigma=_CIFAR["sigma"][0], lr=_CIFAR["lr_fb"], eps=_CIFAR["eps_fb"], weight_decay=_CIFAR["feedback_wd"]
    )
    return drl.DRLHParams(**{**defaults, **kw})


def _np_elu(z):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def _linear_net(fin=3, hidden=6, out=4):
    """x → s^1 (hidden, linear) → s^2 = s^1 W (out): one hidden layer with a linear F = W."""
    return nets.Network(
        "linear",
        (
            blk.DenseBlock("d0", (fin,), hidden, "identity", use_bias=False),
            blk.DenseBlock("d1", (hidden,), out, "identity", use_bias=False),
        ),
    )


def _mlp(dims=(5, 4, 3), classes=3):
    blocks, shape = [], (dims[0],)
    for i, d in enumerate(dims[1:]):
        blocks.append(blk.DenseBlock(f"fc{i}", shape, d, "elu"))
        shape = (d,)
    blocks.append(blk.DenseBlock("out", shape, classes, "identity"))
    return nets.Network("mlp", tuple(blocks))


def test_drl_converges_to_pseudo_inverse_and_ldrl_to_transpose():
    """Spec §7.1 oracle: for a linear layer F(h) = hW, DRL → Q = W⁺, L-DRL → G = Wᵀ."""
    net = _linear_net()
    fwd, fb = nets.init_params(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (256, 3))
    s, _ = tg.forward_pass(net, fwd, x)
    w = np.asarray(fwd[1]["kernel"])  # [6, 4]
    pinv, wt = np.linalg.pinv(w), w.T  # both [4, 6]

    hp = _hp(sigma=0.1, lr=0.01, eps=1e-8, weight_decay=0.0)
    q0 = drl.init_direct_feedback(jax.random.key(2), net)
    train_drl = jax.jit(lambda q, st, s_, k: drl.train_feedback(net, fwd, q, st, s_, k, (1500,), hp))
    q, _, losses = train_drl(q0, drl.init_opt_state(q0), s, jax.random.key(3))
    q_drl = np.asarray(q[0]["kernel"])

    block, tx = net.blocks[1], optax.sgd(0.5, momentum=0.9)
    train_ldrl = jax.jit(
        lambda g, st, k: feedback.train_feedback_layer(
            block, g, st, tx, fwd[1], s[1], s[2], None, k, num_fb_iters=600, sigma=0.1
        )
    )
    g, _, _ = train_ldrl(fb[1], tx.init(fb[1]), jax.random.key(4))
    g_ldrl = np.asarray(g["kernel"])

    assert float(mt.relative_distance(pinv, wt)) > 0.3  # the two limits really differ
    assert float(mt.relative_distance(pinv, q_drl)) < 0.05
    assert float(mt.relative_distance(wt, g_ldrl)) < 0.05
    assert float(mt.relative_distance(wt, q_drl)) > 0.3
    assert float(mt.relative_distance(pinv, g_ldrl)) > 0.3
    # At the optimum the DRL loss is E‖ξ(WQ − I)‖²/dim = (6 − 4)/6: the null space of Wᵀ is not reconstructed.
    np.testing.assert_allclose(float(jnp.mean(losses[0][-200:])), 2 / 6, rtol=0.1)


def test_ddtp_targets_and_forward_grads_match_float64_numpy():
    with jax.enable_x64(True):
        net = _mlp()
        fwd, _ = nets.init_params(jax.random.key(0), net, jnp.float64)
        q = drl.init_direct_feedback(jax.random.key(1), net, jnp.float64)
        x = jax.random.normal(jax.random.key(2), (6, 5), jnp.float64)
        labels = jnp.array([0, 1, 2, 0, 1, 2])
        eta = 0.7
        grads, aux = drl.ddtp_forward_grads(net, fwd, q, x, labels, eta)
    P = [{k: np.asarray(v) for k, v in p.items()} for p in fwd]
    Q = [np.asarray(p["kernel"]) for p in q]
    a, h = [None], [np.asarray(x)]
    for n, p in enumerate(P):
        a.append(h[-1] @ p["kernel"] + p["bias"])
        h.append(a[-1] if n == len(P) - 1 else _np_elu(a[-1]))
    soft = np.exp(h[3] - h[3].max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    t3 = h[3] - eta * (soft - np.eye(3)[np.asarray(labels)]) / 6  # mean-CE gradient: 1/B
    t = {3: t3, 1: t3 @ Q[0] + h[1] - h[3] @ Q[0], 2: t3 @ Q[1] + h[2] - h[3] @ Q[1]}
    for n in (1, 2, 3):
        np.testing.assert_allclose(np.asarray(aux["t"][n]), t[n], rtol=1e-10, atol=1e-13)
        # Reference FC rule: δ = 2 φ'(a) ⊙ (h − t), ∇W = h_prevᵀ δ / B, ∇b = mean_b δ.
        dphi = np.ones_like(a[n]) if n == 3 else np.where(a[n] > 0, 1.0, np.exp(np.minimum(a[n], 0)))
        delta = 2 * dphi * (h[n] - t[n])
        np.testing.assert_allclose(np.asarray(grads[n - 1]["kernel"]), h[n - 1].T @ delta / 6, rtol=1e-9)
        np.testing.assert_allclose(np.asarray(grads[n - 1]["bias"]), delta.mean(0), rtol=1e-9, atol=1e-15)


def test_ddtp_conv_update_is_mse_over_all_elements_and_output_angle_is_zero():
    """Conv blocks use mse_loss (mean over B·H·W·C); the output block's update is ∝ the BP gradient."""
    net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=6, use_bias=False)
    fwd, _ = nets.init_params(jax.random.key(0), net)
    q = drl.init_direct_feedback(jax.random.key(1), net)
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 2))
    labels = jnp.array([0, 1, 2, 0])
    grads, aux = jax.jit(lambda *a: drl.ddtp_forward_grads(net, *a, 0.5))(fwd, q, x, labels)
    s, t = aux["s"], aux["t"]
    for n in (0, 1):
        ref = jax.jit(jax.grad(lambda p, x_, t_, n=n: jnp.mean((net.blocks[n].forward(p, x_)[0] - t_) ** 2)))(
            fwd[n], s[n], t[n + 1]
        )
        chex.assert_trees_all_close(grads[n], ref, rtol=1e-5, atol=1e-8)
    bp, _ = jax.jit(lambda *a: tg.bp_grads(net, *a))(fwd, x, labels)

    def cos(a, b):  # float64, no epsilon: these updates are tiny (∝ 1/B²), design §6.1's +1e-8 would bias
        a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    assert cos(grads[3]["kernel"], bp[3]["kernel"]) > 1 - 1e-6
    assert cos(grads[0]["kernel"], bp[0]["kernel"]) < 0.98  # random Q: far from BP in the first layer


def test_drl_loss_matches_numpy_with_the_same_noise():
    with jax.enable_x64(True):
        net = _mlp()
        fwd, _ = nets.init_params(jax.random.key(0), net, jnp.float64)
        q = drl.init_direct_feedback(jax.random.key(1), net, jnp.float64)
        x = jax.random.normal(jax.random.key(2), (6, 5), jnp.float64)
        s, _ = tg.forward_pass(net, fwd, x)
        key, sigma, n = jax.random.key(3), 0.05, 1
        got = drl.drl_loss(net, fwd, q[0], n, s, key, sigma)
        xi = np.asarray(jax.random.normal(key, s[n].shape, jnp.float64))
        for sem in drl.SEMANTICS:  # the whole training call stays in float64
            hp = _hp(sigma=sigma, semantics=sem)
            q2, st, losses = _jit_train(net, fwd, (2, 1), hp)(q, drl.init_opt_state(q), s, key)
            assert (
                all(p["kernel"].dtype == jnp.float64 for p in q2) and st.mu[0]["kernel"].dtype == jnp.float64
            )
            assert losses[0].dtype == jnp.float64 and losses[0].shape == (2,)
    P = [{k: np.asarray(v) for k, v in p.items()} for p in fwd]
    h, hN, Q = np.asarray(s[n]), np.asarray(s[-1]), np.asarray(q[0]["kernel"])
    h_noisy = h + sigma * xi
    o = _np_elu(h_noisy @ P[1]["kernel"] + P[1]["bias"]) @ P[2]["kernel"] + P[2]["bias"]
    r = o @ Q + h - hN @ Q
    np.testing.assert_allclose(float(got), np.mean((r - h_noisy) ** 2) / sigma**2, rtol=1e-10)


def test_init_direct_feedback_shapes_and_xavier_std():
    net = nets.lenet()
    q = drl.init_direct_feedback(jax.random.key(0), net)
    assert [p["kernel"].shape for p in q] == [(10, 32 * 16 * 16), (10, 64 * 8 * 8), (10, 512)]
    for p in q:
        d = p["kernel"].shape[1]
        np.testing.assert_allclose(float(jnp.std(p["kernel"])), np.sqrt(2 / (10 + d)), rtol=0.1)


def test_adam_step_matches_pytorch_adam_with_coupled_weight_decay():
    hp = _hp(lr=0.01, eps=1e-6, weight_decay=0.1)
    q = ({"kernel": jnp.array([[0.5, -1.0]])}, {"kernel": jnp.array([[2.0]])})
    state = drl.init_opt_state(q)._replace(has_grad=jnp.array([True, False]))
    grads = ({"kernel": jnp.array([[0.3, 0.2]])}, {"kernel": jnp.array([[1.0]])})
    p, m, v = np.array([[0.5, -1.0]]), 0.0, 0.0
    for step in (1, 2, 3):
        q, state = drl.adam_step(q, grads, state, hp)
        g = np.array([[0.3, 0.2]]) + 0.1 * p  # torch: grad += wd·p before the moments
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        denom = np.sqrt(v) / np.sqrt(1 - 0.999**step) + 1e-6
        p = p - 0.01 / (1 - 0.9**step) * m / denom
        np.testing.assert_allclose(np.asarray(q[0]["kernel"]), p, rtol=1e-6)
    chex.assert_trees_all_equal(q[1]["kernel"], jnp.array([[2.0]]))  # no .grad: never stepped
    chex.assert_trees_all_equal(state.count, jnp.array([3, 0], jnp.int32))


def _jit_train(net, fwd, num_iters, hp, compute=None):
    """One jitted ``(q, state, s, key) -> (q, state, losses)`` DDTP feedback call."""
    return jax.jit(
        lambda q, st, s, k: drl.train_feedback(net, fwd, q, st, s, k, num_iters, hp, compute_grads=compute)
    )


def _two_hidden_problem():
    net = _mlp((5, 4, 3), classes=3)
    fwd, _ = nets.init_params(jax.random.key(0), net)
    q = drl.init_direct_feedback(jax.random.key(1), net)
    s, _ = tg.forward_pass(net, fwd, jax.random.normal(jax.random.key(2), (8, 5)))
    return net, fwd, q, s


@pytest.mark.parametrize("num_iters", [(3, 0), (0, 3)])
def test_fork_equals_original_when_one_layer_trains(num_iters):
    net, fwd, q, s = _two_hidden_problem()
    out = {}
    for sem in drl.SEMANTICS:
        hp = _hp(sigma=0.1, semantics=sem)
        out[sem] = _jit_train(net, fwd, num_iters, hp)(q, drl.init_opt_state(q), s, jax.random.key(3))
    chex.assert_trees_all_close(out["fork"][0], out["original"][0], rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal(out["fork"][1].count, out["original"][1].count)
    idle = num_iters.index(0)
    chex.assert_trees_all_equal(out["fork"][0][idle], q[idle])  # never had a gradient: untouched


def test_fork_reapplies_stale_gradients_original_does_not():
    """Fork, K = (1, 1): layer 1 is stepped twice with its one gradient; original steps each layer once."""
    net, fwd, q, s = _two_hidden_problem()
    key = jax.random.key(3)
    hps = {sem: _hp(sigma=0.1, lr=0.01, semantics=sem) for sem in drl.SEMANTICS}
    fork = _jit_train(net, fwd, (1, 1), hps["fork"])(q, drl.init_opt_state(q), s, key)
    orig = _jit_train(net, fwd, (1, 1), hps["original"])(q, drl.init_opt_state(q), s, key)
    chex.assert_trees_all_equal(fork[1].count, jnp.array([2, 1], jnp.int32))
    chex.assert_trees_all_equal(orig[1].count, jnp.array([1, 1], jnp.int32))
    assert not np.allclose(fork[0][0]["kernel"], orig[0][0]["kernel"], atol=1e-6)
    # Fork's layer 1 = two Adam steps with the *same* (stale) gradient g1; layer 2 = one step with g2.
    grad = jax.jit(jax.grad(lambda q_, n, k: drl.drl_loss(net, fwd, q_, n, s, k, 0.1)), static_argnums=1)
    g1 = grad(q[0], 1, drl.iteration_key(key, 1, 0))
    g2 = grad(q[1], 2, drl.iteration_key(key, 2, 0))
    zeros = jax.tree.map(jnp.zeros_like, q[1])
    step = jax.jit(drl.adam_step, static_argnums=3)
    st = drl.init_opt_state(q)
    ref, st = step(q, (g1, zeros), st._replace(has_grad=jnp.array([True, False])), hps["fork"])
    ref, st = step(ref, (g1, g2), st._replace(has_grad=jnp.array([True, True])), hps["fork"])
    chex.assert_trees_all_close(fork[0], ref, rtol=1e-6)
    # Original: both gradients once, one step.
    ref_o, _ = step(
        q, (g1, g2), drl.init_opt_state(q)._replace(has_grad=jnp.array([True, True])), hps["fork"]
    )
    chex.assert_trees_all_close(orig[0], ref_o, rtol=1e-6)


def test_second_fork_call_steps_every_layer_from_its_first_step():
    """Once a layer has a .grad tensor, zero_grad keeps it: later calls step it at every step."""
    net, fwd, q, s = _two_hidden_problem()
    hp = _hp(sigma=0.1)
    call = _jit_train(net, fwd, (2, 2), hp)
    q1, st1, _ = call(q, drl.init_opt_state(q), s, jax.random.key(3))
    _, st2, _ = call(q1, st1, s, jax.random.key(4))
    chex.assert_trees_all_equal(st1.count, jnp.array([4, 2], jnp.int32))
    chex.assert_trees_all_equal(st2.count, jnp.array([8, 6], jnp.int32))


def test_skipping_other_layers_gradients_keeps_a_layers_trajectory():
    """The exact shortcut of the Fig. 2 DRL arm: zero grads for layer 1 leave Q_2 bit-identical."""
    net, fwd, q, s = _two_hidden_problem()
    hp = _hp(sigma=0.1)
    state = drl.init_opt_state(q)
    full, skip = q, q
    st_full, st_skip = state, state
    call_full, call_skip = _jit_train(net, fwd, (1, 1), hp), _jit_train(net, fwd, (1, 1), hp, (False, True))
    for i in range(3):
        key = jax.random.key(10 + i)
        full, st_full, _ = call_full(full, st_full, s, key)
        skip, st_skip, _ = call_skip(skip, st_skip, s, key)
    chex.assert_trees_all_close(full[1], skip[1], rtol=1e-6, atol=1e-9)
    chex.assert_trees_all_equal(st_full.count, st_skip.count)
    assert not np.allclose(full[0]["kernel"], skip[0]["kernel"])


def test_fig2_drl_arm_pseudo_inverse_limit_and_adam_noise_floor(xla_optimized):
    """Fig. 2's DRL arm: Q_fc1 → W_out⁺ (not W_outᵀ); at the fork's lr Adam noise keeps it well above.

    With a small lr, ∠(W_outᵀ, Q_fc1) converges to ∠(W_outᵀ, W_out⁺ᵀ), the DRL limit (design §7.1);
    with the tuned lr_fb = 0.0045 (and the fork's three steps per call) the angle plateaus
    ≈ 10° higher, which is where the paper's 18.7° comes from.
    """
    # Only fc1 → fc2 matters (the other layers' gradients cannot change Q_fc1): an ELU fc1 and a
    # linear 512 → 10 output layer, as in LeNet.
    net = nets.Network(
        "fc", (blk.DenseBlock("fc1", (16,), 512, "elu"), blk.DenseBlock("fc2", (512,), 10, "identity"))
    )
    fwd, _ = nets.init_params(jax.random.key(0), net)
    s, _ = tg.forward_pass(net, fwd, jax.random.normal(jax.random.key(1), (128, 16)))
    q0 = drl.init_direct_feedback(jax.random.key(2), net)
    w = np.asarray(fwd[1]["kernel"])  # W_outᵀ, [512, 10]
    pinv_t = np.linalg.pinv(w).T
    limit = float(mt.angle(w, pinv_t))

    def calls(lr, n):
        hp = _hp(lr=lr)

        def body(carry, i):
            q_, st_ = carry
            key = jax.random.fold_in(jax.random.key(3), i)
            q_, st_, _ = drl.train_feedback(net, fwd, q_, st_, s, key, (1,), hp)
            return (q_, st_), None

        (q, _), _ = jax.jit(lambda q, st: jax.lax.scan(body, (q, st), jnp.arange(n)))(
            q0, drl.init_opt_state(q0)
        )
        return q

    q_slow, q_tuned = calls(1e-3, 1000), calls(_CIFAR["lr_fb"], 200)
    d_slow, a_slow = drl.output_layer_alignment(fwd, q_slow)
    _, a_tuned = drl.output_layer_alignment(fwd, q_tuned)
    assert 3 < limit < 20
    assert abs(float(a_slow) - limit) < 2.5, (float(a_slow), limit)
    assert float(mt.relative_distance(pinv_t, np.asarray(q_slow[0]["kernel"]).T)) < 0.25
    assert float(d_slow) > 1.3  # W⁺ is far from Wᵀ in norm: DRL cannot satisfy the JMC
    assert float(a_tuned) > limit + 4, (float(a_tuned), limit)
