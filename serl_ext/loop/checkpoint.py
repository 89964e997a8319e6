"""Orbax checkpoints of the learner: agent (all TrainStates incl. optimizer states), replay
buffers and counters, so a run resumes exactly where it stopped.

Layout: ``{run_dir}/checkpoints/{step}/{agent,buffers,buffers_meta,counters}`` managed by
``orbax.checkpoint.CheckpointManager`` (atomic: a step folder appears only when complete; the
latest step comes from orbax's own bookkeeping, never from slicing file names).
"""

import os
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

_ITEMS = ("agent", "buffers", "buffers_meta", "counters")


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

    def save(self, step: int, agent: Any, buffers: Dict[str, Dict[str, Any]], counters: Dict[str, Any]) -> None:
        """Writes checkpoint ``step``.

        Args:
          agent: the agent pytree (flax struct with TrainStates).
          buffers: name -> ``ReplayBuffer.state_dict()``.
          counters: JSON-serialisable dict (learner step, env steps, versions ...).
        """
        arrays, rest = _split_arrays(buffers)
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                agent=ocp.args.StandardSave(agent),
                buffers=ocp.args.StandardSave(arrays),
                buffers_meta=ocp.args.JsonSave(rest),
                counters=ocp.args.JsonSave(counters),
            ),
        )
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

    def close(self) -> None:
        self._manager.close()
