"""Tests for jdtp.batching: step-indexed per-process batches by random access, resume, read-ahead,
validation split, padded eval batches."""

import threading

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import data_config, small_synthetic_data

from jdtp import batching, datasets


def _toy_dataset(num_train=10, num_eval=7, shape=(2, 2, 1)):
    rng = np.random.default_rng(0)
    info = datasets.DatasetInfo("toy", None, "train", "test", shape, 10, (0.5,), (0.5,))
    return batching.Dataset.from_arrays(
        info,
        rng.integers(0, 256, (num_train, *shape), dtype=np.uint8),
        np.arange(num_train, dtype=np.int32) % 10,
        rng.integers(1, 256, (num_eval, *shape), dtype=np.uint8),
        np.arange(num_eval, dtype=np.int32) % 10,
    )


def _everything(subset):
    return subset.read(np.arange(len(subset)))


class _CountingSource:
    """Wraps a tfds data source and records every row index requested from it (from any thread)."""

    def __init__(self, inner):
        self.inner = inner
        self.requested: list[int] = []
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys):
        with self._lock:
            self.requested.extend(int(k) for k in keys)
        return [self.inner[k] for k in keys]


def _mnist_reference(split: str, n: int):
    """The whole split in memory, read one record at a time straight from TFDS (the old design)."""
    source = tfds.data_source("mnist", split=split, download=False)
    images = np.stack([np.asarray(source[i]["image"]) for i in range(n)])
    labels = np.array([source[i]["label"] for i in range(n)], np.int32)
    return images, labels


def _finish_read_ahead(ds):
    if ds._ahead is not None:
        ds._ahead[1].result()


# --- training batches ------------------------------------------------------------------------------


def test_steps_per_epoch():
    assert batching.steps_per_epoch(50_000, 128) == 390
    with pytest.raises(ValueError):
        batching.steps_per_epoch(10, 16)


def test_train_batch_indices_deterministic_and_epoch_permutations():
    n, b, seed = 23, 5, 3
    spe = batching.steps_per_epoch(n, b)
    assert spe == 4
    np.testing.assert_array_equal(
        batching.train_batch_indices(n, b, seed, 6), batching.train_batch_indices(n, b, seed, 6)
    )
    epochs = []
    for epoch in range(3):
        idx = np.concatenate([batching.train_batch_indices(n, b, seed, epoch * spe + s) for s in range(spe)])
        assert len(idx) == spe * b and len(np.unique(idx)) == len(idx)  # no repeats within an epoch
        epochs.append(idx)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(
        batching.train_batch_indices(n, b, seed, 0), batching.train_batch_indices(n, b, seed + 1, 0)
    )
    # With no remainder, every example appears exactly once per epoch.
    idx = np.concatenate([batching.train_batch_indices(20, 5, seed, 4 + s) for s in range(4)])
    np.testing.assert_array_equal(np.sort(idx), np.arange(20))
    # The data order of existing runs is fixed: values from the whole-split pipeline it replaced.
    assert batching.train_batch_indices(10, 4, 0, 0).tolist() == [4, 6, 2, 7]
    assert batching.train_batch_indices(10, 4, 3, 5).tolist() == [6, 0, 2, 9]


def test_process_slices_concatenate_to_global_batch():
    ds = _toy_dataset(num_train=16)
    train_images, _ = _everything(ds.train)
    for step in (0, 5):
        full = batching.get_train_batch(ds, step, 8, seed=1)
        parts = [
            batching.get_train_batch(ds, step, 8, seed=1, process_index=p, process_count=2) for p in range(2)
        ]
        chex.assert_shape(parts[0]["image"], (4, 2, 2, 1))
        assert parts[0]["label"].dtype == np.int32
        for key in ("image", "label"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])
        idx = batching.train_batch_indices(16, 8, 1, step)
        np.testing.assert_array_equal(full["image"], train_images[idx])
    with pytest.raises(ValueError, match="divisible"):
        batching.get_train_batch(ds, 0, 8, seed=1, process_index=0, process_count=3)


def test_random_access_batches_equal_in_memory_reference_with_resume():
    n, batch_size, seed, steps = 48, 8, 7, 9  # 6 steps per epoch: crosses into epoch 1
    with tfds.testing.mock_data(num_examples=n):
        ref_images, ref_labels = _mnist_reference("train", n)
        config = data_config(name="mnist", data_dir="/nonexistent/tfds")
        for p in range(2):
            ds = batching.load_dataset(config)
            assert ds.prefetch and ds.num_train == n
            for step in range(steps):
                batch = batching.get_train_batch(ds, step, batch_size, seed, p, 2)
                rows = batching.train_batch_indices(n, batch_size, seed, step)[p * 4 : (p + 1) * 4]
                chex.assert_shape(batch["image"], (4, 28, 28, 1))
                assert batch["image"].dtype == np.uint8 and batch["label"].dtype == np.int32
                np.testing.assert_array_equal(batch["image"], ref_images[rows])
                np.testing.assert_array_equal(batch["label"], ref_labels[rows])
            last = batch
            _finish_read_ahead(ds)
            # A resumed run (fresh dataset, first call at the last step) gets the same batch.
            resumed = batching.load_dataset(config)
            chex.assert_trees_all_equal(
                batching.get_train_batch(resumed, steps - 1, batch_size, seed, p, 2), last
            )
            _finish_read_ahead(resumed)


def test_read_ahead_is_the_next_step_and_never_changes_a_batch():
    n, batch_size, seed = 40, 8, 1
    with tfds.testing.mock_data(num_examples=n):
        config = data_config(name="mnist", data_dir="/nonexistent/tfds")
        ds, plain = batching.load_dataset(config), batching.load_dataset(config)
        plain.prefetch = False
        for step in (0, 1, 2, 7, 3, 3, 4):  # in order, a jump, a step back, a repeat
            batch = batching.get_train_batch(ds, step, batch_size, seed)
            chex.assert_trees_all_equal(batch, batching.get_train_batch(plain, step, batch_size, seed))
            assert ds._ahead[0] == (step + 1, batch_size, seed, 0, 1)
            assert plain._ahead is None
        _finish_read_ahead(ds)


@pytest.mark.parametrize("prefetch", [False, True])
def test_a_process_reads_only_its_rows(prefetch):
    n, batch_size, seed, processes, steps = 64, 16, 3, 4, 5
    local = batch_size // processes
    with tfds.testing.mock_data(num_examples=n):
        for p in range(processes):
            ds = batching.load_dataset(data_config(name="mnist", data_dir="/nonexistent/tfds"))
            ds.prefetch = prefetch
            counter = ds.train.source.data_source = _CountingSource(ds.train.source.data_source)
            assert counter.requested == []  # opening reads nothing
            for step in range(steps):
                batching.get_train_batch(ds, step, batch_size, seed, p, processes)
                _finish_read_ahead(ds)
                # Exactly this process's B/P rows of each step (plus, read ahead, the next step's).
                expected = [
                    batching.train_batch_indices(n, batch_size, seed, s)[p * local : (p + 1) * local]
                    for s in range(step + 1 + prefetch)
                ]
                assert counter.requested == np.concatenate(expected).tolist()


# --- evaluation ------------------------------------------------------------------------------------


def test_eval_batches_pad_and_mask():
    ds = _toy_dataset(num_eval=7)
    eval_images, eval_labels = _everything(ds.eval)
    batches = list(batching.eval_batches(ds, 3))
    assert len(batches) == batching.num_eval_batches(7, 3) == 3
    for batch in batches:
        chex.assert_shape(batch["image"], (3, 2, 2, 1))
        assert batch["mask"].dtype == np.float32 and batch["label"].dtype == np.int32
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == ds.num_eval
    np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 1, 1, 0, 0])
    images = np.concatenate([b["image"] for b in batches])
    np.testing.assert_array_equal(images[:7], eval_images)
    assert np.all(images[7:] == 0)  # eval images are >= 1, so this is the padding
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels[:7], eval_labels)
    # Two processes: slices of each global batch, same total mask.
    per_proc = [list(batching.eval_batches(ds, 4, process_index=p, process_count=2)) for p in range(2)]
    assert sum(b["mask"].sum() for batches in per_proc for b in batches) == 7
    glob = list(batching.eval_batches(ds, 4))
    for i, g in enumerate(glob):
        np.testing.assert_array_equal(
            np.concatenate([per_proc[0][i]["mask"], per_proc[1][i]["mask"]]), g["mask"]
        )


@pytest.mark.parametrize("prefetch", [False, True])
def test_eval_batches_per_process_concatenate_to_the_padded_eval_set(prefetch):
    n, eval_batch_size, processes = 13, 8, 4  # 2 global batches; process 3 gets only padding in the last
    local = eval_batch_size // processes
    with tfds.testing.mock_data(num_examples=n):
        ref_images, ref_labels = _mnist_reference("test", n)
        per_proc, counters = [], []
        for p in range(processes):
            ds = batching.load_dataset(data_config(name="mnist", data_dir="/nonexistent/tfds"))
            ds.prefetch = prefetch
            counters.append(_CountingSource(ds.eval.source.data_source))
            ds.eval.source.data_source = counters[-1]
            per_proc.append(list(batching.eval_batches(ds, eval_batch_size, p, processes)))
    num_batches = batching.num_eval_batches(n, eval_batch_size)
    assert num_batches == 2 and all(len(batches) == num_batches for batches in per_proc)
    glob = {
        key: np.concatenate([per_proc[p][b][key] for b in range(num_batches) for p in range(processes)])
        for key in ("image", "label", "mask")
    }
    padded = num_batches * eval_batch_size
    np.testing.assert_array_equal(glob["image"][:n], ref_images)
    np.testing.assert_array_equal(glob["label"][:n], ref_labels)
    np.testing.assert_array_equal(glob["mask"], (np.arange(padded) < n).astype(np.float32))
    assert not glob["image"][n:].any() and not glob["label"][n:].any()
    for p, counter in enumerate(counters):  # each process read its own real rows, once
        mine = np.arange(padded).reshape(num_batches, processes, local)[:, p].ravel()
        assert counter.requested == mine[mine < n].tolist()


# --- validation split ------------------------------------------------------------------------------


def test_validation_split_sizes():
    ds = batching.load_dataset(small_synthetic_data(validation_split=0.25))
    assert (ds.num_train, ds.num_eval) == (30, 10)
    assert ds.eval_name.startswith("validation")
    train_idx, val_idx = batching.split_validation(50_000, 0.1)
    assert (len(train_idx), len(val_idx)) == (45_000, 5_000)
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(50_000))
    np.testing.assert_array_equal(batching.split_validation(50_000, 0.1)[1], val_idx)  # fixed seed
    full = batching.load_dataset(small_synthetic_data())
    # The held-out examples are train examples, not test ones.
    full_train_images, _ = _everything(full.train)
    np.testing.assert_array_equal(
        _everything(ds.eval)[0], full_train_images[batching.split_validation(40, 0.25)[1]]
    )
    # The held-out subset of existing runs is fixed: values from the pipeline it replaced.
    assert [a.tolist() for a in batching.split_validation(10, 0.3)] == [[1, 2, 3, 4, 7, 8, 9], [0, 5, 6]]
    with pytest.raises(ValueError, match="validation_split"):
        batching.load_dataset(small_synthetic_data(validation_split=1.0))


def test_validation_split_gives_the_same_examples_as_the_whole_split_design():
    n, fraction, batch_size, seed = 50, 0.2, 8, 4
    with tfds.testing.mock_data(num_examples=n):
        ref_images, ref_labels = _mnist_reference("train", n)
        ds = batching.load_dataset(
            data_config(name="mnist", data_dir="/nonexistent/tfds", validation_split=fraction)
        )
        train_rows, val_rows = batching.split_validation(n, fraction)
        assert (ds.num_train, ds.num_eval) == (40, 10) and ds.eval_name == "validation (20% of train)"
        # Before: train = full[train_rows], batch = train[train_batch_indices(...)].
        for step in range(6):
            batch = batching.get_train_batch(ds, step, batch_size, seed)
            rows = train_rows[batching.train_batch_indices(len(train_rows), batch_size, seed, step)]
            np.testing.assert_array_equal(batch["image"], ref_images[rows])
            np.testing.assert_array_equal(batch["label"], ref_labels[rows])
        batches = list(batching.eval_batches(ds, 4))
        _finish_read_ahead(ds)
    mask = np.concatenate([b["mask"] for b in batches]).astype(bool)
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches])[mask], ref_images[val_rows])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[mask], ref_labels[val_rows])


def test_pad_to_gives_centred_images_with_a_zero_border():
    import ml_collections

    from jdtp import batching, datasets

    cfg = ml_collections.ConfigDict(
        dict(
            name="synthetic",
            data_dir="",
            download=False,
            validation_split=0.0,
            synthetic_shape=(8, 8, 1),
            synthetic_num_classes=3,
            synthetic_train_size=6,
            synthetic_eval_size=4,
            pad_to=12,
        )
    )
    assert datasets.get_info("synthetic", cfg).shape == (12, 12, 1)
    padded = batching.load_dataset(cfg)
    cfg.pad_to = 0
    plain = batching.load_dataset(cfg)
    a = batching.get_train_batch(padded, 0, 2, 0)["image"]
    b = batching.get_train_batch(plain, 0, 2, 0)["image"]
    assert a.shape == (2, 12, 12, 1)
    np.testing.assert_array_equal(a[:, 2:10, 2:10], b)
    assert not a[:, :2].any() and not a[:, 10:].any()
    cfg.pad_to = 5
    with pytest.raises(ValueError, match="pad_to=5"):
        datasets.get_info("synthetic", cfg)
