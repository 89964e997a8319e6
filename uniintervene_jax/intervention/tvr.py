"""Temporal value-risk (TVR) targets and value-history features (DESIGN.md section 4).

``R_t = (1 - V_t) * sum_{i=0..K-1} gamma_r^i * (eps - (V_{t-i} - V_{t-i-1}))``,
K = 8, eps = 0.005, gamma_r = 0.9.

* Default (``clip_negative=False``): the official code's **signed** form. Progress
  (``dV > eps``) lowers the risk and the target can be negative.
* ``clip_negative=True``: the guide's form ``sum_i gamma_r^i * max(0, eps - dV_{t-i})``
  (/work/shared/seeds/uniintervene_guide.txt, section 3). The guide writes the ``max`` inside
  the sum, so it is applied to **each term** (each step's shortfall), not to the whole sum:
  progress at one step does not cancel a stall at another, and ``R_t >= 0``.

Padding: the value before the episode start is the first value, ``V_j = V_0`` for ``j < 0``,
so every step before the start has ``dV = 0`` (it contributes ``eps * gamma_r^i``, a stall of
rate eps, in both forms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_RANGE_TOL = 1e-5


def _check_values(values: Any, name: str = "values", unit_range: bool = False) -> np.ndarray:
    v = np.asarray(values)
    if v.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {v.dtype}")
    v = v.astype(np.float64)
    if v.ndim != 1 or v.shape[0] < 1:
        raise ValueError(f"{name} must have shape (T,) with T >= 1, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contain NaN or inf")
    if unit_range and (v.min() < -_RANGE_TOL or v.max() > 1.0 + _RANGE_TOL):
        raise ValueError(f"{name} must lie in [0, 1] (proxy values), got range [{v.min()}, {v.max()}]")
    return np.clip(v, 0.0, 1.0) if unit_range else v


def _check_k(K: Any) -> int:
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"K must be an int >= 1, got {K!r}")
    return int(K)


def value_history(values: Any, K: int = 8) -> np.ndarray:
    """Windows ``[V_{t-K}, ..., V_t]`` for every step.

    Args:
      values: float ``(T,)`` value curve, finite.
      K: history length (>= 1).

    Returns:
      float32 ``(T, K+1)``; row ``t`` column ``j`` is ``V_{t-K+j}``, with ``V_j = V_0`` for
      ``j < 0`` (padding with the first value). The last column is ``V_t``.

    Raises ValueError for bad shapes, NaN/inf or ``K < 1``.
    """
    return _history64(_check_values(values), _check_k(K)).astype(np.float32)


def _history64(v: np.ndarray, K: int) -> np.ndarray:
    padded = np.concatenate([np.full(K, v[0]), v])
    idx = np.arange(v.shape[0])[:, None] + np.arange(K + 1)[None, :]
    return padded[idx]


def value_deltas(values: Any, K: int = 8) -> np.ndarray:
    """Step changes within each history window: float32 ``(T, K)``, row ``t`` =
    ``[V_{t-K+1} - V_{t-K}, ..., V_t - V_{t-1}]`` (``np.diff`` of :func:`value_history`;
    zeros where the window reaches before the start). Together with :func:`value_history`
    this is the input ``[V_{t-K..t}, dV]`` of the intervention model's value-history encoder.
    """
    return np.diff(_history64(_check_values(values), _check_k(K)), axis=1).astype(np.float32)


def tvr_targets(
    values: Any,
    K: int = 8,
    eps: float = 0.005,
    gamma_r: float = 0.9,
    clip_negative: bool = False,
) -> np.ndarray:
    """Temporal value-risk target ``R_t`` for every step of a value curve (module docstring).

    Args:
      values: proxy values ``V_0 .. V_{T-1}``, float ``(T,)`` in [0, 1] (values up to 1e-5
        outside are clipped).
      K: window length (8).
      eps: minimum expected progress per step (0.005).
      gamma_r: discount over the window (0.9), in [0, 1].
      clip_negative: False = official signed form; True = the guide's per-term
        ``max(0, eps - dV)``.

    Returns:
      float32 ``(T,)``.

    Raises:
      ValueError: shape, NaN/inf, values outside [0, 1], ``K < 1``, ``gamma_r`` outside [0, 1].
    """
    v = _check_values(values, unit_range=True)
    K = _check_k(K)
    if not 0.0 <= float(gamma_r) <= 1.0:
        raise ValueError(f"gamma_r must be in [0, 1], got {gamma_r}")
    if not np.isfinite(float(eps)):
        raise ValueError(f"eps must be finite, got {eps}")
    d = np.diff(_history64(v, K), axis=1)  # (T, K); column K-1-i is dV_{t-i}
    terms = float(eps) - d[:, ::-1]  # column i: eps - dV_{t-i}
    if clip_negative:
        terms = np.maximum(terms, 0.0)
    discounts = float(gamma_r) ** np.arange(K)
    return ((1.0 - v) * (terms @ discounts)).astype(np.float32)
