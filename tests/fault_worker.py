"""One training run with an injected fault (run by tests/test_faults.py, not collected by pytest).

Usage: python tests/fault_worker.py WORKDIR MODE [KEY=VALUE ...]
MODE: none | kill_at:S | sigterm_at:S | kill_in_checkpoint:S | kill_in_metrics:S
(SIGKILL = kill -9: no handler runs; SIGTERM = preemption.) Exit code as jdtp.main's.
"""

import ast
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))
from absl import logging  # noqa: E402
from helpers import tiny_config  # noqa: E402

from jdtp import checkpointing, preemption, train  # noqa: E402

logging.set_verbosity(logging.INFO)  # the tests read the restore lines
checkpointing.quiet_orbax_logs()

workdir, mode = sys.argv[1], sys.argv[2]
overrides = {}
for item in sys.argv[3:]:
    k, v = item.split("=", 1)
    try:
        overrides[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
        overrides[k] = v
config = tiny_config(
    **{
        "num_train_steps": 6,
        "checkpoint_every_steps": 2,
        "log_every_steps": 1,
        "gmp_every_steps": 3,
        **overrides,
    }
)
kind, _, at = mode.partition(":")
at = int(at or 0)
callbacks = []


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


if kind == "kill_at":
    callbacks.append(lambda step, state: _kill() if step == at else None)
elif kind == "sigterm_at":
    callbacks.append(lambda step, state: os.kill(os.getpid(), signal.SIGTERM) if step == at else None)
elif kind == "kill_in_checkpoint":
    real_save, real_wait = checkpointing.save, checkpointing._wait
    saving = {}

    def save(manager, step, state, **kw):
        saving["step"] = step
        real_save(manager, step, state, **kw)

    def wait(manager):
        if saving.get("step") == at:  # Orbax is still writing this step in the background
            _kill()
        real_wait(manager)

    checkpointing.save, checkpointing._wait = save, wait
elif kind == "kill_in_metrics":
    real_write = train.MetricWriter.write

    def write(self, step, scalars):
        if step == at and self.active:
            with open(self.path, "a") as f:
                f.write(f'{{"step": {step}, "train/lo')  # a line cut short by the kill
                f.flush()
            _kill()
        real_write(self, step, scalars)

    train.MetricWriter.write = write
elif kind != "none":
    sys.exit(f"unknown mode {mode}")

results = train.train_and_evaluate(config, workdir, callbacks=callbacks)
print("RESULT", results["steps"], results["preempted"], results.get("already_complete", False), flush=True)
sys.exit(preemption.EXIT_CODE if results["preempted"] else 0)
