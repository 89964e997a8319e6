"""Checks of a trained proxy value on held-out episodes (DESIGN.md section 4: "successful value
curves rise and failed ones stay low").
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from scipy.stats import rankdata

from uniintervene_jax.labels import episode_success
from uniintervene_jax.value.model import value_curves

MONOTONIC_TOLERANCE = 1e-3


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve, rank based (Mann-Whitney U / (n_pos n_neg)); ties get average
    ranks, so a tied positive/negative pair counts 1/2.

    Args:
      scores: float ``(N,)``, finite.
      labels: ``(N,)`` bool or 0/1.

    Raises:
      ValueError: shape mismatch, empty input, NaN scores, labels not 0/1, or only one class.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape or s.size == 0:
        raise ValueError(f"scores and labels must be non-empty (N,) arrays, got {s.shape}, {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be bool or 0/1")
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = rankdata(s)  # average ranks for ties, 1-based
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def value_report(
    model: Any,
    held_out_episodes: Sequence[Mapping[str, Any]],
    fraction: float = 0.5,
    out_dir: Optional[str] = None,
    task: Optional[str] = None,
) -> Dict[str, Any]:
    """Summary of the value curves of held-out episodes.

    Returns a dict:
      ``value_auroc``: AUROC of success vs failure from the value at ``fraction`` of each
        episode (curve index ``floor(fraction * T + 0.5)``); NaN if one class is missing.
      ``value_monotonic_fraction``: mean over successful episodes of the fraction of steps
        with ``V_{t+1} >= V_t - 1e-3`` (the tolerance ignores float jitter); NaN if none.
      ``final_value_success`` / ``final_value_failure``: mean ``V(o_T)``; NaN if none.
      ``num_success``, ``num_failure``; ``plot`` (path) when ``out_dir`` is given, where
      ``value_curves.png`` is drawn (successful green, failed red, x = t / T).

    Raises ValueError for no episodes or ``fraction`` outside [0, 1].
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    episodes = list(held_out_episodes)
    if not episodes:
        raise ValueError("value_report needs at least one episode")
    curves = value_curves(model, episodes, task=task)
    success = np.asarray([episode_success(ep) for ep in episodes], bool)
    at_frac = np.asarray([c[int(np.floor(float(fraction) * (len(c) - 1) + 0.5))] for c in curves])
    try:
        auc = auroc(at_frac, success)
    except ValueError:
        auc = float("nan")
    mono = [float(np.mean(np.diff(c) >= -MONOTONIC_TOLERANCE)) for c, s in zip(curves, success) if s]
    finals = np.asarray([c[-1] for c in curves])
    report: Dict[str, Any] = {
        "value_auroc": auc,
        "value_monotonic_fraction": float(np.mean(mono)) if mono else float("nan"),
        "final_value_success": float(finals[success].mean()) if success.any() else float("nan"),
        "final_value_failure": float(finals[~success].mean()) if (~success).any() else float("nan"),
        "num_success": int(success.sum()),
        "num_failure": int((~success).sum()),
    }
    if out_dir is not None:
        report["plot"] = _plot_curves(curves, success, out_dir)
    return report


def _plot_curves(curves: List[np.ndarray], success: np.ndarray, out_dir: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for c, s in zip(curves, success):
        x = np.arange(len(c)) / max(len(c) - 1, 1)
        ax.plot(x, c, color="tab:green" if s else "tab:red", alpha=0.6, lw=1)
    ax.set_xlabel("normalised time t / T")
    ax.set_ylabel("proxy value V")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"proxy value: {int(success.sum())} successful (green), {int((~success).sum())} failed (red)")
    path = os.path.join(out_dir, "value_curves.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
