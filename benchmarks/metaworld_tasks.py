"""Every Meta-World v3 task's scripted expert, measured: the table behind tasks by name.

  python benchmarks/metaworld_tasks.py [--seeds=20] [--tasks=drawer-open-v3,...]

For each Meta-World v3 task with a scripted expert (``metaworld.policies.ENV_POLICY_MAP``),
through ``make_env`` (action repeat 4, sparse reward, terminate on success, 125 agent steps =
Meta-World's own 500-step cap): the expert's success rate on seeds 0..N-1, the mean length of
its successful episodes and its longest flat stretch (agent steps without a dense-reward
improvement > 0.05 over the running best, the quantity the operator's stall window is set
from; over successful episodes, or all episodes when none succeeds). The stall window is
``serl_ext.envs.tasks.stall_window_from_flat`` of that. Writes
``serl_ext/envs/metaworld_tasks.json`` (read by ``get_task_spec``) and
``benchmarks/results/metaworld_tasks.md``. Tasks already in the JSON are kept unless listed in
``--tasks`` (the script resumes).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.expert_success import run_episode  # noqa: E402
from serl_ext.envs import tasks as task_registry  # noqa: E402


def measure(env_name: str, seeds: int) -> dict:
    from serl_ext.envs.metaworld_env import MetaWorldEnv
    from serl_ext.envs import wrappers
    from metaworld import policies

    policy = policies.ENV_POLICY_MAP[env_name]()

    def expert(raw):
        return np.clip(np.asarray(policy.get_action(np.asarray(raw, np.float64)), np.float32),
                       -1.0, 1.0)

    # A provisional spec (registered for the measurement only) so that measuring does not need
    # the table it writes; the stall window plays no part here (no operator).
    key = f"_measuring_{env_name}"
    task_registry.TASKS[key] = task_registry.TaskSpec(
        key, env_name, task_registry.DEFAULT_EPISODE_STEPS, task_registry.MIN_STALL_WINDOW,
        type(policy).__name__, "", "")
    try:
        base = MetaWorldEnv(key, 0)
    finally:
        del task_registry.TASKS[key]
    env = wrappers.EpisodeStatistics(wrappers.GripperPenalty(wrappers.TimeLimit(
        wrappers.SparseReward(base, terminate_on_success=True),
        task_registry.DEFAULT_EPISODE_STEPS)))
    t0 = time.time()
    eps = [run_episode(env, s, "expert", expert, np.random.default_rng(s)) for s in range(seeds)]
    env.close()
    succ = [e for e in eps if e["success"]]
    flats = [e["flat"] for e in (succ or eps)]
    max_flat = int(max(flats))
    return {"expert_success": float(np.mean([e["success"] for e in eps])), "seeds": seeds,
            "mean_length_success": float(np.mean([e["length"] for e in succ])) if succ else None,
            "max_flat": max_flat, "flat_from": "successes" if succ else "all episodes",
            "stall_window": task_registry.stall_window_from_flat(max_flat),
            "max_episode_steps": task_registry.DEFAULT_EPISODE_STEPS,
            "seconds": time.time() - t0}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--tasks", default="", help="comma-separated v3 names (default: all)")
    parser.add_argument("--md", default=os.path.join(REPO, "benchmarks", "results",
                                                     "metaworld_tasks.md"))
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    names = sorted(task_registry._metaworld_names())
    chosen = [t for t in args.tasks.split(",") if t] or names
    table = {"command": "python benchmarks/metaworld_tasks.py " + " ".join(argv), "tasks": {}}
    if os.path.isfile(task_registry.METAWORLD_TABLE):
        with open(task_registry.METAWORLD_TABLE) as f:
            table["tasks"] = json.load(f).get("tasks", {})
    for name in chosen:
        if name in table["tasks"] and not args.tasks:
            continue
        table["tasks"][name] = measure(name, args.seeds)
        r = table["tasks"][name]
        print(f"{name}: expert SR {r['expert_success']:.2f}, max flat {r['max_flat']}, "
              f"W {r['stall_window']} ({r['seconds']:.0f} s)", flush=True)
        with open(task_registry.METAWORLD_TABLE, "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
    lines = ["# Meta-World v3 tasks: scripted experts", "", f"Command: `{table['command']}`", "",
             "Action repeat 4, sparse reward, terminate on success, 125 agent steps; W = "
             "max(10, ceil(1.5 x longest flat stretch)). The five stand-in tasks keep the "
             "values of `serl_ext/envs/tasks.py` (50 seeds, `expert_success.md`).", "",
             "| task | expert SR | seeds | mean length (successes) | longest flat | W |",
             "|---|---|---|---|---|---|"]
    for name, r in sorted(table["tasks"].items()):
        ml = "-" if r["mean_length_success"] is None else f"{r['mean_length_success']:.1f}"
        lines.append(f"| {name} | {r['expert_success']:.2f} | {r['seeds']} | {ml} | "
                     f"{r['max_flat']}{'' if r['flat_from'] == 'successes' else ' (all)'} | "
                     f"{r['stall_window']} |")
    with open(args.md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
