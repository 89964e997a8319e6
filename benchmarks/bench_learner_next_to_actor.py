"""UniIntervene's learner cost next to a live actor (issue 14 item 2).

  python benchmarks/bench_learner_next_to_actor.py                       # pick-place, 6000 env steps, 1 repeat
  python benchmarks/bench_learner_next_to_actor.py --steps=3000 --repeats=2 --out=/tmp/next_to_actor

Each repeat runs ``launchers/run_task.sh TASK,hil_serl`` and ``TASK,hil_serl+uniintervene`` one
after the other (the order alternates between repeats), learner and actor as separate processes
on this machine, as in the protocol sweep (``benchmarks/uniintervene_protocol.py``) except that
the learner is not held to the actor (``learner.hold_to_actor=False``): held, a learner does as
many updates as the actor makes env steps, so its updates per second measure the actor's speed,
not the learner's. The actor keeps its defaults (throttle ``actor.steps_per_update=1``, the
operator, the UniIntervene gate), so each learner shares the two cores with the actor of its
own method, as it does in a real run. No evaluation but the final one, no checkpoints but the last.
UniIntervene starts from ``--init_from`` (default: the protocol's offline pick-place folder when it
is there, else fresh models), so its learner runs the slow refinement schedule of the protocol
(``uniintervene.train_period``).

Per run: the learner's steady updates per second (learner steps over wall time between the first
``metrics/learner.jsonl`` record after ``--skip_s`` seconds of training and the last record
before the actor finished: no compiles, no pretraining, no shutdown), the actor's steady env steps
per second (between its first and last episode records), the gate's decision p50 / p99 (ms), and
for UniIntervene the model updates done inside the window (so the window is known to include its
training). The headline is UniIntervene's updates per second over HiL-SERL's (target >= 0.85).
Timings need a quiet machine: run nothing else meanwhile. Outputs ``{--out}/learner_next_to_actor.md``
and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from serl_ext.loop.logging import read_jsonl  # noqa: E402  (metrics files; skips a torn last line)

METHODS = ("hil_serl", "hil_serl+uniintervene")
PROTOCOL_OFFLINE = os.path.join(REPO, "benchmarks", "results", "uniintervene_protocol", "offline", "{task}")


def steady_learner_rate(rows: Sequence[dict], skip_s: float, end_wall_s: Optional[float] = None) -> Dict[str, float]:
    """Learner updates per second over a steady window of ``metrics/learner.jsonl`` records.

    Args:
      rows: learner records (``step``, ``wall_s`` in s since the learner started; records without
        ``train/updates_per_s`` are not training records and are ignored).
      skip_s: seconds after the first training record that the window skips (compiles, the
        first UniIntervene rebuilds).
      end_wall_s: the window ends at the last record at or before this wall time (the actor's
        end); None: the last record.

    Returns:
      ``{"updates": learner steps in the window, "seconds": its length, "updates_per_s": their
      ratio, "first_step", "last_step"}`` plus, when the records have them, the UniIntervene
      model updates in the window (``value_updates``, ``intervention_updates``).

    Raises:
      ValueError: fewer than two records in the window (raise the run's env steps or lower skip_s).
    """
    train = [r for r in rows if "train/updates_per_s" in r]
    if not train:
        raise ValueError("no training records")
    start = train[0]["wall_s"] + skip_s
    window = [r for r in train if r["wall_s"] >= start and (end_wall_s is None or r["wall_s"] <= end_wall_s)]
    if len(window) < 2:
        raise ValueError(f"{len(window)} learner records in the steady window (from {start:.1f} s to "
                         f"{end_wall_s} s); run more env steps or lower --skip_s")
    a, b = window[0], window[-1]
    out = {"updates": b["step"] - a["step"], "seconds": b["wall_s"] - a["wall_s"],
           "first_step": a["step"], "last_step": b["step"]}
    out["updates_per_s"] = out["updates"] / out["seconds"]
    for key in ("value_updates", "intervention_updates"):
        k = f"uniintervene/{key}"
        if k in a and k in b:
            out[key] = b[k] - a[k]
    return out


def actor_window(rows: Sequence[dict]) -> Dict[str, float]:
    """The actor's steady env steps per second between its first and last episode records, and
    the learner-clock time its last record was written (``wall_s`` of both files counts from its
    own process start, so the actor's end is given as its own wall time)."""
    ep = [r for r in rows if "rollout/length" in r]
    if len(ep) < 2:
        raise ValueError("fewer than 2 actor episode records; run more env steps")
    return {"env_steps": ep[-1]["step"] - ep[0]["step"], "seconds": ep[-1]["wall_s"] - ep[0]["wall_s"],
            "env_steps_per_s": (ep[-1]["step"] - ep[0]["step"]) / (ep[-1]["wall_s"] - ep[0]["wall_s"])}


def run_one(task: str, method: str, steps: int, root: str, port: int, init_from: str, skip_s: float) -> dict:
    flags = [f"--config.run_root={root}", f"--config.actor.max_env_steps={steps}",
             "--config.learner.hold_to_actor=False", "--config.actor.eval_period=0",
             "--config.actor.eval_episodes=1", "--config.learner.checkpoint_period=0",
             "--config.logging.progress_bar=False", f"--config.transport.port={port}",
             f"--config.transport.broadcast_port={port + 1}"]
    if method != "hil_serl" and init_from:
        flags.append(f"--config.uniintervene.init_from={init_from}")
    t0 = time.time()
    proc = subprocess.run(["bash", "launchers/run_task.sh", f"{task},{method}", *flags], cwd=REPO,
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu"))
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    run_dir = os.path.join(root, task, method, "seed0")
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    learner_rows = read_jsonl(os.path.join(run_dir, "metrics", "learner.jsonl"))
    actor = actor_window(read_jsonl(os.path.join(run_dir, "metrics", "actor.jsonl")))
    # The learner's records until the actor stopped sending (the learner clock starts first:
    # its last record before the actor's summary is the window's end).
    end = _learner_wall_at(run_dir, learner_rows)
    learner = steady_learner_rate(learner_rows, skip_s, end)
    return {"method": method, "env_steps": summary.get("env_steps"), "learner_steps": summary.get("learner_steps"),
            "learner": learner, "actor": actor,
            "gate_latency_ms_p50": summary.get("gate_latency_ms_p50"),
            "gate_latency_ms_p99": summary.get("gate_latency_ms_p99"),
            "gate_decisions": summary.get("gate_decisions"), "command_s": time.time() - t0}


def _learner_wall_at(run_dir: str, learner_rows: Sequence[dict]) -> Optional[float]:
    """The learner wall time (s) at which the actor's summary file was written, from the two
    files' modification times and the learner's last record; None when unknown."""
    try:
        actor_end = os.path.getmtime(os.path.join(run_dir, "summary.json"))
        learner_last = os.path.getmtime(os.path.join(run_dir, "metrics", "learner.jsonl"))
    except OSError:
        return None
    if not learner_rows:
        return None
    return learner_rows[-1]["wall_s"] - max(0.0, learner_last - actor_end)


def markdown(result: dict) -> str:
    lines = ["# UniIntervene's learner next to a live actor (issue 14 item 2)", "",
             f"Command: `{result['command']}`  ",
             f"Measured {result['date']} on {result['machine']}; load average {result['load_at_start']:.2f} at the "
             f"start, {result['load_at_end']:.2f} at the end. Task {result['task']}, {result['steps']} env steps per "
             f"run, learner not held to the actor, actor defaults (throttle 1 env step per update, operator, gate); "
             f"UniIntervene from `{result['init_from'] or 'fresh models'}`; the learner's window skips its first "
             f"{result['skip_s']:.0f} s of training and ends with the actor.", "",
             "| repeat | method | learner updates/s | window s | UniIntervene updates in window | actor env steps/s | "
             "gate p50 / p99 ms |", "|---:|---|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        ui = r["learner"].get("value_updates")
        gate = ("-" if r["gate_latency_ms_p99"] is None else
                f"{r['gate_latency_ms_p50']:.2f} / {r['gate_latency_ms_p99']:.2f}")
        lines.append(f"| {r['repeat']} | {r['method']} | {r['learner']['updates_per_s']:.1f} | "
                     f"{r['learner']['seconds']:.0f} | {'-' if ui is None else int(ui)} | "
                     f"{r['actor']['env_steps_per_s']:.1f} | {gate} |")
    lines += ["", f"UniIntervene learner updates/s over HiL-SERL's (mean over repeats): **{result['ratio']:.2f}** "
              f"(target >= 0.85); per repeat: {', '.join(f'{x:.2f}' for x in result['ratios'])}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    import datetime

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="pick-place")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--skip_s", type=float, default=20.0)
    p.add_argument("--init_from", default=None, help="UniIntervene offline folder ('' = fresh models; default: the "
                   "protocol's offline folder of the task when present)")
    p.add_argument("--port", type=int, default=5960)
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    args = p.parse_args(argv)
    init_from = args.init_from
    if init_from is None:
        path = PROTOCOL_OFFLINE.format(task=args.task)
        init_from = path if os.path.isdir(os.path.join(path, "models", "intervention")) else ""
    subprocess.run([sys.executable, "launchers/collect_demos.py", f"--task={args.task}", "--num_demos=20"],
                   cwd=REPO, check=True, capture_output=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    result = {"command": "python benchmarks/bench_learner_next_to_actor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
              "machine": f"{os.cpu_count()} CPUs, {platform.platform()}", "load_at_start": os.getloadavg()[0],
              "task": args.task, "steps": args.steps, "skip_s": args.skip_s,
              "init_from": os.path.relpath(init_from, REPO) if init_from else "", "rows": []}
    for repeat in range(args.repeats):
        order = METHODS if repeat % 2 == 0 else METHODS[::-1]
        for method in order:
            root = tempfile.mkdtemp(prefix="next_to_actor_")
            try:
                row = run_one(args.task, method, args.steps, root, args.port, init_from, args.skip_s)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            row["repeat"] = repeat
            print(json.dumps(row), flush=True)
            result["rows"].append(row)
    rate = {(r["repeat"], r["method"]): r["learner"]["updates_per_s"] for r in result["rows"]}
    result["ratios"] = [rate[(k, METHODS[1])] / rate[(k, METHODS[0])] for k in range(args.repeats)]
    result["ratio"] = sum(result["ratios"]) / len(result["ratios"])
    result["load_at_end"] = os.getloadavg()[0]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "learner_next_to_actor.json"), "w") as f:
        json.dump(result, f, indent=2)
    text = markdown(result)
    with open(os.path.join(args.out, "learner_next_to_actor.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
