"""Tests for the simulated operator and the human intervention wrappers."""

import sys

import gymnasium as gym
import numpy as np
import pytest
from ml_collections import ConfigDict

from serl_ext.envs import get_expert, get_privileged_state, make_env
from serl_ext.envs.intervention import KeyboardIntervention, SpaceMouseIntervention
from serl_ext.envs.operator import (
    SimulatedOperator,
    danger_reason,
    get_default_operator_config,
    is_object_held,
    legacy_operator_overrides,
)

ZERO = np.zeros(4, np.float32)


def run(env, seed, policy, steps=None):
    """Roll out one episode; returns per-step lists of (in_control, info)."""
    env.reset(seed=seed)
    infos = []
    while True:
        _, _, terminated, truncated, info = env.step(policy(env))
        infos.append(info)
        if terminated or truncated or (steps is not None and len(infos) >= steps):
            return infos


def controlled(infos):
    return [bool(i["operator/in_control"]) for i in infos]


def segments(flags):
    """List of (start, end) step indices (1-based, inclusive) of True runs."""
    out, start = [], None
    for t, f in enumerate(flags, start=1):
        if f and start is None:
            start = t
        if not f and start is not None:
            out.append((start, t - 1))
            start = None
    if start is not None:
        out.append((start, len(flags)))
    return out


def test_default_config_has_design_values():
    cfg = get_default_operator_config()
    assert cfg.noise_std == 0.05 and cfg.progress_threshold == 0.05
    assert cfg.reaction_delay == 3 and (cfg.retract_min_steps, cfg.retract_max_steps) == (4, 8)
    assert not cfg.use_disagreement and cfg.use_stall and cfg.use_danger
    assert cfg.handback == "progress" and cfg.hesitation_steps == 0
    assert cfg.min_control_steps == 5 and cfg.max_control_steps == 35
    assert cfg.cooldown_steps == 10 and cfg.max_takeovers == 5


def test_config_dict_overrides_and_disabled_operator():
    cfg = get_default_operator_config()
    env = make_env("pick-place", 0, operator=cfg)
    assert env.get_wrapper_attr("stall_window") == 10  # task default
    cfg.stall_window = 17
    env = make_env("pick-place", 0, operator=cfg)
    assert env.get_wrapper_attr("stall_window") == 17
    cfg.enabled = False
    env = make_env("pick-place", 0, operator=cfg)
    with pytest.raises(AttributeError):
        env.get_wrapper_attr("stall_window")  # no operator in the stack
    infos = run(env, 0, lambda e: ZERO, steps=40)
    assert not any("intervene_action" in i for i in infos)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="unknown operator config field"):
        make_env("pick-place", 0, operator={"reaction_dealy": 3})
    with pytest.raises(ValueError, match="handback"):
        make_env("pick-place", 0, operator={"handback": "finish"})
    with pytest.raises(ValueError, match="workspace_margin"):
        make_env("pick-place", 0, operator={"workspace_margin": float("nan")})
    with pytest.raises(ValueError, match="retract_min_steps"):
        make_env("pick-place", 0, operator={"retract_min_steps": 9, "retract_max_steps": 3})
    with pytest.raises(TypeError):
        make_env("pick-place", 0, operator=[1, 2])
    with pytest.raises(TypeError, match="MetaWorldEnv"):
        SimulatedOperator(gym.make("CartPole-v1"))


def test_intervene_action_exactly_when_in_control():
    env = make_env("pick-place", 0, operator={})
    infos = run(env, 0, lambda e: ZERO)
    assert any(controlled(infos)) and not all(controlled(infos))
    for info in infos:
        assert ("intervene_action" in info) == info["operator/in_control"]
        if "intervene_action" in info:
            a = info["intervene_action"]
            assert a.dtype == np.float32 and a.shape == (4,)
            assert np.all(np.abs(a) <= 1.0)


def test_stuck_robot_taken_over_after_stall_window_plus_delay_then_handed_back():
    cfg = {"noise_std": 0.0}
    env = make_env("pick-place", 0, operator=cfg)
    W = env.get_wrapper_attr("stall_window")
    delay = get_default_operator_config().reaction_delay
    infos = run(env, 0, lambda e: ZERO)
    first = controlled(infos).index(True) + 1  # 1-based step of first takeover
    assert first == W + delay + 1
    assert infos[first - 2]["operator/trigger"] == "stall"
    assert [i["operator/phase"] for i in infos[first - 5:first - 1]] == ["reacting"] * 4
    # The operator lets go again long before the episode ends, and comes back when the idle
    # robot stalls again: several short takeovers, not one that finishes the episode.
    segs = segments(controlled(infos))
    assert len(segs) >= 2
    start, end = segs[0]
    assert end - start + 1 < get_default_operator_config().max_control_steps
    assert infos[end - 1]["operator/handback"] in ("progress", "subgoal")


def test_hands_back_once_past_the_stall_point():
    """Hand-back = the first controlled expert-phase step (from the 5th controlled step on)
    where the dense reward beats the best from before the trigger by the margin, or
    grasp_success turns on; recomputed here step by step from the infos."""
    default = get_default_operator_config()
    margin, min_steps = default.handback_margin, default.min_control_steps
    for task, seed in (("pick-place", 0), ("assembly", 1), ("sweep-into", 2)):
        env = make_env(task, 0, operator={"noise_std": 0.0})
        base = env.unwrapped
        _, info = env.reset(seed=seed)
        best = info["dense_reward"]  # running best (0.05 steps), as a person's eye would keep it
        best_before = grasp_at_trigger = None
        control, due = 0, None
        for t in range(1, 126):
            _, _, terminated, truncated, info = env.step(ZERO)
            grasp = bool(base.task_info["grasp_success"])
            if best_before is None:
                if info["dense_reward"] > best + 0.05:
                    best = info["dense_reward"]
                if info["operator/phase"] == "reacting":
                    best_before, grasp_at_trigger = best, grasp
            if info["operator/in_control"]:
                control += 1
                after_retract = info["operator/phase"] in ("expert", "robot")
                if due is None and control >= min_steps and after_retract and (
                        info["dense_reward"] > best_before + margin
                        or (grasp and not grasp_at_trigger)):
                    due = t
            if info["operator/handback"] or terminated or truncated:
                break
        assert info["operator/handback"] in ("progress", "subgoal"), task
        assert due == t, (task, due, t)  # handed back exactly at the first step the rule holds
        if info["operator/handback"] == "progress":
            assert info["dense_reward"] > best_before + margin
        else:
            assert grasp and not grasp_at_trigger


def test_disagreement_trigger_is_an_option_and_reaction_delay():
    # A robot that always pushes against the expert: |diff| >= 1 in every dim.
    expert = get_expert("assembly")

    def contrary(env):
        return (-np.sign(expert(get_privileged_state(env))) - (expert(get_privileged_state(
            env)) == 0)).astype(np.float32)

    env = make_env("assembly", 0, operator={"use_stall": False, "use_danger": False,
                                            "use_disagreement": True})
    infos = run(env, 2, contrary)
    first = controlled(infos).index(True) + 1
    assert first == 10 + 3 + 1  # window full after step 10, then 3 steps of delay
    assert infos[9]["operator/trigger"] == "disagreement"
    assert [i["operator/phase"] for i in infos[10:13]] == ["reacting"] * 3
    # Off by default: the same robot is not taken over within the window plus the delay.
    env = make_env("assembly", 0, operator={"use_stall": False, "use_danger": False})
    infos = run(env, 2, contrary, steps=40)
    assert not any(controlled(infos))


def test_retract_then_expert_actions():
    cfg = {"noise_std": 0.0}
    env = make_env("pick-place", 0, operator=cfg)
    expert = get_expert("pick-place")
    env.reset(seed=0)
    executed = []  # (executed action, expert action for that state, phase after the step)
    while len(executed) < 12:
        expert_action = expert(get_privileged_state(env))
        _, _, terminated, truncated, info = env.step(ZERO)
        if "intervene_action" in info:
            executed.append((info["intervene_action"], expert_action, info["operator/phase"]))
        assert not (terminated or truncated)
    retract = [a for a, _, _ in executed if np.allclose(a, [0, 0, 0.5, -1])]
    n = len(retract)
    assert 4 <= n <= 8
    assert all(np.allclose(a, [0, 0, 0.5, -1]) for a, _, _ in executed[:n])  # lift + open first
    for a, e, phase in executed[n:]:  # then exactly the (noise-free) expert
        np.testing.assert_allclose(a, e)


def test_hesitation_stage_scales_the_expert_at_the_start_of_a_takeover():
    cfg = {"noise_std": 0.0, "hesitation_steps": 3, "hesitation_noise_std": 0.0,
           "hesitation_action_scale": 0.5, "retract_min_steps": 0, "retract_max_steps": 0}
    env = make_env("pick-place", 0, operator=cfg)
    expert = get_expert("pick-place")
    env.reset(seed=0)
    executed = []
    while len(executed) < 6:
        expert_action = expert(get_privileged_state(env))
        _, _, _, _, info = env.step(ZERO)
        if "intervene_action" in info:
            executed.append((info["intervene_action"], expert_action, info["operator/phase"]))
    for a, e, _ in executed[:3]:
        np.testing.assert_allclose(a, 0.5 * e, atol=1e-6)
    assert [p for _, _, p in executed[:3]] == ["hesitate", "hesitate", "expert"]
    for a, e, _ in executed[3:]:
        np.testing.assert_allclose(a, e)


def test_no_retract_when_object_held():
    raw = np.zeros(39)
    raw[0:3] = [0.0, 0.6, 0.1]
    raw[3] = 0.4
    raw[4:7] = [0.0, 0.6, 0.07]
    assert is_object_held(raw)
    raw[3] = 1.0  # gripper open
    assert not is_object_held(raw)
    raw[3] = 0.4
    raw[4:7] = [0.2, 0.6, 0.02]  # object far away
    assert not is_object_held(raw)

    # The robot grasps and lifts like the expert, then freezes: no retract.
    expert = get_expert("pick-place")
    env = make_env("pick-place", 0, operator={"noise_std": 0.0})
    env.reset(seed=0)
    for _ in range(9):
        env.step(expert(get_privileged_state(env)))
    assert is_object_held(get_privileged_state(env))
    for _ in range(40):
        e = expert(get_privileged_state(env))
        _, _, terminated, _, info = env.step(np.array([0, 0, 0, 1], np.float32))
        if "intervene_action" in info:
            np.testing.assert_allclose(info["intervene_action"], e)  # expert at once
            break
    else:
        pytest.fail("operator never took over")


def test_legacy_rules_hand_back_only_when_robot_agrees_after_progress():
    expert = get_expert("box-close")
    env = make_env("box-close", 0, operator={**legacy_operator_overrides(), "noise_std": 0.0})

    def policy(e):  # zero until the operator has taken over once, then the expert
        if e.get_wrapper_attr("takeovers") == 0:
            return ZERO
        return expert(get_privileged_state(e))

    infos = run(env, 1, policy)
    segs = segments(controlled(infos))
    assert len(segs) >= 1
    start, end = segs[0]
    assert end - start + 1 >= 10  # legacy min_control_steps
    assert end < len(infos)  # handed back before the episode ended
    assert infos[end - 1]["operator/handback"] == "agreement"
    assert infos[end]["operator/phase"] == "robot" and infos[end]["operator/takeovers"] == 1

    # With the legacy rules an idle robot is taken over once and the operator finishes.
    env = make_env("pick-place", 0, operator={**legacy_operator_overrides(), "noise_std": 0.0})
    infos = run(env, 0, lambda e: ZERO)
    assert infos[-1]["success"] and infos[-1]["episode"]["intervention_count"] == 1


def test_max_control_cooldown_and_takeover_cap():
    cfg = {"max_control_steps": 5, "max_takeovers": 2, "noise_std": 0.0, "stall_window": 4,
           "cooldown_steps": 12, "retract_min_steps": 0, "retract_max_steps": 0,
           "handback_margin": 100.0, "handback_on_subgoal": False}
    env = make_env("pick-place", 0, operator=cfg)
    infos = run(env, 0, lambda e: ZERO)
    segs = segments(controlled(infos))
    assert len(segs) == 2  # cap respected
    assert all(end - start + 1 == 5 for start, end in segs)  # max control respected
    assert infos[segs[0][1] - 1]["operator/handback"] == "cap"
    gap = segs[1][0] - segs[0][1] - 1  # robot steps between segments
    assert gap == 12 + 1 + 3  # cooldown, then trigger (stall timer >= 4 by then), then delay
    assert max(i["operator/takeovers"] for i in infos) == 2
    assert infos[-1]["episode"]["intervention_count"] == 2
    assert infos[-1]["episode"]["intervention_steps"] == 10


def test_gives_up_after_a_takeover_that_makes_no_progress():
    # Control capped at 3 steps, all of them retract (lift + open): no progress is possible.
    cfg = {"max_control_steps": 3, "retract_min_steps": 3, "retract_max_steps": 3,
           "noise_std": 0.0}
    env = make_env("pick-place", 0, operator=cfg)
    infos = run(env, 0, lambda e: ZERO)
    segs = segments(controlled(infos))
    assert len(segs) == 1 and segs[0][1] - segs[0][0] + 1 == 3
    assert infos[segs[0][1] - 1]["operator/handback"] == "gave_up"
    assert len(infos) == 125  # the idle robot is left alone for the rest of the episode
    env = make_env("pick-place", 0, operator={**cfg, "give_up_after_failed_takeover": False})
    assert len(segments(controlled(run(env, 0, lambda e: ZERO)))) == 5  # the cap of takeovers


def test_danger_reason_on_hand_built_states():
    start = np.zeros(39)
    start[0:3] = [0.0, 0.6, 0.2]     # hand
    start[4:7] = [0.1, 0.6, 0.02]    # object
    start[36:39] = [-0.1, 0.8, 0.1]  # goal
    assert danger_reason(start, start) == ""
    now = start.copy()
    now[0] = 0.1 + 0.25 + 0.01        # hand beyond max x (0.1) + margin
    assert danger_reason(now, start) == "workspace"
    now = start.copy()
    now[2] = 0.2 + 0.25 + 0.01        # hand above highest point + height
    assert danger_reason(now, start) == "workspace"
    now[2] = 0.2 + 0.24
    assert danger_reason(now, start) == ""
    now = start.copy()
    d0 = np.linalg.norm(start[4:7] - start[36:39])
    now[4:7] = start[36:39] + (start[4:7] - start[36:39]) * (d0 + 0.16) / d0  # pushed away
    assert danger_reason(now, start) == "knocked_away"
    now = start.copy()
    now[6] = -0.06                    # below the table top
    assert danger_reason(now, start) == "fallen"


def test_danger_trigger_ignores_the_stall_window():
    cfg = {"noise_std": 0.0, "stall_window": 100}
    env = make_env("pick-place", 0, operator=cfg)
    up = np.array([0.0, 0.0, 1.0, 0.0], np.float32)  # drive the hand up, out of the workspace
    infos = run(env, 0, lambda e: up, steps=40)
    first = controlled(infos).index(True) + 1
    noticed = [i for i, x in enumerate(infos) if x["operator/trigger"]][0]
    assert infos[noticed]["operator/trigger"] == "workspace"
    assert first == noticed + 1 + 3 + 1  # 1-based: the step after the 3-step delay
    assert first < 100


def test_never_takes_over_when_robot_follows_expert():
    for task, seeds in (("pick-place", (0, 1, 2)), ("assembly", (0, 1)), ("box-close", (0,))):
        expert = get_expert(task)
        env = make_env(task, 0, operator={})
        for seed in seeds:
            infos = run(env, seed, lambda e: expert(get_privileged_state(e)))
            assert not any(controlled(infos))
            assert infos[-1]["success"] and infos[-1]["operator/takeovers"] == 0


def test_operator_is_deterministic_given_seed_and_adds_no_observation():
    def actions(seed):
        env = make_env("sweep-into", 0, operator=ConfigDict({"noise_std": 0.05}))
        infos = run(env, seed, lambda e: ZERO, steps=40)
        return np.stack([i.get("intervene_action", np.full(4, 9.0)) for i in infos])

    np.testing.assert_array_equal(actions(3), actions(3))
    assert np.abs(actions(3) - actions(4)).max() > 0
    plain, with_op = make_env("sweep-into", 0), make_env("sweep-into", 0, operator={})
    assert plain.observation_space == with_op.observation_space
    o1, _ = plain.reset(seed=3)
    o2, _ = with_op.reset(seed=3)
    assert set(o1) == set(o2) == {"state"}
    np.testing.assert_array_equal(o1["state"], o2["state"])


# --------------------------------------------------------- human devices
class RecordingEnv(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (4,), np.float32)
        self.actions = []

    def reset(self, *, seed=None, options=None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.actions.append(np.asarray(action, np.float32).copy())
        return np.zeros(1, np.float32), 0.0, False, False, {}


def test_keyboard_intervention_with_injected_keys():
    script = iter([[], ["w"], ["w", "d", "w"], [" "], ["r"], [], ["f", "x"], ["x"], [" "]])
    inner = RecordingEnv()
    env = KeyboardIntervention(inner, key_source=lambda: next(script), speed=0.5)
    env.reset()
    policy = np.array([0.1, 0.2, 0.3, -0.4], np.float32)
    expected = [
        None,                     # no key: policy acts
        [0, 0.5, 0, -0.4],        # w: forward, gripper = policy's until space is pressed
        [0.5, 0.5, 0, -0.4],      # w+d (repeated key counted once)
        [0, 0, 0, 1.0],           # space: close gripper
        [0, 0, 0.5, 1.0],         # r: up, gripper stays closed in this segment
        None,
        [0, 0, -0.5, -0.4],       # f in a new segment: policy's gripper again; x ignored
        None,                     # unmapped key only: no takeover
        [0, 0, 0, -1.0],          # space again: open
    ]
    for want in expected:
        _, _, _, _, info = env.step(policy)
        if want is None:
            assert "intervene_action" not in info
            np.testing.assert_array_equal(inner.actions[-1], policy)
        else:
            np.testing.assert_allclose(info["intervene_action"], want)
            np.testing.assert_allclose(inner.actions[-1], want)
            assert info["intervene_action"].dtype == np.float32


def test_spacemouse_intervention_with_fake_device_and_missing_package(monkeypatch):
    class FakeMouse:
        states = iter([(np.zeros(6), [0, 0]), (np.array([0.2, 0, -0.4, 0, 0, 0]), [0, 0]),
                       (np.zeros(6), [1, 0]), (np.zeros(6), [0, 1])])

        def get_action(self):
            return next(self.states)

    inner = RecordingEnv()
    env = SpaceMouseIntervention(inner, device=FakeMouse())
    env.reset()
    policy = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
    assert "intervene_action" not in env.step(policy)[4]
    np.testing.assert_allclose(env.step(policy)[4]["intervene_action"], [0.2, 0, -0.4, 0.5])
    np.testing.assert_allclose(env.step(policy)[4]["intervene_action"], [0, 0, 0, 1.0])
    np.testing.assert_allclose(env.step(policy)[4]["intervene_action"], [0, 0, 0, -1.0])

    monkeypatch.setitem(sys.modules, "pyspacemouse", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[robot\]"):
        SpaceMouseIntervention(RecordingEnv())


def test_handback_on_progress_false_hands_back_only_on_the_subgoal_or_the_cap():
    # The default hands back on progress alone for an idle robot on pick-place; with
    # handback_on_progress=False no takeover ends on "progress" (the subgoal or the cap only).
    reasons = {}
    for on_progress in (True, False):
        env = make_env("pick-place", 1, operator={"noise_std": 0.0, "handback_on_progress": on_progress})
        infos = run(env, 1, lambda e: ZERO)
        reasons[on_progress] = {i["operator/handback"] for i in infos} - {""}
    assert "progress" in reasons[True]
    assert reasons[False] and "progress" not in reasons[False]
    with pytest.raises(ValueError, match="handback_margin"):
        make_env("pick-place", 0, operator={"handback_margin": -1.0})
    with pytest.raises(ValueError, match="handback_on_progress must be True or False"):
        make_env("pick-place", 0, operator={"handback_on_progress": None})
