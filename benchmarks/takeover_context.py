"""Who acts in UniIntervene runs, and what the operator takes over from.

  python benchmarks/takeover_context.py --out=benchmarks/results/compare \
      [--methods=hil_serl+uniintervene,hil_serl+uniintervene-replan1] [--from_fraction=0.5]

Reads the ``gate_timeline.jsonl`` of every run under ``OUT/runs/TASK/METHOD/seedS`` (the actor
records the per-step action source of every ``uniintervene.timeline_every``-th episode) and
keeps the episodes that ended after ``from_fraction`` of the run's env steps (default: the
second half, once the models are trained). Per task and method (pooled over seeds):

  policy / recovery / human   share of the recorded steps each source executed;
  takeovers per episode       human segments (a human step after a non-human one) per episode;
  after recovery / after policy / at start
                              where each takeover came from: the majority source of the 8
                              steps before it, or "at start" for a takeover in the first 4
                              steps;
  median takeover step        the step index of takeover onsets within their episodes.

Writes ``OUT/takeover_context.md`` and ``OUT/takeover_context.json``.
"""

import json
import os
import sys
from typing import Dict, List, Mapping, Sequence

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from serl_ext.loop.gate import HUMAN, POLICY, RECOVERY  # noqa: E402


LOOKBACK = 8  # steps before a takeover that name its origin
AT_START = 4  # a takeover before this step counts as "at start"


def takeover_origins(source: Sequence[int]) -> List[tuple]:
    """``[(onset step, origin)]`` of the human segments of one episode's action sources.

    origin: ``"at start"`` (onset < 4), else ``"recovery"`` when recovery steps outnumber policy
    steps among the 8 steps before the onset, otherwise ``"policy"``.
    """
    s = np.asarray(source, np.int64)
    out = []
    for t in range(len(s)):
        if s[t] == HUMAN and (t == 0 or s[t - 1] != HUMAN):
            before = s[max(0, t - LOOKBACK):t]
            if t < AT_START:
                origin = "at start"
            elif (before == RECOVERY).sum() > (before == POLICY).sum():
                origin = "recovery"
            else:
                origin = "policy"
            out.append((t, origin))
    return out


def summarize(records: Sequence[Mapping]) -> Dict[str, float]:
    """Pooled shares and takeover origins over timeline records (module docstring)."""
    steps = np.concatenate([np.asarray(r["source"], np.int64) for r in records]) if records else np.zeros(0, np.int64)
    onsets = [o for r in records for o in takeover_origins(r["source"])]
    n = max(len(steps), 1)
    origins = [o for _, o in onsets]
    return {
        "episodes": len(records),
        "steps": int(len(steps)),
        "policy_share": float((steps == POLICY).sum() / n),
        "recovery_share": float((steps == RECOVERY).sum() / n),
        "human_share": float((steps == HUMAN).sum() / n),
        "takeovers_per_episode": len(onsets) / max(len(records), 1),
        "after_recovery": origins.count("recovery"),
        "after_policy": origins.count("policy"),
        "at_start": origins.count("at start"),
        "median_takeover_step": float(np.median([t for t, _ in onsets])) if onsets else None,
        "success_rate": float(np.mean([bool(r.get("success")) for r in records])) if records else None,
    }


def main(argv):
    del argv
    from run_folders import seed_run_dirs

    rows = []
    for (task, method), seed_dirs in seed_run_dirs(os.path.join(_OUT.value, "runs"), _METHODS.value).items():
        records, seeds = [], []
        for seed_dir in seed_dirs:
            path = os.path.join(seed_dir, "gate_timeline.jsonl")
            if not os.path.isfile(path):
                continue
            with open(path) as f:
                try:
                    recs = [json.loads(line) for line in f if line.strip()]
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: not a JSON-lines gate timeline ({e})") from e
            if not recs:
                continue
            last = max(int(r["env_steps"]) for r in recs)
            records += [r for r in recs if int(r["env_steps"]) >= _FROM.value * last]
            seeds.append(seed_dir)
        if records:
            rows.append(dict(task=task, method=method, seeds=len(seeds), **summarize(records)))
    lines = [
        "# Who acts in UniIntervene runs, and what the operator takes over from",
        "",
        f"Command: `python benchmarks/takeover_context.py --out={_OUT.value} --methods={','.join(_METHODS.value)} "
        f"--from_fraction={_FROM.value}`",
        "",
        f"From `gate_timeline.jsonl` (every 5th training episode, operator on), episodes that ended in the last "
        f"{100 * (1 - _FROM.value):.0f}% of each run, pooled over seeds. Shares: executed steps by source. "
        f"Takeover origin: majority source of the {LOOKBACK} steps before the operator's onset "
        f"(\"at start\": onset before step {AT_START}).",
        "",
        "| task | method | seeds | episodes | policy | recovery | human | success | takeovers / episode "
        "| after recovery | after policy | at start | median takeover step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        med = "-" if r["median_takeover_step"] is None else f"{r['median_takeover_step']:.0f}"
        lines.append(f"| {r['task']} | {r['method']} | {r['seeds']} | {r['episodes']} | {r['policy_share']:.2f} | "
                     f"{r['recovery_share']:.2f} | {r['human_share']:.2f} | {r['success_rate']:.2f} | "
                     f"{r['takeovers_per_episode']:.2f} | {r['after_recovery']} | {r['after_policy']} | "
                     f"{r['at_start']} | {med} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(_OUT.value, "takeover_context.md"), "w") as f:
        f.write(text)
    with open(os.path.join(_OUT.value, "takeover_context.json"), "w") as f:
        json.dump({"rows": rows}, f, indent=1)
    print(text)


def _define_flags():
    """Flags are defined only when run as a script, so tests can import the helpers next to
    the other benchmark modules (which define flags of the same names)."""
    global _OUT, _METHODS, _FROM
    _OUT = flags.DEFINE_string("out", "benchmarks/results/compare", "Comparison folder (with runs/).")
    _METHODS = flags.DEFINE_list("methods", ["hil_serl+uniintervene", "hil_serl+uniintervene-replan1"],
                                 "Methods whose gate timelines to read.")
    _FROM = flags.DEFINE_float("from_fraction", 0.5, "Keep episodes that ended after this fraction of the run.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
