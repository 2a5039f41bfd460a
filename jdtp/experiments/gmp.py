r"""Fig. 3: the GMP under five feedback-weight schemes (paper §5.2, design §7.2).

Per seed: a no-bias LeNet (weights drawn as ``LeNet(bias=True)`` under the seed,
biases dropped) with random *fixed* forward weights and one batch (256). For
each scheme, the angle between the forward-weight update and the backprop
gradient of the mean cross-entropy is measured per layer (conv_0, conv_1, fc1,
fc2; weights only, design §6.3), with the training β = 0.4655:

* ``DRL_random`` (a): DDTP-linear direct feedback Q at xavier-normal init;
  DDTP update (:func:`jdtp.drl.ddtp_forward_grads`, target stepsize β) / β.
* ``L-DRL_random`` (b): our layer-wise G at PyTorch-default init, no training;
  DTP update (:func:`jdtp.targets.dtp_forward_grads`) / β.
* ``DRL`` (c): (a) after one DDTP feedback call with K iterations *per hidden
  layer* (fork semantics: one Adam over all Q, stale gradients re-applied;
  Adam lr 0.0045, σ 0.00921, wd 6.17e-5).
* ``L-DRL`` (d): (b) after L-DRL pre-training on the batch, G^1 then G^2 then
  G^3, K = [5000, 5000, 5000], σ = [0.2, 0.2, 0.1], lr = [1e-4, 2.5e-3, 0.01],
  SGD momentum 0.9.
* ``L-DRL_sym`` (e): G^n = F^{nᵀ} (:func:`jdtp.networks.symmetric_fb_params`).

Unpooling ablation (``--unpool_mode=both``, default): the L-DRL schemes are
run with the reference's scatter-*set* max-unpool and with the exact transpose
scatter-*add* (design §1.3, §10.4). Only G^1 (conv_1's feedback) unpools, so only
its training and the conv_0 angle depend on the mode; G^2 and G^3 are trained
once and shared by both modes.

Deviations from the reference protocol: no data augmentation of the batch;
all schemes of a seed see the same batch (the reference's L-DRL and DRL
schemes may see different batches, design §10.15).

Budget: the defaults (``configs/figures/fig3_gmp.py``) are the paper's. On CPU, G^1's
L-DRL iterations dominate (≈ 0.24 s per iteration at batch 64 on 2 cores, ∝
batch size), so the paper budget takes hours per seed; the CPU figure in
``docs/figures/gmp.png`` used the variant ``:cpu`` (3 seeds, batch 64, K =
[400, 5000, 5000] with G^1's lr scaled by 5000/400 to keep K·lr, DRL 1000
iterations per layer), with the im2col convolutions jdtp used on CPU then. With
XLA's library convolutions on CPU (``conv_impl='xla'``), the kernel-gradient
convolution runs ~30× slower inside a ``lax.scan`` body (benchmarks/NOTES.md);
the CPU default ``'mixed'`` computes kernel gradients as matrix products and
does not have the problem.

Examples (configured like training: ``--config.KEY=VALUE`` overrides)::

  python -m jdtp.experiments.gmp --out=results/gmp                                 # paper budget
  python -m jdtp.experiments.gmp --config=configs/figures/fig3_gmp.py:cpu --out=results/gmp

Writes ``gmp.png`` (grouped bars, mean ± std over seeds, paper values as
markers) and ``gmp.json`` (per scheme / unpool mode / layer: mean, std,
per-seed angles; GMP distances; JMC after pre-training; flags and budget).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from jdtp import drl, feedback, plotting, pooling, targets
from jdtp import experiments as ex
from jdtp import metrics as mt
from jdtp import networks as nets

SCHEMES = ("DRL_random", "L-DRL_random", "DRL", "L-DRL", "L-DRL_sym")
LDRL_SCHEMES = ("L-DRL_random", "L-DRL", "L-DRL_sym")
LAYERS = ("conv_0", "conv_1", "fc1", "fc2")

# Spec §7.2 / §12.2: csv means over 5 seeds where available, else read off the final figure.
PAPER = {
    "DRL_random": {"angle": [90.0, 89.6, 89.5, 1.5], "source": "figure (approx.)"},
    "L-DRL_random": {"angle": [86.5, 93.2, 90.3, 0.03], "source": "angle_data.csv"},
    "DRL": {"angle": [84.5, 83.0, 13.5, 1.5], "source": "figure (approx.); text: <= 79°"},
    "L-DRL": {"angle": [32.5, 6.9, 2.6, 0.03], "source": "angle_data.csv"},
    "L-DRL_sym": {"angle": [21.7, 2.4, 0.02, 0.03], "source": "angle_data.csv"},
}


def ldrl_budget(args) -> tuple[int, ...]:
    """K per trainable G^n; ``iterations >= 0`` overrides every layer."""
    k = tuple(int(v) for v in args.ldrl_iters)
    return (int(args.iterations),) * len(k) if args.iterations >= 0 else k


def drl_budget(args) -> int:
    return int(args.iterations) if args.iterations >= 0 else int(args.drl_iters)


def unpool_modes(args) -> tuple[str, ...]:
    if args.unpool_mode == "both":
        return pooling.UNPOOL_MODES
    if args.unpool_mode not in pooling.UNPOOL_MODES:
        raise ValueError(f"unpool_mode={args.unpool_mode!r}, expected one of set, add, both")
    return (args.unpool_mode,)


def validate(args) -> None:
    """Checks of the experiment config; ``ValueError`` naming the key."""
    for name in ("ldrl_iters", "ldrl_sigma", "ldrl_lr"):
        if len(args[name]) != len(LAYERS) - 1:
            raise ValueError(f"{name}={tuple(args[name])} needs one value per G^1, G^2, G^3")
    unpool_modes(args)


def _chunks(total: int, size: int):
    """(start, length) pieces of ``range(total)``."""
    return [(a, min(size, total - a)) for a in range(0, total, max(size, 1))]


class _Pretrainer:
    """Jitted, chunked feedback pre-training on one batch (functions cached per static setting)."""

    def __init__(self, net: nets.Network, args):
        self.net, self.args = net, args
        self.drl_hp = drl.DRLHParams(
            sigma=float(args.drl_sigma),
            lr=float(args.drl_lr),
            eps=float(args.drl_eps),
            weight_decay=float(args.drl_weight_decay),
            semantics=args.drl_semantics,
        )
        self.drl_hp.validate()
        self._cache: dict = {}

    def _ldrl_fn(self, n: int, length: int, mode: str):
        k = ("ldrl", n, length, mode)
        if k not in self._cache:
            a, block = self.args, self.net.blocks[n]
            tx = optax.sgd(float(a.ldrl_lr[n - 1]), momentum=a.ldrl_momentum)
            sigma = float(a.ldrl_sigma[n - 1])

            def fn(g, st, f, x, y, idx, key):
                return feedback.train_feedback_layer(
                    block,
                    g,
                    st,
                    tx,
                    f,
                    x,
                    y,
                    idx,
                    key,
                    num_fb_iters=length,
                    sigma=sigma,
                    unpool_mode=mode,
                    unroll=min(a.unroll, length),
                )

            self._cache[k] = (jax.jit(fn), tx)
        return self._cache[k]

    def ldrl_layer(self, n: int, g, fwd, s, idx, key, mode: str):
        """K_n L-DRL iterations of G^n (SGD momentum) in chunks; returns the trained G^n."""
        total = ldrl_budget(self.args)[n - 1]
        state, losses, t0 = None, None, time.time()
        for c, (_, length) in enumerate(_chunks(total, self.args.chunk)):
            fn, tx = self._ldrl_fn(n, length, mode)
            state = tx.init(g) if state is None else state
            g, state, losses = fn(g, state, fwd[n], s[n], s[n + 1], idx[n], jax.random.fold_in(key, c))
        if losses is not None:
            jax.block_until_ready(g)
            (w_f, w_g), *_ = self.net.blocks[n].jmc_pairs(fwd[n], g)
            jmc_angle = mt.angle(w_f, w_g)
            logging.info(
                "L-DRL G^%d (%s): %d iterations in %.0f s, last loss %.4g, JMC angle %.2f°",
                n,
                mode,
                total,
                time.time() - t0,
                float(losses[-1]),
                float(jmc_angle),
            )
        return g

    def _drl_fn(self, n: int, length: int):
        k = ("drl", n, length)
        if k not in self._cache:
            hp, net, unroll = self.drl_hp, self.net, min(self.args.unroll, length)

            def fn(fwd, q, st, buf, s, key, start):
                return drl.train_feedback_layer_fork(
                    net, fwd, q, st, buf, s, n, key, length, hp, start=start, unroll=unroll
                )

            self._cache[k] = jax.jit(fn)
        return self._cache[k]

    def drl_call(self, fwd, q, s, key):
        """One DDTP feedback call with K iterations per hidden layer, from a fresh Adam state."""
        total = drl_budget(self.args)
        n_hidden = self.net.num_blocks - 1
        if self.drl_hp.semantics != "fork":
            fn = jax.jit(
                lambda fwd_, q_, st_, s_, k_: drl.train_feedback(
                    self.net, fwd_, q_, st_, s_, k_, (total,) * n_hidden, self.drl_hp, unroll=self.args.unroll
                )
            )
            q, _, _ = fn(fwd, q, drl.init_opt_state(q), s, key)
            return q
        state, buf = drl.init_opt_state(q), drl.zero_grads(q)
        for n in range(1, n_hidden + 1):
            t0, losses = time.time(), None
            for start, length in _chunks(total, self.args.chunk):
                q, state, buf, losses = self._drl_fn(n, length)(fwd, q, state, buf, s, key, start)
            if losses is not None:
                jax.block_until_ready(q)
                logging.info(
                    "DRL Q_%d: %d iterations in %.0f s, last loss %.4g",
                    n,
                    total,
                    time.time() - t0,
                    float(losses[-1]),
                )
        return q


def run(args, out_dir: str) -> dict[str, Any]:
    """Measures the GMP angles of every scheme for every seed; writes ``gmp.png`` and ``gmp.json``.

    Args:
      args: the experiment config (``configs/figures/fig3_gmp.py``).
      out_dir: output folder.

    Returns:
      The dictionary written to ``gmp.json``.
    """
    validate(args)
    start = time.time()
    modes = unpool_modes(args)
    labels = ["DRL_random", "DRL"] + [f"{s}/{m}" for s in LDRL_SCHEMES for m in modes]
    angles = {lb: [] for lb in labels}
    dists = {lb: [] for lb in labels}
    jmc = {lb: [] for lb in labels if not lb.startswith("DRL")}
    drl_out = []
    timings = {"drl_pretrain_s": 0.0, "ldrl_pretrain_s": 0.0}
    seeds = ex.seed_list(args.seeds, 123, 1)
    with jax.enable_x64(args.float64):
        dtype = jnp.float64 if args.float64 else jnp.float32
        num_classes = ex.num_classes_of(args.data)
        net = fns = pre = None
        for seed in seeds:
            x, y = ex.single_batch(
                args.data,
                args.data_dir,
                args.batch_size,
                seed,
                tuple(args.synthetic_shape),
                num_classes,
                dtype,
            )
            if net is None:
                net = nets.lenet(tuple(x.shape[1:]), num_classes, use_bias=False)
                if tuple(b.name for b in net.blocks) != LAYERS:
                    raise AssertionError(f"unexpected LeNet blocks {[b.name for b in net.blocks]}")
                fns = _gmp_fns(net, args.beta, dtype)
                pre = _Pretrainer(net, args)
            key = jax.random.key(seed)
            biased = nets.lenet(tuple(x.shape[1:]), num_classes, use_bias=True)
            fwd_b, _ = nets.init_params(jax.random.fold_in(key, 0), biased, dtype)
            fwd = tuple({"kernel": p["kernel"]} for p in fwd_b)  # LeNet(bias=True) weights, biases dropped
            _, fb_random = nets.init_params(jax.random.fold_in(key, 1), net, dtype)
            s, idx = fns["forward"](fwd, x)

            # (a), (c): DDTP-linear direct feedback.
            q0 = fns["init_q"](jax.random.fold_in(key, 2))
            d, a, _ = fns["ddtp"](fwd, q0, x, y)
            angles["DRL_random"].append(a)
            dists["DRL_random"].append(d)
            t0 = time.time()
            q = pre.drl_call(fwd, q0, s, jax.random.fold_in(key, 3))
            jax.block_until_ready(q)
            timings["drl_pretrain_s"] += time.time() - t0
            d, a, out_alignment = fns["ddtp"](fwd, q, x, y)
            angles["DRL"].append(a)
            dists["DRL"].append(d)
            drl_out.append(np.asarray(out_alignment))

            # (b), (d), (e): layer-wise G.
            t0 = time.time()
            lkey = jax.random.fold_in(key, 4)
            trained = {
                n: pre.ldrl_layer(n, fb_random[n], fwd, s, idx, jax.random.fold_in(lkey, n), modes[0])
                for n in (2, 3)
            }  # no unpooling in G^2, G^3: shared by both modes
            fb_sets, fb_sym = {}, fns["symmetric"](fwd)
            for m in modes:
                g1 = pre.ldrl_layer(1, fb_random[1], fwd, s, idx, jax.random.fold_in(lkey, 1), m)
                fb_trained = (fb_random[0], g1, trained[2], trained[3])
                fb_sets[m] = {
                    "L-DRL_random": fb_random,
                    "L-DRL": fb_trained,
                    "L-DRL_sym": fb_sym,
                }
            jax.block_until_ready(fb_sets)
            timings["ldrl_pretrain_s"] += time.time() - t0
            for m in modes:
                for scheme, fb in fb_sets[m].items():
                    lb = f"{scheme}/{m}"
                    d, a, jmc_angle = fns[f"dtp/{m}"](fwd, fb, x, y)
                    angles[lb].append(a)
                    dists[lb].append(d)
                    jmc[lb].append(np.asarray(jmc_angle))
            logging.info(
                "seed %d (%.0f s): %s",
                seed,
                time.time() - start,
                {lb: np.round(np.asarray(v[-1]), 2).tolist() for lb, v in angles.items()},
            )

    result: dict[str, Any] = {
        "experiment": "fig3_gmp",
        "args": args.to_dict(),
        "seeds": seeds,
        "layers": list(LAYERS),
        "budget": {
            "seeds": len(seeds),
            "batch_size": args.batch_size,
            "ldrl_iters": list(ldrl_budget(args)),
            "drl_iters_per_layer": drl_budget(args),
            "unpool_modes": list(modes),
            "wall_s": time.time() - start,
            **timings,
            "device": str(jax.devices()[0].platform),
        },
        "paper": PAPER,
        "notes": (
            "angle: ∠(update/β, BP gradient) per layer, weights only (design §6.3). distance: relative to "
            "update/β; meaningful for the L-DRL schemes only (the DDTP update carries 1/B and per-layer "
            "normalisations). jmc_angle: ∠(F^n, G^nᵀ) for n = 1..3 after pre-training; for DRL: "
            "∠(W_outᵀ, Q_fc1) and its distance."
        ),
        "results": {},
    }
    for lb in labels:
        scheme, _, mode = lb.partition("/")
        a = np.stack([np.asarray(v, np.float64) for v in angles[lb]])
        d = np.stack([np.asarray(v, np.float64) for v in dists[lb]])
        entry = {
            "scheme": scheme,
            "unpool_mode": mode or None,
            "angle": {layer: ex.stats(a[:, i]) for i, layer in enumerate(LAYERS)},
            "distance": {layer: ex.stats(d[:, i]) for i, layer in enumerate(LAYERS)},
        }
        if lb in jmc:
            j = np.stack(jmc[lb])
            entry["jmc_angle"] = {layer: ex.stats(j[:, i]) for i, layer in enumerate(LAYERS[1:])}
        elif scheme == "DRL":
            o = np.stack(drl_out)
            entry["output_alignment"] = {"distance": ex.stats(o[:, 0]), "angle": ex.stats(o[:, 1])}
        result["results"][lb] = entry
    os.makedirs(out_dir, exist_ok=True)
    plot(result, os.path.join(out_dir, "gmp.png"))
    ex.write_json(os.path.join(out_dir, "gmp.json"), result)
    for lb, entry in result["results"].items():
        logging.info(
            "%-20s %s   (paper %s)",
            lb,
            "  ".join(f"{k} {v['mean']:6.2f} ± {v['std']:5.2f}" for k, v in entry["angle"].items()),
            PAPER[entry["scheme"]]["angle"],
        )
    return result


def _gmp_fns(net: nets.Network, beta: float, dtype) -> dict[str, Any]:
    """Jitted helpers: forward pass, Q init, symmetric G, and the GMP measurement of each scheme type.

    The measurements return ``(distances, angles)`` per block (update/β vs BP, design §6.3) plus the
    feedback alignment: ``(dist, angle)`` of W_outᵀ vs Q_fc1 for DDTP, the JMC angles for layer-wise G.
    """

    def ddtp(fwd, q, x, y):
        g, _ = drl.ddtp_forward_grads(net, fwd, q, x, y, beta)
        bp, _ = targets.bp_grads(net, fwd, x, y)
        return (*mt.gmp_metrics(net, g, bp, beta), jnp.stack(drl.output_layer_alignment(fwd, q)))

    def make_dtp(mode):
        def fn(fwd, fb, x, y):
            g, _ = targets.dtp_forward_grads(net, fwd, fb, x, y, beta, unpool_mode=mode)
            bp, _ = targets.bp_grads(net, fwd, x, y)
            return (*mt.gmp_metrics(net, g, bp, beta), mt.jmc_metrics(net, fwd, fb)[1])

        return jax.jit(fn)

    fns = {
        "forward": jax.jit(lambda p, x: targets.forward_pass(net, p, x)),
        "init_q": jax.jit(lambda k: drl.init_direct_feedback(k, net, dtype)),
        "symmetric": jax.jit(lambda fwd: nets.symmetric_fb_params(net, fwd)),
        "ddtp": jax.jit(ddtp),
    }
    for m in pooling.UNPOOL_MODES:
        fns[f"dtp/{m}"] = make_dtp(m)
    return fns


def plot(result: dict[str, Any], path: str) -> None:
    """Grouped bars: one group per scheme (and unpool mode), one bar per layer, mean ± std over seeds."""
    plt = plotting.plt
    labels = list(result["results"])
    order = {s: i for i, s in enumerate(SCHEMES)}
    mode_order = {m: i for i, m in enumerate(pooling.UNPOOL_MODES)}
    labels.sort(
        key=lambda lb: (
            order[result["results"][lb]["scheme"]],
            mode_order.get(result["results"][lb]["unpool_mode"], -1),
        )
    )
    layers = result["layers"]
    colors = ("tab:blue", "tab:red", "tab:green", "tab:purple")
    width = 0.8 / len(layers)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(labels)), 4.2))
    xs = np.arange(len(labels))
    for i, layer in enumerate(layers):
        means = [result["results"][lb]["angle"][layer]["mean"] for lb in labels]
        stds = [result["results"][lb]["angle"][layer]["std"] for lb in labels]
        pos = xs - 0.4 + width * (i + 0.5)
        ax.bar(pos, means, width, yerr=stds, capsize=2, color=colors[i % len(colors)], label=layer)
        paper = [PAPER[result["results"][lb]["scheme"]]["angle"][i] for lb in labels]
        ax.scatter(
            pos,
            paper,
            marker="D",
            s=14,
            facecolors="white",
            edgecolors="black",
            zorder=3,
            label="paper" if i == 0 else None,
        )
    ax.set_xticks(xs)
    ax.set_xticklabels([lb.replace("/", "\n") for lb in labels], fontsize=8)
    ax.set_ylabel("∠(ΔθDTP, ΔθBP) (degrees); ◇ paper")
    ax.set_ylim(0, 112)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=5, loc="upper center")
    b = result["budget"]
    ax.set_title(
        f"GMP per layer ({b['seeds']} seeds, batch {b['batch_size']}, L-DRL K={b['ldrl_iters']}, "
        f"DRL K={b['drl_iters_per_layer']}/layer, data={result['args']['data']})",
        fontsize=9,
    )
    plotting.save_figure(fig, path)


if __name__ == "__main__":
    ex.main(run, "fig3_gmp.py", "results/gmp")
