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
"""

import os
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

_ITEMS = ("agent", "buffers", "buffers_meta", "counters", "policy_spec")
POLICY_SPEC_FORMAT = 1


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
      max_to_keep: number of most recent checkpoints kept.
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

    def latest_step(self) -> Optional[int]:
        """The newest complete checkpoint step, or None."""
        return self._manager.latest_step()

    def save(self, step: int, agent: Any, buffers: Dict[str, Dict[str, Any]], counters: Dict[str, Any],
             policy_spec: Optional[Dict[str, Any]] = None) -> None:
        """Writes checkpoint ``step``.

        Args:
          agent: the agent pytree (flax struct with TrainStates).
          buffers: name -> ``ReplayBuffer.state_dict()``.
          counters: JSON-serialisable dict (learner step, env steps, versions ...).
          policy_spec: :func:`make_policy_spec` output, stored with the step (None: not stored,
            and :func:`load_agent` cannot use this step).
        """
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

    def restore(self, agent_template: Any, step: Optional[int] = None):
        """Restores ``(agent, buffers, counters)`` from ``step`` (default: the latest).

        Args:
          agent_template: a freshly created agent of the same config; gives structure/dtypes.
        Raises:
          FileNotFoundError: no checkpoint in the directory.
        """
        if step is None:
            step = self.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint found in {self.directory}")
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
        return restored.agent, buffers, dict(restored.counters)

    def restore_agent(self, agent_template: Any, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
        """Restores ``(agent, counters)`` only (no buffers) from ``step`` (default: the latest).

        Raises:
          FileNotFoundError: no checkpoint in the directory.
        """
        step = self._step_or_latest(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, agent_template)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(agent=ocp.args.StandardRestore(abstract), counters=ocp.args.JsonRestore()))
        return restored.agent, dict(restored.counters)

    def policy_spec(self, step: Optional[int] = None) -> Dict[str, Any]:
        """The policy spec stored with ``step`` (default: the latest).

        Raises:
          FileNotFoundError: no checkpoint, or the step has no policy spec (written before
            checkpoints carried one).
        """
        step = self._step_or_latest(step)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(policy_spec=ocp.args.JsonRestore()))
        except KeyError:
            raise FileNotFoundError(f"checkpoint {step} in {self.directory} has no policy_spec (written before "
                                    "checkpoints described themselves); rebuild its config from the run folder") from None
        return dict(restored.policy_spec)

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
