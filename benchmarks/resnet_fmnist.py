"""ResNet-18 on Fashion-MNIST padded to 32×32: GMP angles per stage, and a short DTP vs BP run.

    python benchmarks/resnet_fmnist.py --data_dir=/path/to/tfds --out=results/resnet_fmnist

Part 1 (one batch of 64 training images, seed 0): the angle between the DTP update / β (β = 0.005)
and the BP gradient per block (computed in float64), for each ``--modes`` G (the reference's
inverted blocks, the exact adjoint of the linear part, the exact 'jacobian' mode) with feedback
weights at random init, symmetric (G = F's weights) and, for the ``--pretrain`` modes, after L-DRL
pre-training of every G^n on the batch (``--ldrl_iters`` iterations per layer with the
``--config`` file's σ, lr_b, feedback optimizer and probe), with the JMC angles, the norm of each
block's DTP update (zero where G's ReLUs have died: then no angle) and the L-DRL loss at the first
and last pre-training iteration. Part 2: DTP (one run per ``--train_feedback`` mode) and BP trained
for ``--steps`` steps each through the run loop, step times and test accuracy. The width, batch
and K are reduced for a 2-core CPU (flags).

    # the chosen recipe's pre-training (configs/resnet18_fmnist.py: 'jacobian' G, 'jvp' probe,
    # Adam), with lr_b 3e-3 in every layer as the README's table measured it
    python benchmarks/resnet_fmnist.py --data_dir=D --out=OUT --parts=gmp \
        --config=configs/resnet18_fmnist.py --modes=jacobian --fb_lr=3e-3,3e-3,3e-3,3e-3,3e-3
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "", "TFDS data_dir holding fashion_mnist.")
flags.DEFINE_string("out", "results/resnet_fmnist", "Output folder.")
flags.DEFINE_integer("width", 16, "Base channels (the reference: 64).")
flags.DEFINE_integer("batch", 64, "Batch size.")
flags.DEFINE_integer("ldrl_iters", 200, "L-DRL pre-training iterations per layer (part 1).")
flags.DEFINE_integer("steps", 150, "Training steps per algorithm (part 2).")
flags.DEFINE_integer("k", 4, "Feedback iterations per layer and step in part 2 (the reference: 20-55).")
flags.DEFINE_list("train_feedback", ["reference", "adjoint"], "Feedback modes of the DTP runs in part 2.")
flags.DEFINE_float("dtp_lr", 0.0, "Forward learning rate of the DTP runs in part 2 (0: the config's, 0.05).")
flags.DEFINE_list("parts", ["gmp", "training"], "Parts to run.")
flags.DEFINE_float("fb_lr_scale", 1.0, "Factor on every G's learning rate lr_b (both parts).")
flags.DEFINE_list("fb_lr", [], "Per-layer lr_b of G^1 … G^5 instead of the config's (before --fb_lr_scale).")
flags.DEFINE_list("modes", ["reference", "adjoint", "jacobian"], "Feedback modes measured in part 1.")
flags.DEFINE_list(
    "pretrain", ["reference", "adjoint", "jacobian"], "Modes whose G is L-DRL pre-trained in part 1."
)
flags.DEFINE_string("probe", "", "L-DRL probe (config.dtp.probe) of both parts ('': the config's).")
flags.DEFINE_string(
    "config", "configs/resnet18_cifar10.py", "Experiment file whose DTP hyperparameters both parts use."
)


def _config(variant=""):
    from jdtp import config_base

    path = os.path.join(os.path.dirname(__file__), "..", FLAGS.config)
    c = config_base.load_config_file(path, variant)
    c.data.name, c.data.data_dir, c.data.download, c.data.pad_to = "fashion_mnist", FLAGS.data_dir, False, 32
    c.data.batch_size = FLAGS.batch
    c.model.width = FLAGS.width
    if "dtp" in c:
        lrs = [float(v) for v in FLAGS.fb_lr] or c.dtp.fb_lr
        c.dtp.fb_lr = tuple(lr * FLAGS.fb_lr_scale for lr in lrs)
        c.dtp.probe = FLAGS.probe or c.dtp.probe
    return c


def gmp_part() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jdtp import algorithms, architectures, augmentation, batching, datasets, networks
    from jdtp import metrics as mt
    from jdtp import targets as tg

    out = {}
    c = _config()
    ds = batching.load_dataset(c.data)
    info = datasets.get_info(c.data.name, c.data)
    batch = batching.get_train_batch(ds, 0, FLAGS.batch, 0)
    x, labels = augmentation.make_eval_preprocess(info)(batch)
    for mode in FLAGS.modes:
        c.model.feedback = mode
        net = architectures.build_from_config(c.model, info.shape, info.num_classes)
        fwd, fb_random = networks.init_params(jax.random.key(0), net)

        def gmp(fwd, fb):
            # In float64: at β = 0.005, t − s is a small difference of large numbers, and float32
            # rounding alone moves the angles by a few degrees.
            with jax.enable_x64(True):
                f64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)  # noqa: E731
                fwd, fb, x64 = f64(fwd), f64(fb), jnp.asarray(x, jnp.float64)
                d, _ = tg.dtp_forward_grads(net, fwd, fb, x64, labels, 0.005)
                bp, _ = tg.bp_grads(net, fwd, x64, labels)
                exact, norms = [], []  # without the reference metric's +1e-8 (tiny norms)
                for block, u, g in zip(net.blocks, d, bp, strict=True):
                    a = np.concatenate([np.ravel(w) for w in block.forward_weights(u)])
                    b = np.concatenate([np.ravel(w) for w in block.forward_weights(g)])
                    norms.append(float(np.linalg.norm(a)))
                    if norms[-1] == 0.0:  # no update at all (e.g. G's ReLUs dead): no angle
                        exact.append(None)
                        continue
                    cos = a @ b / (norms[-1] * np.linalg.norm(b))
                    exact.append(float(np.degrees(np.arccos(np.clip(cos, -1, 1)))))
                gmp = mt.gmp_metrics(net, d, bp, 0.005)[1]
                return gmp, mt.jmc_metrics(net, fwd, fb)[1], exact, norms

        schemes = {"random": fb_random, "symmetric": networks.symmetric_fb_params(net, fwd)}
        if mode in FLAGS.pretrain:  # L-DRL pre-training of G
            algo = algorithms.create(c, net, 100)
            s, aux = tg.forward_pass(net, fwd, x)
            k = (FLAGS.ldrl_iters,) * net.num_trainable_fb
            t0 = time.time()
            from jdtp import feedback

            states = algo.init_feedback_opt_state(fb_random)
            trained, _, losses = jax.jit(
                lambda fb, st: feedback.train_feedback(
                    net,
                    fwd,
                    fb,
                    st,
                    algo.fb_optimizer,
                    s,
                    aux,
                    jax.random.key(1),
                    num_fb_iters=k,
                    layer_loss=algo.layer_loss,
                )
            )(fb_random, states)
            jax.block_until_ready(trained)
            out[f"{mode}/ldrl_pretrain_s"] = time.time() - t0
            out[f"{mode}/ldrl_loss_first_last"] = {
                name: [float(l[0]), float(l[-1])] for name, l in zip(net.block_names[1:], losses, strict=True)
            }
            schemes["L-DRL pre-trained"] = trained
        for name, fb in schemes.items():
            angles, jmc, exact, norms = gmp(fwd, fb)
            out[f"{mode}/{name}"] = {
                "gmp_angle": dict(zip(net.block_names, map(float, angles), strict=True)),
                "gmp_angle_exact": dict(zip(net.block_names, exact, strict=True)),
                "dtp_update_norm": dict(zip(net.block_names, norms, strict=True)),
                "jmc_angle": dict(zip(net.block_names[1:], map(float, jmc), strict=True)),
            }
            print(mode, name, json.dumps(out[f"{mode}/{name}"]), flush=True)
    return out


def training_part() -> dict:
    from jdtp import train

    out = {}
    runs = [(f"dtp_{mode}", "", mode) for mode in FLAGS.train_feedback] + [("bp", "bp", None)]
    for label, variant, mode in runs:
        c = _config(variant)
        if not variant:
            c.dtp.num_fb_iters = (FLAGS.k,) * 5
            c.model.feedback = mode
        c.num_train_steps = FLAGS.steps
        c.log_every_steps = 10
        c.gmp_every_steps = 50
        c.checkpoint_every_steps = FLAGS.steps
        if not variant and FLAGS.dtp_lr:
            c.optim.lr = FLAGS.dtp_lr
        try:
            r = train.train_and_evaluate(c, os.path.join(FLAGS.out, label))
        except train.NonFiniteError as e:  # an untuned config may diverge: record it, go on
            out[label] = {"diverged": str(e)}
        else:
            out[label] = {
                "steps": r["steps"],
                "test_accuracy": r["final_test_accuracy"],
                "step_s": r["train_loop_time_s"] / max(1, r["steps"]),
                "wall_s": r["wall_time_s"],
            }
        out[label]["lr"] = c.optim.lr
        print(label, json.dumps(out[label]), flush=True)
    return out


def main(argv):
    del argv
    from jdtp import checkpointing, environment, run_files

    checkpointing.quiet_orbax_logs()
    os.makedirs(FLAGS.out, exist_ok=True)
    names = (
        "width",
        "batch",
        "ldrl_iters",
        "steps",
        "k",
        "train_feedback",
        "dtp_lr",
        "parts",
        "fb_lr_scale",
        "modes",
        "pretrain",
        "probe",
    )
    result = {"command": " ".join(sys.argv), "machine": environment.describe()}
    result["flags"] = {k: FLAGS[k].value for k in names}
    for part, fn in (("gmp", gmp_part), ("training", training_part)):
        if part in FLAGS.parts:
            result[part] = fn()
            run_files.write_json_atomic(os.path.join(FLAGS.out, "summary.json"), result)


if __name__ == "__main__":
    app.run(main)
