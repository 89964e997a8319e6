"""HiL-SERL benchmark on the simulated tasks: tasks x seeds through the real launchers.

  python benchmarks/hil_serl.py --tasks=pick-place,assembly --seeds=0,1,2 \
      --out=benchmarks/results/hil_serl [--max_env_steps=40000] [-- extra --config flags]

Each run is ``launchers/run_task.sh TASK,hil_serl --config.seed=S ...`` (learner and actor as
two processes on this machine, 20 scripted demos, the simulated operator). Runs already holding
a ``summary.json`` are skipped, so the command resumes. Afterwards (or with ``--report_only``)
it aggregates every run's ``summary.json``, ``metrics/actor.jsonl`` and
``metrics/learner.jsonl`` into ``results.json``, ``results.md`` and ``curves.png`` (evaluation
SR and cumulative IR against env steps and wall-clock minutes) in ``--out``.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

_TASKS = flags.DEFINE_list("tasks", ["pick-place", "assembly"], "Tasks to run.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run.")
_ALGO = flags.DEFINE_string("algorithm", "hil_serl", "Algorithm config name.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/hil_serl", "Output folder.")
_MAX_STEPS = flags.DEFINE_integer("max_env_steps", 0, "Env steps per run (0: task config).")
_EVAL_PERIOD = flags.DEFINE_integer("eval_period", 2500, "Env steps between evaluations.")
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 10, "Episodes per evaluation.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only aggregate existing runs.")
_TARGET_SR = flags.DEFINE_float("target_sr", 0.9, "SR threshold for time-to-target columns.")


def _run_dir(out, task, seed):
    return os.path.join(out, "runs", task, _ALGO.value, f"seed{seed}")


def run_one(out, task, seed, extra):
    run_dir = _run_dir(out, task, seed)
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        print(f"[bench] {task} seed {seed}: done already, skipping")
        return
    if os.path.isdir(run_dir):  # An interrupted run restarts from scratch for clean timings.
        shutil.rmtree(run_dir)
    flags_ = [
        f"--config.seed={seed}",
        f"--config.run_root={os.path.join(out, 'runs')}",
        f"--config.actor.eval_period={_EVAL_PERIOD.value}",
        f"--config.actor.eval_episodes={_EVAL_EPISODES.value}",
        "--config.logging.progress_bar=False",
    ]
    if _MAX_STEPS.value:
        flags_.append(f"--config.actor.max_env_steps={_MAX_STEPS.value}")
    cmd = ["bash", "launchers/run_task.sh", f"{task},{_ALGO.value}", *flags_, *extra]
    print("[bench]", " ".join(cmd), flush=True)
    t0 = time.time()
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(out, f"log_{task}_seed{seed}.txt"), "w") as logf:
        proc = subprocess.run(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT)
    print(f"[bench] {task} seed {seed}: exit {proc.returncode} after {(time.time() - t0) / 60:.1f} min", flush=True)


def _read_jsonl(path):
    from serl_ext.loop.logging import read_jsonl

    return read_jsonl(path) if os.path.exists(path) else []


def _time_to(history, key, target):
    for h in history:
        if h["success_rate"] >= target:
            return h[key]
    return None


def aggregate(out):
    rows = []
    for task in _TASKS.value:
        for seed in _SEEDS.value:
            run_dir = _run_dir(out, task, seed)
            path = os.path.join(run_dir, "summary.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                summary = json.load(f)
            learner = {}
            if os.path.exists(os.path.join(run_dir, "learner_summary.json")):
                with open(os.path.join(run_dir, "learner_summary.json")) as f:
                    learner = json.load(f)
            train = _read_jsonl(os.path.join(run_dir, "metrics", "learner.jsonl"))
            rates = [r["train/updates_per_s"] for r in train if r.get("train/updates_per_s")]
            actor = _read_jsonl(os.path.join(run_dir, "metrics", "actor.jsonl"))
            lat = [r["rollout/policy_latency_ms"] for r in actor if r.get("rollout/policy_latency_ms")]
            step_lat = [r["rollout/step_latency_ms"] for r in actor if r.get("rollout/step_latency_ms")]
            ir_curve = [(r["step"], r["wall_s"], r["intervention/rate"]) for r in actor if "intervention/rate" in r]
            hist = summary["eval_history"]
            rows.append({
                "task": task,
                "seed": int(seed),
                "final_eval_sr": summary["eval_success_rate"],
                "best_eval_sr": summary["best_eval_success_rate"],
                "intervention_rate": summary["intervention_rate"],
                "env_steps": summary["env_steps"],
                "wall_clock_min": summary["wall_clock_s"] / 60,
                "learner_steps": learner.get("learner_steps"),
                "learner_updates_per_s_median": float(np.median(rates)) if rates else None,
                "actor_policy_latency_ms_median": float(np.median(lat)) if lat else None,
                "actor_step_latency_ms_median": float(np.median(step_lat)) if step_lat else None,
                "env_steps_to_target": _time_to(hist, "env_steps", _TARGET_SR.value),
                "minutes_to_target": (lambda v: v / 60 if v is not None else None)(
                    _time_to(hist, "wall_clock_s", _TARGET_SR.value)),
                "eval_history": hist,
                "ir_curve": ir_curve,
            })
    return rows


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def report(out, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in _TASKS.value if any(r["task"] == t for r in rows)]
    per_task = {}
    for task in tasks:
        rs = [r for r in rows if r["task"] == task]
        per_task[task] = {
            "seeds": [r["seed"] for r in rs],
            "final_eval_sr_median": _median([r["final_eval_sr"] for r in rs]),
            "best_eval_sr_median": _median([r["best_eval_sr"] for r in rs]),
            "intervention_rate_median": _median([r["intervention_rate"] for r in rs]),
            "wall_clock_min_median": _median([r["wall_clock_min"] for r in rs]),
            "minutes_to_target_median": _median([r["minutes_to_target"] for r in rs])
            if all(r["minutes_to_target"] is not None for r in rs) else None,
            "env_steps_to_target_median": _median([r["env_steps_to_target"] for r in rs])
            if all(r["env_steps_to_target"] is not None for r in rs) else None,
            "learner_updates_per_s_median": _median([r["learner_updates_per_s_median"] for r in rs]),
            "actor_policy_latency_ms_median": _median([r["actor_policy_latency_ms_median"] for r in rs]),
            "actor_step_latency_ms_median": _median([r["actor_step_latency_ms_median"] for r in rs]),
        }
    result = {
        "algorithm": _ALGO.value,
        "target_sr": _TARGET_SR.value,
        "machine": f"{os.cpu_count()} CPU cores, no GPU; learner and actor as separate processes",
        "per_task": per_task,
        "runs": [{k: v for k, v in r.items() if k not in ("eval_history", "ir_curve")} for r in rows],
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)

    def fmt(v, p=2):
        return "-" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))

    lines = [
        f"# {_ALGO.value} benchmark", "",
        f"Command: `python benchmarks/hil_serl.py --tasks={','.join(_TASKS.value)} --seeds={','.join(_SEEDS.value)}"
        + (f" --max_env_steps={_MAX_STEPS.value}" if _MAX_STEPS.value else "") + "`", "",
        f"Machine: {result['machine']}. Eval: {_EVAL_EPISODES.value} deterministic episodes every "
        f"{_EVAL_PERIOD.value} env steps (agent steps at action repeat 4). Medians over seeds.", "",
        "| task | seeds | final eval SR | best eval SR | IR | min to SR>=%.0f%% | env steps to SR>=%.0f%% | wall min | learner upd/s | actor policy ms | actor step ms |"
        % (100 * _TARGET_SR.value, 100 * _TARGET_SR.value),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, t in per_task.items():
        lines.append(
            f"| {task} | {len(t['seeds'])} | {fmt(t['final_eval_sr_median'])} | {fmt(t['best_eval_sr_median'])} | "
            f"{fmt(t['intervention_rate_median'], 3)} | {fmt(t['minutes_to_target_median'], 1)} | "
            f"{fmt(t['env_steps_to_target_median'], 0)} | {fmt(t['wall_clock_min_median'], 1)} | "
            f"{fmt(t['learner_updates_per_s_median'], 0)} | {fmt(t['actor_policy_latency_ms_median'], 2)} | "
            f"{fmt(t['actor_step_latency_ms_median'], 2)} |"
        )
    lines += ["", "Per run:", "", "| task | seed | final SR | best SR | IR | env steps | wall min | min to target |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['seed']} | {fmt(r['final_eval_sr'])} | {fmt(r['best_eval_sr'])} | "
            f"{fmt(r['intervention_rate'], 3)} | {r['env_steps']} | {fmt(r['wall_clock_min'], 1)} | "
            f"{fmt(r['minutes_to_target'], 1)} |"
        )
    lines += ["", "![curves](curves.png)", ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines))

    fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 3.6 * max(len(tasks), 1)), squeeze=False)
    for i, task in enumerate(tasks):
        for r in [r for r in rows if r["task"] == task]:
            h = r["eval_history"]
            axes[i, 0].plot([x["env_steps"] for x in h], [x["success_rate"] for x in h], marker=".", label=f"seed {r['seed']}")
            axes[i, 1].plot([x["wall_clock_s"] / 60 for x in h], [x["success_rate"] for x in h], marker=".", label=f"seed {r['seed']}")
            c = r["ir_curve"]
            axes[i, 2].plot([x[0] for x in c], [x[2] for x in c], label=f"seed {r['seed']}")
        axes[i, 0].set(title=f"{task}: eval SR", xlabel="env steps", ylabel="success rate", ylim=(-0.05, 1.05))
        axes[i, 1].set(title=f"{task}: eval SR", xlabel="wall clock (min)", ylim=(-0.05, 1.05))
        axes[i, 1].axvline(15, color="gray", ls="--", lw=0.8)
        axes[i, 2].set(title=f"{task}: cumulative IR", xlabel="env steps", ylabel="operator steps / all steps")
        for ax in axes[i]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=110)
    print("\n".join(lines))


def main(argv):
    extra = argv[1:]
    out = os.path.abspath(_OUT.value)
    os.makedirs(out, exist_ok=True)
    if not _REPORT_ONLY.value:
        for task in _TASKS.value:
            for seed in _SEEDS.value:
                run_one(out, task, seed, extra)
    report(out, aggregate(out))


if __name__ == "__main__":
    app.run(main)
