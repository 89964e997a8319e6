"""Image augmentation: random shift ("random crop" with edge padding), DrQ / HiL-SERL.

HiL-SERL ``serl_launcher/utils/jax_utils.py`` / ``vision/data_augmentations.py``: pad
every image by ``pad`` pixels replicating the border, then crop an (H, W) window at a
per-sample random offset in ``[0, 2 * pad]``.
"""

from __future__ import annotations

from typing import Dict, Sequence

import jax
import jax.numpy as jnp


def random_crop(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Randomly shift each image by up to ``pad`` pixels (edge padding, then crop).

    Args:
      key: PRNG key (consumed).
      images: ``(..., H, W, C)`` with at least one leading (batch) dim, any dtype; every
        leading index gets its own offset.
      pad: static Python int >= 0; ``pad == 0`` returns ``images`` unchanged.

    Returns an array with the shape and dtype of ``images``. Jittable (``pad`` static).
    Raises ValueError for ``images.ndim < 4`` or ``pad < 0``.
    """
    pad = int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if images.ndim < 4:
        raise ValueError(f"random_crop expects (..., H, W, C) with a batch dim, got shape {images.shape}")
    if pad == 0:
        return images
    lead = images.shape[:-3]
    h, w, c = images.shape[-3:]
    flat = images.reshape((-1, h, w, c))
    n = flat.shape[0]
    offsets = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)
    padded = jnp.pad(flat, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")

    def crop_one(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    out = jax.vmap(crop_one)(padded, offsets)
    return out.reshape(lead + (h, w, c))


def augment_observations(
    key: jax.Array, observations: Dict[str, jax.Array], image_keys: Sequence[str], pad: int = 4
) -> Dict[str, jax.Array]:
    """Apply :func:`random_crop` to each of ``image_keys`` (independent keys per camera).

    Returns a new dict; non-image keys are passed through. Missing image keys raise
    ValueError.
    """
    out = dict(observations)
    keys = jax.random.split(key, max(len(image_keys), 1))
    for k, name in zip(keys, image_keys):
        if name not in observations:
            raise ValueError(f"observations have no image key {name!r}")
        out[name] = random_crop(k, observations[name], pad)
    return out
