"""Labelled camera frames from the project's own simulated episodes (nothing downloaded).

Used by ``launchers/pretrain_encoder.py`` (frames + privileged state, the pre-training
targets) and ``launchers/train_reward_classifier.py`` (frames + the simulator's success
flag, or the success label of recorded episodes). Episodes are scripted-expert rollouts
(with per-episode action noise) and random-action rollouts, through the task env with
``image_obs`` and ``terminate_on_success=False``, so that an expert episode keeps showing
the solved scene after its first success.

Frame arrays (``N`` frames, every observation of every episode, the reset frame included):

==============  =================  =====================================================
key             shape / dtype      meaning
==============  =================  =====================================================
``pixels``      (N, S, S, 3) uint8 the camera frame (image key of the env)
``success``     (N,) bool          the simulator's ``info["success"]`` of the step that
                                   produced the frame (False for a reset frame)
``episode``     (N,) int32         episode index (0, 1, ...), for splits by episode
``expert``      (N,) bool          the frame comes from a scripted-expert episode
``privileged``  (N, 39) float32    raw Meta-World state of the frame (only with
                                   ``privileged=True``; see ``get_privileged_state``)
==============  =================  =====================================================
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

FRAME_KEYS = ("pixels", "success", "episode", "expert")


def _random_policy(rng: np.random.Generator, action_dim: int, hold: int):
    """Uniform random actions in [-1, 1], each held for ``hold`` steps (wider hand motion
    than fresh noise every step)."""
    state = {"left": 0, "action": np.zeros(action_dim, np.float32)}

    def policy(obs, env):
        del obs, env
        if state["left"] <= 0:
            state["action"] = rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
            state["left"] = hold
        state["left"] -= 1
        return state["action"]

    return policy


def collect_frames(
    task: str,
    num_frames: int,
    *,
    image_size: int = 64,
    camera: str = "corner",
    seed: int = 0,
    expert_fraction: float = 0.5,
    expert_noise: Tuple[float, float] = (0.0, 0.5),
    episode_steps: int = 50,
    image_key: str = "pixels",
    privileged: bool = False,
    crop: Optional[Tuple[float, float, float, float]] = None,
) -> Dict[str, np.ndarray]:
    """Render ``num_frames`` labelled frames from simulated episodes of ``task``.

    Args:
      task: a Meta-World task (``serl_ext.envs.tasks``) with a scripted expert.
      num_frames: frames to return (>= 1); the last episode is cut to fit.
      image_size: S, the square frame size in pixels (>= 8).
      camera: Meta-World camera name (``corner``, ``topview``, ...).
      seed: seeds the episode layouts, the noise and the choice of policy.
      expert_fraction: share of episodes run by the scripted expert (the rest: random
        actions held for 5 steps), in [0, 1].
      expert_noise: ``(low, high)`` of the per-episode std of Gaussian noise added to the
        expert's actions (action units, actions in [-1, 1]); noisy episodes fail sometimes.
      episode_steps: agent steps per episode (the env does not end on success).
      image_key: the env's image observation key: ``"pixels"`` (rendered from ``camera``)
        or a camera key of ``serl_ext.envs.metaworld_env.CAMERA_KEYS`` (``"front"``,
        ``"wrist"``, ...), which renders that camera (``camera`` is then unused).
      privileged: also return ``privileged`` (raw Meta-World state, float32 (N, 39)).
      crop: ``(top, bottom, left, right)`` fractions of the frame cropped before the resize
        (the env's ``camera_crops`` for ``image_key``); None = the full frame.

    Returns the frame arrays of the module docstring.
    Raises ValueError for bad arguments or an env without ``image_key``.
    """
    from serl_ext.envs import get_privileged_state, make_env
    from serl_ext.loop.rollouts import expert_policy

    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 0.0 <= float(expert_fraction) <= 1.0:
        raise ValueError(f"expert_fraction must be in [0, 1], got {expert_fraction}")
    if int(episode_steps) < 1:
        raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
    low, high = (float(v) for v in expert_noise)
    if not 0.0 <= low <= high:
        raise ValueError(f"expert_noise must be (low, high) with 0 <= low <= high, got {expert_noise}")
    rng = np.random.default_rng(seed)
    env = make_env(task, seed, image_obs=True, image_size=int(image_size), camera=camera,
                   cameras=(image_key,), camera_crops=None if crop is None else {image_key: crop},
                   terminate_on_success=False, max_episode_steps=int(episode_steps))
    out = {k: [] for k in FRAME_KEYS + (("privileged",) if privileged else ())}
    total, episode = 0, 0
    try:
        while total < num_frames:
            is_expert = bool(rng.uniform() < expert_fraction)
            if is_expert:
                policy = expert_policy(task, noise=float(rng.uniform(low, high)),
                                       rng=np.random.default_rng(rng.integers(2**31)))
            else:
                policy = _random_policy(rng, int(env.action_space.shape[0]), hold=5)
            obs, _ = env.reset(seed=int(seed) * 100_003 + episode)
            if image_key not in obs:
                raise ValueError(f"env observation has no image key {image_key!r}; keys: {sorted(obs)}")
            success, done = False, False
            while True:
                out["pixels"].append(np.asarray(obs[image_key], np.uint8))
                out["success"].append(success)
                out["episode"].append(episode)
                out["expert"].append(is_expert)
                if privileged:
                    out["privileged"].append(np.asarray(get_privileged_state(env), np.float32))
                total += 1
                if done or total >= num_frames:
                    break
                action = np.clip(np.asarray(policy(obs, env), np.float32), -1.0, 1.0)
                obs, _, terminated, truncated, info = env.step(action)
                success = bool(info.get("success", False))
                done = bool(terminated or truncated)
            episode += 1
    finally:
        env.close()
    return {
        "pixels": np.stack(out["pixels"]),
        "success": np.asarray(out["success"], bool),
        "episode": np.asarray(out["episode"], np.int32),
        "expert": np.asarray(out["expert"], bool),
        **({"privileged": np.stack(out["privileged"]).astype(np.float32)} if privileged else {}),
    }


def frames_from_episodes(
    episodes: Iterable[dict], image_key: str = "pixels", first_episode: int = 0
) -> Dict[str, np.ndarray]:
    """Frames labelled from recorded episodes (``serl_ext.data.episodes`` dicts).

    Frame ``t + 1`` (the observation after step ``t``) is labelled with the episode's
    per-step ``success`` extra at ``t`` when it has one; otherwise only the last frame of an
    episode whose ``metadata["success"]`` is true is positive. The reset frame is negative.

    Returns the frame arrays of the module docstring (``expert`` True: recorded demos), with
    episode indices from ``first_episode``. Raises ValueError when an episode has no
    ``image_key`` observation or no frames at all were found.
    """
    out = {k: [] for k in FRAME_KEYS}
    for i, ep in enumerate(episodes):
        obs = ep["observations"]
        if image_key not in obs:
            raise ValueError(f"episode {i} has no image observation {image_key!r}; keys: {sorted(obs)} "
                             "(record demos with --config.env.image_obs=True)")
        frames = np.asarray(obs[image_key], np.uint8)
        n = frames.shape[0]
        labels = np.zeros(n, bool)
        if "success" in ep:
            labels[1:] = np.asarray(ep["success"], bool)[: n - 1]
        elif bool(ep.get("metadata", {}).get("success", False)):
            labels[-1] = True
        out["pixels"].append(frames)
        out["success"].append(labels)
        out["episode"].append(np.full(n, first_episode + i, np.int32))
        out["expert"].append(np.ones(n, bool))
    if not out["pixels"]:
        raise ValueError("no recorded episodes given")
    return {k: np.concatenate(v) for k, v in out.items()}


def concat_frames(parts: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Concatenate frame dicts, renumbering episodes so that they stay distinct.

    Raises ValueError when the parts have different keys or frame shapes.
    """
    if not parts:
        raise ValueError("no frame sets to concatenate")
    keys = set(parts[0])
    shape = parts[0]["pixels"].shape[1:]
    out, offset = {k: [] for k in keys}, 0
    for p in parts:
        if set(p) != keys or p["pixels"].shape[1:] != shape:
            raise ValueError(f"frame sets differ: keys {sorted(p)} vs {sorted(keys)}, "
                             f"frames {p['pixels'].shape[1:]} vs {shape}")
        for k in keys:
            out[k].append(p[k] + offset if k == "episode" else p[k])
        offset += int(p["episode"].max()) + 1 if len(p["episode"]) else 0
    return {k: np.concatenate(v) for k, v in out.items()}


def split_by_episode(
    episode: np.ndarray, holdout_fraction: float, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(train, held_out)`` over frames: whole episodes go to one side.

    ``episode`` int (N,); ``holdout_fraction`` in (0, 1): share of episodes held out (at least
    one, and at least one left for training). Raises ValueError with fewer than 2 episodes.
    """
    ids = np.unique(episode)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 episodes to split, got {len(ids)}")
    if not 0.0 < float(holdout_fraction) < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    n_hold = min(max(1, int(round(len(ids) * float(holdout_fraction)))), len(ids) - 1)
    held = np.random.default_rng(seed).permutation(ids)[:n_hold]
    held_mask = np.isin(episode, held)
    return ~held_mask, held_mask


def stratified_holdout(
    episode: np.ndarray, success: np.ndarray, holdout_fraction: float, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`split_by_episode` that holds out episodes with and without a positive frame in
    the same proportion (so that the held-out set has positives whenever 2+ episodes do).

    ``success`` bool (N,). Returns boolean masks ``(train, held_out)``.
    """
    ids = np.unique(episode)
    pos = np.asarray([bool(success[episode == i].any()) for i in ids])
    held = []
    rng = np.random.default_rng(seed)
    for group in (ids[pos], ids[~pos]):
        if len(group) >= 2:
            n = min(max(1, int(round(len(group) * float(holdout_fraction)))), len(group) - 1)
            held.extend(rng.permutation(group)[:n].tolist())
    if not held:
        return split_by_episode(episode, holdout_fraction, seed)
    held_mask = np.isin(episode, np.asarray(held))
    return ~held_mask, held_mask


def batches(n: int, batch_size: int) -> Iterable[Tuple[int, int]]:
    """``(start, stop)`` of consecutive batches covering ``range(n)``."""
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def privileged_targets(privileged: np.ndarray, indices: Optional[Sequence[int]] = None) -> np.ndarray:
    """Pre-training regression targets from raw Meta-World states, float32 (N, 7): hand xyz
    (m), gripper opening (Meta-World units, ~[0, 1]), object xyz (m); ``indices`` overrides
    the columns of ``privileged`` (N, 39) taken."""
    cols = (0, 1, 2, 3, 4, 5, 6) if indices is None else tuple(int(i) for i in indices)
    return np.asarray(privileged, np.float32)[:, cols]
