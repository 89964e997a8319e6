"""Any registered gymnasium env with Box actions as a task: ``gym:ENV_ID`` or ``gym:MODULE:ENV_ID``.

Task names (``configs/train.py:gym:Pendulum-v1,sac``)::

  gym:Pendulum-v1                     an env registered by gymnasium itself
  gym:my_pkg.envs:MyEnv-v0            import my_pkg.envs (which registers MyEnv-v0), then make it
  gym:gym_hil:gym_hil/PandaPickCubeBase-v0   a namespaced id (LeRobot's HIL sims)

``make_gym_env`` builds::

    EpisodeStatistics([SparseReward](GymTaskEnv(gymnasium.make(ENV_ID, max_episode_steps=...))))

:class:`GymTaskEnv` puts the env into the project's conventions:

* observations: a dict with ``"state"``, float32 (D,), every non-image part of the env's
  observation flattened (``gymnasium.spaces.flatten``; a Box, or a Dict / Tuple of Box,
  Discrete, MultiBinary, MultiDiscrete spaces, in the space's key order), plus every uint8 Box
  of rank 3 (an image, H x W x C) under its own key (nested Dict keys joined by ``_``, e.g.
  ``pixels_front``; a plain image Box is ``pixels``). An image-only env has no ``"state"``.
* actions: Box(-1, 1, (A,), float32) with A the size of the env's Box action space; an action
  is clipped to [-1, 1] and mapped linearly onto the env's [low, high] (both finite) and its
  shape and dtype.
* ``info["success"]``: ``bool(info["is_success"])`` or ``bool(info["success"])`` when the env
  sets either, else False.
* the env's own intervention signal: ``info["intervene_action"]`` (HiL-SERL's wrappers) or
  ``info["action_intervention"]`` with ``info["is_intervention"]`` True (LeRobot's gym_hil),
  given in the env's action units, is mapped to [-1, 1] (clipped) and put in
  ``info["intervene_action"]``, which the actor stores as a human step
  (``serl_ext/loop/actor.py``). A step without the signal carries no ``intervene_action``.
* episode length: the env's own TimeLimit (``gymnasium.make`` applies the registered
  ``max_episode_steps``), or ``max_episode_steps`` agent steps when given; an env with neither
  is refused (the loop needs episodes that end).

The simulated operator reads Meta-World's privileged state and is not available here.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any, Dict, List, Optional, Tuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: Task names of this kind start with this prefix.
GYM_PREFIX = "gym:"


@dataclasses.dataclass(frozen=True)
class GymTask:
    """A parsed ``gym:`` task name.

    Attributes:
      name: the task name as given (``"gym:my_pkg.envs:MyEnv-v0"``); run folders use it.
      module: module imported before ``gymnasium.make`` so that it registers the id, or None.
      env_id: the registered gymnasium id (``"MyEnv-v0"``).
    """

    name: str
    module: Optional[str]
    env_id: str


def is_gym_task(task: Any) -> bool:
    """True when ``task`` is a ``gym:`` task name."""
    return isinstance(task, str) and task.startswith(GYM_PREFIX)


def parse_gym_task(task: str) -> GymTask:
    """Splits ``gym:ENV_ID`` / ``gym:MODULE:ENV_ID``.

    Raises:
      ValueError: not a ``gym:`` name, or an empty module or id, or more than two ``:``.
    """
    if not is_gym_task(task):
        raise ValueError(f"{task!r} is not a gym task; expected 'gym:ENV_ID' or 'gym:MODULE:ENV_ID'")
    parts = task[len(GYM_PREFIX):].split(":")
    if len(parts) == 1 and parts[0].strip():
        return GymTask(task, None, parts[0].strip())
    if len(parts) == 2 and parts[0].strip() and parts[1].strip():
        return GymTask(task, parts[0].strip(), parts[1].strip())
    raise ValueError(f"bad gym task {task!r}; expected 'gym:ENV_ID' (e.g. gym:Pendulum-v1) or "
                     "'gym:MODULE:ENV_ID' (e.g. gym:my_pkg.envs:MyEnv-v0)")


def check_gym_task(task: str) -> GymTask:
    """Parses ``task``, imports its module and checks that its id is registered.

    Builds no env (cheap; used when the config is composed).

    Raises:
      ValueError: a bad name (:func:`parse_gym_task`), a module that does not import (with the
        import error), or an id that is not registered (with the closest registered ids).
    """
    spec = parse_gym_task(task)
    if spec.module is not None:
        try:
            importlib.import_module(spec.module)
        except ImportError as e:
            raise ValueError(f"gym task {task!r}: cannot import module {spec.module!r} ({e}); install "
                             "the package or put it on PYTHONPATH") from e
    if spec.env_id not in gym.registry:
        close = difflib.get_close_matches(spec.env_id, list(gym.registry), n=5, cutoff=0.5)
        hint = f"; close registered ids: {close}" if close else ""
        where = (f"module {spec.module!r} did not register it" if spec.module else
                 "name the module that registers it: gym:MODULE:ENV_ID")
        raise ValueError(f"gym task {task!r}: {spec.env_id!r} is not a registered gymnasium id "
                         f"({where}){hint}")
    return spec


def _is_image(space: spaces.Space) -> bool:
    return (isinstance(space, spaces.Box) and np.dtype(space.dtype) == np.uint8
            and len(space.shape) == 3)


def _split_space(space: spaces.Space, path: Tuple[str, ...] = ()):
    """``(state parts, image parts)``: lists of ``(path, space)`` in the space's order."""
    state: List[Tuple[Tuple[str, ...], spaces.Space]] = []
    images: List[Tuple[Tuple[str, ...], spaces.Space]] = []
    if isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            s, i = _split_space(sub, path + (str(key),))
            state += s
            images += i
    elif _is_image(space):
        images.append((path, space))
    elif isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiBinary, spaces.MultiDiscrete,
                            spaces.Tuple)):
        state.append((path, space))
    else:
        raise ValueError(f"observation part {'/'.join(path) or '<root>'} has an unsupported space "
                         f"{space}; supported: Box, Discrete, MultiBinary, MultiDiscrete, Tuple, Dict")
    return state, images


def _get(obs: Any, path: Tuple[str, ...]) -> Any:
    for key in path:
        obs = obs[key]
    return obs


class GymTaskEnv(gym.Wrapper):
    """A gymnasium env with a Box action space in the project's observation / action conventions
    (module docstring).

    Observation: Dict ``{"state": Box float32 (D,), <image key>: Box uint8 (H, W, C), ...}``.
    Action: Box(-1, 1, (A,), float32). Reward, terminated, truncated: the env's own (with
    ``action_repeat`` > 1 the rewards of the repeated steps are summed, the repeat stops at the
    end of the episode). info: the env's, plus ``success`` and, on an intervened step,
    ``intervene_action`` float32 (A,) in [-1, 1].

    Args:
      env: the env (e.g. from ``gymnasium.make``).
      action_repeat: env steps per agent step (>= 1; HiL-SERL's sims: 1).
    Raises:
      ValueError: a non-Box action space, an action Box with an infinite bound, an unsupported
        observation space, two image parts with the same key, or ``action_repeat < 1``.
    """

    def __init__(self, env: gym.Env, action_repeat: int = 1):
        super().__init__(env)
        name = getattr(env.spec, "id", None) or type(env.unwrapped).__name__
        space = env.action_space
        if not isinstance(space, spaces.Box):
            raise ValueError(f"{name} has a {type(space).__name__} action space ({space}); gym tasks "
                             "need a Box (continuous) action space")
        low = np.asarray(space.low, np.float64).reshape(-1)
        high = np.asarray(space.high, np.float64).reshape(-1)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
            raise ValueError(f"{name}: the action Box needs finite bounds with high > low to map "
                             f"actions onto [-1, 1], got low={space.low}, high={space.high}")
        if not isinstance(action_repeat, (int, np.integer)) or action_repeat < 1:
            raise ValueError(f"action_repeat must be an int >= 1, got {action_repeat!r}")
        self.action_repeat = int(action_repeat)
        self._low, self._high = low, high
        self._action_shape, self._action_dtype = tuple(space.shape), space.dtype
        self.action_space = spaces.Box(-1.0, 1.0, (low.size,), np.float32)

        state_parts, image_parts = _split_space(env.observation_space)
        self._state_parts = state_parts
        self._image_parts: Dict[str, Tuple[str, ...]] = {}
        obs_spaces: Dict[str, spaces.Space] = {}
        for path, sub in image_parts:
            key = "_".join(path) or "pixels"
            if key in self._image_parts or key == "state":
                raise ValueError(f"{name}: two observation images map to the key {key!r}")
            self._image_parts[key] = path
            obs_spaces[key] = spaces.Box(0, 255, tuple(sub.shape), np.uint8)
        if state_parts:
            flat = [spaces.flatten_space(sub) for _, sub in state_parts]
            lows = np.concatenate([np.asarray(f.low, np.float32).reshape(-1) for f in flat])
            highs = np.concatenate([np.asarray(f.high, np.float32).reshape(-1) for f in flat])
            obs_spaces["state"] = spaces.Box(lows, highs, (lows.size,), np.float32)
        if not obs_spaces:
            raise ValueError(f"{name} has an empty observation space")
        self.observation_space = spaces.Dict(obs_spaces)

    # ---------------------------------------------------------------- conversions
    def observation(self, obs: Any) -> Dict[str, np.ndarray]:
        """The env's observation as the project's dict (see the class docstring)."""
        out = {key: np.asarray(_get(obs, path), np.uint8) for key, path in self._image_parts.items()}
        if self._state_parts:
            out["state"] = np.concatenate([
                np.asarray(spaces.flatten(sub, _get(obs, path)), np.float32).reshape(-1)
                for path, sub in self._state_parts])
        return out

    def to_env_action(self, action: Any) -> np.ndarray:
        """[-1, 1] action (A,) -> the env's action (its shape and dtype); clipped first."""
        a = np.clip(np.asarray(action, np.float64).reshape(-1), -1.0, 1.0)
        if a.size != self._low.size:
            raise ValueError(f"action must have {self._low.size} elements, got shape {np.shape(action)}")
        raw = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        return raw.reshape(self._action_shape).astype(self._action_dtype)

    def from_env_action(self, raw: Any) -> np.ndarray:
        """The env's action -> float32 (A,) in [-1, 1] (clipped); NaN stays NaN (a fault)."""
        r = np.asarray(raw, np.float64).reshape(-1)
        if r.size != self._low.size:
            raise ValueError(f"intervention action must have {self._low.size} elements, got shape "
                             f"{np.shape(raw)}")
        return np.clip(2.0 * (r - self._low) / (self._high - self._low) - 1.0, -1.0, 1.0).astype(np.float32)

    def _info(self, info: Dict[str, Any]) -> Dict[str, Any]:
        info = dict(info)
        info["success"] = bool(info.get("is_success", info.get("success", False)))
        raw = info.pop("intervene_action", None)
        if raw is None and info.get("is_intervention", False) and info.get("action_intervention") is not None:
            raw = info["action_intervention"]
        if raw is not None:
            info["intervene_action"] = self.from_env_action(raw)
        return info

    # ---------------------------------------------------------------- gym API
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self.observation(obs), self._info(info)

    def step(self, action):
        raw_action = self.to_env_action(action)
        total = 0.0
        for _ in range(self.action_repeat):
            obs, reward, terminated, truncated, info = self.env.step(raw_action)
            total += float(reward)
            if terminated or truncated:
                break
        return self.observation(obs), total, bool(terminated), bool(truncated), self._info(info)


def _has_time_limit(env: gym.Env) -> bool:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return True
        env = env.env
    return False


REWARD_TYPES = ("env", "dense", "sparse")


def make_gym_env(task: str, seed: int = 0, *, action_repeat: int = 1,
                 max_episode_steps: Optional[int] = None, reward_type: str = "env",
                 terminate_on_success: bool = True, image_obs: bool = False, image_size: int = 64,
                 camera: str = "corner", state_obs: Optional[str] = None, operator: Any = None,
                 grasp_penalty: float = -0.02, operator_wrapper: Any = None) -> gym.Env:
    """Builds a ``gym:`` task (module docstring) with the arguments of
    :func:`serl_ext.envs.metaworld_env.make_env`.

    Args:
      task: ``gym:ENV_ID`` or ``gym:MODULE:ENV_ID``.
      seed: unused at construction (the loop seeds every ``reset``); kept for the signature.
      action_repeat: env steps per agent step (the gym task kind's config uses 1).
      max_episode_steps: episode length in agent steps; None: the env's registered TimeLimit.
      reward_type: ``"env"`` (or ``"dense"``): the env's own reward; ``"sparse"``: 1.0 on the
        first step with ``info["success"]`` (needs an env that reports success), with
        ``terminate_on_success`` ending the episode there.
      image_obs, state_obs: must be False / None or ``"full"``: the env's own observation is used
        (its images pass through when it has them).
      operator: must be None or disabled: the simulated operator needs a Meta-World task.
      image_size, camera, grasp_penalty, operator_wrapper: unused (Meta-World's).
    Returns:
      A gymnasium env with dict observations and Box(-1, 1) actions; episode stats in
      ``info["episode"]`` at the last step.
    Raises:
      ValueError: a bad or unknown task (:func:`check_gym_task`), a non-Box action space, an env
        without a time limit and no ``max_episode_steps``, or an option this task kind does not
        have (the message says which).
    """
    from serl_ext.envs import wrappers

    del seed, image_size, camera, grasp_penalty, operator_wrapper
    spec = check_gym_task(task)
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"reward_type must be one of {REWARD_TYPES} for gym tasks, got {reward_type!r}")
    if image_obs:
        raise ValueError(f"{task}: env.image_obs renders Meta-World scenes; a gym task passes its own "
                         "observation (images included); set --config.env.image_obs=False")
    if state_obs not in (None, "full"):
        raise ValueError(f"{task}: env.state_obs={state_obs!r} is Meta-World's; a gym task's state is "
                         "its whole non-image observation")
    if operator is not None and bool(_get_field(operator, "enabled", True)):
        raise ValueError(f"{task}: the simulated operator needs a Meta-World task; set "
                         "--config.operator.enabled=False (the env's own info['intervene_action'] "
                         "is still read)")
    if max_episode_steps is not None and (not isinstance(max_episode_steps, (int, np.integer))
                                          or max_episode_steps < 1):
        raise ValueError(f"max_episode_steps must be an int >= 1 or None, got {max_episode_steps!r}")
    kwargs = {}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps) * int(action_repeat)
    inner = gym.make(spec.env_id, **kwargs)
    if not _has_time_limit(inner):
        inner.close()
        raise ValueError(f"{task}: {spec.env_id} is registered without max_episode_steps; set "
                         "--config.env.max_episode_steps=N")
    env: gym.Env = GymTaskEnv(inner, action_repeat=action_repeat)
    if reward_type == "sparse":
        env = wrappers.SparseReward(env, terminate_on_success=terminate_on_success)
    return wrappers.EpisodeStatistics(env)


def _get_field(config: Any, name: str, default: Any) -> Any:
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)
