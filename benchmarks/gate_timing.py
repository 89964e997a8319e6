"""When the UniIntervene gate fires, and what happens next, from the recorded gate timelines.

  python benchmarks/gate_timing.py [--runs=benchmarks/results/uniintervene_protocol/compare/runs]
      [--method=hil_serl+uniintervene] [--window=10] [--from_fraction=0.5]

``--method=`` (empty) reads RUNS/TASK/seedS instead (the layout of ``superseded/`` folders).

Reads every ``RUNS/TASK/METHOD/seedS/gate_timeline.jsonl`` (the gate writes every
``uniintervene.timeline_every``-th training episode: per step the proxy value, sigmoid(risk),
whether it fired and who acted: 0 policy, 1 recovery, 2 human) and, per task, over the episodes
recorded from ``--from_fraction`` of each run's env steps on (0.5: the second half, once the
models and the policy have trained), reports:

* **first trigger step**: the episode step of the first trigger (median, and the share at the
  first step the gate may decide, when its value history first holds K real steps: the gate
  decides nothing before);
* **takeover onsets** (a human step after a non-human one) and, for each, the recovery steps
  that ran in the ``--window`` steps before it (the recovery policy's time to make the progress
  the operator looks for), and the share of takeovers with a recovery step in that window;
* **early takeovers**: the share of the operator's steps that belong to takeovers starting by
  episode step W + ``reaction_delay`` (the task's stall window, ``serl_ext/envs/tasks.py``, plus
  the default operator's reaction delay): where a robot stalls from the start, the operator takes
  over then, and a gate that decides nothing before K history steps had only W + delay - K
  steps to act (none to speak of on pick-place and sweep-into, W = 10, K = 8). Those steps bound
  what any trigger with that warm-up can take off the operator; the median takeover onset step;
* **trigger scores at the decisions** (second table): every recorded step with a risk score
  whose actor was not the human, labelled positive when a takeover onset follows within 1..N
  steps: the score's 5th / 50th / 95th percentile, its AUROC against that label (ties count
  one half), and for each threshold of ``--thresholds`` the share of decisions at or above it
  (``rate``), their precision and the recall of the positive decisions. Decisions that fired
  were followed by recovery, so their labels describe the system as run, not the base policy
  alone: the table says how spread out and how ranked the scores were, not what another
  threshold would have done online;
* **recovery runs** (consecutive recovery steps): their length, the proxy-value change over the
  run (last value in the run minus the value at the step before it), and how each ended: the
  episode succeeded during the run or within ``--window`` steps after it (``success``), a human
  step came within ``--window`` steps after it (``human``), else the policy carried on
  (``policy``).

Outputs ``{--out}/gate_timing.md`` and ``.json`` (default: beside ``--runs``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from serl_ext.loop.logging import read_jsonl  # noqa: E402

POLICY, RECOVERY, HUMAN = 0, 1, 2


def episode_events(ep: dict, window: int) -> Dict[str, list]:
    """Per-episode events of one timeline record (``source``, ``trigger``, ``value`` lists of equal
    length, ``success`` bool).

    Returns ``{"first_trigger": [step] or [], "first_decision": [step] or [] (the first step with a
    risk score), "takeover_recovery_steps": [recovery steps in the window before each takeover
    onset], "takeovers": [(onset step, length in steps)], "runs": [(length, value change or None,
    outcome)]}``.

    Raises:
      ValueError: lists of unequal length.
    """
    s, trig, val = ep["source"], ep["trigger"], ep["value"]
    risk = ep.get("risk", [None] * len(s))
    if not (len(s) == len(trig) == len(val) == len(risk)):
        raise ValueError(f"episode {ep.get('episode')}: source/trigger/value/risk lengths differ")
    n = len(s)
    out: Dict[str, list] = {"first_trigger": [], "first_decision": [], "takeover_recovery_steps": [], "runs": [],
                            "takeovers": []}
    fired = [t for t in range(n) if trig[t]]
    if fired:
        out["first_trigger"].append(fired[0])
    scored = [t for t in range(n) if risk[t] is not None]
    if scored:
        out["first_decision"].append(scored[0])
    for t in range(n):
        if s[t] == HUMAN and (t == 0 or s[t - 1] != HUMAN):
            out["takeover_recovery_steps"].append(sum(1 for k in range(max(0, t - window), t) if s[k] == RECOVERY))
            length = next((k - t for k in range(t, n) if s[k] != HUMAN), n - t)
            out["takeovers"].append((t, length))
    t = 0
    while t < n:
        if s[t] != RECOVERY:
            t += 1
            continue
        start = t
        while t < n and s[t] == RECOVERY:
            t += 1
        end = t  # first step after the run
        before = val[start - 1] if start > 0 else None
        last = val[end - 1]
        gain = None if before is None or last is None else float(last) - float(before)
        after = s[end:end + window]
        if HUMAN in after:
            outcome = "human"
        elif ep.get("success") and end + window >= n:
            outcome = "success"
        else:
            outcome = "policy"
        out["runs"].append((end - start, gain, outcome))
    return out


def summarise(episodes: Sequence[dict], window: int, early_step: Optional[int] = None) -> Dict[str, Optional[float]]:
    """Aggregates :func:`episode_events` over episodes (see the module docstring); ``early_step``
    (W + reaction delay) gives ``operator_steps_in_early_takeovers`` (None without it)."""
    first, at_first, take, runs, segments = [], 0, [], [], []
    for ep in episodes:
        ev = episode_events(ep, window)
        segments += ev["takeovers"]
        if ev["first_trigger"]:
            first.append(ev["first_trigger"][0])
            if ev["first_decision"] and ev["first_trigger"][0] == ev["first_decision"][0]:
                at_first += 1
        take += ev["takeover_recovery_steps"]
        runs += ev["runs"]
    gains = [g for _, g, _ in runs if g is not None]
    outcomes = [o for _, _, o in runs]
    return {
        "episodes": len(episodes),
        "episodes_with_trigger": len(first),
        "first_trigger_step_median": float(np.median(first)) if first else None,
        "first_trigger_at_first_decision": at_first / len(first) if first else None,
        "takeovers": len(take),
        "takeover_onset_median": float(np.median([t for t, _ in segments])) if segments else None,
        "operator_steps_in_early_takeovers": (
            sum(n for t, n in segments if t <= early_step) / sum(n for _, n in segments)
            if segments and early_step is not None else None),
        "takeovers_with_recovery_before": float(np.mean([x > 0 for x in take])) if take else None,
        "recovery_steps_before_takeover_median": float(np.median(take)) if take else None,
        "recovery_runs": len(runs),
        "recovery_run_length_median": float(np.median([r[0] for r in runs])) if runs else None,
        "recovery_value_change_mean": float(np.mean(gains)) if gains else None,
        "recovery_value_rises": float(np.mean([g > 0 for g in gains])) if gains else None,
        **{f"recovery_ends_{o}": (outcomes.count(o) / len(outcomes) if outcomes else None)
           for o in ("success", "human", "policy")},
    }


def decision_scores(episodes: Sequence[dict], window: int):
    """``(scores float64 (D,), labels bool (D,))`` over the decisions of ``episodes``: steps with
    a risk score whose source is not HUMAN; label = a takeover onset (a HUMAN step after a
    non-HUMAN one) 1..``window`` steps later."""
    scores, labels = [], []
    for ep in episodes:
        s, risk = ep["source"], ep.get("risk") or [None] * len(ep["source"])
        onsets = [t for t in range(len(s)) if s[t] == HUMAN and (t == 0 or s[t - 1] != HUMAN)]
        for t, r in enumerate(risk):
            if r is None or s[t] == HUMAN:
                continue
            scores.append(float(r))
            labels.append(any(t < o <= t + window for o in onsets))
    return np.asarray(scores, np.float64), np.asarray(labels, bool)


def auroc(scores, labels) -> Optional[float]:
    """:func:`uniintervene_jax.value.report.auroc` (rank based, ties count 1/2), None instead of
    its ValueError when there is no decision or only one class."""
    from uniintervene_jax.value.report import auroc as rank_auroc

    labels = np.asarray(labels, bool)
    if not labels.size or labels.all() or not labels.any():
        return None
    return rank_auroc(scores, labels)


def score_summary(scores, labels, thresholds: Sequence[float]) -> dict:
    """Spread, ranking and per-threshold rate / precision / recall of decision scores (see the
    module docstring); values are None where undefined (no decision, none above a threshold)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    out = {"decisions": int(len(scores)), "positive_rate": float(labels.mean()) if len(labels) else None,
           "auroc": auroc(scores, labels), "thresholds": {}}
    for q in (5, 50, 95):
        out[f"score_p{q}"] = float(np.percentile(scores, q)) if len(scores) else None
    for t in thresholds:
        fire = scores >= t
        out["thresholds"][f"{t:g}"] = {
            "rate": float(fire.mean()) if len(scores) else None,
            "precision": float(labels[fire].mean()) if fire.any() else None,
            "recall": float((fire & labels).sum() / labels.sum()) if labels.any() else None}
    return out


def early_takeover_step(task: str) -> Optional[int]:
    """W + reaction delay of ``task`` (its stall window in agent steps and the default operator's
    ``reaction_delay``): when the operator takes over a robot that stalls from the episode's
    start. None for a task without a Meta-World task spec."""
    from serl_ext.envs.operator import get_default_operator_config
    from serl_ext.envs.tasks import get_task_spec

    try:
        spec = get_task_spec(task)
    except (KeyError, ValueError):
        return None
    return int(spec.stall_window) + int(get_default_operator_config().reaction_delay)


def _fmt(v, digits=2):
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="benchmarks/results/uniintervene_protocol/compare/runs")
    p.add_argument("--method", default="hil_serl+uniintervene", help="'' : RUNS/TASK/seedS layout")
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--from_fraction", type=float, default=0.5)
    p.add_argument("--out", default=None)
    p.add_argument("--thresholds", default="0.5,0.55,0.6,0.65",
                   help="comma-separated trigger thresholds for the score table")
    args = p.parse_args(argv)
    try:
        thresholds = [float(x) for x in args.thresholds.split(",") if x.strip()]
    except ValueError:
        p.error(f"--thresholds must be comma-separated numbers, got {args.thresholds!r}")
    if not 0.0 <= args.from_fraction < 1.0:
        p.error("--from_fraction must be in [0, 1)")
    out = args.out or os.path.dirname(os.path.abspath(args.runs))
    # --method="" reads a folder of TASK/seedS run folders (superseded/ keeps old runs that way)
    parts = ("*", args.method, "seed*") if args.method else ("*", "seed*")
    paths = sorted(glob.glob(os.path.join(args.runs, *parts, "gate_timeline.jsonl")))
    if not paths:
        raise SystemExit(f"no {args.method} gate_timeline.jsonl under {args.runs}")
    by_task: Dict[str, List[dict]] = {}
    seeds: Dict[str, List[str]] = {}
    for path in paths:
        seed_dir = os.path.dirname(path)
        task = os.path.basename(os.path.dirname(os.path.dirname(seed_dir)) if args.method else os.path.dirname(seed_dir))
        if not os.path.exists(os.path.join(seed_dir, "summary.json")):
            continue  # an unfinished run
        rows = read_jsonl(path)  # a torn last line (a run killed while writing) is skipped
        if not rows:
            continue
        last = max(r.get("env_steps", 0) for r in rows)
        by_task.setdefault(task, []).extend(r for r in rows if r.get("env_steps", 0) >= args.from_fraction * last)
        seeds.setdefault(task, []).append(os.path.basename(seed_dir))
    result = {"command": "python benchmarks/gate_timing.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "window": args.window, "from_fraction": args.from_fraction,
              "tasks": {t: {"seeds": seeds[t], "early_step": early_takeover_step(t),
                            **summarise(eps, args.window, early_takeover_step(t)),
                            "scores": score_summary(*decision_scores(eps, args.window), thresholds)}
                        for t, eps in sorted(by_task.items())}}
    cols = [("episodes", "episodes"), ("episodes_with_trigger", "with a trigger"),
            ("first_trigger_step_median", "first trigger step (median)"),
            ("first_trigger_at_first_decision", "first trigger at the first decision"),
            ("takeovers", "takeovers"), ("takeover_onset_median", "takeover onset step (median)"),
            ("early_step", "early: onset by step (W + delay)"),
            ("operator_steps_in_early_takeovers", "operator steps in early takeovers"),
            ("takeovers_with_recovery_before", "takeovers with recovery before"),
            ("recovery_steps_before_takeover_median", "recovery steps before a takeover (median)"),
            ("recovery_runs", "recovery runs"), ("recovery_run_length_median", "run length (median)"),
            ("recovery_value_change_mean", "value change per run (mean)"),
            ("recovery_value_rises", "runs with a value rise"), ("recovery_ends_success", "ends: success"),
            ("recovery_ends_human", "ends: human"), ("recovery_ends_policy", "ends: policy")]
    lines = ["# UniIntervene gate timing (recorded gate timelines)", "", f"Command: `{result['command']}`", "",
             f"Episodes recorded by the gate (every `uniintervene.timeline_every`-th) from {args.from_fraction:.0%} of "
             f"each run's env steps on; window N = {args.window} env steps (module docstring of "
             "`benchmarks/gate_timing.py` defines each column).", "",
             "| task | seeds | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for task, row in result["tasks"].items():
        lines.append(f"| {task} | {','.join(s.replace('seed', '') for s in row['seeds'])} | "
                     + " | ".join(_fmt(row[c[0]], 3 if c[0] == "recovery_value_change_mean" else 2) for c in cols) + " |")
    lines += ["", "Trigger scores (sigmoid(risk)) at the recorded decisions that the human did not act on; "
              f"positive = a takeover onset within the next {args.window} env steps. Fired decisions were "
              "followed by recovery: the rows describe the run as it went, not another threshold's run.", "",
              "| task | decisions | positive | score p5 / p50 / p95 | AUROC | "
              + " | ".join(f"tau {t:g}: rate / precision / recall" for t in thresholds) + " |",
              "|---|---:|---:|---|---:|" + "---|" * len(thresholds)]
    for task, row in result["tasks"].items():
        sc = row["scores"]
        cells = [" / ".join(_fmt(sc["thresholds"][f"{t:g}"][k], 2) for k in ("rate", "precision", "recall"))
                 for t in thresholds]
        lines.append(f"| {task} | {sc['decisions']} | {_fmt(sc['positive_rate'], 2)} | "
                     f"{_fmt(sc['score_p5'], 3)} / {_fmt(sc['score_p50'], 3)} / {_fmt(sc['score_p95'], 3)} | "
                     f"{_fmt(sc['auroc'], 2)} | " + " | ".join(cells) + " |")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gate_timing.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out, "gate_timing.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
