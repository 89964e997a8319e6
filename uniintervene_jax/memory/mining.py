"""Mining recovery-memory items from successful episodes and their proxy-value curves.

DESIGN section 4 "Recovery memory" (the guide's "Step 5: Build the Recovery Memory"): a memory
item is a fixed-span window ``[s, s + span]`` of a successful episode whose proxy value rises by at
least ``delta`` (``V[s + span] - V[s] >= delta``) and ends high (``V[s + span] >= goal_min_value``,
0.75). The start ``s`` is the key (a state from which the episode recovered), the end ``s + span``
is the goal. ``V`` is the raw proxy value (no per-episode normalisation), the scale of the stored
``start_value`` / ``goal_value`` and of the gate's retrieval filter "goal value above V(o_t)", as
in the official code (``scripts/build_vf_delta_bank_fast.py``, ``memory/``).

Selection (deterministic, documented here because the paper only names its ingredients):

* Every candidate gets its start progress ``p = s / T`` (T = number of steps of its episode) and
  the bin ``min(floor(p * num_bins), num_bins - 1)``.
* Inside a bin, candidates are ranked by largest rise first, ties broken by episode order (the
  order of the input list), then by earlier start.
* Pass 1: every bin takes up to ``quota = max_items // num_bins`` candidates in rank order,
  skipping a candidate whose episode already has ``per_episode_cap`` items (bins visited in order
  0, 1, ...).
* Pass 2 (leftover quota): the slots left over (``max_items`` minus the items taken, e.g. from
  bins with fewer candidates than their quota, plus ``max_items % num_bins``) are handed out
  round-robin, one item per bin per round in bin order, to bins that still have eligible
  candidates, until ``max_items`` items are taken or no candidate is eligible.

The result therefore never exceeds ``max_items`` or the per-episode cap, and fills each bin up to
its quota before any bin gets more.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from uniintervene_jax.labels import check_value_curve, episode_succeeded

EmbedFn = Callable[[Dict[str, np.ndarray]], Any]


@dataclasses.dataclass(frozen=True)
class MiningConfig:
    """Recovery-memory mining parameters (DESIGN section 4).

    Attributes:
      max_items: total number of items kept (paper: ~120; Fold Towel 240).
      num_bins: number of start-progress bins (10; Fold Towel 20).
      span: window length in steps, goal = start + span (8; Fold Towel 32).
      delta: minimum value rise ``V[end] - V[start]`` (0.5; Fold Towel 0.40).
      goal_min_value: minimum goal value ``V[end]`` (0.75).
      per_episode_cap: maximum number of items taken from one episode (2).
      horizon: number of segment actions stored per item (H = 8).
    """

    max_items: int = 120
    num_bins: int = 10
    span: int = 8
    delta: float = 0.5
    goal_min_value: float = 0.75
    per_episode_cap: int = 2
    horizon: int = 8

    def __post_init__(self):
        for name in ("max_items", "num_bins", "span", "per_episode_cap", "horizon"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"MiningConfig.{name} must be a positive int, got {v!r}")
        for name in ("delta", "goal_min_value"):
            v = float(getattr(self, name))
            if not np.isfinite(v):
                raise ValueError(f"MiningConfig.{name} must be finite, got {v}")

    @property
    def quota(self) -> int:
        """Items per bin in pass 1: ``max_items // num_bins``."""
        return self.max_items // self.num_bins


DEFAULT_MINING = MiningConfig()
FOLD_TOWEL_MINING = MiningConfig(max_items=240, num_bins=20, span=32, delta=0.40)
MINING_PRESETS: Dict[str, MiningConfig] = {"default": DEFAULT_MINING, "fold_towel": FOLD_TOWEL_MINING}


def mining_preset(name: str) -> MiningConfig:
    """``"default"`` or ``"fold_towel"`` (240 items, 20 bins, span 32, delta 0.40).

    Raises KeyError for an unknown name.
    """
    if name not in MINING_PRESETS:
        raise KeyError(f"unknown mining preset {name!r}; known: {sorted(MINING_PRESETS)}")
    return MINING_PRESETS[name]


def normalize_task(task: str) -> str:
    """Task name without a trailing ``-v3`` (so ``pick-place-v3`` and ``pick-place`` match)."""
    task = str(task)
    return task[:-3] if task.endswith("-v3") else task


def candidate_windows(values: Any, span: int, delta: float, goal_min_value: float = 0.75) -> List[Tuple[int, float]]:
    """All windows ``[s, s + span]`` (``0 <= s``, ``s + span <= T``) of one curve with
    ``V[s+span] - V[s] >= delta`` and ``V[s+span] >= goal_min_value``.

    Args:
      values: proxy values float ``(T+1,)`` in [0, 1] (see :func:`check_value_curve`).
    Returns:
      list of ``(start, rise)`` in increasing ``start``.
    """
    v = check_value_curve(values)
    T = v.shape[0] - 1
    out = []
    for s in range(0, T - int(span) + 1):
        rise = v[s + span] - v[s]
        # Small epsilon so that a rise of exactly delta counts despite float rounding.
        if rise >= delta - 1e-9 and v[s + span] >= goal_min_value - 1e-9:
            out.append((s, float(rise)))
    return out


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One mined window. ``episode`` is the index in the input list."""

    episode: int
    start: int
    rise: float
    progress: float
    bin: int


def select_windows(candidates: Sequence[Candidate], config: MiningConfig) -> List[Candidate]:
    """Binned, capped, deterministic selection (algorithm in the module docstring).

    Returns the selected candidates sorted by (bin, rank within bin).
    """
    bins: List[List[Candidate]] = [[] for _ in range(config.num_bins)]
    for c in candidates:
        bins[c.bin].append(c)
    for b in bins:
        b.sort(key=lambda c: (-c.rise, c.episode, c.start))
    per_episode: Dict[int, int] = {}
    pointer = [0] * config.num_bins  # next unexamined candidate per bin
    taken: List[List[Candidate]] = [[] for _ in range(config.num_bins)]

    def take_next(b: int) -> bool:
        """Take the next eligible candidate of bin b; False when the bin is exhausted."""
        while pointer[b] < len(bins[b]):
            c = bins[b][pointer[b]]
            pointer[b] += 1
            if per_episode.get(c.episode, 0) < config.per_episode_cap:
                per_episode[c.episode] = per_episode.get(c.episode, 0) + 1
                taken[b].append(c)
                return True
        return False

    total = 0
    for b in range(config.num_bins):  # pass 1: quota per bin
        while len(taken[b]) < config.quota and total < config.max_items and take_next(b):
            total += 1
    open_bins = list(range(config.num_bins))
    while total < config.max_items and open_bins:  # pass 2: leftover, round-robin
        still_open = []
        for b in open_bins:
            if total >= config.max_items:
                still_open.append(b)
                continue
            if take_next(b):
                total += 1
                still_open.append(b)
        open_bins = still_open
    return [c for b in taken for c in b]


@dataclasses.dataclass
class RecoveryItems:
    """A batch of N recovery-memory items, stored as arrays.

    Attributes:
      tasks: list of N task names (normalised, no ``-v3``).
      episode_id: int64 ``(N,)`` source episode id (``metadata["episode_id"]`` or list index).
      start, end: int64 ``(N,)`` key and goal step (``end = start + span``).
      start_progress: float32 ``(N,)`` ``start / T``; bin: int32 ``(N,)`` its bin.
      key_observations / goal_observations: dict key -> ``(N, ...)`` observation at start / end.
      key_embedding / goal_embedding: float32 ``(N, D)`` ``embed_fn`` of the start / end obs.
      goal_state: float32 ``(N, S)`` ``observations["state"][end]`` (``S = 0`` without a state key).
      start_value / goal_value: float32 ``(N,)`` proxy value at start / end.
      actions: float32 ``(N, H, A)`` the first H actions of the segment ``a[start:end]``; when the
        segment has fewer than H actions (``span < H``) the last one is repeated.
    """

    tasks: List[str]
    episode_id: np.ndarray
    start: np.ndarray
    end: np.ndarray
    start_progress: np.ndarray
    bin: np.ndarray
    key_observations: Dict[str, np.ndarray]
    goal_observations: Dict[str, np.ndarray]
    key_embedding: np.ndarray
    goal_embedding: np.ndarray
    goal_state: np.ndarray
    start_value: np.ndarray
    goal_value: np.ndarray
    actions: np.ndarray

    ARRAY_FIELDS = ("episode_id", "start", "end", "start_progress", "bin", "key_embedding",
                    "goal_embedding", "goal_state", "start_value", "goal_value", "actions")

    def __post_init__(self):
        n = len(self.tasks)
        for name in self.ARRAY_FIELDS:
            arr = np.asarray(getattr(self, name))
            if arr.ndim < 1 or arr.shape[0] != n:
                raise ValueError(f"RecoveryItems.{name} must have leading dim N={n}, got shape {arr.shape}")
        for name in ("key_observations", "goal_observations"):
            for k, arr in getattr(self, name).items():
                if np.shape(arr)[0] != n:
                    raise ValueError(f"RecoveryItems.{name}[{k!r}] must have leading dim N={n}")
        if set(self.key_observations) != set(self.goal_observations):
            raise ValueError("key_observations and goal_observations must have the same keys")
        for name in ("key_embedding", "goal_embedding"):
            arr = np.asarray(getattr(self, name))
            if arr.ndim != 2:
                raise ValueError(f"RecoveryItems.{name} must be (N, D), got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"RecoveryItems.{name} contains NaN or inf")
        if np.asarray(self.key_embedding).shape != np.asarray(self.goal_embedding).shape:
            raise ValueError("key_embedding and goal_embedding must have the same shape")
        if np.asarray(self.actions).ndim != 3:
            raise ValueError(f"RecoveryItems.actions must be (N, H, A), got {np.shape(self.actions)}")

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def embedding_dim(self) -> int:
        return int(np.asarray(self.key_embedding).shape[1])

    def select(self, index: Any) -> "RecoveryItems":
        """Subset by an index array / slice (fancy indexing on every array)."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return RecoveryItems(
            tasks=[self.tasks[i] for i in idx],
            key_observations={k: np.asarray(v)[idx] for k, v in self.key_observations.items()},
            goal_observations={k: np.asarray(v)[idx] for k, v in self.goal_observations.items()},
            **{f: np.asarray(getattr(self, f))[idx] for f in self.ARRAY_FIELDS},
        )

    @staticmethod
    def concatenate(parts: Sequence["RecoveryItems"]) -> "RecoveryItems":
        """Concatenate item batches (same observation keys and shapes). Raises ValueError if empty."""
        parts = [p for p in parts if p is not None]
        if not parts:
            raise ValueError("nothing to concatenate")
        keys = set(parts[0].key_observations)
        for p in parts[1:]:
            if set(p.key_observations) != keys:
                raise ValueError("RecoveryItems with different observation keys cannot be concatenated")
        return RecoveryItems(
            tasks=[t for p in parts for t in p.tasks],
            key_observations={k: np.concatenate([np.asarray(p.key_observations[k]) for p in parts]) for k in keys},
            goal_observations={k: np.concatenate([np.asarray(p.goal_observations[k]) for p in parts]) for k in keys},
            **{f: np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in RecoveryItems.ARRAY_FIELDS},
        )


def _embed(embed_fn: EmbedFn, obs: Dict[str, np.ndarray], n: int) -> np.ndarray:
    emb = np.asarray(embed_fn(obs), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embed_fn must return float (B, D) with B={n}, got shape {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise ValueError("embed_fn returned NaN or inf")
    return emb


def _segment_actions(actions: np.ndarray, start: int, end: int, horizon: int) -> np.ndarray:
    seg = actions[start:min(end, start + horizon)]
    if seg.shape[0] < horizon:
        seg = np.concatenate([seg, np.repeat(seg[-1:], horizon - seg.shape[0], axis=0)])
    return seg


def mine_recovery_items(
    episodes: Sequence[Mapping[str, Any]],
    value_curves: Sequence[Any],
    embed_fn: EmbedFn,
    config: MiningConfig = DEFAULT_MINING,
    episode_ids: Optional[Sequence[int]] = None,
    tasks: Optional[Sequence[str]] = None,
) -> Optional[RecoveryItems]:
    """Mine recovery-memory items (module docstring for the selection rule).

    Args:
      episodes: episode dicts (``serl_ext.data.episodes`` format). Only successful ones
        (:func:`episode_succeeded`) are mined; the others are skipped.
      value_curves: one proxy-value curve float ``(T+1,)`` in [0, 1] per episode (same order).
      embed_fn: ``observations dict of (B, ...) arrays -> float32 (B, D)``; called once per episode
        with the selected key observations and once with the goal observations.
      config: :class:`MiningConfig` (or a preset from :func:`mining_preset`).
      episode_ids: ids stored with the items (default ``metadata["episode_id"]``, else the index).
      tasks: task names (default ``metadata["task"]``).
    Returns:
      :class:`RecoveryItems`, or None when no window qualifies.
    Raises:
      ValueError: lengths differ, an empty episode list, a curve of the wrong length / not in
        [0, 1] / with NaN, a missing task, an embedding of the wrong shape.
    """
    if len(episodes) == 0:
        raise ValueError("no episodes given")
    if len(value_curves) != len(episodes):
        raise ValueError(f"{len(value_curves)} value curves for {len(episodes)} episodes")
    if episode_ids is not None and len(episode_ids) != len(episodes):
        raise ValueError(f"{len(episode_ids)} episode ids for {len(episodes)} episodes")
    if tasks is not None and len(tasks) != len(episodes):
        raise ValueError(f"{len(tasks)} tasks for {len(episodes)} episodes")
    candidates: List[Candidate] = []
    curves: Dict[int, np.ndarray] = {}
    for i, ep in enumerate(episodes):
        actions = np.asarray(ep["actions"])
        if actions.ndim != 2 or actions.shape[0] < 1:
            raise ValueError(f"episode {i}: actions must be (T, A) with T >= 1, got {actions.shape}")
        T = actions.shape[0]
        v = check_value_curve(value_curves[i], length=T + 1, name=f"value_curves[{i}]")
        if not episode_succeeded(ep):
            continue
        curves[i] = v
        for s, rise in candidate_windows(v, config.span, config.delta, config.goal_min_value):
            p = s / T
            candidates.append(Candidate(i, s, rise, p, min(int(p * config.num_bins), config.num_bins - 1)))
    chosen = select_windows(candidates, config)
    if not chosen:
        return None
    by_episode: Dict[int, List[Candidate]] = {}
    for c in chosen:
        by_episode.setdefault(c.episode, []).append(c)
    parts = []
    for i in sorted(by_episode):
        ep, cs = episodes[i], by_episode[i]
        meta = ep.get("metadata") or {}
        if tasks is not None:
            task = tasks[i]
        elif "task" in meta:
            task = meta["task"]
        else:
            raise ValueError(f"episode {i} has no metadata['task'] and no tasks were given")
        eid = episode_ids[i] if episode_ids is not None else meta.get("episode_id", i)
        starts = np.array([c.start for c in cs], np.int64)
        ends = starts + config.span
        obs = ep["observations"]
        key_obs = {k: np.asarray(o)[starts] for k, o in obs.items()}
        goal_obs = {k: np.asarray(o)[ends] for k, o in obs.items()}
        n = len(cs)
        goal_state = (np.asarray(obs["state"], np.float32)[ends].reshape(n, -1) if "state" in obs
                      else np.zeros((n, 0), np.float32))
        actions = np.asarray(ep["actions"], np.float32)
        parts.append(RecoveryItems(
            tasks=[normalize_task(task)] * n,
            episode_id=np.full((n,), int(eid), np.int64),
            start=starts,
            end=ends.astype(np.int64),
            start_progress=np.array([c.progress for c in cs], np.float32),
            bin=np.array([c.bin for c in cs], np.int32),
            key_observations=key_obs,
            goal_observations=goal_obs,
            key_embedding=_embed(embed_fn, key_obs, n),
            goal_embedding=_embed(embed_fn, goal_obs, n),
            goal_state=goal_state,
            start_value=curves[i][starts].astype(np.float32),
            goal_value=curves[i][ends].astype(np.float32),
            actions=np.stack([_segment_actions(actions, int(s), int(e), config.horizon) for s, e in zip(starts, ends)]),
        ))
    return RecoveryItems.concatenate(parts)


def mine_online_memory(episodes: Sequence[Mapping[str, Any]], curves: Sequence[Any], embed: EmbedFn, c: Any,
                       task: str) -> Tuple[Optional[RecoveryItems], bool]:
    """The online recovery memory: items mined (``c.memory_preset``) from the demos and the
    successful online episodes that contain a recovery (human or autonomous).

    Demos progress steadily, so on slower tasks no window of a demo rises by the preset's delta
    (assembly and box-close demos climb 0.2-0.4 in 8 steps against delta 0.5) and the memory
    would stay empty, and the gate not ready, until operator recoveries have been mined (about
    20 episodes into a run). While the preset finds no item at all, the demos are mined again
    with the smaller rise ``c.memory_demo_delta`` (0: no fallback); the first mined online
    recovery replaces these items at the next rebuild.

    Args:
      episodes: episode dicts (demos first or not; ``metadata["source"]`` says which).
      curves: one raw proxy-value curve float ``(T+1,)`` in [0, 1] per episode. Mining, the
        stored goal values and the gate's retrieval filter all use this one scale, as the
        official code does (no per-episode normalisation).
      embed: ``observations -> float32 (B, D)`` key/goal embedding.
      c: ``config.uniintervene`` (reads ``memory_preset`` and ``memory_demo_delta``).
      task: task name stored with the items.
    Returns:
      ``(RecoveryItems or None, whether the demo fallback produced them)``.
    Raises:
      KeyError: unknown ``c.memory_preset``; ValueError: bad curves (:func:`mine_recovery_items`).
    """
    preset = mining_preset(c.memory_preset)

    def mine(idx, config):
        if not idx:
            return None
        return mine_recovery_items([episodes[i] for i in idx], [curves[i] for i in idx],
                                   embed, config, episode_ids=idx, tasks=[task] * len(idx))

    demo_idx = [i for i, e in enumerate(episodes) if e["metadata"].get("source") == "demo"]
    chosen = [i for i, e in enumerate(episodes)
              if e["metadata"].get("source") == "demo" or (e["metadata"].get("success") and e["metadata"].get("recovered"))]
    items = mine(chosen, preset)
    if items is not None and len(items):
        return items, False
    fallback = float(c.memory_demo_delta)
    if fallback <= 0.0 or fallback >= preset.delta or not demo_idx:
        return items, False
    items = mine(demo_idx, dataclasses.replace(preset, delta=fallback))
    return items, items is not None and len(items) > 0
