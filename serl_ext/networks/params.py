"""Parameter trees: validation against a reference, local save/load, pretrained encoders.

Weights are only ever read from local files (``.msgpack`` via ``flax.serialization`` or
``.npz`` with ``/``-joined paths); nothing is downloaded.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

import flax.serialization
import jax
import numpy as np

_FORMATS = (".msgpack", ".npz")


def _path_str(path) -> str:
    parts = []
    for p in path:
        if isinstance(p, jax.tree_util.DictKey):
            parts.append(str(p.key))
        elif isinstance(p, jax.tree_util.SequenceKey):
            parts.append(str(p.idx))
        elif isinstance(p, jax.tree_util.GetAttrKey):
            parts.append(str(p.name))
        else:
            parts.append(str(p))
    return "/".join(parts)


def flatten_params(tree: Any) -> Dict[str, Any]:
    """``{"a/b/kernel": leaf}`` for a nested mapping of arrays (empty dicts vanish)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_str(path): leaf for path, leaf in leaves}


def to_numpy_tree(tree: Any) -> Any:
    """Nested plain ``dict`` of ``np.ndarray`` (device arrays fetched, FrozenDicts unfrozen)."""
    if isinstance(tree, Mapping):
        return {str(k): to_numpy_tree(v) for k, v in tree.items()}
    return np.asarray(jax.device_get(tree))


def check_params_match(reference: Any, params: Any, name: str = "params") -> None:
    """Raise ValueError unless ``params`` has exactly the paths, shapes and dtypes of
    ``reference``.

    The message names the offending path (e.g. ``params/actor/Dense_0/kernel``) and the
    expected vs. received shape/dtype, or lists missing / unexpected paths.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"{name}: expected a nested dict of arrays, got {type(params).__name__}")
    ref = flatten_params(reference)
    got = flatten_params(params)
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    if missing or extra:
        raise ValueError(
            f"{name}: tree structure mismatch; missing paths {[name + '/' + p for p in missing]}, "
            f"unexpected paths {[name + '/' + p for p in extra]}"
        )
    for path, r in ref.items():
        g = got[path]
        r_shape, g_shape = tuple(np.shape(r)), tuple(np.shape(g))
        if r_shape != g_shape:
            raise ValueError(f"{name}/{path}: expected shape {r_shape}, got {g_shape}")
        r_dtype = np.dtype(getattr(r, "dtype", np.asarray(r).dtype))
        g_dtype = np.dtype(getattr(g, "dtype", np.asarray(g).dtype))
        if r_dtype != g_dtype:
            raise ValueError(f"{name}/{path}: expected dtype {r_dtype}, got {g_dtype}")


def save_params(path: str, params: Any) -> None:
    """Write a nested dict of arrays to ``path`` (``.msgpack`` or ``.npz``).

    Raises ValueError for another extension.
    """
    ext = os.path.splitext(path)[1]
    tree = to_numpy_tree(params)
    if ext == ".msgpack":
        with open(path, "wb") as f:
            f.write(flax.serialization.msgpack_serialize(tree))
    elif ext == ".npz":
        flat = flatten_params(tree)
        with open(path, "wb") as f:
            np.savez(f, **flat)
    else:
        raise ValueError(f"unsupported parameter file extension {ext!r}; use one of {_FORMATS}")


def _unflatten(flat: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"inconsistent paths in parameter file at {key!r}")
        node[parts[-1]] = np.asarray(value)
    return out


def load_params(path: str) -> Dict[str, Any]:
    """Read a nested dict of ``np.ndarray`` written by :func:`save_params`.

    Raises FileNotFoundError if ``path`` does not exist, ValueError for an unsupported
    extension or an unreadable file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"parameter file not found: {path!r} (weights are never downloaded)")
    ext = os.path.splitext(path)[1]
    try:
        if ext == ".msgpack":
            with open(path, "rb") as f:
                tree = flax.serialization.msgpack_restore(f.read())
            return to_numpy_tree(tree)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return _unflatten({k: data[k] for k in data.files})
    except (OSError, ValueError, TypeError) as e:  # corrupted file
        raise ValueError(f"could not read parameter file {path!r}: {e}") from e
    raise ValueError(f"unsupported parameter file extension {ext!r}; use one of {_FORMATS}")


def load_pretrained_encoder(path: str, reference: Optional[Any] = None) -> Dict[str, Any]:
    """Load image-backbone weights (``SmallCNN`` / ``ResNet10`` params) from a local file.

    Args:
      path: ``.msgpack`` or ``.npz`` file written by :func:`save_params`, or a weights folder
        (or its ``encoder.json``) written by
        :func:`serl_ext.networks.pretrained.save_encoder_weights`; only the params are
        returned (the folder's normalisation: ``pretrained.read_encoder_meta``).
      reference: optional params tree to match; when given, every path, shape and dtype
        is checked with :func:`check_params_match`.

    Returns a nested dict of float ``np.ndarray``.
    Raises FileNotFoundError (missing file) or ValueError (bad format, mismatched shapes,
    NaN / inf values).
    """
    from serl_ext.networks.pretrained import load_encoder_weights

    return load_encoder_weights(path, reference=reference)[0]
