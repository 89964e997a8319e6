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


DEFAULT_MAX_ABS = 1e6
"""Bound on |value| of every float field of a transition when no tighter bound is given: far
above any physical observation, action or reward of the tasks here, far below the float32 range
(3.4e38), so a finite but absurd value (a glitching sensor, a bit flip) is refused before it
reaches the learner."""


def space_bound(low: Any, high: Any, shape: tuple[int, ...], margin: float = 0.1,
                unbounded: float = DEFAULT_MAX_ABS) -> np.ndarray:
    """Per-element bound on |value| for a Box space ``[low, high]``, with a margin.

    ``bound = m + margin * max(m, 1)`` with ``m = max(|low|, |high|)``; elements whose low or
    high is infinite (or above ``unbounded``) get ``unbounded``.

    Args:
      low, high: the space's bounds, broadcastable to ``shape``.
      shape: the field's shape.
      margin: relative margin (0.1: 10 %, and at least 0.1 absolute).
      unbounded: bound for elements without a finite space bound.
    Returns:
      float64 array of ``shape``, every entry finite and > 0.
    Raises:
      ValueError: margin < 0 or unbounded not finite and > 0.
    """
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    if not (np.isfinite(unbounded) and unbounded > 0):
        raise ValueError(f"unbounded must be finite and > 0, got {unbounded!r}")
    with np.errstate(invalid="ignore", over="ignore"):
        lo = np.broadcast_to(np.asarray(low, np.float64), shape)
        hi = np.broadcast_to(np.asarray(high, np.float64), shape)
        m = np.maximum(np.abs(lo), np.abs(hi))
        bound = m + margin * np.maximum(m, 1.0)
    return np.where(np.isfinite(bound) & (bound <= unbounded), bound, unbounded)


class OutOfBoundsError(ValueError):
    """A finite value outside its declared bound (see :func:`check_abs_bound`)."""


def check_abs_bound(arr: np.ndarray, bound: Any, name: str) -> None:
    """Raises OutOfBoundsError (a ValueError) if any ``|arr|`` exceeds ``bound`` (a scalar or an array broadcastable
    to ``arr``); integer and bool arrays are not checked (their dtype bounds them). The message
    names the field, the worst value and its bound."""
    arr = np.asarray(arr)
    if arr.dtype.kind != "f" or arr.size == 0:
        return
    excess = np.abs(arr) - np.asarray(bound)
    if np.any(excess > 0):
        i = np.unravel_index(int(np.argmax(excess)), excess.shape)
        b = np.broadcast_to(np.asarray(bound), excess.shape)[i]
        where = f" at index {tuple(int(j) for j in i)}" if arr.ndim else ""
        raise OutOfBoundsError(f"{name}: value {float(arr[i]):.4g}{where} exceeds the bound |x| <= {float(b):.4g} "
                         "(value bounds: a sensor fault or corrupted data?)")
