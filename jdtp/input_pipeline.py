"""Input pipeline facade: the names the rest of jdtp uses, from three modules (design §5).

* :mod:`jdtp.datasets` — the registry (:class:`DatasetInfo`, :data:`DATASETS`,
  :func:`get_info`), random-access sources of one split (:func:`open_split`:
  TFDS ArrayRecord via ``tfds.data_source``, or ``digits`` / ``synthetic`` in
  memory), preparing TFDS data or explaining why it cannot be
  (:class:`DatasetNotFoundError`), and :func:`load_split` (a whole split).
* :mod:`jdtp.batching` — :class:`Dataset`, step-indexed train batches of which
  each process reads only its slice (:func:`get_train_batch`, with the next
  batch read ahead in a thread), the validation split, padded eval batches.
* :mod:`jdtp.augmentation` — flip and crop, to-float and normalisation inside
  the jitted step (:func:`make_preprocess`).

Why not ``grain``: its samplers shuffle with their own index permutation and
resume from a saved iterator state, whereas a step here must map to the same
examples as ``np.random.default_rng([seed, epoch]).permutation`` always did
(bitwise resume, old runs). Feeding grain our indices would leave it wrapping
``source[i]``; the code it would replace is a chunked ``__getitems__`` loop and
one read-ahead thread, which decode B/P images per step fast enough.
"""

from jdtp.augmentation import (
    CROP_PADDING,
    augment_params,
    flip_and_crop,
    make_eval_preprocess,
    make_preprocess,
)
from jdtp.batching import (
    VALIDATION_SEED,
    Dataset,
    Subset,
    eval_batches,
    get_train_batch,
    load_dataset,
    num_eval_batches,
    split_validation,
    steps_per_epoch,
    train_batch_indices,
)
from jdtp.datasets import (
    DATASETS,
    ArraySource,
    DatasetInfo,
    DatasetNotFoundError,
    Source,
    TfdsSource,
    get_info,
    load_split,
    open_split,
    resolve_data_dir,
)

__all__ = [
    "CROP_PADDING",
    "DATASETS",
    "VALIDATION_SEED",
    "ArraySource",
    "Dataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "Source",
    "Subset",
    "TfdsSource",
    "augment_params",
    "eval_batches",
    "flip_and_crop",
    "get_info",
    "get_train_batch",
    "load_dataset",
    "load_split",
    "make_eval_preprocess",
    "make_preprocess",
    "num_eval_batches",
    "open_split",
    "resolve_data_dir",
    "split_validation",
    "steps_per_epoch",
    "train_batch_indices",
]
