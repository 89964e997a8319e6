"""What the tests that go through the real launchers share: tiny-run flags, demo collection,
learner.sh + actor.sh as two processes, run_task.sh, and reading a finished run folder.

Not a test module (no ``test_`` prefix); imported by the launcher tests from ``tests/``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

from serl_ext.transport import find_free_ports

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

__all__ = ["REPO", "find_free_ports", "tiny_flags", "replace_flags", "compile_cache_env", "cpu_env", "collect_demos",
           "run_learner_and_actor", "run_task", "read_run"]


def tiny_flags(tmp_path, ports: Sequence[int], max_env_steps: int, *, demos: bool = True, num_demos: int = 2,
               hidden_dims: str = "(32, 32)", batch_size: int = 32, training_starts: int = 100,
               steps_per_update: int = 0) -> list:
    """``--config`` flags of a tiny run under ``tmp_path``: run root ``tmp_path/runs``, demos in
    ``tmp_path/demos`` (unless ``demos=False``), transport on ``ports[0]`` / ``ports[1]``, small
    networks and batches, no checkpoints, no periodic evaluation (one episode at the end), no
    progress bar."""
    flags = [f"--config.run_root={tmp_path / 'runs'}"]
    if demos:
        flags += [f"--config.demos.path={tmp_path / 'demos'}", f"--config.demos.num_demos={num_demos}"]
    return flags + [
        f"--config.transport.port={ports[0]}",
        f"--config.transport.broadcast_port={ports[1]}",
        f"--config.agent.hidden_dims={hidden_dims}",
        f"--config.learner.batch_size={batch_size}",
        f"--config.learner.training_starts={training_starts}",
        "--config.learner.publish_period=10",
        "--config.learner.checkpoint_period=0",
        f"--config.actor.max_env_steps={max_env_steps}",
        "--config.actor.eval_period=0",
        "--config.actor.eval_episodes=1",
        f"--config.actor.steps_per_update={steps_per_update}",
        "--config.logging.progress_bar=False",
    ]


def replace_flags(flags: Iterable[str], *new: str) -> list:
    """``flags`` with every ``--config.FIELD=`` that ``new`` sets replaced by ``new``'s value
    (appended at the end)."""
    fields = tuple(f.split("=", 1)[0] + "=" for f in new)
    return [f for f in flags if not f.startswith(fields)] + list(new)


_COMPILE_CACHE: Optional[str] = None


def compile_cache_env() -> Dict[str, str]:
    """JAX's persistent compilation cache in one folder per test session (removed at exit): the
    launcher processes of the tests (learners, actors, evaluations of the same tiny configs)
    load the programs an earlier process compiled instead of compiling them again.
    ``SERL_TESTS_COMPILE_CACHE=0`` turns it off (every process compiles for itself)."""
    global _COMPILE_CACHE
    if os.environ.get("SERL_TESTS_COMPILE_CACHE", "1") == "0":
        return {}
    if _COMPILE_CACHE is None:
        _COMPILE_CACHE = tempfile.mkdtemp(prefix="serl_test_jax_cache_")
        atexit.register(shutil.rmtree, _COMPILE_CACHE, True)
    return {"JAX_COMPILATION_CACHE_DIR": _COMPILE_CACHE, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.05"}


def cpu_env(**extra: str) -> Dict[str, str]:
    """The environment of a launcher process: this one's, JAX on the CPU, the tests' shared
    compilation cache (:func:`compile_cache_env`), plus ``extra``."""
    return dict(os.environ, JAX_PLATFORMS="cpu", **{**compile_cache_env(), **extra})


def collect_demos(task: str, out, num_demos: int = 2, timeout: int = 300) -> list:
    """``launchers/collect_demos.py --task=TASK --num_demos=N --out=OUT``; asserts it succeeded
    and wrote ``num_demos`` episode files. Returns their paths, sorted."""
    run = subprocess.run([sys.executable, "launchers/collect_demos.py", f"--task={task}",
                          f"--num_demos={num_demos}", f"--out={out}"],
                         cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = sorted(str(p) for p in Path(out).glob("*.npz"))
    assert len(files) == num_demos, files
    return files


def run_learner_and_actor(spec: str, flags: Sequence[str], env: Optional[Dict[str, str]] = None,
                          actor_timeout: int = 400, learner_timeout: int = 120, learner_log=None,
                          start_actor_when: Optional[str] = None, wait_timeout: int = 300):
    """``launchers/learner.sh SPEC FLAGS`` in the background, then ``launchers/actor.sh SPEC
    FLAGS`` to its end; asserts both exit 0 (the failing side's output tail in the message) and
    returns the actor's ``CompletedProcess``.

    ``learner_log``: a path the learner writes its output to (else a pipe). With
    ``start_actor_when`` the actor starts once that text is in the learner's log (needs
    ``learner_log``), within ``wait_timeout`` s. The learner is killed if it is still running
    when this returns or raises.
    """
    env = cpu_env() if env is None else env
    log = open(learner_log, "w") if learner_log is not None else None
    learner = subprocess.Popen(["bash", "launchers/learner.sh", spec, *flags], cwd=REPO, env=env,
                               stdout=log if log is not None else subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)

    def learner_output():
        if learner_log is not None:
            log.flush()
            with open(learner_log) as f:
                return f.read()
        return learner.communicate(timeout=learner_timeout)[0]

    try:
        if start_actor_when is not None:
            assert learner_log is not None, "start_actor_when needs learner_log"
            deadline = time.time() + wait_timeout
            while start_actor_when not in open(learner_log).read():
                assert learner.poll() is None and time.time() < deadline, open(learner_log).read()[-3000:]
                time.sleep(0.5)
        actor = subprocess.run(["bash", "launchers/actor.sh", spec, *flags], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=actor_timeout)
        assert actor.returncode == 0, actor.stdout[-3000:] + actor.stderr[-3000:]
        learner.wait(timeout=learner_timeout)
        assert learner.returncode == 0, learner_output()[-3000:]
        return actor
    finally:
        if learner.poll() is None:
            learner.kill()
            learner.wait()
        if log is not None:
            log.close()


def run_task(spec: str, flags: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: int = 500):
    """``launchers/run_task.sh SPEC FLAGS`` to its end; asserts exit 0 and returns the
    ``CompletedProcess`` (its stdout is the actor's console and the result table)."""
    run = subprocess.run(["bash", "launchers/run_task.sh", spec, *flags], cwd=REPO,
                         env=cpu_env() if env is None else env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def read_run(tmp_path, spec: str, seed: int = 0) -> Tuple[object, dict, dict]:
    """``(run_dir, summary.json, learner_summary.json)`` of the run of ``spec`` (``TASK,ALGORITHM``)
    under ``tmp_path/runs``."""
    task, algorithm = spec.rsplit(",", 1)
    run_dir = tmp_path / "runs" / task / algorithm / f"seed{seed}"
    return (run_dir, json.loads((run_dir / "summary.json").read_text()),
            json.loads((run_dir / "learner_summary.json").read_text()))
