"""Import of HiL-SERL demo files (pickled lists of transition dicts) into episode files.

HiL-SERL's ``examples/record_demos.py`` writes ``pickle.dump(transitions, f)`` where each
transition is a dict ``observations`` (dict of arrays with a leading frame-stack axis of 1,
e.g. ``state`` (1, D) float, camera images (1, H, W, 3) uint8), ``actions`` (A,),
``next_observations``, ``rewards``, ``masks`` (1 - done), ``dones`` and ``infos``, with
optional ``grasp_penalty``. ``import_hil_serl_demos`` reads such a file, splits it into
episodes at ``dones`` and writes them in this project's episode format
(``serl_ext.data.episodes``), every step marked as a human (demo) step.

Security: a pickle can run code when it is loaded. The file is read with a restricted
unpickler that only rebuilds numpy arrays, numpy scalars and dtypes and plain Python
containers, and refuses anything else with ``pickle.UnpicklingError`` before it is called.
That narrows what a file can do but is not a security boundary: import only files you
recorded yourself, from your own disk. Never pass bytes that came over a network.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from serl_ext.data.replay_buffer import ACTION_SOURCE_HUMAN

#: (module, name) pairs the restricted unpickler may resolve: numpy's array/scalar/dtype
#: reconstruction (numpy 1 and 2 module paths) and an ordered dict.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"), ("collections", "OrderedDict"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a HiL-SERL demo file holds only numpy arrays "
            "and containers (see serl_ext.data.hil_serl_import)")


def load_transitions(path: str) -> List[Dict[str, Any]]:
    """The list of transition dicts in a HiL-SERL demo pickle, read with the restricted
    unpickler (module docstring).

    Raises:
      FileNotFoundError: no such file.
      pickle.UnpicklingError: the file references anything but numpy arrays and containers,
        or is not a pickle.
      ValueError: the content is not a non-empty list of dicts.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        transitions = _RestrictedUnpickler(io.BytesIO(data)).load()
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as error:
        if isinstance(error, pickle.UnpicklingError):
            raise
        raise pickle.UnpicklingError(f"{path} is not a readable pickle: {error}") from None
    if not isinstance(transitions, list) or not transitions or not all(
            isinstance(t, dict) for t in transitions):
        raise ValueError(f"{path} must hold a non-empty list of transition dicts")
    return transitions


def _obs(obs: Mapping[str, Any], keys: Optional[Mapping[str, str]], squeeze: bool, t: int,
         which: str) -> Dict[str, np.ndarray]:
    if not isinstance(obs, Mapping):
        raise ValueError(f"transition {t}: {which} must be a dict of arrays, got {type(obs).__name__}")
    out = {}
    for src, value in obs.items():
        if keys is not None and src not in keys:
            continue
        arr = np.asarray(value)
        if squeeze and arr.ndim >= 1 and arr.shape[0] == 1:
            arr = arr[0]  # HiL-SERL's frame-stack axis of 1
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        out[keys[src] if keys is not None else src] = arr
    if keys is not None and len(out) != len(keys):
        missing = sorted(set(keys) - set(obs))
        raise ValueError(f"transition {t}: {which} lacks keys {missing}")
    return out


def transitions_to_episodes(transitions: Sequence[Mapping[str, Any]], *,
                            obs_keys: Optional[Mapping[str, str]] = None,
                            squeeze_frame_stack: bool = True,
                            metadata: Optional[Mapping[str, Any]] = None) -> List[Dict[str, Any]]:
    """Splits HiL-SERL transitions into validated episodes (``dones`` ends an episode).

    Args:
      transitions: HiL-SERL transition dicts (module docstring).
      obs_keys: observation keys to keep, renamed: ``{"state": "state", "wrist_1":
        "pixels"}``; None keeps every key under its own name.
      squeeze_frame_stack: drop a leading axis of size 1 from each observation array.
      metadata: merged into every episode's metadata (plus ``episode_id``, ``source``).
    Returns:
      Episode dicts (``serl_ext.data.episodes`` format), all steps human: interventions
      True, action_source 2; ``grasp_penalty`` (float32 (T,)) kept when present.
    Raises:
      ValueError: a transition lacks a key, observations are not continuous within an
        episode, non-finite values, or the last transition does not end an episode.
    """
    from serl_ext.data.episodes import episode_from_transitions

    episodes, current = [], []
    for t, tr in enumerate(transitions):
        for key in ("observations", "actions", "next_observations", "rewards", "masks", "dones"):
            if key not in tr:
                raise ValueError(f"transition {t} lacks {key!r}")
        ours = {
            "observations": _obs(tr["observations"], obs_keys, squeeze_frame_stack, t,
                                 "observations"),
            "next_observations": _obs(tr["next_observations"], obs_keys, squeeze_frame_stack, t,
                                      "next_observations"),
            "actions": np.asarray(tr["actions"], np.float32).reshape(-1),
            "rewards": np.float32(tr["rewards"]),
            "masks": np.float32(tr["masks"]),
            "dones": bool(tr["dones"]),
            "interventions": True,
            "action_source": np.int8(ACTION_SOURCE_HUMAN),
        }
        if "grasp_penalty" in tr:
            ours["grasp_penalty"] = np.float32(tr["grasp_penalty"])
        current.append(ours)
        if ours["dones"]:
            meta = dict(metadata or {}, episode_id=len(episodes), source="hil_serl_demo")
            try:
                episodes.append(episode_from_transitions(current, meta))
            except ValueError as error:
                raise ValueError(f"episode {len(episodes)} (transitions up to {t}): {error}") from None
            current = []
    if current:
        raise ValueError(f"the last {len(current)} transitions do not end with done=True")
    return episodes


def import_hil_serl_demos(path: str, out_dir: str, **kwargs) -> List[str]:
    """Reads a HiL-SERL demo pickle and writes one episode file per episode into ``out_dir``
    (``episode_NNNNNN.npz``, numbered after the files already there). Keyword arguments go to
    ``transitions_to_episodes``. Returns the written paths. Raises as ``load_transitions`` and
    ``transitions_to_episodes``; nothing is written when either fails."""
    from serl_ext.data.episodes import list_episodes, save_episode

    episodes = transitions_to_episodes(load_transitions(path), **kwargs)
    os.makedirs(out_dir, exist_ok=True)
    start = len(list_episodes(out_dir))
    paths = []
    for i, episode in enumerate(episodes):
        target = os.path.join(out_dir, f"episode_{start + i:06d}.npz")
        save_episode(target, episode)
        paths.append(target)
    return paths
