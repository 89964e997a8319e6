"""Observation encoders: state, SmallCNN and ResNet-10, with HiL-SERL's image head.

Per camera (image key): ``uint8 (B, H, W, 3) -> float32 / 255 [-> (x - mean) / std, a
pretrained backbone's normalisation] -> backbone (SmallCNN or ResNet10) [-> stop_gradient when
frozen] -> SpatialLearnedEmbeddings -> Dense(latent_dim) -> LayerNorm -> tanh``
(HiL-SERL ``serl_launcher/vision/resnet_v1.py`` + ``common/encoding.py``). Every camera
has its own parameters; the camera latents are concatenated, then the flattened
``"state"`` is appended when present.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ENCODER_TYPES = ("state", "small_cnn", "resnet10")
#: What :class:`ImageEncoder` / :class:`ObservationEncoder` compute (see ImageEncoder).
STAGES = ("full", "backbone", "head")


def _num_groups(channels: int, max_groups: int = 32) -> int:
    return math.gcd(channels, max_groups)


def images_to_float(images: jax.Array) -> jax.Array:
    """uint8 images -> float32 in [0, 1]; float images are passed through as float32."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


class SpatialLearnedEmbeddings(nn.Module):
    """HiL-SERL ``SpatialLearnedEmbeddings``: learned (H, W, C, F) kernel, sum over H, W.

    Input float32 ``(B, H, W, C)``; output ``(B, C * num_features)`` where
    ``out[b, c, f] = sum_{h,w} x[b, h, w, c] * kernel[h, w, c, f]``.
    """

    num_features: int = 8

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        if features.ndim != 4:
            raise ValueError(f"expected features (B, H, W, C), got shape {features.shape}")
        _, h, w, c = features.shape
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (h, w, c, self.num_features), jnp.float32
        )
        out = jnp.einsum("bhwc,hwcf->bcf", features, kernel)
        return out.reshape(features.shape[0], c * self.num_features)


class SmallCNN(nn.Module):
    """Small convolutional backbone trained from scratch.

    Conv 3x3 ``features[i]`` channels, stride ``strides[i]``, SAME padding, ReLU.
    Input float32 ``(B, H, W, C)`` in [0, 1]; output feature map ``(B, H', W', features[-1])``.
    """

    features: Sequence[int] = (32, 64, 128, 256)
    strides: Sequence[int] = (2, 2, 2, 2)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if len(self.features) != len(self.strides):
            raise ValueError("SmallCNN.features and .strides must have the same length")
        for feat, stride in zip(self.features, self.strides):
            x = nn.Conv(int(feat), (3, 3), strides=(int(stride), int(stride)), padding="SAME")(x)
            x = nn.relu(x)
        return x


class ResidualBlock(nn.Module):
    """Basic ResNet block (two 3x3 convs) with GroupNorm; projection shortcut when needed."""

    filters: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = nn.Conv(self.filters, (3, 3), (self.stride, self.stride), padding="SAME", use_bias=False)(x)
        y = nn.GroupNorm(num_groups=_num_groups(self.filters))(y)
        y = nn.relu(y)
        y = nn.Conv(self.filters, (3, 3), padding="SAME", use_bias=False)(y)
        y = nn.GroupNorm(num_groups=_num_groups(self.filters))(y)
        if residual.shape != y.shape:
            residual = nn.Conv(
                self.filters, (1, 1), (self.stride, self.stride), use_bias=False, name="proj"
            )(residual)
            residual = nn.GroupNorm(num_groups=_num_groups(self.filters), name="proj_norm")(
                residual
            )
        return nn.relu(residual + y)


class ResNet10(nn.Module):
    """ResNet-10: 7x7/2 conv stem + GroupNorm + ReLU + 3x3/2 max-pool, then 4 stages of one
    basic block each (widths ``widths``, strides 1, 2, 2, 2). No BatchNorm (GroupNorm),
    so it trains from scratch without batch statistics.

    Input float32 ``(B, H, W, C)`` in [0, 1]; output ``(B, H/32, W/32, widths[-1])``
    (ceil division, SAME padding).
    """

    widths: Sequence[int] = (64, 128, 256, 512)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if len(self.widths) != 4:
            raise ValueError(f"ResNet10 needs 4 stage widths, got {tuple(self.widths)}")
        x = nn.Conv(int(self.widths[0]), (7, 7), (2, 2), padding="SAME", use_bias=False, name="stem")(x)
        x = nn.GroupNorm(num_groups=_num_groups(int(self.widths[0])), name="stem_norm")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, width in enumerate(self.widths):
            x = ResidualBlock(int(width), stride=1 if i == 0 else 2, name=f"stage{i}")(x)
        return x


def make_backbone(encoder_type: str, widths: Optional[Sequence[int]] = None, **kwargs) -> nn.Module:
    """Backbone module for ``encoder_type`` in {"small_cnn", "resnet10"}.

    ``widths`` overrides the channel widths (None = the class default); ``kwargs`` (e.g.
    ``name``) go to the module. Raises ValueError for any other type.
    """
    if encoder_type == "small_cnn":
        if widths is None:
            return SmallCNN(**kwargs)
        return SmallCNN(features=tuple(widths), strides=(2,) * len(widths), **kwargs)
    if encoder_type == "resnet10":
        return ResNet10(**kwargs) if widths is None else ResNet10(widths=tuple(widths), **kwargs)
    raise ValueError(f"no image backbone for encoder type {encoder_type!r}; use small_cnn or resnet10")


def normalize_images(x: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """``(x - mean) / std`` per channel (last axis) of float32 images in [0, 1].

    ``mean`` and ``std`` have one float per channel (std > 0). Raises ValueError when their
    length is not the channel count ``x.shape[-1]``.
    """
    mean = tuple(float(m) for m in mean)
    std = tuple(float(s) for s in std)
    if len(mean) != x.shape[-1] or len(std) != x.shape[-1]:
        raise ValueError(f"image_mean / image_std need {x.shape[-1]} values, got {mean} / {std}")
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


class ImageEncoder(nn.Module):
    """One camera: backbone -> SpatialLearnedEmbeddings -> Dense -> LayerNorm -> tanh.

    Input ``(B, H, W, C)`` uint8 (or float in [0, 1]); output float32 ``(B, latent_dim)``.
    Parameters live under ``backbone``, ``spatial``, ``proj``, ``proj_norm``.

    ``stage`` (one of :data:`STAGES`; the parameter tree is the same for all three, so one
    set of params applies to each): ``"full"`` (default) the whole chain; ``"backbone"`` only
    normalisation + backbone, output float32 ``(B, H', W', C')``; ``"head"`` the rest, its
    input being that backbone output. ``head(backbone(x)) == full(x)``: a learner whose
    backbone is frozen computes the backbone once per image and the head for each use
    (``SACAgent`` with ``encoder.freeze``).

    ``image_mean`` / ``image_std`` (None, or one float per channel): normalise the [0, 1]
    input to ``(x - mean) / std`` before the backbone, the normalisation a pretrained backbone
    was trained with (``serl_ext.networks.pretrained``). ``freeze_backbone``: no gradient
    reaches the backbone's params (``jax.lax.stop_gradient`` on its output); the spatial
    embedding, Dense and LayerNorm still train. Defaults: neither (the parameter tree is the
    same either way).
    """

    encoder_type: str = "small_cnn"
    latent_dim: int = 256
    num_spatial_features: int = 8
    widths: Optional[Sequence[int]] = None
    image_mean: Optional[Sequence[float]] = None
    image_std: Optional[Sequence[float]] = None
    freeze_backbone: bool = False
    stage: str = "full"

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        if self.stage not in STAGES:
            raise ValueError(f"encoder stage must be one of {STAGES}, got {self.stage!r}")
        if images.ndim != 4:
            raise ValueError(f"expected images (B, H, W, C), got shape {images.shape}")
        if (self.image_mean is None) != (self.image_std is None):
            raise ValueError("give both image_mean and image_std, or neither")
        if self.stage == "head":
            x = jnp.asarray(images, jnp.float32)  # the backbone's output, computed by stage "backbone"
        else:
            x = images_to_float(images)
            if self.image_mean is not None:
                x = normalize_images(x, self.image_mean, self.image_std)
            x = make_backbone(self.encoder_type, self.widths, name="backbone")(x)
            if self.freeze_backbone:
                x = jax.lax.stop_gradient(x)
            if self.stage == "backbone":
                return x
        x = SpatialLearnedEmbeddings(self.num_spatial_features, name="spatial")(x)
        x = nn.Dense(self.latent_dim, name="proj")(x)
        x = nn.LayerNorm(name="proj_norm")(x)
        return jnp.tanh(x)


def flatten_state(observations: Dict[str, jax.Array], batch_ndim: int = 1) -> jax.Array:
    """``observations["state"]`` with everything after the batch dims flattened, float32."""
    state = jnp.asarray(observations["state"], jnp.float32)
    return state.reshape(state.shape[:batch_ndim] + (-1,))


class ObservationEncoder(nn.Module):
    """Encodes an observation dict into one float32 feature vector per sample.

    Attributes:
      encoder_type: "state" (no parameters: flattened ``"state"`` only), "small_cnn" or
        "resnet10" (one :class:`ImageEncoder` per image key, named ``image_<key>``).
      image_keys: camera keys to encode (must be empty for "state", non-empty otherwise).
      latent_dim: per-camera latent width.
      num_spatial_features: F of :class:`SpatialLearnedEmbeddings`.
      widths: optional backbone widths.
      use_state: append the flattened ``"state"`` (when the key is present).
      image_mean, image_std, freeze_backbone: per-camera normalisation and frozen backbone,
        see :class:`ImageEncoder` (defaults: none, trained).

      stage: "full" (default), "backbone" or "head", see :class:`ImageEncoder`; "backbone"
        returns ``{image key: float32 (B, H', W', C')}`` (the state is not read), "head" reads
        those feature maps in place of the images.

    Input: dict with batched arrays, ``"state"`` ``(B, D...)`` and images ``(B, H, W, C)``
    uint8; keys not used are ignored. Output float32 ``(B, F)`` with
    ``F = len(image_keys) * latent_dim + D``. Raises ValueError on a missing key or an
    unknown stage.
    """

    encoder_type: str = "state"
    image_keys: Sequence[str] = ()
    latent_dim: int = 256
    num_spatial_features: int = 8
    widths: Optional[Sequence[int]] = None
    use_state: bool = True
    image_mean: Optional[Sequence[float]] = None
    image_std: Optional[Sequence[float]] = None
    freeze_backbone: bool = False
    stage: str = "full"

    @nn.compact
    def __call__(self, observations: Dict[str, jax.Array]):
        if self.encoder_type not in ENCODER_TYPES:
            raise ValueError(f"encoder type must be one of {ENCODER_TYPES}, got {self.encoder_type!r}")
        if self.encoder_type == "state" and len(self.image_keys) > 0:
            raise ValueError("encoder type 'state' takes no image_keys; use small_cnn or resnet10")
        if self.encoder_type != "state" and len(self.image_keys) == 0:
            raise ValueError(f"encoder type {self.encoder_type!r} needs at least one image key")
        parts = []
        for key in self.image_keys:
            if key not in observations:
                raise ValueError(f"observation has no image key {key!r}; keys: {sorted(observations)}")
            parts.append(
                ImageEncoder(
                    self.encoder_type,
                    self.latent_dim,
                    self.num_spatial_features,
                    self.widths,
                    image_mean=self.image_mean,
                    image_std=self.image_std,
                    freeze_backbone=self.freeze_backbone,
                    stage=self.stage,
                    name=f"image_{key}",
                )(observations[key])
            )
        if self.stage == "backbone":
            return dict(zip(self.image_keys, parts))
        if self.use_state and "state" in observations:
            parts.append(flatten_state(observations))
        if not parts:
            raise ValueError("observation has neither a 'state' key nor any configured image key")
        return jnp.concatenate(parts, axis=-1)
