"""Per-step labels for the proxy value function: NTTG progress, Monte-Carlo returns, success.

UniIntervene (DESIGN.md section 4, "Progress labels (NTTG)"): a successful episode of length
``T`` gets the progress label ``t / (T - 1)`` at step ``t`` (0 at the start, 1 at the last
step); every step of a failed episode gets 0.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def nttg_progress(length: int, success: bool) -> np.ndarray:
    """NTTG progress labels of one episode (DESIGN section 4).

    Args:
      length: number of labelled steps ``T >= 1`` (int).
      success: whether the episode succeeded.

    Returns:
      float32 ``(T,)``: ``t / (T - 1)`` for a successful episode (``[1.0]`` when ``T == 1``),
      all zeros for a failed one.

    Raises:
      TypeError: ``length`` not an int (bools rejected).
      ValueError: ``length < 1``.
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
        raise TypeError(f"length must be an int, got {type(length).__name__}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not success:
        return np.zeros((int(length),), np.float32)
    if length == 1:
        return np.ones((1,), np.float32)
    return (np.arange(length, dtype=np.float64) / (length - 1)).astype(np.float32)


def monte_carlo_returns(rewards: Any, terminals: Any, gamma: float) -> np.ndarray:
    """Discounted reward-to-go ``G_t = r_t + gamma * (1 - d_t) * G_{t+1}``, ``G_T = 0``.

    Computed backwards in float64. A terminal at step ``t`` cuts the sum there (nothing after
    it is added); an episode that ends without a terminal (truncation) simply has no reward
    after its last step, i.e. the return is not bootstrapped.

    Args:
      rewards: float ``(T,)``, finite.
      terminals: bool ``(T,)``.
      gamma: discount in ``[0, 1]``.

    Returns:
      float32 ``(T,)``.

    Raises:
      ValueError: empty or non-1-D arrays, mismatched lengths, NaN/inf rewards, gamma outside
        ``[0, 1]``.
    """
    r = np.asarray(rewards, np.float64)
    d = np.asarray(terminals)
    if r.ndim != 1 or r.shape[0] < 1:
        raise ValueError(f"rewards must have shape (T,) with T >= 1, got {r.shape}")
    if d.shape != r.shape:
        raise ValueError(f"terminals must have shape {r.shape}, got {d.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards contain NaN or inf")
    if not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    d = d.astype(bool)
    out = np.zeros_like(r)
    g = 0.0
    for t in range(r.shape[0] - 1, -1, -1):
        g = r[t] + float(gamma) * (0.0 if d[t] else 1.0) * g
        out[t] = g
    return out.astype(np.float32)


def episode_success(episode: Mapping[str, Any]) -> bool:
    """Whether an episode (``serl_ext.data.episodes`` dict) succeeded.

    Order of evidence: ``metadata["success"]`` when present and not None; else any true entry
    of a per-step ``success`` array; else a positive reward at a terminal step.

    Raises:
      TypeError: ``episode`` is not a mapping.
      ValueError: no ``rewards`` / ``terminals`` to fall back on.
    """
    if not isinstance(episode, Mapping):
        raise TypeError(f"episode must be a dict, got {type(episode).__name__}")
    meta = episode.get("metadata") or {}
    if meta.get("success") is not None:
        return bool(meta["success"])
    if "success" in episode:
        return bool(np.any(np.asarray(episode["success"])))
    if "rewards" not in episode or "terminals" not in episode:
        raise ValueError("episode has no metadata success, no 'success' array and no rewards/terminals")
    r = np.asarray(episode["rewards"], np.float64)
    d = np.asarray(episode["terminals"], bool)
    if r.shape != d.shape:
        raise ValueError(f"rewards {r.shape} and terminals {d.shape} differ in shape")
    return bool(np.any(d & (r > 0)))
