"""Orbax checkpoints, verified on restore: the only module that touches the Orbax API.

A save is complete when :func:`save` returns: Orbax writes the step, the call waits for it, and
only then is the step's record added to ``workdir/checksums.json``: the SHA-256 of the state's
bytes, its structure, and the run's config (so the config a run started with is recoverable
from any checkpoint). A write that fails raises :class:`CheckpointWriteError` at once naming the
directory and the cause, and leaves no record for the step; older steps are untouched.

:func:`restore_latest_good` restores the newest step whose bytes match its checksum; a step that
cannot be read or does not match (truncated, garbled or missing files) is moved, never deleted,
to ``workdir/damaged_checkpoints/`` with one warning line, and the next older step is tried. A
step without a checksum (no record, or ``checksums.json`` missing or unreadable) is restored
*unverified* when every value is finite, and the log says so and why.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging as pylogging
import os
import re
import shutil
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from jdtp import run_files

CHECKSUMS = "checksums.json"
DAMAGED_DIR = "damaged_checkpoints"


class CheckpointError(RuntimeError):
    """No intact checkpoint can be restored, or the checkpoints hold a state of another shape."""


class CheckpointWriteError(run_files.RunFileError):
    """A checkpoint could not be written (disk full, file-size limit, permissions)."""


class _QuietOrbax(pylogging.Filter):
    """Orbax logs every checkpoint step at INFO; keep its warnings and errors only.

    While a save is in flight, Orbax's errors are held back too: a failed save is reported once,
    by :func:`save`, in one line naming the cause.
    """

    saving = False

    def filter(self, record):
        if "orbax" not in record.pathname:
            return True
        return record.levelno >= pylogging.WARNING and not _QuietOrbax.saving


class _OrphanedOrbaxTasks(pylogging.Filter):
    """Drop asyncio's "Task exception was never retrieved" reports of Orbax's own write tasks.

    When one array of a save fails, Orbax raises that error and abandons its sibling writes; each
    of those that fails too is reported by asyncio, traceback and all, when its task is garbage
    collected, which can be after :func:`save` has returned (the raised error's traceback keeps
    the tasks alive). How many there are depends on timing. The save's failure is already
    reported once, by :func:`save`; tasks of any other origin are still reported.
    """

    def filter(self, record):
        if SHOW_ORBAX_ERRORS:
            return True
        message = record.getMessage()
        if "exception was never retrieved" not in message:
            return True
        # The task's repr names where its coroutine is defined: an Orbax or TensorStore file.
        origin = re.search(r"defined at (\S+)", message)
        path = origin.group(1).lower() if origin else ""
        return not ("/orbax/" in path or "/tensorstore/" in path)


def quiet_orbax_logs() -> None:
    """Drop Orbax's INFO lines and its abandoned tasks' error reports from the log (idempotent)."""
    for name, kind in (("absl", _QuietOrbax), ("asyncio", _OrphanedOrbaxTasks)):
        logger = pylogging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


def make_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """A checkpoint manager over ``workdir/checkpoints``."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def state_checksum(state) -> str:
    """SHA-256 over every leaf's dtype, shape and bytes (the same on every host for replicated state)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        a = np.asarray(jax.device_get(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def structure_signature(state) -> str:
    """SHA-256 of the state's tree structure, leaf shapes and dtypes (what a restore must match)."""
    leaves, treedef = jax.tree.flatten(state)
    desc = str(treedef) + "".join(f"|{np.dtype(x.dtype)}{tuple(x.shape)}" for x in leaves)
    return hashlib.sha256(desc.encode()).hexdigest()


def _workdir(manager: ocp.CheckpointManager) -> str:
    return os.path.dirname(os.fspath(manager.directory))


def read_records(workdir: str) -> tuple[dict, str | None]:
    """``(checksums.json's records, why they are unusable or None)``."""
    path = os.path.join(workdir, CHECKSUMS)
    if not os.path.exists(path):
        return {}, f"{CHECKSUMS} is missing"
    records = run_files.read_json(path)
    if not isinstance(records, dict):
        return {}, f"{CHECKSUMS} is unreadable"
    return records, None


def _wait(manager: ocp.CheckpointManager) -> None:
    manager.wait_until_finished()


def save(manager: ocp.CheckpointManager, step: int, state, *, config: dict | None = None) -> None:
    """Save ``state`` at ``step`` (every process must call this), wait for it, then record it.

    Raises:
      CheckpointWriteError: the step could not be written; no record was added for it.
    """
    record = {"sha256": state_checksum(state), "structure": structure_signature(state)}
    if config is not None:
        record["config"] = config
    workdir = _workdir(manager)
    try:
        with _held_output():
            manager.save(step, args=ocp.args.StandardSave(state), force=True)
            _wait(manager)
    except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise their own types for OS errors
        raise CheckpointWriteError(
            f"could not write checkpoint step {step} to {manager.directory} ({run_files.describe_os_error(e)}); "
            "free disk space or fix the permissions or file-size limit, then rerun the same command: it "
            "resumes from the newest complete checkpoint"
        ) from e
    if jax.process_index() == 0:
        path = os.path.join(workdir, CHECKSUMS)
        sums, _ = read_records(workdir)
        kept = run_files.keep_unreadable(path)
        if kept:
            logging.warning("%s was unreadable: kept as %s, a new one started", path, kept)
        sums[str(step)] = record
        keep = {str(s) for s in manager.all_steps()} | {str(step)}
        run_files.write_json_atomic(path, {k: v for k, v in sums.items() if k in keep})


def _verify(state, expected: str | None) -> str | None:
    """Why a restored state is not trustworthy, or ``None``."""
    if expected is not None:
        return (
            None if state_checksum(state) == expected else "its bytes do not match the checksum saved with it"
        )
    finite = all(
        bool(np.all(np.isfinite(np.asarray(jax.device_get(x)))))
        for x in jax.tree.leaves(state)
        if np.issubdtype(np.asarray(jax.device_get(x)).dtype, np.floating)
    )
    return None if finite else "it holds non-finite values (and was saved without a checksum)"


def _is_late_write_callback(info) -> bool:
    """Whether an unraisable exception is a TensorStore write finishing into Orbax's closed event loop.

    TensorStore completes an awaited write by calling the loop's ``call_soon_threadsafe`` from its
    own thread; once Orbax has closed that loop (the manager was closed after a failed save), the
    call raises ``RuntimeError('Event loop is closed')``, which TensorStore reports as unraisable
    with no object: a bare traceback on stderr, possibly after the run's one error line.
    """
    if not isinstance(info.exc_value, RuntimeError) or str(info.exc_value) != "Event loop is closed":
        return False
    tb = info.exc_traceback
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
            return True
        tb = tb.tb_next
    return False


def _drop_late_write_callbacks() -> None:
    """From now on, drop the reports of :func:`_is_late_write_callback` (others are passed on).

    Installed once, for the rest of the process: the writes abandoned by a failed save may finish
    at any time until the interpreter exits, after :func:`close_quietly` has returned.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_late_write_callbacks", False):
        return

    def hook(info):
        if not _is_late_write_callback(info):
            previous(info)

    hook.drops_late_write_callbacks = True
    sys.unraisablehook = hook


@contextlib.contextmanager
def _quiet_unraisable():
    """Swallow the "Exception ignored in <coroutine>" reports of Orbax's other reads of a damaged step.

    When one array of a step cannot be read, the restore raises and its sibling reads fail in
    coroutines that Python reports on stderr, one screenful each; the step is reported once by
    :func:`set_aside` instead. Other unraisable exceptions are passed on.
    """
    previous = sys.unraisablehook

    def hook(info):
        obj = getattr(info, "object", None)
        code = getattr(obj, "cr_code", None) or getattr(obj, "__code__", None)
        origin = getattr(code, "co_filename", "") or ""
        message = str(getattr(info, "exc_value", ""))
        if "orbax" in origin or "tensorstore" in origin.lower() or "Event loop is closed" in message:
            return
        previous(info)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        gc.collect()  # finalise the failed coroutines while the hook is in place
        sys.unraisablehook = previous


def set_aside(workdir: str, step: int, reason: str) -> str:
    """Move ``checkpoints/<step>`` to ``damaged_checkpoints/<step>[...]`` (kept for inspection)."""
    src = os.path.join(workdir, "checkpoints", str(step))
    target_dir = os.path.join(workdir, DAMAGED_DIR)
    os.makedirs(target_dir, exist_ok=True)
    dst = os.path.join(target_dir, f"{step}_{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(src, dst)
    logging.warning("Checkpoint step %d in %s is damaged (%s): moved to %s", step, workdir, reason, dst)
    return dst


def restore_latest_good(manager: ocp.CheckpointManager, init_state, max_to_keep: int = 2):
    """Restore the newest intact step into ``init_state``'s structure and shardings.

    Returns:
      ``(manager, state, restored_step)``; ``restored_step`` is ``None`` when starting fresh. The
      manager is a new one if damaged steps were set aside.

    Raises:
      CheckpointError: every step was damaged (all moved to ``damaged_checkpoints/``).
    """
    workdir = _workdir(manager)
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        logging.info("No checkpoint in %s: starting from scratch", manager.directory)
        return manager, init_state, None
    sums, unusable = read_records(workdir)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, init_state)
    signature = structure_signature(init_state)
    damaged = []
    for step in steps:
        record = sums.get(str(step)) or {}
        if record.get("structure") not in (None, signature):
            # Not damage: the config builds another state (model, algorithm) than the one saved.
            raise CheckpointError(
                f"checkpoint step {step} in {manager.directory} holds a state of another structure than this "
                "config's (a different model or algorithm); use a new --workdir for this config"
            )
        try:
            with _quiet_unraisable():
                state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # noqa: BLE001 - any read failure means this step is unusable
            reason = f"it cannot be read: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
        else:
            reason = _verify(state, record.get("sha256"))
            if reason is None:
                if damaged:
                    manager.close()
                    manager = make_manager(workdir, max_to_keep)
                if record.get("sha256"):
                    logging.info(
                        "Restored checkpoint of step %d from %s (SHA-256 verified)", step, manager.directory
                    )
                else:
                    why = unusable or f"{CHECKSUMS} has no record of step {step}"
                    logging.warning(
                        "Restored checkpoint of step %d from %s UNVERIFIED: %s, so its bytes could not be "
                        "compared (every value is finite)",
                        step,
                        manager.directory,
                        why,
                    )
                return manager, state, step
        damaged.append(step)
        if jax.process_index() == 0:
            set_aside(workdir, step, reason)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jdtp_set_aside_{step}")
    raise CheckpointError(
        f"every checkpoint in {manager.directory} is damaged (steps {damaged}, moved to "
        f"{os.path.join(workdir, DAMAGED_DIR)}); rerun to start this run over, or use a new --workdir"
    )


def wait_and_close(manager: ocp.CheckpointManager) -> None:
    manager.wait_until_finished()
    manager.close()


def close_quietly(manager: ocp.CheckpointManager) -> None:
    """Close after a failure: errors of an unfinished save are already reported; don't add more."""
    with _held_output(keep=False):
        try:
            manager.close()
        except Exception:  # noqa: BLE001 - the failure that stopped the run is the one reported
            pass
    if not SHOW_ORBAX_ERRORS:
        _drop_late_write_callbacks()


# Set by ``jdtp.main --debug``: pass Orbax's own error output through instead of holding it back.
SHOW_ORBAX_ERRORS = False


@contextlib.contextmanager
def _held_output(keep: bool | None = None):
    """Hold back what Orbax and TensorStore print (fd 2, their loggers) during a save or a close.

    A failed write makes them print hundreds of lines (each background thread's traceback, and
    TensorStore callbacks into a closed event loop) from threads and C++; the failure is reported
    once instead. What was held back is passed on when the block succeeds (``keep=None``) or when
    ``keep`` is True, else dropped; with :data:`SHOW_ORBAX_ERRORS` nothing is held back.
    """
    if SHOW_ORBAX_ERRORS:
        yield
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    held = tempfile.TemporaryFile(mode="w+b")
    os.dup2(held.fileno(), 2)
    _QuietOrbax.saving = True
    ok = False
    try:
        with _quiet_unraisable():
            yield
        ok = True
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        _QuietOrbax.saving = False
        if keep or (keep is None and ok):
            held.seek(0)
            data = held.read()
            if data:
                os.write(2, data)
        held.close()


def is_verified(workdir: str, step: int | None) -> bool:
    """Whether ``checksums.json`` holds a checksum for ``step`` (what a restore of it compared)."""
    sums, _ = read_records(workdir)
    return step is not None and bool((sums.get(str(step)) or {}).get("sha256"))
