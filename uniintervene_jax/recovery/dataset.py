"""Training data of the goal-conditioned recovery policy: pairs, batches, online pairs, retrieved goals.

Training pairs (DESIGN section 4 "Recovery policy"; guide "Step 6": behaviour cloning over
segments from intervention states to high-value goals). :func:`recovery_training_pairs` makes
``(o_t, g = o_{t+k}, a_{t..t+H-1})`` from two kinds of anchors ``t``:

* **intervention steps**: every step ``t`` with ``interventions[t]`` of any episode (successful
  or not): the human's recovery actions are exactly the behaviour to clone;
* **successful episodes**: every ``stride``-th step of an episode that succeeded.

For each anchor and each offset ``k`` in ``goal_offset`` (an int or a sequence of ints) the goal
index is ``g = min(t + k, T)`` and the pair is kept only if the goal's proxy value is higher:
``V[g] - V[t] > min_value_gain`` (default 0: strictly higher). The action chunk is
``a[t : t + H]``, padded by repeating the episode's last action when ``t + H > T``. An anchor that
is both an intervention step and in a successful episode is used once.

Online (:func:`online_recovery_pairs`): demos anchor every step, online episodes the operator's
steps (or every step of successful ones); :func:`retrieved_goals` replaces each hindsight goal by
the memory's goal the gate would retrieve; :func:`recovery_batch_indices` keeps a demo share.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import numpy as np

from uniintervene_jax.instructions import instruction_for, tokenize_instruction
from uniintervene_jax.labels import check_value_curve, episode_succeeded
from uniintervene_jax.memory.memory import RecoveryMemory

SOURCE_SUCCESS = 0
SOURCE_INTERVENTION = 1


def _instruction_ids(episode: Mapping[str, Any], index: int) -> np.ndarray:
    meta = episode.get("metadata") or {}
    if "instruction" in meta:
        return tokenize_instruction(str(meta["instruction"]))
    if "task" not in meta:
        raise ValueError(f"episode {index} has neither metadata['instruction'] nor metadata['task']")
    return tokenize_instruction(instruction_for(str(meta["task"])))


def recovery_training_pairs(
    episodes: Sequence[Mapping[str, Any]],
    value_curves: Sequence[Any],
    horizon: int = 8,
    goal_offset: Union[int, Sequence[int]] = 8,
    stride: int = 1,
    min_value_gain: float = 0.0,
    use_successes: bool = True,
    use_interventions: bool = True,
) -> Dict[str, Any]:
    """Builds recovery-policy training pairs (sampling rule in the module docstring).

    Args:
      episodes: episode dicts (``serl_ext.data.episodes`` format; ``metadata`` needs ``task`` or
        ``instruction``, success from :func:`~uniintervene_jax.memory.mining.episode_succeeded`).
      value_curves: proxy values float ``(T+1,)`` in [0, 1] per episode.
      horizon: chunk length H.
      goal_offset: k (int >= 1) or several.
      stride: anchor stride inside successful episodes.
      min_value_gain: required ``V[goal] - V[t]`` (strictly greater).
    Returns:
      dict with ``observations`` / ``goal_observations`` (dicts of ``(N, ...)``), ``instructions``
      int32 ``(N, 16)``, ``actions`` float32 ``(N, H, A)``, ``episode_index`` int32 ``(N,)``,
      ``t`` int32 ``(N,)``, ``goal_t`` int32 ``(N,)``, ``value_gain`` float32 ``(N,)``, ``source``
      int8 ``(N,)`` (0 successful-episode anchor, 1 intervention anchor). N may be 0 (arrays then
      empty with the right trailing shapes).
    Raises:
      ValueError: no episodes, mismatched lengths, bad offsets/horizon/stride, bad value curves.
    """
    if len(episodes) == 0:
        raise ValueError("no episodes given")
    if len(value_curves) != len(episodes):
        raise ValueError(f"{len(value_curves)} value curves for {len(episodes)} episodes")
    offsets = [goal_offset] if np.isscalar(goal_offset) else list(goal_offset)
    if not offsets or any(int(k) < 1 for k in offsets):
        raise ValueError(f"goal_offset must be >= 1 (int or ints), got {goal_offset!r}")
    if int(horizon) < 1 or int(stride) < 1:
        raise ValueError(f"horizon and stride must be >= 1, got {horizon}, {stride}")
    obs_keys = None
    rows: List[Tuple[int, int, int, float, int]] = []  # (episode, t, goal_t, gain, source)
    instr: Dict[int, np.ndarray] = {}
    action_dim = None
    for i, ep in enumerate(episodes):
        actions = np.asarray(ep["actions"])
        if actions.ndim != 2 or actions.shape[0] < 1:
            raise ValueError(f"episode {i}: actions must be (T, A) with T >= 1, got {actions.shape}")
        if action_dim is None:
            action_dim = actions.shape[1]
        elif actions.shape[1] != action_dim:
            raise ValueError(f"episode {i}: action dim {actions.shape[1]} != {action_dim}")
        keys = sorted(ep["observations"])
        if obs_keys is None:
            obs_keys = keys
        elif keys != obs_keys:
            raise ValueError(f"episode {i}: observation keys {keys} != {obs_keys}")
        T = actions.shape[0]
        v = check_value_curve(value_curves[i], length=T + 1, name=f"value_curves[{i}]")
        anchors: Dict[int, int] = {}
        if use_successes and episode_succeeded(ep):
            for t in range(0, T, int(stride)):
                anchors[t] = SOURCE_SUCCESS
        if use_interventions and "interventions" in ep:
            for t in np.flatnonzero(np.asarray(ep["interventions"], bool)):
                anchors[int(t)] = SOURCE_INTERVENTION
        for t in sorted(anchors):
            for k in offsets:
                g = min(t + int(k), T)
                gain = float(v[g] - v[t])
                if g > t and gain > min_value_gain:
                    rows.append((i, t, g, gain, anchors[t]))
        if anchors:
            instr[i] = _instruction_ids(ep, i)
    H = int(horizon)
    out_obs: Dict[str, List[np.ndarray]] = {k: [] for k in obs_keys}
    out_goal: Dict[str, List[np.ndarray]] = {k: [] for k in obs_keys}
    chunks, ids = [], []
    for i, t, g, _, _ in rows:
        ep = episodes[i]
        for k in obs_keys:
            out_obs[k].append(np.asarray(ep["observations"][k][t]))
            out_goal[k].append(np.asarray(ep["observations"][k][g]))
        a = np.asarray(ep["actions"], np.float32)
        idx = np.minimum(np.arange(t, t + H), a.shape[0] - 1)
        chunks.append(a[idx])
        ids.append(instr[i])

    def stack(lst, k):
        if lst:
            return np.stack(lst)
        ref = np.asarray(episodes[0]["observations"][k])
        return np.zeros((0,) + ref.shape[1:], ref.dtype)

    return {
        "observations": {k: stack(out_obs[k], k) for k in obs_keys},
        "goal_observations": {k: stack(out_goal[k], k) for k in obs_keys},
        "instructions": np.stack(ids).astype(np.int32) if ids else np.zeros((0, 16), np.int32),
        "actions": np.stack(chunks).astype(np.float32) if chunks else np.zeros((0, H, action_dim), np.float32),
        "episode_index": np.array([r[0] for r in rows], np.int32),
        "t": np.array([r[1] for r in rows], np.int32),
        "goal_t": np.array([r[2] for r in rows], np.int32),
        "value_gain": np.array([r[3] for r in rows], np.float32),
        "source": np.array([r[4] for r in rows], np.int8),
    }


def anchors_like_online(pairs: Mapping[str, Any], episodes: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The rows of :func:`recovery_training_pairs` output that the online trainer's default
    anchor rule keeps (``uniintervene.recovery_anchors="interventions"``,
    :func:`online_recovery_pairs`): every anchor of a demo (``metadata["source"] == "demo"``) and
    the operator's steps (``source`` 1) of the other episodes; an anchor that is one of the
    policy's own steps in a successful non-demo episode is dropped (offline those are the weak
    SFT policy's actions in episodes the operator rescued). Every per-row array is filtered;
    ``episode_index`` still indexes ``episodes``.

    Raises ValueError when ``episode_index`` points past ``episodes``.
    """
    n = len(pairs["actions"])
    idx = np.asarray(pairs["episode_index"], np.int64)
    if n and idx.max() >= len(episodes):
        raise ValueError(f"episode_index {int(idx.max())} out of range for {len(episodes)} episodes")
    is_demo = np.array([(e.get("metadata") or {}).get("source") == "demo" for e in episodes], bool)
    keep = (np.asarray(pairs["source"]) == SOURCE_INTERVENTION) | (is_demo[idx] if n else np.zeros(0, bool))

    def rows(x):
        if isinstance(x, Mapping):
            return {k: rows(v) for k, v in x.items()}
        return x[keep] if isinstance(x, np.ndarray) and x.shape[:1] == (n,) else x

    return {k: rows(v) for k, v in pairs.items()}


def take_pairs(pairs: Mapping[str, Any], idx: np.ndarray) -> Dict[str, Any]:
    """The training batch of rows ``idx`` (int ``(B,)``) of ``pairs``: ``observations``,
    ``goal_observations``, ``instructions``, ``actions`` (and ``target_tokens`` when present)."""
    out = {
        "observations": {k: v[idx] for k, v in pairs["observations"].items()},
        "goal_observations": {k: v[idx] for k, v in pairs["goal_observations"].items()},
        "instructions": pairs["instructions"][idx],
        "actions": pairs["actions"][idx],
    }
    if "target_tokens" in pairs:
        out["target_tokens"] = pairs["target_tokens"][idx]
    return out


def online_recovery_pairs(episodes: Sequence[Mapping[str, Any]], curves: Sequence[Any], c: Any) -> Optional[Dict[str, Any]]:
    """The online trainer's recovery pairs: every step of the demos (value gain > 0), and in
    online episodes the anchors of ``c.recovery_anchors`` (gain > ``c.recovery_min_gain``); goals
    ``c.goal_offset`` steps ahead, chunks of ``c.recovery.horizon``.

    Args:
      episodes: episode dicts; ``metadata["source"] == "demo"`` marks the demos.
      curves: one proxy-value curve float ``(T+1,)`` in [0, 1] per episode.
      c: ``config.uniintervene`` (reads ``recovery_anchors``, ``recovery_min_gain``,
        ``goal_offset``, ``recovery.horizon``).
    Returns:
      :func:`recovery_training_pairs` output over all episodes (``episode_index`` into
      ``episodes``) plus ``is_demo`` bool ``(N,)``, or None when no pair qualifies.
    Raises:
      ValueError: ``c.recovery_anchors`` not "interventions" or "all"; bad curves.
    """
    if c.recovery_anchors not in ("interventions", "all"):
        raise ValueError(f"uniintervene.recovery_anchors must be 'interventions' or 'all', got {c.recovery_anchors!r}")
    parts = []
    demo_idx = [i for i, e in enumerate(episodes) if e["metadata"].get("source") == "demo"]
    online_idx = [i for i, e in enumerate(episodes) if e["metadata"].get("source") != "demo"]
    for idx, successes, gain in ((demo_idx, True, 0.0),
                                 (online_idx, c.recovery_anchors == "all", float(c.recovery_min_gain))):
        if idx:
            part = recovery_training_pairs([episodes[i] for i in idx], [curves[i] for i in idx],
                                           horizon=int(c.recovery.horizon), goal_offset=int(c.goal_offset),
                                           use_successes=successes, use_interventions=True, min_value_gain=gain)
            # episode_index relative to `episodes` (the memory's episode ids), not to the subset
            part["episode_index"] = np.asarray(idx, np.int32)[part["episode_index"]]
            part["is_demo"] = np.full(len(part["actions"]), idx is demo_idx)
            parts.append(part)
    parts = [p for p in parts if len(p["actions"])]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def recovery_batch_indices(is_demo: np.ndarray, batch_size: int, demo_fraction: Optional[float],
                           rng: np.random.Generator) -> np.ndarray:
    """Row indices of one recovery-policy batch (with replacement).

    ``round(demo_fraction * batch_size)`` rows from the demo pairs (``is_demo``, bool ``(N,)``)
    and the rest from the others; when one side is empty the whole batch comes from the other.
    ``demo_fraction=None``: uniform over all N rows. Returns int64 ``(batch_size,)``.
    Raises ValueError for N = 0.
    """
    is_demo = np.asarray(is_demo, bool)
    n = len(is_demo)
    if n == 0:
        raise ValueError("no recovery pairs to sample from")
    if demo_fraction is None:
        return rng.integers(0, n, size=batch_size)
    demo, other = np.flatnonzero(is_demo), np.flatnonzero(~is_demo)
    n_demo = int(round(float(demo_fraction) * batch_size))
    if len(demo) == 0:
        n_demo = 0
    elif len(other) == 0:
        n_demo = batch_size
    return np.concatenate([rng.choice(demo, n_demo), rng.choice(other, batch_size - n_demo)]).astype(np.int64)


def retrieved_goals(pairs: Dict[str, Any], values: np.ndarray, value, instr: np.ndarray, task: str,
                    items) -> Tuple[Dict[str, Any], float]:
    """Replaces each pair's goal by the goal the gate would retrieve at its anchor.

    For anchor ``o_t`` (episode ``e``): the memory's top-5 cosine neighbours of the proxy-value
    embedding of ``o_t`` among items of other episodes than ``e``, first one whose goal value is
    above ``V(o_t)`` (:meth:`RecoveryMemory.retrieve_batch`, the rule the gate uses). Anchors
    without such an item keep their hindsight goal ``o_{t+k}``.

    Args:
      pairs: :func:`recovery_training_pairs` output with ``episode_index`` into the memory's
        episode ids.
      values: float ``(N,)`` proxy value ``V(o_t)`` of each anchor (from the value curves).
      value: the :class:`ProxyValue` whose encoder embedded the memory keys.
      instr: int32 ``(16,)`` instruction ids.
      task: the task name of the memory items.
      items: :class:`RecoveryItems` or None (then nothing changes).
    Returns:
      ``(pairs with new goal_observations, fraction of anchors that got a retrieved goal)``.
    Raises:
      ValueError: ``values`` not ``(N,)`` or not finite (:meth:`RecoveryMemory.retrieve_batch`).
    """
    if items is None or len(items) == 0:
        return pairs, 0.0
    memory = RecoveryMemory(items=items)
    obs = pairs["observations"]
    emb = np.asarray(value.encode(obs, instr), np.float32)
    found = memory.retrieve_batch(emb, task, np.asarray(values, np.float64), exclude_episodes=[int(i) for i in pairs["episode_index"]])
    goals = {k: np.array(v, copy=True) for k, v in pairs["goal_observations"].items()}
    hit = 0
    for row, item in enumerate(found):
        if item is None:
            continue
        hit += 1
        for k in goals:
            goals[k][row] = item.goal_observations[k]
    return dict(pairs, goal_observations=goals), hit / max(len(found), 1)


def current_observation_goals(pairs: Dict[str, Any]) -> Dict[str, Any]:
    """The w/o-memory-goal ablation's training goals: each pair's goal is its own anchor
    observation ``o_t`` (a copy), the input the gate gives the recovery policy at run time with
    ``use_memory_goal=False`` (``uniintervene_jax/gate.py``), so training and acting see the same
    non-memory goal input.

    Args: pairs: :func:`recovery_training_pairs` output (``observations`` dict of ``(N, ...)``).
    Returns: the pairs with ``goal_observations`` equal to ``observations``.
    """
    return dict(pairs, goal_observations={k: np.array(v, copy=True) for k, v in pairs["observations"].items()})
