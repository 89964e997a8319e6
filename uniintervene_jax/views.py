"""What the recovery policy and the recovery memory see of an observation
(``config.uniintervene.recovery_inputs``), and the ``"random:N"`` target-encoder name.

* ``"observation"`` (default, state tasks): the observation itself; nothing here is used.
* ``"state+value_embedding"`` (image observations, ``hil_serl_cameras+uniintervene``): the
  *recovery view* of an observation ``o`` is one vector ``{"state": [o["state"], z(o, l)]}``,
  float32 ``(S + D,)``: the proprioceptive state (S = 4 on the camera preset, 0 without a
  ``"state"`` key) followed by the proxy value's latent ``z`` (D = ``value.latent_dim``, the
  memory's retrieval key, :meth:`uniintervene_jax.value.model.ProxyValue.encode`). The learner
  mines the memory and builds the recovery pairs on view episodes (:func:`view_episode`), so a
  memory item's ``goal_observations`` are the goal's view (no camera frames in the memory or on
  the wire) and its key embedding is the ``z`` part (:class:`ViewEmbedder`); the gate views the
  current observation with the pushed proxy value (``NetworkGateModels.chunk``). Both sides
  build the recovery policy on :func:`recovery_example`.

The view's ``z`` comes from the proxy value at the time it is computed (the learner's at a
refresh, the actor's pushed one at a decision); the memory's keys have the same lag
(``OnlineUniIntervene._rebuild`` embeds them at each refresh), so the recovery inputs drift no
more than the retrieval keys already do.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np

RECOVERY_INPUTS = ("observation", "state+value_embedding")


def uses_value_embedding(c: Any) -> bool:
    """Whether ``config.uniintervene`` (``c``) gives the recovery policy and the memory the
    recovery view (``recovery_inputs="state+value_embedding"``). Configs without the field:
    False."""
    return str(c.get("recovery_inputs", "observation") or "observation") == "state+value_embedding"


def parse_random_target(name: str) -> Optional[int]:
    """``"random"`` -> 0 (no pooling), ``"random:N"`` -> N (N >= 1: every uint8 camera frame
    average-pooled to N x N before the projection), anything else -> None."""
    name = str(name)
    if name == "random":
        return 0
    if name.startswith("random:"):
        tail = name[len("random:"):]
        if tail.isdigit() and int(tail) >= 1:
            return int(tail)
    return None


def _state_part(obs: Mapping[str, Any], batch: int) -> np.ndarray:
    if "state" not in obs:
        return np.zeros((batch, 0), np.float32)
    return np.asarray(obs["state"], np.float32).reshape(batch, -1)


def view_observations(obs: Mapping[str, Any], z: Any) -> Dict[str, np.ndarray]:
    """The recovery view of a batch: ``{"state": [flatten(obs["state"]), z]}`` float32
    ``(B, S + D)``.

    Args: obs: dict of ``(B, ...)`` arrays; z: float ``(B, D)`` proxy-value latents of ``obs``.
    Raises ValueError when ``z`` is not ``(B, D)``.
    """
    z = np.asarray(z, np.float32)
    if z.ndim != 2:
        raise ValueError(f"z must be (B, D), got {z.shape}")
    return {"state": np.concatenate([_state_part(obs, z.shape[0]), z], axis=1)}


def view_one(obs: Mapping[str, Any], z: Any) -> Dict[str, np.ndarray]:
    """:func:`view_observations` of one unbatched observation and its ``z`` ``(D,)``:
    ``{"state": (S + D,)}``."""
    batched = {k: np.asarray(v)[None] for k, v in obs.items()}
    return {"state": view_observations(batched, np.asarray(z, np.float32)[None])["state"][0]}


def recovery_example(example: Mapping[str, Any], latent_dim: int) -> Dict[str, np.ndarray]:
    """The recovery policy's example observation for the recovery view: ``{"state": zeros
    (S + latent_dim,)}`` float32, S = size of ``example["state"]`` (0 without one)."""
    s = int(np.asarray(example["state"]).size) if "state" in example else 0
    return {"state": np.zeros((s + int(latent_dim),), np.float32)}


def view_episode(episode: Mapping[str, Any], value: Any, instr: Any) -> Dict[str, Any]:
    """A shallow copy of ``episode`` whose ``observations`` are their recovery view: the
    proxy value ``value`` encodes the ``T+1`` observations once (``value.encode(obs, instr)``,
    float32 ``(T+1, D)``); actions, rewards, flags and metadata are shared, not copied."""
    obs = dict(episode["observations"])
    z = np.asarray(value.encode(obs, instr), np.float32)
    return dict(episode, observations=view_observations(obs, z))


def is_view(obs: Mapping[str, Any], view_dim: int) -> bool:
    """Whether the unbatched ``obs`` already is a recovery view of width ``view_dim``."""
    return set(obs) == {"state"} and np.shape(obs["state"]) == (int(view_dim),)


class ViewEmbedder:
    """The retrieval key of a recovery-view observation: its last ``dim`` entries (the proxy
    value's ``z``). ``encode(obs, instr_ids=None)`` takes ``{"state": (B, S + D)}`` (or
    ``(S + D,)``) and returns float32 ``(B, D)`` (or ``(D,)``); the instruction is already
    in ``z``. Stands in for the proxy value where the memory is mined and queried on views
    (``mine_online_memory``'s embed, ``recovery.dataset.retrieved_goals``)."""

    def __init__(self, dim: int):
        self.dim = int(dim)

    def encode(self, obs: Mapping[str, Any], instr_ids: Any = None) -> np.ndarray:
        return np.asarray(obs["state"], np.float32)[..., -self.dim:]

    def __call__(self, obs: Mapping[str, Any]) -> np.ndarray:
        return self.encode(obs)
