"""Feedback-weight training of layer-wise feedback blocks G^n: L-DRL (paper §4.1, Alg. 3; spec §1).

For one layer n, with x = s^n, y = s^{n+1} and pool indices ι:

    r    = G(y; ι(x))
    dx   = σ ε,  ε ~ N(0, I)         ỹ, ι(x+dx) = F(x + dx)
    dr   = G(ỹ; ι(x+dx)) − r        (noisy pass's indices)
    dy   = σ η,  η ~ N(0, I)
    dr_y = G(y + dy; ι(x)) − r       (clean indices)
    L    = mean_b [ −2 ⟨dx, dr⟩ + ‖dr_y‖² ]

which is 2 × Eq. 13 (and 2σ² × Eq. 14); the tuned learning rates depend on this
scaling, so it is kept (spec §1.2, §10.1). The ``'jvp'`` probe replaces the two
finite differences by their first-order terms, dr = ∂G(y)·∂F(x)·dx and
dr_y = ∂G(y)·dy, i.e. the small-noise limit of Theorem 4.2 without the
finite-σ bias.

Vanilla DTP and TP train the same blocks with the reconstruction loss of Lee
et al. (2015) (:func:`reconstruction_loss`, spec §8.2). Every layer runs K_n
iterations of its loss, each followed by an optimizer step, as one
``jax.lax.scan`` (:func:`train_feedback_layer`, :func:`train_feedback`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jdtp import blocks as blk
from jdtp import networks as nets

PROBES = ("difference", "jvp")


def _batch_inner(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum((a * b).reshape(a.shape[0], -1), axis=-1)


def draw_noise(key: jax.Array, x: jax.Array, y: jax.Array, sigma: float):
    """ε then η (that order, spec §1.2), i.i.d. N(0, σ²) per sample and element."""
    k_eps, k_eta = jax.random.split(key)
    dx = sigma * jax.random.normal(k_eps, x.shape, x.dtype)
    dy = sigma * jax.random.normal(k_eta, y.shape, y.dtype)
    return dx, dy


def ldrl_terms(
    block: blk.Block,
    g_params,
    f_params,
    x: jax.Array,
    y: jax.Array,
    idx,
    dx: jax.Array,
    dy: jax.Array,
    *,
    unpool_mode: str = "set",
    probe: str = "difference",
):
    """The two L-DRL reconstruction differences (dr, dr_y) for given noise.

    Returns:
      ``(dr, dr_y)``, both with the shape of x.
    """
    if probe == "difference":
        # Blocks whose G is linear ∘ input-transform + bias compute each difference of G
        # outputs as the linear part of a difference of transformed inputs: the bias
        # cancels exactly (zero gradient) and two transposed convolutions replace three.
        y_noisy, idx_noisy = block.forward(f_params, x + dx)
        y_noisy = jax.lax.stop_gradient(y_noisy)  # F is never differentiated
        dr = block.feedback_difference(g_params, y_noisy, idx_noisy, y, idx, unpool_mode=unpool_mode)
        dr_y = block.feedback_difference(g_params, y + dy, idx, y, idx, unpool_mode=unpool_mode)
        return dr, dr_y
    if probe == "jvp":
        block = block.for_forward_mode()
        # In the σ → 0 limit the noisy pool indices equal the clean ones.
        _, dy_f = jax.jvp(lambda x_: block.forward(f_params, x_)[0], (x,), (dx,))
        dy_f = jax.lax.stop_gradient(dy_f)

        def g(y_):
            return block.feedback(g_params, y_, idx, unpool_mode=unpool_mode, with_bias=False)

        _, dr = jax.jvp(g, (y,), (dy_f,))
        _, dr_y = jax.jvp(g, (y,), (dy,))
        return dr, dr_y
    raise ValueError(f"unknown feedback probe {probe!r}; expected one of {PROBES}")


def ldrl_loss(
    block: blk.Block,
    g_params,
    f_params,
    x: jax.Array,
    y: jax.Array,
    idx,
    key: jax.Array,
    sigma: float,
    *,
    unpool_mode: str = "set",
    probe: str = "difference",
) -> jax.Array:
    """L-DRL loss of one layer for one noise draw (2 × paper Eq. 13, batch mean).

    Args:
      block: the layer's block.
      g_params: G^n's parameters (differentiated).
      f_params: F^n's parameters (held fixed).
      x: s^n, ``[batch, ...]``.
      y: s^{n+1} = F^n(s^n).
      idx: F^n's clean aux (pool indices ι(s^n), or ``None``).
      key: PRNG key of this iteration; split into (ε, η) keys in that order.
      sigma: the layer's noise scale σ_n.
      unpool_mode: ``'set'`` or ``'add'`` (see :func:`jdtp.pooling.max_unpool`).
      probe: ``'difference'`` (reference) or ``'jvp'`` (small-noise limit).

    Returns:
      Scalar mean over the batch of −2⟨dx, dr⟩ + ‖dr_y‖².
    """
    dx, dy = draw_noise(key, x, y, sigma)
    dr, dr_y = ldrl_terms(block, g_params, f_params, x, y, idx, dx, dy, unpool_mode=unpool_mode, probe=probe)
    return jnp.mean(-2.0 * _batch_inner(dx, dr) + _batch_inner(dr_y, dr_y))


def ldrl_value_and_grad(
    block: blk.LinearFeedbackBlock,
    g_params,
    f_params,
    x: jax.Array,
    y: jax.Array,
    idx,
    a_clean: jax.Array,
    key: jax.Array,
    sigma: float,
    *,
    unpool_mode: str = "set",
):
    """:func:`ldrl_loss` (``probe='difference'``) and its gradient in closed form.

    For a block whose G is ``L_W ∘ a + bias`` with L_W linear in its weights W
    (:class:`jdtp.blocks.LinearFeedbackBlock`), and with
    Δ1 = a(ỹ; ι(x+dx)) − a(y; ι(x)), Δ2 = a(y+dy; ι(x)) − a(y; ι(x))
    (``a_clean`` = a(y; ι(x)) given, since it does not change across
    iterations), the loss is

        L = (1/B) [−2 ⟨dx, L_W(Δ1)⟩ + ‖L_W(Δ2)‖²],

    so with wg(Δ, c) = ∇_W ⟨c, L_W(Δ)⟩ (independent of W):

        ∇_W L = wg([Δ1; Δ2], [−2dx/B; 2 L_W(Δ2)/B])       (one weight gradient
                                                            over both halves)
        L     = ⟨W, ∇_W L⟩ − ‖L_W(Δ2)‖²/B                  (⟨W, wg(Δ, c)⟩ = ⟨c, L_W(Δ)⟩)

    which skips L_W(Δ1) altogether: per iteration one F pass, one G map and
    one weight gradient over a doubled batch, instead of autodiff's F pass,
    two G maps and two weight gradients. G's bias gets its exact zero.

    Returns:
      ``(loss, grads)`` with ``grads`` shaped like ``g_params``.
    """
    dx, dy = draw_noise(key, x, y, sigma)
    y_noisy, idx_noisy = block.forward(f_params, x + dx)
    d1 = block.feedback_input(y_noisy, idx_noisy, unpool_mode=unpool_mode) - a_clean
    d2 = block.feedback_input(y + dy, idx, unpool_mode=unpool_mode) - a_clean
    dr_y = block.feedback_linear(g_params, d2)
    batch = x.shape[0]
    a = jnp.concatenate([d1, d2])
    ct = jnp.concatenate([(-2.0 / batch) * dx, (2.0 / batch) * dr_y])
    grads = block.feedback_linear_grads(g_params, a, ct)
    inner = sum(jnp.vdot(g_params[k], grads[k]) for k in sorted(grads))  # biases contribute 0
    loss = inner - jnp.vdot(dr_y, dr_y) / batch
    return loss, grads


def reconstruction_loss(
    block: blk.Block,
    g_params,
    f_params,
    x: jax.Array,
    key: jax.Array,
    sigma: float,
    *,
    unpool_mode: str = "set",
) -> jax.Array:
    """Paper Alg. 1 as coded (vanilla DTP and TP): mean_b ‖(x + dx) − G(F(x + dx); ι(x + dx))‖².

    dx ~ N(0, σ²); no ½ and G's bias active, as the reference (spec §8.2).
    """
    x_noisy = x + sigma * jax.random.normal(key, x.shape, x.dtype)
    y_noisy, idx_noisy = block.forward(f_params, x_noisy)
    r = block.feedback(g_params, jax.lax.stop_gradient(y_noisy), idx_noisy, unpool_mode=unpool_mode)
    diff = (x_noisy - r).reshape(x.shape[0], -1)
    return jnp.mean(jnp.sum(diff**2, axis=-1))


def ldrl_layer_value_and_grad(
    block: blk.Block,
    f_params,
    x: jax.Array,
    y: jax.Array,
    idx,
    *,
    sigma: float,
    unpool_mode: str = "set",
    probe: str = "difference",
    closed_form: bool = True,
):
    """``(g_params, key) -> (loss, grads)`` of one layer's L-DRL loss on a fixed batch.

    With ``probe='difference'``, ``closed_form`` and a block that supports it
    (``block.closed_form_ldrl``), the gradient comes from
    :func:`ldrl_value_and_grad` with G's clean input transform computed once;
    otherwise from ``jax.value_and_grad(ldrl_loss)``. Both give the same
    numbers up to float rounding (tests/test_feedback.py).
    """
    if probe == "difference" and closed_form and block.closed_form_ldrl:
        a_clean = block.feedback_input(y, idx, unpool_mode=unpool_mode)  # hoisted: same every iteration

        def value_and_grad(g, k):
            return ldrl_value_and_grad(
                block, g, f_params, x, y, idx, a_clean, k, sigma, unpool_mode=unpool_mode
            )

        return value_and_grad
    return jax.value_and_grad(
        lambda g, k: ldrl_loss(block, g, f_params, x, y, idx, k, sigma, unpool_mode=unpool_mode, probe=probe)
    )


def train_feedback_layer(
    block: blk.Block,
    g_params,
    opt_state,
    tx: optax.GradientTransformation,
    f_params,
    x: jax.Array,
    y: jax.Array,
    idx,
    key: jax.Array,
    *,
    num_fb_iters: int,
    sigma: float,
    unpool_mode: str = "set",
    probe: str = "difference",
    unroll: int = 1,
    closed_form: bool = True,
):
    """K iterations of L-DRL on one layer, each followed by one optimizer step (Alg. 3).

    Runs as one ``jax.lax.scan`` over ``split(key, K)``; x, y and the clean
    indices are computed once per batch by the caller (forward weights do not
    change during feedback training, spec §1.1).

    Returns:
      ``(g_params, opt_state, losses)`` with ``losses`` of shape ``[K]``, the
      loss of each iteration before its step.
    """
    x = jax.lax.stop_gradient(x)
    y = jax.lax.stop_gradient(y)
    value_and_grad = ldrl_layer_value_and_grad(
        block,
        f_params,
        x,
        y,
        idx,
        sigma=sigma,
        unpool_mode=unpool_mode,
        probe=probe,
        closed_form=closed_form,
    )
    return scan_optimize(
        value_and_grad, g_params, opt_state, tx, key, num_fb_iters, unroll=unroll, returns_grad=True
    )


def scan_optimize(
    loss_fn,
    params,
    opt_state,
    tx,
    key: jax.Array,
    num_iters: int,
    *,
    unroll: int = 1,
    returns_grad: bool = False,
):
    """``num_iters`` steps of ``tx`` on ``loss_fn(params, key_k)`` in one ``lax.scan`` over ``split(key)``.

    With ``returns_grad``, ``loss_fn`` already returns ``(loss, grads)``
    (e.g. a closed-form gradient); otherwise it is differentiated here.

    Returns:
      ``(params, opt_state, losses)``; ``losses[k]`` is the loss before step k.
    """
    loss_and_grad = loss_fn if returns_grad else jax.value_and_grad(loss_fn)

    def body(carry, k):
        p, state = carry
        loss, grads = loss_and_grad(p, k)
        updates, state = tx.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), loss

    keys = jax.random.split(key, num_iters)
    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), keys, unroll=unroll)
    return params, opt_state, losses


def make_fb_optimizers(fb_lrs, momentum: float = 0.9) -> tuple[optax.GradientTransformation, ...]:
    """One SGD-momentum optimizer per trainable G^n, constant lr, no weight decay (spec §1.2)."""
    return tuple(optax.sgd(float(lr), momentum=momentum) for lr in fb_lrs)


FEEDBACK_MODES = ("sequential", "concurrent")


def train_feedback(
    net: nets.Network,
    fwd_params,
    fb_params,
    fb_opt_states,
    fb_txs,
    s: tuple,
    aux: tuple,
    key: jax.Array,
    *,
    num_fb_iters,
    layer_value_and_grad,
    unroll: int = 1,
    mode: str = "sequential",
):
    """Train every G^n, n = 1 … N−1, for its K_n iterations.

    G^n's iterations depend only on s^n, s^{n+1}, F^n's weights, G^n and its key, so the layers
    need not wait for each other (paper §4.1, "the parallelism allowed by our layer-wise feedback
    weight training"):

    * ``'sequential'``: one ``lax.scan`` per layer, bottom to top (ΣK_n loop iterations);
    * ``'concurrent'``: one ``lax.scan`` over max K_n in which every layer takes its iteration k,
      a layer that has done its K_n skipping the rest through ``lax.cond`` (which runs one branch:
      no wasted work). max K_n sequential iterations, which bounds the step time on accelerators
      where each iteration is a few small kernels.

    Both draw iteration k of layer n from ``split(fold_in(key, n), K_n)[k]``, so they give the same
    parameters (equal to float32 rounding: XLA may fuse the two loop bodies differently).

    Args:
      net: the network.
      fwd_params: forward parameters (fixed during feedback training).
      fb_params: feedback parameters (G^0 is returned unchanged).
      fb_opt_states: optimizer state per trainable G^n (forward order, G^1 first).
      fb_txs: optimizer per trainable G^n.
      s: activations ``(s^0, …, s^N)`` of the batch (computed once, spec §1.1).
      aux: F^n's clean aux (pool indices) per block.
      key: PRNG key.
      num_fb_iters: K_n per trainable G^n.
      layer_value_and_grad: ``(n, f_params, x, y, aux_n) -> ((g, key) -> (loss, grads))``,
        the layer's feedback loss on this batch (e.g. :func:`ldrl_layer_value_and_grad`).
      unroll: ``lax.scan`` unroll factor.
      mode: ``'sequential'`` or ``'concurrent'``.

    Returns:
      ``(fb_params, fb_opt_states, losses)`` where ``losses[n-1]`` is the
      ``[K_n]`` vector of per-iteration losses of G^n.
    """
    if mode not in FEEDBACK_MODES:
        raise ValueError(f"unknown feedback mode {mode!r}; expected one of {FEEDBACK_MODES}")
    s = jax.lax.stop_gradient(s)
    layers = range(1, net.num_blocks)
    vgs = [layer_value_and_grad(n, fwd_params[n], s[n], s[n + 1], aux[n]) for n in layers]
    iters = [int(num_fb_iters[n - 1]) for n in layers]
    keys = [jax.random.fold_in(key, n) for n in layers]
    if mode == "sequential":
        fb_params, new_states, losses = list(fb_params), [], []
        for j, n in enumerate(layers):
            g, state, layer_losses = scan_optimize(
                vgs[j],
                fb_params[n],
                fb_opt_states[j],
                fb_txs[j],
                keys[j],
                iters[j],
                unroll=unroll,
                returns_grad=True,
            )
            fb_params[n] = g
            new_states.append(state)
            losses.append(layer_losses)
        return tuple(fb_params), tuple(new_states), tuple(losses)

    k_max = max(iters)
    # Iteration keys of every layer, padded to max K (the padding is never used: cond skips it).
    key_table = jnp.stack(
        [
            jnp.concatenate([jax.random.split(k, K), jax.random.split(k, k_max - K)])
            if K < k_max
            else jax.random.split(k, K)
            for k, K in zip(keys, iters, strict=True)
        ],
        axis=1,
    )  # [k_max, layers]

    def body(carry, inputs):
        k, step_keys = inputs
        params, states = carry
        new_params, new_states, losses = [], [], []
        for j in range(len(vgs)):

            def step(p, st, kk, j=j):
                loss, grads = vgs[j](p, kk)
                updates, st = fb_txs[j].update(grads, st, p)
                return optax.apply_updates(p, updates), st, loss

            def skip(p, st, kk):
                del kk
                return p, st, jnp.zeros((), jax.tree.leaves(p)[0].dtype)

            if iters[j] == k_max:
                p, st, loss = step(params[j], states[j], step_keys[j])
            else:
                p, st, loss = jax.lax.cond(k < iters[j], step, skip, params[j], states[j], step_keys[j])
            new_params.append(p)
            new_states.append(st)
            losses.append(loss)
        return (tuple(new_params), tuple(new_states)), jnp.stack(losses)

    carry = (tuple(fb_params[n] for n in layers), tuple(fb_opt_states))
    (params, states), all_losses = jax.lax.scan(body, carry, (jnp.arange(k_max), key_table), unroll=unroll)
    new_fb = (fb_params[0], *params)
    return new_fb, tuple(states), tuple(all_losses[:K, j] for j, K in enumerate(iters))
