"""usage: python -m jdtp.main --config=FILE[:VARIANT[,VARIANT]] --workdir=DIR [--config.KEY=VALUE ...]

Train (or resume) one run. Rerunning the same command resumes from the newest intact checkpoint;
a run that is already complete reports its stored result and trains nothing.

  --config=FILE[:VARIANTS]  an experiment file in configs/, e.g. configs/lenet_mnist.py
                            variants (comma-separated): bp (the backprop baseline), parallel_dtp,
                            vanilla_dtp, tp, smoke (synthetic data, a few steps), gpu, tpu; files add
                            their own (configs/lenet_cifar10.py:table6, configs/ddtp_mnist.py:p)
  --config.KEY=VALUE        override any key, e.g. --config.dtp.beta=0.5,
                            --config.dtp.num_fb_iters='(10,10,10)', --config.data.data_dir=/tfds
  --show_config             print every key of the resulting config and exit (the keys and their
                            defaults live in jdtp/config_base.py, the model's builder in
                            jdtp/networks.py and each algorithm's module in jdtp/algorithms/)
  --workdir=DIR             checkpoints, metrics.jsonl, TensorBoard events, results.json
  --distributed             multi-host runs: jax.distributed.initialize() first
  --debug                   tracebacks instead of one-line errors

exit codes: 0 done or already complete, 1 error, 2 bad command line, 75 stopped by SIGTERM
(preempted), 130 stopped by Ctrl-C (both save a checkpoint first; rerun to resume)

This module is thin on purpose: flags, optional ``jax.distributed``
initialisation, then :func:`jdtp.train.train_and_evaluate`. Errors in the command line, the
config or the workdir end in one logged line naming the cause and the fix (``--debug`` shows
the traceback). ``--help`` prints this text through absl's ``app.usage``.
"""

import logging as pylogging
import os
import re
import sys
from typing import NoReturn

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jdtp import checkpointing, config_base, datasets, preemption, run_files, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host runs).")
flags.DEFINE_bool(
    "show_config", False, "Print the config (every key, after variants and overrides) and exit."
)
flags.DEFINE_bool("debug", False, "Show tracebacks instead of one-line errors.")

HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")


def _unknown_key_message(text: str, argv) -> str | None:
    """``unknown config key 'dtp.betta' (--config.dtp.betta=0.3); did you mean 'dtp.beta'?``, or None.

    ml_collections raises ``KeyError("'betta'\\nDid you mean \\"beta\\" instead of \\"betta\\"?")``
    (or an AttributeError naming the key) for an override of a key the config lacks; the
    message names only the last part of the key, so the full key comes from the command line.
    """
    text = text.encode().decode("unicode_escape") if "\\" in text else text
    name = re.search(r"'([A-Za-z_][\w]*)'", text)
    if not name:
        return None
    key = name.group(1)
    given = next(
        (
            a.split("=", 1)[0][len("--config.") :]
            for a in argv
            if a.startswith("--config.") and a.split("=", 1)[0].split(".")[-1] == key
        ),
        None,
    )
    full = given or key
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    hint = ""
    if suggestion:
        prefix = full.rsplit(".", 1)[0] + "." if "." in full else ""
        hint = f"; did you mean '{prefix}{suggestion.group(1)}'?"
    where = f" (--config.{full}=...)" if given else ""
    return f"unknown config key '{full}'{where}{hint} (list the keys with --show_config)"


def _explain_flag_error(e: Exception, argv) -> str:
    """One line for what went wrong while parsing the command line."""
    text = str(e)
    if (
        isinstance(e, AttributeError | KeyError)
        or "Did you mean" in text
        or re.search(r"^\"?'[^']+'\"?$", text)
    ):
        message = _unknown_key_message(text, argv)
        if message:
            return message
    if "No such file or directory" in text or "Attempted" in text:
        path = re.search(r"Attempted \[[^\]]*\]:\s*(\S+)", text)
        shown = (
            path.group(1)
            if path
            else next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "?")
        )
        return (
            f"config file {shown!r} not found; pass an experiment file, e.g. --config=configs/lenet_mnist.py"
        )
    if "must have a value other than None" in text:
        flag = re.search(r"--(\w+)", text)
        return f"--{flag.group(1) if flag else '?'} is required (python -m jdtp.main --help)"
    first = text.strip().splitlines()[-1] if text.strip() else type(e).__name__
    first = re.sub(r"^([\w.]+(Error|Exception): )+", "", first)
    return f"{first} (python -m jdtp.main --help)"


def _fail(message: str, code: int) -> NoReturn:
    """Log one error line (no traceback) and exit with ``code``."""
    if not FLAGS.is_parsed():
        FLAGS.mark_as_parsed()  # else absl adds a "logging before flag parsing" line
    logging.error("error: %s", message)
    sys.exit(code)


def _parse(argv):
    if any(a in HELP_FLAGS for a in argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    flags.mark_flags_as_required(["config"])
    try:
        rest = FLAGS(argv)
        FLAGS.config.keys()  # a config file that failed to load raises here, not while parsing
        return rest
    except Exception as e:  # noqa: BLE001 - every parse failure becomes one line
        if "--debug" in argv:
            raise
        _fail(_explain_flag_error(e, argv), 2)


def _check_workdir(path: str) -> str | None:
    """Why ``path`` cannot be a workdir, or ``None`` (remote paths such as gs:// are not checked)."""
    if re.match(r"^\w+://", path):
        return None
    if os.path.exists(path) and not os.path.isdir(path):
        return f"--workdir={path} is a file, not a directory; choose another --workdir"
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_probe")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as e:
        return f"cannot write to --workdir={path} ({e.strerror or type(e).__name__}); choose a writable directory"
    return None


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]} (python -m jdtp.main --help)", 2)
    if FLAGS.show_config:
        sys.stdout.write(f"{FLAGS.config}\n")  # the command's output (e.g. > config.txt), not a log
        return
    if not FLAGS.workdir:
        _fail("--workdir is required (python -m jdtp.main --help)", 2)
    problem = None if FLAGS.distributed else _check_workdir(FLAGS.workdir)  # before JAX starts
    if problem:
        _fail(problem, 1)
    checkpointing.quiet_orbax_logs()
    checkpointing.SHOW_ORBAX_ERRORS = FLAGS.debug
    # JAX logs each accelerator backend it fails to find (e.g. "Unable to initialize backend
    # 'tpu'") at INFO on every start: not news on a machine without one.
    pylogging.getLogger("jax._src.xla_bridge").setLevel(pylogging.WARNING)
    if FLAGS.distributed:
        jax.distributed.initialize()  # before any device query
        problem = _check_workdir(FLAGS.workdir) if jax.process_index() == 0 else None
        if problem:
            _fail(problem, 1)
    errors = (
        config_base.ConfigError,
        datasets.DatasetNotFoundError,
        train.NonFiniteError,
        checkpointing.CheckpointError,
        run_files.RunFileError,  # a failed write: checkpoint, metrics, results
        run_files.WorkdirBusyError,
        run_files.DamagedMetricsError,
    )
    try:
        results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except errors as e:
        if FLAGS.debug:
            raise
        _fail(f"{e} ({type(e).__name__})", 1)
    except KeyboardInterrupt as e:  # Ctrl-C before the loop, or a second one during it
        if FLAGS.debug:
            raise
        why = str(e) or "Ctrl-C before training started"
        _fail(f"{why}; rerun the same command to resume", preemption.EXIT_CODE_SIGINT)
    if results["preempted"]:  # train logged where it stopped and how to resume
        sys.exit(preemption.exit_code(results.get("stop_signal")))
    acc = results["final_test_accuracy"]
    logging.info(
        "%s: %s %s on %s, %d steps, final %s accuracy %.4f, wall time %.1f s",
        "Already complete" if results.get("already_complete") else "Done",
        results["algorithm"].upper(),
        results["model"],
        results["dataset"],
        results["steps"],
        results["eval_set"],
        acc,
        results["wall_time_s"],
    )


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
