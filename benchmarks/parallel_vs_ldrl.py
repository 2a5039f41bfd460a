"""ParallelDTP against L-DRL DTP at equal wall time (LeNet, Fashion-MNIST): angles and test accuracy.

    python benchmarks/parallel_vs_ldrl.py --data_dir=/path/to/tfds --minutes=10 --out=results/parallel_vs_ldrl

Each algorithm trains ``configs/lenet_fmnist.py`` (DTP) or its ``:parallel_dtp`` variant from the
same seed for the same wall time (SIGTERM at the budget: a checkpoint, as a preempted run), then
the final checkpoint is evaluated on the whole test set. Reported: steps done, images/s, the last
per-layer JMC angles and GMP angles (β = 0.005) logged, and the test accuracy. Run on an otherwise
idle machine, one algorithm after the other.
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "", "TFDS data_dir holding fashion_mnist.")
flags.DEFINE_float("minutes", 10.0, "Wall-time budget per algorithm.")
flags.DEFINE_string("out", "results/parallel_vs_ldrl", "Output folder (one workdir per algorithm).")
flags.DEFINE_integer("seed", 0, "Seed of both runs.")


def main(argv):
    del argv
    from jdtp import (
        algorithms,
        architectures,
        augmentation,
        batching,
        checkpointing,
        config_base,
        datasets,
        evaluation,
        run_files,
        sharding,
        train,
    )

    checkpointing.quiet_orbax_logs()
    configs = os.path.join(os.path.dirname(__file__), "..", "configs", "lenet_fmnist.py")
    table = {}
    for label, variant in (("L-DRL DTP", ""), ("ParallelDTP", "parallel_dtp")):
        c = config_base.load_config_file(configs, variant)
        c.seed = FLAGS.seed
        c.data.data_dir = FLAGS.data_dir
        c.data.download = False
        c.num_epochs = 1000  # stopped by the wall-time budget
        c.log_every_steps = 20
        c.gmp_every_steps = 100
        c.checkpoint_every_steps = 10**9
        workdir = os.path.join(FLAGS.out, variant or "dtp")
        t0 = time.time()

        def stop_at_budget(step, state, t0=t0):
            if time.time() - t0 > 60 * FLAGS.minutes:
                os.kill(os.getpid(), signal.SIGTERM)

        result = train.train_and_evaluate(c, workdir, callbacks=[stop_at_budget])
        wall = time.time() - t0
        info = datasets.get_info(c.data.name, c.data)
        net = architectures.build_from_config(c.model, info.shape, info.num_classes)
        ds = batching.load_dataset(c.data)
        algo = algorithms.create(c, net, batching.steps_per_epoch(ds.num_train, c.data.batch_size))
        manager = checkpointing.make_manager(workdir)
        manager, state, step = checkpointing.restore_latest_good(manager, algo.init_state(jax_key()))
        checkpointing.wait_and_close(manager)
        mesh = sharding.make_mesh(1)
        eval_step = evaluation.make_eval_step(net, preprocess=augmentation.make_eval_preprocess(info))
        ev = evaluation.evaluate(
            eval_step,
            state.fwd_params,
            (sharding.global_batch(b, mesh) for b in batching.eval_batches(ds, 500)),
        )
        records = run_files.read_metrics(os.path.join(workdir, "metrics.jsonl"))
        last = {}
        for r in records:
            last.update({k: v for k, v in r.items() if k.startswith(("jmc_angle/", "gmp_angle/"))})
        table[label] = {
            "steps": int(step),
            "epochs": step / algo.steps_per_epoch,
            "wall_s": wall,
            "images_per_s": step * c.data.batch_size / wall,
            "test_accuracy": ev["eval/accuracy"],
            "angles": last,
            "preempted": result["preempted"],
        }
        print(label, json.dumps(table[label]), flush=True)
    run_files.write_json_atomic(os.path.join(FLAGS.out, "summary.json"), table)
    layers = sorted({k for v in table.values() for k in v["angles"]})
    print(f"\n| | {' | '.join(table)} |\n|---|" + "---|" * len(table))
    for key in ("steps", "epochs", "images_per_s", "test_accuracy", *layers):
        vals = [v.get(key, v["angles"].get(key, float("nan"))) for v in table.values()]
        print(f"| {key} | " + " | ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in vals) + " |")


def jax_key():
    import jax

    return jax.random.key(0)


if __name__ == "__main__":
    app.run(main)
