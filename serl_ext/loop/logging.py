"""Metric logging (tensorboard, a JSON-lines copy that scripts can read, optionally Weights &
Biases) and the console copy of each process in its run folder.

Everything here is optional beyond the JSONL file: tensorboard (``logging.tensorboard``) and
wandb (``logging.wandb``, ``pip install -e .[wandb]``) receive the same keys at the same steps.
"""

import json
import math
import os
import sys
import time
import uuid
from typing import Any, Dict, Mapping, Optional, Sequence


def wandb_settings(config, role: str) -> Dict[str, Any]:
    """The ``wandb.init`` arguments of one process of a run, from ``config.logging``.

    Actor and learner are two wandb runs of one group: ``name`` is ``logging.wandb_name`` (default
    the run folder name, ``{task}/{algorithm}/seed{seed}``) + ``/{role}``; ``group`` is
    ``logging.wandb_group`` (default that same run name); ``tags`` are the task, the algorithm,
    the role and ``logging.wandb_tags``; ``mode`` is ``logging.wandb_mode`` ("online",
    "offline", "disabled"; "" leaves it to ``$WANDB_MODE``); ``config`` is the resolved config.
    """
    lg = config.logging
    run_name = (str(lg.get("wandb_name", "") or "") or str(config.get("run_name", "") or "")
                or f"{config.task}/{config.algorithm}/seed{config.seed}")
    settings = {
        "project": str(lg.get("wandb_project", "") or "serl_ext"),
        "entity": str(lg.get("wandb_entity", "") or "") or None,
        "name": f"{run_name}/{role}",
        "group": str(lg.get("wandb_group", "") or "") or run_name,
        "tags": [str(config.task), str(config.algorithm), role, *[str(t) for t in lg.get("wandb_tags", ())]],
        "job_type": role,
        "config": json.loads(config.to_json_best_effort()),
    }
    mode = str(lg.get("wandb_mode", "") or "")
    if mode:
        settings["mode"] = mode
    return settings


class MetricLogger:
    """Writes namespaced scalars (``train/``, ``rollout/``, ``eval/``, ``intervention/``).

    Files: ``{run_dir}/tb/{name}/events.*`` (tensorboard, when enabled),
    ``{run_dir}/metrics/{name}.jsonl`` (one JSON object per call: ``step``, ``wall_s`` and the
    scalars; non-finite values as ``null``) and, with ``wandb`` settings, a wandb run (its local
    files under ``{run_dir}/wandb``; the run id is kept in ``{run_dir}/wandb/{name}_run_id`` so
    that a resumed process continues the same wandb run).

    Args:
      run_dir: the run folder.
      name: the process ("actor", "learner", "eval").
      tensorboard: write tensorboard event files.
      wandb: None (no wandb) or the keyword arguments of ``wandb.init`` (:func:`wandb_settings`).
    Raises:
      ImportError: ``wandb`` given but the package is missing (the message says how to install it).
    """

    def __init__(self, run_dir: str, name: str, tensorboard: bool = True,
                 wandb: Optional[Dict[str, Any]] = None):
        self._start = time.time()
        self._run_dir = run_dir
        metrics_dir = os.path.join(run_dir, "metrics")
        os.makedirs(metrics_dir, exist_ok=True)
        self._jsonl = open(os.path.join(metrics_dir, f"{name}.jsonl"), "a", buffering=1)
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(run_dir, "tb", name), flush_secs=10)
        self._wandb = None
        if wandb is not None:
            self._wandb = _init_wandb(run_dir, name, dict(wandb))

    @property
    def wandb_run(self):
        """The wandb run object (None without wandb)."""
        return self._wandb

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        """Logs ``scalars`` (name -> number) at integer ``step``."""
        record: Dict[str, Optional[float]] = {"step": int(step), "wall_s": time.time() - self._start}
        for key, value in scalars.items():
            value = float(value)
            record[key] = value if math.isfinite(value) else None
            if self._tb is not None:
                self._tb.add_scalar(key, value, int(step))
        self._jsonl.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: float(v) for k, v in scalars.items()}, step=int(step))

    def log_video(self, key: str, path: str, step: int, fps: int = 20) -> None:
        """Records an mp4 written at ``path``: a JSONL row ``{step, wall_s, key: path relative to
        the run folder}`` and, with wandb, a ``wandb.Video`` under ``key`` (tensorboard's video
        summary needs moviepy, so tensorboard gets none)."""
        rel = os.path.relpath(path, self._run_dir)
        self._jsonl.write(json.dumps({"step": int(step), "wall_s": time.time() - self._start, key: rel}) + "\n")
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Video(path, fps=fps, format="mp4")}, step=int(step))

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def make_logger(config, run_dir: str, name: str) -> MetricLogger:
    """The :class:`MetricLogger` of process ``name`` as ``config.logging`` asks (tensorboard,
    and wandb with :func:`wandb_settings` when ``logging.wandb``)."""
    lg = config.logging
    return MetricLogger(run_dir, name, tensorboard=bool(lg.tensorboard),
                        wandb=wandb_settings(config, name) if bool(lg.get("wandb", False)) else None)


def _init_wandb(run_dir: str, name: str, settings: Dict[str, Any]):
    try:
        import wandb
    except ImportError as e:
        raise ImportError("logging.wandb=True needs the wandb package: pip install -e '.[wandb]'") from e
    wandb_dir = os.path.join(run_dir, "wandb")
    os.makedirs(wandb_dir, exist_ok=True)
    id_path = os.path.join(wandb_dir, f"{name}_run_id")
    if os.path.exists(id_path):
        with open(id_path) as f:
            run_id = f.read().strip()
    else:
        run_id = uuid.uuid4().hex[:12]  # wandb run ids: lowercase letters and digits
        with open(id_path, "w") as f:
            f.write(run_id)
    settings.setdefault("dir", run_dir)  # wandb writes into {dir}/wandb/
    return wandb.init(id=run_id, resume="allow", **settings)


def read_jsonl(path: str):
    """Reads a metrics JSONL file into a list of dicts (skips a torn last line)."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


# ------------------------------------------------------------------ console and process log
class _LogCopy:
    """A text stream that writes to ``stream`` (the terminal; None: nowhere) and a copy to
    ``log_file`` as a terminal would finally show it: a line redrawn with carriage returns
    (a tqdm progress bar) is written once, in its last state, when it ends."""

    def __init__(self, stream, log_file):
        self._stream = stream
        self._file = log_file
        self._pending = ""

    def write(self, text: str) -> int:
        if self._stream is not None:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                pass
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._file.write(line[line.rfind("\r") + 1:] + "\n")
        cut = self._pending.rfind("\r")
        if cut >= 0:  # only what follows the last carriage return is still on the screen
            self._pending = self._pending[cut + 1:]
        return len(text)

    def flush(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                pass
        self._file.flush()

    def close_line(self) -> None:
        if self._pending:
            self._file.write(self._pending + "\n")
            self._pending = ""
        self._file.flush()

    def isatty(self) -> bool:
        return bool(self._stream is not None and getattr(self._stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        if self._stream is None:
            raise OSError("no terminal behind this stream")
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    def __getattr__(self, name):  # errors, buffer, ... of the terminal stream
        return getattr(self._stream if self._stream is not None else self._file, name)


class ProcessLog:
    """Copies this process's console (``sys.stdout`` and ``sys.stderr``) into
    ``{run_dir}/logs/{role}.log`` (appended; a header line marks each start).

    Args:
      path: the log file.
      quiet: True: nothing goes to the terminal (``launchers/run_task.sh`` runs the learner so,
        beside the actor's status line); only :meth:`fatal` messages reach it.
    Use as a context manager; on exit the streams are restored.
    """

    def __init__(self, path: str, quiet: bool = False):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.quiet = quiet
        self._file = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
        self._file.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
        self._terminal = sys.__stderr__
        self._saved = None

    def __enter__(self) -> "ProcessLog":
        self._saved = (sys.stdout, sys.stderr)
        out, err = self._saved
        self._out = _LogCopy(None if self.quiet else out, self._file)
        self._err = _LogCopy(None if self.quiet else err, self._file)
        sys.stdout, sys.stderr = self._out, self._err
        return self

    def log_only(self, text: str) -> None:
        """Writes ``text`` to the log file only."""
        self._file.write(text if text.endswith("\n") else text + "\n")

    def fatal(self, message: str) -> None:
        """Writes ``message`` to the log and, also when quiet, to the terminal."""
        self._file.write(message + "\n")
        if self.quiet and self._terminal is not None:
            self._terminal.write("\n" + message + "\n")
            self._terminal.flush()

    def __exit__(self, *exc) -> None:
        for stream in (self._out, self._err):
            stream.close_line()
        sys.stdout, sys.stderr = self._saved
        self._file.close()


# ------------------------------------------------------------------ the result table
def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with columns padded to their widest cell (a markdown pipe table)."""
    cells = [[str(h) for h in header]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def result_table(summary: Mapping[str, Any], run_dir: str) -> str:
    """The run's result at a glance, from ``summary.json`` (``actor.write_summary``): task,
    method, env steps, minutes, final SR (with its successes / episodes and the 95% Wilson
    interval), IR, and the run folder."""
    sr = summary.get("eval_success_rate")
    n = int(summary.get("eval_episodes") or 0)
    if sr is None:
        sr_text = "-"
    else:
        k = int(round(float(sr) * n))
        lo, hi = wilson_interval(k, n)
        sr_text = f"{float(sr):.2f} ({k}/{n}, 95% CI {lo:.2f}-{hi:.2f})" if n else f"{float(sr):.2f}"
    system = summary.get("eval_system_success_rate")
    header = ["task", "method", "env steps", "minutes", "final SR"]
    row = [summary.get("task"), summary.get("algorithm"), summary.get("env_steps"),
           f"{float(summary.get('wall_clock_s') or 0.0) / 60:.1f}", sr_text]
    if system is not None:
        header.append("SR with gate")
        row.append(f"{float(system):.2f}")
    header.append("IR")
    row.append(f"{float(summary.get('intervention_rate') or 0.0):.3f}")
    return format_table(header, [row]) + f"\nrun folder: {run_dir}"


def wilson_interval(successes: int, trials: int, confidence: float = 0.95):
    """Wilson score interval ``(low, high)`` of a success rate (``scipy.stats.binomtest``);
    ``(0.0, 1.0)`` for zero trials."""
    if trials <= 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
