"""L-DRL feedback loss and its training loop (paper Eq. 13-17, Alg. 3; design §1)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdtp import blocks as blk
from jdtp import feedback
from jdtp import metrics as mt
from jdtp import networks as nets
from jdtp import targets as tg


def _dense_block(fin, fout, activation="identity", use_bias=True):
    return blk.DenseBlock("d", (fin,), fout, activation, use_bias)


def _np_elu(z):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def test_ldrl_loss_matches_float64_numpy():
    """One draw of the loss against an independent NumPy computation (ELU dense block)."""
    with jax.enable_x64(True):
        block = _dense_block(5, 4, "elu")
        f, g = nets.init_block(jax.random.key(0), block, jnp.float64)
        x = jax.random.normal(jax.random.key(1), (6, 5), jnp.float64)
        y, _ = block.forward(f, x)
        key, sigma = jax.random.key(2), 0.3
        got = feedback.ldrl_loss(block, g, f, x, y, None, key, sigma)
        dx, dy = feedback.draw_noise(key, x, y, sigma)
    W, b, V, c = (np.asarray(a, np.float64) for a in (f["kernel"], f["bias"], g["kernel"], g["bias"]))
    xn, dxn, dyn = (np.asarray(a, np.float64) for a in (x, dx, dy))
    F = lambda z: _np_elu(z @ W + b)  # noqa: E731
    G = lambda z: _np_elu(z) @ V + c  # noqa: E731
    yn = F(xn)
    r = G(yn)
    dr = G(F(xn + dxn)) - r
    dr_y = G(yn + dyn) - r
    ref = np.mean(-2 * np.sum(dxn * dr, 1) + np.sum(dr_y**2, 1))
    np.testing.assert_allclose(float(got), ref, rtol=1e-10)


def test_noise_shapes_order_and_independence():
    x, y = jnp.zeros((64, 3, 3, 2)), jnp.zeros((64, 7))
    key = jax.random.key(5)
    dx, dy = feedback.draw_noise(key, x, y, 0.5)
    chex.assert_shape(dx, x.shape)
    chex.assert_shape(dy, y.shape)
    k_eps, k_eta = jax.random.split(key)  # ε first, then η
    chex.assert_trees_all_close(dx, 0.5 * jax.random.normal(k_eps, x.shape))
    chex.assert_trees_all_close(dy, 0.5 * jax.random.normal(k_eta, y.shape))
    # i.i.d. per element: std ≈ σ and near-zero correlation between samples.
    np.testing.assert_allclose(np.std(dx), 0.5, rtol=0.05)
    flat = np.asarray(dx).reshape(64, -1)
    assert abs(np.corrcoef(flat[:, 0], flat[:, 1])[0, 1]) < 0.35


def test_noisy_reconstruction_uses_noisy_pool_indices():
    """dr uses ι(x + dx), dr_y and r use the clean ι(x) (design §1.2)."""
    net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=5)
    fwd, fb = nets.init_params(jax.random.key(0), net)
    block = net.blocks[1]
    x = jax.random.normal(jax.random.key(1), (4, *block.in_shape))
    y, idx = block.forward(fwd[1], x)
    sigma, key = 0.5, jax.random.key(7)
    dx, dy = feedback.draw_noise(key, x, y, sigma)
    y_noisy, idx_noisy = block.forward(fwd[1], x + dx)
    assert not np.array_equal(idx, idx_noisy)  # large σ moves some argmaxes
    r = block.feedback(fb[1], y, idx)
    dr_ref = block.feedback(fb[1], y_noisy, idx_noisy) - r
    dr_y_ref = block.feedback(fb[1], y + dy, idx) - r
    dr, dr_y = feedback.ldrl_terms(block, fb[1], fwd[1], x, y, idx, dx, dy)
    chex.assert_trees_all_close(dr, dr_ref, atol=1e-6)
    chex.assert_trees_all_close(dr_y, dr_y_ref, atol=1e-6)
    wrong = block.feedback(fb[1], y_noisy, idx) - r
    assert not np.allclose(dr, wrong, atol=1e-4)


def test_ldrl_gradient_oracle_linear():
    """E[∇_V L] = 2σ²(V − Wᵀ) for linear F(x) = xW, G(y) = yV (design §7.1); ∇_c L = 0 exactly."""
    fin, fout, sigma = 6, 4, 0.2
    block = _dense_block(fin, fout)
    f, g = nets.init_block(jax.random.key(0), block)
    x = jax.random.normal(jax.random.key(1), (4096, fin))
    y, _ = block.forward(f, x)

    grad_fn = jax.jit(jax.grad(lambda g, k: feedback.ldrl_loss(block, g, f, x, y, None, k, sigma)))
    grads = [grad_fn(g, jax.random.fold_in(jax.random.key(2), i)) for i in range(16)]
    mean_v = np.mean([np.asarray(gr["kernel"]) for gr in grads], axis=0)
    expected = 2 * sigma**2 * (np.asarray(g["kernel"]) - np.asarray(f["kernel"]).T)
    # 65k noise samples: Monte-Carlo error ≈ 1% of the largest entries.
    np.testing.assert_allclose(mean_v, expected, atol=0.03 * np.abs(expected).max())
    for gr in grads:
        chex.assert_trees_all_equal(gr["bias"], jnp.zeros_like(gr["bias"]))


def test_ldrl_bias_gradient_is_zero_for_conv_block():
    net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=5)
    fwd, fb = nets.init_params(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (4, *net.blocks[1].in_shape))
    y, idx = net.blocks[1].forward(fwd[1], x)
    grads = jax.grad(
        lambda g: feedback.ldrl_loss(net.blocks[1], g, fwd[1], x, y, idx, jax.random.key(3), 0.1)
    )(fb[1])
    assert float(jnp.max(jnp.abs(grads["kernel"]))) > 0
    chex.assert_trees_all_equal(grads["bias"], jnp.zeros_like(grads["bias"]))


def test_jvp_probe_terms_match_jacobians():
    """dr = ∂G(y)·∂F(x)·dx and dr_y = ∂G(y)·dy, checked with jax.jacfwd on a tiny block."""
    block = _dense_block(5, 3, "elu")
    f, g = nets.init_block(jax.random.key(0), block)
    x = jax.random.normal(jax.random.key(1), (1, 5))
    y, _ = block.forward(f, x)
    dx, dy = feedback.draw_noise(jax.random.key(2), x, y, 0.1)
    dr, dr_y = feedback.ldrl_terms(block, g, f, x, y, None, dx, dy, probe="jvp")
    jf = jax.jacfwd(lambda z: block.forward(f, z[None])[0][0])(x[0])  # [3, 5]
    jg = jax.jacfwd(lambda z: block.feedback(g, z[None], None)[0])(y[0])  # [5, 3]
    chex.assert_trees_all_close(dr[0], jg @ jf @ dx[0], atol=1e-6)
    chex.assert_trees_all_close(dr_y[0], jg @ dy[0], atol=1e-6)


def test_difference_probe_converges_to_jvp_probe():
    """As σ → 0, ∇ω of the difference loss / σ² → that of the jvp loss / σ² (same ε, η)."""
    with jax.enable_x64(True):
        net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=6)
        fwd, fb = nets.init_params(jax.random.key(0), net, jnp.float64)
        x = jax.random.normal(jax.random.key(1), (4, 8, 8, 2), jnp.float64)
        s, idx = tg.forward_pass(net, fwd, x)
        errors = {}
        for n in (1, 2, 3):
            b = net.blocks[n]
            errs = []
            grad = jax.jit(
                jax.grad(
                    lambda g, sigma, probe, b=b, n=n: feedback.ldrl_loss(
                        b, g, fwd[n], s[n], s[n + 1], idx[n], jax.random.key(9), sigma, probe=probe
                    )
                ),
                static_argnums=2,
            )
            for sigma in (1e-2, 1e-3, 1e-4):
                d, j = grad(fb[n], sigma, "difference"), grad(fb[n], sigma, "jvp")
                errs.append(float(jnp.linalg.norm(d["kernel"] - j["kernel"]) / jnp.linalg.norm(j["kernel"])))
            errors[n] = errs
    # Hidden blocks (ELU, pooling): the gap shrinks ∝ σ. Output block (linear): exact at any σ.
    for n in (1, 2):
        assert errors[n][-1] < 1e-3 and errors[n][-1] < errors[n][0] / 10, (n, errors[n])
        assert errors[n][0] > 1e-6, (n, errors[n])  # the probes really differ at finite σ
    assert max(errors[3]) < 1e-9, errors[3]


def _output_layer_problem(batch=128):
    net = nets.lenet()
    fwd, fb = nets.init_params(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
    s, _ = tg.forward_pass(net, fwd, x)
    return net, fwd, fb, s


def test_jmc_convergence_output_layer(xla_optimized):
    """Paper Fig. 2, CPU-sized: L-DRL on LeNet's output block aligns G with Fᵀ."""
    net, fwd, fb, s = _output_layer_problem()
    block, tx = net.blocks[3], optax.sgd(0.02, momentum=0.9)
    run = jax.jit(
        lambda g, st, k: feedback.train_feedback_layer(
            block, g, st, tx, fwd[3], s[3], s[4], None, k, num_fb_iters=400, sigma=0.08
        )
    )
    g, st, angles = fb[3], tx.init(fb[3]), []
    for chunk in range(5):  # 2000 iterations
        g, st, losses = run(g, st, jax.random.fold_in(jax.random.key(2), chunk))
        angles.append(float(mt.angle(fwd[3]["kernel"], g["kernel"].T)))
    print("JMC angles every 400 iterations:", angles)
    assert angles[0] > 30  # starts far (≈ 90° at init)
    assert angles[-1] < 8.0
    assert angles[-1] < angles[-2] < angles[-3]  # still falling
    assert float(mt.relative_distance(fwd[3]["kernel"], g["kernel"].T)) < 0.2


def _python_loop_reference(block, g, f, x, y, idx, key, num_iters, sigma, tx, **kw):
    """K SGD steps on jax.value_and_grad(ldrl_loss), one key of split(key, K) each: no hoisting, no scan."""
    st, losses = tx.init(g), []
    for k in jax.random.split(key, num_iters):
        loss, grads = jax.value_and_grad(
            lambda g_, k=k: feedback.ldrl_loss(block, g_, f, x, y, idx, k, sigma, **kw)
        )(g)
        updates, st = tx.update(grads, st, g)
        g = optax.apply_updates(g, updates)
        losses.append(loss)
    return g, st, jnp.stack(losses)


@pytest.mark.parametrize("chunk_iters", [1, 3, 7])
@pytest.mark.parametrize(
    "case",
    [
        "lenet_conv_closed_form",
        "lenet_dense_closed_form",
        "lenet_conv_autodiff",
        "lenet_conv_jvp",
        "resnet_stage",
    ],
)
def test_hoisted_training_equals_the_per_iteration_loop_in_float64(case, chunk_iters):
    """Hoisting G-independent terms (any chunking) changes no number: float64, ≤ 1e-10 of a plain loop.

    K = 7 iterations in chunks of 1 (CPU's automatic choice), 3 (an outer scan over two chunks and
    a shorter last one) or 7 (one chunk, every term computed before the loop).
    """
    from jdtp import resnet

    with jax.enable_x64(True):
        if case == "resnet_stage":
            net = resnet.resnet18((8, 8, 3), 4, width=4, feedback="adjoint")
            n, probe, closed = 2, "difference", True
        else:
            net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=6)
            n = 2 if case.startswith("lenet_dense") else 1
            probe = "jvp" if case.endswith("jvp") else "difference"
            closed = not case.endswith("autodiff")
        fwd, fb = nets.init_params(jax.random.key(0), net, jnp.float64)
        x0 = jax.random.normal(jax.random.key(1), (3, *net.input_shape), jnp.float64)
        s, idx = tg.forward_pass(net, fwd, x0)
        block, tx, K, sigma, key = net.blocks[n], optax.sgd(0.05, momentum=0.9), 7, 0.2, jax.random.key(3)
        args = (block, fb[n], fwd[n], s[n], s[n + 1], idx[n], key)
        layer = feedback.ldrl_layer_loss(
            block, fwd[n], s[n], s[n + 1], idx[n], sigma=sigma, probe=probe, closed_form=closed
        )
        chunk = feedback.chunk_size(layer, K, chunk_iters * layer.term_bytes / 2**20)
        assert chunk == chunk_iters
        got = jax.jit(lambda g: feedback.optimize(layer, g, tx.init(g), tx, key, K, chunk=chunk))(fb[n])
        ref = _python_loop_reference(*args[:1], fb[n], *args[2:-1], key, K, sigma, tx, probe=probe)
        moved = max(float(jnp.max(jnp.abs(got[0][k] - fb[n][k]))) for k in fb[n])
    # The closed form really ran where the case names it.
    assert (block.closed_form_ldrl and closed and probe == "difference") == case.endswith("closed_form")
    chex.assert_trees_all_close(got, ref, rtol=1e-10, atol=1e-12)
    assert moved > 1e-4  # G really trained


def test_chunk_size_fits_the_memory_and_is_automatic_on_cpu():
    block = _dense_block(6, 4)
    f, _ = nets.init_block(jax.random.key(0), block)
    x = jax.random.normal(jax.random.key(1), (5, 6))
    layer = feedback.ldrl_layer_loss(block, f, x, block.forward(f, x)[0], None, sigma=0.1)
    # One iteration's terms: Δ2 [5, 4] and the constant kernel gradient [4, 6], float32.
    assert layer.term_bytes == (5 * 4 + 4 * 6) * 4
    assert feedback.chunk_size(layer, 10, 3.5 * layer.term_bytes / 2**20) == 3
    assert feedback.chunk_size(layer, 10, 1e-12) == 1
    assert feedback.chunk_size(layer, 10, 1e6) == 10
    assert feedback.chunk_size(layer, 10, 0.0) == 1  # automatic, on CPU


def test_scan_equals_python_loop():
    net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=6)
    fwd, fb = nets.init_params(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 2))
    s, idx = tg.forward_pass(net, fwd, x)
    block, tx, K, sigma, key = net.blocks[1], optax.sgd(0.05, momentum=0.9), 5, 0.2, jax.random.key(3)
    g_scan, st_scan, losses = feedback.train_feedback_layer(
        block, fb[1], tx.init(fb[1]), tx, fwd[1], s[1], s[2], idx[1], key, num_fb_iters=K, sigma=sigma
    )
    g, st, loop_losses = fb[1], tx.init(fb[1]), []
    for k in jax.random.split(key, K):
        loss, grads = jax.value_and_grad(
            lambda g_: feedback.ldrl_loss(block, g_, fwd[1], s[1], s[2], idx[1], k, sigma)
        )(g)
        updates, st = tx.update(grads, st, g)
        g = optax.apply_updates(g, updates)
        loop_losses.append(loss)
    chex.assert_trees_all_close(g_scan, g, atol=1e-6, rtol=1e-5)
    chex.assert_trees_all_close(st_scan, st, atol=1e-6, rtol=1e-5)
    chex.assert_trees_all_close(losses, jnp.stack(loop_losses), rtol=1e-5)
    assert not np.allclose(g_scan["kernel"], fb[1]["kernel"])


def test_train_feedback_only_trains_g1_to_gn_and_validates_probe():
    net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=6)
    fwd, fb = nets.init_params(jax.random.key(0), net)
    s, idx = tg.forward_pass(net, fwd, jax.random.normal(jax.random.key(1), (4, 8, 8, 2)))
    txs = feedback.make_fb_optimizers((0.01, 0.01, 0.01))
    states = tuple(tx.init(fb[n + 1]) for n, tx in enumerate(txs))

    def layer_loss(n, f, x, y, aux):
        return feedback.ldrl_layer_loss(net.blocks[n], f, x, y, aux, sigma=0.1)

    new_fb, _, losses = feedback.train_feedback(
        net,
        fwd,
        fb,
        states,
        txs,
        s,
        idx,
        jax.random.key(2),
        num_fb_iters=(2, 3, 4),
        layer_loss=layer_loss,
    )
    chex.assert_trees_all_equal(new_fb[0], fb[0])  # G^0 is never trained
    assert [l.shape for l in losses] == [(2,), (3,), (4,)]
    for n in (1, 2, 3):
        assert not np.allclose(new_fb[n]["kernel"], fb[n]["kernel"])
    with pytest.raises(ValueError, match="probe"):
        feedback.ldrl_loss(net.blocks[3], fb[3], fwd[3], s[3], s[4], None, jax.random.key(0), 0.1, probe="fd")


@pytest.mark.parametrize("unpool_mode", ["set", "add"])
@pytest.mark.parametrize("conv_impl", ["xla", "mixed"])
def test_closed_form_ldrl_gradient_equals_autodiff(unpool_mode, conv_impl):
    """Closed form with hoisted terms = jax.value_and_grad(ldrl_loss), every LeNet and VGG layer, 2 draws."""
    for net in (
        nets.lenet(channels=(4, 8), hidden=16, conv_impl=conv_impl),
        nets.simple_vgg(channels=(4, 4, 8, 8, 8), conv_impl=conv_impl),
    ):
        fwd, fb = nets.init_params(jax.random.key(0), net)
        s, idx = tg.forward_pass(net, fwd, jax.random.normal(jax.random.key(1), (3, 32, 32, 3)))
        for n in range(1, net.num_blocks):
            block, keys = net.blocks[n], jax.random.split(jax.random.key(n), 2)
            layer = feedback.ldrl_layer_loss(
                block, fwd[n], s[n], s[n + 1], idx[n], sigma=0.3, unpool_mode=unpool_mode
            )
            terms = layer.prepare(keys)  # both iterations' G-independent terms at once
            for i in range(2):
                loss, grads = layer.value_and_grad(fb[n], jax.tree.map(lambda a, i=i: a[i], terms))
                ref_loss, ref_grads = jax.value_and_grad(
                    lambda g, block=block, n=n, k=keys[i]: feedback.ldrl_loss(
                        block, g, fwd[n], s[n], s[n + 1], idx[n], k, 0.3, unpool_mode=unpool_mode
                    )
                )(fb[n])
                np.testing.assert_allclose(loss, ref_loss, rtol=1e-4, atol=1e-5)
                chex.assert_trees_all_close(grads, ref_grads, atol=1e-5, rtol=1e-4)
                assert not np.any(np.asarray(grads["bias"]))


@pytest.mark.parametrize("conv_impl", ["mixed", "im2col"])
def test_closed_form_training_matches_autodiff_training(conv_impl):
    net = nets.lenet(channels=(4, 8), hidden=16, conv_impl=conv_impl)
    fwd, fb = nets.init_params(jax.random.key(0), net)
    s, idx = tg.forward_pass(net, fwd, jax.random.normal(jax.random.key(1), (3, 32, 32, 3)))
    tx = optax.sgd(0.01, momentum=0.9)
    out = {}
    for closed in (True, False):
        out[closed] = feedback.train_feedback_layer(
            net.blocks[1],
            fb[1],
            tx.init(fb[1]),
            tx,
            fwd[1],
            s[1],
            s[2],
            idx[1],
            jax.random.key(2),
            num_fb_iters=3,
            sigma=0.3,
            closed_form=closed,
        )
    # Three SGD steps moved G (so the comparison is not of two untouched copies).
    assert float(jnp.max(jnp.abs(out[True][0]["kernel"] - fb[1]["kernel"]))) > 1e-6
    chex.assert_trees_all_close(out[True], out[False], atol=1e-5, rtol=1e-4)


def test_reconstruction_loss_matches_float64_numpy():
    with jax.enable_x64(True):
        block = blk.DenseBlock("d", (5,), 4, "elu")
        f, g = nets.init_block(jax.random.key(0), block, jnp.float64)
        x = jax.random.normal(jax.random.key(1), (6, 5), jnp.float64)
        key, sigma = jax.random.key(2), 0.3
        got = float(feedback.reconstruction_loss(block, g, f, x, key, sigma))
        xn = np.asarray(x + sigma * jax.random.normal(key, x.shape, x.dtype))
    W, b, V, c = (np.asarray(a) for a in (f["kernel"], f["bias"], g["kernel"], g["bias"]))
    elu = lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0)))  # noqa: E731
    r = elu(elu(xn @ W + b)) @ V + c  # G applies ELU to its input, bias active
    np.testing.assert_allclose(got, np.mean(np.sum((xn - r) ** 2, 1)), rtol=1e-10)


def test_reconstruction_training_inverts_an_invertible_linear_layer():
    """For square invertible W, E‖(x+dx) − V W (x+dx) − c‖² is minimised by V = W⁻¹ (c = 0)."""
    block = blk.DenseBlock("d", (4,), 4, "identity")
    f, g = nets.init_block(jax.random.key(0), block)
    f = {"kernel": jnp.eye(4) + 0.3 * jax.random.normal(jax.random.key(3), (4, 4)), "bias": jnp.zeros(4)}
    x = jax.random.normal(jax.random.key(1), (256, 4))
    tx = optax.sgd(0.02, momentum=0.9)
    run = jax.jit(
        lambda g, st: feedback.scan_optimize(
            lambda g_, k: feedback.reconstruction_loss(block, g_, f, x, k, 0.3),
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


@pytest.mark.parametrize("chunk_mib", [0.0, 1e6])
@pytest.mark.parametrize("arch", ["lenet", "simple_vgg"])
def test_concurrent_feedback_mode_equals_sequential(arch, chunk_mib):
    """Same keys, same numbers: one loop over max K_n with skipped iterations = one loop per layer.

    chunk_mib: 0 (automatic: one iteration per chunk on CPU) or every layer's terms at once.
    """
    net = (
        nets.lenet(channels=(4, 8), hidden=16)
        if arch == "lenet"
        else nets.simple_vgg(channels=(4, 4, 8, 8, 8))
    )
    fwd, fb = nets.init_params(jax.random.key(0), net)
    s, aux = tg.forward_pass(net, fwd, jax.random.normal(jax.random.key(1), (3, 32, 32, 3)))
    n = net.num_trainable_fb
    iters = (3, 1, 4, 2, 4)[:n]
    txs = feedback.make_fb_optimizers([0.01 * (j + 1) for j in range(n)])
    states = tuple(tx.init(fb[j + 1]) for j, tx in enumerate(txs))

    def layer_loss(m, f, x, y, a):
        return feedback.ldrl_layer_loss(net.blocks[m], f, x, y, a, sigma=0.1 * m)

    out = {
        mode: jax.jit(
            lambda fb_, st_, mode=mode: feedback.train_feedback(
                net,
                fwd,
                fb_,
                st_,
                txs,
                s,
                aux,
                jax.random.key(2),
                num_fb_iters=iters,
                layer_loss=layer_loss,
                mode=mode,
                chunk_mib=chunk_mib,
            )
        )(fb, states)
        for mode in feedback.FEEDBACK_MODES
    }
    seq, con = out["sequential"], out["concurrent"]
    chex.assert_trees_all_close(con[0], seq[0], rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(con[1], seq[1], rtol=1e-5, atol=1e-7)
    assert [l.shape for l in con[2]] == [(k,) for k in iters]
    chex.assert_trees_all_close(con[2], seq[2], rtol=1e-5, atol=1e-6)
    for j in range(n):  # every layer really trained
        assert not np.allclose(seq[0][j + 1]["kernel"], fb[j + 1]["kernel"])
    with pytest.raises(ValueError, match="feedback mode"):
        feedback.train_feedback(
            net,
            fwd,
            fb,
            states,
            txs,
            s,
            aux,
            jax.random.key(2),
            num_fb_iters=iters,
            layer_loss=layer_loss,
            mode="x",
        )


def test_feedback_optimizers_are_sgd_momentum_or_adam():
    """'sgd': θ ← θ − lr·(μ·v + g) (PyTorch's SGD momentum); 'adam': the first Adam step moves
    every entry by lr·sign(g) (bias-corrected moments, eps negligible); anything else is refused."""
    params = {"kernel": jnp.array([1.0, -2.0, 3.0])}
    grads = [{"kernel": jnp.array([0.5, -1.0, 2.0])}, {"kernel": jnp.array([1.0, 1.0, -1.0])}]
    (sgd,) = feedback.make_fb_optimizers((0.1,), momentum=0.9)
    state, v = sgd.init(params), jnp.zeros(3)
    for g in grads:
        updates, state = sgd.update(g, state, params)
        v = 0.9 * v + g["kernel"]
        chex.assert_trees_all_close(updates["kernel"], -0.1 * v, atol=1e-7)
    (adam,) = feedback.make_fb_optimizers((0.01,), kind="adam")
    updates, _ = adam.update(grads[0], adam.init(params), params)
    chex.assert_trees_all_close(updates["kernel"], -0.01 * jnp.sign(grads[0]["kernel"]), atol=1e-7)
    with pytest.raises(ValueError, match="feedback optimizer"):
        feedback.make_fb_optimizers((0.1,), kind="rmsprop")
