"""Tests for jdtp.augmentation: flip and crop against NumPy, train and eval preprocessing."""

import chex
import jax
import numpy as np

from jdtp import augmentation, datasets


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
    out = np.asarray(augmentation.flip_and_crop(x, flip, centre))
    np.testing.assert_array_equal(out[0], x[0, :, ::-1])
    np.testing.assert_array_equal(out[1], x[1])
    offsets = np.array([[0, 0], [8, 8], [3, 7], [8, 0]], np.int32)
    out = np.asarray(augmentation.flip_and_crop(x, flip, offsets))
    np.testing.assert_array_equal(out, _np_flip_crop(x, flip, offsets))
    # Edge padding, not zero padding: corner crops repeat the corner pixels (H=6, W=5, pad 4).
    assert np.all(out[1, 1:] == x[1, -1, -1]) and np.all(out[1, 0] == x[1, -2, -1])  # bottom right
    assert np.all(out[0, :5] == x[0, 0, -1]) and np.all(out[0, 5] == x[0, 1, -1])  # top left, flipped


def test_augment_preprocess_matches_numpy_reference():
    info = datasets.get_info("cifar10")
    x = np.random.default_rng(1).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(32) % 10
    key = jax.random.key(7)
    preprocess = jax.jit(augmentation.make_preprocess(info, augment=True))
    out, lab = preprocess({"image": x, "label": labels}, key)
    chex.assert_shape(out, (32, 8, 8, 3))
    chex.assert_type([out, lab], [np.float32, np.int32])
    flip, offsets = (np.asarray(a) for a in augmentation.augment_params(key, 32))
    assert 0 < flip.sum() < 32 and offsets.min() >= 0 and offsets.max() <= 8 and len(np.unique(offsets)) > 4
    ref = _np_flip_crop(x, flip, offsets).astype(np.float32) / 255.0
    ref = (ref - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(lab, labels)
    out2, _ = preprocess({"image": x, "label": labels}, jax.random.key(8))
    assert not np.allclose(out, out2)


def test_eval_preprocess_normalises_and_is_deterministic():
    info = datasets.get_info("cifar10")
    x = np.random.default_rng(2).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    batch = {"image": x, "label": np.array([1, 2, 3]), "mask": np.ones(3, np.float32)}
    preprocess = augmentation.make_eval_preprocess(info)
    a, la = preprocess(batch)
    b, _ = jax.jit(preprocess)(batch, jax.random.key(3))
    ref = (x.astype(np.float32) / 255.0 - np.array(info.mean, np.float32)) / np.array(info.std, np.float32)
    np.testing.assert_allclose(np.asarray(a), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    chex.assert_type([a, la], [np.float32, np.int32])
    # MNIST-style normalisation maps [0, 255] onto [-1, 1].
    m, _ = augmentation.make_eval_preprocess(datasets.get_info("mnist"))(
        {"image": np.array([[[[0]], [[255]]]], np.uint8), "label": [0]}
    )
    np.testing.assert_allclose(np.asarray(m).ravel(), [-1.0, 1.0], atol=1e-6)
