"""Per-episode metrics of a run folder's ``metrics/actor.jsonl`` and budget selection, shared by
``benchmarks/hil_serl.py`` and the comparison scripts. Steps are env (agent) steps."""

from typing import Any, Dict, List, Optional, Sequence

import numpy as np


def episode_rows(actor_metrics: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per training episode: ``step`` (env steps at its end), ``length``, ``human``
    (operator steps), ``segments`` (takeovers), ``success`` (bool)."""
    rows = []
    for r in actor_metrics:
        if "rollout/length" not in r or "intervention/steps" not in r:
            continue
        rows.append({"step": int(r["step"]), "length": int(r["rollout/length"]),
                     "human": int(r["intervention/steps"]),
                     "segments": int(r.get("intervention/segments", 0)),
                     "success": bool(r.get("rollout/success", 0))})
    return rows


def ir_between(episodes: Sequence[Dict[str, Any]], start: float, end: float) -> Optional[float]:
    """Operator steps / all steps of the episodes ending in ``(start, end]``; None if none."""
    chosen = [e for e in episodes if start < e["step"] <= end]
    total = sum(e["length"] for e in chosen)
    return sum(e["human"] for e in chosen) / total if total else None


def truncate_history(history: Sequence[Dict[str, Any]], budget: int) -> List[Dict[str, Any]]:
    """Evaluation entries (``env_steps``, ``success_rate``, ``wall_clock_s``) at or before
    ``budget`` env steps."""
    return [h for h in history if h["env_steps"] <= budget]


def steps_to(history: Sequence[Dict[str, Any]], key: str, target: float) -> Optional[float]:
    """``key`` of the first evaluation with ``success_rate >= target``; None if none."""
    for h in history:
        if h["success_rate"] >= target:
            return h[key]
    return None


def converged_step(histories: Sequence[Sequence[Dict[str, Any]]], target: float,
                   cap: int) -> Optional[int]:
    """The first evaluation step from which the median SR over the runs stays >= ``target``.

    Args:
      histories: one evaluation history per seed (entries with ``env_steps``, ``success_rate``).
      target: SR threshold in [0, 1].
      cap: the last env step the runs reached (evaluations after it are ignored).
    Returns:
      The env-step budget, or None when the median never stays at the target to the end.
      Only evaluation steps present in every history count.
    """
    per_step: Dict[int, List[float]] = {}
    for history in histories:
        for h in history:
            if h["env_steps"] <= cap:
                per_step.setdefault(int(h["env_steps"]), []).append(float(h["success_rate"]))
    steps = sorted(s for s, v in per_step.items() if len(v) == len(histories))
    budget = None
    for s in reversed(steps):
        if np.median(per_step[s]) >= target:
            budget = s
        else:
            break
    return budget


def select_budget(histories: Sequence[Sequence[Dict[str, Any]]], target: float, cap: int,
                  factor: float = 1.5, round_to: int = 10_000) -> Optional[int]:
    """The HiL-SERL row's env-step budget: ``factor`` x the converged step, rounded up to a
    multiple of ``round_to`` and capped at ``cap`` (the runs' length).

    The margin past the first point at SR >= target lets the row show a trained policy over
    the run's last quarter (the operator issue asks for IR there below half the whole run's);
    it is the same rule for every task and fixed before any other method runs. Returns None
    when the median never stays at the target (``converged_step``).
    """
    step = converged_step(histories, target, cap)
    if step is None:
        return None
    budget = int(-(-int(factor * step) // round_to) * round_to)
    return min(budget, int(cap))


def source_rows(actor_metrics: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Steps by action source of each training episode of ``metrics/actor.jsonl``.

    Args:
      actor_metrics: the file's rows. An episode row carries ``rollout/length``; its sources are
        read from ``selectivity/{policy, recovery, human}_steps`` (``serl_ext/loop/sources.py``)
        or, in rows written before those keys, from ``intervention/steps`` (human) and
        ``intervention/recovery_steps`` (recovery), policy being the rest of the length.
        Other rows (evaluations, faults) and episode rows with neither are skipped.
    Returns:
      One dict per episode, in file order: ``step`` (env steps at its end), ``length``,
      ``policy``, ``recovery``, ``human`` (ints, env steps).
    """
    rows = []
    for r in actor_metrics:
        if "rollout/length" not in r:
            continue
        length = int(r["rollout/length"])
        if "selectivity/policy_steps" in r:
            policy, recovery, human = (int(r[f"selectivity/{k}_steps"]) for k in ("policy", "recovery", "human"))
        elif "intervention/steps" in r and "intervention/recovery_steps" in r:
            human, recovery = int(r["intervention/steps"]), int(r["intervention/recovery_steps"])
            policy = length - human - recovery
        else:
            continue
        rows.append({"step": int(r["step"]), "length": length, "policy": policy, "recovery": recovery,
                     "human": human})
    return rows


def source_fractions(rows: Sequence[Dict[str, Any]]) -> Optional[Dict[str, float]]:
    """``{"policy", "recovery", "human"}``: each source's steps / all steps of ``rows``
    (:func:`source_rows` dicts), floats in [0, 1] summing to 1; None when the rows hold no step."""
    total = sum(r["policy"] + r["recovery"] + r["human"] for r in rows)
    if not total:
        return None
    return {k: sum(r[k] for r in rows) / total for k in ("policy", "recovery", "human")}
