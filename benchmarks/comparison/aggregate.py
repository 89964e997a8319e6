"""Aggregating the runs of a comparison: seed statistics, the comparison with the baseline and
the issue's target, and the settings the runs were given.

Per task and method: mean and sample standard deviation (ddof=1) over seeds; against the
baseline, from the seed means, the relative IR reduction in %, the SR difference in points and
the target (:func:`compare_to_baseline`; the definitions are spelled out in the docstring of
``benchmarks/compare.py``). The target is met for a method when it holds on >= 4 tasks with
>= 3 seeds per method (:func:`aggregate`).
"""

import json
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from benchmarks.comparison.launch import task_budget
from benchmarks.comparison.load import FAIRNESS_KEYS, SELECTIVITY_KEYS

PAPER_REFERENCE = "UniIntervene vs HiL-SERL (paper, real robot): -57% IR, +8.6% SR"
TARGET_IR_REDUCTION = 0.5  # Relative IR cut a method needs on a task (issue target).
TARGET_TASKS, TARGET_SEEDS = 4, 3  # ... on at least 4 of the 5 tasks with at least 3 seeds.
_EPS = 1e-9


def mean(values) -> Optional[float]:
    """Mean of the values that are not None (as floats); None when none is left."""
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def sample_std(values) -> Optional[float]:
    """Sample standard deviation (ddof=1) of the values that are not None; None with fewer
    than 2 of them."""
    values = [float(v) for v in values if v is not None]
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def median(values) -> Optional[float]:
    """Median of the values that are not None; None when none is left."""
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def compare_to_baseline(sr_base, ir_base, sr_m, ir_m) -> dict:
    """The comparison of one method's seed means (SR, IR in [0, 1]) with the baseline's.

    Returns:
      ``ir_reduction_pct`` = 100 (IR_base - IR_m) / IR_base (None when IR_base is 0 or a value
      is missing), ``sr_diff_points`` = 100 (SR_m - SR_base), ``target_met`` = IR reduction
      >= 50 % and SR_m >= SR_base (None when undecidable).
    """
    if None in (sr_base, ir_base, sr_m, ir_m):
        return {"ir_reduction_pct": None, "sr_diff_points": None, "target_met": None}
    red = None if ir_base <= 0 else 100.0 * (ir_base - ir_m) / ir_base
    diff = 100.0 * (sr_m - sr_base)
    met = None if red is None else bool(red >= 100.0 * TARGET_IR_REDUCTION - _EPS and sr_m >= sr_base - _EPS)
    return {"ir_reduction_pct": red, "sr_diff_points": diff, "target_met": met}


def aggregate(runs: Sequence[Mapping], tasks: Sequence[str], methods: Sequence[str], seeds: Sequence,
              baseline: str) -> dict:
    """Aggregates finished runs (``load.load_runs`` rows) into the comparison table.

    Returns a dict:
      ``per_task[task][method]``: n_seeds, seeds, complete (all asked seeds finished), sr_mean,
        sr_std, ir_mean, ir_std, best_sr_mean (None where the method has no run on the task).
      ``comparisons[task][method]`` for every non-baseline method (and task ``"average"``): the
        output of :func:`compare_to_baseline` on the seed means plus ``enough_seeds`` (both
        methods have >= 3 seeds on the task; None for the average).
      ``average[method]``: sr_mean, ir_mean over ``average_tasks`` (tasks where every method has
        >= 1 finished run).
      ``target[method]``: tasks_met (list), tasks_met_with_seeds (met and >= 3 seeds),
        n_tasks (tasks compared), met (>= 4 tasks met with >= 3 seeds).
      ``baseline``, ``seeds_asked``.
    """
    n_asked = len(seeds)
    per_task: Dict[str, Dict[str, dict]] = {}
    for task in tasks:
        per_task[task] = {}
        for method in methods:
            rs = [r for r in runs if r["task"] == task and r["method"] == method]
            per_task[task][method] = {
                "n_seeds": len(rs),
                "seeds": [r["seed"] for r in rs],
                "complete": len(rs) >= n_asked,
                "sr_mean": mean([r["final_sr"] for r in rs]),
                "sr_std": sample_std([r["final_sr"] for r in rs]),
                "ir_mean": mean([r["ir"] for r in rs]),
                "ir_std": sample_std([r["ir"] for r in rs]),
                "best_sr_mean": mean([r["best_sr"] for r in rs]),
            }
    avg_tasks = [t for t in tasks if all(per_task[t][m]["n_seeds"] > 0 for m in methods)]
    average = {m: {"sr_mean": mean([per_task[t][m]["sr_mean"] for t in avg_tasks]),
                   "ir_mean": mean([per_task[t][m]["ir_mean"] for t in avg_tasks])} for m in methods}
    comparisons: Dict[str, Dict[str, dict]] = {}
    target = {}
    others = [m for m in methods if m != baseline]
    for task in list(tasks) + ["average"]:
        comparisons[task] = {}
        for m in others:
            if task == "average":
                b, x = average[baseline], average[m]
                enough = None
            else:
                b, x = per_task[task][baseline], per_task[task][m]
                enough = per_task[task][baseline]["n_seeds"] >= TARGET_SEEDS and per_task[task][m]["n_seeds"] >= TARGET_SEEDS
            c = compare_to_baseline(b["sr_mean"], b["ir_mean"], x["sr_mean"], x["ir_mean"])
            c["enough_seeds"] = enough
            comparisons[task][m] = c
    for m in others:
        compared = [t for t in tasks if comparisons[t][m]["target_met"] is not None]
        met = [t for t in compared if comparisons[t][m]["target_met"]]
        met_seeds = [t for t in met if comparisons[t][m]["enough_seeds"]]
        target[m] = {"tasks_met": met, "tasks_met_with_seeds": met_seeds, "n_tasks": len(compared),
                     "met": len(met_seeds) >= TARGET_TASKS}
    return {"per_task": per_task, "comparisons": comparisons, "average": average, "average_tasks": avg_tasks,
            "target": target, "baseline": baseline, "seeds_asked": [int(s) for s in seeds]}


def selectivity(runs: Sequence[Mapping], tasks: Sequence[str], methods: Sequence[str]) -> dict:
    """The selectivity table: per task and method, the seed means of the
    ``load.selectivity_metrics`` keys.

    Args:
      runs: ``load.load_runs`` rows (each with the :data:`load.SELECTIVITY_KEYS`).
      tasks, methods: the table's rows.
    Returns:
      ``{"per_task": {task: {method: {"n_seeds": int, KEY: mean over the seeds where KEY is
      not None, or None}}}, "windows": sorted list of the distinct ``selectivity_window`` values
      (N, env steps) of the runs that report one}``. A task / method without runs is absent.
    """
    per_task: Dict[str, Dict[str, dict]] = {}
    for task in tasks:
        per_task[task] = {}
        for method in methods:
            rs = [r for r in runs if r["task"] == task and r["method"] == method]
            if rs:
                per_task[task][method] = {"n_seeds": len(rs),
                                          **{k: mean([r.get(k) for r in rs]) for k in SELECTIVITY_KEYS}}
    windows = sorted({int(r["selectivity_window"]) for r in runs if r.get("selectivity_window") is not None})
    return {"per_task": per_task, "windows": windows}


def fairness_issues(runs: Sequence[Mapping], tasks: Sequence[str]) -> List[str]:
    """Differences, within a task, in the settings every method must share (operator config,
    demos, env-step budget, eval period / episodes, action repeat), read from each run's
    ``actor_config.json``; one message per differing setting. Runs without the file are skipped."""
    issues = []
    for task in tasks:
        rs = [r for r in runs if r["task"] == task and r.get("fairness")]
        if len(rs) < 2:
            continue
        for key in FAIRNESS_KEYS:
            values = {json.dumps(r["fairness"].get(key), sort_keys=True) for r in rs}
            if len(values) > 1:
                who = sorted({f"{r['method']}/seed{r['seed']}" for r in rs})
                issues.append(f"{task}: `{key}` differs across runs ({len(values)} variants among {', '.join(who)})")
    return issues


def settings_used(runs: Sequence[Mapping], tasks: Sequence[str], max_env_steps: int, eval_period: int,
                  eval_episodes: int) -> dict:
    """The budget and evaluation schedule the runs were given (their ``actor_config.json``),
    against the ones this command asks for.

    Args:
      runs: ``load.load_runs`` rows. tasks: task names.
      max_env_steps: the command's ``--max_env_steps`` (0: task defaults, :func:`launch.task_budget`).
      eval_period, eval_episodes: the command's evaluation flags.
    Returns:
      ``budgets`` ({task: env steps}: the one budget the task's runs used, else the one asked),
      ``eval_period`` and ``eval_episodes`` (the one value every run used, else the one asked),
      ``notes`` (a sentence for each setting where the runs differ from the command).
    """
    budgets, notes = {}, []
    for t in tasks:
        asked = task_budget(t, max_env_steps)
        used = sorted({r["fairness"].get("max_env_steps") for r in runs if r["task"] == t and r.get("fairness")
                       and r["fairness"].get("max_env_steps") is not None})
        budgets[t] = int(used[0]) if len(used) == 1 else asked
        if used and used != [asked]:
            notes.append(f"{t}: runs used {', '.join(f'{u:,}' for u in used)} env steps "
                         f"(this command's --max_env_steps gives {asked:,})")
    schedule = {"eval_period": eval_period, "eval_episodes": eval_episodes}
    for key, asked in list(schedule.items()):
        used = sorted({r["fairness"].get(key) for r in runs if r.get("fairness") and r["fairness"].get(key) is not None})
        if len(used) == 1 and used[0] != asked:
            notes.append(f"runs used {key}={used[0]} (this command's flag: {asked}); reported as used")
            schedule[key] = int(used[0])
    return {"budgets": budgets, **schedule, "notes": notes}
