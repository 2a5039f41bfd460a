"""Feedback-weight training of layer-wise feedback blocks G^n: L-DRL (paper §4.1, Alg. 3).

For one layer n, with x = s^n, y = s^{n+1} and pool indices ι:

    r    = G(y; ι(x))
    dx   = σ ε,  ε ~ N(0, I)         ỹ, ι(x+dx) = F(x + dx)
    dr   = G(ỹ; ι(x+dx)) − r        (noisy pass's indices)
    dy   = σ η,  η ~ N(0, I)
    dr_y = G(y + dy; ι(x)) − r       (clean indices)
    L    = mean_b [ −2 ⟨dx, dr⟩ + ‖dr_y‖² ]

which is 2 × Eq. 13 (and 2σ² × Eq. 14); the tuned learning rates depend on this
scaling, as in the authors' code, so it is kept (docs/design.md). The ``'jvp'`` probe
replaces the two finite differences by their first-order terms, dr = ∂G(y)·∂F(x)·dx and
dr_y = ∂G(y)·dy, i.e. the small-noise limit of Theorem 4.2 without the finite-σ bias.

Vanilla DTP and TP train the same blocks with the reconstruction loss of Lee
et al. (2015) (:func:`reconstruction_loss`). Every layer runs K_n iterations of
its loss, each followed by an optimizer step (:func:`train_feedback`).

**Only what depends on G runs in the sequential loop.** F is fixed during feedback
training and iteration k's noise comes from its own key, so the noise, the noisy F
passes and (closed form) half of the weight gradient are the same whatever G's weights
are. :class:`LayerLoss` splits each layer's loss there: ``prepare`` computes those
terms for a chunk of iterations as batched operations, and ``lax.scan`` runs the chunk's
dependent steps on them (:func:`optimize`). Same keys, same noise: the numbers are those
of the per-iteration loop (tests/test_feedback.py, float64 to 1e-10).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jdtp import blocks as blk
from jdtp import networks as nets
from jdtp import optim

PROBES = ("difference", "jvp")


def _batch_inner(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum((a * b).reshape(a.shape[0], -1), axis=-1)


def draw_noise(key: jax.Array, x: jax.Array, y: jax.Array, sigma: float):
    """ε then η (that order, as the authors' code), i.i.d. N(0, σ²) per sample and element."""
    k_eps, k_eta = jax.random.split(key)
    dx = sigma * jax.random.normal(k_eps, x.shape, x.dtype)
    dy = sigma * jax.random.normal(k_eta, y.shape, y.dtype)
    return dx, dy


def _merge(a: jax.Array) -> jax.Array:
    """``[c, B, ...] -> [c·B, ...]``: c iterations' batches as one batch."""
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])


def _split(a: jax.Array, c: int) -> jax.Array:
    """``[c·B, ...] -> [c, B, ...]``."""
    return a.reshape(c, a.shape[0] // c, *a.shape[1:])


def _tile(aux, c: int):
    """One batch's aux repeated for c iterations, in the merged (iteration-major) layout."""
    return jax.tree.map(lambda a: jnp.tile(a, (c,) + (1,) * (a.ndim - 1)), aux)


def forward_terms(block: blk.Block, f_params, x: jax.Array, dx: jax.Array, *, probe: str = "difference"):
    """What L-DRL needs of F for the noise ``dx [c, B, ...]`` of c iterations, as one batched pass.

    ``'difference'``: the noisy passes ``y_noisy`` = F(x + dx) and their aux (pool indices);
    ``'jvp'``: the tangents ``dy_f`` = ∂F(x)·dx (the σ → 0 limit, where the noisy pool indices
    equal the clean ones). F is fixed: nothing here is differentiated.
    """
    c = dx.shape[0]
    if probe == "difference":
        y_noisy, aux_noisy = block.forward(f_params, _merge(x[None] + dx))
        y_noisy = jax.lax.stop_gradient(y_noisy)
        return {"y_noisy": _split(y_noisy, c), "aux_noisy": jax.tree.map(lambda a: _split(a, c), aux_noisy)}
    if probe == "jvp":
        fwd = block.for_forward_mode(reverse_after=False)  # F's tangent is not differentiated
        x_c = _merge(jnp.broadcast_to(x, dx.shape))
        _, dy_f = jax.jvp(lambda x_: fwd.forward(f_params, x_)[0], (x_c,), (_merge(dx),))
        return {"dy_f": _split(jax.lax.stop_gradient(dy_f), c)}
    raise ValueError(f"unknown feedback probe {probe!r}; expected one of {PROBES}")


def reconstruction_differences(
    block: blk.Block,
    g_params,
    y: jax.Array,
    idx,
    dy: jax.Array,
    terms,
    *,
    unpool_mode="set",
    probe="difference",
):
    """The two L-DRL reconstruction differences (dr, dr_y) of one iteration, from its F terms.

    ``terms``: one iteration's :func:`forward_terms`. ``'difference'``: dr = G(ỹ; ι(x+dx)) −
    G(y; ι(x)) with the noisy pass's indices, dr_y = G(y+dy; ι(x)) − G(y; ι(x)) with the clean
    ones. ``'jvp'``: their first-order terms ∂G(y)·dy_f and ∂G(y)·dy.
    """
    if probe == "difference":
        # Blocks whose G is linear ∘ input-transform + bias compute each difference of G
        # outputs as the linear part of a difference of transformed inputs: the bias
        # cancels exactly (zero gradient) and two transposed convolutions replace three.
        dr = block.feedback_difference(
            g_params, terms["y_noisy"], terms["aux_noisy"], y, idx, unpool_mode=unpool_mode
        )
        dr_y = block.feedback_difference(g_params, y + dy, idx, y, idx, unpool_mode=unpool_mode)
        return dr, dr_y
    if block.feedback_is_linear(idx, idx):
        # G is linear in its input given F's aux (a 'jacobian' or 'adjoint' ResNet G): its
        # derivative is G's linear part, so each first-order term is one pass of it, with the
        # block's reverse-mode convolutions instead of a jvp through forward-mode ones.
        def g_lin(d):
            return block.feedback(g_params, d, idx, unpool_mode=unpool_mode, with_bias=False)

        return g_lin(terms["dy_f"]), g_lin(dy)
    fwd = block.for_forward_mode()

    def g(y_):
        return fwd.feedback(g_params, y_, idx, unpool_mode=unpool_mode, with_bias=False)

    _, dr = jax.jvp(g, (y,), (terms["dy_f"],))
    _, dr_y = jax.jvp(g, (y,), (dy,))
    return dr, dr_y


def _first(tree):
    return jax.tree.map(lambda a: a[0], tree)


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
    terms = _first(forward_terms(block, f_params, x, dx[None], probe=probe))
    return reconstruction_differences(
        block, g_params, y, idx, dy, terms, unpool_mode=unpool_mode, probe=probe
    )


def ldrl_value(dx: jax.Array, dr: jax.Array, dr_y: jax.Array) -> jax.Array:
    """mean_b [−2⟨dx, dr⟩ + ‖dr_y‖²]: 2 × paper Eq. 13 (and 2σ² × Eq. 14)."""
    return jnp.mean(-2.0 * _batch_inner(dx, dr) + _batch_inner(dr_y, dr_y))


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
    return ldrl_value(dx, dr, dr_y)


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

    dx ~ N(0, σ²); no ½ and G's bias active, as the reference.
    """
    x_noisy = x + sigma * jax.random.normal(key, x.shape, x.dtype)
    y_noisy, idx_noisy = block.forward(f_params, x_noisy)
    r = block.feedback(g_params, jax.lax.stop_gradient(y_noisy), idx_noisy, unpool_mode=unpool_mode)
    diff = (x_noisy - r).reshape(x.shape[0], -1)
    return jnp.mean(jnp.sum(diff**2, axis=-1))


@dataclasses.dataclass(frozen=True)
class LayerLoss:
    """One layer's feedback loss on a fixed batch, split at what depends on G^n's weights.

    F^n is fixed during feedback training (paper §4.1) and each iteration's noise comes from its
    own key, so the noise, the noisy F pass and every term built from them alone do not depend
    on G. :func:`optimize` computes those for many iterations at once, as batched operations
    outside the sequential loop, and the loop runs only what needs the current weights.

    Attributes:
      prepare: ``keys [c] -> terms``: the G-independent terms of the c iterations of ``keys``,
        every leaf with a leading axis of length c.
      value_and_grad: ``(g_params, terms_k) -> (loss, grads)`` of one iteration.
      term_bytes: memory of one iteration's terms (sizes the chunks of :func:`optimize`).
    """

    prepare: Callable[[jax.Array], Any]
    value_and_grad: Callable[[Any, Any], tuple[jax.Array, Any]]
    term_bytes: int


def _layer_loss(prepare, value_and_grad, key_like: jax.Array) -> LayerLoss:
    terms = jax.eval_shape(prepare, jax.random.split(key_like, 1))
    term_bytes = sum(math.prod(t.shape) * t.dtype.itemsize for t in jax.tree.leaves(terms))
    return LayerLoss(prepare, value_and_grad, int(term_bytes))


def key_loss(value_and_grad) -> LayerLoss:
    """A loss given as ``(g_params, key) -> (loss, grads)``: nothing hoisted, the key is the term."""
    return LayerLoss(lambda keys: keys, value_and_grad, 0)


def ldrl_layer_loss(
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
) -> LayerLoss:
    """One layer's L-DRL loss on a fixed batch (x = s^n, y = s^{n+1}, clean aux ``idx``).

    Hoisted out of the loop (``prepare``): the noise dx, dy; with ``probe='difference'`` the
    noisy pass F(x + dx) and its pool indices, with ``probe='jvp'`` the tangent ∂F(x)·dx.

    **Closed form** (``probe='difference'``, ``closed_form`` and a block whose G is
    ``L_W ∘ a + bias`` with L_W linear in its weights W, :class:`jdtp.blocks.LinearFeedbackBlock`).
    With Δ1 = a(ỹ; ι(x+dx)) − a(y; ι(x)) and Δ2 = a(y+dy; ι(x)) − a(y; ι(x)) the loss is
    L = (1/B)[−2⟨dx, L_W(Δ1)⟩ + ‖L_W(Δ2)‖²], and with the weight gradient
    wg(Δ, c) = ∇_W ⟨c, L_W(Δ)⟩, which is bilinear and does not depend on W:

        ∇_W L = wg(Δ1, −2dx/B) + wg(Δ2, 2 L_W(Δ2)/B)
        L     = ⟨W, wg(Δ1, −2dx/B)⟩ + ‖L_W(Δ2)‖²/B       (⟨W, wg(Δ, c)⟩ = ⟨c, L_W(Δ)⟩)

    The first gradient term depends only on the noise and F: it is computed in ``prepare``
    with Δ2. Each loop iteration then runs one G map, L_W(Δ2), and one single-batch weight
    gradient; L_W(Δ1) is never needed. G's bias gets its exact zero.

    Otherwise (autodiff; ResNet's residual stages, the ``'jvp'`` probe) the loop differentiates
    :func:`ldrl_loss`'s expression of the hoisted terms.
    """
    if probe not in PROBES:
        raise ValueError(f"unknown feedback probe {probe!r}; expected one of {PROBES}")
    x = jax.lax.stop_gradient(x)
    y = jax.lax.stop_gradient(y)
    batch = x.shape[0]

    def noise(keys):
        return jax.vmap(lambda k: draw_noise(k, x, y, sigma))(keys)

    if probe == "difference" and closed_form and block.closed_form_ldrl:
        a_clean = block.feedback_input(y, idx, unpool_mode=unpool_mode)  # the same every iteration

        def prepare(keys):
            c = keys.shape[0]
            dx, dy = noise(keys)
            t = forward_terms(block, f_params, x, dx)
            merged_aux = jax.tree.map(_merge, t["aux_noisy"])
            d1 = block.feedback_input(_merge(t["y_noisy"]), merged_aux, unpool_mode=unpool_mode)
            d2 = block.feedback_input(_merge(y[None] + dy), _tile(idx, c), unpool_mode=unpool_mode)
            d1, d2 = _split(d1, c) - a_clean, _split(d2, c) - a_clean
            # One weight gradient per iteration, each a separate op: batched (vmapped) forms of
            # the kernel gradient are slower on CPU (benchmarks/NOTES.md, fourth round).
            const = [block.feedback_weight_grads(d1[i], (-2.0 / batch) * dx[i]) for i in range(c)]
            return {"d2": d2, "const_grads": jax.tree.map(lambda *g: jnp.stack(g), *const)}

        def value_and_grad(g_params, terms):
            d2, const = terms["d2"], terms["const_grads"]
            dr_y = block.feedback_linear(g_params, d2)
            w_grads = block.feedback_weight_grads(d2, (2.0 / batch) * dr_y)
            grads = {
                k: const[k] + w_grads[k] if k in w_grads else jnp.zeros_like(v) for k, v in g_params.items()
            }
            # L = ⟨W, ∇L⟩ − ‖L_W(Δ2)‖²/B with ⟨W, wg(Δ2, 2L_W(Δ2)/B)⟩ = 2‖L_W(Δ2)‖²/B: one pass over W.
            const_part = sum(jnp.sum(g_params[k] * const[k]) for k in sorted(const))
            return const_part + jnp.sum(dr_y * dr_y) / batch, grads

        return _layer_loss(prepare, value_and_grad, jax.random.key(0))

    def prepare_autodiff(keys):
        dx, dy = noise(keys)
        return {"dx": dx, "dy": dy, **forward_terms(block, f_params, x, dx, probe=probe)}

    def loss(g_params, t):
        dr, dr_y = reconstruction_differences(
            block, g_params, y, idx, t["dy"], t, unpool_mode=unpool_mode, probe=probe
        )
        return ldrl_value(t["dx"], dr, dr_y)

    return _layer_loss(prepare_autodiff, jax.value_and_grad(loss), jax.random.key(0))


def reconstruction_layer_loss(
    block: blk.Block, f_params, x: jax.Array, *, sigma: float, unpool_mode: str = "set"
) -> LayerLoss:
    """:func:`reconstruction_loss` on a fixed batch, with the noise and the noisy F pass hoisted."""
    x = jax.lax.stop_gradient(x)

    def prepare(keys):
        dx = sigma * jax.vmap(lambda k: jax.random.normal(k, x.shape, x.dtype))(keys)
        return {"x_noisy": x[None] + dx, **forward_terms(block, f_params, x, dx)}

    def loss(g_params, t):
        r = block.feedback(g_params, t["y_noisy"], t["aux_noisy"], unpool_mode=unpool_mode)
        diff = (t["x_noisy"] - r).reshape(x.shape[0], -1)
        return jnp.mean(jnp.sum(diff**2, axis=-1))

    return _layer_loss(prepare, jax.value_and_grad(loss), jax.random.key(0))


# ``chunk_mib`` of 0 picks by backend: one iteration per chunk on CPU, where an iteration's arrays
# stay in cache and larger chunks measured slower (benchmarks/NOTES.md, fourth round); on
# accelerators as many iterations as fit in this many MiB, so that they run in parallel.
AUTO_ACCELERATOR_CHUNK_MIB = 1024.0


def chunk_size(layer_loss: LayerLoss, num_iters: int, chunk_mib: float = 0.0) -> int:
    """Iterations per chunk: as many as whose hoisted terms fit in ``chunk_mib`` MiB (≥ 1, ≤ K).

    ``chunk_mib = 0``: automatic (:data:`AUTO_ACCELERATOR_CHUNK_MIB`; one iteration on CPU).
    """
    if chunk_mib == 0:
        if jax.default_backend() == "cpu":
            return 1
        chunk_mib = AUTO_ACCELERATOR_CHUNK_MIB
    fit = int(chunk_mib * 2**20 // max(layer_loss.term_bytes, 1))
    return max(1, min(int(num_iters), fit))


def _chunked_keys(keys: jax.Array, chunk: int, total: int) -> jax.Array:
    """``keys [K]`` as ``[total // chunk, chunk]``, padded with the last key (its results are skipped)."""
    pad = total - keys.shape[0]
    if pad:
        keys = jnp.concatenate([keys, jnp.broadcast_to(keys[-1:], (pad, *keys.shape[1:]))])
    return keys.reshape(total // chunk, chunk, *keys.shape[1:])


def _step(layer_loss: LayerLoss, tx, p, state, terms):
    loss, grads = layer_loss.value_and_grad(p, terms)
    updates, state = tx.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss


def optimize(
    layer_loss: LayerLoss,
    params,
    opt_state,
    tx: optax.GradientTransformation,
    key: jax.Array,
    num_iters: int,
    *,
    chunk: int | None = None,
    unroll: int = 1,
):
    """``num_iters`` steps of ``tx`` on a layer's loss; iteration k uses ``split(key, num_iters)[k]``.

    The iterations run in chunks of ``chunk`` (all at once by default): a chunk's G-independent
    terms are computed first, as batched operations (``layer_loss.prepare``), then a ``lax.scan``
    runs the chunk's sequential steps on them. Several chunks run as an outer ``lax.scan``, so the
    program does not grow with their number; a shorter last chunk runs after it. Chunks bound
    the memory of the terms.

    Returns:
      ``(params, opt_state, losses)``; ``losses[k]`` is the loss before step k.
    """

    def inner(carry, terms):
        p, state, loss = _step(layer_loss, tx, *carry, terms)
        return (p, state), loss

    def run_chunk(carry, chunk_keys):
        return jax.lax.scan(inner, carry, layer_loss.prepare(chunk_keys), unroll=unroll)

    num_iters = int(num_iters)
    chunk = num_iters if chunk is None else max(1, min(int(chunk), num_iters))
    keys = jax.random.split(key, num_iters)
    n_full, rest = divmod(num_iters, chunk)
    carry, losses = (params, opt_state), []
    if n_full == 1:
        carry, chunk_losses = run_chunk(carry, keys[:chunk])
        losses.append(chunk_losses)
    elif n_full > 1:
        carry, chunk_losses = jax.lax.scan(run_chunk, carry, keys[: n_full * chunk].reshape(n_full, chunk))
        losses.append(chunk_losses.reshape(-1))
    if rest:
        carry, chunk_losses = run_chunk(carry, keys[n_full * chunk :])
        losses.append(chunk_losses)
    return *carry, jnp.concatenate(losses)


def scan_optimize(loss_fn, params, opt_state, tx, key: jax.Array, num_iters: int, *, unroll: int = 1):
    """:func:`optimize` for a plain ``loss_fn(params, key_k)`` (differentiated here)."""
    return optimize(
        key_loss(jax.value_and_grad(loss_fn)), params, opt_state, tx, key, num_iters, unroll=unroll
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
    chunk_mib: float = 0.0,
):
    """K iterations of L-DRL on one layer, each followed by one optimizer step (Alg. 3).

    x, y and the clean indices are computed once per batch by the caller (forward weights do
    not change during feedback training, paper §4.1); see :func:`optimize`.

    Returns:
      ``(g_params, opt_state, losses)`` with ``losses`` of shape ``[K]``, the
      loss of each iteration before its step.
    """
    layer_loss = ldrl_layer_loss(
        block, f_params, x, y, idx, sigma=sigma, unpool_mode=unpool_mode, probe=probe, closed_form=closed_form
    )
    chunk = chunk_size(layer_loss, num_fb_iters, chunk_mib)
    return optimize(layer_loss, g_params, opt_state, tx, key, num_fb_iters, chunk=chunk, unroll=unroll)


FB_OPTIMIZERS = ("sgd", "adam")


def make_fb_optimizers(
    fb_lrs, momentum: float = 0.9, kind: str = "sgd"
) -> tuple[optax.GradientTransformation, ...]:
    """One optimizer per trainable G^n, constant lr, no weight decay.

    ``'sgd'``: SGD with ``momentum``, the paper's (Alg. 3). ``'adam'``: Adam with PyTorch's
    constants (``momentum`` unused), ours: its steps are in units of the weights whatever the
    scale of the L-DRL gradient, which differs by orders of magnitude between layers (the head's
    exact transpose carries 1/(H·W) of the average pool, squared in its gradient).
    """
    if kind == "sgd":
        return tuple(optax.sgd(float(lr), momentum=momentum) for lr in fb_lrs)
    if kind == "adam":
        return tuple(optim.torch_adam(float(lr)) for lr in fb_lrs)
    raise ValueError(f"unknown feedback optimizer {kind!r}; expected one of {FB_OPTIMIZERS}")


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
    layer_loss,
    unroll: int = 1,
    mode: str = "sequential",
    chunk_mib: float = 0.0,
):
    """Train every G^n, n = 1 … N−1, for its K_n iterations.

    G^n's iterations depend only on s^n, s^{n+1}, F^n's weights, G^n and its key, so the layers
    need not wait for each other (paper §4.1, "the parallelism allowed by our layer-wise feedback
    weight training"):

    * ``'sequential'``: one :func:`optimize` per layer, bottom to top (ΣK_n loop iterations);
    * ``'concurrent'``: one ``lax.scan`` per chunk over max K_n in which every layer takes its
      iteration k, a layer that has done its K_n skipping the rest through ``lax.cond`` (which
      runs one branch: no wasted work). max K_n sequential iterations, which bounds the step time
      on accelerators where each iteration is a few small kernels.

    In both, each layer's G-independent terms are computed before the loop that uses them, in
    chunks of at most ``chunk_mib`` MiB of terms per layer (:class:`LayerLoss`), and iteration k
    of layer n draws from ``split(fold_in(key, n), K_n)[k]``, so the two modes give the same
    parameters (equal to float32 rounding: XLA may fuse the two loop bodies differently).

    Args:
      net: the network.
      fwd_params: forward parameters (fixed during feedback training).
      fb_params: feedback parameters (G^0 is returned unchanged).
      fb_opt_states: optimizer state per trainable G^n (forward order, G^1 first).
      fb_txs: optimizer per trainable G^n.
      s: activations ``(s^0, …, s^N)`` of the batch (computed once, paper §4.1).
      aux: F^n's clean aux (pool indices) per block.
      key: PRNG key.
      num_fb_iters: K_n per trainable G^n.
      layer_loss: ``(n, f_params, x, y, aux_n) -> LayerLoss``, the layer's feedback loss on this
        batch (e.g. :func:`ldrl_layer_loss`).
      unroll: ``lax.scan`` unroll factor.
      mode: ``'sequential'`` or ``'concurrent'``.
      chunk_mib: memory for one chunk of a layer's hoisted terms; 0: automatic (:func:`chunk_size`).

    Returns:
      ``(fb_params, fb_opt_states, losses)`` where ``losses[n-1]`` is the
      ``[K_n]`` vector of per-iteration losses of G^n.
    """
    if mode not in FEEDBACK_MODES:
        raise ValueError(f"unknown feedback mode {mode!r}; expected one of {FEEDBACK_MODES}")
    s = jax.lax.stop_gradient(s)
    layers = range(1, net.num_blocks)
    losses_fns = [layer_loss(n, fwd_params[n], s[n], s[n + 1], aux[n]) for n in layers]
    iters = [int(num_fb_iters[n - 1]) for n in layers]
    keys = [jax.random.split(jax.random.fold_in(key, n), k) for n, k in zip(layers, iters, strict=True)]
    if mode == "sequential":
        fb_params, new_states, losses = list(fb_params), [], []
        for j, n in enumerate(layers):
            g, state, layer_losses = optimize(
                losses_fns[j],
                fb_params[n],
                fb_opt_states[j],
                fb_txs[j],
                jax.random.fold_in(key, n),
                iters[j],
                chunk=chunk_size(losses_fns[j], iters[j], chunk_mib),
                unroll=unroll,
            )
            fb_params[n] = g
            new_states.append(state)
            losses.append(layer_losses)
        return tuple(fb_params), tuple(new_states), tuple(losses)

    # Concurrent: chunks of ``chunk`` iterations over max K_n; in chunk j each layer with iterations
    # left prepares its terms (keys past its K_n are padding, their steps skipped), then one inner
    # scan takes iteration j·chunk + i of every layer.
    k_max = max(iters)
    chunk = min(
        chunk_size(layer, k_max, chunk_mib) for layer in losses_fns
    )  # what every layer's memory allows
    n_chunks = -(-k_max // chunk)
    table = [_chunked_keys(k, chunk, n_chunks * chunk) for k in keys]

    def run_chunk(carry, inputs):
        j, chunk_keys = inputs
        terms = []
        for m, (layer, k) in enumerate(zip(losses_fns, iters, strict=True)):
            if k >= n_chunks * chunk:
                terms.append(layer.prepare(chunk_keys[m]))
            else:
                empty = jax.eval_shape(layer.prepare, chunk_keys[m])
                terms.append(
                    jax.lax.cond(
                        j * chunk < k,
                        layer.prepare,
                        lambda _, e=empty: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), e),
                        chunk_keys[m],
                    )
                )

        def inner(carry, i):
            ps, sts, out = list(carry[0]), list(carry[1]), []
            for m, k in enumerate(iters):

                def step(p, st, i_, m=m):
                    return _step(losses_fns[m], fb_txs[m], p, st, jax.tree.map(lambda a: a[i_], terms[m]))

                def skip(p, st, i_):
                    del i_
                    return p, st, jnp.zeros((), jax.tree.leaves(p)[0].dtype)

                if k >= n_chunks * chunk:
                    ps[m], sts[m], loss = step(ps[m], sts[m], i)
                else:
                    ps[m], sts[m], loss = jax.lax.cond(j * chunk + i < k, step, skip, ps[m], sts[m], i)
                out.append(loss)
            return (tuple(ps), tuple(sts)), jnp.stack(out)

        return jax.lax.scan(inner, carry, jnp.arange(chunk), unroll=unroll)

    carry = (tuple(fb_params[n] for n in layers), tuple(fb_opt_states))
    chunk_keys = jnp.stack(table, axis=1)  # [n_chunks, layers, chunk]
    (params, states), all_losses = jax.lax.scan(run_chunk, carry, (jnp.arange(n_chunks), chunk_keys))
    all_losses = all_losses.reshape(n_chunks * chunk, len(iters))
    new_fb = (fb_params[0], *params)
    return new_fb, tuple(states), tuple(all_losses[:k, m] for m, k in enumerate(iters))
