"""Calibration of the simulated operator: IR for a ladder of robots of rising competence.

  python benchmarks/operator_ladder.py [--tasks=pick-place,...] [--episodes=20] \
      [--policies=expert,hil_serl,bc20,bc5,zero,random] \
      [--hil_serl_runs=benchmarks/results/hil_serl_row/runs] \
      [--out=benchmarks/results/operator_ladder]

Every policy acts on the same fixed episode seeds (``300_000 + i``) with the default simulated
operator (``config.operator``) on top; the operator's IR must fall with the robot's competence
(DESIGN.md section 6, "Operator test"). Policies:

  expert     the task's scripted Meta-World expert (reads privileged state)
  hil_serl   the final policy of each finished HiL-SERL run under ``--hil_serl_runs``
             (``policy.msgpack``, written by ``benchmarks/hil_serl.py``), deterministic;
             pooled over the runs found (episodes split evenly)
  bcN        behaviour cloning on the first N scripted demos of ``demos/TASK`` (collected if
             missing), ``--bc_steps`` updates, deterministic
  zero       the zero action (the robot stands still)
  random     uniform random actions in [-1, 1]

Per task and policy: IR (operator steps / all steps, pooled), takeovers per episode, mean
takeover length, success with the operator, autonomous success (no operator step), takeover
triggers and hand-back reasons. Results already in ``results.json`` are kept (the script
resumes; ``--force`` recomputes). Writes ``results.json`` and ``results.md`` with the checks
of the operator issue (expert IR <= 0.02; BC on 20 demos <= half, HiL-SERL <= a third of the
zero and random robots' IR; IR monotone along the ladder, and monotone in the measured
autonomous SR: no robot that succeeds alone more often gets a higher IR).
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TASKS = ("pick-place", "peg-insert-side", "assembly", "sweep-into", "box-close")
LADDER = ("expert", "hil_serl", "bc20", "bc5", "zero", "random")
SEED_BASE = 300_000


def rollout(env, policy, seed: int) -> dict:
    """One episode with the operator on top; ``policy(obs, env) -> action``."""
    obs, _ = env.reset(seed=seed)
    human = steps = segments = 0
    prev, seg_len, lengths = False, 0, []
    triggers, handbacks = collections.Counter(), collections.Counter()
    success = False
    while True:
        action = np.clip(np.asarray(policy(obs, env), np.float32), -1.0, 1.0)
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        h = "intervene_action" in info
        if h and not prev:
            segments += 1
            triggers[str(info.get("operator/trigger", ""))] += 1
        if prev and not h:
            lengths.append(seg_len)
            seg_len = 0
            handbacks[str(info.get("operator/handback", ""))] += 1
        seg_len += int(h)
        human += int(h)
        prev = h
        success = success or bool(info.get("success", False))
        if terminated or truncated:
            if seg_len:
                lengths.append(seg_len)
                handbacks["episode end"] += 1
            break
    return {"steps": steps, "human": human, "segments": segments, "segment_lengths": lengths,
            "success": success, "triggers": dict(triggers), "handbacks": dict(handbacks)}


def summarize(episodes) -> dict:
    steps = sum(e["steps"] for e in episodes)
    lengths = [x for e in episodes for x in e["segment_lengths"]]
    triggers, handbacks = collections.Counter(), collections.Counter()
    for e in episodes:
        triggers.update(e["triggers"])
        handbacks.update(e["handbacks"])
    return {
        "episodes": len(episodes),
        "ir": sum(e["human"] for e in episodes) / max(steps, 1),
        "takeovers_per_episode": float(np.mean([e["segments"] for e in episodes])),
        "mean_takeover_length": float(np.mean(lengths)) if lengths else 0.0,
        "success_with_operator": float(np.mean([e["success"] for e in episodes])),
        "autonomous_success": float(np.mean([e["success"] and e["human"] == 0
                                             for e in episodes])),
        "mean_episode_length": steps / max(len(episodes), 1),
        "triggers": dict(triggers), "handbacks": dict(handbacks),
    }


def _config(task):
    from configs.train import get_config

    return get_config(f"{task},hil_serl")


def _ensure_demos(task, n):
    from serl_ext.data.episodes import list_episodes

    directory = os.path.join(REPO, "demos", task)
    if len(list_episodes(directory) if os.path.isdir(directory) else []) < n:
        subprocess.run([sys.executable, "launchers/collect_demos.py", f"--task={task}",
                        f"--num_demos={max(n, 20)}"], cwd=REPO, check=True)
    return directory


def policies_for(task, name, args):
    """``[(label, policy_fn)]`` for one ladder entry (several for pooled HiL-SERL runs)."""
    from serl_ext.loop.rollouts import expert_policy

    if name == "expert":
        return [("expert", expert_policy(task))]
    if name == "zero":
        return [("zero", lambda obs, env: np.zeros(4, np.float32))]
    if name == "random":
        rng = np.random.default_rng(12345)
        return [("random", lambda obs, env: rng.uniform(-1.0, 1.0, 4).astype(np.float32))]
    if name.startswith("bc"):
        from serl_ext.loop.bc_train import bc_policy, load_demo_episodes, train_bc

        n = int(name[2:])
        demos = load_demo_episodes(_ensure_demos(task, n), n)
        agent = train_bc(_config(task).agent, demos, args.bc_steps, seed=0)
        return [(name, bc_policy(agent))]
    if name == "hil_serl":
        from benchmarks.hil_serl import load_policy
        from serl_ext.loop.bc_train import bc_policy

        root = os.path.join(args.hil_serl_runs, task, "hil_serl")
        found = []
        for seed_dir in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            run_dir = os.path.join(root, seed_dir)
            if os.path.isfile(os.path.join(run_dir, "policy.msgpack")):
                agent, _ = load_policy(run_dir)
                found.append((f"hil_serl/{seed_dir}", bc_policy(agent)))
        return found
    raise ValueError(f"unknown ladder policy {name!r}; expected {LADDER} or bcN")


def run_entry(task, name, args):
    from serl_ext.loop import common

    config = _config(task)
    policies = policies_for(task, name, args)
    if not policies:
        return None
    episodes, t0 = [], time.time()
    for i in range(args.episodes):
        label, policy = policies[i % len(policies)]
        seed = SEED_BASE + i
        env = common.make_env(config, seed, with_operator=True)
        try:
            episodes.append(rollout(env, policy, seed))
        finally:
            env.close()
    out = summarize(episodes)
    out["sources"] = [label for label, _ in policies]
    out["seconds"] = time.time() - t0
    return out


def checks(per_task) -> dict:
    """The operator issue's acceptance checks per task (None where a rung is missing)."""
    out = {}
    for task, r in per_task.items():
        ir = {k: v["ir"] for k, v in r.items()}
        hopeless = min(ir[k] for k in ("zero", "random")) if {"zero", "random"} <= set(ir) else None
        ladder = [k for k in LADDER if k in ir and k not in ("zero", "random")]
        out[task] = {
            "expert_at_most_0.02": ir["expert"] <= 0.02 if "expert" in ir else None,
            "bc20_at_most_half_of_hopeless": (ir["bc20"] <= 0.5 * hopeless
                                              if "bc20" in ir and hopeless is not None else None),
            "hil_serl_at_most_third_of_hopeless": (ir["hil_serl"] <= hopeless / 3
                                                   if "hil_serl" in ir and hopeless is not None
                                                   else None),
            "monotone": (all(ir[a] <= ir[b] for a, b in zip(ladder, ladder[1:]))
                         and (hopeless is None or all(ir[k] <= hopeless for k in ladder))),
            # Competence measured, not assumed: a robot that succeeds alone more often (by more
            # than 0.05 autonomous SR) must not get a higher IR.
            "monotone_in_autonomous_sr": all(
                not (r[a]["autonomous_success"] > r[b]["autonomous_success"] + 0.05
                     and ir[a] > ir[b]) for a in r for b in r),
        }
    return out


def write_report(results, args):
    per_task = results["per_task"]
    results["checks"] = checks(per_task)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)

    def mark(v):
        return "-" if v is None else ("yes" if v else "**no**")

    lines = ["# Operator calibration ladder", "", f"Command: `{results['command']}`", "",
             f"{args.episodes} episodes per policy and task on fixed seeds "
             f"({SEED_BASE} + i), the default simulated operator on top "
             "(`serl_ext/envs/operator.py`). IR = operator steps / all steps, pooled. "
             "hil_serl = final policies of the HiL-SERL row's runs (episodes split over the "
             f"seeds found); bcN = BC on N scripted demos, {args.bc_steps} updates.", "",
             "| task | policy | IR | takeovers / episode | mean takeover length | "
             "SR with operator | autonomous SR | triggers | hand-backs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task, r in per_task.items():
        for name in [k for k in LADDER if k in r] + sorted(set(r) - set(LADDER)):
            v = r[name]
            lines.append(
                f"| {task} | {name} | {v['ir']:.3f} | {v['takeovers_per_episode']:.2f} | "
                f"{v['mean_takeover_length']:.1f} | {v['success_with_operator']:.2f} | "
                f"{v['autonomous_success']:.2f} | "
                + ", ".join(f"{k} {c}" for k, c in sorted(v["triggers"].items())) + " | "
                + ", ".join(f"{k} {c}" for k, c in sorted(v["handbacks"].items())) + " |")
    lines += ["", "Checks (operator issue, 'Done when'):", "",
              "| task | expert <= 0.02 | BC(20) <= 1/2 of zero/random | HiL-SERL <= 1/3 of "
              "zero/random | monotone along the ladder | monotone in autonomous SR |",
              "|---|---|---|---|---|---|"]
    for task, c in results["checks"].items():
        lines.append(f"| {task} | {mark(c['expert_at_most_0.02'])} | "
                     f"{mark(c['bc20_at_most_half_of_hopeless'])} | "
                     f"{mark(c['hil_serl_at_most_third_of_hopeless'])} | {mark(c['monotone'])} | "
                     f"{mark(c['monotone_in_autonomous_sr'])} |")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--policies", default=",".join(LADDER))
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--bc_steps", type=int, default=20000)
    parser.add_argument("--hil_serl_runs", default="benchmarks/results/hil_serl_row/runs")
    parser.add_argument("--out", default="benchmarks/results/operator_ladder")
    parser.add_argument("--force", action="store_true", help="recompute entries already saved")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.out = os.path.abspath(args.out)
    args.hil_serl_runs = os.path.abspath(args.hil_serl_runs)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    results = {"per_task": {}}
    if os.path.isfile(path):  # --force recomputes the listed entries; the others stay
        with open(path) as f:
            results = json.load(f)
    # The command that recomputes every entry from scratch (the entries themselves may come from
    # several resumed invocations with --policies / --force).
    named = set(results["per_task"]) | {t for t in args.tasks.split(",") if t}
    all_tasks = ",".join([t for t in TASKS if t in named] + sorted(named - set(TASKS)))
    results["command"] = (f"python benchmarks/operator_ladder.py --tasks={all_tasks} "
                          f"--episodes={args.episodes} --bc_steps={args.bc_steps} "
                          f"--hil_serl_runs={os.path.relpath(args.hil_serl_runs, REPO)}")
    for task in [t for t in args.tasks.split(",") if t]:
        for name in [p for p in args.policies.split(",") if p]:
            if name in results["per_task"].get(task, {}) and not args.force:
                continue
            entry = run_entry(task, name, args)
            if entry is None:
                print(f"[ladder] {task} {name}: no policy found, skipped", flush=True)
                continue
            results["per_task"].setdefault(task, {})[name] = entry
            print(f"[ladder] {task} {name}: IR {entry['ir']:.3f}, "
                  f"{entry['takeovers_per_episode']:.2f} takeovers/ep, "
                  f"SR {entry['success_with_operator']:.2f} ({entry['seconds']:.0f} s)", flush=True)
            write_report(results, args)
    write_report(results, args)


if __name__ == "__main__":
    main()
