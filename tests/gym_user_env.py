"""A user's own gymnasium package, as the ``gym:`` task kind sees one (tests only).

Importing it registers:

* ``SerlTestReach-v0``: a point in the plane moves towards a goal. Observation
  Dict(``goal`` Box(2), ``pos`` Box(2)), action Box(-2, 2, (2,)) (the step in units of 0.05),
  reward minus the distance, ``info["is_success"]`` within 0.1 of the goal, 20-step TimeLimit.
* ``SerlTestReachIntervene-v0``: the same with the env's own intervention signal, HiL-SERL
  style: on every step ``t`` (1-based since reset) with ``t % 4 == 0`` the env executes
  ``INTERVENE_ACTION`` instead of the agent's action and reports it in
  ``info["intervene_action"]`` (env units).
* ``SerlTestImages-v0``: LeRobot gym_hil's observation layout, Dict(``agent_pos`` Box(3),
  ``pixels`` Dict(``front``, ``wrist``: uint8 (8, 8, 3))), Box(-1, 1, (3,)) actions.
* ``SerlTestDiscrete-v0``: Discrete actions (refused by the gym task kind).
* ``SerlTestNoLimit-v0``: the reach env without a TimeLimit (refused without
  ``env.max_episode_steps``).

Use ``gym:gym_user_env:SerlTestReach-v0`` with ``tests/`` on ``PYTHONPATH``.
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

EPISODE_STEPS = 20
INTERVENE_EVERY = 4
#: What the "human" executes on intervened steps, in the env's action units ([-2, 2]).
INTERVENE_ACTION = np.array([2.0, -1.0], np.float32)


class ReachEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, intervene: bool = False, discrete: bool = False):
        self.intervene = intervene
        self.observation_space = spaces.Dict({
            "pos": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "goal": spaces.Box(-1.0, 1.0, (2,), np.float32),
        })
        self.action_space = spaces.Discrete(3) if discrete else spaces.Box(-2.0, 2.0, (2,), np.float32)
        self._pos = np.zeros(2, np.float32)
        self._goal = np.zeros(2, np.float32)
        self._t = 0

    def _obs(self):
        return {"pos": self._pos.copy(), "goal": self._goal.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-0.5, 0.5, 2).astype(np.float32)
        self._goal = self.np_random.uniform(-0.5, 0.5, 2).astype(np.float32)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        info = {}
        action = np.asarray(action, np.float32)
        if self.intervene and self._t % INTERVENE_EVERY == 0:
            action = INTERVENE_ACTION.copy()
            info["intervene_action"] = action
        self._pos = np.clip(self._pos + 0.05 * action, -1.0, 1.0).astype(np.float32)
        dist = float(np.linalg.norm(self._pos - self._goal))
        info["is_success"] = dist < 0.1
        return self._obs(), -dist, False, False, info


class ImageEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self):
        image = spaces.Box(0, 255, (8, 8, 3), np.uint8)
        self.observation_space = spaces.Dict({
            "agent_pos": spaces.Box(-1.0, 1.0, (3,), np.float32),
            "pixels": spaces.Dict({"front": image, "wrist": image}),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)

    def _obs(self, value):
        image = np.full((8, 8, 3), value, np.uint8)
        return {"agent_pos": np.full(3, value / 255.0, np.float32),
                "pixels": {"front": image, "wrist": 255 - image}}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(10), {}

    def step(self, action):
        return self._obs(20), 0.0, False, False, {}


def _register(env_id, max_episode_steps=EPISODE_STEPS, **kwargs):
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=ReachEnv, max_episode_steps=max_episode_steps, kwargs=kwargs)


_register("SerlTestReach-v0")
_register("SerlTestReachIntervene-v0", intervene=True)
_register("SerlTestDiscrete-v0", discrete=True)
if "SerlTestImages-v0" not in gym.registry:
    gym.register("SerlTestImages-v0", entry_point=ImageEnv, max_episode_steps=5)
_register("SerlTestNoLimit-v0", max_episode_steps=None)
