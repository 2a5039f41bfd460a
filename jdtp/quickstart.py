"""Offline quickstart: DTP (L-DRL) and BP on scikit-learn's bundled digits, side by side.

    python -m jdtp.quickstart [--workdir=workdirs/quickstart]

Trains ``configs/lenet_digits.py`` with DTP, then its ``bp`` variant, and prints
both test accuracies. Needs no network and no dataset download.
"""

import os
import sys

from absl import app, flags, logging

from jdtp import checkpointing, config_base, preemption, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "workdirs/quickstart", "Parent folder of the two runs.")


def _config(variant: str):
    path = os.path.join(os.path.dirname(__file__), "..", "configs", "lenet_digits.py")
    if not os.path.exists(path):  # installed without the repository's configs/
        raise FileNotFoundError(f"{path} not found: run the quickstart from a clone of the repository")
    return config_base.load_config_file(path, variant)


def main(argv):
    del argv
    checkpointing.quiet_orbax_logs()
    rows = []
    for variant, name in (("", "DTP (L-DRL)"), ("bp", "BP")):
        logging.info("Training %s on digits", name)
        r = train.train_and_evaluate(_config(variant), os.path.join(FLAGS.workdir, variant or "dtp"))
        if r["preempted"]:
            print(f"{name}: stopped at step {r['steps']}; rerun the quickstart to resume")
            sys.exit(preemption.EXIT_CODE)
        note = " (stored result)" if r.get("already_complete") else ""
        rows.append((name, r["final_test_accuracy"], r["steps"], r["wall_time_s"], note))
    lines = ["LeNet on sklearn digits (1,437 train / 360 test), seed 0:"]
    lines += [f"  {n:12s} test accuracy {a:.4f}  ({s} steps, {t:.0f} s){note}" for n, a, s, t, note in rows]
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
