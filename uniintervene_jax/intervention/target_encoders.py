"""Frozen target encoders: the latent of o_{t+1} that the future head predicts.

DESIGN section 4: the paper's future target is a frozen V-JEPA 2 encoder; here the target
encoder is pluggable. Every encoder follows :class:`TargetEncoder`:
``encode(observations, instr_ids) -> np.ndarray float32 (B, D)`` and ``dim`` (D).

* :class:`ProxyValueTargetEncoder` (default): the trained proxy value's own encoder, frozen
  (any object with ``.encode(obs, instr_ids) -> (B, D)``).
* :class:`RandomProjectionEncoder`: a fixed Gaussian random projection of the observation;
  needs no training (tests, a no-training baseline).
* :class:`HFVisionTargetEncoder`: a transformers vision model (V-JEPA 2, SigLIP vision
  tower, ...) loaded **only from a local folder**, run frozen on CPU under
  ``torch.no_grad``. Needs the ``vlm`` extra (``pip install -e .[vlm]``); torch and
  transformers are imported lazily.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class TargetEncoder(Protocol):
    """Frozen encoder of observations into the future head's target latent.

    ``dim``: int D (may be ``None`` for a wrapper until its first call).
    ``encode(observations, instr_ids)``: ``observations`` dict of batched arrays ``(B, ...)``
    (images uint8 ``(B, H, W, C)``), ``instr_ids`` int32 ``(B, L)``; returns float32
    ``(B, D)`` numpy, finite.
    """

    dim: Optional[int]

    def encode(self, observations: Mapping[str, Any], instr_ids: Any) -> np.ndarray:
        ...


def _batch_size_of(observations: Mapping[str, Any]) -> int:
    if not isinstance(observations, Mapping) or not observations:
        raise ValueError("observations must be a non-empty dict of batched arrays")
    sizes = {k: int(np.shape(v)[0]) if np.ndim(v) > 0 else -1 for k, v in observations.items()}
    if len(set(sizes.values())) != 1 or -1 in sizes.values():
        raise ValueError(f"observation arrays need one common batch size, got {sizes}")
    b = next(iter(sizes.values()))
    if b < 1:
        raise ValueError("observations batch is empty")
    return b


def _check_latents(z: Any, b: int, name: str) -> np.ndarray:
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[0] != b:
        raise ValueError(f"{name}: expected latents (B={b}, D), got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name}: latents contain NaN or inf")
    return z


class ProxyValueTargetEncoder:
    """Wraps a trained proxy value (or anything with ``.encode(obs, instr_ids) -> (B, D)``).

    The wrapped encoder is used as is (frozen: no gradients flow, outputs are converted to
    numpy). ``encode`` processes ``batch_size`` samples at a time.

    Args:
      proxy_value: object with a callable ``encode``.
      dim: D if known; otherwise taken from ``proxy_value.latent_dim`` / ``.dim`` when they
        exist, else set by the first ``encode`` call.
      batch_size: chunk size (>= 1).
    Raises: TypeError when ``proxy_value`` has no callable ``encode``; ValueError for bad
      inputs or non-finite / badly shaped outputs.
    """

    def __init__(self, proxy_value: Any, dim: Optional[int] = None, batch_size: int = 1024):
        if not callable(getattr(proxy_value, "encode", None)):
            raise TypeError(f"{type(proxy_value).__name__} has no callable .encode(obs, instr_ids)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.proxy_value = proxy_value
        self.batch_size = int(batch_size)
        if dim is None:
            for attr in ("latent_dim", "dim", "embed_dim"):
                val = getattr(proxy_value, attr, None)
                if isinstance(val, (int, np.integer)):
                    dim = int(val)
                    break
        self.dim = dim

    def encode(self, observations: Mapping[str, Any], instr_ids: Any) -> np.ndarray:
        """``(B, ...)`` observations, ``(B, L)`` ids -> float32 ``(B, D)``."""
        b = _batch_size_of(observations)
        instr_ids = np.asarray(instr_ids)
        if instr_ids.ndim != 2 or instr_ids.shape[0] != b:
            raise ValueError(f"instr_ids must be (B={b}, L), got shape {instr_ids.shape}")
        chunks = []
        for s in range(0, b, self.batch_size):
            obs = {k: np.asarray(v)[s:s + self.batch_size] for k, v in observations.items()}
            ids = instr_ids[s:s + self.batch_size]
            chunks.append(_check_latents(self.proxy_value.encode(obs, ids), ids.shape[0], "proxy_value.encode"))
        z = np.concatenate(chunks, axis=0)
        if self.dim is None:
            self.dim = int(z.shape[1])
        elif z.shape[1] != self.dim:
            raise ValueError(f"proxy_value.encode returned D={z.shape[1]}, expected {self.dim}")
        return z


class RandomProjectionEncoder:
    """Fixed random projection ``z = W^T x`` of the flattened observation.

    ``x`` concatenates, in sorted key order, each key of ``obs_spec`` flattened (uint8 images
    divided by 255). ``W`` is ``(F, dim)`` with entries ``N(0, 1/F)`` drawn from
    ``np.random.default_rng(seed)``; the instruction is ignored.

    With ``image_pool = N`` every image key (a ``(H, W, C)`` entry) is first average-pooled to
    ``(min(N, H), min(N, W), C)`` (blocks of ``H // N`` x ``W // N`` pixels, a remainder
    cropped at the bottom / right): two 128 px cameras pooled to 16 give F = 2 * 768 (+ the
    state) instead of 98,304, a 0.8 MB projection instead of 50 MB at D = 128, and a target that
    follows the scene layout rather than pixel noise.

    Args:
      obs_spec: mapping key -> per-sample shape (tuple), or an unbatched example observation
        (arrays); only these keys are used.
      dim: D >= 1. seed: int. image_pool: None / 0 (no pooling) or N >= 1.
    Raises: ValueError for an empty spec, ``dim < 1``, or observations whose keys / shapes
      do not match the spec.
    """

    def __init__(self, obs_spec: Mapping[str, Any], dim: int, seed: int = 0, image_pool: Optional[int] = None):
        if not isinstance(obs_spec, Mapping) or not obs_spec:
            raise ValueError("obs_spec must be a non-empty mapping key -> shape (or example array)")
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.shapes = {}
        for k in sorted(obs_spec):
            v = obs_spec[k]
            self.shapes[k] = tuple(int(s) for s in v) if isinstance(v, (tuple, list)) else tuple(np.shape(v))
        self.dim = int(dim)
        self.image_pool = int(image_pool or 0)
        self.pooled = {k: (min(self.image_pool, s[0]), min(self.image_pool, s[1]), s[2])
                       for k, s in self.shapes.items() if self.image_pool and len(s) == 3}
        feat = int(sum(int(np.prod(self.pooled.get(k, s))) for k, s in self.shapes.items()))
        rng = np.random.default_rng(seed)
        self.matrix = (rng.standard_normal((feat, self.dim)) / np.sqrt(feat)).astype(np.float32)

    def encode(self, observations: Mapping[str, Any], instr_ids: Any = None) -> np.ndarray:
        """``(B, ...)`` observations -> float32 ``(B, dim)``; ``instr_ids`` is ignored."""
        b = None
        parts = []
        for k, shape in self.shapes.items():
            if k not in observations:
                raise ValueError(f"observations have no key {k!r}; keys: {sorted(observations)}")
            arr = np.asarray(observations[k])
            if arr.shape[1:] != shape:
                raise ValueError(f"observations[{k!r}]: expected (B, *{shape}), got {arr.shape}")
            b = arr.shape[0] if b is None else b
            if arr.shape[0] != b:
                raise ValueError("observation arrays have different batch sizes")
            if k in self.pooled:
                (h, w, c), (ph, pw, _) = shape, self.pooled[k]
                bh, bw = h // ph, w // pw
                blocks = arr[:, :ph * bh, :pw * bw].reshape(b, ph, bh, pw, bw, c).astype(np.float32)
                x = blocks.mean(axis=(2, 4)).reshape(b, -1)
            else:
                x = arr.reshape(b, -1).astype(np.float32)
            if arr.dtype == np.uint8:
                x = x / 255.0
            parts.append(x)
        x = np.concatenate(parts, axis=1)
        if not np.all(np.isfinite(x)):
            raise ValueError("observations contain NaN or inf")
        return (x @ self.matrix).astype(np.float32)


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class HFVisionTargetEncoder:
    """A frozen transformers vision encoder read from a local folder (never the hub).

    Loads ``AutoModel.from_pretrained(local_path, local_files_only=True)`` on CPU, in eval
    mode, and runs it under ``torch.no_grad``. A full SigLIP / CLIP checkpoint uses its
    vision tower (``.vision_model``); a ``vjepa2`` model gets the single frame repeated
    ``frames`` times as a video (``pixel_values_videos``, (B, T, C, H, W)).

    Preprocessing: uint8 ``(B, H, W, C)`` -> float in [0, 1] -> bilinear resize to the
    model's ``image_size`` (``crop_size`` for V-JEPA 2) -> ``(x - mean) / std``, with mean
    and std from the folder's ``preprocessor_config.json`` when present, else 0.5 / 0.5
    (SigLIP) or the ImageNet values (V-JEPA 2).

    Pooling of ``last_hidden_state`` (B, N, hidden): ``"mean"`` over tokens, ``"cls"``
    first token, ``"pooler"`` the model's ``pooler_output``.

    Args:
      local_path: folder written by ``save_pretrained`` (config + weights).
      image_key: observation key of the camera. pooling: see above.
      batch_size: images per forward pass. frames: video length for V-JEPA 2 (default the
        model's ``tubelet_size``, i.e. one temporal token; the model's ``frames_per_clip``
        of 64 would cost 32x more on CPU for the same still frame).
    Raises:
      FileNotFoundError: ``local_path`` is not an existing folder (checked first, before any
        import; hub ids are never resolved).
      ImportError: torch or transformers missing (install the ``vlm`` extra).
      ValueError: unknown pooling; bad images at ``encode``.
    """

    POOLINGS = ("mean", "cls", "pooler")

    def __init__(self, local_path: str, image_key: str = "pixels", pooling: str = "mean",
                 batch_size: int = 32, frames: Optional[int] = None):
        if not isinstance(local_path, (str, os.PathLike)) or not os.path.isdir(local_path):
            raise FileNotFoundError(
                f"HFVisionTargetEncoder: {local_path!r} is not a local model folder "
                "(weights are only read from disk, never downloaded)")
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS}, got {pooling!r}")
        try:
            import torch  # noqa: F401
            import transformers
        except ImportError as e:
            raise ImportError("HFVisionTargetEncoder needs torch and transformers: pip install -e .[vlm]") from e
        self._torch = torch
        self.local_path = str(local_path)
        self.image_key = image_key
        self.pooling = pooling
        self.batch_size = int(batch_size)
        model = transformers.AutoModel.from_pretrained(self.local_path, local_files_only=True)
        cfg = model.config
        self.model_type = str(getattr(cfg, "model_type", ""))
        self.is_video = "vjepa" in self.model_type
        if not self.is_video and hasattr(model, "vision_model") and hasattr(cfg, "vision_config"):
            model = model.vision_model  # full SigLIP / CLIP: keep the vision tower
            cfg = cfg.vision_config
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model.to("cpu")
        self.dim = int(getattr(cfg, "hidden_size"))
        size = getattr(cfg, "crop_size", None) if self.is_video else None
        self.image_size = int(size or getattr(cfg, "image_size", 224))
        self.frames = int(frames or getattr(cfg, "tubelet_size", 0) or 2) if self.is_video else 1
        mean, std = (_IMAGENET_MEAN, _IMAGENET_STD) if self.is_video else ((0.5,) * 3, (0.5,) * 3)
        pre = os.path.join(self.local_path, "preprocessor_config.json")
        if os.path.exists(pre):
            with open(pre) as f:
                meta = json.load(f)
            mean = tuple(meta.get("image_mean", mean))
            std = tuple(meta.get("image_std", std))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def _forward(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                            align_corners=False)
        x = (x - self.mean) / self.std
        with torch.no_grad():
            if self.is_video:
                video = x[:, None].repeat(1, self.frames, 1, 1, 1)
                out = self.model(pixel_values_videos=video)
            else:
                out = self.model(pixel_values=x)
            if self.pooling == "pooler":
                pooled = getattr(out, "pooler_output", None)
                if pooled is None:
                    raise ValueError(f"{self.model_type} has no pooler_output; use pooling='mean'")
            elif self.pooling == "cls":
                pooled = out.last_hidden_state[:, 0]
            else:
                pooled = out.last_hidden_state.mean(dim=1)
        return pooled.float().cpu().numpy()

    def encode(self, observations: Mapping[str, Any], instr_ids: Any = None) -> np.ndarray:
        """uint8 ``observations[image_key]`` ``(B, H, W, C)`` -> float32 ``(B, hidden_size)``."""
        if self.image_key not in observations:
            raise ValueError(f"observations have no image key {self.image_key!r}; keys: {sorted(observations)}")
        images = np.asarray(observations[self.image_key])
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[0] < 1:
            raise ValueError(f"images must be uint8 (B>=1, H, W, C), got {images.dtype} {images.shape}")
        chunks = [self._forward(images[s:s + self.batch_size]) for s in range(0, images.shape[0], self.batch_size)]
        return _check_latents(np.concatenate(chunks, axis=0), images.shape[0], "HFVisionTargetEncoder")


__all__: Sequence[str] = ("TargetEncoder", "ProxyValueTargetEncoder", "RandomProjectionEncoder",
                          "HFVisionTargetEncoder")
