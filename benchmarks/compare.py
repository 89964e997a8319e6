"""Method comparison: methods x tasks x seeds with identical budgets, demos and operator.

  python benchmarks/compare.py --methods=hil_serl,hil_serl+uniintervene \
      --tasks=pick-place,peg-insert-side,assembly,sweep-into,box-close --seeds=0,1,2 \
      --max_env_steps=30000 --out=benchmarks/results/compare [--parallel=1] [--report_only] \
      [--baseline=hil_serl] [--eval_period=2500] [--eval_episodes=10] \
      [--machine="2 CPU cores, no GPU"] [--commit] \
      [--method_flags='hil_serl+uniintervene=--config.uniintervene.init_from=OFFLINE/{task}' ...] \
      [-- --config.X=Y ...]

Methods are algorithm names of ``configs/algorithms.py`` (``ALGORITHMS``), tasks the keys of
``configs/tasks.py`` (``TASK_OVERRIDES``). What is held identical across the methods of a task:
the env-step budget (``--config.actor.max_env_steps``: ``--max_env_steps`` or the task's config
default when 0, always passed explicitly), the demos folder (``demos/TASK``, collected once per
task before any run, sequentially, so parallel runs never race on it), the simulated operator
config (nothing here overrides it; extra ``--config`` flags after ``--`` go to every run), the
evaluation schedule (``--eval_period``, ``--eval_episodes``) and the seeds. A method's own
flags (``--method_flags=METHOD=FLAG``, ``{task}`` and ``{seed}`` filled in per run; e.g. the
offline pipeline folder UniIntervene starts from) go to that method's runs only and may not set
any of the held settings. ``--commit`` git-commits each finished run (its folder without
checkpoints, its log) with the report so far, so a sweep cut short keeps what finished. The report checks the
resolved ``actor_config.json`` of every run and lists any difference in those settings.

Each run is ``bash launchers/run_task.sh TASK,METHOD --config.seed=S ...`` (learner and actor as
two processes), its folder ``OUT/runs/TASK/METHOD/seedS``, its log
``OUT/logs/log_TASK_METHOD_seedS.txt``. ``--parallel=N`` runs N at a time, each with its own
port pair (``--base_port + 10 * slot`` and ``+1``). Runs that hold ``summary.json`` are skipped
(the command resumes); a run folder without one is removed and restarted. ``--stop_by=TIME``
(ISO 8601, UTC) starts only the runs expected to finish by then (the longest finished run of the
same task and method, else of the task, is the estimate) and defers the others to the next
invocation, so a sweep that must stop at a known time throws no half-done run away.

Afterwards (or with ``--report_only``) every finished run is aggregated into ``OUT/results.json``,
``OUT/results.md``, ``OUT/curves.png`` and ``OUT/timeline.png``
(``benchmarks.comparison.render.report``).

This file is the command line only: the work is done by ``benchmarks/comparison/`` (``launch``:
names, budgets, ports and the run launcher; ``load``: run folders; ``aggregate``: seed statistics
and the comparison with the baseline; ``render``: the result files and figures).

Definitions used in the outputs (per run, from ``summary.json``):
  SR  final evaluation success rate (``eval_success_rate``: the last evaluation of the run,
      deterministic policy, ``eval_episodes`` fresh seeded episodes, no operator, no gate).
  IR  intervention rate over the whole run (``intervention_rate`` = human-operator steps / all
      env steps, agent steps at the config's action repeat).
Per task and method: mean and sample standard deviation (ddof=1; "-" with one seed) over seeds.
Against the baseline method (``--baseline``), per task, from the seed means:
  IR reduction   ``(IR_base - IR_m) / IR_base`` in % (positive = fewer interventions; undefined
                 when IR_base is 0).
  SR difference  ``SR_m - SR_base`` in percentage points.
  target         IR reduction >= 50 % and SR_m >= SR_base (the issue's target; the paper
                 reports -57 % IR and +8.6 points SR for UniIntervene vs HiL-SERL).
The "average" row averages the per-task seed means over the tasks where every method has at
least one finished run, and computes the reduction / difference from those averages.
Selectivity (per task and method, the mean over seeds of each run's value; "-" where a run's
files lack it; ``benchmarks.comparison.load.selectivity_metrics``):
  trigger rate       the gate's triggers per decision (``gate_trigger_rate``, else
                     ``gate_triggers / gate_decisions``).
  onset precision    recovery onsets followed by an operator takeover onset 1..N env steps later
                     / recovery onsets (``trigger_onset_precision``); onset recall: takeover
                     onsets preceded by a recovery onset 1..N steps earlier / takeover onsets
                     (``trigger_onset_recall``); N = ``actor.selectivity_window`` (default 10).
                     An onset is the first step of a run of that source (``serl_ext/loop/sources.py``).
  steps by source    policy / recovery / human steps over all steps of the episode rows of
                     ``metrics/actor.jsonl``, over the run and over the episodes ending after
                     0.75 x the run's env steps.
  chunks aborted     ``gate_aborted_chunks`` per run; ``recovery_runs_ended_by_human``: recovery
                     runs followed by a human step, from the sources alone.
  value gain         ``gate_recovery_value_gain_mean``: the gate's mean proxy-value gain over a
                     recovery chunk.
"""

import os
import shlex
import sys

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.comparison.launch import (  # noqa: E402
    collect_demos, launch_runs, log_path, parse_method_flags, parse_stop_by, pending_tasks, run_dir, validate,
    without_schedule_flags)
from benchmarks.comparison.render import DEFAULT_MACHINE, report  # noqa: E402
from serl_ext.files import atomic_write  # noqa: E402

REPORT_FILES = ("results.json", "results.md", "curves.png", "timeline.png")  # what report() writes

_METHODS = flags.DEFINE_list("methods", ["hil_serl", "hil_serl+uniintervene"],
                             "Algorithm names of configs/algorithms.py to compare.")
_TASKS = flags.DEFINE_list("tasks", ["pick-place", "peg-insert-side", "assembly", "sweep-into", "box-close"],
                           "Tasks (keys of configs/tasks.py TASK_OVERRIDES).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every method runs every seed.")
_MAX_STEPS = flags.DEFINE_integer("max_env_steps", 0, "Env-step budget per run (0: each task's config default).")
_OUT = flags.DEFINE_string("out", "benchmarks/results/compare", "Output folder.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at a time (each is a learner + an actor process).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only aggregate the runs that exist.")
_BASELINE = flags.DEFINE_string("baseline", "hil_serl", "Method the others are compared against.")
_EVAL_PERIOD = flags.DEFINE_integer("eval_period", 2500, "Env steps between evaluations.")
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 10, "Episodes per evaluation.")
_NUM_DEMOS = flags.DEFINE_integer("num_demos", 20, "Scripted demos per task (shared by every method).")
_BASE_PORT = flags.DEFINE_integer("base_port", 5600, "Run slot k uses ports base + 10k and base + 10k + 1.")
_MACHINE = flags.DEFINE_string("machine", DEFAULT_MACHINE, "Where the runs ran, for the report header.")
_METHOD_FLAGS = flags.DEFINE_multi_string(
    "method_flags", [], "METHOD=--config.FIELD=VALUE: a flag for that method's runs only ({task} and {seed} "
    "are filled in), e.g. hil_serl+uniintervene=--config.uniintervene.init_from=OFFLINE/{task}; repeatable.")
_STOP_BY = flags.DEFINE_string(
    "stop_by", "", "Start no run that is not expected to finish by this time (ISO 8601, UTC unless an offset is "
    "given, e.g. 2026-12-02T21:30): the longest finished run of the same task and method (else task) is the "
    "estimate; the runs left out are deferred to the next invocation. Empty: no deadline.")
_COMMIT = flags.DEFINE_bool("commit", False, "git-commit each finished run (its folder and log) and the report.")


def recorded_command(args) -> str:
    """The command line written to ``OUT/command.txt`` and the report: ``args`` (``sys.argv[1:]``)
    without ``--stop_by``, which only schedules a session and changes nothing a run computes (so a
    resumed sweep records the same command)."""
    kept = without_schedule_flags(args)
    return "python benchmarks/compare.py " + " ".join(shlex.quote(a) for a in kept)


def main(argv):
    """The command line (module docstring): ``argv[1:]`` are the ``--config`` flags after ``--``,
    passed to every run.

    Raises:
      app.UsageError: a seed that is not an integer, an invalid name (``launch.validate``) or
        ``--stop_by`` (``launch.parse_stop_by``).
      RuntimeError: demo collection failed (``launch.collect_demos``).
    """
    extra = list(argv[1:])
    methods, tasks = list(_METHODS.value), list(_TASKS.value)
    try:
        seeds = [int(s) for s in _SEEDS.value]
        validate(methods, tasks, _BASELINE.value)
        method_flags = parse_method_flags(_METHOD_FLAGS.value, methods)
        stop_by = parse_stop_by(_STOP_BY.value)
    except ValueError as e:
        raise app.UsageError(str(e))
    out = os.path.abspath(_OUT.value)
    os.makedirs(out, exist_ok=True)
    command = recorded_command(sys.argv[1:])

    def write_report():
        return report(out, tasks, methods, seeds, baseline=_BASELINE.value, max_env_steps=_MAX_STEPS.value,
                      eval_period=_EVAL_PERIOD.value, eval_episodes=_EVAL_EPISODES.value, machine=_MACHINE.value,
                      command=command, parallel=_PARALLEL.value, num_demos=_NUM_DEMOS.value)

    def commit_run(task, method, seed, ok):
        # The run (its folder's committable files: .gitignore drops checkpoints), its log and the
        # report over what has finished, so that a sweep cut short keeps every finished run.
        from benchmarks.hil_serl import git_commit

        if not ok:
            return
        write_report()
        paths = [run_dir(out, task, method, seed), log_path(out, task, method, seed)]
        paths += [os.path.join(out, f) for f in REPORT_FILES + ("command.txt",) if os.path.exists(os.path.join(out, f))]
        git_commit(paths, f"Comparison {os.path.basename(out)}: {task} {method} seed {seed}")

    if not _REPORT_ONLY.value:
        # A resumed sweep collects (and logs) demos only for the tasks that still have runs to
        # do; a finished one started again rewrites nothing but its report.
        todo = pending_tasks(out, tasks, methods, seeds)
        if todo or not os.path.exists(os.path.join(out, "command.txt")):
            atomic_write(os.path.join(out, "command.txt"), (command + "\n").encode())
        collect_demos(out, todo, _NUM_DEMOS.value)
        launch_runs(out, tasks, methods, seeds, _MAX_STEPS.value, parallel=_PARALLEL.value,
                    eval_period=_EVAL_PERIOD.value, eval_episodes=_EVAL_EPISODES.value,
                    base_port=_BASE_PORT.value, extra=extra, method_flags=method_flags,
                    on_finish=commit_run if _COMMIT.value else None, stop_by=stop_by)
    write_report()
    if _COMMIT.value:
        from benchmarks.hil_serl import git_commit

        git_commit([os.path.join(out, f) for f in REPORT_FILES if os.path.exists(os.path.join(out, f))],
                   f"Comparison {os.path.basename(out)}: report")


if __name__ == "__main__":
    app.run(main)
