"""Pretrained image-backbone weights in a local, self-describing folder (nothing downloaded).

A weights folder (written by :func:`save_encoder_weights`, e.g. by
``launchers/pretrain_encoder.py``) holds

* ``backbone.msgpack``: the backbone's params (``SmallCNN`` or ``ResNet10``, the tree under
  ``ImageEncoder``'s ``backbone``), ``flax.serialization`` msgpack of float32 arrays;
* ``encoder.json``: ``{"format": 1, "architecture": "small_cnn" | "resnet10", "widths": [...],
  "input_size": [H, W], "image_mean": [3 floats], "image_std": [3 floats], ...}``. The
  backbone was trained on ``(uint8 / 255 - image_mean) / image_std`` (per channel, RGB); the
  agent's :class:`~serl_ext.networks.encoders.ImageEncoder` applies the same normalisation
  when it loads the folder. Other keys (``objective``, ``task``, ``frames``, metrics) are
  informational.

A bare ``.msgpack`` / ``.npz`` params file (the format before this module,
:func:`serl_ext.networks.params.save_params`) still loads: no metadata, no normalisation
(``uint8 / 255`` only).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from serl_ext.files import atomic_write
from serl_ext.networks.params import check_params_match, flatten_params, load_params, save_params, to_numpy_tree

WEIGHTS_FORMAT = 1
META_FILE = "encoder.json"
PARAMS_FILE = "backbone.msgpack"
ARCHITECTURES = ("small_cnn", "resnet10")


@dataclasses.dataclass(frozen=True)
class EncoderWeightsMeta:
    """What ``encoder.json`` says about a backbone.

    Attributes:
      architecture: "small_cnn" or "resnet10".
      widths: channel widths (SmallCNN: one per conv, stride 2 each; ResNet10: 4 stages).
      input_size: ``(H, W)`` in pixels of the frames it was trained on.
      image_mean, image_std: per-channel (RGB) mean and std of ``uint8 / 255`` inputs, 3 floats
        each (std > 0); the backbone's input is ``(x / 255 - mean) / std``.
      info: the file's other keys (objective, task, metrics, ...).
    """

    architecture: str
    widths: Tuple[int, ...]
    input_size: Tuple[int, int]
    image_mean: Tuple[float, ...]
    image_std: Tuple[float, ...]
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)


def default_widths(architecture: str) -> Tuple[int, ...]:
    """The class-default widths: SmallCNN (32, 64, 128, 256), ResNet10 (64, 128, 256, 512).

    Raises ValueError for an unknown architecture.
    """
    from serl_ext.networks.encoders import ResNet10, SmallCNN

    if architecture == "small_cnn":
        return tuple(int(w) for w in SmallCNN.features)
    if architecture == "resnet10":
        return tuple(int(w) for w in ResNet10.widths)
    raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


def weights_folder(path: str) -> Optional[str]:
    """The weights folder ``path`` names (the folder or its ``encoder.json``), or None when
    ``path`` is a bare params file (``.msgpack`` / ``.npz``).

    Raises FileNotFoundError when ``path`` does not exist, or is a folder without
    ``encoder.json``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, META_FILE)):
            raise FileNotFoundError(
                f"{path!r} is a folder without {META_FILE}; point to a folder written by "
                "launchers/pretrain_encoder.py (weights are never downloaded)")
        return path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"encoder weights not found: {path!r} (weights are never downloaded)")
    if os.path.basename(path) == META_FILE:
        return os.path.dirname(path) or "."
    return None


def _floats(value: Any, what: str, path: str) -> Tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {what} must be a list of numbers, got {value!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{path}: {what} must be 3 finite numbers (RGB), got {value!r}")
    return out


def read_encoder_meta(path: str) -> Optional[EncoderWeightsMeta]:
    """Read ``encoder.json`` of a weights folder (cheap: the params are not read).

    Args:
      path: a weights folder, its ``encoder.json``, or a bare params file.
    Returns the metadata, or None for a bare params file (no metadata).
    Raises FileNotFoundError (missing path) or ValueError (unreadable JSON, another format
    version, unknown architecture, missing or malformed fields, std <= 0).
    """
    folder = weights_folder(path)
    if folder is None:
        return None
    meta_path = os.path.join(folder, META_FILE)
    try:
        with open(meta_path, "r", encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"could not read {meta_path}: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{meta_path}: expected a JSON object")
    if raw.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{meta_path}: format {raw.get('format')!r}, this code reads {WEIGHTS_FORMAT}")
    for key in ("architecture", "widths", "input_size", "image_mean", "image_std"):
        if key not in raw:
            raise ValueError(f"{meta_path}: missing field {key!r}")
    if raw["architecture"] not in ARCHITECTURES:
        raise ValueError(f"{meta_path}: architecture must be one of {ARCHITECTURES}, got {raw['architecture']!r}")
    try:
        widths = tuple(int(w) for w in raw["widths"])
        size = tuple(int(s) for s in raw["input_size"])
    except (TypeError, ValueError):
        raise ValueError(f"{meta_path}: widths and input_size must be lists of ints") from None
    if not widths or any(w < 1 for w in widths) or len(size) != 2 or any(s < 1 for s in size):
        raise ValueError(f"{meta_path}: bad widths {raw['widths']!r} or input_size {raw['input_size']!r}")
    std = _floats(raw["image_std"], "image_std", meta_path)
    if any(s <= 0 for s in std):
        raise ValueError(f"{meta_path}: image_std must be > 0, got {std}")
    info = {k: v for k, v in raw.items()
            if k not in ("format", "architecture", "widths", "input_size", "image_mean", "image_std")}
    return EncoderWeightsMeta(str(raw["architecture"]), widths, (size[0], size[1]),
                              _floats(raw["image_mean"], "image_mean", meta_path), std, info)


def _check_finite(params: Any, where: str) -> None:
    for name, leaf in flatten_params(params).items():
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise ValueError(f"{where}: backbone/{name} has NaN or inf values")


def backbone_shapes(architecture: str, widths: Sequence[int], input_size: Tuple[int, int]) -> Any:
    """Params tree of ``jax.ShapeDtypeStruct`` of a backbone (no compute; ``jax.eval_shape``)."""
    from serl_ext.networks.encoders import make_backbone

    net = make_backbone(architecture, tuple(int(w) for w in widths))
    x = jax.ShapeDtypeStruct((1, int(input_size[0]), int(input_size[1]), 3), jnp.float32)
    return jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros(x.shape, x.dtype)))["params"]


def save_encoder_weights(
    directory: str,
    params: Any,
    *,
    architecture: str,
    widths: Optional[Sequence[int]],
    input_size: Tuple[int, int],
    image_mean: Sequence[float],
    image_std: Sequence[float],
    info: Optional[Dict[str, Any]] = None,
) -> str:
    """Write a weights folder (module docstring): ``backbone.msgpack`` + ``encoder.json``.

    Args:
      directory: created if missing; existing files of the same names are replaced.
      params: the backbone's params tree (``SmallCNN`` / ``ResNet10``), float arrays.
      architecture: "small_cnn" or "resnet10".
      widths: the backbone's widths (None = the class default).
      input_size: ``(H, W)`` of the training frames, pixels.
      image_mean, image_std: 3 floats each, the per-channel normalisation of ``uint8 / 255``.
      info: extra JSON-serialisable keys for ``encoder.json`` (objective, metrics, ...).
    Returns ``directory``.
    Raises ValueError when ``params`` does not match ``architecture`` / ``widths`` (path and
    shapes named), has NaN / inf, or the normalisation is malformed.
    """
    widths = default_widths(architecture) if widths is None else tuple(int(w) for w in widths)
    params = to_numpy_tree(params)
    check_params_match(backbone_shapes(architecture, widths, input_size), params, name="backbone")
    _check_finite(params, directory)
    mean = _floats(image_mean, "image_mean", directory)
    std = _floats(image_std, "image_std", directory)
    if any(s <= 0 for s in std):
        raise ValueError(f"image_std must be > 0, got {std}")
    meta = dict(info or {})
    meta.update(format=WEIGHTS_FORMAT, architecture=architecture, widths=list(widths),
                input_size=[int(input_size[0]), int(input_size[1])], image_mean=list(mean), image_std=list(std))
    os.makedirs(directory, exist_ok=True)
    save_params(os.path.join(directory, PARAMS_FILE), params)
    atomic_write(os.path.join(directory, META_FILE), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return directory


def load_encoder_weights(
    path: str,
    *,
    architecture: Optional[str] = None,
    widths: Optional[Sequence[int]] = None,
    reference: Optional[Any] = None,
    input_size: Optional[Tuple[int, int]] = None,
) -> Tuple[Dict[str, Any], Optional[EncoderWeightsMeta]]:
    """Load backbone params from a weights folder (or a bare params file), checked.

    Args:
      path: weights folder, its ``encoder.json``, or a bare ``.msgpack`` / ``.npz`` file.
      architecture: expected architecture ("small_cnn" / "resnet10"); None = not checked.
      widths: expected widths (None = the class default when ``architecture`` is given).
      reference: the params tree the weights must match (paths, shapes, dtypes), e.g. the
        freshly initialised ``backbone`` of the agent's encoder.
      input_size: ``(H, W)`` the caller will feed; a different training size only warns
        (the backbone is convolutional, but its features may be off their training range).
    Returns ``(params, meta)``: nested dict of float32 ``np.ndarray`` and the metadata (None
    for a bare params file).
    Raises:
      FileNotFoundError: missing folder / file (nothing is downloaded).
      ValueError: unreadable file, architecture or widths other than expected, params that do
        not match the metadata or ``reference`` (the message names the path and both shapes,
        prefixed ``pretrained_encoder``), NaN / inf values.
    """
    meta = read_encoder_meta(path)
    if meta is None:
        params = load_params(path)
    else:
        folder = weights_folder(path)
        params_path = os.path.join(folder, PARAMS_FILE)
        if not os.path.isfile(params_path):
            raise FileNotFoundError(f"weights folder {folder!r} has {META_FILE} but no {PARAMS_FILE}")
        params = load_params(params_path)
        if architecture is not None and meta.architecture != architecture:
            raise ValueError(f"{folder}: the weights are a {meta.architecture} backbone, the encoder is {architecture} "
                             f"(set agent.encoder.type={meta.architecture})")
        if architecture is not None:
            want = default_widths(architecture) if widths is None else tuple(int(w) for w in widths)
            if want != meta.widths:
                raise ValueError(f"{folder}: the weights have widths {meta.widths}, the encoder asks {want} "
                                 f"(set agent.encoder.widths=\"{meta.widths}\")")
        check_params_match(backbone_shapes(meta.architecture, meta.widths, meta.input_size), params,
                           name="pretrained_encoder")
        if input_size is not None and tuple(int(s) for s in input_size) != meta.input_size:
            warnings.warn(f"{folder}: backbone trained on {meta.input_size} frames, used on {tuple(input_size)}",
                          stacklevel=2)
    if reference is not None:
        check_params_match(reference, params, name="pretrained_encoder")
    _check_finite(params, os.fspath(path))
    return params, meta
