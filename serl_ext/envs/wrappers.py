"""Small composable gymnasium wrappers for the simulated (and real) tasks.

All expect the inner env's ``info`` to carry ``success`` (bool) where noted.
Wrappers that look at the *executed* action use ``info["intervene_action"]``
when present (HiL-SERL convention: a human or the simulated operator took
over and executed that action instead of the policy's).
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import gymnasium as gym
import numpy as np

from serl_ext.errors import ResetBlockedError


def executed_action(action, info: dict) -> np.ndarray:
    """The action actually executed: ``info["intervene_action"]`` if present, else ``action``."""
    if "intervene_action" in info:
        return np.asarray(info["intervene_action"], dtype=np.float32)
    return np.asarray(action, dtype=np.float32)


class WaitWhileResetBlocked(gym.Wrapper):
    """Retries ``reset`` while the inner env raises :class:`ResetBlockedError` (an emergency or
    protective stop on a real arm: ``serl_ext.robots.ur.SafetyStopError``), instead of letting the
    error end the run; other errors pass through at once.

    While it waits it calls ``while_waiting()`` about every 0.1 s (the actor delivers its queued
    transitions and takes new parameters there) and ``notify(message)`` when the wait starts,
    every 60 s of it and when it ends (the message names the env's error, which says what the
    person has to do).

    Args:
        env: the env to wrap.
        retry_s: seconds between reset attempts (> 0).
        timeout_s: give up after this many seconds of one wait (0: wait without end).
        while_waiting, notify: callbacks (None: nothing).
        clock, sleep: ``time.monotonic`` and ``time.sleep`` unless a test injects its own.
    Attributes:
        blocked_resets: resets that had to wait. waited_s: seconds waited, in all.
        last_wait_s: seconds the last reset waited (0.0 when it did not).
    Raises:
        ValueError: ``retry_s`` <= 0 or ``timeout_s`` < 0.
        RuntimeError: (from ``reset``) still blocked after ``timeout_s``; the env's last
          :class:`ResetBlockedError` is its ``__cause__``.
    """

    def __init__(self, env: gym.Env, retry_s: float = 5.0, timeout_s: float = 3600.0,
                 while_waiting: Optional[Callable[[], None]] = None,
                 notify: Optional[Callable[[str], None]] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        super().__init__(env)
        if not float(retry_s) > 0:
            raise ValueError(f"retry_s must be > 0, got {retry_s}")
        if not float(timeout_s) >= 0:
            raise ValueError(f"timeout_s must be >= 0 (0: no limit), got {timeout_s}")
        self.retry_s, self.timeout_s = float(retry_s), float(timeout_s)
        self.while_waiting, self.notify = while_waiting, notify
        self._clock, self._sleep = clock, sleep
        self.blocked_resets, self.waited_s, self.last_wait_s = 0, 0.0, 0.0

    def _say(self, message: str) -> None:
        if self.notify is not None:
            self.notify(message)

    def reset(self, **kwargs):
        self.last_wait_s = 0.0
        start = None
        next_note = 0.0
        while True:
            try:
                result = self.env.reset(**kwargs)
            except ResetBlockedError as error:
                now = self._clock()
                if start is None:
                    start, next_note = now, now
                    self.blocked_resets += 1
                waited = now - start
                if self.timeout_s and waited >= self.timeout_s:
                    self.last_wait_s = waited
                    self.waited_s += waited
                    raise RuntimeError(f"reset still blocked after {waited:.0f} s "
                                       f"(blocked_reset_timeout_s={self.timeout_s:g}): {error}") from error
                if now >= next_note:
                    left = f", giving up in {self.timeout_s - waited:.0f} s" if self.timeout_s else ""
                    self._say(f"reset blocked for {waited:.0f} s: {error}; retrying every {self.retry_s:g} s{left}")
                    next_note = now + 60.0
                retry_at = now + self.retry_s
                while True:
                    if self.while_waiting is not None:
                        self.while_waiting()
                    remaining = retry_at - self._clock()
                    if remaining <= 0:
                        break
                    self._sleep(min(0.1, remaining))
                continue
            if start is not None:
                self.last_wait_s = self._clock() - start
                self.waited_s += self.last_wait_s
                self._say(f"reset went through after {self.last_wait_s:.0f} s blocked")
            return result


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
