"""Vanilla DTP and TP baselines (paper Alg. 1 and §3.1; spec §8.2).

Both train each G^n to invert F^n with the reconstruction loss of Lee et al.
(2015), ``mean_b ‖(x + dx) − G(F(x + dx); ι(x + dx))‖²`` (no ½, G's bias
active, as the reference), with the same per-layer K, σ and SGD-momentum
optimizers as L-DRL. Vanilla DTP propagates targets with the difference
correction (Eq. 4); TP uses ``t^n = G^n(t^{n+1})`` (no correction). The forward
update is the same layer-local loss as DTP (Eq. 6). The reference marks these
"not tuned"; they exist for comparison.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jdtp import dtp, feedback
from jdtp import metrics as mt
from jdtp import networks as nets

ALGORITHMS = ("vanilla_dtp", "tp")


def reconstruction_loss(
    block: nets.Block,
    g_params,
    f_params,
    x: jax.Array,
    key: jax.Array,
    sigma: float,
    unpool_mode: str = "set",
) -> jax.Array:
    """Paper Alg. 1 as coded: mean_b ‖(x + dx) − G(F(x + dx); ι(x + dx))‖², dx ~ N(0, σ²)."""
    x_noisy = x + sigma * jax.random.normal(key, x.shape, x.dtype)
    y_noisy, idx_noisy = nets.forward_block(block, f_params, x_noisy)
    r = nets.feedback_block(block, g_params, jax.lax.stop_gradient(y_noisy), idx_noisy, unpool_mode)
    diff = (x_noisy - r).reshape(x.shape[0], -1)
    return jnp.mean(jnp.sum(diff**2, axis=-1))


def propagate_targets_tp(
    net: nets.Network, fb_params, s: tuple, idx: tuple, t_last, unpool_mode="set"
) -> tuple:
    """TP targets t^n = G^n(t^{n+1}; ι(s^n)) for n = N−1 … 1 (no difference correction)."""
    t = [None] * (net.num_blocks + 1)
    t[-1] = jax.lax.stop_gradient(t_last)
    for n in range(net.num_blocks - 1, 0, -1):
        g = nets.feedback_block(net.blocks[n], fb_params[n], t[n + 1], idx[n], unpool_mode)
        t[n] = jax.lax.stop_gradient(g)
    return tuple(t)


def vanilla_update(state, x, labels, key, net: nets.Network, fwd_tx, fb_txs, hp, algorithm: str):
    """One step of vanilla DTP or TP: feedback (reconstruction) training, then the forward update."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    s, idx = dtp.forward_pass(net, state.fwd_params, x)
    s = jax.lax.stop_gradient(s)
    fb_params, fb_states, losses = list(state.fb_params), [], []
    for n in range(1, net.num_blocks):
        j, block, f = n - 1, net.blocks[n], state.fwd_params[n]
        g, st, layer_losses = feedback.scan_optimize(
            lambda g_, k, b=block, f=f, x_=s[n], sig=hp.noise_scale[j]: reconstruction_loss(
                b, g_, f, x_, k, sig, hp.unpool_mode
            ),
            fb_params[n],
            state.fb_opt_state[j],
            fb_txs[j],
            jax.random.fold_in(key, n),
            int(hp.num_fb_iters[j]),
            hp.unroll,
        )
        fb_params[n] = g
        fb_states.append(st)
        losses.append(layer_losses)
    fb_params = tuple(fb_params)
    if algorithm == "vanilla_dtp":
        grads, aux = dtp.dtp_forward_grads(
            net, state.fwd_params, fb_params, x, labels, hp.beta, hp.unpool_mode
        )
        local = aux["loss"]
    else:
        t = propagate_targets_tp(
            net, fb_params, s, idx, dtp.output_target(s[-1], labels, hp.beta), hp.unpool_mode
        )
        local, grads = jax.value_and_grad(lambda p: dtp.local_loss(net, p, s, t))(state.fwd_params)
    updates, fwd_opt_state = fwd_tx.update(grads, state.fwd_opt_state, state.fwd_params)
    jmc_dist, jmc_angle = mt.jmc_metrics(net, state.fwd_params, fb_params)
    logits = s[-1]
    metrics = {
        "loss": dtp.cross_entropy(logits, labels),
        "accuracy": mt.accuracy(logits, labels),
        "local_loss": local,
        "fb_loss_first": jnp.stack([l[0] for l in losses]),
        "fb_loss_last": jnp.stack([l[-1] for l in losses]),
        "jmc_angle": jmc_angle,
        "jmc_dist": jmc_dist,
    }
    new_state = state.replace(
        step=state.step + 1,
        fwd_params=optax.apply_updates(state.fwd_params, updates),
        fb_params=fb_params,
        fwd_opt_state=fwd_opt_state,
        fb_opt_state=tuple(fb_states),
    )
    return new_state, metrics


def make_train_step(net: nets.Network, fwd_tx, fb_txs, hp, algorithm: str, preprocess=None, donate=True):
    """Jitted ``(state, batch, key) -> (state, metrics)`` for vanilla DTP or TP."""
    hp.validate(net)

    def step(state, batch, key):
        if preprocess is None:
            x, labels = batch["image"], batch["label"]
        else:
            x, labels = preprocess(batch, jax.random.fold_in(key, 0))
        return vanilla_update(
            state, x, labels, jax.random.fold_in(key, 1), net, fwd_tx, fb_txs, hp, algorithm
        )

    return jax.jit(step, donate_argnums=(0,) if donate else ())
