"""Running one episode with any policy and recording it in the episodes.py format.

Used by the demo collector (scripted expert), the offline data collector (weak BC policy,
with or without the simulated operator) and anything else that needs whole episodes on disk.
"""

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from serl_ext.data.episodes import EpisodeRecorder
from serl_ext.data.replay_buffer import ACTION_SOURCE_HUMAN, ACTION_SOURCE_POLICY
from serl_ext.loop.common import grasp_penalty

PolicyFn = Callable[[Dict[str, np.ndarray], Any], np.ndarray]


def run_episode(
    env,
    policy: PolicyFn,
    seed: int,
    *,
    policy_source: int = ACTION_SOURCE_POLICY,
    metadata: Optional[Dict[str, Any]] = None,
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Runs one episode of ``env`` from ``reset(seed=seed)`` and records it.

    Args:
      env: a gymnasium env from ``serl_ext.envs.make_env`` (dict observations; may carry the
        simulated operator, whose ``info["intervene_action"]`` then replaces the action).
      policy: ``policy(observation, env) -> action (A,)``; it gets the env too so a scripted
        expert can read privileged state (``serl_ext.envs.get_privileged_state(env)``).
      seed: reset seed (exact layouts, see serl_ext/envs).
      policy_source: ``action_source`` written for steps the policy controlled (0 policy;
        demos use 2, human).
      metadata: merged into the episode's metadata.

    Returns:
      ``(episode, stats)``: the episode dict (per-step ``success``, ``dense_reward`` and
      ``grasp_penalty`` (float32, ``info["grasp_penalty"]`` or 0) extras;
      metadata with ``seed``, ``success``, ``first_intervention_step`` (or None)) and a stats
      dict (``return``, ``length``, ``success``, ``intervention_steps``,
      ``intervention_segments``).
    """
    obs, _ = env.reset(seed=seed)
    recorder = EpisodeRecorder()
    recorder.reset(obs)
    done, success, ret, length = False, False, 0.0, 0
    human_steps, segments, prev_human, first_human = 0, 0, False, None
    while not done:
        action = np.clip(np.asarray(policy(obs, env), dtype=np.float32), -1.0, 1.0)
        obs, reward, terminated, truncated, info = env.step(action)
        human = "intervene_action" in info
        if human:
            action = np.asarray(info["intervene_action"], dtype=np.float32)
            if first_human is None:
                first_human = length
        recorder.step(
            action, np.float32(reward), obs, terminated, truncated,
            intervention=human,
            action_source=ACTION_SOURCE_HUMAN if human else policy_source,
            success=bool(info.get("success", False)),
            dense_reward=np.float32(info.get("dense_reward", 0.0)),
            grasp_penalty=grasp_penalty(info),
        )
        success = success or bool(info.get("success", False))
        ret += float(reward)
        length += 1
        human_steps += int(human)
        segments += int(human and not prev_human)
        prev_human = human
        done = terminated or truncated
    meta = {"seed": int(seed), "success": bool(success), "first_intervention_step": first_human}
    meta.update(metadata or {})
    episode = recorder.finish(meta)
    stats = {
        "return": ret, "length": length, "success": success,
        "intervention_steps": human_steps, "intervention_segments": segments,
    }
    return episode, stats


def expert_policy(task: str, noise: float = 0.0, rng: Optional[np.random.Generator] = None) -> PolicyFn:
    """The task's scripted Meta-World expert as a :data:`PolicyFn` (reads privileged state)."""
    from serl_ext.envs import get_expert, get_privileged_state

    expert = get_expert(task)
    rng = rng or np.random.default_rng(0)

    def policy(obs, env):
        del obs
        action = np.asarray(expert(get_privileged_state(env)), dtype=np.float32)
        if noise > 0:
            action = action + rng.normal(0.0, noise, size=action.shape).astype(np.float32)
        return action

    return policy
