"""A simulated human operator that takes over like a person at HiL-SERL's SpaceMouse.

``SimulatedOperator`` wraps a simulated task (built on ``MetaWorldEnv``). In
every ``step(action)`` it decides whether it is in control. If it is, it
executes its own action and reports it as ``info["intervene_action"]``
(float32 (4,)), exactly like ``SpaceMouseIntervention`` reports a person's
input; otherwise the policy's action is executed unchanged and the key is
absent. Its decisions use privileged simulator state (the raw Meta-World obs,
the dense reward and Meta-World's own subgoal flags) but nothing of that is
added to the observation.

It stands in for the person of the UniIntervene paper, who "takes over,
recovers the robot to a useful state, and releases control back to the
learning policy" (DESIGN.md section 6). Default behaviour (all counts are
agent steps; every number is a field of ``get_default_operator_config``):

* **Progress** is Meta-World's dense shaped reward (range [0, 10]): a step
  makes progress when it beats the running best by more than
  ``progress_threshold``.
* **Triggers** (only while the policy is in control, fewer than
  ``max_takeovers`` takeovers this episode, not in cooldown):
  (a) *stall*: no progress for ``W`` steps (``W`` per task, about 1.5x the
  scripted expert's own longest flat stretch, ``serl_ext.envs.tasks``);
  (b) *danger*, what a person sees at once (it ignores the cooldown): the
  hand leaves the episode's workspace box (the box around the hand's start,
  the object and the goal, widened by ``workspace_margin`` and
  ``workspace_height`` above), or the object is knocked away (its distance to
  the goal grows by more than ``knocked_away_distance`` over its distance at
  reset, or it falls off the table, ``fall_distance`` below the table top).
  The disagreement trigger of the first operator (mean |robot - expert|
  over a window) is an option (``use_disagreement``), off by default: a
  person does not know the expert's action.
* **Reaction delay**: a trigger noticed after step ``t`` gives control from
  step ``t + 1 + reaction_delay`` on; the policy acts meanwhile.
* **Its own action**: the scripted Meta-World expert's action plus Gaussian
  noise (``noise_std``), clipped to [-1, 1]. Optional *hesitation* at the
  start of each takeover (``hesitation_steps``, off by default): the
  expert's action scaled by ``hesitation_action_scale`` with noise
  ``hesitation_noise_std``, the slow, noisy first steps of a teleoperator
  who adapts. Unless the object is held, a short *retract* (lift the hand,
  open the gripper; ``retract_min_steps``-``retract_max_steps``) comes first,
  getting the robot out of the configuration it got stuck in.
* **Hand-back** (``handback="progress"``), as soon as the robot is past the
  point where it got stuck: after at least ``min_control_steps`` steps, once
  the dense reward beats the best from before the trigger by
  ``handback_margin``, or a subgoal that was not reached at the trigger is
  reached (Meta-World's ``grasp_success``: object grasped / in contact), or
  at the latest after ``max_control_steps`` steps. The first operator's rule
  (progress since the expert phase began *and* ``handback_agree_steps``
  steps on which the robot's proposals agree with the expert) is the option
  ``handback="agreement"``.
* **Retry**: if the operator itself makes no progress for ``W`` steps while
  in control (its noisy expert missed a grasp, say), it retracts and retries
  (``retry_on_stall``).
* **Give up**: a takeover that hits the cap without ever getting past the best
  from before its trigger ends the operator's help for the rest of the episode
  (``give_up_after_failed_takeover``): its own expert cannot rescue that state.
* **Cooldown**: no new stall trigger during ``cooldown_steps`` steps after
  hand-back; the stall timer restarts at hand-back, from the state handed
  back.

``legacy_operator_overrides()`` gives the first operator's rules (DESIGN.md
section 6, "History"). Deterministic given the episode seed (noise and
retract lengths come from a ``np.random.Generator`` seeded with
``[episode_seed, seed_salt]``).
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
PHASE_HESITATE = "hesitate"
PHASE_RETRACT = "retract"
PHASE_EXPERT = "expert"
_CONTROL_PHASES = (PHASE_HESITATE, PHASE_RETRACT, PHASE_EXPERT)
HANDBACK_RULES = ("progress", "agreement")


def get_default_operator_config() -> ConfigDict:
    """Default simulated-operator parameters (DESIGN.md section 6; module docstring).

    Fields (steps are agent steps; dense-reward values on Meta-World's [0, 10] scale):
        enabled: False = the operator never takes over (``make_env`` then
            adds no operator at all).
        noise_std: std of Gaussian noise added to the expert action (0.05).
        use_stall: enable the stall trigger.
        stall_window: W; None = the task's default (``TaskSpec.stall_window``
            at action repeat 4, scaled to the env's).
        progress_threshold: dense-reward improvement over the running best
            that counts as progress (0.05).
        use_danger: enable the danger trigger (hand out of the workspace box,
            object knocked away or fallen).
        workspace_margin: metres added on x, y around the box spanned by the
            hand's start, the object's start and the goal (0.25).
        workspace_height: metres above the highest of those three points the
            hand may rise (0.25); no lower bound (the table is one).
        knocked_away_distance: the object counts as knocked away when its
            distance to the goal exceeds its distance at reset by this many
            metres (0.15).
        fall_distance: ... or when it is this many metres below the table
            top (z = 0), i.e. off the table (0.05).
        use_disagreement: enable the first operator's disagreement trigger
            (False).
        disagreement_window, disagreement_threshold: it fires when the mean
            over the last ``disagreement_window`` steps of
            ``mean_i |a_policy_i - a_expert_i|`` exceeds the threshold (10, 0.5).
        reaction_delay: steps between noticing a trigger and acting (3).
        hesitation_steps: steps of hesitation at the start of each takeover
            (0 = off).
        hesitation_action_scale: the expert action is scaled by this while
            hesitating (0.5).
        hesitation_noise_std: noise std while hesitating (0.3).
        retract_min_steps, retract_max_steps: retract length, drawn uniformly
            in [min, max] per takeover (4, 8); no retract when the object is held.
        retract_lift: z action during retract (+1 = up at full speed) (0.5).
        held_gripper_max: the object counts as held when the gripper opening
            (raw obs[3], 1 = open) is below this ... (0.8)
        held_distance: ... and the hand is within this many metres of the
            object (raw obs[4:7]) (0.08).
        handback: ``"progress"`` (default: past the stall point) or
            ``"agreement"`` (the first operator's rule).
        handback_margin: "progress" hands back once the dense reward beats the
            best from before the trigger by this much (1.0) ...
        handback_on_progress: ... if True; False: never on progress alone, only on
            the subgoal or at ``max_control_steps`` (True) ...
        handback_on_subgoal: ... or once Meta-World's ``grasp_success`` turns
            true when it was false at the trigger (True).
        min_control_steps: least steps in control before a hand-back (5).
        handback_agree_steps: "agreement": consecutive agreeing steps needed (10).
        handback_agree_threshold: "agreement": a step agrees when
            ``max_i |a_policy_i - a_expert_i| <= this`` (0.5).
        max_control_steps: hand back after this many steps at most (35).
        cooldown_steps: steps after hand-back without a new stall trigger (10).
        max_takeovers: takeovers per episode at most (5).
        give_up_after_failed_takeover: a takeover that reaches ``max_control_steps``
            without ever beating the best from before its trigger (and without a new
            subgoal) ends the operator's help for the episode: its own expert cannot get
            the robot unstuck from there, as in the ~5-12% of layouts where the scripted
            expert fails (True).
        retry_on_stall: while in control and stalled for W steps, retract
            (regardless of holding) and retry (True).
        seed_salt: mixed with the episode seed for the operator's generator.
    """
    return ConfigDict({
        "enabled": True,
        "noise_std": 0.05,
        "use_stall": True,
        "stall_window": None,
        "progress_threshold": 0.05,
        "use_danger": True,
        "workspace_margin": 0.25,
        "workspace_height": 0.25,
        "knocked_away_distance": 0.15,
        "fall_distance": 0.05,
        "use_disagreement": False,
        "disagreement_window": 10,
        "disagreement_threshold": 0.5,
        "reaction_delay": 3,
        "hesitation_steps": 0,
        "hesitation_action_scale": 0.5,
        "hesitation_noise_std": 0.3,
        "retract_min_steps": 4,
        "retract_max_steps": 8,
        "retract_lift": 0.5,
        "held_gripper_max": 0.8,
        "held_distance": 0.08,
        "handback": "progress",
        "handback_margin": 1.0,
        "handback_on_progress": True,
        "handback_on_subgoal": True,
        "min_control_steps": 5,
        "handback_agree_steps": 10,
        "handback_agree_threshold": 0.5,
        "max_control_steps": 35,
        "cooldown_steps": 10,
        "max_takeovers": 5,
        "give_up_after_failed_takeover": True,
        "retry_on_stall": True,
        "seed_salt": 7919,
    })


def legacy_operator_overrides() -> dict:
    """Overrides that restore the first operator's rules (before 2026-12-01).

    Disagreement trigger on, no danger trigger, retract 8-15 steps, hand-back
    only after progress *and* 10 agreeing steps (at least 10, at most 150
    steps in control), at most 3 takeovers. DESIGN.md section 6 ("History")
    says why they are no longer the default: a zero or random policy got the
    same IR as HiL-SERL.
    """
    return {"use_disagreement": True, "use_danger": False, "retract_min_steps": 8,
            "retract_max_steps": 15, "handback": "agreement", "min_control_steps": 10,
            "max_control_steps": 150, "max_takeovers": 3, "give_up_after_failed_takeover": False}


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
    bools = [k for k, v in cfg.items() if isinstance(v, bool)]  # the default's True/False fields
    for key, value in items:
        if key not in cfg:
            raise ValueError(f"unknown operator config field {key!r}; known: {sorted(cfg)}")
        with cfg.ignore_type():
            cfg[key] = value
    ints = ("disagreement_window", "reaction_delay", "hesitation_steps", "retract_min_steps",
            "retract_max_steps", "min_control_steps", "handback_agree_steps",
            "max_control_steps", "cooldown_steps", "max_takeovers", "seed_salt")
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
    for key in bools:
        if not isinstance(cfg[key], (bool, np.bool_)):
            raise ValueError(f"operator config {key} must be True or False, got {cfg[key]!r}")
    if cfg.handback not in HANDBACK_RULES:
        raise ValueError(f"operator handback must be one of {HANDBACK_RULES}, "
                         f"got {cfg.handback!r}")
    for key in ("noise_std", "disagreement_threshold", "progress_threshold",
                "handback_agree_threshold", "held_distance", "workspace_margin",
                "workspace_height", "knocked_away_distance", "fall_distance",
                "handback_margin", "hesitation_action_scale", "hesitation_noise_std"):
        value = float(cfg[key])
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"operator config {key} must be finite and >= 0, got {cfg[key]!r}")
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


def danger_reason(raw_obs: np.ndarray, start_obs: np.ndarray, *, margin: float = 0.25,
                  height: float = 0.25, knocked_away: float = 0.15,
                  fall: float = 0.05) -> str:
    """What a person would see as danger in the current state, or ``""``.

    Args:
        raw_obs: raw Meta-World obs (39,) now (hand 0:3, object 4:7, goal 36:39; metres).
        start_obs: raw obs (39,) at reset.
        margin, height, knocked_away, fall: see ``get_default_operator_config``
            (``workspace_margin``, ``workspace_height``, ``knocked_away_distance``,
            ``fall_distance``).

    Returns:
        ``"workspace"`` (hand outside the box spanned by the start hand,
        start object and goal, widened by ``margin`` on x, y and raised by
        ``height`` in z), ``"knocked_away"`` (object farther from the goal than
        at reset by more than ``knocked_away``), ``"fallen"`` (object more
        than ``fall`` below the table top z = 0: off the table) or ``""``.
        (Object heights at reset are not settled: a box-close lid starts
        8 cm above where it comes to rest, so falls are measured against
        the table, not the start height.)
    """
    raw_obs, start_obs = np.asarray(raw_obs), np.asarray(start_obs)
    points = np.stack([start_obs[0:3], start_obs[4:7], start_obs[36:39]])
    low, high = points.min(axis=0), points.max(axis=0)
    hand = raw_obs[0:3]
    if (np.any(hand[:2] < low[:2] - margin) or np.any(hand[:2] > high[:2] + margin)
            or hand[2] > high[2] + height):
        return "workspace"
    goal = start_obs[36:39]
    if (np.linalg.norm(raw_obs[4:7] - goal)
            > np.linalg.norm(start_obs[4:7] - goal) + knocked_away):
        return "knocked_away"
    if raw_obs[6] < -fall:
        return "fallen"
    return ""


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
    ``operator/phase`` (phase after this step: robot, reacting, hesitate,
    retract, expert), ``operator/takeovers`` (int, this episode),
    ``operator/trigger`` (str, reason of the latest trigger: ``""``,
    ``"stall"``, ``"workspace"``, ``"knocked_away"``, ``"fallen"`` or
    ``"disagreement"``), ``operator/handback`` (str, reason of the latest
    hand-back: ``""``, ``"progress"``, ``"subgoal"``, ``"agreement"``, ``"cap"`` or
    ``"gave_up"``: the cap without progress, no more takeovers this episode), ``operator/retries`` (int, retries this episode),
    ``operator/steps_since_progress`` (int).

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
        self._start_obs = np.zeros(39)
        self._clear(dense_reward=0.0)

    # ---------------------------------------------------------------- state
    def _clear(self, dense_reward: float) -> None:
        self._phase = PHASE_ROBOT
        self._t = 0
        self._best = float(dense_reward)
        self._last_improve = 0
        self._react_left = 0
        self._hesitate_left = 0
        self._retract_left = 0
        self._control_steps = 0
        self._agree_streak = 0
        self._best_at_takeover = self._best
        self._best_before_trigger = self._best
        self._subgoal_at_trigger = False
        self._takeover_progressed = False
        self._gave_up = False
        self._cooldown = 0
        self._takeovers = 0
        self._trigger = ""
        self._handback_reason = ""
        self._retries = 0
        self._expert_baseline_pending = False
        self._disagree: collections.deque = collections.deque(
            maxlen=int(self.config.disagreement_window))

    @property
    def in_control(self) -> bool:
        """Whether the operator is in a control phase (it acts on the next step)."""
        return self._phase in _CONTROL_PHASES

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def takeovers(self) -> int:
        return self._takeovers

    def _subgoal(self) -> bool:
        return bool(self._base.task_info.get("grasp_success", 0.0))

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._rng = np.random.default_rng([int(self._base.episode_seed),
                                           int(self.config.seed_salt)])
        self._start_obs = get_privileged_state(self.env)
        self._clear(dense_reward=float(info.get("dense_reward", 0.0)))
        self._add_info(info, controlled=False)
        return obs, info

    def _add_info(self, info: dict, controlled: bool) -> None:
        info["operator/in_control"] = controlled
        info["operator/phase"] = self._phase
        info["operator/takeovers"] = self._takeovers
        info["operator/trigger"] = self._trigger
        info["operator/handback"] = self._handback_reason
        info["operator/retries"] = self._retries
        info["operator/steps_since_progress"] = self._t - self._last_improve

    # ----------------------------------------------------------------- step
    def _begin_takeover(self, raw_obs: np.ndarray) -> None:
        cfg = self.config
        self._takeovers += 1
        self._control_steps = 0
        self._agree_streak = 0
        self._best_at_takeover = self._best
        held = is_object_held(raw_obs, cfg.held_gripper_max, cfg.held_distance)
        self._hesitate_left = int(cfg.hesitation_steps)
        self._start_retract(0 if held else None)
        if self._hesitate_left > 0:
            self._phase = PHASE_HESITATE

    def _start_retract(self, length: Optional[int] = None) -> None:
        cfg = self.config
        if length is None:
            length = int(self._rng.integers(cfg.retract_min_steps, cfg.retract_max_steps + 1))
        self._retract_left = int(length)
        self._phase = PHASE_RETRACT if self._retract_left > 0 else PHASE_EXPERT
        # For the "agreement" rule, progress is measured from the state where the
        # expert phase starts (set after the first step of that phase, see step()).
        self._expert_baseline_pending = True

    def _operator_action(self, expert_action: np.ndarray) -> np.ndarray:
        cfg = self.config
        noise_std = cfg.noise_std
        if self._hesitate_left > 0:
            self._hesitate_left -= 1
            base = float(cfg.hesitation_action_scale) * expert_action.astype(np.float64)
            noise_std = cfg.hesitation_noise_std
            if self._hesitate_left == 0:
                self._phase = PHASE_RETRACT if self._retract_left > 0 else PHASE_EXPERT
        elif self._retract_left > 0:
            self._retract_left -= 1
            base = np.array([0.0, 0.0, cfg.retract_lift, -1.0], dtype=np.float64)
            if self._retract_left == 0:
                self._phase = PHASE_EXPERT
        else:
            base = expert_action.astype(np.float64)
        noise = self._rng.normal(0.0, noise_std, size=base.shape) if noise_std > 0 else 0.0
        return np.clip(base + noise, -1.0, 1.0).astype(np.float32)

    def _trigger_reason(self, raw: np.ndarray, steps_since_progress: int,
                        in_cooldown: bool) -> str:
        cfg = self.config
        if cfg.use_danger:
            reason = danger_reason(raw, self._start_obs, margin=cfg.workspace_margin,
                                   height=cfg.workspace_height,
                                   knocked_away=cfg.knocked_away_distance,
                                   fall=cfg.fall_distance)
            if reason:
                return reason
        if in_cooldown:
            return ""
        if (cfg.use_disagreement and len(self._disagree) == self._disagree.maxlen
                and float(np.mean(self._disagree)) > cfg.disagreement_threshold):
            return "disagreement"
        if cfg.use_stall and steps_since_progress >= self.stall_window:
            return "stall"
        return ""

    def _handback_due(self, dense: float) -> str:
        cfg = self.config
        if (dense > self._best_before_trigger + cfg.progress_threshold
                or (self._subgoal() and not self._subgoal_at_trigger)):
            self._takeover_progressed = True
        if self._control_steps >= cfg.max_control_steps:
            return "cap"
        if self._control_steps < cfg.min_control_steps:
            return ""
        if cfg.handback == "agreement":
            progressed = self._best > self._best_at_takeover
            if progressed and self._agree_streak >= cfg.handback_agree_steps:
                return "agreement"
            return ""
        if self._phase != PHASE_EXPERT:
            return ""
        if cfg.handback_on_progress and dense > self._best_before_trigger + cfg.handback_margin:
            return "progress"
        if cfg.handback_on_subgoal and self._subgoal() and not self._subgoal_at_trigger:
            return "subgoal"
        return ""

    def step(self, action):
        cfg = self.config
        policy_action = np.asarray(action, dtype=np.float32)
        if policy_action.shape != (4,):
            raise ValueError(f"action must have shape (4,), got {policy_action.shape}")
        raw = get_privileged_state(self.env)
        expert_action = self._expert(raw)
        diff = np.abs(np.clip(policy_action, -1.0, 1.0) - expert_action)
        self._disagree.append(float(np.mean(diff)))

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
            if cfg.handback == "agreement":
                self._best = self._best_at_takeover = dense
            self._last_improve = self._t
            steps_since_progress = 0

        if not (terminated or truncated):
            if controlled:
                reason = self._handback_due(dense)
                if reason:
                    self._hand_back(dense, reason)
                elif (cfg.retry_on_stall and self._phase == PHASE_EXPERT
                      and steps_since_progress >= self.stall_window):
                    self._retries += 1
                    self._last_improve = self._t  # give the retry a full window
                    self._start_retract()
            elif self._phase == PHASE_ROBOT and cfg.enabled:
                in_cooldown = self._cooldown > 0
                if in_cooldown:
                    self._cooldown -= 1
                if self._takeovers < cfg.max_takeovers and not self._gave_up:
                    reason = self._trigger_reason(get_privileged_state(self.env),
                                                  steps_since_progress, in_cooldown)
                    if reason:
                        self._trigger = reason
                        self._best_before_trigger = self._best
                        self._subgoal_at_trigger = self._subgoal()
                        self._takeover_progressed = False
                        self._phase = PHASE_REACTING
                        self._react_left = int(cfg.reaction_delay)

        self._add_info(info, controlled)
        return obs, reward, terminated, truncated, info

    def _hand_back(self, dense_reward: float, reason: str) -> None:
        self._phase = PHASE_ROBOT
        if (reason == "cap" and not self._takeover_progressed
                and self.config.give_up_after_failed_takeover):
            reason = "gave_up"
            self._gave_up = True
        self._handback_reason = reason
        self._cooldown = int(self.config.cooldown_steps)
        self._retract_left = 0
        self._hesitate_left = 0
        # Restart progress tracking from the state handed back.
        self._best = float(dense_reward)
        self._last_improve = self._t
        self._disagree.clear()
