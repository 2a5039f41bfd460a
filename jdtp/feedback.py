"""L-DRL feedback-weight training (paper §4.1, Alg. 3, Eq. 13-14; spec §1).

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
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

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
    block: nets.Block,
    g_params,
    f_params,
    x: jax.Array,
    y: jax.Array,
    idx,
    dx: jax.Array,
    dy: jax.Array,
    unpool_mode: str = "set",
    probe: str = "difference",
):
    """The two L-DRL reconstruction differences (dr, dr_y) for given noise.

    Returns:
      ``(dr, dr_y)``, both with the shape of x.
    """
    if probe == "difference":
        # G = linear ∘ input-transform + bias, so each difference of G outputs is the
        # linear part applied to a difference of transformed inputs: the bias cancels
        # exactly (zero gradient) and two transposed convolutions replace three.
        y_noisy, idx_noisy = nets.forward_block(block, f_params, x + dx)
        y_noisy = jax.lax.stop_gradient(y_noisy)  # F is never differentiated
        dr = nets.feedback_difference(block, g_params, y_noisy, idx_noisy, y, idx, unpool_mode)
        dr_y = nets.feedback_difference(block, g_params, y + dy, idx, y, idx, unpool_mode)
        return dr, dr_y
    if probe == "jvp":
        if isinstance(block, nets.ConvBlock):  # forward mode needs a jvp-able conv
            block = dataclasses.replace(block, conv_impl=nets.forward_mode_impl(block.conv_impl))
        # In the σ → 0 limit the noisy pool indices equal the clean ones.
        _, dy_f = jax.jvp(lambda x_: nets.forward_block(block, f_params, x_)[0], (x,), (dx,))
        dy_f = jax.lax.stop_gradient(dy_f)

        def g(y_):
            return nets.feedback_block(block, g_params, y_, idx, unpool_mode, with_bias=False)

        _, dr = jax.jvp(g, (y,), (dy_f,))
        _, dr_y = jax.jvp(g, (y,), (dy,))
        return dr, dr_y
    raise ValueError(f"unknown feedback probe {probe!r}; expected one of {PROBES}")


def ldrl_loss(
    block: nets.Block,
    g_params,
    f_params,
    x: jax.Array,
    y: jax.Array,
    idx,
    key: jax.Array,
    sigma: float,
    unpool_mode: str = "set",
    probe: str = "difference",
) -> jax.Array:
    """L-DRL loss of one layer for one noise draw (2 × paper Eq. 13, batch mean).

    Args:
      block: the layer's block description.
      g_params: G^n's parameters (differentiated).
      f_params: F^n's parameters (held fixed).
      x: s^n, ``[batch, ...]``.
      y: s^{n+1} = F^n(s^n).
      idx: F^n's clean pool indices ι(s^n) (``None`` without a pool).
      key: PRNG key of this iteration; split into (ε, η) keys in that order.
      sigma: the layer's noise scale σ_n.
      unpool_mode: ``'set'`` or ``'add'`` (see :func:`jdtp.networks.max_unpool`).
      probe: ``'difference'`` (reference) or ``'jvp'`` (small-noise limit).

    Returns:
      Scalar mean over the batch of −2⟨dx, dr⟩ + ‖dr_y‖².
    """
    dx, dy = draw_noise(key, x, y, sigma)
    dr, dr_y = ldrl_terms(block, g_params, f_params, x, y, idx, dx, dy, unpool_mode, probe)
    return jnp.mean(-2.0 * _batch_inner(dx, dr) + _batch_inner(dr_y, dr_y))


def ldrl_value_and_grad(
    block: nets.Block,
    g_params,
    f_params,
    x: jax.Array,
    y: jax.Array,
    idx,
    a_clean: jax.Array,
    key: jax.Array,
    sigma: float,
    unpool_mode: str = "set",
):
    """:func:`ldrl_loss` (``probe='difference'``) and its gradient in closed form.

    G's bias-free part L_W is linear in its kernel W, and with
    Δ1 = a(ỹ; ι(x+dx)) − a(y; ι(x)), Δ2 = a(y+dy; ι(x)) − a(y; ι(x)) (a = G's
    input transform, ``a_clean`` = a(y; ι(x)) given, since it does not change
    across iterations) the loss is

        L = (1/B) [−2 ⟨dx, L_W(Δ1)⟩ + ‖L_W(Δ2)‖²],

    so with wg(Δ, c) = ∇_W ⟨c, L_W(Δ)⟩ (independent of W):

        ∇_W L = wg([Δ1; Δ2], [−2dx/B; 2 L_W(Δ2)/B])       (one kernel gradient
                                                            over both halves)
        L     = ⟨W, ∇_W L⟩ − ‖L_W(Δ2)‖²/B                  (⟨W, wg(Δ, c)⟩ = ⟨c, L_W(Δ)⟩)

    which skips L_W(Δ1) altogether: per iteration one F pass, one G map and
    one kernel gradient over a doubled batch, instead of autodiff's F pass,
    two G maps and two kernel gradients. G's bias gets its exact zero.

    Returns:
      ``(loss, grads)`` with ``grads`` shaped like ``g_params``.
    """
    dx, dy = draw_noise(key, x, y, sigma)
    y_noisy, idx_noisy = nets.forward_block(block, f_params, x + dx)
    d1 = nets.feedback_input(block, y_noisy, idx_noisy, unpool_mode) - a_clean
    d2 = nets.feedback_input(block, y + dy, idx, unpool_mode) - a_clean
    dr_y = nets.feedback_linear(block, g_params, d2)
    batch = x.shape[0]
    a = jnp.concatenate([d1, d2])
    ct = jnp.concatenate([(-2.0 / batch) * dx, (2.0 / batch) * dr_y])
    kernel_grad = nets.feedback_linear_kernel_grad(block, a, ct)
    loss = jnp.vdot(g_params["kernel"], kernel_grad) - jnp.vdot(dr_y, dr_y) / batch
    grads = {name: jnp.zeros_like(v) for name, v in g_params.items()}
    grads["kernel"] = kernel_grad
    return loss, grads


def train_feedback_layer(
    block: nets.Block,
    g_params,
    opt_state,
    tx: optax.GradientTransformation,
    f_params,
    x: jax.Array,
    y: jax.Array,
    idx,
    key: jax.Array,
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
    change during feedback training, spec §1.1). With ``probe='difference'``
    and ``closed_form`` (the default) each iteration's gradient comes from
    :func:`ldrl_value_and_grad` (one F pass, one G map and one kernel
    gradient, with G's clean input transform computed once outside the loop);
    otherwise from ``jax.value_and_grad(ldrl_loss)``. Both give the same
    numbers up to float rounding (tests/test_feedback.py).

    Returns:
      ``(g_params, opt_state, losses)`` with ``losses`` of shape ``[K]``, the
      loss of each iteration before its step.
    """
    x = jax.lax.stop_gradient(x)
    y = jax.lax.stop_gradient(y)
    if probe == "difference" and closed_form:
        a_clean = nets.feedback_input(block, y, idx, unpool_mode)  # hoisted: same every iteration

        def value_and_grad(g, k):
            return ldrl_value_and_grad(block, g, f_params, x, y, idx, a_clean, k, sigma, unpool_mode)

    else:
        value_and_grad = jax.value_and_grad(
            lambda g, k: ldrl_loss(block, g, f_params, x, y, idx, k, sigma, unpool_mode, probe)
        )
    return scan_optimize(
        value_and_grad, g_params, opt_state, tx, key, num_fb_iters, unroll, returns_grad=True
    )


def scan_optimize(
    loss_fn,
    params,
    opt_state,
    tx,
    key: jax.Array,
    num_iters: int,
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


def train_feedback(
    net: nets.Network,
    fwd_params,
    fb_params,
    fb_opt_states,
    fb_txs,
    s: tuple,
    idx: tuple,
    key: jax.Array,
    num_fb_iters,
    noise_scale,
    unpool_mode: str = "set",
    probe: str = "difference",
    unroll: int = 1,
    closed_form: bool = True,
):
    """Train every G^n, n = 1 … N−1 (bottom to top), for its K_n iterations.

    Per-layer lists (``fb_txs``, ``num_fb_iters``, ``noise_scale``,
    ``fb_opt_states``) are in forward order over G^1 … G^{N−1}. Layer n draws
    its noise from ``fold_in(key, n)``. G^0 is returned unchanged.

    Returns:
      ``(fb_params, fb_opt_states, losses)`` where ``losses[n-1]`` is the
      ``[K_n]`` vector of per-iteration losses of G^n.
    """
    fb_params, new_states, losses = list(fb_params), [], []
    for n in range(1, net.num_blocks):
        j = n - 1
        g, state, layer_losses = train_feedback_layer(
            net.blocks[n],
            fb_params[n],
            fb_opt_states[j],
            fb_txs[j],
            fwd_params[n],
            s[n],
            s[n + 1],
            idx[n],
            jax.random.fold_in(key, n),
            int(num_fb_iters[j]),
            float(noise_scale[j]),
            unpool_mode,
            probe,
            unroll,
            closed_form,
        )
        fb_params[n] = g
        new_states.append(state)
        losses.append(layer_losses)
    return tuple(fb_params), tuple(new_states), tuple(losses)
