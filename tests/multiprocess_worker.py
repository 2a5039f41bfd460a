"""One process of the multi-process test (run by tests/test_sharding.py, not collected by pytest).

Usage: python tests/multiprocess_worker.py PORT NUM_PROCESSES PROCESS_ID WORKDIR [SIGTERM_PID:STEP]

With ``SIGTERM_PID:STEP`` only process SIGTERM_PID receives SIGTERM, after step STEP (a
preemption that reaches one host); every process exits with jdtp.main's exit code.
"""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["JAX_NUM_CPU_DEVICES"] = "2"

import jax  # noqa: E402

port, num, pid, workdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
jax.distributed.initialize(f"localhost:{port}", num, pid)  # before any device query

sys.path.insert(0, os.path.dirname(__file__))
import signal  # noqa: E402

from helpers import tiny_config  # noqa: E402

from jdtp import preemption, train  # noqa: E402

callbacks = []
if len(sys.argv) > 5:
    target, step_at = (int(v) for v in sys.argv[5].split(":"))
    if pid == target:
        callbacks.append(
            lambda step, state: os.kill(os.getpid(), signal.SIGTERM) if step == step_at else None
        )
config = tiny_config(num_train_steps=3, mesh_devices=-1, checkpoint_every_steps=3, gmp_every_steps=0)
results = train.train_and_evaluate(config, workdir, callbacks=callbacks)
print(
    f"process {pid}: devices {jax.device_count()} local {jax.local_device_count()} steps {results['steps']}"
    f" preempted {results['preempted']}",
    flush=True,
)
sys.exit(preemption.EXIT_CODE if results["preempted"] else 0)
