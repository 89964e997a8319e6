"""Offline UniIntervene benchmark: the whole pipeline on several tasks, one JSON per task.

  python benchmarks/uniintervene_offline.py --tasks=pick-place,assembly,peg-insert-side \
      --out=benchmarks/results/uniintervene_offline

Each task runs ``launchers/offline_pipeline.py --task=T --run_dir=OUT/T`` with the default
pipeline config (20 demos, 30 weak-policy rollouts, 30 operator-assisted rollouts, every 4th
episode held out). Tasks whose ``metrics.json`` exists are skipped (resume). Writes
``OUT/{task}.json`` (the benchmark keys) and ``OUT/results.md`` (a table over tasks). Models,
memories and recorded data stay in the run folders (not committed).
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TASKS = flags.DEFINE_list("tasks", ["pick-place", "assembly", "peg-insert-side"], "Tasks.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/uniintervene_offline", "Output folder.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only aggregate existing runs.")

KEYS = ("task", "value_auroc", "value_monotonic_fraction", "trigger_precision", "trigger_recall",
        "trigger_f1", "trigger_lead_steps", "false_trigger_rate_success", "memory_size",
        "memory_top1_similarity_mean", "recovery_chunk_mae", "closed_loop_recovery_rate")


def main(argv):
    extra = argv[1:]
    out = os.path.abspath(_OUT.value)
    os.makedirs(out, exist_ok=True)
    rows = []
    for task in _TASKS.value:
        run_dir = os.path.join(out, task)
        metrics_path = os.path.join(run_dir, "metrics.json")
        if not _REPORT_ONLY.value and not os.path.exists(metrics_path):
            cmd = [sys.executable, "launchers/offline_pipeline.py", f"--task={task}", f"--run_dir={run_dir}",
                   "--config.progress_bar=False", *extra]
            print("[bench]", " ".join(cmd), flush=True)
            t0 = time.time()
            os.makedirs(run_dir, exist_ok=True)
            with open(os.path.join(out, f"log_{task}.txt"), "w") as logf:
                proc = subprocess.run(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT)
            print(f"[bench] {task}: exit {proc.returncode} after {(time.time() - t0) / 60:.1f} min", flush=True)
        if not os.path.exists(metrics_path):
            continue
        with open(metrics_path) as f:
            metrics = json.load(f)
        row = {k: metrics.get(k) for k in KEYS}
        row["extra"] = {k: v for k, v in metrics.items() if k not in KEYS}
        with open(os.path.join(out, f"{task}.json"), "w") as f:
            json.dump(row, f, indent=2)
        rows.append(row)

    def fmt(v):
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = ["# UniIntervene offline benchmark", "",
             f"Command: `python benchmarks/uniintervene_offline.py --tasks={','.join(_TASKS.value)}`", "",
             "Held-out episodes (every 4th of demos / weak-policy rollouts / operator-assisted rollouts). "
             "Per-task reports with plots: `TASK/report.md`.", "",
             "| " + " | ".join(KEYS) + " |", "|" + "---|" * len(KEYS)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row[k]) for k in KEYS) + " |")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
