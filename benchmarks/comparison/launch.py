"""Launching a comparison: name checks, budgets, run folders, ports and the run launcher.

Each run is ``bash launchers/run_task.sh TASK,METHOD --config.seed=S ...`` (learner and actor as
two processes), its folder ``OUT/runs/TASK/METHOD/seedS``, its log
``OUT/logs/log_TASK_METHOD_seedS.txt``. Concurrent runs hold a slot each and the slot's port
pair (``base_port + 10 * slot`` and ``+1``).
"""

import concurrent.futures
import glob
import json
import os
import queue
import shlex
import shutil
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def validate(methods: Sequence[str], tasks: Sequence[str], baseline: str) -> None:
    """Checks names against ``configs.algorithms.ALGORITHMS`` and ``configs.tasks.TASK_OVERRIDES``.

    Args:
      methods: algorithm names to compare. tasks: task names. baseline: one of ``methods``.
    Raises:
      ValueError: an unknown method or task (the message lists the known ones), no methods or
        tasks, duplicates, or a baseline that is not among the methods.
    """
    from configs.algorithms import ALGORITHMS
    from configs.tasks import TASK_OVERRIDES

    if not methods or not tasks:
        raise ValueError("--methods and --tasks must not be empty")
    unknown = [m for m in methods if m not in ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known algorithms (configs/algorithms.py): {sorted(ALGORITHMS)}")
    unknown = [t for t in tasks if t not in TASK_OVERRIDES]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known tasks (configs/tasks.py): {sorted(TASK_OVERRIDES)}")
    for name, values in (("methods", methods), ("tasks", tasks)):
        if len(set(values)) != len(values):
            raise ValueError(f"--{name} has duplicates: {list(values)}")
    if baseline not in methods:
        raise ValueError(f"--baseline={baseline!r} is not among --methods={list(methods)}")


def task_budget(task: str, max_env_steps: int = 0) -> int:
    """Env-step budget of every run of ``task`` (agent steps after action repeat):
    ``max_env_steps`` when > 0, else the task's ``configs/tasks.py`` default.

    Raises:
      KeyError: ``max_env_steps`` is 0 and ``task`` is not in ``TASK_OVERRIDES``.
    """
    from configs.tasks import TASK_OVERRIDES

    return int(max_env_steps) if max_env_steps and max_env_steps > 0 else int(TASK_OVERRIDES[task]["max_env_steps"])


def run_dir(out: str, task: str, method: str, seed) -> str:
    """``OUT/runs/TASK/METHOD/seedS`` (= ``serl_ext.loop.common.run_dir_for`` with run_root
    OUT/runs); ``seed`` is anything ``int`` accepts."""
    return os.path.join(out, "runs", task, method, f"seed{int(seed)}")


def log_path(out: str, task: str, method: str, seed) -> str:
    """``OUT/logs/log_TASK_METHOD_seedS.txt``: the combined stdout and stderr of one run."""
    return os.path.join(out, "logs", f"log_{task}_{method}_seed{int(seed)}.txt")


def ports_for_slot(slot: int, base_port: int = 5600) -> Tuple[int, int]:
    """(data port, broadcast port) of concurrent run slot ``slot``: ``base + 10 slot`` and ``+1``."""
    port = int(base_port) + 10 * int(slot)
    return port, port + 1


def build_run_command(out: str, task: str, method: str, seed, budget: int, slot: int = 0,
                      eval_period: int = 2500, eval_episodes: int = 10, base_port: int = 5600,
                      extra: Sequence[str] = ()) -> List[str]:
    """The argv of one run (executed with cwd = repo root).

    ``bash launchers/run_task.sh TASK,METHOD --config.seed=S --config.run_root=OUT/runs
    --config.actor.eval_period=.. --config.actor.eval_episodes=.. --config.logging.progress_bar=False
    --config.transport.port=P --config.transport.broadcast_port=P+1
    --config.actor.max_env_steps=BUDGET EXTRA...`` with the ports of ``slot``
    (:func:`ports_for_slot`). The budget (env steps) is always explicit, so an algorithm
    override can never give one method a different budget.
    """
    port, bport = ports_for_slot(slot, base_port)
    return [
        "bash", "launchers/run_task.sh", f"{task},{method}",
        f"--config.seed={int(seed)}",
        f"--config.run_root={os.path.join(os.path.abspath(out), 'runs')}",
        f"--config.actor.eval_period={int(eval_period)}",
        f"--config.actor.eval_episodes={int(eval_episodes)}",
        "--config.logging.progress_bar=False",
        f"--config.transport.port={port}",
        f"--config.transport.broadcast_port={bport}",
        f"--config.actor.max_env_steps={int(budget)}",
        *extra,
    ]


def parse_method_flags(entries: Sequence[str], methods: Sequence[str]) -> Dict[str, List[str]]:
    """``["METHOD=--config.x=y", ...]`` -> ``{METHOD: [flag, ...]}`` (in the given order).

    A flag may name ``{task}`` and ``{seed}``; :func:`method_run_flags` fills them per run. These
    flags are each method's own (e.g. the offline folder a method starts from); the settings
    the comparison holds identical must never be among them.
    Raises:
      ValueError: an entry without ``=`` or ``--config.``, a method not among ``methods``, or a
        flag that sets a held-identical setting (budget, evaluation, seed, demos, operator).
    """
    held = ("--config.actor.max_env_steps", "--config.actor.eval_", "--config.seed", "--config.demos",
            "--config.operator", "--config.run_root", "--config.transport")
    out: Dict[str, List[str]] = {}
    for entry in entries:
        method, sep, flag = entry.partition("=")
        if not sep or not flag.startswith("--config."):
            raise ValueError(f"--method_flags entry {entry!r} is not METHOD=--config.FIELD=VALUE")
        if method not in methods:
            raise ValueError(f"--method_flags entry {entry!r}: {method!r} is not among --methods={list(methods)}")
        if flag.startswith(held):
            raise ValueError(f"--method_flags entry {entry!r} sets a setting the comparison holds identical "
                             "across methods; pass it after -- (every method) instead")
        out.setdefault(method, []).append(flag)
    return out


def method_run_flags(method_flags: Dict[str, Sequence[str]], task: str, method: str, seed) -> List[str]:
    """The flags of ``method`` for one run, ``{task}`` and ``{seed}`` filled in."""
    return [f.replace("{task}", task).replace("{seed}", str(int(seed))) for f in method_flags.get(method, ())]


def _subprocess_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pending_tasks(out: str, tasks: Sequence[str], methods: Sequence[str], seeds: Sequence) -> List[str]:
    """The tasks (in ``tasks`` order) that still have a (method, seed) run without a
    ``summary.json`` in ``OUT/runs``: the ones whose demos a resumed sweep needs. A finished
    sweep started again so collects nothing and leaves its demo logs and command as they were."""
    return [task for task in tasks
            if any(not os.path.exists(os.path.join(run_dir(out, task, method, seed), "summary.json"))
                   for method in methods for seed in seeds)]


def collect_demos(out: str, tasks: Sequence[str], num_demos: int) -> None:
    """Collects the scripted demos of every task once, sequentially (no-op where present), so
    that every method of a task trains from the same ``demos/TASK`` folder.

    Args:
      out: the comparison folder; each task's log goes to ``OUT/logs/demos_TASK.txt``.
      tasks: task names. num_demos: demos per task.
    Raises:
      RuntimeError: demo collection failed (see ``OUT/logs/demos_TASK.txt``).
    """
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    for task in tasks:
        cmd = [sys.executable, "launchers/collect_demos.py", f"--task={task}", f"--num_demos={int(num_demos)}"]
        print("[compare] demos:", " ".join(cmd), flush=True)
        logp = os.path.join(out, "logs", f"demos_{task}.txt")
        with open(logp, "w") as logf:
            proc = subprocess.run(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, env=_subprocess_env())
        if proc.returncode != 0:
            raise RuntimeError(f"demo collection for {task} failed (exit {proc.returncode}); see {logp}")


def parse_stop_by(text: str) -> Optional[float]:
    """``--stop_by`` -> Unix time (s): an ISO 8601 date and time (``2026-12-02T21:30``; without
    an offset it is UTC, like the machine's clock and the run logs), or ``""`` for no deadline
    (None).

    Raises:
      ValueError: text that is neither (the message shows the expected form).
    """
    import datetime

    text = (text or "").strip()
    if not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--stop_by={text!r} is not an ISO 8601 date and time such as 2026-12-02T21:30 "
                         "(UTC unless an offset is given)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def longest_wall_clock_s(pattern: str) -> Optional[float]:
    """The longest positive ``wall_clock_s`` of the ``summary.json`` files matching the glob
    ``pattern`` (unreadable or malformed files are skipped); None when there is none."""
    times = []
    for path in glob.glob(pattern):
        try:
            with open(path) as f:
                value = float(json.load(f).get("wall_clock_s", "nan"))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        if value == value and value > 0:
            times.append(value)
    return max(times) if times else None


def first_longest_wall_clock_s(*patterns: str) -> Optional[float]:
    """:func:`longest_wall_clock_s` of the first glob pattern that matches a finished run (the
    run's own kind first, then wider ones); None when none does."""
    for pattern in patterns:
        value = longest_wall_clock_s(pattern)
        if value is not None:
            return value
    return None


def deadline_from_flags(stop_by: str, stop_after_min: float, now: Optional[float] = None) -> Optional[float]:
    """A sweep's deadline (Unix time, s) from ``--stop_by`` (ISO 8601, :func:`parse_stop_by`) or
    ``--stop_after_min`` (minutes after ``now``, default the clock); None for neither.

    Raises:
      ValueError: both given, a negative ``stop_after_min`` or an unreadable ``stop_by``.
    """
    if stop_by and stop_after_min:
        raise ValueError("give --stop_by or --stop_after_min, not both")
    if stop_after_min < 0:
        raise ValueError(f"--stop_after_min={stop_after_min} is negative")
    if stop_by:
        return parse_stop_by(stop_by)
    if not stop_after_min:
        return None
    return (time.time() if now is None else now) + 60.0 * float(stop_after_min)


def defer_reason(deadline: Optional[float], expected_s: Optional[float], now: Optional[float] = None) -> Optional[str]:
    """Why a run must not start before ``deadline`` (None: it may): the deadline has passed, or
    the run is expected to take ``expected_s`` seconds (None: unknown, it may start) and that
    is more than is left."""
    if deadline is None:
        return None
    left = deadline - (time.time() if now is None else now)
    if left <= 0 or (expected_s is not None and expected_s > left):
        return (f"expected {'?' if expected_s is None else f'{expected_s / 60:.0f}'} min, "
                f"{max(left, 0.0) / 60:.0f} min left before the deadline")
    return None


#: Flags that only schedule a session (deadline and its estimate), left out of recorded commands.
SCHEDULE_FLAGS = ("--stop_by", "--stop_after_min", "--unknown_run_min")


def without_schedule_flags(argv: Sequence[str]) -> List[str]:
    """``argv`` without :data:`SCHEDULE_FLAGS` (and their values): they only
    schedule a session and change nothing a run computes, so a resumed sweep records the same
    command."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in SCHEDULE_FLAGS or a in tuple(f[1:] for f in SCHEDULE_FLAGS):
            skip = True
            continue
        if a.startswith(tuple(f + "=" for f in SCHEDULE_FLAGS) + tuple(f[1:] + "=" for f in SCHEDULE_FLAGS)):
            continue
        kept.append(a)
    return kept


def expected_run_s(out: str, task: str, method: str) -> Optional[float]:
    """How long a run of ``task`` / ``method`` is expected to take, in wall-clock seconds: the
    longest ``wall_clock_s`` of the finished runs of that method on that task in ``OUT/runs``;
    without one, the longest of the task's other methods' runs; None when the task has no
    finished run (or no readable ``summary.json``). The longest, not the median: run times on a
    shared machine vary about 2x with what else runs, and the estimate decides whether a run
    may still start before a deadline."""
    runs = os.path.join(out, "runs", glob.escape(task))
    return first_longest_wall_clock_s(os.path.join(runs, glob.escape(method), "seed*", "summary.json"),
                                      os.path.join(runs, "*", "seed*", "summary.json"))


def launch_runs(out: str, tasks: Sequence[str], methods: Sequence[str], seeds: Sequence, max_env_steps: int,
                parallel: int = 1, eval_period: int = 2500, eval_episodes: int = 10, base_port: int = 5600,
                extra: Sequence[str] = (), method_flags: Optional[Dict[str, Sequence[str]]] = None,
                on_finish: Optional[Callable[[str, str, int, bool], None]] = None,
                stop_by: Optional[float] = None) -> Dict[str, int]:
    """Runs every (task, method, seed) that has no ``summary.json`` yet, ``parallel`` at a time.

    ``extra`` goes to every run, then ``method_flags[method]`` (:func:`method_run_flags`) to that
    method's runs. ``on_finish(task, method, seed, ok)`` is called after each run (under the
    lock; e.g. to commit it).

    Order: seed-major (all tasks and methods of seed 0 first), so an interrupted sweep leaves
    complete comparisons. A run folder without ``summary.json`` is removed first (the run
    restarts from scratch). Every concurrent run holds its own slot and port pair; the budget
    is :func:`task_budget` of ``max_env_steps``. Prints a line per start and finish (elapsed
    minutes) and a tqdm bar over the runs.

    ``stop_by`` (Unix time, s; None: no deadline): a run is started only if it is expected to
    finish by then (:func:`expected_run_s`; a run with no estimate starts while time is left).
    A run that would not is *deferred*: not started, its folder left alone, printed with the
    estimate; later, shorter runs may still start. A sweep that must end at a known time (a
    session limit) so keeps no half-done run whose work would be thrown away.

    Returns:
      ``{"done_before": n, "ok": n, "failed": n, "deferred": n}`` (a run is ok when it exits 0
      and leaves a ``summary.json``).
    """
    from tqdm import tqdm

    jobs, done_before = [], 0
    for seed in seeds:
        for task in tasks:
            for method in methods:
                rdir = run_dir(out, task, method, seed)
                if os.path.exists(os.path.join(rdir, "summary.json")):
                    done_before += 1
                    continue
                jobs.append((task, method, int(seed)))
    print(f"[compare] {done_before} runs done already, {len(jobs)} to run, {max(1, parallel)} at a time", flush=True)
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    slots: "queue.Queue[int]" = queue.Queue()
    for k in range(max(1, int(parallel))):
        slots.put(k)
    lock = threading.Lock()
    counts = {"done_before": done_before, "ok": 0, "failed": 0, "deferred": 0}
    t_start = time.time()
    bar = tqdm(total=len(jobs), desc="runs", unit="run")

    def one(job):
        task, method, seed = job
        rdir = run_dir(out, task, method, seed)
        slot = slots.get()
        try:
            if stop_by is not None:
                left, expected = stop_by - time.time(), expected_run_s(out, task, method)
                if left <= 0 or (expected is not None and expected > left):
                    with lock:
                        counts["deferred"] += 1
                        bar.update(1)
                        tqdm.write(f"[compare] deferred {task} {method} seed {seed}: expected "
                                   f"{'?' if expected is None else f'{expected / 60:.0f}'} min, "
                                   f"{max(left, 0.0) / 60:.0f} min left before --stop_by")
                    return
            if os.path.isdir(rdir):  # An interrupted run restarts from scratch (clean timings, no mixed state).
                shutil.rmtree(rdir)
            cmd = build_run_command(out, task, method, seed, task_budget(task, max_env_steps), slot=slot,
                                    eval_period=eval_period, eval_episodes=eval_episodes,
                                    base_port=base_port,
                                    extra=[*extra, *method_run_flags(method_flags or {}, task, method, seed)])
            t0 = time.time()
            with lock:
                tqdm.write(f"[compare] start {task} {method} seed {seed} (slot {slot}, "
                           f"{(t0 - t_start) / 60:.1f} min into the sweep): {shlex.join(cmd)}")
            with open(log_path(out, task, method, seed), "w") as logf:
                proc = subprocess.run(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, env=_subprocess_env())
            ok = proc.returncode == 0 and os.path.exists(os.path.join(rdir, "summary.json"))
            with lock:
                counts["ok" if ok else "failed"] += 1
                tqdm.write(f"[compare] {'done' if ok else 'FAILED'} {task} {method} seed {seed}: exit "
                           f"{proc.returncode} after {(time.time() - t0) / 60:.1f} min"
                           + ("" if ok else f" (log: {log_path(out, task, method, seed)})"))
                bar.update(1)
                if on_finish is not None:
                    on_finish(task, method, seed, ok)
        finally:
            slots.put(slot)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(parallel))) as pool:
        for fut in [pool.submit(one, j) for j in jobs]:
            fut.result()
    bar.close()
    print(f"[compare] sweep finished in {(time.time() - t_start) / 60:.1f} min: {counts}", flush=True)
    return counts
