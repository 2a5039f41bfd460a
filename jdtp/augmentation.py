"""Augmentation and normalisation, in ``jax.numpy`` inside the jitted step (design §5).

The train augmentation is a random horizontal flip, then a random crop back to
``H × W`` from the image edge-padded by :data:`CROP_PADDING` pixels, drawn per
sample from the step's key (:func:`augment_params`, :func:`flip_and_crop`).
Images arrive as ``uint8`` and become ``float32`` in [0, 1], normalised with the
dataset's per-channel mean and std from :class:`~jdtp.datasets.DatasetInfo`
(:func:`make_preprocess`, :func:`make_eval_preprocess`). Running this on the
accelerator keeps the host's work per batch to reading and decoding.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jdtp.datasets import DatasetInfo

# Crop padding of the train augmentation (RandomCrop(size, padding=4, 'edge')).
CROP_PADDING = 4


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

    Order (design §5): random horizontal flip (p = 0.5), random crop back to
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
