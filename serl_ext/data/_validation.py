"""Shared input checks for the replay buffer and the episode files.

One rule set, used by both `replay_buffer` and `episodes`, so that what a
buffer accepts and what an episode file accepts never drift apart:

* float targets accept bool / int / float input, cast to the target dtype
  and must be finite after the cast (NaN, +-inf, and float64 values that
  overflow float32 are refused);
* integer targets (uint8 images, int8 action sources) accept integer input
  whose values fit the target range; float input is refused (a float image
  written into a uint8 key would be silently truncated);
* bool targets accept bool input, or integer input holding only 0 and 1.

Dtype kind errors raise `TypeError`, shape and value errors `ValueError`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

Spec = tuple[tuple[int, ...], np.dtype]


def normalize_spec(spec: Mapping[str, Any], what: str) -> dict[str, Spec]:
    """Turn `{name: (shape, dtype)}` into `{name: (tuple shape, np.dtype)}`.

    Args:
      spec: mapping name -> (shape, dtype); shape is a tuple/list of
        non-negative ints (`()` for scalars), dtype anything `np.dtype` takes.
        Only bool, integer and floating dtypes are allowed.
      what: used in error messages (e.g. "observation_spec").

    Raises:
      TypeError: spec is not a mapping, a name is not a non-empty str, or the
        dtype is not bool/int/float.
      ValueError: malformed (shape, dtype) pair or negative dimensions.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"{what} must be a dict name -> (shape, dtype), got {type(spec).__name__}")
    out: dict[str, Spec] = {}
    for name, entry in spec.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise TypeError(f"{what}: keys must be non-empty str without '/', got {name!r}")
        try:
            shape, dtype = entry
        except (TypeError, ValueError):
            raise ValueError(f"{what}[{name!r}] must be a (shape, dtype) pair, got {entry!r}") from None
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        try:
            shape = tuple(int(d) for d in shape)
        except TypeError:
            raise ValueError(f"{what}[{name!r}]: shape must be a tuple of ints, got {shape!r}") from None
        if any(d < 0 for d in shape):
            raise ValueError(f"{what}[{name!r}]: negative dimension in shape {shape}")
        dtype = np.dtype(dtype)
        if dtype.kind not in "biuf":
            raise TypeError(f"{what}[{name!r}]: dtype must be bool, integer or float, got {dtype}")
        out[name] = (shape, dtype)
    return out


def coerce_array(value: Any, shape: tuple[int, ...] | None, dtype: np.dtype, name: str) -> np.ndarray:
    """Return `value` as an array of `dtype` (and `shape`, unless None), or raise.

    See the module docstring for the casting rules. The result may share
    memory with `value` when no cast is needed; callers that keep it must
    copy (the buffer writes into its own arrays, which copies).

    Raises:
      TypeError: wrong dtype kind (e.g. float into uint8, str anywhere).
      ValueError: wrong shape, non-finite floats, integers out of range,
        bools not in {0, 1}.
    """
    dtype = np.dtype(dtype)
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array of dtype {dtype}, got dtype {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    if dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(dtype, copy=False)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{name}: contains NaN or inf (after cast to {dtype})")
        return out
    if dtype.kind in "iu":
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integer data for dtype {dtype}, got {arr.dtype}")
        if arr.size and arr.dtype != dtype:
            info = np.iinfo(dtype)
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise ValueError(f"{name}: values in [{lo}, {hi}] do not fit {dtype} [{info.min}, {info.max}]")
        return arr.astype(dtype, copy=False)
    # bool target
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind in "iu":
        if arr.size and not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{name}: integer input for a bool field must be 0 or 1")
        return arr.astype(bool)
    raise TypeError(f"{name}: expected bool (or 0/1 integers), got dtype {arr.dtype}")


def check_action_source(arr: np.ndarray, name: str = "action_source") -> None:
    """Raise ValueError unless every entry is 0 (policy), 1 (recovery) or 2 (human)."""
    if arr.size and not np.all((arr >= 0) & (arr <= 2)):
        raise ValueError(f"{name}: values must be 0 (policy), 1 (recovery) or 2 (human), got {np.unique(arr)}")
