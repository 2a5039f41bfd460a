"""Stopping cleanly: SIGTERM (preemption) and SIGINT (Ctrl-C) stop the run after a checkpoint.

A scheduler's SIGTERM may reach the processes of a multi-host run at different steps. Each
process turns a signal into a local flag; after every step all processes exchange their flags
(``multihost_utils.process_allgather``, one tiny collective), so every host sees the same
decision at the same step, enters the same collective checkpoint save and exits. The run ends
with :data:`EXIT_CODE` after SIGTERM (a scheduler or wrapper can requeue it, e.g. SLURM
``--requeue``) and :data:`EXIT_CODE_SIGINT` after Ctrl-C; rerunning the same command resumes it.

A step cannot be cut short (it is one compiled computation), so the handler says how long the
stop will take: the step in progress and the usual duration of a step. A second Ctrl-C stops at
once, without a checkpoint of the current step (:class:`StopNow`).
"""

from __future__ import annotations

import signal
import threading
import time

import jax
import numpy as np
from absl import logging

EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"
EXIT_CODE_SIGINT = 130  # 128 + SIGINT, the shell's convention for Ctrl-C
_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C: stop at once; the newest checkpoint is kept, the steps since it are not."""


def exit_code(signal_name: str | None) -> int:
    return EXIT_CODE_SIGINT if signal_name == "SIGINT" else EXIT_CODE


class Preemption:
    """Context manager: handles SIGTERM and SIGINT (main thread only) and answers :meth:`agreed`."""

    def __init__(self):
        self.raised = False
        self.signal_name: str | None = None
        self._previous: dict = {}
        self._step = None  # (step in progress, its start time, typical step seconds, last checkpoint)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in _NAMES}
        return self

    def note_step(self, step: int, typical_seconds: float | None, last_checkpoint: int | None) -> None:
        """The loop reports the step it starts (for the message a signal prints)."""
        self._step = (step, time.monotonic(), typical_seconds, last_checkpoint)

    def _wait_text(self) -> str:
        if self._step is None:
            return "after the step in progress"
        step, started, typical, _ = self._step
        if not typical:
            return f"after step {step + 1}, which is running (the first steps include compilation)"
        left = max(typical - (time.monotonic() - started), 0.0)
        return f"after step {step + 1}, which is running: about {left:.0f} s (a step takes about {typical:.0f} s here)"

    def _handle(self, signum, frame):
        name = _NAMES.get(signum, str(signum))
        if self.raised and signum == signal.SIGINT:
            last = self._step[3] if self._step else None
            kept = f"checkpoint step {last}" if last is not None else "no checkpoint of this run yet"
            raise StopNow(f"second Ctrl-C: stopped at once; the newest checkpoint is kept ({kept})")
        self.raised = True
        self.signal_name = self.signal_name or name
        again = " (Ctrl-C again stops at once, losing the steps since the last checkpoint)"
        logging.warning(
            "%s received: stopping %s, then saving a checkpoint%s",
            name,
            self._wait_text(),
            again if signum == signal.SIGINT else "",
        )

    def agreed(self) -> bool:
        """Whether any process has been asked to stop (every process must call this each step)."""
        if jax.process_count() == 1:
            return self.raised
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.raised, np.int32))
        return bool(np.max(flags))

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
