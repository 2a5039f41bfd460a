"""Thin Orbax wrapper: the only module that touches the Orbax API (conventions §3.7)."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from absl import logging


def make_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """A checkpoint manager over ``workdir/checkpoints``."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, step: int, state, wait: bool = False) -> None:
    """Save ``state`` at ``step`` (every process must call this)."""
    manager.save(step, args=ocp.args.StandardSave(state), force=True)
    if wait:
        manager.wait_until_finished()


def restore_or_init(manager: ocp.CheckpointManager, init_state):
    """Restore the latest checkpoint into ``init_state``'s structure and shardings, if any.

    Returns:
      ``(state, restored_step)`` with ``restored_step = None`` when starting fresh.
    """
    step = manager.latest_step()
    if step is None:
        logging.info("No checkpoint in %s: starting from scratch", manager.directory)
        return init_state, None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, init_state)
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    logging.info("Restored checkpoint of step %d from %s", step, manager.directory)
    return state, step


def wait_and_close(manager: ocp.CheckpointManager) -> None:
    manager.wait_until_finished()
    manager.close()
