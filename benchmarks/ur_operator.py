"""The simulated operator on the simulated UR5e tasks: IR for robots of rising competence.

  python benchmarks/ur_operator.py [--tasks=ur5e-sim-lift] [--seeds=10] \
      [--robots=expert,half_expert,idle,random] [--out=benchmarks/results/ur_operator]

Every robot acts on the same episode seeds (0 .. seeds-1) with the task's own operator
(``configs/train.py:TASK,hil_serl``'s ``config.operator``, e.g. Lift's hand-back on the grasp,
``configs/tasks.py``) through ``serl_ext.loop.common.make_env``, as in training. Robots:

  expert        the task's scripted expert (``ur_tasks.expert_policy``): must need no help
  half_expert   each step the expert's action with probability 0.5, else a random one
  idle          the zero action (the robot stands still; gripper at 0)
  random        uniform random actions in [-1, 1]

Per task and robot: IR (operator steps / all steps, pooled), takeovers per episode, the
operator's success (the episode succeeded with its help) and the robot's own success (no
operator step), and the count of each hand-back reason (``operator/handback``: progress,
subgoal, cap, gave_up). DESIGN.md section 6's operator test: IR falls with competence
(expert 0, idle and random highest). Writes ``results.json`` and ``results.md`` under --out.
About 1 minute per task and robot at 10 seeds on 2 cores.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

ROBOTS = ("expert", "half_expert", "idle", "random")


def _policy(robot: str, rng: np.random.Generator):
    from serl_ext.envs.ur_tasks import expert_policy

    if robot == "expert":
        return expert_policy()
    if robot == "half_expert":
        expert = expert_policy()

        def half(obs, env):
            action = expert(obs, env)  # called every step: the expert keeps its phase
            return action if rng.random() < 0.5 else rng.uniform(-1.0, 1.0, size=7).astype(np.float32)

        return half
    if robot == "idle":
        return lambda obs, env: np.zeros(7, np.float32)
    if robot == "random":
        return lambda obs, env: rng.uniform(-1.0, 1.0, size=7).astype(np.float32)
    raise ValueError(f"unknown robot {robot!r}; expected one of {ROBOTS}")


def measure(task: str, robot: str, seeds) -> dict:
    """Runs ``robot`` under ``task``'s operator on ``seeds``.

    Returns:
        ``{"task", "robot", "episodes", "ir", "takeovers_per_episode", "success_with_operator",
        "autonomous_success", "handbacks": {reason: count}, "operator": {the operator fields
        that differ from the default}, "seconds"}``.
    Raises:
        ValueError: an unknown robot; KeyError: an unknown task (configs/tasks.py).
    """
    from configs.train import get_config
    from serl_ext.envs.operator import get_default_operator_config
    from serl_ext.loop import common

    config = get_config(f"{task},hil_serl")
    rng = np.random.default_rng(12345)
    policy = _policy(robot, rng)
    env = common.make_env(config, 0, with_operator=True)
    human = steps = takeovers = wins = alone = 0
    handbacks = collections.Counter()
    start = time.time()
    seeds = list(seeds)
    try:
        for seed in seeds:
            obs, info = env.reset(seed=int(seed))
            done, episode_human, success, last_takeover = False, 0, False, 0
            while not done:
                obs, _, terminated, truncated, info = env.step(policy(obs, env))
                episode_human += int("intervene_action" in info)
                steps += 1
                success = success or bool(info["success"])
                reason = info["operator/handback"]
                if reason and info["operator/takeovers"] != last_takeover:
                    handbacks[reason] += 1
                    last_takeover = info["operator/takeovers"]
                done = terminated or truncated
            human += episode_human
            takeovers += int(info["operator/takeovers"])
            wins += int(success)
            alone += int(success and episode_human == 0)
    finally:
        env.close()
    default = get_default_operator_config().to_dict()
    changed = {k: v for k, v in config.operator.to_dict().items() if default.get(k) != v}
    n = max(len(seeds), 1)
    return {"task": task, "robot": robot, "episodes": len(seeds), "ir": human / max(steps, 1),
            "takeovers_per_episode": takeovers / n, "success_with_operator": wins / n,
            "autonomous_success": alone / n, "handbacks": dict(sorted(handbacks.items())),
            "operator": changed, "seconds": time.time() - start}


def to_markdown(rows) -> str:
    lines = ["| task | robot | episodes | IR | takeovers / ep | SR with operator | SR alone | "
             "hand-backs |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        hb = ", ".join(f"{k} {v}" for k, v in r["handbacks"].items()) or "-"
        lines.append(f"| {r['task']} | {r['robot']} | {r['episodes']} | {r['ir']:.3f} | "
                     f"{r['takeovers_per_episode']:.2f} | {r['success_with_operator']:.2f} | "
                     f"{r['autonomous_success']:.2f} | {hb} |")
    overrides = {r["task"]: r["operator"] for r in rows}
    lines += ["", "Operator fields that differ from the default, per task: "
              + "; ".join(f"{t}: {o or 'none'}" for t, o in overrides.items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="ur5e-sim-lift")
    parser.add_argument("--robots", default=",".join(ROBOTS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "ur_operator"))
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    rows = []
    for task in [t for t in args.tasks.split(",") if t]:
        for robot in [r for r in args.robots.split(",") if r]:
            row = measure(task, robot, range(args.seeds))
            print(f"[ur_operator] {task} {robot}: IR {row['ir']:.3f}, {row['takeovers_per_episode']:.2f} "
                  f"takeovers/ep, SR with operator {row['success_with_operator']:.2f}, "
                  f"alone {row['autonomous_success']:.2f}, hand-backs {row['handbacks']} "
                  f"({row['seconds']:.0f} s)", flush=True)
            rows.append(row)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"command": "python benchmarks/ur_operator.py " + " ".join(argv or sys.argv[1:]),
                   "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(to_markdown(rows))
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
