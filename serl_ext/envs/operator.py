"""A simulated human operator that takes over like HiL-SERL's SpaceMouse intervention.

``SimulatedOperator`` wraps a simulated task (built on ``MetaWorldEnv``). In
every ``step(action)`` it decides whether it is in control. If it is, it
executes its own action and reports it as ``info["intervene_action"]``
(float32 (4,)), exactly like ``SpaceMouseIntervention`` reports a person's
input; otherwise the policy's action is executed unchanged and the key is
absent. All its decisions use privileged simulator state (the raw Meta-World
obs and dense reward) but nothing of that is added to the observation.

Behaviour (DESIGN.md section 6; all counts are agent steps):

* Its own action: the scripted Meta-World expert's action plus Gaussian
  noise (sigma 0.05), clipped to [-1, 1].
* Trigger (only while the policy is in control, not in cooldown, and fewer
  than ``max_takeovers`` takeovers this episode):
  (a) disagreement: mean over the last 10 steps of ``mean_i |a_policy_i -
  a_expert_i|`` > 0.5; or (b) stall: the dense reward has not exceeded its
  running best by more than 0.05 for ``W`` steps (``W`` per task, about 1.5x
  the expert's own longest flat stretch, see ``serl_ext.envs.tasks``).
* Reaction delay: a trigger noticed after step ``t`` gives control from step
  ``t + 1 + reaction_delay`` on; the policy acts meanwhile.
* Retract: unless the object is held (gripper closed and hand within
  ``held_distance`` of the object), the first 8-15 controlled steps lift the
  hand and open the gripper; then the expert acts.
* Hand back after at least ``min_control_steps`` controlled steps, once the
  dense reward improved (by more than 0.05) since the expert phase of this
  takeover began (after the retract) AND the policy's proposals agreed
  with the expert (per-step max abs difference <= ``handback_agree_threshold``)
  for the last ``handback_agree_steps`` steps; or after ``max_control_steps``.
* Retry: if the operator itself makes no progress for ``W`` steps while in
  control (its noisy expert missed a grasp, say), it retracts again (lift,
  open) and retries, like a person would (``retry_on_stall``).
* Cooldown: no new trigger during ``cooldown_steps`` steps after hand-back; the
  stall timer restarts at hand-back.

Deterministic given the episode seed (noise and retract lengths come from a
``np.random.Generator`` seeded with ``[episode_seed, seed_salt]``).
"""

from __future__ import annotations

import collections
from typing import Any, Optional

import gymnasium as gym
import numpy as np
from ml_collections import ConfigDict

from serl_ext.envs.metaworld_env import get_base_env, get_privileged_state
from serl_ext.envs.tasks import get_expert, scale_steps

PHASE_ROBOT = "robot"
PHASE_REACTING = "reacting"
PHASE_RETRACT = "retract"
PHASE_EXPERT = "expert"
_CONTROL_PHASES = (PHASE_RETRACT, PHASE_EXPERT)


def get_default_operator_config() -> ConfigDict:
    """Default simulated-operator parameters (DESIGN.md section 6).

    Fields (steps are agent steps):
        enabled: False = the operator never takes over (``make_env`` then
            adds no operator at all).
        noise_std: std of Gaussian noise added to the expert action (0.05).
        use_disagreement: enable trigger (a).
        disagreement_window: steps averaged for trigger (a) (10).
        disagreement_threshold: trigger (a) fires when the window mean of
            ``mean_i |a_policy_i - a_expert_i|`` exceeds this (0.5).
        use_stall: enable trigger (b).
        stall_window: W for trigger (b); None = the task's default
            (``TaskSpec.stall_window`` at action repeat 4, scaled to the env's).
        progress_threshold: dense-reward improvement (Meta-World's [0, 10]
            scale) over the running best that counts as progress (0.05).
        reaction_delay: steps between noticing a trigger and acting (3).
        retract_min_steps, retract_max_steps: retract length, drawn uniformly
            in [min, max] per takeover (8, 15).
        retract_lift: z action during retract (+1 = up at full speed) (0.5).
        held_gripper_max: the object counts as held when the gripper opening
            (raw obs[3], 1 = open) is below this ... (0.8)
        held_distance: ... and the hand is within this many metres of the
            object (raw obs[4:7]) (0.08). Held -> no retract.
        min_control_steps: least steps in control before an early hand-back (10).
        handback_agree_steps: consecutive steps of agreement needed (10).
        handback_agree_threshold: a step counts as agreement when
            ``max_i |a_policy_i - a_expert_i| <= this`` (0.5). The max (not the
            mean) so that a policy that idles while the expert holds still but
            grips (gripper dim differs by ~1) does not count as agreeing.
        max_control_steps: hand back after this many steps at most (150).
        cooldown_steps: steps after hand-back without a new trigger (10).
        max_takeovers: takeovers per episode at most (3).
        retry_on_stall: while in control and stalled for W steps, retract
            (regardless of holding) and retry (True).
        seed_salt: mixed with the episode seed for the operator's generator.
    """
    return ConfigDict({
        "enabled": True,
        "noise_std": 0.05,
        "use_disagreement": True,
        "disagreement_window": 10,
        "disagreement_threshold": 0.5,
        "use_stall": True,
        "stall_window": None,
        "progress_threshold": 0.05,
        "reaction_delay": 3,
        "retract_min_steps": 8,
        "retract_max_steps": 15,
        "retract_lift": 0.5,
        "held_gripper_max": 0.8,
        "held_distance": 0.08,
        "min_control_steps": 10,
        "handback_agree_steps": 10,
        "handback_agree_threshold": 0.5,
        "max_control_steps": 150,
        "cooldown_steps": 10,
        "max_takeovers": 3,
        "retry_on_stall": True,
        "seed_salt": 7919,
    })


def _resolve_config(config: Any) -> ConfigDict:
    cfg = get_default_operator_config()
    if config is None:
        return cfg
    if isinstance(config, ConfigDict):
        items = config.to_dict().items()
    elif isinstance(config, dict):
        items = config.items()
    else:
        raise TypeError(f"operator config must be a ConfigDict, dict or None, "
                        f"got {type(config).__name__}")
    for key, value in items:
        if key not in cfg:
            raise ValueError(f"unknown operator config field {key!r}; known: {sorted(cfg)}")
        with cfg.ignore_type():
            cfg[key] = value
    ints = ("disagreement_window", "reaction_delay", "retract_min_steps", "retract_max_steps",
            "min_control_steps", "handback_agree_steps", "max_control_steps",
            "cooldown_steps", "max_takeovers", "seed_salt")
    for key in ints:
        if not isinstance(cfg[key], (int, np.integer)) or isinstance(cfg[key], bool) or cfg[key] < 0:
            raise ValueError(f"operator config {key} must be an int >= 0, got {cfg[key]!r}")
    if cfg.disagreement_window < 1 or cfg.handback_agree_steps < 1 or cfg.max_control_steps < 1:
        raise ValueError("disagreement_window, handback_agree_steps and max_control_steps "
                         "must be >= 1")
    if cfg.retract_min_steps > cfg.retract_max_steps:
        raise ValueError(f"retract_min_steps ({cfg.retract_min_steps}) must be <= "
                         f"retract_max_steps ({cfg.retract_max_steps})")
    if cfg.stall_window is not None and (not isinstance(cfg.stall_window, (int, np.integer))
                                         or cfg.stall_window < 1):
        raise ValueError(f"stall_window must be None or an int >= 1, got {cfg.stall_window!r}")
    for key in ("noise_std", "disagreement_threshold", "progress_threshold",
                "handback_agree_threshold", "held_distance"):
        if float(cfg[key]) < 0:
            raise ValueError(f"operator config {key} must be >= 0, got {cfg[key]!r}")
    return cfg


def is_object_held(raw_obs: np.ndarray, gripper_max: float = 0.8,
                   distance: float = 0.08) -> bool:
    """Whether the gripper holds the task object, from the raw Meta-World obs (39,).

    Held = gripper opening ``raw_obs[3] < gripper_max`` and
    ``||hand (0:3) - object (4:7)|| < distance`` metres.
    """
    raw_obs = np.asarray(raw_obs)
    return bool(raw_obs[3] < gripper_max
                and np.linalg.norm(raw_obs[0:3] - raw_obs[4:7]) < distance)


class SimulatedOperator(gym.Wrapper):
    """Simulated human that takes over from the policy (see module docstring).

    Args:
        env: an env built on ``MetaWorldEnv`` (usually from ``make_env``
            without operator; place it inside ``GripperPenalty`` and
            ``EpisodeStatistics`` so they see the executed action).
        config: None, ConfigDict or dict of overrides of
            ``get_default_operator_config()``.

    ``step`` info keys added: ``intervene_action`` (float32 (4,), only on
    controlled steps), ``operator/in_control`` (bool, this step),
    ``operator/phase`` (phase after this step: robot, reacting, retract,
    expert), ``operator/takeovers`` (int, this episode),
    ``operator/trigger`` (str, reason of the latest trigger: ``""``,
    ``"disagreement"`` or ``"stall"``), ``operator/retries`` (int, retries
    this episode), ``operator/steps_since_progress`` (int).

    Raises:
        TypeError: if ``env`` is not built on ``MetaWorldEnv``.
        ValueError: bad config or action shape.
    """

    def __init__(self, env: gym.Env, config: Any = None):
        super().__init__(env)
        self.config = _resolve_config(config)
        base = get_base_env(env)
        self._base = base
        self._expert = get_expert(base.task_name)
        if self.config.stall_window is None:
            self.stall_window = scale_steps(base.spec_task.stall_window, base.action_repeat)
        else:
            self.stall_window = int(self.config.stall_window)
        self._rng = np.random.default_rng(self.config.seed_salt)
        self._clear(dense_reward=0.0)

    # ---------------------------------------------------------------- state
    def _clear(self, dense_reward: float) -> None:
        self._phase = PHASE_ROBOT
        self._t = 0
        self._best = float(dense_reward)
        self._last_improve = 0
        self._react_left = 0
        self._retract_left = 0
        self._control_steps = 0
        self._agree_streak = 0
        self._best_at_takeover = self._best
        self._cooldown = 0
        self._takeovers = 0
        self._trigger = ""
        self._retries = 0
        self._expert_baseline_pending = False
        self._disagree: collections.deque = collections.deque(
            maxlen=int(self.config.disagreement_window))

    @property
    def in_control(self) -> bool:
        """Whether the operator is in its retract or expert phase (it acts on the next step)."""
        return self._phase in _CONTROL_PHASES

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def takeovers(self) -> int:
        return self._takeovers

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._rng = np.random.default_rng([int(self._base.episode_seed),
                                           int(self.config.seed_salt)])
        self._clear(dense_reward=float(info.get("dense_reward", 0.0)))
        info["operator/in_control"] = False
        info["operator/phase"] = self._phase
        info["operator/takeovers"] = 0
        info["operator/trigger"] = ""
        info["operator/retries"] = 0
        info["operator/steps_since_progress"] = 0
        return obs, info

    # ----------------------------------------------------------------- step
    def _begin_takeover(self, raw_obs: np.ndarray) -> None:
        cfg = self.config
        self._takeovers += 1
        self._control_steps = 0
        self._agree_streak = 0
        self._best_at_takeover = self._best
        held = is_object_held(raw_obs, cfg.held_gripper_max, cfg.held_distance)
        self._start_retract(0 if held else None)

    def _start_retract(self, length: Optional[int] = None) -> None:
        cfg = self.config
        if length is None:
            length = int(self._rng.integers(cfg.retract_min_steps, cfg.retract_max_steps + 1))
        self._retract_left = int(length)
        self._phase = PHASE_RETRACT if self._retract_left > 0 else PHASE_EXPERT
        # Progress is measured from the state where the expert phase starts
        # (set after the first step of that phase, see step()).
        self._expert_baseline_pending = True

    def _operator_action(self, expert_action: np.ndarray) -> np.ndarray:
        cfg = self.config
        if self._retract_left > 0:
            self._retract_left -= 1
            base = np.array([0.0, 0.0, cfg.retract_lift, -1.0], dtype=np.float64)
            if self._retract_left == 0:
                self._phase = PHASE_EXPERT
        else:
            base = expert_action.astype(np.float64)
        noise = self._rng.normal(0.0, cfg.noise_std, size=base.shape) if cfg.noise_std > 0 else 0.0
        return np.clip(base + noise, -1.0, 1.0).astype(np.float32)

    def step(self, action):
        cfg = self.config
        policy_action = np.asarray(action, dtype=np.float32)
        if policy_action.shape != (4,):
            raise ValueError(f"action must have shape (4,), got {policy_action.shape}")
        raw = get_privileged_state(self.env)
        expert_action = self._expert(raw)
        diff = np.abs(np.clip(policy_action, -1.0, 1.0) - expert_action)
        gap = float(np.mean(diff))
        self._disagree.append(gap)

        if self._phase == PHASE_REACTING:
            if self._react_left <= 0:
                self._begin_takeover(raw)
            else:
                self._react_left -= 1

        controlled = self._phase in _CONTROL_PHASES
        if controlled:
            executed = self._operator_action(expert_action)
            self._control_steps += 1
            agrees = float(np.max(diff)) <= cfg.handback_agree_threshold
            self._agree_streak = self._agree_streak + 1 if agrees else 0
            obs, reward, terminated, truncated, info = self.env.step(executed)
            info["intervene_action"] = executed
        else:
            obs, reward, terminated, truncated, info = self.env.step(action)

        self._t += 1
        dense = float(info.get("dense_reward", reward))
        if dense > self._best + cfg.progress_threshold:
            self._best = dense
            self._last_improve = self._t
        steps_since_progress = self._t - self._last_improve

        if controlled and self._phase == PHASE_EXPERT and self._expert_baseline_pending:
            self._expert_baseline_pending = False
            self._best = self._best_at_takeover = dense
            self._last_improve = self._t
            steps_since_progress = 0

        if not (terminated or truncated):
            if controlled:
                progressed = self._best > self._best_at_takeover
                agreed = self._agree_streak >= cfg.handback_agree_steps
                if (self._control_steps >= cfg.max_control_steps
                        or (self._control_steps >= cfg.min_control_steps
                            and progressed and agreed)):
                    self._hand_back(dense)
                elif (cfg.retry_on_stall and self._phase == PHASE_EXPERT
                      and steps_since_progress >= self.stall_window):
                    self._retries += 1
                    self._last_improve = self._t  # give the retry a full window
                    self._start_retract()
            elif self._phase == PHASE_ROBOT and cfg.enabled:
                if self._cooldown > 0:
                    self._cooldown -= 1
                elif self._takeovers < cfg.max_takeovers:
                    reason = ""
                    if (cfg.use_disagreement and len(self._disagree) == self._disagree.maxlen
                            and float(np.mean(self._disagree)) > cfg.disagreement_threshold):
                        reason = "disagreement"
                    elif cfg.use_stall and steps_since_progress >= self.stall_window:
                        reason = "stall"
                    if reason:
                        self._trigger = reason
                        self._phase = PHASE_REACTING
                        self._react_left = int(cfg.reaction_delay)

        info["operator/in_control"] = controlled
        info["operator/phase"] = self._phase
        info["operator/takeovers"] = self._takeovers
        info["operator/trigger"] = self._trigger
        info["operator/retries"] = self._retries
        info["operator/steps_since_progress"] = self._t - self._last_improve
        return obs, reward, terminated, truncated, info

    def _hand_back(self, dense_reward: float) -> None:
        self._phase = PHASE_ROBOT
        self._cooldown = int(self.config.cooldown_steps)
        self._retract_left = 0
        # Restart progress tracking from the state handed back.
        self._best = float(dense_reward)
        self._last_improve = self._t
        self._disagree.clear()
