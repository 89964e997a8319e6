"""Stagnation labels mined from a proxy-value curve (DESIGN.md section 4, "Stagnation labels").

Default rule (``rule="design"``, the official offline code): the curve is min-max normalised
per episode, ``u_t = (V_t - min V) / (max V - min V)``; a curve with ``max V - min V <= 1e-8``
(constant) normalises to all zeros, which has ``|du| = 0`` everywhere and therefore yields
**plateau labels at every step t >= window - 1** (and no decline or abrupt labels). Then the
union of three rules:

* **decline** and **plateau** look at sliding windows of ``window`` (8) values. The window
  ending at step ``t`` is ``u[t-7 .. t]`` (8 values, 7 steps ``du``); when a rule holds for it,
  **step t (the window's last step) is labelled**, so a label only uses the past and the first
  ``window - 1`` steps are never labelled by these two rules (nor is any step of an episode
  shorter than the window).

  - decline: least-squares slope of ``u`` against the step index over the window
    ``<= -0.01`` per step, AND drop ``>= 0.05`` where the drop is ``first - last`` of the window
    (``decline_drop_mode="first_last"``, default) or ``max - last``
    (``"max_last"``), AND ``>= 70%`` of the window's steps going down (``du < 0``).
  - plateau: ``>= 60%`` of the window's steps with ``|du| <= 0.03`` AND amplitude
    ``max - min <= 0.12``.

* **abrupt drop**: a single step ``s`` with ``u_{s-1} - u_s = D >= 0.12`` (the trough is
  ``u_s``) that is not recovered: none of ``u_{s+1} .. u_{s+3}`` reaches ``u_s + D / 2``. Then
  steps ``s .. s+3`` (clipped to the episode) are labelled: the drop step and the recovery
  window that failed. A drop within the last 3 steps is judged on the steps that remain (a
  drop at the last step counts as unrecovered).

Alternative (``rule="guide"``, /work/shared/seeds/uniintervene_guide.txt "Step 3"):
windows ``V[t-k .. t]`` (k + 1 = 9 values, k = 8 deltas), labelled at ``t >= k`` when
``shortfall = sum_d max(0, eps - d) > 0.04`` and (plateau ``max - min < 0.03`` or decline
``#(d < 0) >= k // 2``); raw values by default (``guide_normalize=False``), as in the guide.
"""

from __future__ import annotations

from typing import Any, Optional

import ml_collections
import numpy as np

from uniintervene_jax.intervention.tvr import _check_values

RULES = ("design", "guide")
DROP_MODES = ("first_last", "max_last")


def get_mining_config() -> ml_collections.ConfigDict:
    """Default mining config (DESIGN section 4 thresholds)."""
    c = ml_collections.ConfigDict()
    # "design" (union of decline / plateau / abrupt, the default) or "guide" (simpler rule).
    c.rule = "design"
    # Min-max normalise the curve per episode before the design rules.
    c.normalize = True
    # Values per sliding window of the decline and plateau rules.
    c.window = 8
    # decline: slope (per step) at most this, drop at least this, fraction of falling steps.
    c.decline_slope = -0.01
    c.decline_drop = 0.05
    c.decline_down_fraction = 0.7
    # How the decline's drop is measured: "first_last" or "max_last".
    c.decline_drop_mode = "first_last"
    # plateau: |du| <= plateau_delta on at least plateau_fraction of the steps, and
    # max - min <= plateau_amplitude.
    c.plateau_delta = 0.03
    c.plateau_fraction = 0.6
    c.plateau_amplitude = 0.12
    # abrupt: single-step drop of at least abrupt_drop, not back to
    # trough + abrupt_recovery_fraction * drop within abrupt_recovery_steps steps.
    c.abrupt_drop = 0.12
    c.abrupt_recovery_steps = 3
    c.abrupt_recovery_fraction = 0.5
    # guide rule: window k (k + 1 values), eps, shortfall threshold, plateau amplitude
    # (strict <), and whether to min-max normalise first (the guide does not).
    c.guide_k = 8
    c.guide_eps = 0.005
    c.guide_shortfall = 0.04
    c.guide_plateau_amplitude = 0.03
    c.guide_normalize = False
    return c


def _resolve(config: Optional[Any]) -> ml_collections.ConfigDict:
    c = get_mining_config()
    if config is None:
        return c
    if not isinstance(config, (dict, ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        raise TypeError(f"config must be a dict or ConfigDict, got {type(config).__name__}")
    items = config.items()
    for k, v in items:
        if k not in c:
            raise ValueError(f"unknown mining config field {k!r}; known: {sorted(c.keys())}")
        c[k] = v
    if c.rule not in RULES:
        raise ValueError(f"mining rule must be one of {RULES}, got {c.rule!r}")
    return c


def _curve(values: Any) -> np.ndarray:
    """float64 ``(T,)`` copy of a value curve; TypeError/ValueError on bad input (tvr.py)."""
    return _check_values(values)


def normalize_curve(values: Any) -> np.ndarray:
    """Per-episode min-max normalisation to [0, 1], float64 ``(T,)``; a constant curve
    (range <= 1e-8) becomes all zeros. Raises ValueError for empty/non-1-D/NaN input."""
    v = _curve(values)
    lo, hi = v.min(), v.max()
    if hi - lo <= 1e-8:
        return np.zeros_like(v)
    return (v - lo) / (hi - lo)


def _prepare(values: Any, normalize: bool) -> np.ndarray:
    return normalize_curve(values) if normalize else _curve(values)


def _check_window(window: Any) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise ValueError(f"window must be an int >= 2, got {window!r}")
    return int(window)


def _windows(u: np.ndarray, window: int) -> np.ndarray:
    """(T - window + 1, window) sliding windows; row r ends at step r + window - 1."""
    return np.lib.stride_tricks.sliding_window_view(u, window)


def decline_labels(
    values: Any,
    window: int = 8,
    slope: float = -0.01,
    drop: float = 0.05,
    down_fraction: float = 0.7,
    drop_mode: str = "first_last",
    normalize: bool = True,
) -> np.ndarray:
    """Decline rule (module docstring): bool ``(T,)``, step t labelled when the window
    ``[t - window + 1, t]`` has LS slope ``<= slope``, drop ``>= drop`` and a fraction
    ``>= down_fraction`` of falling steps. Raises ValueError on bad input or ``drop_mode``."""
    if drop_mode not in DROP_MODES:
        raise ValueError(f"drop_mode must be one of {DROP_MODES}, got {drop_mode!r}")
    window = _check_window(window)
    u = _prepare(values, normalize)
    labels = np.zeros(u.shape[0], bool)
    if u.shape[0] < window:
        return labels
    w = _windows(u, window)
    x = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    slopes = (w - w.mean(axis=1, keepdims=True)) @ x / np.sum(x * x)
    drops = (w[:, 0] if drop_mode == "first_last" else w.max(axis=1)) - w[:, -1]
    down = np.mean(np.diff(w, axis=1) < 0, axis=1)
    labels[window - 1:] = (slopes <= slope) & (drops >= drop) & (down >= down_fraction)
    return labels


def plateau_labels(
    values: Any,
    window: int = 8,
    flat_delta: float = 0.03,
    flat_fraction: float = 0.6,
    amplitude: float = 0.12,
    normalize: bool = True,
) -> np.ndarray:
    """Plateau rule (module docstring): bool ``(T,)``, step t labelled when in the window
    ``[t - window + 1, t]`` a fraction ``>= flat_fraction`` of steps have ``|du| <= flat_delta``
    and ``max - min <= amplitude``. A constant curve is a plateau everywhere (t >= window-1)."""
    window = _check_window(window)
    u = _prepare(values, normalize)
    labels = np.zeros(u.shape[0], bool)
    if u.shape[0] < window:
        return labels
    w = _windows(u, window)
    flat = np.mean(np.abs(np.diff(w, axis=1)) <= flat_delta, axis=1)
    amp = w.max(axis=1) - w.min(axis=1)
    labels[window - 1:] = (flat >= flat_fraction) & (amp <= amplitude)
    return labels


def abrupt_labels(
    values: Any,
    drop: float = 0.12,
    recovery_steps: int = 3,
    recovery_fraction: float = 0.5,
    normalize: bool = True,
) -> np.ndarray:
    """Abrupt-drop rule (module docstring): bool ``(T,)``; for every unrecovered single-step
    drop at ``s`` the steps ``s .. s + recovery_steps`` are labelled."""
    if isinstance(recovery_steps, bool) or not isinstance(recovery_steps, (int, np.integer)) or recovery_steps < 1:
        raise ValueError(f"recovery_steps must be an int >= 1, got {recovery_steps!r}")
    u = _prepare(values, normalize)
    T = u.shape[0]
    labels = np.zeros(T, bool)
    for s in range(1, T):
        d = u[s - 1] - u[s]
        if d < drop:
            continue
        after = u[s + 1: s + 1 + recovery_steps]
        if np.any(after >= u[s] + recovery_fraction * d):
            continue
        labels[s: s + 1 + recovery_steps] = True
    return labels


def guide_trigger_labels(
    values: Any,
    k: int = 8,
    eps: float = 0.005,
    shortfall: float = 0.04,
    plateau_amplitude: float = 0.03,
    normalize: bool = False,
) -> np.ndarray:
    """The guide's ``mine_trigger_labels`` ("Step 3"): bool ``(T,)``, step ``t >= k`` labelled
    when the window ``V[t-k .. t]`` has ``sum max(0, eps - dV) > shortfall`` and either
    ``max - min < plateau_amplitude`` or at least ``k // 2`` falling steps."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    u = _prepare(values, normalize)
    labels = np.zeros(u.shape[0], bool)
    if u.shape[0] < k + 1:
        return labels
    w = np.lib.stride_tricks.sliding_window_view(u, k + 1)
    d = np.diff(w, axis=1)
    short = np.sum(np.maximum(0.0, eps - d), axis=1)
    plateau = (w.max(axis=1) - w.min(axis=1)) < plateau_amplitude
    decline = np.sum(d < 0, axis=1) >= k // 2
    labels[k:] = (short > shortfall) & (plateau | decline)
    return labels


def mine_stagnation(values: Any, config: Optional[Any] = None) -> np.ndarray:
    """Stagnation labels of one value curve, bool ``(T,)``.

    Args:
      values: proxy values ``V_0 .. V_{T-1}``, float ``(T,)``, finite.
      config: fields of :func:`get_mining_config` (dict or ConfigDict; missing fields take the
        defaults). ``rule="design"``: union of :func:`decline_labels`, :func:`plateau_labels`
        and :func:`abrupt_labels`; ``rule="guide"``: :func:`guide_trigger_labels`.

    Raises:
      ValueError: empty / non-1-D / NaN values, an unknown config field or rule.
      TypeError: non-numeric values or a config of another type.
    """
    c = _resolve(config)
    if c.rule == "guide":
        return guide_trigger_labels(values, int(c.guide_k), float(c.guide_eps), float(c.guide_shortfall),
                                    float(c.guide_plateau_amplitude), bool(c.guide_normalize))
    u = _prepare(values, bool(c.normalize))
    w = int(c.window)
    return (
        decline_labels(u, w, float(c.decline_slope), float(c.decline_drop), float(c.decline_down_fraction),
                       str(c.decline_drop_mode), normalize=False)
        | plateau_labels(u, w, float(c.plateau_delta), float(c.plateau_fraction), float(c.plateau_amplitude),
                         normalize=False)
        | abrupt_labels(u, float(c.abrupt_drop), int(c.abrupt_recovery_steps), float(c.abrupt_recovery_fraction),
                        normalize=False)
    )
