"""Method comparison: methods x tasks x seeds with identical budgets, demos and operator.

  python benchmarks/compare.py --methods=hil_serl,hil_serl+uniintervene \
      --tasks=pick-place,peg-insert-side,assembly,sweep-into,box-close --seeds=0,1,2 \
      --max_env_steps=30000 --out=benchmarks/results/compare [--parallel=1] [--report_only] \
      [--baseline=hil_serl] [--eval_period=2500] [--eval_episodes=10] \
      [--machine="2 CPU cores, no GPU"] [-- --config.X=Y ...]

Methods are algorithm names of ``configs/algorithms.py`` (``ALGORITHMS``), tasks the keys of
``configs/tasks.py`` (``TASK_OVERRIDES``). What is held identical across the methods of a task:
the env-step budget (``--config.actor.max_env_steps``: ``--max_env_steps`` or the task's config
default when 0, always passed explicitly), the demos folder (``demos/TASK``, collected once per
task before any run, sequentially, so parallel runs never race on it), the simulated operator
config (nothing here overrides it; extra ``--config`` flags after ``--`` go to every run), the
evaluation schedule (``--eval_period``, ``--eval_episodes``) and the seeds. The report checks the
resolved ``actor_config.json`` of every run and lists any difference in those settings.

Each run is ``bash launchers/run_task.sh TASK,METHOD --config.seed=S ...`` (learner and actor as
two processes), its folder ``OUT/runs/TASK/METHOD/seedS``, its log
``OUT/logs/log_TASK_METHOD_seedS.txt``. ``--parallel=N`` runs N at a time, each with its own
port pair (``--base_port + 10 * slot`` and ``+1``). Runs that hold ``summary.json`` are skipped
(the command resumes); a run folder without one is removed and restarted.

Afterwards (or with ``--report_only``) every finished run is aggregated into ``OUT/results.json``,
``OUT/results.md``, ``OUT/curves.png`` and ``OUT/timeline.png`` (see :func:`report`).

Definitions used in the outputs (per run, from ``summary.json``):
  SR  final evaluation success rate (``eval_success_rate``: the last evaluation of the run,
      deterministic policy, ``eval_episodes`` fresh seeded episodes, no operator, no gate).
  IR  intervention rate over the whole run (``intervention_rate`` = human-operator steps / all
      env steps, agent steps at the config's action repeat).
Per task and method: mean and sample standard deviation (ddof=1; "-" with one seed) over seeds.
Against the baseline method (``--baseline``), per task, from the seed means:
  IR reduction   ``(IR_base - IR_m) / IR_base`` in % (positive = fewer interventions; undefined
                 when IR_base is 0).
  SR difference  ``SR_m - SR_base`` in percentage points.
  target         IR reduction >= 50 % and SR_m >= SR_base (the issue's target; the paper
                 reports -57 % IR and +8.6 points SR for UniIntervene vs HiL-SERL).
The "average" row averages the per-task seed means over the tasks where every method has at
least one finished run, and computes the reduction / difference from those averages.
"""

import concurrent.futures
import json
import math
import os
import queue
import shlex
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare_plots  # noqa: E402

PAPER_REFERENCE = "UniIntervene vs HiL-SERL (paper, real robot): -57% IR, +8.6% SR"
TARGET_IR_REDUCTION = 0.5  # Relative IR cut a method needs on a task (issue target).
TARGET_TASKS, TARGET_SEEDS = 4, 3  # ... on at least 4 of the 5 tasks with at least 3 seeds.
DEFAULT_MACHINE = "2 CPU cores, no GPU"
_EPS = 1e-9

_METHODS = flags.DEFINE_list("methods", ["hil_serl", "hil_serl+uniintervene"],
                             "Algorithm names of configs/algorithms.py to compare.")
_TASKS = flags.DEFINE_list("tasks", ["pick-place", "peg-insert-side", "assembly", "sweep-into", "box-close"],
                           "Tasks (keys of configs/tasks.py TASK_OVERRIDES).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every method runs every seed.")
_MAX_STEPS = flags.DEFINE_integer("max_env_steps", 0, "Env-step budget per run (0: each task's config default).")
_OUT = flags.DEFINE_string("out", "benchmarks/results/compare", "Output folder.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at a time (each is a learner + an actor process).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only aggregate the runs that exist.")
_BASELINE = flags.DEFINE_string("baseline", "hil_serl", "Method the others are compared against.")
_EVAL_PERIOD = flags.DEFINE_integer("eval_period", 2500, "Env steps between evaluations.")
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 10, "Episodes per evaluation.")
_NUM_DEMOS = flags.DEFINE_integer("num_demos", 20, "Scripted demos per task (shared by every method).")
_BASE_PORT = flags.DEFINE_integer("base_port", 5600, "Run slot k uses ports base + 10k and base + 10k + 1.")
_MACHINE = flags.DEFINE_string("machine", DEFAULT_MACHINE, "Where the runs ran, for the report header.")


# ----------------------------------------------------------------------------------------------
# Validation and run commands


def validate(methods: Sequence[str], tasks: Sequence[str], baseline: str) -> None:
    """Checks names against ``configs.algorithms.ALGORITHMS`` and ``configs.tasks.TASK_OVERRIDES``.

    Raises:
      ValueError: an unknown method or task (the message lists the known ones), no methods or
        tasks, duplicates, or a baseline that is not among the methods.
    """
    from configs.algorithms import ALGORITHMS
    from configs.tasks import TASK_OVERRIDES

    if not methods or not tasks:
        raise ValueError("--methods and --tasks must not be empty")
    unknown = [m for m in methods if m not in ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known algorithms (configs/algorithms.py): {sorted(ALGORITHMS)}")
    unknown = [t for t in tasks if t not in TASK_OVERRIDES]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known tasks (configs/tasks.py): {sorted(TASK_OVERRIDES)}")
    for name, values in (("methods", methods), ("tasks", tasks)):
        if len(set(values)) != len(values):
            raise ValueError(f"--{name} has duplicates: {list(values)}")
    if baseline not in methods:
        raise ValueError(f"--baseline={baseline!r} is not among --methods={list(methods)}")


def task_budget(task: str, max_env_steps: int = 0) -> int:
    """Env-step budget of every run of ``task``: ``max_env_steps`` when > 0, else the task's
    ``configs/tasks.py`` default (agent steps after action repeat)."""
    from configs.tasks import TASK_OVERRIDES

    return int(max_env_steps) if max_env_steps and max_env_steps > 0 else int(TASK_OVERRIDES[task]["max_env_steps"])


def run_dir(out: str, task: str, method: str, seed) -> str:
    """``OUT/runs/TASK/METHOD/seedS`` (= ``serl_ext.loop.common.run_dir_for`` with run_root OUT/runs)."""
    return os.path.join(out, "runs", task, method, f"seed{int(seed)}")


def log_path(out: str, task: str, method: str, seed) -> str:
    return os.path.join(out, "logs", f"log_{task}_{method}_seed{int(seed)}.txt")


def ports_for_slot(slot: int, base_port: int = 5600):
    """(data port, broadcast port) of concurrent run slot ``slot``: ``base + 10 slot`` and ``+1``."""
    port = int(base_port) + 10 * int(slot)
    return port, port + 1


def build_run_command(out: str, task: str, method: str, seed, budget: int, slot: int = 0,
                      eval_period: int = 2500, eval_episodes: int = 10, base_port: int = 5600,
                      extra: Sequence[str] = ()) -> List[str]:
    """The argv of one run (executed with cwd = repo root).

    ``bash launchers/run_task.sh TASK,METHOD --config.seed=S --config.run_root=OUT/runs
    --config.actor.eval_period=.. --config.actor.eval_episodes=.. --config.logging.progress_bar=False
    --config.transport.port=P --config.transport.broadcast_port=P+1
    --config.actor.max_env_steps=BUDGET EXTRA...``. The budget is always explicit, so an
    algorithm override can never give one method a different budget.
    """
    port, bport = ports_for_slot(slot, base_port)
    return [
        "bash", "launchers/run_task.sh", f"{task},{method}",
        f"--config.seed={int(seed)}",
        f"--config.run_root={os.path.join(os.path.abspath(out), 'runs')}",
        f"--config.actor.eval_period={int(eval_period)}",
        f"--config.actor.eval_episodes={int(eval_episodes)}",
        "--config.logging.progress_bar=False",
        f"--config.transport.port={port}",
        f"--config.transport.broadcast_port={bport}",
        f"--config.actor.max_env_steps={int(budget)}",
        *extra,
    ]


def _subprocess_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def collect_demos(out: str, tasks: Sequence[str], num_demos: int) -> None:
    """Collects the scripted demos of every task once, sequentially (no-op where present), so
    that every method of a task trains from the same ``demos/TASK`` folder.

    Raises:
      RuntimeError: demo collection failed (see ``OUT/logs/demos_TASK.txt``).
    """
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    for task in tasks:
        cmd = [sys.executable, "launchers/collect_demos.py", f"--task={task}", f"--num_demos={int(num_demos)}"]
        print("[compare] demos:", " ".join(cmd), flush=True)
        logp = os.path.join(out, "logs", f"demos_{task}.txt")
        with open(logp, "w") as logf:
            proc = subprocess.run(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, env=_subprocess_env())
        if proc.returncode != 0:
            raise RuntimeError(f"demo collection for {task} failed (exit {proc.returncode}); see {logp}")


def launch_runs(out: str, tasks: Sequence[str], methods: Sequence[str], seeds: Sequence, max_env_steps: int,
                parallel: int = 1, eval_period: int = 2500, eval_episodes: int = 10, base_port: int = 5600,
                extra: Sequence[str] = ()) -> Dict[str, int]:
    """Runs every (task, method, seed) that has no ``summary.json`` yet, ``parallel`` at a time.

    Order: seed-major (all tasks and methods of seed 0 first), so an interrupted sweep leaves
    complete comparisons. Every concurrent run holds its own slot and port pair. Prints a line
    per start and finish (elapsed minutes) and a tqdm bar over the runs.

    Returns:
      ``{"done_before": n, "ok": n, "failed": n}``.
    """
    from tqdm import tqdm

    jobs, done_before = [], 0
    for seed in seeds:
        for task in tasks:
            for method in methods:
                rdir = run_dir(out, task, method, seed)
                if os.path.exists(os.path.join(rdir, "summary.json")):
                    done_before += 1
                    continue
                jobs.append((task, method, int(seed)))
    print(f"[compare] {done_before} runs done already, {len(jobs)} to run, {max(1, parallel)} at a time", flush=True)
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    slots: "queue.Queue[int]" = queue.Queue()
    for k in range(max(1, int(parallel))):
        slots.put(k)
    lock = threading.Lock()
    counts = {"done_before": done_before, "ok": 0, "failed": 0}
    t_start = time.time()
    bar = tqdm(total=len(jobs), desc="runs", unit="run")

    def one(job):
        task, method, seed = job
        rdir = run_dir(out, task, method, seed)
        if os.path.isdir(rdir):  # An interrupted run restarts from scratch (clean timings, no mixed state).
            shutil.rmtree(rdir)
        slot = slots.get()
        try:
            cmd = build_run_command(out, task, method, seed, task_budget(task, max_env_steps), slot=slot,
                                    eval_period=eval_period, eval_episodes=eval_episodes,
                                    base_port=base_port, extra=extra)
            t0 = time.time()
            with lock:
                tqdm.write(f"[compare] start {task} {method} seed {seed} (slot {slot}, "
                           f"{(t0 - t_start) / 60:.1f} min into the sweep): {shlex.join(cmd)}")
            with open(log_path(out, task, method, seed), "w") as logf:
                proc = subprocess.run(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, env=_subprocess_env())
            ok = proc.returncode == 0 and os.path.exists(os.path.join(rdir, "summary.json"))
            with lock:
                counts["ok" if ok else "failed"] += 1
                tqdm.write(f"[compare] {'done' if ok else 'FAILED'} {task} {method} seed {seed}: exit "
                           f"{proc.returncode} after {(time.time() - t0) / 60:.1f} min"
                           + ("" if ok else f" (log: {log_path(out, task, method, seed)})"))
                bar.update(1)
        finally:
            slots.put(slot)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(parallel))) as pool:
        for fut in [pool.submit(one, j) for j in jobs]:
            fut.result()
    bar.close()
    print(f"[compare] sweep finished in {(time.time() - t_start) / 60:.1f} min: {counts}", flush=True)
    return counts


# ----------------------------------------------------------------------------------------------
# Reading runs


def _read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _read_jsonl(path: str) -> List[dict]:
    from serl_ext.loop.logging import read_jsonl

    return read_jsonl(path) if os.path.exists(path) else []


def load_run(rdir: str) -> Optional[dict]:
    """One finished run (``summary.json`` present) as a flat dict, or None.

    Keys: task, method, seed, final_sr (``eval_success_rate``), best_sr
    (``best_eval_success_rate``), ir (``intervention_rate``), human_steps, recovery_steps,
    env_steps, episodes, train_sr, learner_steps, wall_min (``wall_clock_s`` / 60),
    action_repeat, eval_episodes, gate (every summary key starting with ``gate``),
    eval_curve [(env_steps, SR)], ir_curve [(env_steps, cumulative IR) per episode end from
    ``metrics/actor.jsonl``], fairness (operator / demos / budget / eval settings from
    ``actor_config.json``), run_dir.
    """
    s = _read_json(os.path.join(rdir, "summary.json"))
    if s is None:
        return None
    actor = _read_jsonl(os.path.join(rdir, "metrics", "actor.jsonl"))
    cfg = _read_json(os.path.join(rdir, "actor_config.json")) or {}
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
        "ir_curve": [(r["step"], r["intervention/rate"]) for r in actor if r.get("intervention/rate") is not None],
        **episode_metrics(actor, s.get("env_steps")),
        "learner_ups": (_read_json(os.path.join(rdir, "learner_summary.json")) or {}).get("updates_per_s"),
        # policy + gate, no human (actor evaluations with uniintervene.eval_with_gate; runs
        # without a gate: the policy alone is the whole system)
        "system_sr": (s.get("eval_system_success_rate") if any(k.startswith("gate") for k in s)
                      else float(s["eval_success_rate"])),
        "fairness": fairness,
        "run_dir": rdir,
    }


def add_system_eval(runs: List[dict], path: str) -> None:
    """Fills ``system_sr`` of runs that lack it from ``benchmarks/system_eval.py`` output at
    ``path`` (matched by task, method and seed), when that file exists."""
    data = _read_json(path)
    if not data:
        return
    found = {(r["task"], r["algorithm"], int(r["seed"])): r["system_success_rate"] for r in data.get("runs", [])}
    for r in runs:
        if r.get("system_sr") is None:
            r["system_sr"] = found.get((r["task"], r["method"], r["seed"]))


def _median(values):
    return float(np.median(values)) if values else None


def episode_metrics(actor_rows: Sequence[dict], env_steps: Optional[int]) -> dict:
    """Secondary metrics from the per-episode rows of ``metrics/actor.jsonl``.

    ``auto_sr``: fraction of training episodes that succeeded with no human step (policy and
    recovery alone); ``ir_last`` / ``auto_sr_last``: IR (human steps / steps) and ``auto_sr``
    over the episodes that ended in the last quarter of the run's env steps (after the gate
    had time to become active); ``steps_per_takeover``: human steps / human segments (takeovers)
    over the run (None without a takeover); ``auto_length``: mean length of the autonomous
    successes (None without one). None when no episode row exists.
    """
    eps = [r for r in actor_rows if r.get("intervention/steps") is not None and r.get("rollout/length")]
    if not eps:
        return {"auto_sr": None, "ir_last": None, "auto_sr_last": None, "steps_per_takeover": None,
                "auto_length": None}

    def autonomous_success(r):
        return float(r.get("rollout/success", 0.0)) > 0 and r["intervention/steps"] == 0

    def auto(rows):
        return float(np.mean([autonomous_success(r) for r in rows]))

    cut = 0.75 * float(env_steps or max(r["step"] for r in eps))
    last = [r for r in eps if r["step"] > cut] or eps[-1:]
    ir_last = sum(r["intervention/steps"] for r in last) / max(sum(r["rollout/length"] for r in last), 1)
    segments = sum(float(r.get("intervention/segments", 0.0)) for r in eps)
    per_takeover = sum(r["intervention/steps"] for r in eps) / segments if segments else None
    auto_lengths = [r["rollout/length"] for r in eps if autonomous_success(r)]
    return {"auto_sr": auto(eps), "ir_last": float(ir_last), "auto_sr_last": auto(last),
            "steps_per_takeover": per_takeover,
            "auto_length": float(np.mean(auto_lengths)) if auto_lengths else None}


def load_runs(out: str, tasks: Sequence[str], methods: Sequence[str], seeds: Sequence) -> List[dict]:
    """Every finished run of the sweep, ordered task, method, seed (missing runs are skipped).
    The task / method / seed of a row are those of its folder."""
    rows = []
    for task in tasks:
        for method in methods:
            for seed in seeds:
                r = load_run(run_dir(out, task, method, seed))
                if r is not None:
                    r.update(task=task, method=method, seed=int(seed))
                    rows.append(r)
    return rows


def load_timelines(out: str, tasks: Sequence[str], method: str, seeds: Sequence) -> List[dict]:
    """Records of ``gate_timeline.jsonl`` of every run of ``method``, each with ``task``,
    ``seed`` and a ``label`` added."""
    records = []
    for task in tasks:
        for seed in seeds:
            for r in _read_jsonl(os.path.join(run_dir(out, task, method, seed), "gate_timeline.jsonl")):
                r = dict(r, task=task, seed=int(seed), label=f"{task} seed {int(seed)}:")
                records.append(r)
    return records


# ----------------------------------------------------------------------------------------------
# Aggregation


def _mean(values):
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _std(values):
    """Sample standard deviation (ddof=1); None with fewer than 2 values."""
    values = [float(v) for v in values if v is not None]
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def compare_to_baseline(sr_base, ir_base, sr_m, ir_m) -> dict:
    """``ir_reduction_pct`` = 100 (IR_base - IR_m) / IR_base (None when IR_base is 0 or a value is
    missing), ``sr_diff_points`` = 100 (SR_m - SR_base), ``target_met`` = IR reduction >= 50 %
    and SR_m >= SR_base (None when undecidable)."""
    if None in (sr_base, ir_base, sr_m, ir_m):
        return {"ir_reduction_pct": None, "sr_diff_points": None, "target_met": None}
    red = None if ir_base <= 0 else 100.0 * (ir_base - ir_m) / ir_base
    diff = 100.0 * (sr_m - sr_base)
    met = None if red is None else bool(red >= 100.0 * TARGET_IR_REDUCTION - _EPS and sr_m >= sr_base - _EPS)
    return {"ir_reduction_pct": red, "sr_diff_points": diff, "target_met": met}


def aggregate(runs: Sequence[Mapping], tasks: Sequence[str], methods: Sequence[str], seeds: Sequence,
              baseline: str) -> dict:
    """Aggregates finished runs into the comparison table.

    Returns a dict:
      ``per_task[task][method]``: n_seeds, seeds, complete (all asked seeds finished), sr_mean,
        sr_std, ir_mean, ir_std, best_sr_mean (None where the method has no run on the task).
      ``comparisons[task][method]`` for every non-baseline method (and task ``"average"``): the
        output of :func:`compare_to_baseline` on the seed means plus ``enough_seeds`` (both
        methods have >= 3 seeds on the task).
      ``average[method]``: sr_mean, ir_mean over ``average_tasks`` (tasks where every method has
        >= 1 finished run).
      ``target[method]``: tasks_met (list), tasks_met_with_seeds (met and >= 3 seeds),
        n_tasks (tasks compared), met (>= 4 tasks met with >= 3 seeds).
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
                "sr_mean": _mean([r["final_sr"] for r in rs]),
                "sr_std": _std([r["final_sr"] for r in rs]),
                "ir_mean": _mean([r["ir"] for r in rs]),
                "ir_std": _std([r["ir"] for r in rs]),
                "best_sr_mean": _mean([r["best_sr"] for r in rs]),
            }
    avg_tasks = [t for t in tasks if all(per_task[t][m]["n_seeds"] > 0 for m in methods)]
    average = {m: {"sr_mean": _mean([per_task[t][m]["sr_mean"] for t in avg_tasks]),
                   "ir_mean": _mean([per_task[t][m]["ir_mean"] for t in avg_tasks])} for m in methods}
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


def fairness_issues(runs: Sequence[Mapping], tasks: Sequence[str]) -> List[str]:
    """Differences, within a task, in the settings every method must share (operator config,
    demos, env-step budget, eval period / episodes, action repeat), read from each run's
    ``actor_config.json``; one message per differing setting. Runs without the file are skipped."""
    issues = []
    for task in tasks:
        rs = [r for r in runs if r["task"] == task and r.get("fairness")]
        if len(rs) < 2:
            continue
        for key in ("operator", "demos", "max_env_steps", "eval_period", "eval_episodes", "action_repeat"):
            values = {json.dumps(r["fairness"].get(key), sort_keys=True) for r in rs}
            if len(values) > 1:
                who = sorted({f"{r['method']}/seed{r['seed']}" for r in rs})
                issues.append(f"{task}: `{key}` differs across runs ({len(values)} variants among {', '.join(who)})")
    return issues


# ----------------------------------------------------------------------------------------------
# Report


def _fmt(v, p=2):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{p}f}" if isinstance(v, float) else str(v)


def _pm(mean, std, p):
    if mean is None:
        return "-"
    return f"{mean:.{p}f} ± {std:.{p}f}" if std is not None else f"{mean:.{p}f}"


def _signed(v, p=1, unit=""):
    return "-" if v is None else f"{v:+.{p}f}{unit}"


def _verdict(v):
    return "-" if v is None else ("yes" if v else "no")


def first_uniintervene_method(methods: Sequence[str]) -> Optional[str]:
    """The first method whose name contains ``uniintervene`` (the timeline figure's method)."""
    return next((m for m in methods if "uniintervene" in m), None)


def report(out: str, tasks: Sequence[str], methods: Sequence[str], seeds: Sequence, baseline: str = "hil_serl",
           max_env_steps: int = 0, eval_period: int = 2500, eval_episodes: int = 10,
           machine: str = DEFAULT_MACHINE, command: Optional[str] = None, parallel: int = 1,
           num_demos: int = 20) -> dict:
    """Aggregates the finished runs under ``out`` and writes ``results.json``, ``results.md``,
    ``curves.png`` and ``timeline.png`` (when a gate timeline exists).

    ``results.md`` columns: main table per task (and "average"): for each method ``SR`` (final
    eval SR, mean ± sample std over seeds) and ``IR`` (whole-run intervention rate, mean ± std);
    for each non-baseline method ``IR cut`` = relative IR reduction vs the baseline in %,
    ``ΔSR`` = SR difference in points, ``target`` = IR cut >= 50 % and SR not lower. ``[n/N]``
    marks a cell with only n of the N asked seeds finished. Per-run table: task, method, seed,
    final SR, best SR (best evaluation of the run), IR, recovery steps (env steps executed by
    the UniIntervene recovery policy), env steps, wall-clock minutes, gate keys of the summary.

    Returns:
      The ``results.json`` content.
    Raises:
      ValueError: invalid names (see :func:`validate`).
    """
    validate(methods, tasks, baseline)
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    runs = load_runs(out, tasks, methods, seeds)
    add_system_eval(runs, os.path.join(out, "system_eval.json"))
    agg = aggregate(runs, tasks, methods, seeds, baseline)
    budgets, budget_notes = {}, []
    for t in tasks:  # The budget the runs were given (actor_config.json), else the one asked.
        asked = task_budget(t, max_env_steps)
        used = sorted({r["fairness"].get("max_env_steps") for r in runs if r["task"] == t and r.get("fairness")
                       and r["fairness"].get("max_env_steps") is not None})
        budgets[t] = int(used[0]) if len(used) == 1 else asked
        if used and used != [asked]:
            budget_notes.append(f"{t}: runs used {', '.join(f'{u:,}' for u in used)} env steps "
                                f"(this command's --max_env_steps gives {asked:,})")
    for key, asked in (("eval_period", eval_period), ("eval_episodes", eval_episodes)):
        used = sorted({r["fairness"].get(key) for r in runs if r.get("fairness") and r["fairness"].get(key) is not None})
        if len(used) == 1 and used[0] != asked:
            budget_notes.append(f"runs used {key}={used[0]} (this command's flag: {asked}); reported as used")
            if key == "eval_period":
                eval_period = int(used[0])
            else:
                eval_episodes = int(used[0])
    issues = fairness_issues(runs, tasks)
    repeats = sorted({r["action_repeat"] for r in runs if r.get("action_repeat") is not None})
    action_repeat = ", ".join(str(a) for a in repeats) if repeats else "4 (config default; no run read yet)"
    runs_command = None
    if os.path.exists(os.path.join(out, "command.txt")):
        with open(os.path.join(out, "command.txt")) as f:
            runs_command = f.read().strip() or None
    others = [m for m in methods if m != baseline]
    n_asked = len(seeds)

    # ---- plots
    curves = {t: {m: {"eval": [r["eval_curve"] for r in runs if r["task"] == t and r["method"] == m],
                      "ir": [r["ir_curve"] for r in runs if r["task"] == t and r["method"] == m]}
                  for m in methods} for t in tasks}
    compare_plots.plot_curves(os.path.join(out, "curves.png"), curves, tasks, methods, budgets=budgets)
    ui_method = first_uniintervene_method(methods)
    timeline_note, timeline_episodes = None, []
    timeline_path = os.path.join(out, "timeline.png")
    if ui_method is None:
        timeline_note = "no UniIntervene method in --methods: no gate timeline figure."
    else:
        records = load_timelines(out, tasks, ui_method, seeds)
        timeline_episodes = compare_plots.select_timeline_episodes(records, k=3)
        if not timeline_episodes:
            timeline_note = (f"no `gate_timeline.jsonl` episodes found for {ui_method}: "
                             "no gate timeline figure.")
        else:
            compare_plots.plot_timeline(timeline_path, timeline_episodes, method=ui_method)
    if timeline_note and os.path.exists(timeline_path):
        os.remove(timeline_path)  # A stale figure from an earlier report would mislead.

    # ---- results.json
    result = {
        "command": runs_command or command,
        "report_command": command,
        "machine": machine,
        "parallel": parallel,
        "methods": list(methods),
        "baseline": baseline,
        "tasks": list(tasks),
        "seeds": [int(s) for s in seeds],
        "budget_env_steps": budgets,
        "action_repeat": action_repeat,
        "eval": {"period_env_steps": eval_period, "episodes": eval_episodes},
        "num_demos": num_demos,
        "paper_reference": PAPER_REFERENCE,
        "target_rule": {"ir_reduction_min": TARGET_IR_REDUCTION, "sr_not_lower": True,
                        "tasks_needed": TARGET_TASKS, "seeds_needed": TARGET_SEEDS},
        **agg,
        "fairness_issues": issues,
        "budget_notes": budget_notes,
        "timeline": {"method": ui_method, "episodes": [
            {k: e.get(k) for k in ("task", "seed", "episode", "env_steps", "success")} for e in timeline_episodes],
            "note": timeline_note},
        "runs": [{k: v for k, v in r.items() if k not in ("eval_curve", "ir_curve", "fairness")} for r in runs],
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)

    # ---- results.md
    def mark(task, method):
        n = agg["per_task"][task][method]["n_seeds"]
        return "" if n >= n_asked else f" [{n}/{n_asked}]"

    lines = [f"# Method comparison: {', '.join(methods)} (baseline {baseline})", ""]
    lines.append(f"Command: `{runs_command or command}`")
    if command and runs_command and command != runs_command:
        lines.append(f"Report regenerated with: `{command}`")
    budget_txt = ", ".join(f"{t} {b:,}" for t, b in budgets.items())
    lines += [
        "",
        f"Machine: {machine}; each run = learner + actor processes, {parallel} run(s) at a time.",
        f"Budget (identical for every method of a task): env steps per run: {budget_txt} "
        f"(agent steps, action repeat {action_repeat}); {num_demos} scripted demos per task (`demos/TASK`, "
        "shared); the same simulated operator config; extra `--config` flags given to every run.",
        f"Seeds asked: {', '.join(str(int(s)) for s in seeds)} ({n_asked} per task and method).",
        f"Evaluation: {eval_episodes} deterministic episodes on fresh seeded envs every {eval_period:,} env steps, "
        "no operator; SR = the run's last evaluation. IR = human-operator steps / all env steps over the whole run.",
        "Cells: mean ± sample std over seeds; `[n/N]` = only n of the N asked seeds finished. "
        "IR cut = (IR_base - IR) / IR_base; ΔSR = SR - SR_base in points; "
        f"target = IR cut >= {100 * TARGET_IR_REDUCTION:.0f}% and SR >= SR_base. "
        f"Average = mean of the task means over {len(agg['average_tasks'])} task(s) with runs of every method.",
        f"Paper reference: {PAPER_REFERENCE}.",
        "",
    ]
    if budget_notes:
        lines[-1:-1] = [f"Note: {n}." for n in budget_notes]
    header = ["task"]
    for m in methods:
        header += [f"{m} SR", f"{m} IR"]
    for m in others:
        header += [f"{m} IR cut", f"{m} ΔSR (pts)", f"{m} target"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in tasks:
        row = [task]
        for m in methods:
            t = agg["per_task"][task][m]
            row += [_pm(t["sr_mean"], t["sr_std"], 2) + mark(task, m), _pm(t["ir_mean"], t["ir_std"], 3) + mark(task, m)]
        for m in others:
            c = agg["comparisons"][task][m]
            row += [_signed(c["ir_reduction_pct"], 1, "%"), _signed(c["sr_diff_points"], 1),
                    _verdict(c["target_met"]) + ("" if c["enough_seeds"] or c["target_met"] is None else " (< 3 seeds)")]
        lines.append("| " + " | ".join(row) + " |")
    row = ["**average**"]
    for m in methods:
        a = agg["average"][m]
        row += [_fmt(a["sr_mean"], 2), _fmt(a["ir_mean"], 3)]
    for m in others:
        c = agg["comparisons"]["average"][m]
        row += [_signed(c["ir_reduction_pct"], 1, "%"), _signed(c["sr_diff_points"], 1), _verdict(c["target_met"])]
    lines += ["| " + " | ".join(row) + " |", ""]
    for m in others:
        t = agg["target"][m]
        lines.append(
            f"- **{m}**: target met on {len(t['tasks_met'])} of {t['n_tasks']} tasks "
            f"({len(t['tasks_met_with_seeds'])} with >= {TARGET_SEEDS} seeds per method; "
            f"need {TARGET_TASKS} of 5 with >= {TARGET_SEEDS} seeds): **{'met' if t['met'] else 'not met'}**"
            + (f" (met on: {', '.join(t['tasks_met'])})" if t["tasks_met"] else ""))
    missing = [f"{t}/{m} ({agg['per_task'][t][m]['n_seeds']}/{n_asked})" for t in tasks for m in methods
               if not agg["per_task"][t][m]["complete"]]
    if missing:
        lines.append(f"- Fewer seeds than asked: {', '.join(missing)}.")
    lines.append("")
    if issues:
        lines += ["**Settings that differ between runs of a task (the comparison is not like for like):**", ""]
        lines += [f"- {i}" for i in issues] + [""]
    else:
        lines += ["Checked from every run's `actor_config.json`: operator, demos, budget, eval schedule and "
                  "action repeat are identical within each task.", ""]
    lines += ["Secondary metrics (from `metrics/actor.jsonl`; mean over finished seeds): IR over the "
              "last quarter of the run (`IR last 25%`), and the fraction of training episodes that "
              "succeeded with no human step (`autonomous SR`, whole run / last 25%), and the operator "
              "steps per takeover (human steps / human segments: once in control the operator often "
              "finishes the episode, so each takeover costs tens of steps) against the length of an "
              "autonomous success. `system SR`: the last evaluation with the run's gate on top of the "
              "policy and no human (the whole system acting alone; for a method without a gate, its SR; "
              "from `summary.json` or `system_eval.json` of `benchmarks/system_eval.py`).", "",
              "| task | method | seeds | IR last 25% | autonomous SR | autonomous SR last 25% | train SR (with operator) "
              "| operator steps per takeover | autonomous success length | system SR (policy + gate, no human) "
              "| learner updates/s (median, next to the actor) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        for m in methods:
            rs = [r for r in runs if r["task"] == task and r["method"] == m]
            if not rs:
                continue

            def mean_of(key):
                vals = [r[key] for r in rs if r.get(key) is not None]
                return float(np.mean(vals)) if vals else None

            lines.append(f"| {task} | {m} | {len(rs)} | {_fmt(mean_of('ir_last'), 3)} | {_fmt(mean_of('auto_sr'))} | "
                         f"{_fmt(mean_of('auto_sr_last'))} | {_fmt(mean_of('train_sr'))} | "
                         f"{_fmt(mean_of('steps_per_takeover'), 1)} | {_fmt(mean_of('auto_length'), 1)} | "
                         f"{_fmt(mean_of('system_sr'))} | "
                         f"{_fmt(_median([r['learner_ups'] for r in rs if r.get('learner_ups') is not None]), 0)} |")
    for m in methods:
        ups = [r["learner_ups"] for r in runs if r["method"] == m and r.get("learner_ups") is not None]
        p50 = [r["gate"]["gate_latency_ms_p50"] for r in runs if r["method"] == m and r["gate"].get("gate_latency_ms_p50")]
        p99 = [r["gate"]["gate_latency_ms_p99"] for r in runs if r["method"] == m and r["gate"].get("gate_latency_ms_p99")]
        line = f"- {m}: learner updates/s median over all runs {_fmt(_median(ups), 0)}"
        if p50:
            line += (f"; gate decision latency per run p50 {min(p50):.2f}-{max(p50):.2f} ms, "
                     f"p99 {min(p99):.1f}-{max(p99):.1f} ms")
        lines.append(line)
    lines.append("")
    lines += ["Per run:", "",
              "| task | method | seed | final SR | best SR | IR | recovery steps | env steps | wall min | gate |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        gate = ", ".join(f"{k}={_fmt(v, 3) if isinstance(v, float) else v}" for k, v in r["gate"].items()) or "-"
        lines.append(
            f"| {r['task']} | {r['method']} | {r['seed']} | {_fmt(r['final_sr'])} | {_fmt(r['best_sr'])} | "
            f"{_fmt(r['ir'], 3)} | {_fmt(r['recovery_steps'])} | {_fmt(r['env_steps'])} | "
            f"{_fmt(r['wall_min'], 1)} | {gate} |")
    if not runs:
        lines.append("| (no finished runs) | | | | | | | | | |")
    lines += ["", "![curves](curves.png)", "",
              "Curves: top, evaluation SR against env steps; bottom, cumulative IR (from `metrics/actor.jsonl`); "
              "line = mean over seeds, band = min-max.", ""]
    if timeline_note:
        lines += [f"Gate timeline: {timeline_note}", ""]
    else:
        eps = "; ".join(f"{e['task']} seed {e['seed']} episode {e.get('episode')}" for e in timeline_episodes)
        lines += ["![timeline](timeline.png)", "",
                  f"Gate timeline ({ui_method}; {eps}): proxy value and sigmoid risk per step with the threshold "
                  "tau, triggers marked, background = who acted (white policy, green recovery, red human). "
                  "Episodes chosen by `compare_plots.select_timeline_episodes`: base-policy steps, then a "
                  "trigger, then recovery, successful ones first, one per task first.", ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    return result


def main(argv):
    extra = list(argv[1:])
    methods, tasks = list(_METHODS.value), list(_TASKS.value)
    try:
        seeds = [int(s) for s in _SEEDS.value]
        validate(methods, tasks, _BASELINE.value)
    except ValueError as e:
        raise app.UsageError(str(e))
    out = os.path.abspath(_OUT.value)
    os.makedirs(out, exist_ok=True)
    command = "python benchmarks/compare.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not _REPORT_ONLY.value:
        with open(os.path.join(out, "command.txt"), "w") as f:
            f.write(command + "\n")
        collect_demos(out, tasks, _NUM_DEMOS.value)
        launch_runs(out, tasks, methods, seeds, _MAX_STEPS.value, parallel=_PARALLEL.value,
                    eval_period=_EVAL_PERIOD.value, eval_episodes=_EVAL_EPISODES.value,
                    base_port=_BASE_PORT.value, extra=extra)
    report(out, tasks, methods, seeds, baseline=_BASELINE.value, max_env_steps=_MAX_STEPS.value,
           eval_period=_EVAL_PERIOD.value, eval_episodes=_EVAL_EPISODES.value, machine=_MACHINE.value,
           command=command, parallel=_PARALLEL.value, num_demos=_NUM_DEMOS.value)


if __name__ == "__main__":
    app.run(main)
