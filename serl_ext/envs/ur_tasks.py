"""The UR arm as training tasks: the simulated UR5e (robosuite) and a real arm (ur_rtde).

Task names (``configs/train.py:TASK,ALGORITHM``)::

  ur5e-sim-lift     simulated UR5e, robosuite Lift: pick the cube up (80-step episodes, 10 Hz)
  ur5e-sim-wipe     simulated UR5e, robosuite Wipe: wipe the markers off the table (150 steps)
  ur:ur5e           a real UR arm with the robot config configs/robots/ur5e.py
  ur:NAME           ... configs/robots/NAME.py;  ur:PATH.py: the get_config() file at PATH

Both kinds run the same ``UREnv`` control code (``serl_ext/robots/ur.py``: servo thread, safety
envelope, 10 Hz policy loop, 7-D TCP-frame actions). The composed training config carries the
robot config as ``config.robot`` (``configs/tasks.py``), so every robot field can be set from
the command line (``--config.robot.host=10.0.0.3 --config.robot.safety.max_force=40``).

The simulated tasks (``make_ur_env`` on a ``ur5e-sim-*`` name) build::

    EpisodeStatistics([URSimOperator](URSimTask(UREnv on RobosuiteArm)))

``URSimTask`` adds the task's privileged progress (``info["dense_reward"]``, 0..10, for the
operator's decisions) and its scripted expert (``expert_action()``, fresh each episode);
``URSimOperator`` is the simulated operator of DESIGN.md section 6 on the arm. Observations:
``"state"`` float32 (19 + 6,) on Lift, (19 + 4,) on Wipe (``robosuite_env.py``), (19,) with
``config.robot.privileged_state=False``; with ``backend="robosuite"`` cameras in
``config.robot.cameras`` also one uint8 image per camera (``hil_serl_cameras``: ``front`` =
``agentview``, ``wrist`` = ``robot0_eye_in_hand``, 128 px, no privileged state).

The real arm builds ``EpisodeStatistics(UREnv(config.robot))`` on ur_rtde (imported when the env
is built; ``serl_ext.robots.ur.default_rtde_factory``). It has no reward of its own: the person
at the SpaceMouse (``serl_ext.envs.intervention.SpaceMouse6Intervention``, added by
``serl_ext.loop.common.make_env`` for ``human_input="spacemouse"``) marks success (reward 1,
episode ends) or failure. :func:`ur_task_spaces` gives the spaces of either kind from the robot
config alone, for the learner box, which has no robot.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import os
from typing import Any, Callable, Optional, Tuple

import gymnasium as gym
import numpy as np
from ml_collections import ConfigDict

#: Real-arm task names start with this prefix: ``ur:ROBOT_CONFIG``.
UR_PREFIX = "ur:"


@dataclasses.dataclass(frozen=True)
class URSimTaskSpec:
    """A simulated UR5e task.

    Attributes:
        name: task name, e.g. ``"ur5e-sim-lift"``.
        robosuite_task: ``"Lift"`` or ``"Wipe"`` (``serl_ext.envs.robosuite_env.TASKS``).
        extra_state_dim: privileged task state appended to UREnv's 19-D state.
        stall_window: the simulated operator's stall window W in agent steps (10 Hz):
            ``max(10, ceil(1.5 x))`` of the scripted expert's longest stretch without progress
            (``serl_ext.envs.tasks.stall_window_from_flat``; measured, see ``SIM_TASKS``).
        instruction: a language instruction for instruction-conditioned models.
    """

    name: str
    robosuite_task: str
    extra_state_dim: int
    stall_window: int
    instruction: str


# Stall windows: `python -m serl_ext.envs.ur_tasks --task=ur5e-sim-lift --seeds=20` measures the
# expert's longest flat stretch of progress (> 0.05 over its running best) in successful episodes
# (20 seeds, 2026-12-01; docs/real_ur_arm.md): Lift 6 steps -> W 10, Wipe 33 steps -> W 50.
SIM_TASKS = {
    spec.name: spec
    for spec in (
        URSimTaskSpec("ur5e-sim-lift", "Lift", 6, 10, "pick up the cube"),
        URSimTaskSpec("ur5e-sim-wipe", "Wipe", 4, 50, "wipe the markers off the table"),
    )
}


def is_ur_sim_task(task: Any) -> bool:
    """True for a simulated UR5e task name (``SIM_TASKS``)."""
    return isinstance(task, str) and task in SIM_TASKS


def is_ur_real_task(task: Any) -> bool:
    """True for a real-arm task name ``ur:ROBOT_CONFIG``."""
    return isinstance(task, str) and task.startswith(UR_PREFIX)


def is_ur_task(task: Any) -> bool:
    """True for either kind of UR task (7-D actions, ``config.robot``)."""
    return is_ur_sim_task(task) or is_ur_real_task(task)


def _load_get_config(path: str) -> Callable:
    spec = importlib.util.spec_from_file_location(f"_robot_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"{path} has no get_config() function")
    return module.get_config


def robot_config_for(task: str) -> ConfigDict:
    """The default robot config of a UR task.

    Args:
        task: ``ur5e-sim-lift`` / ``ur5e-sim-wipe`` (``configs/robots/ur5e_sim.py`` for Lift /
            Wipe) or ``ur:NAME`` (``configs/robots/NAME.py``) or ``ur:PATH.py`` (a file with a
            ``get_config()``).
    Returns:
        The robot config (a new ConfigDict; see ``configs/robots/ur5e.py`` for its fields).
    Raises:
        ValueError: not a UR task, an empty robot name, or a robot config that cannot be found
            (the message lists the configs in ``configs/robots``).
    """
    if is_ur_sim_task(task):
        from configs.robots import ur5e_sim

        return ur5e_sim.get_config(SIM_TASKS[task].robosuite_task)
    if not is_ur_real_task(task):
        raise ValueError(f"{task!r} is not a UR task; expected one of {sorted(SIM_TASKS)} or "
                         f"'{UR_PREFIX}ROBOT_CONFIG' (e.g. {UR_PREFIX}ur5e)")
    ref = task[len(UR_PREFIX):].strip()
    if not ref:
        raise ValueError(f"{task!r}: name the robot config, e.g. {UR_PREFIX}ur5e "
                         f"(configs/robots/ur5e.py) or {UR_PREFIX}path/to/my_cell.py")
    if ref.endswith(".py"):
        if not os.path.isfile(ref):
            raise ValueError(f"{task!r}: robot config file {os.path.abspath(ref)} does not exist")
        return _load_get_config(ref)()
    import configs.robots as robots_pkg

    folder = os.path.dirname(os.path.abspath(robots_pkg.__file__))
    known = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))
    if ref not in known or not ref.isidentifier():
        raise ValueError(f"{task!r}: no robot config {ref!r} in {folder}; known: {known} "
                         f"(or give a file: {UR_PREFIX}path/to/my_cell.py)")
    return importlib.import_module(f"configs.robots.{ref}").get_config()


def extra_state_dim(task: str, robot: Optional[ConfigDict] = None) -> int:
    """Privileged task state the task appends to UREnv's 19-D state: 0 on a real arm and with
    ``robot.privileged_state=False`` (the pixel presets)."""
    if robot is not None and not bool(robot.get("privileged_state", True)):
        return 0
    return SIM_TASKS[task].extra_state_dim if is_ur_sim_task(task) else 0


def ur_task_spaces(task: str, robot: ConfigDict) -> Tuple[gym.spaces.Dict, gym.spaces.Box]:
    """``(observation_space, action_space)`` of a UR task with robot config ``robot``, without
    building the env (no robot, no simulator): ``serl_ext.robots.ur.spaces_for``.

    Returns:
        Dict ``{"state": Box float32 (19 + extra,), <camera>: Box uint8 (h, w, 3), ...}`` and
        Box(-1, 1, (7,), float32); extra = :func:`extra_state_dim` ``(task, robot)``.
    Raises:
        ValueError: not a UR task.
    """
    from serl_ext.robots.ur import spaces_for

    if not is_ur_task(task):
        raise ValueError(f"{task!r} is not a UR task")
    return spaces_for(robot, extra_state_dim(task, robot))


# ----------------------------------------------------------------------------- simulated tasks
class URSimTask(gym.Wrapper):
    """A simulated UR5e task's privileged signals on top of its ``UREnv``.

    ``info["dense_reward"]`` (float, 0..10, after ``reset`` and every ``step``): task progress
    for the simulated operator's decisions (the observation is unchanged):

    * Lift: ``10 * (0.3 reach + 0.2 grasped + 0.5 min(lift / 4 cm, 1))`` with reach =
      ``1 - tanh(10 |cube - TCP|)`` (m), grasped = robosuite's ``_check_grasp`` of the cube
      and lift = the cube's rise above its height at reset.
    * Wipe: ``10 * (0.9 wiped + 0.1 (1 - tanh(10 d)))`` with wiped = the fraction of markers
      wiped and d the TCP's distance (m) to the nearest remaining marker.

    :meth:`expert_action` is the scripted expert's action (``robosuite_env.scripted_expert``,
    float32 (7,)); a new expert starts at each reset and at :meth:`restart_expert`.

    Args:
        env: the ``UREnv`` of ``make_robosuite_ur_env`` (``.arm``, ``.task``).
        spec: the task's ``URSimTaskSpec``.
    Attributes:
        freed_arm: resets that had to free the arm from a force-limit stop (:meth:`reset`).
    """

    def __init__(self, env: gym.Env, spec: URSimTaskSpec):
        super().__init__(env)
        self.spec_task = spec
        self._expert: Optional[Callable] = None
        self._lifting = False
        self._cube_start = np.zeros(3)
        self.freed_arm = 0

    @property
    def base(self):
        """The ``UREnv``."""
        return self.env.unwrapped

    def held(self) -> bool:
        """Lift: the gripper holds the cube (robosuite's ``_check_grasp``); Wipe: False."""
        if self.spec_task.robosuite_task != "Lift":
            return False
        arm = self.base.arm
        with arm.sim_lock:
            return bool(arm.env._check_grasp(gripper=arm.env.robots[0].gripper, object_geoms=arm.env.cube))

    def cube_pos(self) -> np.ndarray:
        """Lift: the cube's position (3,) in the base frame (m)."""
        return self.base.task.cube_pos()

    def progress(self) -> float:
        """Task progress in [0, 10] (class docstring)."""
        base = self.base
        tcp = base.arm.tcp_pose()[:3]
        if self.spec_task.robosuite_task == "Lift":
            cube = self.cube_pos()
            reach = 1.0 - np.tanh(10.0 * np.linalg.norm(cube - tcp))
            lift = float(np.clip((cube[2] - self._cube_start[2]) / 0.04, 0.0, 1.0))
            return float(10.0 * (0.3 * reach + 0.2 * float(self.held()) + 0.5 * lift))
        left = base.task.remaining_markers()
        total = len(base.arm.env.model.mujoco_arena.markers)
        wiped = 1.0 - len(left) / total
        reach = 1.0 - np.tanh(10.0 * np.min(np.linalg.norm(left - tcp, axis=1))) if len(left) else 1.0
        return float(10.0 * (0.9 * wiped + 0.1 * reach))

    def restart_expert(self) -> None:
        """A fresh scripted expert, e.g. at the start of a takeover: from its first phase, or,
        on Lift with the cube already held, from its last (lift with the gripper closed)."""
        from serl_ext.envs.robosuite_env import scripted_expert

        self._expert = scripted_expert(self.base)
        self._lifting = self.held()

    def _lift_action(self) -> np.ndarray:
        """Lift's last expert phase: up to 15 cm above the cube, gripper closed, home orientation."""
        from scipy.spatial.transform import Rotation

        from serl_ext.envs.robosuite_env import _to_action

        base = self.base
        pose = base.arm.tcp_pose()
        rot = (Rotation.from_rotvec(base.home_pose[3:]) * Rotation.from_rotvec(pose[3:]).inv()).as_rotvec() * 0.5
        goal = np.array([pose[0], pose[1], self._cube_start[2] + 0.15])
        return _to_action(base, goal - pose[:3], rot, 1.0)

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state, float32 (7,) in [-1, 1]."""
        if self._expert is None:
            self.restart_expert()
        action = self._lift_action() if self._lifting else self._expert(None)
        return np.clip(np.asarray(action, np.float32), -1.0, 1.0)

    def reset(self, **kwargs):
        """``UREnv.reset``; a force-limit stop that does not clear is freed as a person would.

        On the real arm a force-limit stop whose force persists (the gripper pressed into the
        table or the cube) blocks the reset until a person frees the arm (``UREnv.reset``
        raises ``SafetyStopError``; the actor waits in ``WaitWhileResetBlocked``). The
        simulated scene has no such person, so here the simulated operator frees it: the
        robosuite scene is reset (``RobosuiteArm.reseed``, which removes the contact) and the
        reset is tried once more. ``info["safety/freed_arm"]`` (bool) says whether this reset
        did so; :attr:`freed_arm` counts them. Emergency and protective stops, and a second
        failure, still raise.

        Raises:
            SafetyStopError: an emergency / protective stop, or a force that persists after
                the scene reset.
        """
        from serl_ext.robots import safety
        from serl_ext.robots.ur import SafetyStopError

        freed = False
        try:
            obs, info = self.env.reset(**kwargs)
        except SafetyStopError:
            fault = self.base.servo.fault
            if fault is None or fault[0] != safety.FORCE_LIMIT:
                raise
            self.base.arm.reseed(0)  # the scene's layout comes from on_reset in the retry
            self.freed_arm += 1
            freed = True
            obs, info = self.env.reset(**kwargs)
        info["safety/freed_arm"] = freed
        if self.spec_task.robosuite_task == "Lift":
            self._cube_start = self.cube_pos()
        self.restart_expert()
        info["dense_reward"] = self.progress()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["dense_reward"] = self.progress()
        return obs, reward, terminated, truncated, info


def find_sim_task(env: gym.Env) -> URSimTask:
    """The ``URSimTask`` layer of a wrapped simulated UR5e env.

    Raises:
        TypeError: ``env`` has no ``URSimTask`` layer.
    """
    layer = env
    while True:
        if isinstance(layer, URSimTask):
            return layer
        if not isinstance(layer, gym.Wrapper):
            raise TypeError(f"{type(env).__name__} is not a simulated UR5e task env (no URSimTask layer)")
        layer = layer.env


_PHASE_ROBOT, _PHASE_REACTING, _PHASE_RETRACT, _PHASE_EXPERT = "robot", "reacting", "retract", "expert"


class URSimOperator(gym.Wrapper):
    """The simulated operator (DESIGN.md section 6) on a simulated UR5e task.

    The rules of ``serl_ext.envs.operator.SimulatedOperator`` with the same config fields
    (``get_default_operator_config``; counts are agent steps at 10 Hz, progress is
    ``URSimTask``'s ``dense_reward`` on the same 0..10 scale):

    * triggers, while the robot is in control, fewer than ``max_takeovers`` takeovers this
      episode and not given up: *stall* (``use_stall``: no progress above the running best by
      ``progress_threshold`` for W steps, W = the task's ``stall_window`` unless
      ``stall_window`` is set; not during the ``cooldown_steps`` after a hand-back) and, on
      Lift, *danger* (``use_danger``: the cube pushed more than ``knocked_away_distance`` m
      from where it started, or ``fall_distance`` m below it: off the table, while not held);
      the envelope keeps the arm inside its box, so there is no workspace trigger;
    * after ``reaction_delay`` steps it takes over: unless the cube is held, a retract of
      ``retract_min_steps``-``retract_max_steps`` steps (base +z at ``retract_lift``, gripper
      open), then the scripted expert, restarted from its first phase, plus Gaussian noise
      ``noise_std``; ``hesitation_steps`` > 0 first scales the expert by
      ``hesitation_action_scale`` with noise ``hesitation_noise_std``;
    * hand-back after at least ``min_control_steps`` once progress beats the best from before
      the trigger by ``handback_margin`` (if ``handback_on_progress``), or once the cube is
      grasped when it was not at the trigger (``handback_on_subgoal``), at the latest after
      ``max_control_steps``; a takeover that hits the cap without any progress ends the help
      for the episode (``give_up_after_failed_takeover``); stalled while in control: retract
      and retry (``retry_on_stall``).

    Info keys (every step): ``intervene_action`` (float32 (7,), controlled steps only),
    ``operator/in_control``, ``operator/phase``, ``operator/takeovers``, ``operator/trigger``
    (``""``, ``"stall"``, ``"knocked_away"``, ``"fallen"``), ``operator/handback``
    (``""``, ``"progress"``, ``"subgoal"``, ``"cap"``, ``"gave_up"``), ``operator/retries``,
    ``operator/steps_since_progress``. Its generator is seeded from each reset's seed and
    ``seed_salt``: the same seed gives the same takeovers.

    Args:
        env: a simulated UR5e env with a ``URSimTask`` layer.
        config: None, ConfigDict or dict of overrides of ``get_default_operator_config()``.
    Raises:
        TypeError: no ``URSimTask`` layer. ValueError: a bad config, or the Meta-World-only
            options ``use_disagreement=True`` / ``handback="agreement"``.
    """

    def __init__(self, env: gym.Env, config: Any = None):
        from serl_ext.envs.operator import _resolve_config

        super().__init__(env)
        self.config = _resolve_config(config)
        if self.config.use_disagreement or self.config.handback != "progress":
            raise ValueError("the UR5e operator has only the default rules: use_disagreement=False, "
                             "handback='progress'")
        self._task = find_sim_task(env)
        spec = self._task.spec_task
        self.stall_window = int(self.config.stall_window or spec.stall_window)
        self._rng = np.random.default_rng(int(self.config.seed_salt))
        self._clear(0.0)

    def _clear(self, progress: float) -> None:
        self._phase = _PHASE_ROBOT
        self._t = 0
        self._best = float(progress)
        self._last_improve = 0
        self._react_left = 0
        self._retract_left = 0
        self._hesitate_left = 0
        self._control_steps = 0
        self._best_before_trigger = self._best
        self._held_at_trigger = False
        self._progressed = False
        self._gave_up = False
        self._cooldown = 0
        self._takeovers = 0
        self._trigger = ""
        self._handback = ""
        self._retries = 0

    @property
    def in_control(self) -> bool:
        """Whether the operator acts on the next step."""
        return self._phase in (_PHASE_RETRACT, _PHASE_EXPERT)

    @property
    def takeovers(self) -> int:
        return self._takeovers

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        seed = kwargs.get("seed")
        seed = int(self._rng.integers(2 ** 31 - 1)) if seed is None else int(seed)
        self._rng = np.random.default_rng([seed, int(self.config.seed_salt)])
        self._start_cube = self._task.cube_pos() if self._task.spec_task.robosuite_task == "Lift" else None
        self._clear(float(info.get("dense_reward", 0.0)))
        self._add_info(info, False)
        return obs, info

    def _add_info(self, info: dict, controlled: bool) -> None:
        info["operator/in_control"] = bool(controlled)
        info["operator/phase"] = self._phase
        info["operator/takeovers"] = self._takeovers
        info["operator/trigger"] = self._trigger
        info["operator/handback"] = self._handback
        info["operator/retries"] = self._retries
        info["operator/steps_since_progress"] = self._t - self._last_improve

    def _danger(self) -> str:
        cfg = self.config
        if not cfg.use_danger or self._start_cube is None or self._task.held():
            return ""
        cube = self._task.cube_pos()
        if cube[2] < self._start_cube[2] - float(cfg.fall_distance):
            return "fallen"
        if np.linalg.norm(cube[:2] - self._start_cube[:2]) > float(cfg.knocked_away_distance):
            return "knocked_away"
        return ""

    def _start_retract(self, length: Optional[int] = None) -> None:
        cfg = self.config
        if length is None:
            length = int(self._rng.integers(cfg.retract_min_steps, cfg.retract_max_steps + 1))
        self._retract_left = int(length)
        self._phase = _PHASE_RETRACT
        if self._retract_left <= 0:
            self._enter_expert()

    def _enter_expert(self) -> None:
        """The expert phase starts: a fresh expert, and a full stall window for it."""
        self._phase = _PHASE_EXPERT
        self._task.restart_expert()
        self._last_improve = self._t

    def _begin_takeover(self) -> None:
        self._takeovers += 1
        self._control_steps = 0
        self._hesitate_left = int(self.config.hesitation_steps)
        self._start_retract(0 if self._task.held() else None)

    def _action(self) -> np.ndarray:
        from serl_ext.envs.robosuite_env import _to_action

        cfg = self.config
        noise_std = float(cfg.noise_std)
        if self._phase == _PHASE_RETRACT:
            base = self._task.base
            up = np.array([0.0, 0.0, float(cfg.retract_lift) * float(base.config.action.pos_scale)])
            action = _to_action(base, up, None, -1.0).astype(np.float64)
            self._retract_left -= 1
            if self._retract_left <= 0:
                self._enter_expert()
        else:
            action = self._task.expert_action().astype(np.float64)
            if self._hesitate_left > 0:
                self._hesitate_left -= 1
                action = action * float(cfg.hesitation_action_scale)
                noise_std = float(cfg.hesitation_noise_std)
        noise = self._rng.normal(0.0, noise_std, size=action.shape) if noise_std > 0 else 0.0
        return np.clip(action + noise, -1.0, 1.0).astype(np.float32)

    def _handback_due(self, progress: float) -> str:
        cfg = self.config
        grasped_now = self._task.held() and not self._held_at_trigger
        if progress > self._best_before_trigger + float(cfg.progress_threshold) or grasped_now:
            self._progressed = True
        if self._control_steps >= int(cfg.max_control_steps):
            return "cap"
        if self._control_steps < int(cfg.min_control_steps) or self._phase != _PHASE_EXPERT:
            return ""
        if cfg.handback_on_progress and progress > self._best_before_trigger + float(cfg.handback_margin):
            return "progress"
        if cfg.handback_on_subgoal and grasped_now:
            return "subgoal"
        return ""

    def step(self, action):
        cfg = self.config
        policy_action = np.asarray(action, np.float32)
        if policy_action.shape != (7,):
            raise ValueError(f"action must have shape (7,), got {policy_action.shape}")
        if self._phase == _PHASE_REACTING:
            if self._react_left <= 0:
                self._begin_takeover()
            else:
                self._react_left -= 1
        controlled = self.in_control
        if controlled:
            executed = self._action()
            self._control_steps += 1
            obs, reward, terminated, truncated, info = self.env.step(executed)
            info["intervene_action"] = executed
        else:
            obs, reward, terminated, truncated, info = self.env.step(policy_action)
        self._t += 1
        progress = float(info.get("dense_reward", 0.0))
        if progress > self._best + float(cfg.progress_threshold):
            self._best, self._last_improve = progress, self._t
        stalled = self._t - self._last_improve >= self.stall_window
        if not (terminated or truncated):
            if controlled:
                reason = self._handback_due(progress)
                if reason:
                    self._hand_back(progress, reason)
                elif cfg.retry_on_stall and self._phase == _PHASE_EXPERT and stalled:
                    self._retries += 1
                    self._last_improve = self._t
                    self._start_retract()
            elif self._phase == _PHASE_ROBOT and cfg.enabled:
                in_cooldown = self._cooldown > 0
                if in_cooldown:
                    self._cooldown -= 1
                if self._takeovers < int(cfg.max_takeovers) and not self._gave_up:
                    reason = self._danger()
                    if not reason and cfg.use_stall and stalled and not in_cooldown:
                        reason = "stall"
                    if reason:
                        self._trigger = reason
                        self._best_before_trigger = self._best
                        self._held_at_trigger = self._task.held()
                        self._progressed = False
                        self._phase = _PHASE_REACTING
                        self._react_left = int(cfg.reaction_delay)
        self._add_info(info, controlled)
        return obs, reward, terminated, truncated, info

    def _hand_back(self, progress: float, reason: str) -> None:
        self._phase = _PHASE_ROBOT
        if reason == "cap" and not self._progressed and self.config.give_up_after_failed_takeover:
            reason, self._gave_up = "gave_up", True
        self._handback = reason
        self._cooldown = int(self.config.cooldown_steps)
        self._retract_left = self._hesitate_left = 0
        self._best, self._last_improve = float(progress), self._t


def expert_policy(noise: float = 0.0, rng: Optional[np.random.Generator] = None):
    """The simulated task's scripted expert as a ``serl_ext.loop.rollouts`` policy
    ``policy(obs, env) -> float32 (7,)`` (the env's ``URSimTask`` layer, fresh each episode),
    plus Gaussian noise ``noise`` on every dimension, clipped to [-1, 1]."""
    rng = rng or np.random.default_rng(0)

    def policy(obs, env):
        del obs
        action = find_sim_task(env).expert_action()
        if noise > 0:
            action = action + rng.normal(0.0, noise, size=action.shape).astype(np.float32)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return policy


# ----------------------------------------------------------------------------- the builder
def make_ur_env(task: str, seed: int = 0, *, robot: Optional[ConfigDict] = None, action_repeat: int = 1,
                max_episode_steps: Optional[int] = None, reward_type: str = "sparse",
                terminate_on_success: bool = True, image_obs: bool = False, image_size: int = 64,
                camera: str = "corner", state_obs: Optional[str] = None, operator: Any = None,
                grasp_penalty: float = -0.02, operator_wrapper: Any = None) -> gym.Env:
    """Builds a UR task (module docstring) with the arguments of
    :func:`serl_ext.envs.metaworld_env.make_env`.

    Args:
        task: ``ur5e-sim-lift``, ``ur5e-sim-wipe`` or ``ur:ROBOT_CONFIG``.
        seed: the simulator's first seed (each ``reset(seed=s)`` reseeds the scene from ``s``);
            unused on a real arm.
        robot: the robot config (``config.robot``); None: :func:`robot_config_for` ``(task)``.
            Not modified (a copy gets ``max_episode_steps``).
        action_repeat: must be 1 (the arm's policy loop runs at ``robot.control.policy_hz``).
        max_episode_steps: agent steps per episode; None: ``robot.max_episode_steps``.
        reward_type: must be ``"sparse"`` (1 on success, then the episode ends).
        terminate_on_success: must be True.
        image_obs, state_obs: must be False / None or ``"full"``: cameras are
            ``robot.cameras`` entries (``backend="robosuite"`` on the simulated arm).
        operator: the simulated operator's config (simulated tasks; not added when its
            ``enabled`` is False); must be None or disabled on a real arm.
        image_size, camera, grasp_penalty, operator_wrapper: unused (the gripper penalty is
            ``robot.action.grasp_penalty``).
    Returns:
        ``EpisodeStatistics([URSimOperator](URSimTask(UREnv)))`` (simulated) or
        ``EpisodeStatistics(UREnv)`` (real arm); dict observations, Box(-1, 1, (7,)) actions.
    Raises:
        ValueError: an unknown task or robot config, or an option this task kind does not
            have (the message says which). ImportError: robosuite (simulated) or ur_rtde (real
            arm) missing, with the install command.
    """
    from serl_ext.envs import wrappers

    del image_size, camera, grasp_penalty, operator_wrapper
    if not is_ur_task(task):
        raise ValueError(f"{task!r} is not a UR task; expected one of {sorted(SIM_TASKS)} or "
                         f"'{UR_PREFIX}ROBOT_CONFIG'")
    if int(action_repeat) != 1:
        raise ValueError(f"{task}: env.action_repeat must be 1 (the arm's policy loop runs at "
                         f"robot.control.policy_hz), got {action_repeat}")
    if reward_type != "sparse" or not terminate_on_success:
        raise ValueError(f"{task}: only env.reward_type='sparse' with termination on success is "
                         f"available (got {reward_type!r}, terminate_on_success={terminate_on_success})")
    if image_obs:
        raise ValueError(f"{task}: env.image_obs renders Meta-World scenes; add cameras to "
                         "config.robot.cameras instead (backend 'robosuite' on the simulated arm)")
    if state_obs not in (None, "full"):
        raise ValueError(f"{task}: env.state_obs={state_obs!r} is Meta-World's; the arm's state is "
                         "UREnv's (plus the task's privileged state in simulation)")
    robot = robot_config_for(task) if robot is None else copy.deepcopy(robot)
    if max_episode_steps is not None:
        if not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be an int >= 1 or None, got {max_episode_steps!r}")
        robot.max_episode_steps = int(max_episode_steps)
    operator_on = operator is not None and bool(operator.get("enabled", True))
    if is_ur_real_task(task):
        if operator_on:
            raise ValueError(f"{task}: the simulated operator needs a simulated task; on a real arm "
                             "take over with --config.human_input=spacemouse (or keyboard)")
        from serl_ext.robots.ur import UREnv

        return wrappers.EpisodeStatistics(UREnv(robot))
    from serl_ext.envs.robosuite_env import make_robosuite_ur_env

    spec = SIM_TASKS[task]
    env: gym.Env = URSimTask(make_robosuite_ur_env(spec.robosuite_task, seed=int(seed), config=robot), spec)
    if operator_on:
        env = URSimOperator(env, operator)
    return wrappers.EpisodeStatistics(env)


def measure_expert(task: str, seeds, threshold: float = 0.05) -> dict:
    """Runs the scripted expert of a simulated task on ``seeds`` and measures its longest
    stretch of steps without progress (> ``threshold`` over the running best), the input of
    the stall window (``SIM_TASKS``).

    Returns:
        ``{"task", "episodes", "success_rate", "mean_steps_success", "max_flat_success",
        "stall_window", "per_seed"}``.
    """
    from serl_ext.envs.tasks import stall_window_from_flat

    env = make_ur_env(task, seed=0)
    rows = []
    try:
        for seed in seeds:
            _, info = env.reset(seed=int(seed))
            best, last, flat, steps, success = float(info["dense_reward"]), 0, 0, 0, False
            done = False
            while not done:
                _, _, terminated, truncated, info = env.step(find_sim_task(env).expert_action())
                steps += 1
                if info["dense_reward"] > best + threshold:
                    best, last = float(info["dense_reward"]), steps
                flat = max(flat, steps - last)
                success = success or bool(info["success"])
                done = terminated or truncated
            rows.append({"seed": int(seed), "success": success, "steps": steps, "max_flat": flat})
    finally:
        env.close()
    wins = [r for r in rows if r["success"]]
    max_flat = max((r["max_flat"] for r in wins), default=0)
    return {"task": task, "episodes": len(rows), "success_rate": len(wins) / max(len(rows), 1),
            "mean_steps_success": float(np.mean([r["steps"] for r in wins])) if wins else float("nan"),
            "max_flat_success": int(max_flat), "stall_window": stall_window_from_flat(max_flat),
            "per_seed": rows}


def main(argv=None) -> int:
    """``python -m serl_ext.envs.ur_tasks --task=ur5e-sim-lift --seeds=20``: the expert's
    success and longest flat stretch (the stall window's input)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--task", default="ur5e-sim-lift", choices=sorted(SIM_TASKS))
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args(argv)
    from serl_ext.envs import ur_tasks  # the package's copy of this module (run as __main__)

    result = ur_tasks.measure_expert(args.task, range(args.seeds))
    print(json.dumps({k: v for k, v in result.items() if k != "per_seed"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
