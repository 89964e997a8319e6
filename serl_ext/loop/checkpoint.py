"""Orbax checkpoints of the learner: agent (all TrainStates incl. optimizer states), replay
buffers and counters, so a run resumes exactly where it stopped; and the policy spec (the
resolved config, the observation spec and the action size), so that :func:`load_agent`
restores a policy from the run folder alone (Brax/Octo-style self-describing checkpoints).

Layout: ``{run_dir}/checkpoints/{step}/{agent,buffers,buffers_meta,counters,policy_spec}``
managed by ``orbax.checkpoint.CheckpointManager`` (atomic: a step folder appears only when
complete; the latest step comes from orbax's own bookkeeping, never from slicing file names).
``policy_spec`` is JSON: ``{"format": 1, "config": {...}, "observation_spec": {key: [shape,
dtype]}, "action_dim": A}``; checkpoints written before it existed lack it (load_agent then
says so).

Integrity: after orbax finishes a step, ``{step}/integrity_manifest.json`` is written atomically
(``{"format": 1, "step": N, "files": {relative path: {"sha256": hex, "bytes": n}}}`` over every
file of the step). Every restore without an explicit step verifies the newest step against it
(a missing, truncated or changed file names the file), restores it, and checks that agent and
buffer float arrays are finite; a step that fails any of this is skipped with a message naming
the file and the next older step is tried. :class:`CheckpointError` when none is intact. A step
without a manifest (written before manifests existed, or a crash between orbax's save and the
manifest) is restored unverified, with a warning. Hashing costs about 1 s per GB saved.
"""

import hashlib
import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

_ITEMS = ("agent", "buffers", "buffers_meta", "counters", "policy_spec")
POLICY_SPEC_FORMAT = 1
MANIFEST_NAME = "integrity_manifest.json"
MANIFEST_FORMAT = 1

_log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No intact checkpoint could be restored; the text lists each step and why."""


class _NoPolicySpec(FileNotFoundError):
    """The step has no policy spec (not a corruption: no fallback)."""


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _step_files(step_dir: str) -> List[str]:
    out = []
    for root, _, files in os.walk(step_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), step_dir)
            if rel != MANIFEST_NAME and not name.endswith(".tmp"):
                out.append(rel)
    return sorted(out)


def write_manifest(step_dir: str, step: int) -> Dict[str, Any]:
    """Writes ``{step_dir}/integrity_manifest.json`` (sha256 and size of every file), atomically.

    Returns:
      the manifest dict.
    Raises:
      FileNotFoundError: ``step_dir`` does not exist.
    """
    from serl_ext.files import atomic_write_json

    if not os.path.isdir(step_dir):
        raise FileNotFoundError(f"checkpoint step folder {step_dir} does not exist")
    files = {}
    for rel in _step_files(step_dir):
        path = os.path.join(step_dir, rel)
        files[rel] = {"sha256": _sha256(path), "bytes": os.path.getsize(path)}
    manifest = {"format": MANIFEST_FORMAT, "step": int(step), "files": files}
    atomic_write_json(os.path.join(step_dir, MANIFEST_NAME), manifest)
    return manifest


def verify_manifest(step_dir: str) -> Optional[List[str]]:
    """Checks a step folder against its manifest.

    Returns:
      None when the folder has no manifest; else the list of problems (empty: intact), each
      naming the file: ``"{path}: missing"``, ``"{path}: truncated (n of m bytes)"``,
      ``"{path}: sha256 mismatch"``, or an unreadable manifest.
    """
    path = os.path.join(step_dir, MANIFEST_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"{path}: unreadable manifest ({type(e).__name__}: {e})"]
    problems = []
    for rel, entry in sorted(files.items()):
        fpath = os.path.join(step_dir, rel)
        if not os.path.isfile(fpath):
            problems.append(f"{fpath}: missing")
            continue
        size = os.path.getsize(fpath)
        if size != entry.get("bytes"):
            problems.append(f"{fpath}: truncated or resized ({size} of {entry.get('bytes')} bytes)")
        elif _sha256(fpath) != entry.get("sha256"):
            problems.append(f"{fpath}: sha256 mismatch (corrupted)")
    return problems


def _nonfinite_paths(tree: Any, prefix: str) -> List[str]:
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr = np.asarray(leaf)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad.append(prefix + jax.tree_util.keystr(path))
    return bad


def _split_arrays(tree: Any, prefix: str = "") -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Splits a nested dict into numeric numpy arrays (saved by orbax) and JSON-able rest."""
    arrays: Dict[str, Any] = {}
    rest: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            sub_arrays, sub_rest = _split_arrays(value)
            if sub_arrays:
                arrays[key] = sub_arrays
            if sub_rest:
                rest[key] = sub_rest
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            arrays[key] = value
        elif isinstance(value, np.generic):
            rest[key] = value.item()
        elif isinstance(value, np.ndarray):
            raise TypeError(f"cannot checkpoint array {prefix}{key} of dtype {value.dtype}")
        else:
            rest[key] = value
    return arrays, rest


def _merge(arrays: Dict[str, Any], rest: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(rest)
    for key, value in arrays.items():
        if isinstance(value, dict):
            out[key] = _merge(value, rest.get(key, {}) if isinstance(rest.get(key), dict) else {})
        else:
            out[key] = np.asarray(value)
    return out


class Checkpointer:
    """Saves and restores ``(agent, buffer state dicts, counters)``.

    Args:
      directory: checkpoint folder (created if missing).
      max_to_keep: number of most recent checkpoints kept (fallback needs >= 2; 0 or None: all;
        ``learner.checkpoints_to_keep`` in the training config).
      log_fn: ``fn(message)`` for integrity warnings (default: this module's logger).

    Attributes:
      restore_report: after a restore, one line per step tried that was skipped (empty when
        the newest step was intact); ``restored_step``: the step last restored.
    """

    def __init__(self, directory: str, max_to_keep: Optional[int] = 2,
                 log_fn: Optional[Callable[[str], None]] = None):
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or int(max_to_keep) < 0):
            raise ValueError(f"max_to_keep must be an int >= 0 (0: keep all), got {max_to_keep!r}")
        self.directory = os.path.abspath(directory)
        self._log_fn = log_fn or _log.warning
        self.restore_report: List[str] = []
        self.restored_step: Optional[int] = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(max_to_keep) or None if max_to_keep is not None else None,
            enable_async_checkpointing=False, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

    def latest_step(self) -> Optional[int]:
        """The newest complete checkpoint step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> List[int]:
        """Every complete checkpoint step kept, ascending."""
        return sorted(int(s) for s in self._manager.all_steps())

    def save(self, step: int, agent: Any, buffers: Dict[str, Dict[str, Any]], counters: Dict[str, Any],
             policy_spec: Optional[Dict[str, Any]] = None) -> int:
        """Writes checkpoint ``step`` (the newest; see Returns).

        Args:
          agent: the agent pytree (flax struct with TrainStates).
          buffers: name -> ``ReplayBuffer.state_dict()``.
          counters: JSON-serialisable dict (learner step, env steps, versions ...); the learner
            step a checkpoint holds is ``counters["learner_step"]``, not its step number.
          policy_spec: :func:`make_policy_spec` output, stored with the step (None: not stored,
            and :func:`load_agent` cannot use this step).
        Returns:
          the step number written: ``step``, or ``latest_step() + 1`` when ``step`` is not above
          the newest existing step (e.g. the learner's final save at the step of its last
          periodic one, with more transitions since; orbax would silently skip it, and the
          learner would then acknowledge transitions that no checkpoint holds).
        """
        latest = self._manager.latest_step()
        if latest is not None and int(step) <= int(latest):
            _log.info("checkpoint step %d is not above the newest one (%d); saving as step %d",
                      int(step), int(latest), int(latest) + 1)
            step = int(latest) + 1
        arrays, rest = _split_arrays(buffers)
        items = dict(
            agent=ocp.args.StandardSave(agent),
            buffers=ocp.args.StandardSave(arrays),
            buffers_meta=ocp.args.JsonSave(rest),
            counters=ocp.args.JsonSave(counters),
        )
        if policy_spec is not None:
            items["policy_spec"] = ocp.args.JsonSave(policy_spec)
        self._manager.save(int(step), args=ocp.args.Composite(**items))
        self._manager.wait_until_finished()
        step_dir = self._step_dir(int(step))
        if os.path.isdir(step_dir):
            write_manifest(step_dir, int(step))
        else:
            self._log_fn(f"checkpoint step folder {step_dir} not found after saving; no manifest written")
        return int(step)

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(int(step)))

    def _restore_verified(self, step: Optional[int], fn: Callable[[int], Any],
                          what: str) -> Any:
        """Runs ``fn(step)`` on the newest intact step (or exactly ``step``), see module doc."""
        if step is not None:
            steps = [int(step)]
        else:
            steps = sorted((int(s) for s in self._manager.all_steps()), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint found in {self.directory}")
        self.restore_report = []
        for s in steps:
            problems = verify_manifest(self._step_dir(s))
            if problems is None:
                self._log_fn(f"checkpoint {self._step_dir(s)} has no {MANIFEST_NAME} (older format or "
                             "interrupted save); restoring it unverified")
            if not problems:
                try:
                    result = fn(s)
                except _NoPolicySpec:
                    raise
                except Exception as e:  # noqa: BLE001 - any failure: try the next older step
                    problems = [f"{self._step_dir(s)}: restore failed ({type(e).__name__}: {str(e)[:300]})"]
                else:
                    self.restored_step = s
                    if self.restore_report:
                        self._log_fn(f"restored {what} from the older intact checkpoint {s}")
                    return result
            line = f"checkpoint step {s} is not intact, skipped: " + "; ".join(problems[:5])
            if len(problems) > 5:
                line += f"; ... {len(problems) - 5} more"
            self.restore_report.append(line)
            self._log_fn(line)
        raise CheckpointError(f"no intact checkpoint in {self.directory}:\n  " + "\n  ".join(self.restore_report))

    def restore(self, agent_template: Any, step: Optional[int] = None, *,
                validate: Optional[Callable[[Any, Dict[str, Any], Dict[str, Any]], None]] = None):
        """Restores ``(agent, buffers, counters)`` from the newest intact step (or ``step``).

        Args:
          agent_template: a freshly created agent of the same config; gives structure/dtypes.
          step: restore exactly this step (no fallback) instead of the newest intact one.
          validate: optional ``fn(agent, buffers, counters)`` run on each candidate step; an
            exception marks the step as not intact (e.g. pass the buffers' ``load_state_dict``,
            which applies the insert checks and value bounds, so a bad buffer falls back too).
        Returns:
          ``(agent, buffers, counters)``; ``self.restored_step`` says which step.
        Raises:
          FileNotFoundError: no checkpoint in the directory.
          CheckpointError: no step is intact (manifest mismatch, truncated or unreadable files,
            non-finite agent or buffer floats); the message names each bad file.
        """
        def one(s):
            restored = self._restore_step(agent_template, s)
            if validate is not None:
                validate(*restored)
            return restored

        return self._restore_verified(step, one, "learner state")

    def _restore_step(self, agent_template: Any, step: int):
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, agent_template)
        restored = self._manager.restore(
            int(step),
            args=ocp.args.Composite(
                agent=ocp.args.StandardRestore(abstract),
                buffers=ocp.args.StandardRestore(),
                buffers_meta=ocp.args.JsonRestore(),
                counters=ocp.args.JsonRestore(),
            ),
        )
        buffers = _merge(restored.buffers or {}, restored.buffers_meta or {})
        counters = dict(restored.counters)
        bad = _nonfinite_paths(restored.agent, "agent") + _nonfinite_paths(restored.buffers or {}, "buffers")
        if bad:
            raise ValueError(f"non-finite values in {', '.join(bad[:5])}")
        for key in ("learner_step", "version"):
            value = counters.get(key)
            if key in counters and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"counters {key}={value!r} is not an int >= 0")
        return restored.agent, buffers, counters

    def restore_agent(self, agent_template: Any, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
        """Restores ``(agent, counters)`` only (no buffers) from ``step`` (default: the latest).

        Verified and with fallback like :meth:`restore`.

        Raises:
          FileNotFoundError: no checkpoint in the directory.
          CheckpointError: no intact step.
        """
        def one(s):
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, agent_template)
            restored = self._manager.restore(
                s, args=ocp.args.Composite(agent=ocp.args.StandardRestore(abstract), counters=ocp.args.JsonRestore()))
            bad = _nonfinite_paths(restored.agent, "agent")
            if bad:
                raise ValueError(f"non-finite values in {', '.join(bad[:5])}")
            return restored.agent, dict(restored.counters)

        return self._restore_verified(step, one, "agent")

    def policy_spec(self, step: Optional[int] = None) -> Dict[str, Any]:
        """The policy spec stored with ``step`` (default: the newest intact step, verified and
        with fallback like :meth:`restore`; ``self.restored_step`` says which).

        Raises:
          FileNotFoundError: no checkpoint, or the step has no policy spec (written before
            checkpoints carried one).
          CheckpointError: no intact step.
        """
        def one(s):
            try:
                restored = self._manager.restore(s, args=ocp.args.Composite(policy_spec=ocp.args.JsonRestore()))
            except KeyError:
                raise _NoPolicySpec(f"checkpoint {s} in {self.directory} has no policy_spec (written before "
                                    "checkpoints described themselves); rebuild its config from the run folder") from None
            return dict(restored.policy_spec)

        return self._restore_verified(step, one, "policy spec")

    def _step_or_latest(self, step: Optional[int]) -> int:
        if step is None:
            step = self.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint found in {self.directory}")
        return int(step)

    def close(self) -> None:
        self._manager.close()


def make_policy_spec(config, observation_spec: Dict[str, tuple], action_dim: int) -> Dict[str, Any]:
    """What :func:`load_agent` needs to rebuild the agent: the resolved config (JSON), the
    observation spec ``{key: [shape list, dtype name]}`` and the action size ``A``."""
    import json

    return {
        "format": POLICY_SPEC_FORMAT,
        "config": json.loads(config.to_json_best_effort()),
        "observation_spec": {k: [list(shape), np.dtype(dtype).name] for k, (shape, dtype) in observation_spec.items()},
        "action_dim": int(action_dim),
    }


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the config held (configs hold no lists)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def load_agent(run_dir: str, step: Optional[int] = None):
    """Restores the agent of a run folder from its checkpoint alone (no env, no configs/ package).

    Args:
      run_dir: the run folder (``{run_dir}/checkpoints`` written by the learner).
      step: checkpoint step (default: the latest).
    Returns:
      ``(agent, info)``: the agent (``sample_actions`` / ``eval_actions`` on one observation
      dict -> ``(A,)`` float32 in [-1, 1]) and ``info`` with ``config`` (the resolved
      ``ml_collections.ConfigDict``), ``observation_spec`` (``{key: (shape, np.dtype)}``),
      ``action_dim`` and ``learner_step``.
    Raises:
      FileNotFoundError: no checkpoint, or one without a policy spec.
      ValueError: a policy spec of another format, or an unknown ``agent_name``.
    """
    import ml_collections

    from serl_ext.loop import common

    checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
    try:
        spec = checkpointer.policy_spec(step)
        step = checkpointer.restored_step  # the intact step the spec came from
        if spec.get("format") != POLICY_SPEC_FORMAT:
            raise ValueError(f"policy_spec format {spec.get('format')!r}, this code reads {POLICY_SPEC_FORMAT}")
        config = ml_collections.ConfigDict(_tuples(spec["config"]))
        observation_spec = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in spec["observation_spec"].items()}
        action_dim = int(spec["action_dim"])
        try:
            template = common.create_agent(config, observation_spec, action_dim)
        except KeyError as e:
            raise ValueError(str(e)) from None
        agent, counters = checkpointer.restore_agent(template, step)
    finally:
        checkpointer.close()
    return agent, {"config": config, "observation_spec": observation_spec, "action_dim": action_dim,
                   "learner_step": int(counters.get("learner_step", -1))}
