"""Issue 13 item 5: HiL-SERL + UniIntervene in the paper's protocol, as one resumable sweep.

  nice -n 19 python benchmarks/uniintervene_protocol.py --commit              # everything, in order
  python benchmarks/uniintervene_protocol.py --parts=offline --tasks=pick-place --commit
  python benchmarks/uniintervene_protocol.py --parts=compare,ablations --report_only
  python benchmarks/uniintervene_protocol.py --dry_run                         # print the commands
  python benchmarks/uniintervene_protocol.py --parts=compare,ablations --commit --stop_after_min=150
                                       # start only the runs expected to end within 150 minutes

Parts, in the paper's order (each resumes: finished stages and runs are skipped):

``offline``   per task, the offline pipeline (``launchers/offline_pipeline.py``) in
              ``OUT/offline/TASK``: data recorded with the SFT base policy and the operator,
              proxy value, labels, intervention model (held-out best-F1 threshold), memory,
              recovery policy (``recovery.head=continuous``: the head the online run refines,
              so the online run starts from the offline recovery policy too), report. Then
              for the ablation tasks, one folder per ablation ``OUT/offline/TASK-ABLATION``
              that reuses the task's data, proxy value, labels, memory (and recovery policy)
              and retrains what the ablation changes: the intervention model with
              ``intervention.use_future=False`` / ``use_value_cond=False`` /
              ``head_type=binary``, or for ``-no_memory`` the recovery policy with the current
              observation as its goal (``use_memory_goal=False``).
``compare``   ``benchmarks/compare.py`` in ``OUT/compare``: ``hil_serl`` against
              ``hil_serl+uniintervene`` (``init_from=OUT/offline/{task}``) on the tasks, the
              seeds, each task's budget of ``configs/tasks.py`` (the HiL-SERL row's), 20
              evaluation episodes every 5000 env steps (the HiL-SERL row's schedule), the
              shared demos and the operator. Both methods run here, with the learner held to
              the actor (``learner.hold_to_actor``), so both get the same learner steps per env
              step.
``ablations`` ``benchmarks/compare.py`` in ``OUT/ablations``: ``hil_serl+uniintervene`` (the
              runs of ``OUT/compare``, linked, not rerun) against its four ablations on the
              ablation tasks (the paper's Pick and RAM: pick-place and assembly), each started
              from its own offline folder.
``tables``    ``benchmarks/protocol_tables.py``: the paper-shaped main and ablation tables and
              the issue's done-when checks, ``OUT/tables.md`` / ``tables.json``; and
              ``benchmarks/gate_timing.py`` on the comparison's runs (when the gate fires, what
              the recovery runs do, what precedes each takeover): ``OUT/compare/gate_timing.md``.

With ``--commit`` every finished stage's report files (not the recorded data), the models, the
memory, and every finished run are committed as they finish.
"""

import argparse
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TASKS = ("pick-place", "peg-insert-side", "assembly", "sweep-into", "box-close")
ABLATION_TASKS = ("pick-place", "assembly")
FULL = "hil_serl+uniintervene"
# ablation -> (pipeline --config flags, stages it retrains); the method is f"{FULL}-{ablation}".
ABLATIONS: Dict[str, tuple] = {
    "no_future": (["--config.intervention.use_future=False"], ("intervention", "report")),
    "no_value": (["--config.intervention.use_value_cond=False"], ("intervention", "report")),
    "no_tvr": (["--config.intervention.head_type=binary"], ("intervention", "report")),
    "no_memory": (["--config.use_memory_goal=False"], ("recovery", "report")),
}
PIPELINE_FLAGS = ["--config.recovery.head=continuous", "--config.progress_bar=False"]
EVAL_PERIOD, EVAL_EPISODES = 5000, 20


def stage_done(run_dir: str, stage: str) -> bool:
    """Whether ``stage`` of the offline pipeline left its outputs in ``run_dir``."""
    outputs = {
        "data": ["data/manifest.json"],
        "value": ["models/value/model.json", "report/value_report.json"],
        "labels": ["labels.npz", "report/labels.json"],
        "intervention": ["models/intervention/model.json", "report/intervention_summary.json"],
        "memory": ["memory/memory.json", "report/memory_summary.json"],
        "recovery": ["models/recovery/model.json", "report/recovery.json"],
        "report": ["metrics.json", "report.md"],
    }[stage]
    return all(os.path.exists(os.path.join(run_dir, p)) for p in outputs)


def offline_commands(out: str, tasks: Sequence[str], ablation_tasks: Sequence[str]) -> List[tuple]:
    """``[(run_dir, argv, prepare)]`` of the pipeline calls still to make, in order; ``prepare``
    (or None) copies what an ablation folder reuses from its task's folder before the call."""
    from uniintervene_jax.pipeline import STAGES

    calls = []
    for task in tasks:
        rdir = os.path.join(out, "offline", task)
        missing = [s for s in STAGES if not stage_done(rdir, s)]
        if missing:  # a stage's inputs may be stale once an earlier one reruns: rerun what follows it too
            missing = list(STAGES[STAGES.index(missing[0]):])
            calls.append((rdir, [sys.executable, "launchers/offline_pipeline.py", f"--task={task}",
                                 f"--run_dir={rdir}", f"--stages={','.join(missing)}", *PIPELINE_FLAGS], None))
    for task in ablation_tasks:
        base = os.path.join(out, "offline", task)
        for name, (flags, stages) in ABLATIONS.items():
            rdir = os.path.join(out, "offline", f"{task}-{name}")
            if all(stage_done(rdir, s) for s in stages):
                continue
            argv = [sys.executable, "launchers/offline_pipeline.py", f"--task={task}", f"--run_dir={rdir}",
                    f"--stages={','.join(stages)}", f"--config.data.dir={os.path.join(base, 'data')}",
                    *PIPELINE_FLAGS, *flags]
            calls.append((rdir, argv, (base, rdir, stages)))
    return calls


def prepare_ablation(base: str, rdir: str, stages: Sequence[str]) -> None:
    """Copies the task folder's outputs the ablation keeps (all but the data, which is read in
    place, and what ``stages`` retrains) into ``rdir``."""
    retrained = {"intervention": ["models/intervention", "report/intervention_summary.json"],
                 "recovery": ["models/recovery", "report/recovery.json"], "report": ["metrics.json", "report.md"]}
    skip = {p for s in stages for p in retrained.get(s, [])}
    for rel in ("models/value", "models/intervention", "models/recovery", "memory", "labels.npz", "report"):
        src, dst = os.path.join(base, rel), os.path.join(rdir, rel)
        if rel in skip or not os.path.exists(src):
            continue
        if os.path.isdir(src):
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
    for rel in skip:  # a stale output of a stage the ablation retrains would pass for done
        path = os.path.join(rdir, rel)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def compare_command(out: str, tasks: Sequence[str], seeds: str, commit: bool, report_only: bool,
                    stop_by: str = "") -> List[str]:
    flags = [f"--method_flags={FULL}=--config.uniintervene.init_from={os.path.join(out, 'offline', '{task}')}"]
    return [sys.executable, "benchmarks/compare.py", f"--methods=hil_serl,{FULL}", f"--tasks={','.join(tasks)}",
            f"--seeds={seeds}", f"--out={os.path.join(out, 'compare')}", f"--eval_period={EVAL_PERIOD}",
            f"--eval_episodes={EVAL_EPISODES}", "--baseline=hil_serl", *flags,
            *(["--commit"] if commit else []), *(["--report_only"] if report_only else []),
            *([f"--stop_by={stop_by}"] if stop_by else [])]


def ablation_command(out: str, tasks: Sequence[str], seeds: str, commit: bool, report_only: bool,
                     stop_by: str = "") -> List[str]:
    methods = [FULL] + [f"{FULL}-{name}" for name in ABLATIONS]
    flags = [f"--method_flags={FULL}-{name}=--config.uniintervene.init_from="
             f"{os.path.join(out, 'offline', '{task}-' + name)}" for name in ABLATIONS]
    return [sys.executable, "benchmarks/compare.py", f"--methods={','.join(methods)}", f"--tasks={','.join(tasks)}",
            f"--seeds={seeds}", f"--out={os.path.join(out, 'ablations')}", f"--eval_period={EVAL_PERIOD}",
            f"--eval_episodes={EVAL_EPISODES}", f"--baseline={FULL}", *flags,
            *(["--commit"] if commit else []), *(["--report_only"] if report_only else []),
            *([f"--stop_by={stop_by}"] if stop_by else [])]


def missing_full_runs(out: str, tasks: Sequence[str], seeds: str) -> List[str]:
    """``TASK/seedS`` of the main comparison's full-method runs that have no summary.json yet."""
    from benchmarks.comparison.launch import run_dir

    return [f"{t}/seed{s}" for t in tasks for s in seeds.split(",") if s
            and not os.path.exists(os.path.join(run_dir(os.path.join(out, "compare"), t, FULL, s), "summary.json"))]


def link_full_runs(out: str, tasks: Sequence[str]) -> None:
    """``OUT/ablations/runs/TASK/FULL`` -> ``OUT/compare/runs/TASK/FULL`` (relative links): the
    ablation table reads the full method's runs of the main comparison instead of rerunning
    them (compare.py skips a run whose folder holds summary.json)."""
    for task in tasks:
        link = os.path.join(out, "ablations", "runs", task, FULL)
        if os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(os.path.join(out, "compare", "runs", task, FULL), os.path.dirname(link)), link)


def commit_offline(rdir: str, task: str) -> None:
    """Commits an offline folder's reports, models and memory (``data/`` and ``labels.npz`` are
    ignored by .gitignore: recorded episodes are regenerated by the data stage)."""
    from benchmarks.hil_serl import git_commit

    paths = [os.path.join(rdir, p) for p in ("report", "models", "memory", "metrics.json", "report.md", "log.txt")
             if os.path.exists(os.path.join(rdir, p))]
    if paths:
        git_commit(paths, f"UniIntervene protocol: offline models and report of {os.path.basename(rdir)}")


def note_provenance(out: str, parts: Sequence[str], commit: bool) -> None:
    """Appends to ``OUT/provenance.txt`` which code this invocation runs: the commit of the
    checkout holding this script (a git worktree keeps a sweep on one code version while main
    moves on), whether it had uncommitted changes, the parts and the time (UTC)."""
    import datetime

    def git(*a):
        r = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else "?"

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "uniintervene_jax", "serl_ext", "configs",
                "launchers", "benchmarks")
    line = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: parts {','.join(parts)} from "
            f"{REPO} at commit {git('rev-parse', '--short', 'HEAD')}"
            f"{' (with uncommitted changes)' if dirty and dirty != '?' else ''}\n")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "provenance.txt")
    with open(path, "a") as f:
        f.write(line)
    print("[protocol]", line.strip(), flush=True)
    if commit:
        from benchmarks.hil_serl import git_commit

        git_commit([path], "UniIntervene protocol: provenance")


def stop_by_time(stop_by: str, stop_after_min: float, now: float = None) -> str:
    """The deadline both compare parts get, as ISO 8601 UTC (``""``: none): ``stop_by`` as given
    (checked), or ``stop_after_min`` minutes after ``now`` (Unix time, s; default the clock), so
    that the ablations part, which starts later, keeps the same deadline.

    Raises:
      SystemExit: both given, a negative ``stop_after_min``, or an unreadable ``stop_by``.
    """
    import datetime
    import time

    from benchmarks.comparison.launch import parse_stop_by

    if stop_by and stop_after_min:
        raise SystemExit("[protocol] give --stop_by or --stop_after_min, not both")
    if stop_after_min < 0:
        raise SystemExit(f"[protocol] --stop_after_min={stop_after_min} is negative")
    if stop_by:
        try:
            parse_stop_by(stop_by)
        except ValueError as e:
            raise SystemExit(f"[protocol] {e}")
        return stop_by
    if not stop_after_min:
        return ""
    when = (time.time() if now is None else now) + 60.0 * stop_after_min
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/uniintervene_protocol")
    p.add_argument("--parts", default="offline,compare,ablations,tables")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--ablation_tasks", default=",".join(ABLATION_TASKS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--commit", action="store_true")
    p.add_argument("--report_only", action="store_true", help="compare parts: only the reports")
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("--stop_by", default="", help="compare parts: start no run that is not expected to finish by "
                   "this time (ISO 8601, UTC unless an offset is given; benchmarks/compare.py --stop_by)")
    p.add_argument("--stop_after_min", type=float, default=0.0,
                   help="the same as --stop_by, as minutes from now (e.g. what is left of a session)")
    args = p.parse_args(argv)
    stop_by = stop_by_time(args.stop_by, args.stop_after_min)
    out = os.path.abspath(args.out)
    parts = [x for x in args.parts.split(",") if x]
    unknown = [x for x in parts if x not in ("offline", "compare", "ablations", "tables")]
    if unknown:
        p.error(f"unknown parts {unknown}")
    tasks = [t for t in args.tasks.split(",") if t]
    ablation_tasks = [t for t in args.ablation_tasks.split(",") if t]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    if not args.dry_run and not args.report_only:
        note_provenance(out, parts, args.commit)
    if "offline" in parts and not args.report_only:
        for rdir, cmd, prepare in offline_commands(out, tasks, ablation_tasks):
            print("[protocol]", " ".join(cmd), flush=True)
            if args.dry_run:
                continue
            os.makedirs(rdir, exist_ok=True)
            if prepare is not None:
                prepare_ablation(*prepare)
            with open(os.path.join(rdir, "log.txt"), "a") as log:
                proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                raise SystemExit(f"[protocol] pipeline failed (exit {proc.returncode}); see {rdir}/log.txt")
            if args.commit:
                commit_offline(rdir, os.path.basename(rdir))
    for part, build in (("compare", compare_command), ("ablations", ablation_command)):
        if part not in parts:
            continue
        part_tasks = tasks if part == "compare" else ablation_tasks
        if part == "ablations" and not args.dry_run:
            missing = missing_full_runs(out, part_tasks, args.seeds)
            if missing and not args.report_only:
                print(f"[protocol] ablations wait for the main comparison's {FULL} runs {missing} "
                      "(run --parts=compare first)", flush=True)
                continue
            link_full_runs(out, part_tasks)
        cmd = build(out, part_tasks, args.seeds, args.commit, args.report_only, stop_by)
        print("[protocol]", " ".join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, cwd=REPO, env=env, check=False)
    if "tables" in parts and not args.dry_run:
        from benchmarks.protocol_tables import build as build_tables

        build_tables(out, os.path.join(REPO, "benchmarks", "results", "sft", "results.json"),
                     "python benchmarks/protocol_tables.py --out=" + os.path.relpath(out, REPO))
        print(f"[protocol] tables: {os.path.join(out, 'tables.md')}", flush=True)
        timing = []
        if os.path.isdir(os.path.join(out, "compare", "runs")):
            from benchmarks.gate_timing import main as gate_timing

            try:
                gate_timing([f"--runs={os.path.join(out, 'compare', 'runs')}", f"--out={os.path.join(out, 'compare')}"])
                timing = [os.path.join(out, "compare", f"gate_timing.{ext}") for ext in ("md", "json")]
            except SystemExit as e:  # no finished run with a gate timeline yet
                print(f"[protocol] gate timing: {e}", flush=True)
        if args.commit:
            from benchmarks.hil_serl import git_commit

            git_commit([os.path.join(out, "tables.md"), os.path.join(out, "tables.json"), *timing],
                       "UniIntervene protocol: tables, gate timing and done-when checks")


if __name__ == "__main__":
    main()
