"""Self-describing model folders: reload a trained model without the training code.

A model folder holds ``model.json`` (``{"format_version", "kind", "config", "extra"}``) and
``params.msgpack`` (``flax.serialization.msgpack_serialize`` of a nested dict of arrays; no
pickle). Writes are atomic per file (temp file + ``os.replace``).
"""

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
from flax import serialization

from serl_ext.files import atomic_write

FORMAT_VERSION = 1


def save_model(directory: str, kind: str, config: Dict[str, Any], params: Any,
               extra: Optional[Dict[str, Any]] = None) -> str:
    """Writes ``{directory}/model.json`` and ``{directory}/params.msgpack``; returns directory.

    Args:
      kind: model kind, e.g. ``"proxy_value"``, ``"intervention_model"``, ``"recovery_policy"``.
      config: JSON-serialisable dict that rebuilds the network (sizes, dims, options).
      params: pytree of arrays (converted to numpy).
      extra: JSON-serialisable metadata (training stats, normalisers, ...).
    """
    os.makedirs(directory, exist_ok=True)
    params_np = jax.tree.map(np.asarray, params)
    atomic_write(os.path.join(directory, "params.msgpack"), serialization.msgpack_serialize(params_np))
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "config": config, "extra": extra or {}}
    atomic_write(os.path.join(directory, "model.json"), json.dumps(meta, indent=2, sort_keys=True).encode())
    return directory


def load_model(directory: str, kind: Optional[str] = None) -> Tuple[Dict[str, Any], Any, Dict[str, Any]]:
    """Reads a model folder; returns ``(config, params, extra)``.

    Raises:
      FileNotFoundError: folder or one of its files missing.
      ValueError: wrong format version, wrong ``kind``, or unreadable params.
    """
    meta_path = os.path.join(directory, "model.json")
    params_path = os.path.join(directory, "params.msgpack")
    for path in (meta_path, params_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"model file missing: {path}")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {meta.get('format_version')} != {FORMAT_VERSION}")
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{meta_path}: model kind {meta.get('kind')!r}, expected {kind!r}")
    with open(params_path, "rb") as f:
        try:
            params = serialization.msgpack_restore(f.read())
        except Exception as e:  # msgpack raises several types on corrupt input
            raise ValueError(f"{params_path}: unreadable params ({e})") from e
    return meta["config"], params, meta.get("extra", {})


# ------------------------------------------------------------------ shared by every model's load()
def obs_spec_to_json(spec: Sequence[Tuple[str, Sequence[int], Any]]) -> List[List[Any]]:
    """``((key, shape, dtype), ...)`` -> ``[[key, [dims], "dtype"], ...]`` for ``model.json``."""
    return [[str(k), [int(s) for s in shape], np.dtype(dtype).name] for k, shape, dtype in spec]


def obs_spec_from_json(spec: Sequence[Sequence[Any]]) -> Tuple[Tuple[str, Tuple[int, ...], str], ...]:
    """Inverse of :func:`obs_spec_to_json`. Raises ValueError for a malformed entry."""
    try:
        return tuple((str(k), tuple(int(s) for s in shape), np.dtype(dtype).name) for k, shape, dtype in spec)
    except (TypeError, ValueError) as e:
        raise ValueError(f"malformed obs_spec in model.json: {e}") from None


def example_from_spec(spec: Sequence[Tuple[str, Sequence[int], Any]]) -> Dict[str, np.ndarray]:
    """Zero observation ``{key: zeros(shape, dtype)}`` of a spec (to rebuild a network)."""
    return {k: np.zeros(tuple(shape), np.dtype(dtype)) for k, shape, dtype in spec}


def params_like(params: Any, reference: Any, name: str) -> Any:
    """Loaded ``params`` as jnp arrays laid out like ``reference`` (the freshly rebuilt
    network's params or their shapes).

    Raises:
      ValueError: paths, shapes or dtypes differ (the message names the path).
    """
    from serl_ext.agents.common import replace_in_params

    return replace_in_params(params, reference, name)
