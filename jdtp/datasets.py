"""Datasets: the registry, and random-access sources of uint8 images and int32 labels (design §5).

A :class:`Source` is a split that can be read at any list of row indices
(:meth:`Source.read`), so a process decodes only the rows it trains or
evaluates on, never a whole split:

* :class:`TfdsSource` reads a TFDS split through ``tfds.data_source``
  (ArrayRecord files; no TensorFlow needed to read) and decodes just the
  requested records. :func:`open_split` opens it, or prepares the dataset
  first when that can work (network and TensorFlow are checked within
  seconds), or says how to prepare it (:class:`DatasetNotFoundError`).
* :class:`ArraySource` holds a split in memory: ``digits`` (scikit-learn's
  bundled 8×8 digits) and ``synthetic`` are small or generated and need no
  files at all, so tests and benchmarks run anywhere.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from absl import logging

# Records per ``__getitems__`` call: large reads (a whole split) are chunked so
# that at most this many decoded example dicts are alive at once.
_READ_CHUNK = 1024
# Seconds allowed for the "is the download host reachable" check.
_NETWORK_TIMEOUT_S = 3.0
# Fixed seeds of the synthetic data and of the digits train/test split.
_SYNTHETIC_SEED = 0
_DIGITS_SEED = 0
_DIGITS_NUM_TRAIN = 1437

# Per-channel statistics of images scaled to [0, 1], used for normalisation.
_MNIST_MEAN, _MNIST_STD = (0.5,), (0.5,)
# pl_bolts cifar10_normalization (design §5.1).
_CIFAR10_MEAN = (125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0)
_CIFAR10_STD = (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0)
# ImageNet statistics (design §5.3).
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
      train_size: Number of train examples as the source provides them (the loaded split is what
        a run counts; for TFDS datasets this is TFDS's split size, for planning).
      test_size: Number of test examples, likewise.
      generate: For a dataset made in memory instead of read from TFDS: ``(info, split) ->
        (uint8 images [N, H, W, C], int32 labels [N])``.
      configure: ``(info, config.data) -> info``: a dataset whose description comes partly
        from the config (``synthetic``: shape, classes and sizes).
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
    generate: Callable[[DatasetInfo, str], tuple[np.ndarray, np.ndarray]] | None = None
    configure: Callable[[DatasetInfo, Any], DatasetInfo] | None = None


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


def _digits_split(info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (values 0..16) as uint8 0..255; fixed 1437/360 split."""
    del info
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


def _configure_synthetic(info: DatasetInfo, data_config: Any) -> DatasetInfo:
    shape = tuple(int(d) for d in data_config.synthetic_shape)
    if len(shape) != 3:
        raise ValueError(f"config.data.synthetic_shape={shape} must be (H, W, C)")
    return dataclasses.replace(
        info,
        shape=shape,
        num_classes=int(data_config.synthetic_num_classes),
        mean=(0.5,) * shape[-1],
        std=(0.5,) * shape[-1],
        train_size=int(data_config.synthetic_train_size),
        test_size=int(data_config.synthetic_eval_size),
    )


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
        train_size=60000,
        test_size=10000,
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
        train_size=60000,
        test_size=10000,
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
        train_size=50000,
        test_size=10000,
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
        train_size=1281167,
        test_size=50000,
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
        generate=_digits_split,
    ),
    # config_base takes its synthetic_* defaults from here; get_info() applies config.data.synthetic_*.
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
        generate=_synthetic_split,
        configure=_configure_synthetic,
    ),
}


def get_info(name: str, data_config: Any = None, *, padded: bool = True) -> DatasetInfo:
    """Returns the registry entry for ``name``.

    Args:
      name: Registry name (``config.data.name``).
      data_config: Optional ``config.data``; for ``synthetic`` its
        ``synthetic_shape``, ``synthetic_num_classes``, ``synthetic_train_size``
        and ``synthetic_eval_size`` override the defaults; ``pad_to`` > 0 makes
        the images ``pad_to × pad_to`` (zero border, e.g. 28×28 digits for 32×32
        networks).
      padded: Apply ``pad_to`` to the shape (the stored images keep theirs).

    Returns:
      The dataset's :class:`DatasetInfo`.

    Raises:
      ValueError: ``name`` is not a registered dataset.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset config.data.name={name!r}; valid names: {', '.join(DATASETS)}")
    info = DATASETS[name]
    if info.configure is not None and data_config is not None:
        info = info.configure(info, data_config)
    pad_to = int(getattr(data_config, "pad_to", 0) or 0) if data_config is not None else 0
    if padded and pad_to:
        h, w, c = info.shape
        if pad_to < max(h, w):
            raise ValueError(f"config.data.pad_to={pad_to} is smaller than the {h}×{w} images of {name}")
        info = dataclasses.replace(info, shape=(pad_to, pad_to, c))
    return info


class PaddedSource:
    """A source whose images get a zero border up to ``size × size`` (centred, as torchvision's Pad)."""

    def __init__(self, source: Any, size: int):
        self.source, self.size = source, int(size)

    def __len__(self) -> int:
        return len(self.source)

    def read(self, indices) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self.source.read(indices)
        _, h, w, _ = images.shape
        top, left = (self.size - h) // 2, (self.size - w) // 2
        pad = ((0, 0), (top, self.size - h - top), (left, self.size - w - left), (0, 0))
        return np.pad(images, pad), labels


def resolve_data_dir(data_dir: str | None = None) -> str:
    """TFDS data_dir: ``data_dir`` if non-empty, else ``$TFDS_DATA_DIR``, else the TFDS default."""
    if not data_dir:
        data_dir = os.environ.get("TFDS_DATA_DIR", "")
    if not data_dir:
        from tensorflow_datasets.core import constants

        data_dir = constants.get_default_data_dir()
    return os.path.expanduser(os.fspath(data_dir))


# ---------------------------------------------------------------------------
# Random-access sources.
# ---------------------------------------------------------------------------


class Source(Protocol):
    """One split, readable at any row indices."""

    def __len__(self) -> int:
        """Number of examples in the split."""

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``indices`` (any order, repeats allowed) as ``(uint8 [k, H, W, C], int32 [k])``."""


class ArraySource:
    """A split held in host memory (for the small or generated datasets)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        """Wraps ``images`` (``uint8 [N, H, W, C]``) and ``labels`` (``int32 [N]``) without copying."""
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(indices, np.int64)
        return self.images[idx], self.labels[idx]


class TfdsSource:
    """A TFDS split read record by record: only the requested rows are decoded.

    Attributes:
      data_source: The ``tfds.data_source`` object (``len``, ``[i]``, ``__getitems__``).
      info: The dataset's :class:`DatasetInfo` (shape and label range are checked on every read).
      split: The split name, for messages.
    """

    def __init__(self, data_source: Any, info: DatasetInfo, split: str):
        self.data_source = data_source
        self.info = info
        self.split = split

    def __len__(self) -> int:
        return len(self.data_source)

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = [int(k) for k in np.asarray(indices, np.int64).reshape(-1)]
        shape = self.info.shape
        images = np.empty((len(keys), *shape), np.uint8)
        labels = np.empty((len(keys),), np.int32)
        for lo in range(0, len(keys), _READ_CHUNK):
            chunk = keys[lo : lo + _READ_CHUNK]
            for i, (key, ex) in enumerate(zip(chunk, self._getitems(chunk), strict=True), start=lo):
                image = np.asarray(ex["image"])
                # TFDS gives (H, W, C); a squeezed grey image (H, W) holds the same pixels.
                if image.size != images[i].size:
                    raise ValueError(
                        f"{self.info.name}[{self.split}] example {key} has image shape {image.shape}, "
                        f"expected {shape}"
                    )
                images[i] = image.reshape(shape)
                labels[i] = ex["label"]
        if len(labels) and (labels.min() < 0 or labels.max() >= self.info.num_classes):
            raise ValueError(f"{self.info.name}[{self.split}] labels outside [0, {self.info.num_classes})")
        return images, labels

    def _getitems(self, keys: list[int]) -> Sequence[dict]:
        getitems = getattr(self.data_source, "__getitems__", None)
        if getitems is not None:
            try:
                # One call per chunk: ArrayRecord fetches the records of a batch in parallel.
                return getitems(keys)
            except TypeError:
                pass  # tfds.testing.mock_data (4.9.10) installs an unbound __getitems__
        return [self.data_source[k] for k in keys]


def open_split(
    name: str,
    split: str,
    data_dir: str | None = None,
    *,
    download: bool = True,
    info: DatasetInfo | None = None,
) -> Source:
    """Opens one split for random access; reads nothing yet (in-memory datasets are generated).

    Args:
      name: Registry name (see :data:`DATASETS`).
      split: Split name, e.g. ``'train'`` or ``'test'`` (any TFDS split
        string for TFDS datasets; ``'train'`` / ``'test'`` otherwise).
      data_dir: TFDS data_dir; empty or ``None`` uses :func:`resolve_data_dir`.
      download: If the dataset is missing, try to prepare it (needs network
        and TensorFlow; both are checked first, within seconds).
      info: Dataset description; defaults to ``get_info(name)``.

    Returns:
      The split as a :class:`Source`.

    Raises:
      ValueError: Unknown dataset or split.
      DatasetNotFoundError: A TFDS dataset is not prepared and cannot be
        prepared here.
    """
    info = info or get_info(name)
    if info.generate is not None:
        images, labels = info.generate(info, split)
        if images.shape[1:] != info.shape:
            raise ValueError(
                f"{info.name}[{split}] images have shape {images.shape[1:]}, expected {info.shape}"
            )
        return ArraySource(images, labels)
    source = TfdsSource(_open_or_prepare(info, split, resolve_data_dir(data_dir), download), info, split)
    logging.info("Opened %s[%s] for random access: %d examples", info.name, split, len(source))
    return source


def load_split(
    name: str,
    split: str,
    data_dir: str | None = None,
    *,
    download: bool = True,
    info: DatasetInfo | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads a whole split into host NumPy (training reads only its batches; see ``jdtp.batching``).

    Arguments and errors as :func:`open_split`. Returns ``(images, labels)``: ``uint8 [N, H, W, C]``
    and ``int32 [N]``.
    """
    start = time.perf_counter()
    source = open_split(name, split, data_dir, download=download, info=info)
    images, labels = source.read(np.arange(len(source)))
    logging.info(
        "Loaded %s[%s]: %d examples of shape %s in %.1f s",
        name,
        split,
        len(labels),
        images.shape[1:],
        time.perf_counter() - start,
    )
    return images, labels


# ---------------------------------------------------------------------------
# Opening TFDS data, preparing it, or explaining why it cannot be prepared.
# ---------------------------------------------------------------------------


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
