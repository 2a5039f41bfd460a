"""Tests for jdtp.datasets: registry, in-memory and TFDS sources, random access, missing-data messages."""

import time

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import data_config, small_synthetic_data

from jdtp import batching, datasets

TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "imagenet32")


def _everything(subset):
    return subset.read(np.arange(len(subset)))


def test_synthetic_shapes_determinism_and_learnability():
    ds = batching.load_dataset(small_synthetic_data())
    assert (ds.num_train, ds.num_eval) == (40, 24)
    train_images, train_labels = _everything(ds.train)
    eval_images, eval_labels = _everything(ds.eval)
    chex.assert_shape(train_images, (40, 6, 5, 3))
    chex.assert_shape(eval_images, (24, 6, 5, 3))
    assert train_images.dtype == np.uint8 and train_labels.dtype == np.int32
    assert eval_labels.dtype == np.int32
    assert set(np.unique(train_labels)) == {0, 1, 2, 3}
    assert ds.info.shape == (6, 5, 3) and ds.info.num_classes == 4 and len(ds.info.mean) == 3
    again = batching.load_dataset(small_synthetic_data())
    np.testing.assert_array_equal(train_images, _everything(again.train)[0])
    np.testing.assert_array_equal(eval_labels, _everything(again.eval)[1])
    assert not np.array_equal(train_images[:24], eval_images)
    # A nearest-class-mean classifier fit on train separates the eval set: labels are learnable.
    x_tr = train_images.reshape(40, -1).astype(np.float32)
    means = np.stack([x_tr[train_labels == c].mean(0) for c in range(4)])
    x_ev = eval_images.reshape(24, -1).astype(np.float32)
    pred = np.argmin(((x_ev[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == eval_labels).mean() > 0.9


def test_digits_sizes_and_values():
    from sklearn.datasets import load_digits

    x_tr, y_tr = datasets.load_split("digits", "train")
    x_te, y_te = datasets.load_split("digits", "test")
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
    x_tr2, _ = datasets.load_split("digits", "train")
    np.testing.assert_array_equal(x_tr, x_tr2)


def test_experiments_single_batch_reads_the_same_rows_as_the_whole_split():
    from jdtp import experiments

    images, labels = datasets.load_split("digits", "train")
    x, y = experiments.single_batch("digits", "", 16, 5)
    pick = np.random.default_rng(5).permutation(len(labels))[:16]
    np.testing.assert_array_equal(np.asarray(x), (images[pick].astype(np.float32) / 255.0 - 0.5) / 0.5)
    np.testing.assert_array_equal(np.asarray(y), labels[pick])


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_tfds_datasets_load_under_mock_data(name):
    info = datasets.get_info(name)
    with tfds.testing.mock_data(num_examples=5):
        for split in (info.train_split, info.test_split):
            images, labels = datasets.load_split(name, split, data_dir="/nonexistent/tfds")
            chex.assert_shape(images, (5, *info.shape))
            chex.assert_shape(labels, (5,))
            assert images.dtype == np.uint8 and labels.dtype == np.int32
            assert 0 <= labels.min() and labels.max() < info.num_classes
            # Same examples, in order, as reading the data source one by one.
            source = tfds.data_source(info.tfds_name, split=split, download=False)
            for i in range(5):
                np.testing.assert_array_equal(images[i], source[i]["image"])
                assert labels[i] == source[i]["label"]
            # Random access in any order, with repeats, gives the same rows.
            opened = datasets.open_split(name, split, data_dir="/nonexistent/tfds")
            assert isinstance(opened, datasets.TfdsSource) and len(opened) == 5
            some_images, some_labels = opened.read([3, 0, 3])
            np.testing.assert_array_equal(some_images, images[[3, 0, 3]])
            np.testing.assert_array_equal(some_labels, labels[[3, 0, 3]])
            empty_images, empty_labels = opened.read([])
            chex.assert_shape([empty_images, empty_labels], [(0, *info.shape), (0,)])
        ds = batching.load_dataset(data_config(name=name, data_dir="/nonexistent/tfds"))
    assert (ds.num_train, ds.num_eval) == (5, 5)
    assert ds.eval_name == info.test_split


def test_tfds_source_checks_shapes_and_labels():
    info = datasets.get_info("mnist")
    good = {"image": np.zeros((28, 28), np.uint8), "label": 3}  # a squeezed grey image is fine
    images, labels = datasets.TfdsSource([good], info, "train").read([0])
    chex.assert_shape(images, (1, 28, 28, 1))
    assert labels.tolist() == [3]
    with pytest.raises(ValueError, match="shape"):
        datasets.TfdsSource([{"image": np.zeros((32, 32, 3), np.uint8), "label": 0}], info, "x").read([0])
    with pytest.raises(ValueError, match="labels outside"):
        datasets.TfdsSource([{**good, "label": 10}], info, "x").read([0])


def test_registry_values():
    assert datasets.get_info("imagenet32").tfds_name == "imagenet_resized/32x32"
    assert datasets.get_info("imagenet32").test_split == "validation"
    assert datasets.get_info("imagenet32").num_classes == 1000
    np.testing.assert_allclose(datasets.get_info("cifar10").mean, [0.4914, 0.4824, 0.4467], atol=1e-4)
    np.testing.assert_allclose(datasets.get_info("cifar10").std, [0.2471, 0.2435, 0.2616], atol=1e-4)
    assert datasets.get_info("mnist").shape == (28, 28, 1) and datasets.get_info("fashion_mnist").std == (
        0.5,
    )


def test_missing_dataset_raises_quickly(tmp_path, monkeypatch):
    # Safe on a networked machine: no download can start.
    monkeypatch.setattr(datasets, "_network_available", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(datasets.DatasetNotFoundError) as excinfo:
        datasets.load_split("cifar10", "train", data_dir=str(tmp_path), download=True)
    assert time.perf_counter() - start < 10
    msg = str(excinfo.value)
    assert str(tmp_path) in msg and "download_and_prepare" in msg and "cifar10" in msg
    assert "tensorflow-cpu" in msg and "TFDS_DATA_DIR" in msg and "no HTTPS connection" in msg


def test_missing_dataset_real_network_check_is_fast(tmp_path, monkeypatch):
    # The real network probe runs (offline here); TensorFlow is reported missing so nothing downloads.
    monkeypatch.setattr(datasets, "_tensorflow_available", lambda: False)
    start = time.perf_counter()
    with pytest.raises(datasets.DatasetNotFoundError, match="tensorflow is not installed"):
        datasets.open_split("cifar10", "train", data_dir=str(tmp_path), download=True)
    assert time.perf_counter() - start < 10


def test_missing_dataset_without_download(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="download is False"):
        datasets.load_split("mnist", "test", data_dir=str(tmp_path), download=False)
    with pytest.raises(datasets.DatasetNotFoundError, match="download is False"):
        batching.load_dataset(data_config(name="mnist", data_dir=str(tmp_path), download=False))


def test_data_dir_resolution(monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", "/from/env")
    assert datasets.resolve_data_dir("/from/config") == "/from/config"
    assert datasets.resolve_data_dir("") == "/from/env"
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert datasets.resolve_data_dir(None).endswith("tensorflow_datasets")


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="imagenet64.*mnist"):
        datasets.load_split("imagenet64", "train")
    with pytest.raises(ValueError, match="config.data.name='nope'"):
        batching.load_dataset(data_config(name="nope"))
