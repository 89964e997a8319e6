"""SFT row of the paper's table: behaviour cloning on the 20 scripted demos, no human.

  python benchmarks/sft.py [--tasks=pick-place,...] [--seeds=0,1,2] [--episodes=20] \
      [--bc_steps=5000] [--out=benchmarks/results/sft]

Stands in for the paper's pi0.5 SFT baseline (DESIGN.md section 6b). Per task and seed: BC
(``serl_ext.loop.bc_train.train_bc``, tanh-Gaussian NLL, the ``hil_serl`` preset's MLP) on the
first 20 demos of ``demos/TASK`` (collected with ``launchers/collect_demos.py`` if missing),
then ``--episodes`` deterministic episodes (tanh of the mean) on the evaluation seeds the
HiL-SERL runs of that seed use (``common.eval_seed``), no operator. Writes ``results.json``
and ``results.md`` (SR per seed, mean ± std over seeds, the average over tasks). Seeds already
in ``results.json`` are kept (``--force`` recomputes).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.operator_ladder import TASKS, _ensure_demos  # noqa: E402


def run_one(task, seed, args):
    from configs.train import get_config
    from serl_ext.loop.bc_train import load_demo_episodes, train_bc
    from serl_ext.loop.evaluation import evaluate

    config = get_config(f"{task},hil_serl")
    config.seed = int(seed)
    demos = load_demo_episodes(_ensure_demos(task, args.num_demos), args.num_demos)
    t0 = time.time()
    agent = train_bc(config.agent, demos, args.bc_steps, seed=int(seed))
    train_s = time.time() - t0
    metrics = evaluate(agent, config, args.episodes)
    return {"success_rate": metrics["eval/success_rate"], "length": metrics["eval/length"],
            "train_s": train_s, "eval_s": time.time() - t0 - train_s}


def write_report(results, args):
    lines = ["# SFT row: BC on the scripted demos", "", f"Command: `{results['command']}`", "",
             f"BC on {args.num_demos} demos, {args.bc_steps} updates of batch 256, seeds as "
             f"listed; {args.episodes} deterministic evaluation episodes per seed on fixed seeds "
             "(`common.eval_seed`, the HiL-SERL runs' evaluation seeds), no human.", "",
             "| task | SR per seed | SR mean ± std | mean episode length |", "|---|---|---|---|"]
    means = []
    for task, per_seed in results["per_task"].items():
        srs = [per_seed[s]["success_rate"] for s in sorted(per_seed)]
        lens = [per_seed[s]["length"] for s in sorted(per_seed)]
        means.append(float(np.mean(srs)))
        lines.append(f"| {task} | {' / '.join(f'{x:.2f}' for x in srs)} | "
                     f"{np.mean(srs):.2f} ± {np.std(srs):.2f} | {np.mean(lens):.1f} |")
    if means:
        lines.append(f"| average | | {np.mean(means):.2f} | |")
        results["average_success_rate"] = float(np.mean(means))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--num_demos", type=int, default=20)
    parser.add_argument("--bc_steps", type=int, default=20000)
    parser.add_argument("--out", default="benchmarks/results/sft")
    parser.add_argument("--force", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    results = {"per_task": {}}
    if os.path.isfile(path):  # --force recomputes the listed entries; the others stay
        with open(path) as f:
            results = json.load(f)
    results["command"] = "python benchmarks/sft.py " + " ".join(argv)
    for task in [t for t in args.tasks.split(",") if t]:
        for seed in [s for s in args.seeds.split(",") if s]:
            if seed in results["per_task"].get(task, {}) and not args.force:
                continue
            r = run_one(task, seed, args)
            results["per_task"].setdefault(task, {})[seed] = r
            print(f"[sft] {task} seed {seed}: SR {r['success_rate']:.2f}", flush=True)
            write_report(results, args)
    write_report(results, args)


if __name__ == "__main__":
    main()
