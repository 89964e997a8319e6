"""Training data of the intervention model: per-step arrays of many episodes.

* :class:`InterventionDataset` -- per-step arrays (N, ...), natural-frequency batches over the
  decision rows (t >= K);
* :func:`build_dataset` -- assembles a dataset from episodes plus per-episode proxy values,
  stagnation labels and TVR targets (:func:`uniintervene_jax.labels.label_episodes`) and a
  frozen target encoder.

Value history convention: row t is ``[V_{t-K}, ..., V_{t-1}, V_t]`` (oldest first,
``K = config.history_len``), indices below 0 padded with ``V_0``
(:func:`uniintervene_jax.labels.value_history`); only rows ``t >= K`` (no padding,
:attr:`InterventionDataset.decision_mask`) are sampled for training and scored by the report,
since the gate makes no decision before K real steps. The K deltas ``dV`` are computed inside the
network (:class:`~uniintervene_jax.intervention.network.ValueHistoryEncoder`), so the dataset
stores only the ``(N, K+1)`` values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from uniintervene_jax.instructions import instruction_for, tokenize_instruction
from uniintervene_jax.labels import value_history


def check_finite(name: str, arr: np.ndarray) -> None:
    """Raises ValueError naming ``name`` when a float array holds NaN or inf."""
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")


@dataclasses.dataclass
class InterventionDataset:
    """Per-step training arrays, N samples (row i = step ``t[i]`` of episode ``episode_index[i]``).

    Fields: ``observations`` dict key -> (N, ...) (o_t); ``next_observations`` dict (N, ...)
    (o_{t+1}) or None; ``instr_ids`` int32 (N, L); ``actions`` float32 (N, A) (a_t, the
    executed action); ``values_now`` float32 (N,) proxy V_t; ``values_next`` (N,) V(t+1);
    ``value_history`` float32 (N, K+1) ``[V_{t-K}, ..., V_t]`` (module docstring);
    ``tvr`` (N,) TVR target; ``labels`` bool (N,) stagnation label;
    ``target_latents_next`` float32 (N, D) frozen-encoder latent of o_{t+1};
    ``episode_index`` int (N,); ``t`` int (N,); ``interventions`` bool (N,) (operator acted
    at t; zeros when unknown); ``episode_success`` bool (N,) or None (unknown).

    Raises ValueError on construction for N = 0, inconsistent lengths, NaN/inf.
    """

    observations: Dict[str, np.ndarray]
    instr_ids: np.ndarray
    actions: np.ndarray
    values_now: np.ndarray
    values_next: np.ndarray
    value_history: np.ndarray
    tvr: np.ndarray
    labels: np.ndarray
    target_latents_next: np.ndarray
    episode_index: np.ndarray
    t: np.ndarray
    next_observations: Optional[Dict[str, np.ndarray]] = None
    interventions: Optional[np.ndarray] = None
    episode_success: Optional[np.ndarray] = None

    def __post_init__(self):
        if not isinstance(self.observations, Mapping) or not self.observations:
            raise ValueError("observations must be a non-empty dict of (N, ...) arrays")
        self.observations = {k: np.asarray(v) for k, v in self.observations.items()}
        n = len(next(iter(self.observations.values())))
        if n == 0:
            raise ValueError("InterventionDataset is empty")
        self.instr_ids = np.asarray(self.instr_ids, np.int32)
        self.actions = np.asarray(self.actions, np.float32)
        self.value_history = np.asarray(self.value_history, np.float32)
        self.target_latents_next = np.asarray(self.target_latents_next, np.float32)
        for name in ("values_now", "values_next", "tvr"):
            setattr(self, name, np.asarray(getattr(self, name), np.float32))
        self.labels = np.asarray(self.labels).astype(bool)
        self.episode_index = np.asarray(self.episode_index, np.int64)
        self.t = np.asarray(self.t, np.int64)
        self.interventions = (np.zeros(n, bool) if self.interventions is None
                              else np.asarray(self.interventions).astype(bool))
        if self.episode_success is not None:
            self.episode_success = np.asarray(self.episode_success).astype(bool)
        for k, v in self.observations.items():
            if len(v) != n:
                raise ValueError(f"observations[{k!r}] has {len(v)} rows, expected {n}")
            check_finite(f"observations[{k!r}]", v)
        if self.next_observations is not None:
            self.next_observations = {k: np.asarray(v) for k, v in self.next_observations.items()}
            if set(self.next_observations) != set(self.observations):
                raise ValueError("next_observations must have the keys of observations")
            for k, v in self.next_observations.items():
                if v.shape != self.observations[k].shape:
                    raise ValueError(f"next_observations[{k!r}] shape {v.shape} != {self.observations[k].shape}")
        for name, ndim in (("instr_ids", 2), ("actions", 2), ("value_history", 2), ("target_latents_next", 2),
                           ("values_now", 1), ("values_next", 1), ("tvr", 1), ("labels", 1),
                           ("episode_index", 1), ("t", 1), ("interventions", 1), ("episode_success", 1)):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.ndim != ndim or len(arr) != n:
                raise ValueError(f"{name} must have {ndim} dims and {n} rows, got shape {arr.shape}")
            check_finite(name, arr)
        if self.value_history.shape[1] < 2:
            raise ValueError(f"value_history must be (N, K+1) with K >= 1, got {self.value_history.shape}")

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def history_len(self) -> int:
        """K (the value history holds K+1 values)."""
        return int(self.value_history.shape[1] - 1)

    @property
    def num_episodes(self) -> int:
        return int(len(np.unique(self.episode_index)))

    def subset(self, indices: Any) -> "InterventionDataset":
        """New dataset with rows ``indices`` (int array or bool mask). Raises ValueError if empty."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        if idx.size == 0:
            raise ValueError("subset is empty")
        kw = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                kw[f.name] = None
            elif isinstance(v, dict):
                kw[f.name] = {k: a[idx] for k, a in v.items()}
            else:
                kw[f.name] = v[idx]
        return InterventionDataset(**kw)

    def split_episodes(self, holdout_fraction: float = 0.2, seed: int = 0
                       ) -> Tuple["InterventionDataset", "InterventionDataset"]:
        """Splits by whole episodes: ``(train, held_out)``; at least one episode each.
        Raises ValueError with fewer than 2 episodes or a fraction outside (0, 1)."""
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        eps = np.unique(self.episode_index)
        if len(eps) < 2:
            raise ValueError("need at least 2 episodes to split")
        perm = np.random.default_rng(seed).permutation(eps)
        n_hold = min(max(1, int(round(holdout_fraction * len(eps)))), len(eps) - 1)
        held = np.isin(self.episode_index, perm[:n_hold])
        return self.subset(~held), self.subset(held)

    def batch(self, indices: Any) -> Dict[str, Any]:
        """Training batch dict for rows ``indices`` (keys of ``InterventionModel.update``)."""
        idx = np.asarray(indices)
        return {
            "observations": {k: v[idx] for k, v in self.observations.items()},
            "instr_ids": self.instr_ids[idx],
            "actions": self.actions[idx],
            "value_history": self.value_history[idx],
            "values_now": self.values_now[idx],
            "values_next": self.values_next[idx],
            "tvr": self.tvr[idx],
            "labels": self.labels[idx],
            "target_latents_next": self.target_latents_next[idx],
        }

    @property
    def decision_mask(self) -> np.ndarray:
        """bool ``(N,)``: rows ``t >= K`` (``K = history_len``), whose value history holds K real
        steps before ``V_t`` (no ``V_0`` padding). The gate decides only at such steps
        (:class:`uniintervene_jax.gate.UniInterveneGate`), so training batches, the held-out
        report and the threshold calibration use only these rows."""
        return self.t >= self.history_len

    def sample_indices(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """``batch_size`` row indices drawn uniformly with replacement from the decision rows
        (:attr:`decision_mask`; all rows when there is none): positives appear at their natural
        frequency, as in the official code (the focal alpha 0.75 is the only class weighting).
        Raises ValueError for ``batch_size < 1``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rows = np.flatnonzero(self.decision_mask)
        if rows.size == 0:
            return rng.integers(0, len(self), batch_size)
        return rows[rng.integers(0, rows.size, batch_size)]

    def sample(self, rng: np.random.Generator, batch_size: int) -> Dict[str, Any]:
        """A training batch (see :meth:`sample_indices`, :meth:`batch`)."""
        return self.batch(self.sample_indices(rng, batch_size))


def build_dataset(episodes: Sequence[Any], values_per_episode: Sequence[Any], labels_per_episode: Sequence[Any],
                  tvr_per_episode: Sequence[Any], target_encoder: Any, instr_ids: Any = None,
                  history_len: int = 8, keep_next_observations: bool = True) -> InterventionDataset:
    """Assembles an :class:`InterventionDataset` from episodes and per-episode curves.

    Args:
      episodes: episode dicts (``serl_ext.data.episodes`` layout) or paths to episode files.
      values_per_episode: ``values_per_episode[i]`` (T_i+1,) proxy value of o_0..o_{T_i}.
      labels_per_episode: (T_i,) bool stagnation labels (e.g. ``labels.label_episodes``).
      tvr_per_episode: (T_i,) TVR targets (e.g. ``labels.label_episodes``, same
        V_0-padding convention as :func:`~uniintervene_jax.labels.value_history`).
      target_encoder: a :class:`~.target_encoders.TargetEncoder`; encodes o_1..o_{T_i}.
      instr_ids: None (from each episode's ``metadata["task"]``), one (L,) array for all, or
        a sequence of (L,) arrays (one per episode).
      history_len: K (:func:`~uniintervene_jax.labels.value_history` over V_0..V_{T_i-1}).
      keep_next_observations: also store o_{t+1} (doubles observation memory).
    Per-episode success: ``metadata["success"]`` when present, else the ``success`` extra
    at the last step, else unknown (``episode_success`` None when unknown for any episode).
    Raises ValueError: empty input, mismatched lengths/shapes, NaN, latents of wrong shape;
      KeyError: no task in the metadata with ``instr_ids=None``.
    """
    from serl_ext.data.episodes import load_episode  # local: keeps import time low

    n_ep = len(episodes)
    if n_ep == 0:
        raise ValueError("build_dataset: no episodes")
    for name, seq in (("values_per_episode", values_per_episode), ("labels_per_episode", labels_per_episode),
                      ("tvr_per_episode", tvr_per_episode)):
        if len(seq) != n_ep:
            raise ValueError(f"{name} has {len(seq)} entries for {n_ep} episodes")
    shared_ids = None
    if instr_ids is not None and np.ndim(instr_ids) == 1:
        shared_ids = np.asarray(instr_ids, np.int32)
    elif instr_ids is not None and len(instr_ids) != n_ep:
        raise ValueError(f"instr_ids has {len(instr_ids)} entries for {n_ep} episodes")

    cols: Dict[str, List[Any]] = {k: [] for k in ("instr_ids", "actions", "values_now", "values_next",
                                                  "value_history", "tvr", "labels", "target", "episode_index",
                                                  "t", "interventions", "success")}
    obs_cols: Dict[str, List[np.ndarray]] = {}
    next_cols: Dict[str, List[np.ndarray]] = {}
    success_known = True
    for i, ep in enumerate(episodes):
        if not isinstance(ep, Mapping):
            ep = load_episode(ep)
        actions = np.asarray(ep["actions"], np.float32)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"episode {i}: actions must be (T>=1, A), got {actions.shape}")
        T = len(actions)
        values = np.asarray(values_per_episode[i], np.float32)
        if values.shape != (T + 1,):
            raise ValueError(f"episode {i}: values must be (T+1={T + 1},), got {values.shape}")
        check_finite(f"episode {i} values", values)
        labels = np.asarray(labels_per_episode[i])
        tvr = np.asarray(tvr_per_episode[i], np.float32)
        if labels.shape != (T,) or tvr.shape != (T,):
            raise ValueError(f"episode {i}: labels and tvr must be (T={T},), got {labels.shape}, {tvr.shape}")
        check_finite(f"episode {i} tvr", tvr)
        obs = {k: np.asarray(v) for k, v in ep["observations"].items()}
        for k, v in obs.items():
            if len(v) != T + 1:
                raise ValueError(f"episode {i}: observations[{k!r}] has {len(v)} rows, expected T+1={T + 1}")
        if obs_cols and set(obs) != set(obs_cols):
            raise ValueError(f"episode {i}: observation keys {sorted(obs)} differ from {sorted(obs_cols)}")
        if shared_ids is not None:
            ids = shared_ids
        elif instr_ids is not None:
            ids = np.asarray(instr_ids[i], np.int32)
        else:
            task = (ep.get("metadata") or {}).get("task")
            if task is None:
                raise KeyError(f"episode {i}: metadata has no 'task'; pass instr_ids")
            ids = tokenize_instruction(instruction_for(task))
        ids_b = np.broadcast_to(ids, (T, ids.shape[-1]))
        nxt = {k: v[1:] for k, v in obs.items()}
        z = np.asarray(target_encoder.encode(nxt, ids_b), np.float32)
        if z.ndim != 2 or z.shape[0] != T:
            raise ValueError(f"episode {i}: target encoder returned shape {z.shape}, expected (T={T}, D)")
        for k, v in obs.items():
            obs_cols.setdefault(k, []).append(v[:-1])
            if keep_next_observations:
                next_cols.setdefault(k, []).append(v[1:])
        cols["instr_ids"].append(np.array(ids_b))
        cols["actions"].append(actions)
        cols["values_now"].append(values[:-1])
        cols["values_next"].append(values[1:])
        cols["value_history"].append(value_history(values[:-1], int(history_len)))
        cols["tvr"].append(tvr)
        cols["labels"].append(labels.astype(bool))
        cols["target"].append(z)
        cols["episode_index"].append(np.full(T, i, np.int64))
        cols["t"].append(np.arange(T, dtype=np.int64))
        cols["interventions"].append(np.asarray(ep.get("interventions", np.zeros(T, bool))).astype(bool))
        meta = ep.get("metadata") or {}
        if "success" in meta:
            succ = bool(meta["success"])
        elif "success" in ep:
            succ = bool(np.asarray(ep["success"])[-1])
        else:
            succ, success_known = False, False
        cols["success"].append(np.full(T, succ))
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return InterventionDataset(
        observations={k: np.concatenate(v) for k, v in obs_cols.items()},
        next_observations={k: np.concatenate(v) for k, v in next_cols.items()} if keep_next_observations else None,
        instr_ids=cat["instr_ids"], actions=cat["actions"], values_now=cat["values_now"],
        values_next=cat["values_next"], value_history=cat["value_history"], tvr=cat["tvr"],
        labels=cat["labels"], target_latents_next=cat["target"], episode_index=cat["episode_index"],
        t=cat["t"], interventions=cat["interventions"],
        episode_success=cat["success"] if success_known else None)
