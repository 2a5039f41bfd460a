"""DRL / DDTP-linear baseline of Meulemans et al. (2020), as used in Fig. 2 and Fig. 3 (design §7, §8.4).

The network is the LeNet-equivalent ``DDTPConvNetworkCIFAR``: the *same* forward
blocks as :func:`jdtp.networks.lenet` (conv → act → max-pool 3×3/s2/p1, fc,
output), so it reuses the blocks' ``forward`` and the forward
parameters of our LeNet unchanged. Only the feedback pathway differs: instead
of layer-wise blocks G^n, every hidden activation s^n (n = 1 … N−1) receives a
*direct linear* feedback Q_n from the network output s^N (paper §5.1
"DDTP-linear"):

    t^N = s^N − η ∂ mean_b CE(s^N, y) / ∂s^N                  (mean CE: carries 1/B)
    t^n = reshape(t^N Q_n) + s^n − reshape(s^N Q_n)           (DDTP difference target)

and Q_n is trained with the difference reconstruction loss (DRL):

    h̃ = s^n + σ ξ,  õ = F^{N−1} ∘ … ∘ F^n (h̃)   (fresh pooling, no gradient)
    r = reshape(õ Q_n) + s^n − reshape(s^N Q_n)
    L_n = (1/σ²) · mean_{B × dims} (r − h̃)²

with one Adam over all Q_n (coupled weight decay). Two call semantics are
offered (design §8.4, §10.16):

* ``'fork'`` — the vendored fork that produced the paper's DDTP numbers: the
  gradient buffer is zeroed once per call; for each layer n and each of its K_n
  iterations the layer's gradient is *assigned* into the buffer and the single
  Adam steps **all** feedback parameters, so the stale gradients of the layers
  already processed in this call are re-applied at every later step.
* ``'original'`` — Meulemans' code: all layers' gradients once, one step
  (repeated ``max K_n`` times; a layer whose K_n is exhausted contributes a
  zero gradient).

PyTorch details that are kept: parameters whose ``.grad`` has never been set are
skipped by Adam (``zero_grad`` keeps an existing gradient tensor at zero, so once
a layer has been trained it is stepped at every later step, by momentum and
weight decay alone when its gradient is zero), and Adam's step counter is kept
per parameter. Conventions: ``q_params[j]`` (j = 0 … N−2) is the feedback of
hidden layer n = j + 1 and holds ``{'kernel': [num_classes, prod(shape(s^n))]}``,
the layout of our dense G kernels (``t @ kernel``); the reference stores its
transpose. The FC layer's feedback bias of the reference is left out: it cancels
in every difference, so its gradient is zero and, being zero-initialised, weight
decay keeps it at zero.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jdtp import metrics as mt
from jdtp import networks as nets
from jdtp import optim
from jdtp import targets as targets_lib

SEMANTICS = ("fork", "original")


@dataclasses.dataclass(frozen=True)
class DRLHParams:
    """DRL feedback-training hyperparameters (design §8.4; the paper's values: ``jdtp.ddtp_configs``).

    ``sigma`` is one scalar shared by all layers, as the reference code has it, or
    a tuple with one σ per hidden layer, as paper Tables 8 and 9 list them.
    """

    sigma: float | tuple[float, ...]
    lr: float
    eps: float
    weight_decay: float
    b1: float = optim.ADAM_B1
    b2: float = optim.ADAM_B2
    semantics: str = "fork"

    def validate(self) -> None:
        if self.semantics not in SEMANTICS:
            raise ValueError(f"drl semantics={self.semantics!r}, expected one of {SEMANTICS}")
        sigmas = self.sigma if isinstance(self.sigma, tuple) else (self.sigma,)
        if not sigmas or min(sigmas) <= 0:
            raise ValueError(f"drl sigma must be > 0 (the DRL loss divides by σ²), got {self.sigma}")

    def layer_sigma(self, n: int) -> float:
        """σ of hidden layer n (1-based)."""
        return float(self.sigma[n - 1]) if isinstance(self.sigma, tuple) else float(self.sigma)


class DRLOptState(NamedTuple):
    """PyTorch-style Adam state over all Q_n.

    Attributes:
      mu: first moments, one pytree per hidden layer.
      nu: second moments.
      count: ``[N−1]`` int32, Adam steps taken by each layer (PyTorch keeps one
        counter per parameter, so a layer first stepped late starts its bias
        correction at 1).
      has_grad: ``[N−1]`` bool, whether the layer's ``.grad`` tensor exists; a
        layer without one is skipped by the step.
    """

    mu: tuple
    nu: tuple
    count: jax.Array
    has_grad: jax.Array


# ---------------------------------------------------------------------------
# Parameters.


def hidden_shapes(net: nets.Network) -> tuple[tuple[int, ...], ...]:
    """Per-sample shapes of the hidden activations s^1 … s^{N−1}."""
    return tuple(tuple(b.out_shape) for b in net.blocks[:-1])


def init_direct_feedback(key: jax.Array, net: nets.Network, dtype=jnp.float32) -> tuple[dict, ...]:
    """Xavier-normal direct feedback Q_n: std = sqrt(2 / (fan_in + fan_out)) (design §8.4).

    fan_in = num_classes and fan_out = prod(shape(s^n)), as ``xavier_normal_`` on
    the reference's ``[features, num_classes]`` matrix (the std is symmetric in
    the two fans, so the transposed storage here draws the same distribution).
    """
    c = net.num_classes
    out = []
    for j, shape in enumerate(hidden_shapes(net)):
        d = math.prod(shape)
        std = math.sqrt(2.0 / (c + d))
        out.append({"kernel": std * jax.random.normal(jax.random.fold_in(key, j + 1), (c, d), dtype)})
    return tuple(out)


def init_opt_state(q_params) -> DRLOptState:
    """Fresh Adam state: zero moments, no step taken, no ``.grad`` yet."""
    zeros = jax.tree.map(jnp.zeros_like, tuple(q_params))
    n = len(q_params)
    return DRLOptState(zeros, zeros, jnp.zeros((n,), jnp.int32), jnp.zeros((n,), bool))


def direct_feedback(q: dict, value: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Q_n applied to an output-space value, reshaped to s^n: ``reshape(value @ Q_n)``."""
    return (value @ q["kernel"]).reshape(value.shape[0], *shape)


# ---------------------------------------------------------------------------
# Targets and the DDTP forward-weight update (design §8.4).


def output_target(logits: jax.Array, labels: jax.Array, target_stepsize: float) -> jax.Array:
    """t^N = s^N − η ∂/∂s^N mean_b CE: the *mean* CE, so the nudge carries 1/B (design §8.4)."""
    return logits - target_stepsize * targets_lib.output_gradient(logits, labels) / logits.shape[0]


def ddtp_targets(net: nets.Network, q_params, s: tuple, t_last: jax.Array) -> tuple:
    """t^n = reshape(t^N Q_n) + s^n − reshape(s^N Q_n) for every hidden n (design §8.4).

    Returns:
      Tuple of length N + 1: ``(None, t^1, …, t^{N−1}, t^N)``.
    """
    shapes = hidden_shapes(net)
    t_last = jax.lax.stop_gradient(t_last)
    t = [None]
    for j, q in enumerate(q_params):
        t_n = direct_feedback(q, t_last, shapes[j]) + s[j + 1] - direct_feedback(q, s[-1], shapes[j])
        t.append(jax.lax.stop_gradient(t_n))
    t.append(t_last)
    return tuple(t)


def ddtp_block_loss(block, s_next: jax.Array, t_next: jax.Array) -> jax.Array:
    """The reference's DDTP layer loss (design §8.4, §10.17).

    Conv layers (outputs with spatial dimensions): ``mse_loss``, a mean over all
    B·H·W·C elements. Dense layers (hidden and output): the manual
    ``δ = 2 φ'(a) ⊙ (h − t)``, ``∇W = δᵀ h_prev / B``, i.e. the gradient of
    ``mean_b Σ_features (h − t)²``.
    """
    del block
    diff = s_next - t_next
    if diff.ndim > 2:
        return jnp.mean(diff**2)
    return jnp.mean(jnp.sum(diff.reshape(diff.shape[0], -1) ** 2, axis=-1))


def ddtp_forward_grads(
    net: nets.Network, fwd_params, q_params, x: jax.Array, labels: jax.Array, target_stepsize: float
):
    """The DDTP forward-weight update direction with the reference's local losses (design §8.4).

    Each block sees its detached input (the stored activation of the layer below)
    and is pulled toward its DDTP target with :func:`ddtp_block_loss`
    (:func:`jdtp.targets.forward_update`). For the GMP angle (Fig. 3 schemes (a)
    and (c)) divide by η (the angle is scale-invariant anyway); the per-layer
    normalisations differ, as in the reference (design §10.17).

    Returns:
      ``(grads, aux)`` with ``aux`` holding ``s``, ``aux``, ``t`` and ``loss``.
    """

    def targets(s, aux):
        del aux
        return ddtp_targets(net, q_params, s, output_target(s[-1], labels, target_stepsize))

    return targets_lib.forward_update(net, fwd_params, x, targets=targets, block_loss=ddtp_block_loss)


# ---------------------------------------------------------------------------
# DRL feedback loss (design §8.4).


def propagate_up(net: nets.Network, fwd_params, h: jax.Array, n: int) -> jax.Array:
    """F^{N−1} ∘ … ∘ F^n (h): s^n-space value to the output, with fresh pooling."""
    for block, p in zip(net.blocks[n:], fwd_params[n:], strict=True):
        h, _ = block.forward(p, h)
    return h


def drl_loss(net: nets.Network, fwd_params, q: dict, n: int, s: tuple, key: jax.Array, sigma: float):
    """DRL loss of hidden layer n (1 ≤ n ≤ N−1) for one noise draw (design §8.4).

    Args:
      net: the network (LeNet-equivalent forward pathway).
      fwd_params: forward parameters (fixed).
      q: Q_n's parameters (differentiated).
      n: hidden-layer index; the activation is ``s[n]``.
      s: activations ``(s^0, …, s^N)`` of the current batch.
      key: noise key; ξ ~ N(0, I) with the shape of s^n.
      sigma: noise scale σ (scalar, shared by all layers in the reference).

    Returns:
      ``(1/σ²) · mean (r − h̃)²`` over the batch and every element of s^n.
    """
    h = jax.lax.stop_gradient(s[n])
    h_last = jax.lax.stop_gradient(s[-1])
    shape = h.shape[1:]
    h_noisy = h + sigma * jax.random.normal(key, h.shape, h.dtype)
    o_noisy = jax.lax.stop_gradient(propagate_up(net, fwd_params, h_noisy, n))
    r = direct_feedback(q, o_noisy, shape) + h - direct_feedback(q, h_last, shape)
    return jnp.mean((r - h_noisy) ** 2) / sigma**2


# ---------------------------------------------------------------------------
# PyTorch-style Adam over all feedback parameters.


def adam_step(q_params, grads, state: DRLOptState, hp: DRLHParams):
    """One ``torch.optim.Adam(weight_decay=wd)`` step over every layer with a ``.grad``.

    Coupled weight decay: ``g ← g + wd·p`` before the moments; then
    ``p ← p − lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps)``, with t the
    layer's own step count. Layers with ``has_grad == False`` are left untouched.
    """
    new_q, new_mu, new_nu = [], [], []
    count = state.count + state.has_grad.astype(state.count.dtype)
    for j, (p, g, m, v) in enumerate(zip(q_params, grads, state.mu, state.nu, strict=True)):
        active = state.has_grad[j]
        t = jnp.maximum(count[j], 1)
        p2, m2, v2 = {}, {}, {}
        for name in p:
            gj = g[name] + hp.weight_decay * p[name]
            mj = hp.b1 * m[name] + (1.0 - hp.b1) * gj
            vj = hp.b2 * v[name] + (1.0 - hp.b2) * gj * gj
            bc1 = 1.0 - hp.b1 ** t.astype(p[name].dtype)
            bc2 = 1.0 - hp.b2 ** t.astype(p[name].dtype)
            denom = jnp.sqrt(vj) / jnp.sqrt(bc2) + hp.eps
            pj = p[name] - (hp.lr / bc1) * mj / denom
            p2[name] = jnp.where(active, pj, p[name])
            m2[name] = jnp.where(active, mj, m[name])
            v2[name] = jnp.where(active, vj, v[name])
        new_q.append(p2)
        new_mu.append(m2)
        new_nu.append(v2)
    return tuple(new_q), DRLOptState(tuple(new_mu), tuple(new_nu), count, state.has_grad)


def zero_grads(q_params) -> tuple:
    """The gradient buffer after ``zero_grad()`` (set to zero, not to None: torch 1.8, design §0.1)."""
    return jax.tree.map(jnp.zeros_like, tuple(q_params))


# ---------------------------------------------------------------------------
# Feedback training.


def iteration_key(key: jax.Array, n: int, k) -> jax.Array:
    """Noise key of iteration k of hidden layer n; identical under both semantics."""
    return jax.random.fold_in(jax.random.fold_in(key, n), k)


def train_feedback_layer_fork(
    net: nets.Network,
    fwd_params,
    q_params,
    opt_state: DRLOptState,
    grad_buffer,
    s: tuple,
    n: int,
    key: jax.Array,
    num_iters: int,
    hp: DRLHParams,
    *,
    start: int = 0,
    compute_grad: bool = True,
    unroll: int = 1,
):
    """The fork's inner loop for hidden layer n: K iterations, each a step of the shared Adam.

    Each iteration *assigns* layer n's fresh DRL gradient into ``grad_buffer``
    (the ``.grad`` attributes) and steps every layer that has a gradient with the
    whole buffer, so the stale gradients of layers processed earlier in the same
    call are applied again (design §8.4, §10.16). Exposed so long calls can be
    split into chunks (``start`` is the index of the first iteration, for the
    noise keys) while carrying the buffer.

    Args:
      compute_grad: ``False`` replaces layer n's gradient by zeros without
        computing it. Adam is elementwise and each layer has its own step count,
        so every *other* layer's trajectory is unchanged; this is an exact
        shortcut when only some layers are of interest (e.g. Q of fc1 in Fig. 2).

    Returns:
      ``(q_params, opt_state, grad_buffer, losses [num_iters])`` (losses are 0
      when ``compute_grad`` is False).
    """
    j = n - 1
    has_grad = opt_state.has_grad.at[j].set(True)
    opt_state = opt_state._replace(has_grad=has_grad)
    grad_fn = jax.value_and_grad(lambda q_, k_: drl_loss(net, fwd_params, q_, n, s, k_, hp.layer_sigma(n)))

    def body(carry, k):
        q, st, buf = carry
        if compute_grad:
            loss, g = grad_fn(q[j], iteration_key(key, n, k))
        else:
            loss, g = jnp.zeros((), q[j]["kernel"].dtype), jax.tree.map(jnp.zeros_like, q[j])
        buf = (*buf[:j], g, *buf[j + 1 :])
        q, st = adam_step(q, buf, st, hp)
        return (q, st, buf), loss

    ks = start + jnp.arange(num_iters)
    (q_params, opt_state, grad_buffer), losses = jax.lax.scan(
        body, (tuple(q_params), opt_state, tuple(grad_buffer)), ks, unroll=unroll
    )
    return q_params, opt_state, grad_buffer, losses


def train_feedback(
    net: nets.Network,
    fwd_params,
    q_params,
    opt_state: DRLOptState,
    s: tuple,
    key: jax.Array,
    num_iters,
    hp: DRLHParams,
    *,
    compute_grads=None,
    unroll: int = 1,
):
    """One call of DDTP's ``train_feedback_parameters`` on the batch whose activations are ``s``.

    Args:
      net: the network.
      fwd_params: forward parameters (fixed).
      q_params: the direct feedback Q_1 … Q_{N−1}.
      opt_state: the Adam state from :func:`init_opt_state` (persists across calls).
      s: activations ``(s^0, …, s^N)`` from :func:`jdtp.targets.forward_pass`.
      key: PRNG key of this call; iteration k of layer n draws from
        :func:`iteration_key` under both semantics.
      num_iters: K_n per hidden layer, forward order (n = 1 … N−1).
      hp: hyperparameters, including ``semantics`` ('fork' or 'original').
      compute_grads: optional bools per hidden layer; ``False`` uses a zero
        gradient instead of computing it (see :func:`train_feedback_layer_fork`).
      unroll: ``lax.scan`` unroll factor.

    Returns:
      ``(q_params, opt_state, losses)``; ``losses[j]`` is the ``[K_{j+1}]`` vector
      of DRL losses of hidden layer j + 1 (before the step it drives).
    """
    hp.validate()
    n_hidden = net.num_blocks - 1
    num_iters = tuple(int(k) for k in num_iters)
    if len(num_iters) != n_hidden or len(q_params) != n_hidden:
        raise ValueError(
            f"num_iters={num_iters} and q_params ({len(q_params)}) need one entry per hidden layer "
            f"({n_hidden} for {net.name})"
        )
    compute_grads = (True,) * n_hidden if compute_grads is None else tuple(bool(c) for c in compute_grads)
    buf = zero_grads(q_params)
    q_params = tuple(q_params)
    if hp.semantics == "fork":
        losses = []
        for j, k_n in enumerate(num_iters):
            if k_n == 0:
                losses.append(jnp.zeros((0,), q_params[j]["kernel"].dtype))
                continue
            q_params, opt_state, buf, layer_losses = train_feedback_layer_fork(
                net,
                fwd_params,
                q_params,
                opt_state,
                buf,
                s,
                j + 1,
                key,
                k_n,
                hp,
                compute_grad=compute_grads[j],
                unroll=unroll,
            )
            losses.append(layer_losses)
        return q_params, opt_state, tuple(losses)

    # Original Meulemans semantics: every layer's gradient, then one step.
    k_max = max(num_iters) if num_iters else 0
    grad_fns = [
        jax.value_and_grad(lambda q_, k_, n=j + 1: drl_loss(net, fwd_params, q_, n, s, k_, hp.layer_sigma(n)))
        for j in range(n_hidden)
    ]

    def body(carry, k):
        q, st = carry
        grads, step_losses, has_grad = [], [], st.has_grad
        for j in range(n_hidden):
            zero = (jnp.zeros((), q[j]["kernel"].dtype), jax.tree.map(jnp.zeros_like, q[j]))
            if num_iters[j] == 0 or not compute_grads[j]:
                loss, g = zero
            elif num_iters[j] == k_max:
                loss, g = grad_fns[j](q[j], iteration_key(key, j + 1, k))
            else:
                loss, g = jax.lax.cond(
                    k < num_iters[j],
                    lambda q_, k_, j=j: grad_fns[j](q_, iteration_key(key, j + 1, k_)),
                    lambda q_, k_, z=zero: z,
                    q[j],
                    k,
                )
            if num_iters[j] > 0:
                has_grad = has_grad.at[j].set(has_grad[j] | (k < num_iters[j]))
            grads.append(g)
            step_losses.append(loss)
        q, st = adam_step(q, tuple(grads), st._replace(has_grad=has_grad), hp)
        return (q, st), jnp.stack(step_losses)

    (q_params, opt_state), all_losses = jax.lax.scan(
        body, (q_params, opt_state), jnp.arange(k_max), unroll=unroll
    )
    losses = tuple(all_losses[: num_iters[j], j] for j in range(n_hidden))
    return q_params, opt_state, losses


# ---------------------------------------------------------------------------
# Metrics.


def output_layer_alignment(fwd_params, q_params) -> tuple[jax.Array, jax.Array]:
    """Fig. 2's DRL metric: distance and angle between W_outᵀ and Q of the last hidden layer (design §7.1).

    The reference compares ``W_out.T`` (512×10) with the fc1 feedback matrix
    (512×10); here that is the output block's kernel ``[512, 10]`` against
    ``Q_{N−1}.kernel.T``.

    Returns:
      ``(distance, angle)`` from :mod:`jdtp.metrics` (distance relative to W_outᵀ).
    """
    a = fwd_params[-1]["kernel"]
    b = q_params[-1]["kernel"].T
    return mt.relative_distance(a, b), mt.angle(a, b)
