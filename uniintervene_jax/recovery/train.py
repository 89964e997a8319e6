"""Training data and training loop of the goal-conditioned recovery policy.

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
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import numpy as np

from uniintervene_jax.instructions import instruction_for, tokenize_instruction
from uniintervene_jax.memory.mining import check_value_curve, episode_succeeded
from uniintervene_jax.recovery.fast import FASTTokenizer
from uniintervene_jax.recovery.model import RecoveryPolicy, _merge

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


def _take(pairs: Mapping[str, Any], idx: np.ndarray) -> Dict[str, Any]:
    out = {
        "observations": {k: v[idx] for k, v in pairs["observations"].items()},
        "goal_observations": {k: v[idx] for k, v in pairs["goal_observations"].items()},
        "instructions": pairs["instructions"][idx],
        "actions": pairs["actions"][idx],
    }
    if "target_tokens" in pairs:
        out["target_tokens"] = pairs["target_tokens"][idx]
    return out


def train_recovery_policy(
    pairs: Mapping[str, Any],
    config: Any = None,
    num_steps: int = 1000,
    batch_size: int = 64,
    seed: int = 0,
    log_every: int = 100,
    fast_tokenizer: Optional[FASTTokenizer] = None,
) -> Tuple[RecoveryPolicy, List[Dict[str, float]]]:
    """Fits the FAST tokenizer (token head, unless given) on ``pairs["actions"]`` and trains a new
    :class:`RecoveryPolicy` for ``num_steps`` steps on uniformly sampled minibatches.

    Args:
      pairs: output of :func:`recovery_training_pairs` (or any dict with the same four keys).
      config: recovery-policy config overrides (:func:`~uniintervene_jax.recovery.model.get_default_config`).
      batch_size: minibatch size (sampled with replacement from a ``numpy`` generator seeded by ``seed``).
      log_every: history interval in steps (the last step is always logged).
    Returns:
      ``(policy, history)``: history is a list of ``{"step", "train/loss", ...}`` dicts.
    Raises:
      ValueError: empty pairs, bad num_steps/batch_size.
    """
    n = int(np.shape(pairs["actions"])[0])
    if n == 0:
        raise ValueError("no training pairs")
    if int(num_steps) < 1 or int(batch_size) < 1:
        raise ValueError(f"num_steps and batch_size must be >= 1, got {num_steps}, {batch_size}")
    c = _merge(config)
    actions = np.asarray(pairs["actions"], np.float32)
    if c.head == "token" and fast_tokenizer is None:
        fast_tokenizer = FASTTokenizer(c.fast.scale, c.fast.vocab_size, c.fast.min_frequency).fit(actions)
    obs_example = {k: v[0] for k, v in pairs["observations"].items()}
    policy = RecoveryPolicy.create(jax.random.PRNGKey(seed), obs_example, actions.shape[2], c, fast_tokenizer)
    data = dict(pairs)
    if c.head == "token":
        data["target_tokens"] = policy.encode_chunks(actions)  # tokenise once
    rng = np.random.default_rng(seed)
    history = []
    for step in range(1, int(num_steps) + 1):
        idx = rng.integers(0, n, size=int(batch_size))
        policy, info = policy.update(_take(data, idx))
        if step % int(log_every) == 0 or step == int(num_steps):
            history.append({"step": step, **info})
    return policy, history
