"""Reading the finished runs of a comparison folder (``OUT/runs/TASK/METHOD/seedS``).

A run is finished when it holds ``summary.json``; :func:`load_run` flattens that file, the
run's ``actor_config.json`` (the settings every method of a task must share),
``learner_summary.json`` and ``metrics/actor.jsonl`` into one dict. Steps are env (agent) steps.
"""

import json
import math
import os
from typing import List, Optional, Sequence

import numpy as np

from benchmarks.comparison.launch import run_dir
from benchmarks.run_metrics import episode_rows, ir_between, source_fractions, source_rows, steps_to

# Settings of actor_config.json that every method of a task must share (aggregate.fairness_issues).
FAIRNESS_KEYS = ("operator", "demos", "max_env_steps", "eval_period", "eval_episodes", "action_repeat")


def read_json(path: str):
    """The parsed JSON file at ``path``, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_jsonl(path: str) -> List[dict]:
    """The rows of a metrics JSONL file (``serl_ext.loop.logging.read_jsonl``), or [] when it
    does not exist."""
    from serl_ext.loop.logging import read_jsonl as read

    return read(path) if os.path.exists(path) else []


def read_command(out: str) -> Optional[str]:
    """The command that launched the runs (``OUT/command.txt``, stripped), or None when the file
    is missing or empty."""
    path = os.path.join(out, "command.txt")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


def episode_metrics(actor_rows: Sequence[dict], env_steps: Optional[int]) -> dict:
    """Secondary metrics from the per-episode rows of ``metrics/actor.jsonl``.

    Args:
      actor_rows: the file's rows; episode rows carry ``rollout/length`` and
        ``intervention/steps`` (others, e.g. evaluation rows, are skipped).
      env_steps: the run's env steps (the last quarter starts at 0.75 of it); None or 0: the
        last episode's end.
    Returns:
      ``auto_sr``: fraction of training episodes that succeeded with no human step (policy and
      recovery alone); ``ir_last`` / ``auto_sr_last``: IR (human steps / steps) and ``auto_sr``
      over the episodes that ended in the last quarter of the run's env steps (after the gate
      had time to become active; the last episode when none did); ``ir_first``: IR over the
      episodes that ended in the first quarter (the first episode when none did: while the
      base policy is still weak); ``steps_per_takeover``:
      human steps / human segments (takeovers) over the run (None without a takeover);
      ``auto_length``: mean length in agent steps of the autonomous successes (None without
      one). Every value is None when no episode row exists.
    """
    eps = episode_rows([r for r in actor_rows
                        if r.get("intervention/steps") is not None and r.get("rollout/length")])
    if not eps:
        return {"auto_sr": None, "ir_first": None, "ir_last": None, "auto_sr_last": None,
                "steps_per_takeover": None, "auto_length": None}

    def autonomous_success(e):
        return e["success"] and e["human"] == 0

    def auto(rows):
        return float(np.mean([autonomous_success(e) for e in rows]))

    total = float(env_steps or max(e["step"] for e in eps))
    first = [e for e in eps if e["step"] <= 0.25 * total] or eps[:1]
    last = [e for e in eps if e["step"] > 0.75 * total] or eps[-1:]
    segments = sum(e["segments"] for e in eps)
    per_takeover = sum(e["human"] for e in eps) / segments if segments else None
    auto_lengths = [e["length"] for e in eps if autonomous_success(e)]
    return {"auto_sr": auto(eps), "ir_first": float(ir_between(first, -math.inf, math.inf)),
            "ir_last": float(ir_between(last, -math.inf, math.inf)),
            "auto_sr_last": auto(last), "steps_per_takeover": per_takeover,
            "auto_length": float(np.mean(auto_lengths)) if auto_lengths else None}


# Keys of :func:`selectivity_metrics` (every value None when the run lacks what it is made of).
SELECTIVITY_KEYS = (
    "selectivity_window", "trigger_rate", "onset_precision", "onset_recall", "recovery_onsets",
    "takeover_onsets", "policy_frac", "recovery_frac", "human_frac", "policy_frac_last", "recovery_frac_last",
    "human_frac_last", "aborted_chunks", "recovery_runs_ended_by_human", "recovery_chunks", "value_gain",
    "takeovers_during_recovery",
)


def _ratio(num, den) -> Optional[float]:
    return float(num) / float(den) if num is not None and den else None


def selectivity_metrics(summary: dict, actor_rows: Sequence[dict], env_steps: Optional[int]) -> dict:
    """How selectively a run's gate acted, from ``summary.json`` and ``metrics/actor.jsonl``.

    Args:
      summary: the run's ``summary.json``. Method-agnostic keys (``serl_ext/loop/actor.py:
        write_summary``, definitions in ``serl_ext/loop/sources.py``): ``selectivity_window``,
        ``trigger_onset_precision``, ``trigger_onset_recall``, ``recovery_onsets``,
        ``takeover_onsets``, ``recovery_runs_ended_by_human``; the gate's, when it has one:
        ``gate_trigger_rate`` (else ``gate_triggers / gate_decisions``), ``gate_aborted_chunks``,
        ``gate_recovery_chunks``, ``gate_recovery_value_gain_mean``.
      actor_rows: the rows of ``metrics/actor.jsonl`` (episode rows by
        ``benchmarks.run_metrics.source_rows``).
      env_steps: the run's env steps (the last quarter: episodes ending after 0.75 of it, the
        last episode when none does, as in :func:`episode_metrics`); None or 0: the last
        episode's end.
    Returns:
      A dict with every key of :data:`SELECTIVITY_KEYS`: ``selectivity_window`` (N, env steps),
      ``trigger_rate`` (triggers per gate decision), ``onset_precision``, ``onset_recall``,
      ``recovery_onsets``, ``takeover_onsets``; ``{policy, recovery, human}_frac`` (steps of
      that source / all steps of the episode rows) and ``..._frac_last`` (the same over the last
      quarter); ``aborted_chunks`` (chunks the human aborted, the gate's count),
      ``recovery_runs_ended_by_human`` (recovery runs followed by a human step, from the
      sources), ``recovery_chunks``, ``value_gain`` (the gate's mean proxy-value gain over a
      recovery chunk), ``takeovers_during_recovery`` (``takeovers_noticed_during_recovery``:
      the share of takeovers the operator noticed while a recovery chunk acted). A value is None
      where the run lacks its inputs (runs written before these
      keys, or without a gate).
    """
    g = {k: summary.get(k) for k in ("gate_trigger_rate", "gate_triggers", "gate_decisions")}
    trigger_rate = g["gate_trigger_rate"]
    if trigger_rate is None:
        trigger_rate = _ratio(g["gate_triggers"], g["gate_decisions"])
    rows = source_rows(actor_rows)
    whole = source_fractions(rows) or {}
    if rows:
        cut = 0.75 * float(env_steps or max(r["step"] for r in rows))
        last = source_fractions([r for r in rows if r["step"] > cut] or rows[-1:]) or {}
    else:
        last = {}
    out = {
        "selectivity_window": summary.get("selectivity_window"),
        "trigger_rate": None if trigger_rate is None else float(trigger_rate),
        "onset_precision": summary.get("trigger_onset_precision"),
        "onset_recall": summary.get("trigger_onset_recall"),
        "recovery_onsets": summary.get("recovery_onsets"),
        "takeover_onsets": summary.get("takeover_onsets"),
        "aborted_chunks": summary.get("gate_aborted_chunks"),
        "recovery_runs_ended_by_human": summary.get("recovery_runs_ended_by_human"),
        "recovery_chunks": summary.get("gate_recovery_chunks"),
        "value_gain": summary.get("gate_recovery_value_gain_mean"),
        "takeovers_during_recovery": summary.get("takeovers_noticed_during_recovery"),
    }
    for k in ("policy", "recovery", "human"):
        out[f"{k}_frac"], out[f"{k}_frac_last"] = whole.get(k), last.get(k)
    return {k: out[k] for k in SELECTIVITY_KEYS}


def load_run(rdir: str) -> Optional[dict]:
    """One finished run (``summary.json`` present) as a flat dict, or None.

    Keys: task, method, seed, final_sr (``eval_success_rate``), best_sr
    (``best_eval_success_rate``), ir (``intervention_rate``), human_steps, recovery_steps,
    env_steps, episodes, train_sr, learner_steps, wall_min (``wall_clock_s`` / 60),
    action_repeat, eval_episodes, gate (every summary key starting with ``gate``),
    eval_curve [(env_steps, SR)], steps_to_sr80 (env steps of the first evaluation with SR >= 0.8,
    None if none: how fast the base policy learns), ir_curve [(env_steps, cumulative IR) per episode end from
    ``metrics/actor.jsonl``], the :func:`episode_metrics` keys, the :func:`selectivity_metrics`
    keys (:data:`SELECTIVITY_KEYS`), learner_ups (learner updates/s
    of ``learner_summary.json``), system_sr (``eval_system_success_rate``; the SR itself for a
    run without a gate), fairness (:data:`FAIRNESS_KEYS` from ``actor_config.json``; {} without
    that file), run_dir.

    Raises:
      KeyError: ``summary.json`` lacks ``eval_success_rate`` or ``intervention_rate``.
    """
    s = read_json(os.path.join(rdir, "summary.json"))
    if s is None:
        return None
    actor = read_jsonl(os.path.join(rdir, "metrics", "actor.jsonl"))
    cfg = read_json(os.path.join(rdir, "actor_config.json")) or {}
    a = cfg.get("actor", {}) or {}
    fairness = {
        "operator": cfg.get("operator"),
        "demos": cfg.get("demos"),
        "max_env_steps": a.get("max_env_steps"),
        "eval_period": a.get("eval_period"),
        "eval_episodes": a.get("eval_episodes"),
        "action_repeat": (cfg.get("env") or {}).get("action_repeat"),
    } if cfg else {}
    return {
        "task": s.get("task"),
        "method": s.get("algorithm"),
        "seed": int(s.get("seed", -1)),
        "final_sr": float(s["eval_success_rate"]),
        "best_sr": s.get("best_eval_success_rate"),
        "ir": float(s["intervention_rate"]),
        "human_steps": s.get("human_steps"),
        "recovery_steps": s.get("recovery_steps"),
        "env_steps": s.get("env_steps"),
        "episodes": s.get("episodes"),
        "train_sr": s.get("train_success_rate"),
        "learner_steps": s.get("learner_steps"),
        "wall_min": (s["wall_clock_s"] / 60.0) if s.get("wall_clock_s") is not None else None,
        "action_repeat": s.get("action_repeat"),
        "eval_episodes": s.get("eval_episodes"),
        "gate": {k: v for k, v in sorted(s.items()) if k.startswith("gate")},
        "eval_curve": [(h["env_steps"], h["success_rate"]) for h in s.get("eval_history", [])],
        "steps_to_sr80": steps_to(s.get("eval_history", []), "env_steps", 0.8),
        "ir_curve": [(r["step"], r["intervention/rate"]) for r in actor if r.get("intervention/rate") is not None],
        **episode_metrics(actor, s.get("env_steps")),
        **selectivity_metrics(s, actor, s.get("env_steps")),
        "learner_ups": (read_json(os.path.join(rdir, "learner_summary.json")) or {}).get("updates_per_s"),
        # policy + gate, no human (actor evaluations with uniintervene.eval_with_gate; runs
        # without a gate: the policy alone is the whole system)
        "system_sr": (s.get("eval_system_success_rate") if any(k.startswith("gate") for k in s)
                      else float(s["eval_success_rate"])),
        "fairness": fairness,
        "run_dir": rdir,
    }


def load_runs(out: str, tasks: Sequence[str], methods: Sequence[str], seeds: Sequence) -> List[dict]:
    """Every finished run of the sweep (:func:`load_run`), ordered task, method, seed (missing
    runs are skipped). The task / method / seed of a row are those of its folder."""
    rows = []
    for task in tasks:
        for method in methods:
            for seed in seeds:
                r = load_run(run_dir(out, task, method, seed))
                if r is not None:
                    r.update(task=task, method=method, seed=int(seed))
                    rows.append(r)
    return rows


def add_system_eval(runs: List[dict], path: str) -> None:
    """Fills, in place, ``system_sr`` of runs that lack it from ``benchmarks/system_eval.py``
    output at ``path`` (its ``runs`` rows, matched by task, algorithm and seed), when that file
    exists."""
    data = read_json(path)
    if not data:
        return
    found = {(r["task"], r["algorithm"], int(r["seed"])): r["system_success_rate"] for r in data.get("runs", [])}
    for r in runs:
        if r.get("system_sr") is None:
            r["system_sr"] = found.get((r["task"], r["method"], r["seed"]))


def load_timelines(out: str, tasks: Sequence[str], method: str, seeds: Sequence) -> List[dict]:
    """Records of ``gate_timeline.jsonl`` of every run of ``method`` (order task, seed, file),
    each a copy with ``task``, ``seed`` and a ``label`` (``"TASK seed S:"``) added."""
    records = []
    for task in tasks:
        for seed in seeds:
            for r in read_jsonl(os.path.join(run_dir(out, task, method, seed), "gate_timeline.jsonl")):
                records.append(dict(r, task=task, seed=int(seed), label=f"{task} seed {int(seed)}:"))
    return records
