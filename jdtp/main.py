"""Command-line entry point: ``python -m jdtp.main --config=configs/X.py[:variant] --workdir=DIR``.

Thin on purpose (conventions §3.1): flags, optional ``jax.distributed``
initialisation, then :func:`jdtp.train.train_and_evaluate`.
"""

import logging as pylogging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host runs).")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietOrbax(pylogging.Filter):
    """Orbax logs every checkpoint step at INFO; keep its warnings and errors only."""

    def filter(self, record):
        return record.levelno >= pylogging.WARNING or "orbax" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    pylogging.getLogger("absl").addFilter(_QuietOrbax())
    import jax

    if FLAGS.distributed:
        jax.distributed.initialize()  # before any device query
    from jdtp import config_base, input_pipeline, train

    logging.info(
        "JAX %s, process %d/%d, devices: %s",
        jax.__version__,
        jax.process_index(),
        jax.process_count(),
        jax.devices(),
    )
    logging.info("Config:\n%s", FLAGS.config)
    try:
        results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (config_base.ConfigError, input_pipeline.DatasetNotFoundError, train.NonFiniteError) as e:
        logging.error("%s: %s", type(e).__name__, e)
        sys.exit(f"error: {e}")
    if results["preempted"]:
        logging.warning("Preempted at step %d; rerun the same command to resume.", results["steps"])
        return
    acc = results["final_test_accuracy"]
    logging.info(
        "Done: %s %s on %s, %d steps, final %s accuracy %.4f, wall time %.1f s",
        results["algorithm"].upper(),
        results["model"],
        results["dataset"],
        results["steps"],
        results["eval_set"],
        acc if acc is not None else float("nan"),
        results["wall_time_s"],
    )


if __name__ == "__main__":
    app.run(main)
