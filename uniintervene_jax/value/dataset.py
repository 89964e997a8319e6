"""Proxy-value training data: episodes flattened into transitions with their labels (rewards and
terminals of the value function, NTTG progress, Monte-Carlo returns, per-sample weights) and
batches with a fixed share of failures. Labels: :mod:`uniintervene_jax.labels`; the loss that
reads the batches: :func:`uniintervene_jax.value.losses.proxy_value_loss`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from uniintervene_jax.instructions import instruction_for, tokenize_instruction
from uniintervene_jax.labels import episode_success, monte_carlo_returns, nttg_progress

# Keys of a training batch (ValueDataset.batch / sample, ProxyValue.update).
BATCH_KEYS = ("observations", "next_observations", "instructions", "rewards", "dones", "progress",
              "mc_returns", "success", "weights")


@dataclasses.dataclass
class ValueDataset:
    """Transitions of many episodes, flattened for proxy-value training.

    Observations are stored once per frame: ``frames[key]`` ``(M, ...)`` with
    ``M = sum_i (T_i + 1)``; transition ``n`` uses ``frames[k][obs_index[n]]`` and
    ``frames[k][next_index[n]]`` (``next_index = obs_index + 1``). Per transition (N = sum T_i):
    ``instructions`` int32 ``(N, L)``, ``rewards``/``dones``/``progress``/``mc_returns``/
    ``weights`` float32 ``(N,)``, ``success`` bool ``(N,)``, ``episode`` and ``t`` int32 ``(N,)``.
    ``episode_successes`` bool ``(E,)``. Progress of transition ``t`` of a successful episode of
    T steps is ``t / (T - 1)`` (the observation that starts the last step is labelled 1; the
    final observation ``o_T`` is only a next observation).
    """

    frames: Dict[str, np.ndarray]
    obs_index: np.ndarray
    next_index: np.ndarray
    instructions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    progress: np.ndarray
    mc_returns: np.ndarray
    success: np.ndarray
    weights: np.ndarray
    episode: np.ndarray
    t: np.ndarray
    episode_successes: np.ndarray

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @classmethod
    def from_episodes(
        cls,
        episodes: Sequence[Mapping[str, Any]],
        task: Optional[str] = None,
        gamma: float = 0.99,
        failure_weight: float = 2.0,
        obs_keys: Optional[Sequence[str]] = None,
    ) -> "ValueDataset":
        """Flatten episodes (``serl_ext.data.episodes`` dicts).

        Args:
          episodes: non-empty sequence of episodes (T >= 1 each, same observation keys/shapes).
          task: task name for every episode's instruction; None = each ``metadata["task"]``.
          gamma: discount of the Monte-Carlo returns.
          failure_weight: loss weight of samples from failed episodes.
          obs_keys: observation keys to keep (None = all).

        Raises:
          ValueError: empty list, an episode with no steps, inconsistent observation
            keys/shapes, NaN/inf in float observations, no task known for an episode.
          ValueError: a task name with no words (from ``instruction_for``).
        """
        if isinstance(episodes, Mapping):
            raise TypeError("from_episodes takes a sequence of episodes, got a single episode dict")
        episodes = list(episodes)
        if not episodes:
            raise ValueError("from_episodes needs at least one episode")
        frames: Dict[str, List[np.ndarray]] = {}
        cols: Dict[str, List[np.ndarray]] = {k: [] for k in (
            "obs_index", "instructions", "rewards", "dones", "progress", "mc_returns", "success",
            "weights", "episode", "t")}
        ep_success = []
        offset = 0
        spec = None
        for i, ep in enumerate(episodes):
            if not isinstance(ep, Mapping) or "observations" not in ep or "actions" not in ep:
                raise ValueError(f"episode {i} is not an episode dict with observations and actions")
            T = int(np.shape(ep["actions"])[0]) if np.ndim(ep["actions"]) >= 1 else 0
            if T < 1:
                raise ValueError(f"episode {i} has no steps")
            obs = ep["observations"]
            keys = sorted(obs) if obs_keys is None else list(obs_keys)
            this_spec = []
            for k in keys:
                if k not in obs:
                    raise ValueError(f"episode {i} has no observation key {k!r}")
                arr = np.asarray(obs[k])
                if arr.shape[0] != T + 1:
                    raise ValueError(f"episode {i}: observations[{k!r}] has {arr.shape[0]} frames, expected T+1={T + 1}")
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    raise ValueError(f"episode {i}: observations[{k!r}] contains NaN or inf")
                this_spec.append((k, arr.shape[1:], arr.dtype.str))
                frames.setdefault(k, []).append(arr)
            if spec is None:
                spec = this_spec
            elif this_spec != spec:
                raise ValueError(f"episode {i}: observation keys/shapes/dtypes {this_spec} differ from episode 0 {spec}")
            name = task if task is not None else (ep.get("metadata") or {}).get("task")
            if name is None:
                raise ValueError(f"episode {i}: no task given and metadata has no 'task'")
            ids = tokenize_instruction(instruction_for(name))
            success = episode_success(ep)
            terminals = np.asarray(ep.get("terminals", np.zeros(T, bool)), bool)
            if terminals.shape != (T,):
                raise ValueError(f"episode {i}: terminals must have shape ({T},), got {terminals.shape}")
            rewards = np.zeros(T, np.float32)
            dones = np.zeros(T, np.float32)
            if success:
                rewards[-1], dones[-1] = 1.0, 1.0
            elif terminals[-1]:
                dones[-1] = 1.0
            cols["obs_index"].append(offset + np.arange(T))
            cols["instructions"].append(np.tile(ids[None], (T, 1)))
            cols["rewards"].append(rewards)
            cols["dones"].append(dones)
            cols["progress"].append(nttg_progress(T, success))
            cols["mc_returns"].append(monte_carlo_returns(rewards, dones > 0, gamma))
            cols["success"].append(np.full(T, success, bool))
            cols["weights"].append(np.full(T, 1.0 if success else float(failure_weight), np.float32))
            cols["episode"].append(np.full(T, i, np.int32))
            cols["t"].append(np.arange(T, dtype=np.int32))
            ep_success.append(success)
            offset += T + 1
        cat = {k: np.concatenate(v) for k, v in cols.items()}
        obs_index = cat.pop("obs_index").astype(np.int64)
        return cls(
            frames={k: np.concatenate(v) for k, v in frames.items()},
            obs_index=obs_index,
            next_index=obs_index + 1,
            episode_successes=np.asarray(ep_success, bool),
            **cat,
        )

    def batch(self, indices: Any) -> Dict[str, Any]:
        """Batch of the transitions ``indices`` (int ``(B,)``) with the keys of ``BATCH_KEYS``
        (``success`` as float32)."""
        idx = np.asarray(indices, np.int64)
        oi, ni = self.obs_index[idx], self.next_index[idx]
        return {
            "observations": {k: v[oi] for k, v in self.frames.items()},
            "next_observations": {k: v[ni] for k, v in self.frames.items()},
            "instructions": self.instructions[idx],
            "rewards": self.rewards[idx],
            "dones": self.dones[idx],
            "progress": self.progress[idx],
            "mc_returns": self.mc_returns[idx],
            "success": self.success[idx].astype(np.float32),
            "weights": self.weights[idx],
        }

    def sample(self, rng: np.random.Generator, batch_size: int, failure_fraction: float = 0.5) -> Dict[str, Any]:
        """Random batch (with replacement) holding ``round(failure_fraction * batch_size)``
        samples from failed episodes and the rest from successful ones.

        Fallback: when the dataset has only successful or only failed samples, the batch is
        drawn uniformly from all samples (so it is 0% or 100% failures).

        Raises ValueError for ``batch_size < 1`` or ``failure_fraction`` outside [0, 1].
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= float(failure_fraction) <= 1.0:
            raise ValueError(f"failure_fraction must be in [0, 1], got {failure_fraction}")
        fail = np.flatnonzero(~self.success)
        succ = np.flatnonzero(self.success)
        if len(fail) == 0 or len(succ) == 0:
            idx = rng.integers(0, len(self), size=int(batch_size))
        else:
            n_fail = int(round(float(failure_fraction) * int(batch_size)))
            idx = np.concatenate([
                fail[rng.integers(0, len(fail), size=n_fail)],
                succ[rng.integers(0, len(succ), size=int(batch_size) - n_fail)],
            ])
        return self.batch(idx)
