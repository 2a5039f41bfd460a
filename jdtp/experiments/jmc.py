r"""Fig. 2: L-DRL vs DRL aligning LeNet's last-layer feedback weights (paper §5.1, design §7.1).

Protocol: per seed, a LeNet (ELU, biases, PyTorch-default init) with *frozen*
random forward weights and *one* fixed input batch (batch 128). Only feedback
weights are trained, for the same number of iterations in both arms, and the
angle and relative distance between the output layer's forward weights and
their feedback counterpart are recorded every ``record_every`` iterations:

* **L-DRL** (ours): one L-DRL iteration (:func:`jdtp.feedback.ldrl_loss`) of the
  output block G^{N−1} (Linear 10→512) followed by one SGD-momentum-0.9 step;
  metric between ``W_out`` and ``G^{N−1}ᵀ`` (:mod:`jdtp.metrics`, design §6.2).
* **DRL** (Meulemans et al. 2020): the DDTP-linear network with the *same*
  forward weights; every iteration is one call of the DDTP feedback training
  (:func:`jdtp.drl.train_feedback`, K = 1 per hidden layer, fork semantics,
  Adam lr 0.0045, σ 0.00921, wd 6.17e-5, eps 7.5e-7: the fork's CIFAR-10
  config); metric between ``W_outᵀ`` and the fc1 direct feedback ``Q_fc1``.

Hyperparameter choice for L-DRL (design §10.14): the paper only says σ and lr
were "carefully tuned"; the reference's figure script defaults to the last
layer's training values σ = 0.1395, lr = 0.0354, and a comment in the
reference reports σ = 0.08, lr = 0.01 → 2.8° after 5000 iterations. We default
to σ = 0.08, lr = 0.01, which on random data reaches ≈ 3° after 5000
iterations; ``--config.sigma=0.1395 --config.lr=0.0354`` gives the other set.

Exact shortcut (default): only ``Q_fc1`` is reported, and the fork's Adam is
elementwise with a step counter per layer, so the convolutional layers' DRL
gradients cannot change ``Q_fc1``'s trajectory; they are replaced by zeros
(the optimizer still takes every step the fork takes). ``--config.drl_all_layers=True``
computes them anyway (same curves, much slower on CPU).

Configured like training (``configs/figures/fig2_jmc.py``, ``--config.KEY=VALUE``)::

  python -m jdtp.experiments.jmc --out=results/jmc
  python -m jdtp.experiments.jmc --config.data=mnist --config.data_dir=/path/to/tfds --out=results/jmc_mnist

Writes ``jmc.png`` (angle and distance vs iteration: mean over seeds and
min/max band, both arms) and ``jmc.json`` (final numbers per arm, per-seed
curves, flags and budget).
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

from jdtp import drl, feedback, plotting, targets
from jdtp import experiments as ex
from jdtp import metrics as mt
from jdtp import networks as nets

ARMS = ("L-DRL", "DRL")

# Spec §12.2 (paper §5.1 and the final figure in the reference repository).
PAPER = {
    "L-DRL": {"angle": 3.0, "distance": 0.05, "note": "≈3° (figure ~2.5-3°), distance ≈0 (figure ~0.05)"},
    "DRL": {"angle": 18.7, "distance": 1.8, "note": "18.7° (figure ≈17°), distance ≈1.8"},
}


def validate(args) -> None:
    """Checks of the experiment config; ``ValueError`` naming the key."""
    if args.iterations <= 0 or args.record_every <= 0 or args.iterations % args.record_every:
        raise ValueError(
            f"iterations={args.iterations} must be a positive multiple of record_every={args.record_every}"
        )
    drl_hp(args).validate()


def drl_hp(args) -> drl.DRLHParams:
    return drl.DRLHParams(
        sigma=float(args.drl_sigma),
        lr=float(args.drl_lr),
        eps=float(args.drl_eps),
        weight_decay=float(args.drl_weight_decay),
        semantics=args.drl_semantics,
    )


def _make_ldrl_arm(net: nets.Network, args, num_chunks: int):
    """Jitted ``(g, w_out, x, y, key) -> (dists, angles)`` for the output block, ``[num_chunks + 1]`` each."""
    block = net.blocks[-1]
    tx = optax.sgd(args.lr, momentum=args.momentum)

    def metric(w, g):
        return mt.relative_distance(w["kernel"], g["kernel"].T), mt.angle(w["kernel"], g["kernel"].T)

    def arm(g, w, x, y, key):
        def chunk(carry, c):
            g_, st = carry
            g_, st, _ = feedback.train_feedback_layer(
                block,
                g_,
                st,
                tx,
                w,
                x,
                y,
                None,
                jax.random.fold_in(key, c),
                num_fb_iters=args.record_every,
                sigma=args.sigma,
            )
            return (g_, st), metric(w, g_)

        d0, a0 = metric(w, g)
        _, (d, a) = jax.lax.scan(chunk, (g, tx.init(g)), jnp.arange(num_chunks))
        return jnp.concatenate([d0[None], d]), jnp.concatenate([a0[None], a])

    return jax.jit(arm)


def _make_drl_arm(net: nets.Network, args, num_chunks: int):
    """Jitted ``(fwd, q, s, key) -> (dists, angles)``: one DDTP feedback call per iteration."""
    hp = drl_hp(args)
    n_hidden = net.num_blocks - 1
    compute = tuple(args.drl_all_layers or j == n_hidden - 1 for j in range(n_hidden))

    def arm(fwd, q, s, key):
        def one_call(carry, i):
            q_, st = carry
            q_, st, _ = drl.train_feedback(
                net, fwd, q_, st, s, jax.random.fold_in(key, i), (1,) * n_hidden, hp, compute_grads=compute
            )
            return (q_, st), None

        def chunk(carry, c):
            carry, _ = jax.lax.scan(one_call, carry, c * args.record_every + jnp.arange(args.record_every))
            return carry, drl.output_layer_alignment(fwd, carry[0])

        d0, a0 = drl.output_layer_alignment(fwd, q)
        _, (d, a) = jax.lax.scan(chunk, (q, drl.init_opt_state(q)), jnp.arange(num_chunks))
        return jnp.concatenate([d0[None], d]), jnp.concatenate([a0[None], a])

    return jax.jit(arm)


def run(args, out_dir: str) -> dict[str, Any]:
    """Runs both arms for every seed and writes ``jmc.png`` and ``jmc.json`` to ``out_dir``.

    Args:
      args: the experiment config (``configs/figures/fig2_jmc.py``).
      out_dir: output folder.

    Returns:
      The dictionary written to ``jmc.json``.
    """
    validate(args)
    start = time.time()
    with jax.enable_x64(args.float64):
        dtype = jnp.float64 if args.float64 else jnp.float32
        num_classes = ex.num_classes_of(args.data)
        num_chunks = args.iterations // args.record_every
        seeds = ex.seed_list(args.seeds, 123, 111)
        curves = {arm: {"angle": [], "distance": []} for arm in ARMS}
        timings = {arm: 0.0 for arm in ARMS}
        net = ldrl_arm = drl_arm = forward = None
        for seed in seeds:
            x, _ = ex.single_batch(
                args.data,
                args.data_dir,
                args.batch_size,
                seed,
                tuple(args.synthetic_shape),
                num_classes,
                dtype,
            )
            if net is None:
                net = nets.lenet(tuple(x.shape[1:]), num_classes)
                ldrl_arm = _make_ldrl_arm(net, args, num_chunks)
                drl_arm = _make_drl_arm(net, args, num_chunks)
                forward = jax.jit(lambda p, x_, net=net: targets.forward_pass(net, p, x_))
            key = jax.random.key(seed)
            fwd, fb = nets.init_params(jax.random.fold_in(key, 0), net, dtype)
            s, _ = forward(fwd, x)

            t0 = time.time()
            d, a = jax.device_get(ldrl_arm(fb[-1], fwd[-1], s[-2], s[-1], jax.random.fold_in(key, 1)))
            timings["L-DRL"] += time.time() - t0
            curves["L-DRL"]["angle"].append(np.asarray(a))
            curves["L-DRL"]["distance"].append(np.asarray(d))

            t0 = time.time()
            q = drl.init_direct_feedback(jax.random.fold_in(key, 2), net, dtype)
            d, a = jax.device_get(drl_arm(fwd, q, s, jax.random.fold_in(key, 3)))
            timings["DRL"] += time.time() - t0
            curves["DRL"]["angle"].append(np.asarray(a))
            curves["DRL"]["distance"].append(np.asarray(d))
            logging.info(
                "seed %d: L-DRL %.2f° / %.3f, DRL %.2f° / %.3f after %d iterations",
                seed,
                curves["L-DRL"]["angle"][-1][-1],
                curves["L-DRL"]["distance"][-1][-1],
                a[-1],
                d[-1],
                args.iterations,
            )

    iterations = [i * args.record_every for i in range(num_chunks + 1)]
    result: dict[str, Any] = {
        "experiment": "fig2_jmc",
        "args": args.to_dict(),
        "seeds": seeds,
        "iterations": iterations,
        "budget": {
            "iterations": args.iterations,
            "seeds": len(seeds),
            "batch_size": args.batch_size,
            "wall_s": time.time() - start,
            "arm_wall_s": timings,
            "device": str(jax.devices()[0].platform),
        },
        "paper": PAPER,
        "arms": {},
    }
    for arm in ARMS:
        angle = np.stack(curves[arm]["angle"])
        dist = np.stack(curves[arm]["distance"])
        result["arms"][arm] = {
            "final_angle": ex.stats(angle[:, -1]),
            "final_distance": ex.stats(dist[:, -1]),
            "initial_angle": ex.stats(angle[:, 0]),
            "initial_distance": ex.stats(dist[:, 0]),
            "per_seed": {str(sd): {"angle": angle[i], "distance": dist[i]} for i, sd in enumerate(seeds)},
        }
    os.makedirs(out_dir, exist_ok=True)
    plot(result, os.path.join(out_dir, "jmc.png"))
    ex.write_json(os.path.join(out_dir, "jmc.json"), result)
    for arm in ARMS:
        r = result["arms"][arm]
        logging.info(
            "%s: final angle %.2f ± %.2f°, distance %.3f ± %.3f (paper: %s)",
            arm,
            r["final_angle"]["mean"],
            r["final_angle"]["std"],
            r["final_distance"]["mean"],
            r["final_distance"]["std"],
            PAPER[arm]["note"],
        )
    return result


def plot(result: dict[str, Any], path: str) -> None:
    """Angle and distance vs iteration: mean over seeds and min/max band per arm."""
    plt = plotting.plt
    its = np.asarray(result["iterations"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"L-DRL": "tab:blue", "DRL": "tab:red"}
    for ax, metric, label in zip(
        axes, ("angle", "distance"), ("angle (degrees)", "relative distance"), strict=True
    ):
        for arm in ARMS:
            per_seed = result["arms"][arm]["per_seed"]
            v = np.stack([np.asarray(per_seed[k][metric]) for k in per_seed])
            final = result["arms"][arm][f"final_{metric}"]
            ax.plot(its, v.mean(0), color=colors[arm], label=f"{arm} (final {final['mean']:.2f})")
            ax.fill_between(its, v.min(0), v.max(0), color=colors[arm], alpha=0.25, lw=0)
        ax.set_xlabel("feedback iteration")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylim(bottom=0)
    b = result["budget"]
    fig.suptitle(
        f"JMC, last layer, fixed forward weights ({b['seeds']} seeds, batch {b['batch_size']}, "
        f"data={result['args']['data']})",
        fontsize=10,
    )
    plotting.save_figure(fig, path)


if __name__ == "__main__":
    ex.main(run, "fig2_jmc.py", "results/jmc")
