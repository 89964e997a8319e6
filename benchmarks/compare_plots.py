"""Plots of the comparison report (``benchmarks/comparison/render.py``, run by
``benchmarks/compare.py``): learning curves per task and gate timelines.

Every function takes plain Python containers (lists, dicts, floats), so tests can call them on
synthetic data without any run folder. matplotlib runs with the Agg backend (no display).

* :func:`plot_curves` -> ``curves.png``: one column per task, two rows: evaluation success rate
  (SR) against env steps (mean over seeds, min-max band) and cumulative intervention rate (IR)
  against env steps (same aggregation), one colour per method.
* :func:`select_timeline_episodes` + :func:`plot_timeline` -> ``timeline.png``: for example
  episodes of a UniIntervene run, the proxy value, the sigmoid risk and the threshold tau per
  step, trigger marks and the background shaded by who acted (policy / recovery / human): the
  "stagnation -> trigger -> recovery" figure of the UniIntervene paper.
"""

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# The action_source codes of gate_timeline.jsonl: 0 policy, 1 recovery, 2 human.
from serl_ext.data.replay_buffer import ACTION_SOURCE_HUMAN as SOURCE_HUMAN
from serl_ext.data.replay_buffer import ACTION_SOURCE_POLICY as SOURCE_POLICY
from serl_ext.data.replay_buffer import ACTION_SOURCE_RECOVERY as SOURCE_RECOVERY

_SOURCE_STYLE = {
    SOURCE_POLICY: ("policy", "#ffffff", 0.0),
    SOURCE_RECOVERY: ("recovery", "#2ca02c", 0.18),
    SOURCE_HUMAN: ("human", "#d62728", 0.18),
}

Curve = Sequence[Tuple[float, float]]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str) -> str:
    """Lays out ``fig``, writes it to ``path`` (PNG, 110 dpi), closes it and returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mean_band(curves: Sequence[Curve], num_points: int = 0) -> Optional[Dict[str, np.ndarray]]:
    """Mean and min-max band of several (x, y) curves (one per seed).

    Args:
      curves: one list of ``(x, y)`` pairs per seed, x increasing (env steps).
      num_points: 0 = align on the exact x values (used for evaluations, which share one
        schedule across seeds: at each x the seeds that have it are averaged); > 0 = linearly
        interpolate every curve onto ``num_points`` evenly spaced x values over the union range
        (used for the per-episode IR curves, whose x values differ across seeds); a seed
        contributes only inside its own x range.
    Returns:
      ``{"x", "mean", "lo", "hi", "n"}`` float arrays of equal length (``n``: seeds
      contributing at each x), or None when every curve is empty.
    """
    curves = [[(float(x), float(y)) for x, y in c if y is not None and math.isfinite(float(y))] for c in curves]
    curves = [c for c in curves if c]
    if not curves:
        return None
    if num_points <= 0:
        xs = sorted({x for c in curves for x, _ in c})
        table = [[y for c in curves for cx, y in c if cx == x] for x in xs]
        return {
            "x": np.asarray(xs),
            "mean": np.asarray([np.mean(v) for v in table]),
            "lo": np.asarray([np.min(v) for v in table]),
            "hi": np.asarray([np.max(v) for v in table]),
            "n": np.asarray([len(v) for v in table], dtype=float),
        }
    lo_x = min(c[0][0] for c in curves)
    hi_x = max(c[-1][0] for c in curves)
    grid = np.linspace(lo_x, hi_x, num_points)
    values = np.full((len(curves), num_points), np.nan)
    for i, c in enumerate(curves):
        cx = np.asarray([p[0] for p in c])
        cy = np.asarray([p[1] for p in c])
        inside = (grid >= cx[0]) & (grid <= cx[-1])
        values[i, inside] = np.interp(grid[inside], cx, cy)
    n = np.sum(np.isfinite(values), axis=0)
    keep = n > 0
    with np.errstate(all="ignore"):
        return {
            "x": grid[keep],
            "mean": np.nanmean(values[:, keep], axis=0),
            "lo": np.nanmin(values[:, keep], axis=0),
            "hi": np.nanmax(values[:, keep], axis=0),
            "n": n[keep].astype(float),
        }


def plot_curves(
    path: str,
    curves: Mapping[str, Mapping[str, Mapping[str, Sequence[Curve]]]],
    tasks: Sequence[str],
    methods: Sequence[str],
    budgets: Optional[Mapping[str, int]] = None,
) -> str:
    """Writes the SR / IR learning-curve figure.

    Args:
      path: output PNG path.
      curves: ``curves[task][method]["eval"]`` = one list of ``(env_steps, eval SR)`` per seed
        (from ``summary.json["eval_history"]``); ``curves[task][method]["ir"]`` = one list of
        ``(env_steps, cumulative IR)`` per seed (from ``metrics/actor.jsonl``,
        ``intervention/rate``). Missing tasks / methods are left blank.
      tasks: column order. methods: colour order (the same colour for a method in every panel).
      budgets: optional env-step budget per task, drawn as a dotted vertical line.
    Returns:
      ``path``.
    """
    plt = _plt()
    tasks = list(tasks) or ["(no task)"]
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 6.8), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, task in enumerate(tasks):
        for m, method in enumerate(methods):
            c = colours[m % len(colours)]
            data = curves.get(task, {}).get(method, {})
            for row, key, points in ((0, "eval", 0), (1, "ir", 200)):
                band = mean_band(data.get(key, []), num_points=points)
                if band is None:
                    continue
                ax = axes[row, j]
                n_seeds = len([s for s in data.get(key, []) if s])
                ax.plot(band["x"], band["mean"], color=c, lw=1.6, marker="." if row == 0 else None,
                        label=f"{method} ({n_seeds} seed{'s' if n_seeds != 1 else ''})")
                ax.fill_between(band["x"], band["lo"], band["hi"], color=c, alpha=0.18, lw=0)
        axes[0, j].set(title=f"{task}: eval SR", xlabel="env steps", ylabel="success rate", ylim=(-0.05, 1.05))
        axes[1, j].set(title=f"{task}: cumulative IR", xlabel="env steps", ylabel="human steps / all steps",
                       ylim=(-0.02, 1.02))
        for ax in axes[:, j]:
            if budgets and task in budgets:
                ax.axvline(budgets[task], color="gray", ls=":", lw=0.8)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
    fig.suptitle("mean over seeds, band = min-max over seeds", fontsize=9)
    return _save(plt, fig, path)


def _floats(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else float(v) for v in (values or [])], dtype=float)


def episode_has_recovery_after_trigger(record: Mapping) -> bool:
    """True when a trigger (``trigger[t] == 1``) is followed at ``t' >= t`` by a recovery step
    (``source[t'] == 1``) in a ``gate_timeline.jsonl`` record."""
    trigger = list(record.get("trigger") or [])
    source = list(record.get("source") or [])
    first = next((t for t, v in enumerate(trigger) if v), None)
    return first is not None and any(s == SOURCE_RECOVERY for s in source[first:])


def episode_has_policy_then_trigger(record: Mapping) -> bool:
    """True when a trigger fires after the base policy acted (``source[t-1] == 0`` at a trigger
    step ``t >= 1``) and recovery steps follow: the paper's "stagnation -> trigger -> recovery"
    picture, as opposed to the trigger that fires at an episode's first step."""
    trigger = list(record.get("trigger") or [])
    source = list(record.get("source") or [])
    for t, v in enumerate(trigger):
        if v and t >= 1 and t - 1 < len(source) and source[t - 1] == SOURCE_POLICY:
            if any(s == SOURCE_RECOVERY for s in source[t:t + 3]):
                return True
    return False


def select_timeline_episodes(records: Sequence[Mapping], k: int = 3) -> List[Mapping]:
    """Chooses up to ``k`` example episodes for the timeline figure.

    Preference groups, best first: (0) policy steps, then a trigger, then recovery
    (:func:`episode_has_policy_then_trigger`) in a successful episode; (1) the same in a failed
    one; (2) a trigger followed by recovery steps (:func:`episode_has_recovery_after_trigger`),
    successful; (3) the same, failed; (4) any trigger; (5) the rest. Within a group the latest
    in the run comes first (highest ``env_steps``, then ``episode``). Episodes of tasks not yet
    shown are taken before a second one of the same task (records may carry ``task``). Records
    need the ``gate_timeline.jsonl`` keys (``episode``, ``env_steps``, ``value``, ``risk``,
    ``trigger``, ``source``, ``success``).
    """
    def rank(r):
        if episode_has_policy_then_trigger(r):
            group = 0 if r.get("success") else 1
        elif episode_has_recovery_after_trigger(r):
            group = 2 if r.get("success") else 3
        else:
            group = 4 if any(r.get("trigger") or []) else 5
        return (group, -float(r.get("env_steps", 0) or 0), -float(r.get("episode", 0) or 0))

    ranked = sorted([r for r in records if r.get("value")], key=rank)
    chosen, tasks = [], set()
    for r in ranked:  # one per task first
        if len(chosen) < k and r.get("task") not in tasks:
            chosen.append(r)
            tasks.add(r.get("task"))
    for r in ranked:  # then the best of the rest
        if len(chosen) < k and not any(r is c for c in chosen):
            chosen.append(r)
    return sorted(chosen, key=rank)


def risk_for_plot(risk) -> Tuple[np.ndarray, bool]:
    """Returns (risk in [0, 1], applied_sigmoid). The actor records the sigmoid risk; if any
    finite value lies outside [0, 1] the values are taken to be logits and squashed. None/NaN
    (steps where the model was not evaluated) stay NaN (gaps in the line)."""
    r = _floats(risk)
    finite = r[np.isfinite(r)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        with np.errstate(all="ignore"):
            return 1.0 / (1.0 + np.exp(-r)), True
    return r, False


def _segments(source: Sequence[int]):
    """Contiguous runs of the same source: list of (start, end_exclusive, source)."""
    out, start = [], 0
    for t in range(1, len(source) + 1):
        if t == len(source) or source[t] != source[start]:
            out.append((start, t, int(source[start])))
            start = t
    return out


def plot_timeline(path: str, episodes: Sequence[Mapping], method: str = "") -> str:
    """Writes the gate timeline figure: one panel per episode.

    Each panel: proxy value (``value``, blue) and risk (``risk``, orange; sigmoid applied when
    the values look like logits) against the agent step; the trigger threshold ``tau``
    (dashed); a black tick at every step with ``trigger == 1``; background shaded by
    ``source`` (white policy, green recovery, red human). Episode dicts carry the
    ``gate_timeline.jsonl`` keys plus an optional ``label`` (task / seed) for the title.

    Returns:
      ``path``.
    """
    plt = _plt()
    from matplotlib.patches import Patch

    n = max(len(episodes), 1)
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.9 * n), squeeze=False)
    for i, ep in enumerate(episodes):
        ax = axes[i, 0]
        value = _floats(ep.get("value"))
        risk, squashed = risk_for_plot(ep.get("risk"))
        steps = np.arange(len(value))
        for start, end, src in _segments(list(ep.get("source") or [])):
            name, colour, alpha = _SOURCE_STYLE.get(src, ("other", "#7f7f7f", 0.15))
            if alpha > 0:
                ax.axvspan(start - 0.5, end - 0.5, color=colour, alpha=alpha, lw=0)
        ax.plot(steps, value, color="#1f77b4", lw=1.5, label="proxy value")
        if risk.size:
            # The gate scores only at decision steps (not inside a chunk or under the human):
            # draw the scored steps as markers so isolated ones show.
            ax.plot(np.arange(len(risk)), risk, color="#ff7f0e", lw=1.2, marker="o", ms=4,
                    label="risk (sigmoid of logit)" if squashed else "risk (sigmoid, at decisions)")
        tau = ep.get("tau")
        if tau is not None and math.isfinite(float(tau)):
            ax.axhline(float(tau), color="#ff7f0e", ls="--", lw=0.9, label=f"tau = {float(tau):.2f}")
        trig = [t for t, v in enumerate(ep.get("trigger") or []) if v]
        if trig:
            ax.plot(trig, [1.04] * len(trig), "kv", ms=6, label="trigger")
            for t in trig:
                ax.axvline(t, color="k", lw=0.6, alpha=0.5)
        title = (f"{ep.get('label', '')} episode {ep.get('episode', '?')} at {ep.get('env_steps', '?')} env steps, "
                 f"{'success' if ep.get('success') else 'failure'}").strip()
        ax.set(title=title, xlabel="agent step in episode", ylabel="value / risk", ylim=(-0.05, 1.1))
        handles, labels = ax.get_legend_handles_labels()
        handles += [Patch(color=_SOURCE_STYLE[s][1], alpha=0.35) for s in (SOURCE_RECOVERY, SOURCE_HUMAN)]
        labels += ["recovery acting", "human acting"]
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(alpha=0.3)
    if not episodes:
        axes[0, 0].text(0.5, 0.5, "no gate timeline recorded", ha="center", va="center")
        axes[0, 0].set_axis_off()
    fig.suptitle(f"{method}: stagnation -> trigger -> recovery".strip(": "), fontsize=10)
    return _save(plt, fig, path)
