"""Batching: step-indexed train batches and padded eval batches, each process reading only its rows.

* The order of training examples is a function of ``(seed, epoch)`` only
  (:func:`train_batch_indices`), so batch ``step`` is the same in a resumed
  run, on any number of hosts. Each process takes its contiguous slice of the
  global batch and reads just those rows from the source
  (:func:`get_train_batch`); nothing holds a whole split.
* A held-out validation set (``config.data.validation_split``) is a fixed set
  of row indices into the train split (:func:`split_validation`); training uses
  the others. A :class:`Subset` is a source seen through such an index array.
* Evaluation walks the whole eval set in fixed-size, zero-padded batches with a
  ``mask`` (:func:`eval_batches`), so averages are exact and shapes never change.
* Decoding costs ~0.3 ms per image (PNG through pillow), so while the jitted
  step runs, a background thread already reads the next batch: training batch
  ``step + 1`` (a pure function of the step, so prefetching cannot change which
  examples a step sees) and the next eval batch.

The input pipeline is three modules: :mod:`jdtp.datasets` (what a dataset is and
where its examples come from), this one, and :mod:`jdtp.augmentation` (flip, crop
and normalisation inside the jitted step). Why not ``grain``: its samplers shuffle
with their own index permutation and resume from a saved iterator state, whereas a
step here must map to the same examples as ``np.random.default_rng([seed, epoch])
.permutation`` always did (bitwise resume, old runs). Feeding grain our indices would
leave it wrapping ``source[i]``; the code it would replace is a chunked
``__getitems__`` loop and one read-ahead thread.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

from jdtp import datasets
from jdtp.datasets import DatasetInfo, Source

# Seed of the held-out validation subset (pl_bolts' default seed, design §5.1).
VALIDATION_SEED = 42


@dataclasses.dataclass(frozen=True)
class Subset:
    """The rows ``rows`` of ``source`` (all of them, in order, when ``rows`` is ``None``).

    Attributes:
      source: The split.
      rows: ``int64 [n]`` row indices into ``source``, or ``None``.
    """

    source: Source
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.source) if self.rows is None else len(self.rows)

    def read(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Examples at ``positions`` of this subset: ``(uint8 [k, H, W, C], int32 [k])``."""
        positions = np.asarray(positions, np.int64)
        return self.source.read(positions if self.rows is None else self.rows[positions])


@dataclasses.dataclass
class Dataset:
    """The train and eval sets of a run, read batch by batch.

    Attributes:
      info: The dataset's :class:`~jdtp.datasets.DatasetInfo`.
      train: Training examples.
      eval: Evaluation examples.
      eval_name: What the eval set is, e.g. ``'test'`` or ``'validation (10% of train)'``.
      prefetch: Read the next batch in a background thread (worth it where reading decodes).
    """

    info: DatasetInfo
    train: Subset
    eval: Subset
    eval_name: str = "test"
    prefetch: bool = False
    # The train batch being read ahead: (arguments of get_train_batch, future batch).
    _ahead: tuple[tuple, concurrent.futures.Future] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def from_arrays(
        cls,
        info: DatasetInfo,
        train_images: np.ndarray,
        train_labels: np.ndarray,
        eval_images: np.ndarray,
        eval_labels: np.ndarray,
        eval_name: str = "test",
    ) -> Dataset:
        """A dataset held in memory (``uint8 [N, H, W, C]`` images, ``int32 [N]`` labels)."""
        return cls(
            info,
            Subset(datasets.ArraySource(train_images, train_labels)),
            Subset(datasets.ArraySource(eval_images, eval_labels)),
            eval_name,
        )

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def num_eval(self) -> int:
        return len(self.eval)


def split_validation(num_examples: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, validation)`` holding out ``fraction`` of ``num_examples``.

    The held-out subset comes from a fixed permutation (seed 42); both index
    arrays are sorted, so subsets keep the split's canonical order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"config.data.validation_split={fraction} must be in [0, 1)")
    num_val = max(1, round(fraction * num_examples)) if fraction > 0 else 0
    perm = np.random.default_rng(VALIDATION_SEED).permutation(num_examples)
    return np.sort(perm[num_val:]), np.sort(perm[:num_val])


def load_dataset(data_config: Any) -> Dataset:
    """Opens the train and eval sets described by ``config.data`` (reads no TFDS records yet).

    With ``validation_split == 0`` (the paper's protocol) the whole train split
    trains and the test split evaluates; otherwise that fraction of the train
    split is held out (fixed permutation, seed 42) and evaluates.

    Args:
      data_config: ``config.data`` (fields ``name``, ``data_dir``, ``download``,
        ``validation_split`` and the ``synthetic_*`` fields).

    Returns:
      The :class:`Dataset`.
    """
    info = datasets.get_info(data_config.name, data_config)
    stored = datasets.get_info(data_config.name, data_config, padded=False)
    fraction = float(data_config.validation_split)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"config.data.validation_split={fraction} must be in [0, 1)")

    def open_split(split):
        source = datasets.open_split(
            info.name, split, data_dir=data_config.data_dir, download=bool(data_config.download), info=stored
        )
        return source if info.shape == stored.shape else datasets.PaddedSource(source, info.shape[0])

    train_source = open_split(info.train_split)
    if fraction > 0:
        train_rows, val_rows = split_validation(len(train_source), fraction)
        train, evals = Subset(train_source, train_rows), Subset(train_source, val_rows)
        eval_name = f"validation ({fraction:.0%} of {info.train_split})"
    else:
        train, evals = Subset(train_source), Subset(open_split(info.test_split))
        eval_name = info.test_split
    logging.info("%s: %d train examples, eval on %s: %d", info.name, len(train), eval_name, len(evals))
    # In-memory sources read by fancy indexing; a thread per batch would cost more than it hides.
    return Dataset(info, train, evals, eval_name, prefetch=info.tfds_name is not None)


# ---------------------------------------------------------------------------
# Step-indexed training batches.
# ---------------------------------------------------------------------------


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive")
    steps = num_examples // batch_size
    if steps == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {num_examples} training examples")
    return steps


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    perm.setflags(write=False)
    return perm


def train_batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices of global training batch ``step``.

    Epoch ``e = step // steps_per_epoch`` visits a permutation that depends on
    ``(seed, e)`` only, so a resumed run sees exactly the same batches.

    Args:
      num_examples: Size of the training set.
      batch_size: Global batch size.
      seed: Data-order seed (non-negative).
      step: Global step, from 0.

    Returns:
      ``int64 [batch_size]`` indices into the training set (a read-only view).
    """
    spe = steps_per_epoch(num_examples, batch_size)
    epoch, pos = divmod(int(step), spe)
    return _epoch_permutation(int(num_examples), int(seed), epoch)[pos * batch_size : (pos + 1) * batch_size]


def _process_slice(batch_size: int, process_index: int, process_count: int) -> slice:
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} is not divisible by process_count={process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} outside [0, {process_count})")
    local = batch_size // process_count
    return slice(process_index * local, (process_index + 1) * local)


def _read_train_batch(
    ds: Dataset, step: int, batch_size: int, seed: int, process_index: int, process_count: int
) -> dict[str, np.ndarray]:
    positions = train_batch_indices(ds.num_train, batch_size, seed, step)
    images, labels = ds.train.read(positions[_process_slice(batch_size, process_index, process_count)])
    return {"image": images, "label": labels}


def get_train_batch(
    ds: Dataset,
    step: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
    """This process's contiguous slice of global training batch ``step``; reads only those rows.

    With ``ds.prefetch``, the call also starts reading batch ``step + 1`` in a
    background thread, and the next call for exactly that batch takes it from
    there. Any other call reads synchronously, so the result never depends on
    the order of calls.

    Args:
      ds: The dataset.
      step: Global step.
      batch_size: Global batch size (divisible by ``process_count``).
      seed: Data-order seed.
      process_index: ``jax.process_index()``.
      process_count: ``jax.process_count()``.

    Returns:
      ``{'image': uint8 [B/P, H, W, C], 'label': int32 [B/P]}``.
    """
    _process_slice(batch_size, process_index, process_count)  # bad arguments raise here, not in a thread
    args = (int(step), int(batch_size), int(seed), int(process_index), int(process_count))
    ahead, ds._ahead = ds._ahead, None
    if ahead is not None and ahead[0] == args:
        batch = ahead[1].result()
    else:
        batch = _read_train_batch(ds, *args)
    if ds.prefetch:
        following = (args[0] + 1, *args[1:])
        ds._ahead = (following, _in_background(functools.partial(_read_train_batch, ds, *following)))
    return batch


def _in_background(read: Callable[[], Any]) -> concurrent.futures.Future:
    """Runs ``read`` in a new daemon thread (decoding releases the GIL); its result or error in a future.

    A daemon thread, not an executor: a read still running at exit (the batch
    after the last step) must not delay interpreter shutdown.
    """
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(read())
        except BaseException as err:  # re-raised by future.result() in the caller's thread
            future.set_exception(err)

    threading.Thread(target=run, name="jdtp-read-ahead", daemon=True).start()
    return future


# ---------------------------------------------------------------------------
# Padded eval batches.
# ---------------------------------------------------------------------------


def num_eval_batches(num_examples: int, eval_batch_size: int) -> int:
    """Batches :func:`eval_batches` yields (the last one padded)."""
    if eval_batch_size <= 0:
        raise ValueError(f"eval_batch_size={eval_batch_size} must be positive")
    return math.ceil(num_examples / eval_batch_size)


def _read_eval_batch(subset: Subset, shape: tuple[int, ...], positions: np.ndarray) -> dict[str, np.ndarray]:
    """Examples at ``positions``, zero image and label 0 where a position is past the end."""
    real = positions < len(subset)
    images = np.zeros((len(positions), *shape), np.uint8)
    labels = np.zeros((len(positions),), np.int32)
    if real.any():
        images[real], labels[real] = subset.read(positions[real])
    return {"image": images, "label": labels, "mask": real.astype(np.float32)}


def eval_batches(
    ds: Dataset,
    eval_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Walks the whole eval set in fixed-size batches; each process reads only its slice of each.

    The last global batch is padded with zero images and label 0; ``mask``
    is 1.0 for real examples and 0.0 for padding, so masked sums give exact
    averages and every batch has the same shape (no recompiles).

    Args:
      ds: The dataset.
      eval_batch_size: Global eval batch size (divisible by ``process_count``).
      process_index: ``jax.process_index()``.
      process_count: ``jax.process_count()``.

    Yields:
      ``{'image': uint8 [b, H, W, C], 'label': int32 [b], 'mask': float32 [b]}``
      with ``b = eval_batch_size / process_count``: this process's slice.
    """
    local = _process_slice(eval_batch_size, process_index, process_count)
    count = num_eval_batches(ds.num_eval, eval_batch_size)

    def read(b: int) -> dict[str, np.ndarray]:
        positions = np.arange(b * eval_batch_size, (b + 1) * eval_batch_size)[local]
        return _read_eval_batch(ds.eval, ds.info.shape, positions)

    if not ds.prefetch:
        yield from map(read, range(count))
        return
    ahead = _in_background(functools.partial(read, 0)) if count else None
    for b in range(count):
        batch = ahead.result()
        ahead = _in_background(functools.partial(read, b + 1)) if b + 1 < count else None
        yield batch
