"""Input pipeline: whole splits in host NumPy, step-indexed batches, in-jit augmentation (spec §5).

Design (conventions §3.6):

* :func:`load_split` reads a whole split **once** into host memory as ``uint8``
  images ``[N, H, W, C]`` and ``int32`` labels ``[N]``. TFDS datasets are read
  with ``tfds.data_source`` (ArrayRecord; no TensorFlow needed to read).
  ``digits`` (scikit-learn's bundled 8×8 digits) and ``synthetic`` need no
  files at all, so tests and benchmarks run anywhere.
* The order of training examples is a function of ``(seed, epoch)`` only
  (:func:`train_batch_indices`), so batch ``step`` is the same in a resumed
  run, on any number of hosts. Each process takes its contiguous slice of the
  global batch (:func:`get_train_batch`).
* Augmentation (flip, then random crop from an edge-padded image) and
  normalisation run in ``jax.numpy`` inside the jitted step
  (:func:`make_preprocess`), with the step's key.
* Evaluation walks the whole eval set in fixed-size, zero-padded batches with a
  ``mask`` (:func:`eval_batches`), so averages are exact and shapes never change.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import importlib.util
import math
import multiprocessing
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

# Examples read per ``__getitems__`` call. Decoding (PNG, through pillow) is CPU
# bound at ~0.3 ms per 28×28 or 32×32 image, so large splits are spread over
# worker processes on hosts with enough cores.
_READ_CHUNK = 1024
_PARALLEL_MIN_EXAMPLES = 20_000
_PARALLEL_MIN_CPUS = 4
_MAX_READ_WORKERS = 16
# Seconds allowed for the "is the download host reachable" check.
_NETWORK_TIMEOUT_S = 3.0
# Fixed seeds: the held-out validation subset (pl_bolts' default seed, spec §5.1),
# the synthetic data and the digits train/test split.
VALIDATION_SEED = 42
_SYNTHETIC_SEED = 0
_DIGITS_SEED = 0
_DIGITS_NUM_TRAIN = 1437
# Crop padding of the train augmentation (RandomCrop(size, padding=4, 'edge')).
CROP_PADDING = 4

_MNIST_MEAN, _MNIST_STD = (0.5,), (0.5,)
# pl_bolts cifar10_normalization (spec §5.1).
_CIFAR10_MEAN = (125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0)
_CIFAR10_STD = (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0)
# ImageNet statistics (spec §5.3).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_GCS_HOST = "storage.googleapis.com"  # TFDS tries its GCS mirror first


class DatasetNotFoundError(RuntimeError):
    """A TFDS dataset is not prepared in ``data_dir`` and cannot be prepared here."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Attributes:
      name: Registry name (``config.data.name``).
      tfds_name: TFDS name, or ``None`` for datasets generated in memory.
      train_split: Split used for training.
      test_split: Split used for evaluation under the paper's protocol.
      shape: Image shape ``(H, W, C)``.
      num_classes: Number of classes.
      mean: Per-channel normalisation mean (on images scaled to [0, 1]).
      std: Per-channel normalisation standard deviation.
      download_hosts: HTTPS hosts probed before TFDS tries to download the data.
      train_size: Number of train examples when known in advance (in-memory datasets).
      test_size: Number of test examples when known in advance (in-memory datasets).
    """

    name: str
    tfds_name: str | None
    train_split: str
    test_split: str
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    download_hosts: tuple[str, ...] = ()
    train_size: int | None = None
    test_size: int | None = None


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist",
        "mnist",
        "train",
        "test",
        (28, 28, 1),
        10,
        _MNIST_MEAN,
        _MNIST_STD,
        (_GCS_HOST,),
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        "fashion_mnist",
        "train",
        "test",
        (28, 28, 1),
        10,
        _MNIST_MEAN,
        _MNIST_STD,
        (_GCS_HOST,),  # the data comes over plain HTTP from an S3 website
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        "cifar10",
        "train",
        "test",
        (32, 32, 3),
        10,
        _CIFAR10_MEAN,
        _CIFAR10_STD,
        ("www.cs.toronto.edu", _GCS_HOST),
    ),
    "imagenet32": DatasetInfo(
        "imagenet32",
        "imagenet_resized/32x32",
        "train",
        "validation",
        (32, 32, 3),
        1000,
        _IMAGENET_MEAN,
        _IMAGENET_STD,
        ("www.image-net.org", _GCS_HOST),
    ),
    "digits": DatasetInfo(
        "digits",
        None,
        "train",
        "test",
        (8, 8, 1),
        10,
        _MNIST_MEAN,
        _MNIST_STD,
        train_size=_DIGITS_NUM_TRAIN,
        test_size=1797 - _DIGITS_NUM_TRAIN,
    ),
    # Defaults match config_base; get_info() applies config.data.synthetic_*.
    "synthetic": DatasetInfo(
        "synthetic",
        None,
        "train",
        "test",
        (32, 32, 3),
        10,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        train_size=512,
        test_size=256,
    ),
}


def get_info(name: str, data_config: Any = None) -> DatasetInfo:
    """Returns the registry entry for ``name``.

    Args:
      name: Registry name (``config.data.name``).
      data_config: Optional ``config.data``; for ``synthetic`` its
        ``synthetic_shape``, ``synthetic_num_classes``, ``synthetic_train_size``
        and ``synthetic_eval_size`` override the defaults.

    Returns:
      The dataset's :class:`DatasetInfo`.

    Raises:
      ValueError: ``name`` is not a registered dataset.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset config.data.name={name!r}; valid names: {', '.join(DATASETS)}")
    info = DATASETS[name]
    if name == "synthetic" and data_config is not None:
        shape = tuple(int(d) for d in data_config.synthetic_shape)
        if len(shape) != 3:
            raise ValueError(f"config.data.synthetic_shape={shape} must be (H, W, C)")
        info = dataclasses.replace(
            info,
            shape=shape,
            num_classes=int(data_config.synthetic_num_classes),
            mean=(0.5,) * shape[-1],
            std=(0.5,) * shape[-1],
            train_size=int(data_config.synthetic_train_size),
            test_size=int(data_config.synthetic_eval_size),
        )
    return info


def resolve_data_dir(data_dir: str | None = None) -> str:
    """TFDS data_dir: ``data_dir`` if non-empty, else ``$TFDS_DATA_DIR``, else the TFDS default."""
    if not data_dir:
        data_dir = os.environ.get("TFDS_DATA_DIR", "")
    if not data_dir:
        from tensorflow_datasets.core import constants

        data_dir = constants.get_default_data_dir()
    return os.path.expanduser(os.fspath(data_dir))


# ---------------------------------------------------------------------------
# Loading whole splits into host memory.
# ---------------------------------------------------------------------------


def load_split(
    name: str,
    split: str,
    data_dir: str | None = None,
    *,
    download: bool = True,
    info: DatasetInfo | None = None,
    num_workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads a whole split into host NumPy.

    Args:
      name: Registry name (see :data:`DATASETS`).
      split: Split name, e.g. ``'train'`` or ``'test'`` (any TFDS split
        string for TFDS datasets; ``'train'`` / ``'test'`` otherwise).
      data_dir: TFDS data_dir; empty or ``None`` uses :func:`resolve_data_dir`.
      download: If the dataset is missing, try to prepare it (needs network
        and TensorFlow; both are checked first, within seconds).
      info: Dataset description; defaults to ``get_info(name)``.
      num_workers: Processes that decode a TFDS split; ``None`` picks
        ``min(cpu_count, 16)`` for splits of at least 20k examples on hosts
        with at least 4 CPUs, else 1 (decode in this process).

    Returns:
      ``(images, labels)``: ``uint8 [N, H, W, C]`` and ``int32 [N]``.

    Raises:
      ValueError: Unknown dataset or split.
      DatasetNotFoundError: A TFDS dataset is not prepared and cannot be
        prepared here.
    """
    info = info or get_info(name)
    start = time.perf_counter()
    if info.name == "synthetic":
        images, labels = _synthetic_split(info, split)
    elif info.name == "digits":
        images, labels = _digits_split(split)
    else:
        data_dir = resolve_data_dir(data_dir)
        source = _open_or_prepare(info, split, data_dir, download)
        images, labels = _read_source(source, info, split, data_dir, num_workers)
    if images.shape[1:] != info.shape:
        raise ValueError(f"{info.name}[{split}] images have shape {images.shape[1:]}, expected {info.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise ValueError(f"{info.name}[{split}] labels outside [0, {info.num_classes})")
    logging.info(
        "Loaded %s[%s]: %d examples of shape %s in %.1f s",
        info.name,
        split,
        len(labels),
        info.shape,
        time.perf_counter() - start,
    )
    return images, labels


def _synthetic_split(info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic random images: (class prototype + uniform noise) / 2, balanced labels."""
    sizes = {"train": info.train_size, "test": info.test_size}
    if split not in sizes:
        raise ValueError(f"synthetic has splits 'train' and 'test', got {split!r}")
    n = int(sizes[split])
    prototypes = np.random.default_rng([_SYNTHETIC_SEED, 0]).integers(
        0, 256, (info.num_classes, *info.shape), dtype=np.uint8
    )
    rng = np.random.default_rng([_SYNTHETIC_SEED, 1 if split == "train" else 2])
    labels = rng.permutation(np.arange(n) % info.num_classes).astype(np.int32)
    noise = rng.integers(0, 256, (n, *info.shape), dtype=np.uint8)
    images = ((prototypes[labels].astype(np.uint16) + noise) // 2).astype(np.uint8)
    return images, labels


def _digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (values 0..16) as uint8 0..255; fixed 1437/360 split."""
    if split not in ("train", "test"):
        raise ValueError(f"digits has splits 'train' and 'test', got {split!r}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Scale 0..16 to 0..255 so that the generic x / 255 gives [0, 1] (error ≤ 0.5/255).
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    perm = np.random.RandomState(_DIGITS_SEED).permutation(len(labels))
    idx = perm[:_DIGITS_NUM_TRAIN] if split == "train" else perm[_DIGITS_NUM_TRAIN:]
    return images[idx], labels[idx]


def _open_or_prepare(info: DatasetInfo, split: str, data_dir: str, download: bool):
    """Opens the TFDS data source, preparing the dataset first only when that can work."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(info.tfds_name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises several types for "not there"
        open_error = err
    builder = tfds.builder(info.tfds_name, data_dir=data_dir)
    searched = os.fspath(builder.data_path)
    if builder.is_prepared():
        random_access = tfds.core.file_adapters.FileFormat.with_random_access()
        if builder.info.file_format in random_access:
            raise open_error  # readable format: a different problem (e.g. a bad split name)
        # Prepared in a format tfds.data_source cannot read (TFRecord).
        raise DatasetNotFoundError(
            f"Dataset {info.name!r} (TFDS {info.tfds_name!r}) is prepared in {searched} "
            f"(file format {builder.info.file_format}), but tfds.data_source cannot read split "
            f"{split!r}: {open_error}\njdtp reads ArrayRecord files: prepare the dataset again into "
            "another data_dir with "
            + _prepare_command(info.tfds_name, "DIR")
            + " and point --config.data.data_dir (or $TFDS_DATA_DIR) at DIR."
        ) from open_error
    reasons = []
    if not download:
        reasons.append("config.data.download is False")
    else:
        if not _tensorflow_available():
            reasons.append("tensorflow is not installed (TFDS needs it to prepare datasets)")
        if not _network_available(info.download_hosts):
            reasons.append(f"no HTTPS connection to {', '.join(info.download_hosts)}")
    if reasons:
        raise DatasetNotFoundError(_missing_message(info, data_dir, searched, reasons)) from open_error
    logging.info("Preparing %s in %s (ArrayRecord); this downloads the data.", info.tfds_name, data_dir)
    builder.download_and_prepare(file_format="array_record")
    return tfds.data_source(info.tfds_name, split=split, data_dir=data_dir, download=False)


def _prepare_command(tfds_name: str, data_dir: str) -> str:
    return (
        'python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{tfds_name}', data_dir='{data_dir}')"
        ".download_and_prepare(file_format='array_record')\""
    )


def _missing_message(info: DatasetInfo, data_dir: str, searched: str, reasons: Sequence[str]) -> str:
    return (
        f"Dataset {info.name!r} (TFDS {info.tfds_name!r}) is not prepared in data_dir {data_dir!r} "
        f"(looked for {searched}), and it cannot be prepared here: {'; '.join(reasons)}.\n"
        "To fix, either\n"
        "  1. on a machine with network access run\n"
        "       pip install tensorflow-cpu\n"
        f"       {_prepare_command(info.tfds_name, data_dir)}\n"
        "     (copy that data_dir here if it was another machine), or\n"
        f"  2. point --config.data.data_dir (or $TFDS_DATA_DIR) at a folder that holds {info.tfds_name} "
        "in ArrayRecord format."
    )


def _tensorflow_available() -> bool:
    """Whether TensorFlow (which TFDS needs to prepare datasets) is installed; does not import it."""
    return importlib.util.find_spec("tensorflow") is not None


def _network_available(hosts: Sequence[str], timeout: float = _NETWORK_TIMEOUT_S) -> bool:
    """True if an HTTPS request to any of ``hosts`` gets an answer within ``timeout`` seconds.

    A verified TLS handshake is required, not just a TCP connection: sandboxes
    and firewalls often accept every connection and answer with an error,
    after which TFDS would retry its downloads for minutes. ``urllib`` honours
    ``$https_proxy``. DNS lookups have no timeout of their own, so the probes
    run in daemon threads that are abandoned after ``timeout`` (plus slack).
    """
    reachable = threading.Event()

    def probe(host: str) -> None:
        request = urllib.request.Request(f"https://{host}/", method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                reachable.set()
        except urllib.error.HTTPError:
            reachable.set()  # the server answered (e.g. 403 or 404)
        except Exception:  # DNS, refused, TLS verification, timeout, ...: not reachable
            pass

    threads = [threading.Thread(target=probe, args=(host,), daemon=True) for host in hosts]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 0.5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if reachable.is_set():
            return True
    return reachable.is_set()


def _read_source(source, info: DatasetInfo, split: str, data_dir: str, num_workers: int | None):
    """Decodes every example of a TFDS data source into preallocated arrays."""
    n = len(source)
    real_files = type(getattr(source, "data_source", None)).__module__.startswith("array_record")
    if num_workers is None:
        cpus = os.cpu_count() or 1
        auto = n >= _PARALLEL_MIN_EXAMPLES and cpus >= _PARALLEL_MIN_CPUS
        num_workers = min(cpus, _MAX_READ_WORKERS) if auto else 1
    if num_workers > 1 and real_files:
        try:
            return _read_parallel(info, split, data_dir, n, num_workers)
        except Exception as err:  # fall back to reading in this process
            logging.warning("Parallel decoding failed (%s); reading %s[%s] serially.", err, info.name, split)
    return _read_range(source, info.shape, 0, n)


def _read_range(source, shape: tuple[int, ...], start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((stop - start, *shape), np.uint8)
    labels = np.empty((stop - start,), np.int32)
    for lo in range(start, stop, _READ_CHUNK):
        keys = list(range(lo, min(lo + _READ_CHUNK, stop)))
        try:
            examples = source.__getitems__(keys)
        except TypeError:
            # tfds.testing.mock_data (4.9.10) installs an unbound __getitems__.
            examples = [source[k] for k in keys]
        for i, ex in enumerate(examples, start=lo - start):
            images[i] = np.asarray(ex["image"]).reshape(shape)
            labels[i] = ex["label"]
    return images, labels


def _worker_read(tfds_name: str, split: str, data_dir: str, shape, start: int, stop: int):
    """Worker-process entry point: opens the data source and decodes ``[start, stop)``."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
    return _read_range(source, tuple(shape), start, stop)


def _read_parallel(info: DatasetInfo, split: str, data_dir: str, n: int, num_workers: int):
    # 'spawn': forking a process that runs JAX threads can deadlock.
    ctx = multiprocessing.get_context("spawn")
    num_chunks = num_workers * 4
    bounds = np.linspace(0, n, num_chunks + 1).astype(int)
    images = np.empty((n, *info.shape), np.uint8)
    labels = np.empty((n,), np.int32)
    logging.info("Decoding %s[%s] (%d examples) with %d processes", info.name, split, n, num_workers)
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx) as pool:
        futures = {
            pool.submit(_worker_read, info.tfds_name, split, data_dir, info.shape, lo, hi): (lo, hi)
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
            if hi > lo
        }
        for fut in concurrent.futures.as_completed(futures):
            lo, hi = futures[fut]
            images[lo:hi], labels[lo:hi] = fut.result()
    return images, labels


# ---------------------------------------------------------------------------
# The dataset a run trains and evaluates on.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Dataset:
    """Host-memory train and eval sets (every process holds all of them).

    Attributes:
      info: The dataset's :class:`DatasetInfo`.
      train_images: ``uint8 [N_train, H, W, C]``.
      train_labels: ``int32 [N_train]``.
      eval_images: ``uint8 [N_eval, H, W, C]``.
      eval_labels: ``int32 [N_eval]``.
      eval_name: What the eval set is, e.g. ``'test'`` or ``'validation (10% of train)'``.
    """

    info: DatasetInfo
    train_images: np.ndarray
    train_labels: np.ndarray
    eval_images: np.ndarray
    eval_labels: np.ndarray
    eval_name: str = "test"

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    @property
    def num_eval(self) -> int:
        return len(self.eval_labels)


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
    """Loads the train and eval sets described by ``config.data``.

    With ``validation_split == 0`` (the paper's protocol) the whole train split
    trains and the test split evaluates; otherwise that fraction of the train
    split is held out (fixed permutation, seed 42) and evaluates.

    Args:
      data_config: ``config.data`` (fields ``name``, ``data_dir``, ``download``,
        ``validation_split`` and the ``synthetic_*`` fields).

    Returns:
      The :class:`Dataset`.
    """
    info = get_info(data_config.name, data_config)
    fraction = float(data_config.validation_split)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"config.data.validation_split={fraction} must be in [0, 1)")
    kwargs = dict(data_dir=data_config.data_dir, download=bool(data_config.download), info=info)
    train_images, train_labels = load_split(info.name, info.train_split, **kwargs)
    if fraction > 0:
        train_idx, val_idx = split_validation(len(train_labels), fraction)
        eval_images, eval_labels = train_images[val_idx], train_labels[val_idx]
        train_images, train_labels = train_images[train_idx], train_labels[train_idx]
        eval_name = f"validation ({fraction:.0%} of {info.train_split})"
    else:
        eval_images, eval_labels = load_split(info.name, info.test_split, **kwargs)
        eval_name = info.test_split
    logging.info(
        "%s: %d train examples, eval on %s: %d", info.name, len(train_labels), eval_name, len(eval_labels)
    )
    return Dataset(info, train_images, train_labels, eval_images, eval_labels, eval_name)


# ---------------------------------------------------------------------------
# Step-indexed training batches and padded eval batches.
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


def get_train_batch(
    ds: Dataset,
    step: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
    """This process's contiguous slice of global training batch ``step``.

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
    idx = train_batch_indices(ds.num_train, batch_size, seed, step)
    idx = idx[_process_slice(batch_size, process_index, process_count)]
    return {"image": ds.train_images[idx], "label": ds.train_labels[idx]}


def num_eval_batches(num_examples: int, eval_batch_size: int) -> int:
    """Batches :func:`eval_batches` yields (the last one padded)."""
    if eval_batch_size <= 0:
        raise ValueError(f"eval_batch_size={eval_batch_size} must be positive")
    return math.ceil(num_examples / eval_batch_size)


def eval_batches(
    ds: Dataset,
    eval_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Walks the whole eval set in fixed-size batches.

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
    n = ds.num_eval
    for b in range(num_eval_batches(n, eval_batch_size)):
        idx = np.arange(b * eval_batch_size, (b + 1) * eval_batch_size)[local]
        real = idx < n
        safe = np.where(real, idx, 0)
        images = ds.eval_images[safe]
        images[~real] = 0
        yield {
            "image": images,
            "label": np.where(real, ds.eval_labels[safe], 0).astype(np.int32),
            "mask": real.astype(np.float32),
        }


# ---------------------------------------------------------------------------
# In-jit preprocessing (spec §5: flip, crop, to-float, normalise).
# ---------------------------------------------------------------------------


def augment_params(
    key: jax.Array, batch_size: int, padding: int = CROP_PADDING
) -> tuple[jax.Array, jax.Array]:
    """Per-sample random draws of the train augmentation.

    Args:
      key: PRNG key.
      batch_size: Number of samples.
      padding: Crop padding; offsets are uniform in ``0 .. 2 * padding``.

    Returns:
      ``(flip bool [B], offsets int32 [B, 2])``: horizontal flip with
      probability 0.5, and the (row, column) of the crop in the padded image.
    """
    flip_key, crop_key = jax.random.split(key)
    flip = jax.random.bernoulli(flip_key, 0.5, (batch_size,))
    offsets = jax.random.randint(crop_key, (batch_size, 2), 0, 2 * padding + 1, dtype=jnp.int32)
    return flip, offsets


def flip_and_crop(
    images: jax.Array, flip: jax.Array, offsets: jax.Array, padding: int = CROP_PADDING
) -> jax.Array:
    """Flips the chosen images left-right, then crops each back to ``H × W`` from its edge-padded copy.

    Args:
      images: ``[B, H, W, C]`` (any dtype).
      flip: ``bool [B]``.
      offsets: ``int [B, 2]``, each in ``0 .. 2 * padding``.
      padding: Pixels of edge (replicate) padding on each side.

    Returns:
      ``[B, H, W, C]``, same dtype.
    """
    _, h, w, c = images.shape
    images = jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="edge")

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def make_preprocess(
    info: DatasetInfo, augment: bool, padding: int = CROP_PADDING
) -> Callable[[dict, jax.Array | None], tuple[jax.Array, jax.Array]]:
    """Builds ``preprocess(batch, key) -> (x, labels)`` for use inside a jitted step.

    Order (spec §5): random horizontal flip (p = 0.5), random crop back to
    ``H × W`` from the image edge-padded by ``padding`` (both per sample, only
    if ``augment``), conversion of uint8 to float32 in [0, 1], and per-channel
    normalisation ``(x − mean) / std``.

    Args:
      info: Dataset description (shape, mean, std).
      augment: Apply the random flip and crop.
      padding: Crop padding.

    Returns:
      A pure function of ``({'image': uint8 [B, H, W, C], 'label': int [B], ...}, key)``
      returning ``(float32 [B, H, W, C], int32 [B])``. ``key`` is unused (may
      be ``None``) without augmentation.
    """
    mean = np.asarray(info.mean, np.float32)
    std = np.asarray(info.std, np.float32)

    def preprocess(batch: dict, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        images = jnp.asarray(batch["image"])
        if augment:
            if key is None:
                raise ValueError("the augmenting preprocess needs a PRNG key")
            flip, offsets = augment_params(key, images.shape[0], padding)
            images = flip_and_crop(images, flip, offsets, padding)
        x = images.astype(jnp.float32) / 255.0
        x = (x - mean) / std
        return x, jnp.asarray(batch["label"]).astype(jnp.int32)

    return preprocess


def make_eval_preprocess(
    info: DatasetInfo,
) -> Callable[[dict, jax.Array | None], tuple[jax.Array, jax.Array]]:
    """``preprocess(batch, key=None) -> (x, labels)`` without augmentation (to-float, normalise)."""
    return make_preprocess(info, augment=False)
