"""Every per-step label UniIntervene learns from, and the one function that labels episodes.

The offline pipeline (``uniintervene_jax/pipeline.py``, stage ``labels``) and the online trainer
(``uniintervene_jax/online.py``) both call :func:`label_episodes` with the same config schema
(:func:`get_labels_config`: ``config.labels`` of the pipeline, ``config.uniintervene.labels``
online). DESIGN.md section 4.

* proxy-value labels: :func:`nttg_progress`, :func:`monte_carlo_returns`, :func:`episode_success`
  (and :func:`episode_succeeded`, the memory's and the recovery pairs' rule);
* value curves: :func:`check_value_curve`, :func:`normalize_curve` (stagnation mining only;
  the recovery memory mines, stores and retrieves on the raw proxy value, as the official
  code), :func:`value_history`, :func:`value_deltas`;
* stagnation labels: :func:`decline_labels`, :func:`plateau_labels`, :func:`abrupt_labels`,
  :func:`guide_trigger_labels` and their union :func:`mine_stagnation` (thresholds:
  :func:`get_mining_config`);
* temporal value-risk targets: :func:`tvr_targets`;
* takeover labels (online extension, not in the paper): :func:`takeover_labels`.

**Progress labels (NTTG).** A successful episode of length ``T`` gets the progress label
``t / (T - 1)`` at step ``t`` (0 at the start, 1 at the last step); every step of a failed
episode gets 0.

**Temporal value-risk (TVR).**
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
rate eps, in both forms). The value history ``[V_{t-K}, ..., V_t]`` of the intervention model
uses the same padding, and the same K (``intervention.history_len``).

**Stagnation labels.** Default rule (``rule="design"``, the official offline code): the curve
is min-max normalised per episode, ``u_t = (V_t - min V) / (max V - min V)``; a curve with
``max V - min V <= 1e-8`` (constant) normalises to all zeros, which has ``|du| = 0`` everywhere
and therefore yields **plateau labels at every step t >= window - 1** (and no decline or abrupt
labels). Then the union of three rules:

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

from typing import Any, List, Mapping, Optional, Sequence, Tuple

import ml_collections
import numpy as np

RULES = ("design", "guide")
DROP_MODES = ("first_last", "max_last")

# Tolerance when checking that value curves lie in [0, 1].
VALUE_TOL = 1e-5


# ------------------------------------------------------------------ config
def get_labels_config() -> ml_collections.ConfigDict:
    """The labelling config of :func:`label_episodes` (``config.labels`` of the offline pipeline,
    ``config.uniintervene.labels`` online); DESIGN section 4 numbers."""
    c = ml_collections.ConfigDict()
    # Stagnation-label rule: "design" (decline / plateau / abrupt union) or "guide" (simpler rule).
    c.rule = "design"
    # TVR target: minimum expected progress per step, discount over the window, and the form
    # (False: the official code's signed form; True: the guide's per-term max(0, .)).
    c.tvr_eps = 0.005
    c.tvr_gamma_r = 0.9
    c.tvr_clip_negative = False
    # The takeover_steps non-human steps before each human takeover are also positive labels
    # (union with the stagnation labels; not in the paper, see takeover_labels). 0: off.
    c.takeover_steps = 0
    return c


def resolve_labels_config(config: Optional[Any] = None) -> ml_collections.ConfigDict:
    """:func:`get_labels_config` overridden by ``config`` (dict or ConfigDict), validated.

    Raises ValueError for an unknown field or rule or ``takeover_steps < 0``; TypeError for
    another type.
    """
    c = _overridden(get_labels_config(), config, "labels")
    if int(c.takeover_steps) < 0:
        raise ValueError(f"labels takeover_steps must be >= 0, got {c.takeover_steps}")
    return c


def get_mining_config() -> ml_collections.ConfigDict:
    """Default thresholds of :func:`mine_stagnation` (DESIGN section 4)."""
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
    return _overridden(get_mining_config(), config, "mining")


def _overridden(c: ml_collections.ConfigDict, config: Optional[Any], what: str) -> ml_collections.ConfigDict:
    """Defaults ``c`` with the fields of ``config`` (dict or ConfigDict) set; ``c.rule`` checked."""
    if config is None:
        return c
    if not isinstance(config, (dict, ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        raise TypeError(f"config must be a dict or ConfigDict, got {type(config).__name__}")
    for k, v in config.items():
        if k not in c:
            raise ValueError(f"unknown {what} config field {k!r}; known: {sorted(c.keys())}")
        c[k] = v
    if c.rule not in RULES:
        raise ValueError(f"{what} rule must be one of {RULES}, got {c.rule!r}")
    return c


# ------------------------------------------------------------------ episodes labelled as a whole
def label_episodes(episodes: Sequence[Mapping[str, Any]], curves: Sequence[Any], config: Optional[Any] = None,
                   history_len: int = 8) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Trigger labels and TVR targets of a set of episodes given their proxy-value curves.

    Per episode of T steps, on ``V_0 .. V_{T-1}`` (the curve without its last value):
    ``labels = mine_stagnation(V, {"rule": config.rule})``, united with
    ``takeover_labels(episode["interventions"], config.takeover_steps)`` when
    ``takeover_steps > 0``; ``tvr = tvr_targets(V, K=history_len, eps=config.tvr_eps,
    gamma_r=config.tvr_gamma_r, clip_negative=config.tvr_clip_negative)``.

    Args:
      episodes: episode dicts (``serl_ext.data.episodes`` layout); ``interventions`` bool
        ``(T,)`` is read only with ``takeover_steps > 0``.
      curves: one proxy-value curve float ``(T+1,)`` per episode (``V(o_0) .. V(o_T)``, raw).
      config: fields of :func:`get_labels_config` (dict or ConfigDict; missing ones take defaults).
      history_len: K of the TVR window, the intervention model's value-history K (8).
    Returns:
      ``(labels, tvr)``: lists of bool ``(T,)`` and float32 ``(T,)`` arrays, one per episode.
    Raises:
      ValueError: lengths differ, an unknown config field or rule, bad curves (see
        :func:`mine_stagnation`, :func:`tvr_targets`).
    """
    if len(curves) != len(episodes):
        raise ValueError(f"{len(curves)} value curves for {len(episodes)} episodes")
    c = resolve_labels_config(config)
    labels, tvr = [], []
    for episode, curve in zip(episodes, curves):
        steps = np.asarray(curve)[:-1]  # V_0 .. V_{T-1}: one per transition
        y = mine_stagnation(steps, {"rule": c.rule})
        if int(c.takeover_steps) > 0:
            y = y | takeover_labels(episode["interventions"], int(c.takeover_steps))
        labels.append(y)
        tvr.append(tvr_targets(steps, K=int(history_len), eps=float(c.tvr_eps), gamma_r=float(c.tvr_gamma_r),
                               clip_negative=bool(c.tvr_clip_negative)))
    return labels, tvr


# ------------------------------------------------------------------ proxy-value labels
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
    """Whether an episode (``serl_ext.data.episodes`` dict) succeeded: the proxy value's rule.

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


def episode_succeeded(episode: Mapping[str, Any]) -> bool:
    """The recovery memory's and the recovery pairs' success rule: ``metadata["success"]`` when
    the key is present, else whether any ``success`` step flag is set, else False (never the
    rewards, unlike :func:`episode_success`)."""
    meta = episode.get("metadata") or {}
    if "success" in meta:
        return bool(meta["success"])
    return bool(np.any(np.asarray(episode.get("success", False))))


# ------------------------------------------------------------------ value curves
def _check_values(values: Any, name: str = "values", unit_range: bool = False) -> np.ndarray:
    v = np.asarray(values)
    if v.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {v.dtype}")
    v = v.astype(np.float64)
    if v.ndim != 1 or v.shape[0] < 1:
        raise ValueError(f"{name} must have shape (T,) with T >= 1, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contain NaN or inf")
    if unit_range and (v.min() < -VALUE_TOL or v.max() > 1.0 + VALUE_TOL):
        raise ValueError(f"{name} must lie in [0, 1] (proxy values), got range [{v.min()}, {v.max()}]")
    return np.clip(v, 0.0, 1.0) if unit_range else v


def _check_k(K: Any) -> int:
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"K must be an int >= 1, got {K!r}")
    return int(K)


def check_value_curve(values: Any, length: Optional[int] = None, name: str = "values") -> np.ndarray:
    """Validate a proxy-value curve: float ``(T+1,)``, finite, in ``[0, 1]`` -> float64 copy.

    Raises ValueError on a wrong shape (or length != ``length``), NaN/inf, or values outside
    ``[0, 1]`` by more than 1e-5 (values must already be normalised, DESIGN section 4).
    """
    v = np.asarray(values)
    if v.ndim != 1 or v.shape[0] < 2:
        raise ValueError(f"{name} must have shape (T+1,) with T >= 1, got {v.shape}")
    if length is not None and v.shape[0] != length:
        raise ValueError(f"{name} has length {v.shape[0]}, expected T+1 = {length}")
    if not np.issubdtype(v.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got {v.dtype}")
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf")
    if v.min() < -VALUE_TOL or v.max() > 1.0 + VALUE_TOL:
        raise ValueError(f"{name} must be normalised to [0, 1], got range [{v.min():.4f}, {v.max():.4f}]")
    return np.clip(v, 0.0, 1.0)


def normalize_curve(values: Any) -> np.ndarray:
    """Per-episode min-max normalisation to [0, 1] of the stagnation rules, float64 ``(T,)``; a
    constant curve (range <= 1e-8) becomes all zeros. Raises ValueError for empty/non-1-D/NaN
    input, TypeError for non-numeric input."""
    v = _check_values(values)
    lo, hi = v.min(), v.max()
    if hi - lo <= 1e-8:
        return np.zeros_like(v)
    return (v - lo) / (hi - lo)


def value_history(values: Any, K: int = 8) -> np.ndarray:
    """Windows ``[V_{t-K}, ..., V_t]`` for every step (the intervention model's value history).

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


# ------------------------------------------------------------------ TVR
def tvr_targets(values: Any, K: int = 8, eps: float = 0.005, gamma_r: float = 0.9,
                clip_negative: bool = False) -> np.ndarray:
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


# ------------------------------------------------------------------ stagnation labels
def _prepare(values: Any, normalize: bool) -> np.ndarray:
    return normalize_curve(values) if normalize else _check_values(values)


def _check_window(window: Any) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise ValueError(f"window must be an int >= 2, got {window!r}")
    return int(window)


def _windows(u: np.ndarray, window: int) -> np.ndarray:
    """(T - window + 1, window) sliding windows; row r ends at step r + window - 1."""
    return np.lib.stride_tricks.sliding_window_view(u, window)


def _window_rule(values: Any, window: int, normalize: bool, rule) -> np.ndarray:
    """bool ``(T,)``: step ``t >= window - 1`` labelled when ``rule`` holds for the window ending
    at ``t`` (``rule``: ``(T - window + 1, window)`` windows -> bool per window)."""
    window = _check_window(window)
    u = _prepare(values, normalize)
    labels = np.zeros(u.shape[0], bool)
    if u.shape[0] >= window:
        labels[window - 1:] = rule(_windows(u, window))
    return labels


def decline_labels(values: Any, window: int = 8, slope: float = -0.01, drop: float = 0.05,
                   down_fraction: float = 0.7, drop_mode: str = "first_last", normalize: bool = True) -> np.ndarray:
    """Decline rule (module docstring): bool ``(T,)``, step t labelled when the window
    ``[t - window + 1, t]`` has LS slope ``<= slope``, drop ``>= drop`` and a fraction
    ``>= down_fraction`` of falling steps. Raises ValueError on bad input or ``drop_mode``."""
    if drop_mode not in DROP_MODES:
        raise ValueError(f"drop_mode must be one of {DROP_MODES}, got {drop_mode!r}")

    def rule(w):
        x = np.arange(w.shape[1], dtype=np.float64) - (w.shape[1] - 1) / 2.0
        slopes = (w - w.mean(axis=1, keepdims=True)) @ x / np.sum(x * x)
        drops = (w[:, 0] if drop_mode == "first_last" else w.max(axis=1)) - w[:, -1]
        down = np.mean(np.diff(w, axis=1) < 0, axis=1)
        return (slopes <= slope) & (drops >= drop) & (down >= down_fraction)

    return _window_rule(values, window, normalize, rule)


def plateau_labels(values: Any, window: int = 8, flat_delta: float = 0.03, flat_fraction: float = 0.6,
                   amplitude: float = 0.12, normalize: bool = True) -> np.ndarray:
    """Plateau rule (module docstring): bool ``(T,)``, step t labelled when in the window
    ``[t - window + 1, t]`` a fraction ``>= flat_fraction`` of steps have ``|du| <= flat_delta``
    and ``max - min <= amplitude``. A constant curve is a plateau everywhere (t >= window-1)."""

    def rule(w):
        flat = np.mean(np.abs(np.diff(w, axis=1)) <= flat_delta, axis=1)
        return (flat >= flat_fraction) & (w.max(axis=1) - w.min(axis=1) <= amplitude)

    return _window_rule(values, window, normalize, rule)


def abrupt_labels(values: Any, drop: float = 0.12, recovery_steps: int = 3, recovery_fraction: float = 0.5,
                  normalize: bool = True) -> np.ndarray:
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


def guide_trigger_labels(values: Any, k: int = 8, eps: float = 0.005, shortfall: float = 0.04,
                         plateau_amplitude: float = 0.03, normalize: bool = False) -> np.ndarray:
    """The guide's ``mine_trigger_labels`` ("Step 3"): bool ``(T,)``, step ``t >= k`` labelled
    when the window ``V[t-k .. t]`` has ``sum max(0, eps - dV) > shortfall`` and either
    ``max - min < plateau_amplitude`` or at least ``k // 2`` falling steps."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")

    def rule(w):
        d = np.diff(w, axis=1)
        short = np.sum(np.maximum(0.0, eps - d), axis=1)
        plateau = (w.max(axis=1) - w.min(axis=1)) < plateau_amplitude
        return (short > shortfall) & (plateau | (np.sum(d < 0, axis=1) >= k // 2))

    return _window_rule(values, int(k) + 1, normalize, rule)


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


# ------------------------------------------------------------------ takeover labels
def takeover_labels(interventions: Any, steps: int) -> np.ndarray:
    """bool ``(T,)``: the ``steps`` non-human steps before each human takeover onset.

    Online extension (not in the paper): with ``labels.takeover_steps > 0`` these are also
    positive trigger labels, so the model learns to fire before the operator would.
    A takeover onset is a step ``s`` with ``interventions[s]`` and not ``interventions[s-1]``;
    steps ``max(0, s - steps) .. s-1`` are labelled unless the human acted there.
    Raises ValueError for a non-1-D input or ``steps < 0``.
    """
    human = np.asarray(interventions, bool)
    if human.ndim != 1:
        raise ValueError(f"interventions must be (T,), got shape {human.shape}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    out = np.zeros_like(human)
    if steps == 0:
        return out
    onsets = np.flatnonzero(human & ~np.concatenate([[False], human[:-1]]))
    for s in onsets:
        out[max(0, s - steps): s] = True
    return out & ~human
