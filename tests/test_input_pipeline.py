"""Tests for jdtp.input_pipeline: loading, splits, step-indexed batches, eval padding, augmentation."""

import time

import chex
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jdtp import config_base
from jdtp import input_pipeline as ip

TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "imagenet32")


def _data_config(**overrides):
    data = config_base.get_base_config().data
    for k, v in overrides.items():
        data[k] = v
    return data


def _small_synthetic(**overrides):
    kw = dict(
        name="synthetic",
        synthetic_shape=(6, 5, 3),
        synthetic_num_classes=4,
        synthetic_train_size=40,
        synthetic_eval_size=24,
    )
    kw.update(overrides)
    return _data_config(**kw)


def _toy_dataset(num_train=10, num_eval=7, shape=(2, 2, 1)):
    rng = np.random.default_rng(0)
    info = ip.DatasetInfo("toy", None, "train", "test", shape, 10, (0.5,), (0.5,))
    return ip.Dataset(
        info,
        rng.integers(0, 256, (num_train, *shape), dtype=np.uint8),
        np.arange(num_train, dtype=np.int32) % 10,
        rng.integers(1, 256, (num_eval, *shape), dtype=np.uint8),
        np.arange(num_eval, dtype=np.int32) % 10,
    )


# --- loading ---------------------------------------------------------------------------------------


def test_synthetic_shapes_determinism_and_learnability():
    ds = ip.load_dataset(_small_synthetic())
    assert (ds.num_train, ds.num_eval) == (40, 24)
    chex.assert_shape(ds.train_images, (40, 6, 5, 3))
    chex.assert_shape(ds.eval_images, (24, 6, 5, 3))
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    assert ds.eval_labels.dtype == np.int32
    assert set(np.unique(ds.train_labels)) == {0, 1, 2, 3}
    assert ds.info.shape == (6, 5, 3) and ds.info.num_classes == 4 and len(ds.info.mean) == 3
    again = ip.load_dataset(_small_synthetic())
    np.testing.assert_array_equal(ds.train_images, again.train_images)
    np.testing.assert_array_equal(ds.eval_labels, again.eval_labels)
    assert not np.array_equal(ds.train_images[:24], ds.eval_images)
    # A nearest-class-mean classifier fit on train separates the eval set: labels are learnable.
    x_tr = ds.train_images.reshape(40, -1).astype(np.float32)
    means = np.stack([x_tr[ds.train_labels == c].mean(0) for c in range(4)])
    x_ev = ds.eval_images.reshape(24, -1).astype(np.float32)
    pred = np.argmin(((x_ev[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == ds.eval_labels).mean() > 0.9


def test_digits_sizes_and_values():
    from sklearn.datasets import load_digits

    x_tr, y_tr = ip.load_split("digits", "train")
    x_te, y_te = ip.load_split("digits", "test")
    chex.assert_shape(x_tr, (1437, 8, 8, 1))
    chex.assert_shape(x_te, (360, 8, 8, 1))
    assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int32 and y_te.dtype == np.int32
    assert y_tr.min() == 0 and y_tr.max() == 9 and set(np.unique(y_te)) <= set(range(10))
    assert x_tr.max() == 255 and x_tr.min() == 0
    # Pixel values are the original 0..16 scaled to [0, 1] (up to uint8 rounding).
    ref = load_digits()
    flat = np.concatenate([x_tr, x_te]).reshape(1797, 64).astype(np.float64) / 255.0
    ref_sorted = np.sort(ref.data.sum(1) / 16.0)
    np.testing.assert_allclose(np.sort(flat.sum(1)), ref_sorted, atol=64 * 0.5 / 255)
    np.testing.assert_array_equal(np.bincount(np.concatenate([y_tr, y_te])), np.bincount(ref.target))
    x_tr2, _ = ip.load_split("digits", "train")
    np.testing.assert_array_equal(x_tr, x_tr2)


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_tfds_datasets_load_under_mock_data(name):
    info = ip.get_info(name)
    with tfds.testing.mock_data(num_examples=5):
        for split in (info.train_split, info.test_split):
            images, labels = ip.load_split(name, split, data_dir="/nonexistent/tfds")
            chex.assert_shape(images, (5, *info.shape))
            chex.assert_shape(labels, (5,))
            assert images.dtype == np.uint8 and labels.dtype == np.int32
            assert 0 <= labels.min() and labels.max() < info.num_classes
            # Same examples, in order, as reading the data source one by one.
            source = tfds.data_source(info.tfds_name, split=split, download=False)
            for i in range(5):
                np.testing.assert_array_equal(images[i], source[i]["image"])
                assert labels[i] == source[i]["label"]
        ds = ip.load_dataset(_data_config(name=name, data_dir="/nonexistent/tfds"))
    assert (ds.num_train, ds.num_eval) == (5, 5)
    assert ds.eval_name == info.test_split


def test_registry_values():
    assert ip.get_info("imagenet32").tfds_name == "imagenet_resized/32x32"
    assert ip.get_info("imagenet32").test_split == "validation"
    assert ip.get_info("imagenet32").num_classes == 1000
    np.testing.assert_allclose(ip.get_info("cifar10").mean, [0.4914, 0.4824, 0.4467], atol=1e-4)
    np.testing.assert_allclose(ip.get_info("cifar10").std, [0.2471, 0.2435, 0.2616], atol=1e-4)
    assert ip.get_info("mnist").shape == (28, 28, 1) and ip.get_info("fashion_mnist").std == (0.5,)


def test_missing_dataset_raises_quickly(tmp_path, monkeypatch):
    # Safe on a networked machine: no download can start.
    monkeypatch.setattr(ip, "_network_available", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(ip.DatasetNotFoundError) as excinfo:
        ip.load_split("cifar10", "train", data_dir=str(tmp_path), download=True)
    assert time.perf_counter() - start < 10
    msg = str(excinfo.value)
    assert str(tmp_path) in msg and "download_and_prepare" in msg and "cifar10" in msg
    assert "tensorflow-cpu" in msg and "TFDS_DATA_DIR" in msg and "no HTTPS connection" in msg


def test_missing_dataset_real_network_check_is_fast(tmp_path, monkeypatch):
    # The real network probe runs (offline here); TensorFlow is reported missing so nothing downloads.
    monkeypatch.setattr(ip, "_tensorflow_available", lambda: False)
    start = time.perf_counter()
    with pytest.raises(ip.DatasetNotFoundError, match="tensorflow is not installed"):
        ip.load_split("cifar10", "train", data_dir=str(tmp_path), download=True)
    assert time.perf_counter() - start < 10


def test_missing_dataset_without_download(tmp_path):
    with pytest.raises(ip.DatasetNotFoundError, match="download is False"):
        ip.load_split("mnist", "test", data_dir=str(tmp_path), download=False)


def test_data_dir_resolution(monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", "/from/env")
    assert ip.resolve_data_dir("/from/config") == "/from/config"
    assert ip.resolve_data_dir("") == "/from/env"
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert ip.resolve_data_dir(None).endswith("tensorflow_datasets")


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="imagenet64.*mnist"):
        ip.load_split("imagenet64", "train")
    with pytest.raises(ValueError, match="config.data.name='nope'"):
        ip.load_dataset(_data_config(name="nope"))


# --- splits and batches ----------------------------------------------------------------------------


def test_validation_split_sizes():
    ds = ip.load_dataset(_small_synthetic(validation_split=0.25))
    assert (ds.num_train, ds.num_eval) == (30, 10)
    assert ds.eval_name.startswith("validation")
    train_idx, val_idx = ip.split_validation(50_000, 0.1)
    assert (len(train_idx), len(val_idx)) == (45_000, 5_000)
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(50_000))
    np.testing.assert_array_equal(ip.split_validation(50_000, 0.1)[1], val_idx)  # fixed seed
    full = ip.load_dataset(_small_synthetic())
    # The held-out examples are train examples, not test ones.
    np.testing.assert_array_equal(ds.eval_images, full.train_images[ip.split_validation(40, 0.25)[1]])
    with pytest.raises(ValueError, match="validation_split"):
        ip.load_dataset(_small_synthetic(validation_split=1.0))


def test_steps_per_epoch():
    assert ip.steps_per_epoch(50_000, 128) == 390
    with pytest.raises(ValueError):
        ip.steps_per_epoch(10, 16)


def test_train_batch_indices_deterministic_and_epoch_permutations():
    n, b, seed = 23, 5, 3
    spe = ip.steps_per_epoch(n, b)
    assert spe == 4
    np.testing.assert_array_equal(
        ip.train_batch_indices(n, b, seed, 6), ip.train_batch_indices(n, b, seed, 6)
    )
    epochs = []
    for epoch in range(3):
        idx = np.concatenate([ip.train_batch_indices(n, b, seed, epoch * spe + s) for s in range(spe)])
        assert len(idx) == spe * b and len(np.unique(idx)) == len(idx)  # no repeats within an epoch
        epochs.append(idx)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(
        ip.train_batch_indices(n, b, seed, 0), ip.train_batch_indices(n, b, seed + 1, 0)
    )
    # With no remainder, every example appears exactly once per epoch.
    idx = np.concatenate([ip.train_batch_indices(20, 5, seed, 4 + s) for s in range(4)])
    np.testing.assert_array_equal(np.sort(idx), np.arange(20))


def test_process_slices_concatenate_to_global_batch():
    ds = _toy_dataset(num_train=16)
    for step in (0, 5):
        full = ip.get_train_batch(ds, step, 8, seed=1)
        parts = [ip.get_train_batch(ds, step, 8, seed=1, process_index=p, process_count=2) for p in range(2)]
        chex.assert_shape(parts[0]["image"], (4, 2, 2, 1))
        assert parts[0]["label"].dtype == np.int32
        for key in ("image", "label"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])
        idx = ip.train_batch_indices(16, 8, 1, step)
        np.testing.assert_array_equal(full["image"], ds.train_images[idx])
    with pytest.raises(ValueError, match="divisible"):
        ip.get_train_batch(ds, 0, 8, seed=1, process_index=0, process_count=3)


def test_eval_batches_pad_and_mask():
    ds = _toy_dataset(num_eval=7)
    batches = list(ip.eval_batches(ds, 3))
    assert len(batches) == ip.num_eval_batches(7, 3) == 3
    for batch in batches:
        chex.assert_shape(batch["image"], (3, 2, 2, 1))
        assert batch["mask"].dtype == np.float32 and batch["label"].dtype == np.int32
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == ds.num_eval
    np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 1, 1, 0, 0])
    images = np.concatenate([b["image"] for b in batches])
    np.testing.assert_array_equal(images[:7], ds.eval_images)
    assert np.all(images[7:] == 0)  # eval images are >= 1, so this is the padding
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels[:7], ds.eval_labels)
    # Two processes: slices of each global batch, same total mask.
    per_proc = [list(ip.eval_batches(ds, 4, process_index=p, process_count=2)) for p in range(2)]
    assert sum(b["mask"].sum() for batches in per_proc for b in batches) == 7
    glob = list(ip.eval_batches(ds, 4))
    for i, g in enumerate(glob):
        np.testing.assert_array_equal(
            np.concatenate([per_proc[0][i]["mask"], per_proc[1][i]["mask"]]), g["mask"]
        )


# --- preprocessing ---------------------------------------------------------------------------------


def _np_flip_crop(x, flip, offsets, pad=4):
    out = []
    h, w = x.shape[1:3]
    for img, f, (r, c) in zip(x, flip, offsets, strict=True):
        img = img[:, ::-1] if f else img
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        out.append(padded[r : r + h, c : c + w])
    return np.stack(out)


def test_flip_and_crop_match_numpy():
    x = np.random.default_rng(0).integers(0, 256, (4, 6, 5, 2), dtype=np.uint8)
    centre = np.full((4, 2), 4, np.int32)
    flip = np.array([True, False, True, False])
    out = np.asarray(ip.flip_and_crop(x, flip, centre))
    np.testing.assert_array_equal(out[0], x[0, :, ::-1])
    np.testing.assert_array_equal(out[1], x[1])
    offsets = np.array([[0, 0], [8, 8], [3, 7], [8, 0]], np.int32)
    out = np.asarray(ip.flip_and_crop(x, flip, offsets))
    np.testing.assert_array_equal(out, _np_flip_crop(x, flip, offsets))
    # Edge padding, not zero padding: corner crops repeat the corner pixels (H=6, W=5, pad 4).
    assert np.all(out[1, 1:] == x[1, -1, -1]) and np.all(out[1, 0] == x[1, -2, -1])  # bottom right
    assert np.all(out[0, :5] == x[0, 0, -1]) and np.all(out[0, 5] == x[0, 1, -1])  # top left, flipped


def test_augment_preprocess_matches_numpy_reference():
    info = ip.get_info("cifar10")
    x = np.random.default_rng(1).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(32) % 10
    key = jax.random.key(7)
    preprocess = jax.jit(ip.make_preprocess(info, augment=True))
    out, lab = preprocess({"image": x, "label": labels}, key)
    chex.assert_shape(out, (32, 8, 8, 3))
    chex.assert_type([out, lab], [np.float32, np.int32])
    flip, offsets = (np.asarray(a) for a in ip.augment_params(key, 32))
    assert 0 < flip.sum() < 32 and offsets.min() >= 0 and offsets.max() <= 8 and len(np.unique(offsets)) > 4
    ref = _np_flip_crop(x, flip, offsets).astype(np.float32) / 255.0
    ref = (ref - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(lab, labels)
    out2, _ = preprocess({"image": x, "label": labels}, jax.random.key(8))
    assert not np.allclose(out, out2)


def test_eval_preprocess_normalises_and_is_deterministic():
    info = ip.get_info("cifar10")
    x = np.random.default_rng(2).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    batch = {"image": x, "label": np.array([1, 2, 3]), "mask": np.ones(3, np.float32)}
    preprocess = ip.make_eval_preprocess(info)
    a, la = preprocess(batch)
    b, _ = jax.jit(preprocess)(batch, jax.random.key(3))
    ref = (x.astype(np.float32) / 255.0 - np.array(info.mean, np.float32)) / np.array(info.std, np.float32)
    np.testing.assert_allclose(np.asarray(a), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    chex.assert_type([a, la], [np.float32, np.int32])
    # MNIST-style normalisation maps [0, 255] onto [-1, 1].
    m, _ = ip.make_eval_preprocess(ip.get_info("mnist"))(
        {"image": np.array([[[[0]], [[255]]]], np.uint8), "label": [0]}
    )
    np.testing.assert_allclose(np.asarray(m).ravel(), [-1.0, 1.0], atol=1e-6)
