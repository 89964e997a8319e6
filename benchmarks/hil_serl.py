"""HiL-SERL row of the paper's table: tasks x seeds through the real launchers, resumable.

  python benchmarks/hil_serl.py --tasks=pick-place,assembly --seeds=0,1,2 \
      --out=benchmarks/results/hil_serl_row [--budgets=pick-place:60000,...] [--commit] \
      [-- extra --config flags]

Each run is ``launchers/run_task.sh TASK,hil_serl --config.seed=S ...`` (learner and actor as
two processes on this machine, 20 scripted demos, the simulated operator), with
``--eval_episodes`` deterministic evaluation episodes on fixed seeds every ``--eval_period`` env
steps. Runs already holding a ``summary.json`` are skipped, so the command resumes (an
interrupted run restarts from scratch). After each run the final policy is exported to the run
folder (``policy.msgpack``, the actor's parameters; ``benchmarks/operator_ladder.py`` loads
it), and with ``--commit`` the run's folder and the report are committed to git at once.
Afterwards (or with ``--report_only``) every run's ``summary.json`` and ``metrics/*.jsonl`` are
aggregated into ``results.json``, ``results.md`` and ``curves.png`` in ``--out``.

Budget selection: the *converged step* is the first evaluation point from which the median
evaluation SR over the seeds stays >= ``--select_sr`` (0.8) up to the end of the runs; the
per-task budget is ``--budget_factor`` (1.5) x that, rounded up to 10k env steps and capped at
the runs' length (``benchmarks.run_metrics.select_budget``). The table reports the runs
*truncated at that budget* (eval SR at the budget, IR over the run up to it and over its last
quarter), which is what a run with that ``max_env_steps`` would have logged. Time to SR: the env
steps and the wall-clock minutes (actor and learner as two processes on this machine) to the
first evaluation with SR >= 0.8 and >= 0.9 (the end-to-end measure of issue 14 item 7).
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.comparison.aggregate import median as _median  # noqa: E402
from benchmarks.comparison.launch import run_dir as _run_dir  # noqa: E402
from benchmarks.comparison.load import read_json, read_jsonl  # noqa: E402
from benchmarks.comparison.render import _fmt as fmt  # noqa: E402
from benchmarks.run_metrics import (  # noqa: E402
    converged_step, episode_rows, ir_between, select_budget, steps_to, truncate_history)
from serl_ext.files import atomic_write  # noqa: E402


def parse_budgets(text: str) -> dict:
    """``"pick-place:60000,assembly:80000"`` -> ``{"pick-place": 60000, ...}``.

    Raises ValueError on a malformed entry or a budget < 1.
    """
    budgets = {}
    for item in [x for x in text.split(",") if x]:
        task, sep, steps = item.partition(":")
        if not sep or not steps.isdigit() or int(steps) < 1:
            raise ValueError(f"budget entry {item!r} is not TASK:ENV_STEPS")
        budgets[task] = int(steps)
    return budgets


def export_policy(run_dir: str) -> str:
    """Writes the final checkpoint's policy parameters to ``run_dir/policy.msgpack``.

    The file holds ``agent.policy_params()`` (numpy arrays) as msgpack
    (``flax.serialization``), loadable with ``load_policy`` and the run's config; no pickle.
    Raises FileNotFoundError when the run has no checkpoint.
    """
    from flax import serialization

    from benchmarks.system_eval import config_from_run
    from serl_ext.loop import common
    from serl_ext.files import atomic_write
    from serl_ext.loop.checkpoint import Checkpointer

    config = config_from_run(run_dir)
    agent, _, _ = common.agent_for_task(config)
    checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
    try:
        if checkpointer.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {run_dir}/checkpoints")
        agent, _, _ = checkpointer.restore(agent)
    finally:
        checkpointer.close()
    path = os.path.join(run_dir, "policy.msgpack")
    atomic_write(path, serialization.msgpack_serialize(agent.policy_params()))
    return path


def load_policy(run_dir: str):
    """The agent of a finished run with the parameters of its ``policy.msgpack``.

    Raises FileNotFoundError when the file is missing.
    """
    from flax import serialization

    from benchmarks.system_eval import config_from_run
    from serl_ext.loop import common

    path = os.path.join(run_dir, "policy.msgpack")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing; export it with benchmarks/hil_serl.py")
    config = config_from_run(run_dir)
    agent, _, _ = common.agent_for_task(config)
    with open(path, "rb") as f:
        params = serialization.msgpack_restore(f.read())
    return agent.load_policy_params(params), config


def git_commit(paths, message: str) -> None:
    """``git add`` + ``git commit -- paths`` (only these absolute paths, in the repository that
    holds them, which may be another checkout than the code's), retried on a busy index."""
    cwd = os.path.dirname(os.path.abspath(paths[0]))
    for attempt in range(10):
        add = subprocess.run(["git", "add", "--", *paths], cwd=cwd, capture_output=True, text=True)
        if add.returncode == 0:
            commit = subprocess.run(["git", "commit", "-q", "-m", message, "--", *paths], cwd=cwd,
                                    capture_output=True, text=True)
            said = commit.stdout + commit.stderr
            if commit.returncode == 0 or "nothing to commit" in said or "no changes added to commit" in said:
                return
            err = (commit.stderr + commit.stdout).strip()
        else:
            err = add.stderr
        if "index.lock" not in err:
            print(f"[bench] git commit failed: {err.strip()}", flush=True)
            return
        time.sleep(3 + attempt)


def run_one(args, out, task, seed, extra):
    run_dir = _run_dir(out, task, args.algorithm, seed)
    if os.path.exists(os.path.join(run_dir, "summary.json")):
        print(f"[bench] {task} seed {seed}: done already, skipping", flush=True)
        return False
    if os.path.isdir(run_dir):  # An interrupted run restarts from scratch for clean timings.
        shutil.rmtree(run_dir)
    flags_ = [
        f"--config.seed={seed}",
        f"--config.run_root={os.path.join(out, 'runs')}",
        f"--config.actor.eval_period={args.eval_period}",
        f"--config.actor.eval_episodes={args.eval_episodes}",
        "--config.logging.progress_bar=False",
    ]
    budget = args.budgets.get(task) or args.max_env_steps
    if budget:
        flags_.append(f"--config.actor.max_env_steps={budget}")
    cmd = ["bash", "launchers/run_task.sh", f"{task},{args.algorithm}", *flags_, *extra]
    print("[bench]", " ".join(cmd), flush=True)
    t0 = time.time()
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(out, f"log_{task}_seed{seed}.txt"), "w") as logf:
        proc = subprocess.run(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT)
    print(f"[bench] {task} seed {seed}: exit {proc.returncode} after "
          f"{(time.time() - t0) / 60:.1f} min", flush=True)
    if proc.returncode == 0:
        export_policy(run_dir)
    return proc.returncode == 0


def aggregate(args, out):
    """Per run: the summary plus per-episode rows and eval history (all steps are env steps)."""
    rows = []
    for task in args.tasks:
        for seed in args.seeds:
            run_dir = _run_dir(out, task, args.algorithm, seed)
            summary = read_json(os.path.join(run_dir, "summary.json"))
            if summary is None:
                continue
            actor = read_jsonl(os.path.join(run_dir, "metrics", "actor.jsonl"))
            learner = read_jsonl(os.path.join(run_dir, "metrics", "learner.jsonl"))
            rates = [r["train/updates_per_s"] for r in learner if r.get("train/updates_per_s")]
            rows.append({
                "task": task, "seed": int(seed), "summary": summary,
                "episodes": episode_rows(actor),
                "eval_history": summary["eval_history"],
                "action_repeat": ((read_json(os.path.join(run_dir, "actor_config.json")) or {})
                                  .get("env", {}).get("action_repeat")),
                "learner_updates_per_s_median": float(np.median(rates)) if rates else None,
                "updates_per_env_step": (summary.get("learner_steps") or 0)
                / max(int(summary["env_steps"]), 1),
            })
    return rows


def row_at_budget(row, budget, target_sr=0.8):
    """One run truncated at ``budget`` env steps (module docstring); ``target_sr`` is the SR
    whose first crossing the ``*_to_target`` fields time."""
    hist = truncate_history(row["eval_history"], budget)
    eps = [e for e in row["episodes"] if e["step"] <= budget]
    at = hist[-1] if hist else None
    return {
        "task": row["task"], "seed": row["seed"], "budget": budget,
        "eval_sr": at["success_rate"] if at else None,
        "eval_step": at["env_steps"] if at else None,
        "minutes": at["wall_clock_s"] / 60 if at else None,
        "ir": ir_between(eps, 0, budget),
        "ir_last_quarter": ir_between(eps, 0.75 * budget, budget),
        "takeovers_per_episode": float(np.mean([e["segments"] for e in eps])) if eps else None,
        "takeovers_per_episode_last_quarter": float(np.mean(
            [e["segments"] for e in eps if e["step"] > 0.75 * budget] or [np.nan])),
        "train_sr": float(np.mean([e["success"] for e in eps])) if eps else None,
        "autonomous_sr_last_quarter": float(np.mean(
            [e["success"] and e["human"] == 0 for e in eps if e["step"] > 0.75 * budget]
            or [np.nan])),
        "env_steps_to_target": steps_to(hist, "env_steps", target_sr),
        "minutes_to_target": (lambda v: None if v is None else v / 60)(
            steps_to(hist, "wall_clock_s", target_sr)),
        # issue 14 item 7: end to end, actor and learner as two processes, to 90% evaluation SR
        "env_steps_to_90": steps_to(hist, "env_steps", 0.9),
        "minutes_to_90": (lambda v: None if v is None else v / 60)(steps_to(hist, "wall_clock_s", 0.9)),
    }


def report(args, out, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in args.tasks if any(r["task"] == t for r in rows)]
    per_task, per_run = {}, []
    for task in tasks:
        rs = [r for r in rows if r["task"] == task]
        cap = min(r["summary"]["env_steps"] for r in rs)
        histories = [r["eval_history"] for r in rs]
        converged = converged_step(histories, args.select_sr, cap)
        budget = select_budget(histories, args.select_sr, cap, args.budget_factor)
        used = budget or cap
        truncated = [row_at_budget(r, used, args.select_sr) for r in rs]
        per_run += truncated
        keys = ("eval_sr", "ir", "ir_last_quarter", "takeovers_per_episode",
                "takeovers_per_episode_last_quarter", "train_sr", "autonomous_sr_last_quarter",
                "env_steps_to_target", "minutes_to_target", "env_steps_to_90", "minutes_to_90")
        per_task[task] = {"seeds": [r["seed"] for r in rs], "run_env_steps": cap,
                          "converged_step": converged, "budget": budget,
                          "budget_met": budget is not None,
                          **{f"{k}_median": _median([t[k] for t in truncated]) for k in keys},
                          "eval_sr_mean": float(np.mean([t["eval_sr"] for t in truncated])),
                          "ir_mean": float(np.mean([t["ir"] for t in truncated])),
                          "ir_std": float(np.std([t["ir"] for t in truncated])),
                          "learner_updates_per_s_median": _median(
                              [r["learner_updates_per_s_median"] for r in rs]),
                          "updates_per_env_step": [round(r["updates_per_env_step"], 2)
                                                   for r in rs]}
    result = {"algorithm": args.algorithm, "command": args.command, "select_sr": args.select_sr,
              "eval_episodes": args.eval_episodes, "eval_period": args.eval_period,
              "machine": f"{os.cpu_count()} CPU cores, no GPU; learner and actor as two processes",
              "per_task": per_task, "runs": per_run}
    atomic_write(os.path.join(out, "results.json"), json.dumps(result, indent=2).encode())

    repeats = ", ".join(
        f"{t} {'/'.join(str(x) for x in sorted({r.get('action_repeat') for r in rows if r['task'] == t}, key=str))}"
        for t in tasks)
    lines = [
        f"# {args.algorithm}: the HiL-SERL row", "",
        f"Command: `{args.command}`", "",
        f"Machine: {result['machine']}. Evaluation: {args.eval_episodes} deterministic episodes "
        f"on fixed seeds, no human, every {args.eval_period} env steps (env steps: agent steps "
        f"x the task's action repeat: {repeats}). Converged: the first evaluation point from which the median eval SR over "
        f"the seeds stays >= {args.select_sr} to the end of the runs; budget = "
        f"{args.budget_factor} x that, rounded up to 10k, capped at the run length; the runs "
        f"are reported truncated at the budget. IR = operator steps / all steps of the training episodes. Medians "
        f"over seeds.", "",
        "| task | seeds | run length | converged | budget | eval SR at budget (median / mean) | IR whole run | "
        "IR last quarter | takeovers / episode (whole / last quarter) | train SR | "
        "autonomous SR, last quarter | env steps to SR >= 0.8 | minutes to SR >= 0.8 | "
        "minutes to SR >= 0.9 | learner updates per env step (per seed, whole run) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, t in per_task.items():
        lines.append(
            f"| {task} | {len(t['seeds'])} | {t['run_env_steps']} | {fmt(t['converged_step'])} | "
            f"{t['budget'] if t['budget'] else 'not met (' + str(t['run_env_steps']) + ')'} | "
            f"{fmt(t['eval_sr_median'])} / {fmt(t['eval_sr_mean'])} | "
            f"{fmt(t['ir_median'], 3)} (mean {fmt(t['ir_mean'], 3)} ± {fmt(t['ir_std'], 3)}) | "
            f"{fmt(t['ir_last_quarter_median'], 3)} | {fmt(t['takeovers_per_episode_median'])} / "
            f"{fmt(t['takeovers_per_episode_last_quarter_median'])} | {fmt(t['train_sr_median'])} | "
            f"{fmt(t['autonomous_sr_last_quarter_median'])} | "
            f"{fmt(t['env_steps_to_target_median'], 0)} | {fmt(t['minutes_to_target_median'], 1)} | "
            f"{fmt(t['minutes_to_90_median'], 1)} | {' / '.join(f'{x:.2f}' for x in t['updates_per_env_step'])} |")
    lines += ["", "Per run (truncated at the task's budget):", "",
              "| task | seed | eval SR | IR | IR last quarter | takeovers / ep | "
              "env steps to 0.8 | minutes to 0.8 | env steps to 0.9 | minutes to 0.9 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in per_run:
        lines.append(
            f"| {r['task']} | {r['seed']} | {fmt(r['eval_sr'])} | {fmt(r['ir'], 3)} | "
            f"{fmt(r['ir_last_quarter'], 3)} | {fmt(r['takeovers_per_episode'])} | "
            f"{fmt(r['env_steps_to_target'], 0)} | {fmt(r['minutes_to_target'], 1)} | "
            f"{fmt(r['env_steps_to_90'], 0)} | {fmt(r['minutes_to_90'], 1)} |")
    lines += ["", "![curves](curves.png)", ""]
    atomic_write(os.path.join(out, "results.md"), "\n".join(lines).encode())

    if not tasks:  # no finished run yet: the tables say so, there is nothing to plot
        print("\n".join(lines), flush=True)
        return
    fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 3.4 * max(len(tasks), 1)), squeeze=False)
    for i, task in enumerate(tasks):
        budget = per_task[task]["budget"]
        for r in [r for r in rows if r["task"] == task]:
            h = r["eval_history"]
            axes[i, 0].plot([x["env_steps"] for x in h], [x["success_rate"] for x in h],
                            marker=".", label=f"seed {r['seed']}")
            eps = r["episodes"]
            window = 5000
            xs = list(range(window, int(r["summary"]["env_steps"]) + 1, 1000))
            axes[i, 1].plot(xs, [ir_between(eps, x - window, x) for x in xs],
                            label=f"seed {r['seed']}")
            axes[i, 2].plot([x["wall_clock_s"] / 60 for x in h], [x["success_rate"] for x in h],
                            marker=".", label=f"seed {r['seed']}")
        axes[i, 0].set(title=f"{task}: eval SR (no human)", xlabel="env steps", ylim=(-0.05, 1.05))
        axes[i, 1].set(title=f"{task}: IR over the last 5k env steps", xlabel="env steps",
                       ylim=(-0.02, 1.0))
        axes[i, 2].set(title=f"{task}: eval SR", xlabel="wall clock (min)", ylim=(-0.05, 1.05))
        for ax in axes[i, :2]:
            if budget:
                ax.axvline(budget, color="gray", ls="--", lw=0.8)
        for ax in axes[i]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=100)
    plt.close(fig)
    print("\n".join(lines), flush=True)


def parse_args(argv):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="pick-place,assembly")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--algorithm", default="hil_serl")
    parser.add_argument("--out", default="benchmarks/results/hil_serl_row")
    parser.add_argument("--max_env_steps", type=int, default=0, help="0: task config")
    parser.add_argument("--budgets", default="", help="TASK:ENV_STEPS,... (over --max_env_steps)")
    parser.add_argument("--eval_period", type=int, default=5000)
    parser.add_argument("--eval_episodes", type=int, default=20)
    parser.add_argument("--select_sr", type=float, default=0.8)
    parser.add_argument("--budget_factor", type=float, default=1.5,
                        help="budget = this x the converged step, rounded up to 10k")
    parser.add_argument("--order", choices=("seed", "task"), default="seed",
                        help="seed: all tasks of seed 0 first, then seed 1, ...")
    parser.add_argument("--report_only", action="store_true")
    parser.add_argument("--commit", action="store_true", help="git-commit each finished run")
    parser.add_argument("--stop_by", default="", help="start no run not expected to finish by this time "
                        "(ISO 8601, UTC unless an offset is given; expected = the longest finished run)")
    parser.add_argument("--stop_after_min", type=float, default=0.0, help="--stop_by this many minutes from now")
    parser.add_argument("--unknown_run_min", type=float, default=60.0,
                        help="expected minutes of a run when no finished run is on record (for --stop_by)")
    own, extra = [], []
    rest = list(argv)
    if "--" in rest:
        i = rest.index("--")
        own, extra = rest[:i], rest[i + 1:]
    else:
        own = rest
    args = parser.parse_args(own)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.seeds = [s for s in args.seeds.split(",") if s]
    args.budgets = parse_budgets(args.budgets)
    from benchmarks.comparison.launch import deadline_from_flags, without_schedule_flags

    try:
        args.deadline = deadline_from_flags(args.stop_by, args.stop_after_min)
    except ValueError as e:
        parser.error(str(e))
    args.command = "python benchmarks/hil_serl.py " + " ".join(without_schedule_flags(argv))
    return args, extra


def expected_run_s(out: str, task: str, algorithm: str):
    """Seconds a run of ``task`` is expected to take: the longest finished run of it in ``out``,
    else the longest of any task's; None without one."""
    import glob

    from benchmarks.comparison.launch import first_longest_wall_clock_s

    runs = os.path.join(out, "runs")
    return first_longest_wall_clock_s(os.path.join(runs, glob.escape(task), glob.escape(algorithm), "seed*", "summary.json"),
                                      os.path.join(runs, "*", "*", "seed*", "summary.json"))


def main(argv=None):
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    previous = os.path.join(out, "results.json")
    if args.report_only and os.path.isfile(previous):  # keep the command that made the runs
        with open(previous) as f:
            args.command = json.load(f).get("command", args.command)
    pairs = ([(t, s) for s in args.seeds for t in args.tasks] if args.order == "seed"
             else [(t, s) for t in args.tasks for s in args.seeds])
    if not args.report_only:
        from benchmarks.comparison.launch import defer_reason

        for task, seed in pairs:
            if not os.path.exists(os.path.join(_run_dir(out, task, args.algorithm, seed), "summary.json")):
                expected = expected_run_s(out, task, args.algorithm)
                why = defer_reason(args.deadline, 60.0 * args.unknown_run_min if expected is None else expected)
                if why:
                    print(f"[bench] deferred {task} seed {seed}: {why}", flush=True)
                    continue
            if run_one(args, out, task, seed, extra):
                report(args, out, aggregate(args, out))
                if args.commit:
                    git_commit([out], f"HiL-SERL row: {task} seed {seed} ({args.algorithm})")
    report(args, out, aggregate(args, out))
    if args.commit and not args.report_only:
        git_commit([out], f"HiL-SERL row: report ({args.algorithm})")


if __name__ == "__main__":
    main()
