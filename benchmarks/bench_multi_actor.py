"""Total env steps per second with N actors into one learner (issue 14 item 5).

  python benchmarks/bench_multi_actor.py                      # N = 1 and 2, pick-place, 3000 steps
  python benchmarks/bench_multi_actor.py --actors=1,2,4 --steps=6000 --task=assembly

Each N is one ``launchers/run_task.sh TASK,hil_serl --config.learner.num_actors=N`` run (learner
and N actors as separate processes on this machine, the throttle off as in upstream HiL-SERL:
``actor.steps_per_update=0``, so the actors run as fast as the CPU lets them; no evaluation but
the final one, no checkpoints but the last; the learner trains as usual). Reported per N: the
budget, the env steps every actor ran, each actor's steady rate (env steps between its first and
last episode record of ``metrics/actor.jsonl`` over the wall time between them: no start-up, no
final evaluation), the total (their sum: the actors run side by side) and the learner's updates
per second. Timings need
a quiet machine: run nothing else meanwhile. Outputs ``{--out}/multi_actor.md`` and ``.json``.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _actor_summaries(run_dir: str, n: int):
    paths = [os.path.join(run_dir, "summary.json")] + [
        os.path.join(run_dir, "actors", f"actor{k}", "summary.json") for k in range(1, n)]
    return [json.load(open(p)) for p in paths]


def steady_rate(metrics_path: str) -> tuple:
    """``(env steps, seconds)`` between an actor's first and last episode records
    (``metrics/actor.jsonl``: ``step``, ``wall_s``): its training steps per second without the
    start-up (compiles, connecting) and the final evaluation."""
    rows = [json.loads(line) for line in open(metrics_path) if '"rollout/length"' in line]
    if len(rows) < 2:
        raise RuntimeError(f"{metrics_path}: fewer than 2 episode records; raise --steps")
    return rows[-1]["step"] - rows[0]["step"], rows[-1]["wall_s"] - rows[0]["wall_s"]


def run_one(task: str, n: int, steps: int, root: str, port: int) -> dict:
    flags = [f"--config.run_root={root}", f"--config.learner.num_actors={n}",
             f"--config.actor.max_env_steps={steps}", "--config.actor.steps_per_update=0",
             "--config.actor.eval_period=0", "--config.actor.eval_episodes=1",
             "--config.learner.checkpoint_period=0", "--config.logging.progress_bar=False",
             f"--config.transport.port={port}", f"--config.transport.broadcast_port={port + 1}"]
    t0 = time.time()
    proc = subprocess.run(["bash", "launchers/run_task.sh", f"{task},hil_serl", *flags], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if proc.returncode != 0:
        raise RuntimeError(f"N={n} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    run_dir = os.path.join(root, task, "hil_serl", "seed0")
    summaries = _actor_summaries(run_dir, n)
    learner = json.load(open(os.path.join(run_dir, "learner_summary.json")))
    folders = [run_dir] + [os.path.join(run_dir, "actors", f"actor{k}") for k in range(1, n)]
    rates = [steady_rate(os.path.join(f, "metrics", "actor.jsonl")) for f in folders]
    return {
        "num_actors": n,
        "env_steps": steps,
        "env_steps_per_actor": [s["env_steps"] for s in summaries],
        "per_actor_env_steps_per_s": [round(a / b, 2) for a, b in rates],
        # the actors run side by side: the run's rate is the sum of theirs
        "env_steps_per_s": sum(a / b for a, b in rates),
        "learner_updates_per_s": learner["updates_per_s"],
        "learner_steps": learner["learner_steps"],
        "replay_size": learner["replay_size"],
        "command_s": time.time() - t0,
    }


def markdown(result: dict) -> str:
    lines = ["# Several actors into one learner: total env steps per second", "",
             f"Command: `{result['command']}`  ", f"Machine: {result['machine']}; load average at start "
             f"{result['load_at_start']:.2f}. Task {result['task']}, `hil_serl`, throttle off "
             "(`actor.steps_per_update=0`), learner and actors as separate processes.", "",
             "| actors | env steps | per actor | env steps/s per actor | total env steps/s | vs 1 actor | learner updates/s |",
             "|---:|---:|---|---|---:|---:|---:|"]
    base = result["rows"][0]["env_steps_per_s"] if result["rows"] else None
    for r in result["rows"]:
        lines.append(f"| {r['num_actors']} | {r['env_steps']} | {'/'.join(map(str, r['env_steps_per_actor']))} | "
                     f"{' / '.join(f'{x:.1f}' for x in r['per_actor_env_steps_per_s'])} | {r['env_steps_per_s']:.1f} | "
                     f"x{r['env_steps_per_s'] / base:.2f} | {r['learner_updates_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="pick-place")
    p.add_argument("--actors", default="1,2")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--port", type=int, default=5900)
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    args = p.parse_args(argv)
    subprocess.run([sys.executable, "launchers/collect_demos.py", f"--task={args.task}", "--num_demos=20"],
                   cwd=REPO, check=True, capture_output=True)
    result = {"command": "python benchmarks/bench_multi_actor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{os.cpu_count()} CPUs, {platform.platform()}", "load_at_start": os.getloadavg()[0],
              "task": args.task, "rows": []}
    for n in [int(x) for x in args.actors.split(",") if x]:
        root = tempfile.mkdtemp(prefix=f"multi_actor_{n}_")
        try:
            row = run_one(args.task, n, args.steps, root, args.port)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(json.dumps(row), flush=True)
        result["rows"].append(row)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "multi_actor.json"), "w") as f:
        json.dump(result, f, indent=2)
    text = markdown(result)
    with open(os.path.join(args.out, "multi_actor.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
