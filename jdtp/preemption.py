"""Preemption: SIGTERM stops the run at a step every process agrees on, after a checkpoint.

A scheduler's SIGTERM may reach the processes of a multi-host run at different steps. Each
process turns it into a local flag; after every step all processes exchange their flags
(``multihost_utils.process_allgather``, one tiny collective), so every host sees the same
decision at the same step, enters the same collective checkpoint save and exits. A preempted
run exits with :data:`EXIT_CODE` (``jdtp.main``), so a scheduler or wrapper can requeue it
(e.g. SLURM ``--requeue``); rerunning the same command resumes it.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from absl import logging

EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"


class Preemption:
    """Context manager: installs the SIGTERM handler (main thread only) and answers :meth:`agreed`."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and stopping at the next agreed step")
        self.raised = True

    def agreed(self) -> bool:
        """Whether any process has been asked to stop (every process must call this each step)."""
        if jax.process_count() == 1:
            return self.raised
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.raised, np.int32))
        return bool(np.max(flags))

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
