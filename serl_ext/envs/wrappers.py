"""Small composable gymnasium wrappers for the simulated (and real) tasks.

All expect the inner env's ``info`` to carry ``success`` (bool) where noted.
Wrappers that look at the *executed* action use ``info["intervene_action"]``
when present (HiL-SERL convention: a human or the simulated operator took
over and executed that action instead of the policy's).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def executed_action(action, info: dict) -> np.ndarray:
    """The action actually executed: ``info["intervene_action"]`` if present, else ``action``."""
    if "intervene_action" in info:
        return np.asarray(info["intervene_action"], dtype=np.float32)
    return np.asarray(action, dtype=np.float32)


class SuccessTermination(gym.Wrapper):
    """Keep the inner reward; set ``terminated=True`` on a success step.

    Args:
        terminate_on_success: if False, this wrapper changes nothing.

    Raises:
        KeyError: if the inner env's info has no ``success`` key.
    """

    def __init__(self, env: gym.Env, terminate_on_success: bool = True):
        super().__init__(env)
        self.terminate_on_success = bool(terminate_on_success)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "success" not in info:
            raise KeyError("SuccessTermination needs info['success'] from the inner env")
        if self.terminate_on_success and info["success"]:
            terminated = True
        return obs, reward, terminated, truncated, info


class SparseReward(gym.Wrapper):
    """Sparse 0/1 reward from ``info["success"]``.

    reward = 1.0 on the step where ``success`` first becomes true in the
    episode, 0.0 on every other step (also on later success steps when not
    terminating). With ``terminate_on_success`` that step has
    ``terminated=True``. The inner reward is kept in ``info["dense_reward"]``
    if the inner env did not already set it.

    Raises:
        KeyError: if the inner env's info has no ``success`` key.
    """

    def __init__(self, env: gym.Env, terminate_on_success: bool = True):
        super().__init__(env)
        self.terminate_on_success = bool(terminate_on_success)
        self._succeeded = False

    def reset(self, **kwargs):
        self._succeeded = False
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, inner_reward, terminated, truncated, info = self.env.step(action)
        if "success" not in info:
            raise KeyError("SparseReward needs info['success'] from the inner env")
        info.setdefault("dense_reward", float(inner_reward))
        reward = 0.0
        if info["success"] and not self._succeeded:
            self._succeeded = True
            reward = 1.0
            if self.terminate_on_success:
                terminated = True
        return obs, reward, terminated, truncated, info


class TimeLimit(gym.Wrapper):
    """``truncated=True`` at the ``max_episode_steps``-th step (agent steps).

    A step that is both terminal and the last one reports ``terminated=True``
    and ``truncated=True``; ``masks = 1 - terminated`` stays correct.
    """

    def __init__(self, env: gym.Env, max_episode_steps: int):
        super().__init__(env)
        if not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")
        self.max_episode_steps = int(max_episode_steps)
        self._elapsed = 0

    @property
    def elapsed_steps(self) -> int:
        return self._elapsed

    def reset(self, **kwargs):
        self._elapsed = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._elapsed += 1
        if self._elapsed >= self.max_episode_steps:
            truncated = True
        return obs, reward, terminated, truncated, info


class GripperPenalty(gym.Wrapper):
    """Put ``info["grasp_penalty"]`` (HiL-SERL hybrid agent's gripper cost).

    The executed gripper command (last action dim) is mapped to a state with
    hysteresis: closed if ``> threshold``, open if ``< -threshold``, otherwise
    unchanged ("stay"). The gripper starts open at reset. ``grasp_penalty`` is
    ``penalty`` (default -0.02) on a step whose command changes that state,
    else 0.0. (HiL-SERL compares the command with the measured gripper
    position; in simulation the commanded state is used.)

    Args:
        penalty: value added on a state change (<= 0 expected).
        threshold: in (0, 1].
    """

    def __init__(self, env: gym.Env, penalty: float = -0.02, threshold: float = 0.5):
        super().__init__(env)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.penalty = float(penalty)
        self.threshold = float(threshold)
        self._closed = False

    def reset(self, **kwargs):
        self._closed = False
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        grip = float(executed_action(action, info)[-1])
        new_closed = self._closed
        if grip > self.threshold:
            new_closed = True
        elif grip < -self.threshold:
            new_closed = False
        info["grasp_penalty"] = self.penalty if new_closed != self._closed else 0.0
        self._closed = new_closed
        return obs, reward, terminated, truncated, info


class EpisodeStatistics(gym.Wrapper):
    """Episode stats in ``info["episode"]`` on the last step of an episode.

    ``info["episode"]`` (only when ``terminated or truncated``):
        ``return`` (float, sum of rewards), ``length`` (int, agent steps),
        ``success`` (bool, any step had ``info["success"]``),
        ``intervention_steps`` (int, steps with ``"intervene_action" in info``),
        ``intervention_count`` (int, number of contiguous runs of such steps,
        i.e. intervention segments; HiL-SERL's name),
        ``intervention_rate`` (float, intervention_steps / length).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._reset_stats()

    def _reset_stats(self):
        self._return = 0.0
        self._length = 0
        self._success = False
        self._int_steps = 0
        self._int_count = 0
        self._prev_intervened = False

    def reset(self, **kwargs):
        self._reset_stats()
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._length += 1
        self._success = self._success or bool(info.get("success", False))
        intervened = "intervene_action" in info
        if intervened:
            self._int_steps += 1
            if not self._prev_intervened:
                self._int_count += 1
        self._prev_intervened = intervened
        if terminated or truncated:
            info["episode"] = episode_stats(self._return, self._length, self._success,
                                            self._int_steps, self._int_count)
        return obs, reward, terminated, truncated, info


def episode_stats(ret: float, length: int, success: bool, int_steps: int,
                  int_count: int) -> dict:
    """The dict ``EpisodeStatistics`` puts in ``info["episode"]``."""
    return {"return": float(ret), "length": int(length), "success": bool(success),
            "intervention_steps": int(int_steps), "intervention_count": int(int_count),
            "intervention_rate": float(int_steps) / max(int(length), 1)}


def count_segments(flags) -> int:
    """Number of contiguous runs of True in a 1-D sequence of bools."""
    count, prev = 0, False
    for flag in flags:
        flag = bool(flag)
        if flag and not prev:
            count += 1
        prev = flag
    return count
