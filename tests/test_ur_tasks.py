"""The UR arm as a training task (serl_ext/envs/ur_tasks.py): config composition, the learner's
spaces without a robot, the real-arm kind on the fake RTDE interfaces (no ur_rtde needed), the
simulated UR5e with its operator (skipped without robosuite), and evaluation on the training env.
"""

import sys
import time

import numpy as np
import pytest

from configs.train import get_config
from serl_ext.loop import common


# ------------------------------------------------------------------ composition (no simulator)
def test_ur_task_configs_compose():
    lift = get_config("ur5e-sim-lift,hil_serl")
    assert lift.task == "ur5e-sim-lift" and lift.algorithm == "hil_serl"
    assert lift.env.action_repeat == 1 and lift.env.reward_type == "sparse"
    assert lift.actor.max_env_steps == 20_000 and lift.agent.discount == pytest.approx(0.97)
    assert lift.operator.enabled and lift.human_input == "simulated" and lift.demos.num_demos == 20
    assert not lift.actor.eval_on_training_env
    assert lift.robot.max_episode_steps == 80 and lift.robot.gripper.type == "io"  # ur5e_sim Lift
    wipe = get_config("ur5e-sim-wipe,rlpd")
    assert wipe.robot.gripper.type == "none" and wipe.robot.max_episode_steps == 150
    assert not wipe.operator.enabled  # the algorithm's choice stays

    real = get_config("ur:ur5e,hil_serl")
    assert real.task == "ur:ur5e" and real.robot.host == "192.168.1.10"
    assert real.human_input == "spacemouse" and not real.operator.enabled
    assert real.actor.eval_on_training_env and real.env.action_repeat == 1
    assert sorted(real.robot.cameras.keys()) == ["front", "wrist"]
    real.robot.host = "10.0.0.3"  # what --config.robot.host=10.0.0.3 does
    assert common.run_dir_for(real).endswith("ur:ur5e/hil_serl/seed0")


def test_ur_task_names_and_robot_config_files(tmp_path):
    cell = tmp_path / "my_cell.py"
    cell.write_text("from configs.robots import ur5e\n\n"
                    "def get_config():\n    c = ur5e.get_config()\n    c.host = '10.1.2.3'\n    return c\n")
    assert get_config(f"ur:{cell},hil_serl").robot.host == "10.1.2.3"
    for bad, match in [("ur:nope", "no robot config 'nope'"), ("ur:", "name the robot config"),
                       (f"ur:{tmp_path / 'missing.py'}", "does not exist")]:
        with pytest.raises(KeyError, match=match):
            get_config(bad)


# ------------------------------------------------------------------ the real arm, on fakes
class _FakeCapture:
    """OpenCVCapture / RealSenseCapture stand-in: a grey frame stamped now."""

    def __init__(self, device, width, height, fps, clock):
        self.width, self.height, self.clock = int(width), int(height), clock

    def read(self):
        time.sleep(0.005)
        return np.full((self.height, self.width, 3), 90, np.uint8), self.clock.now()

    def close(self):
        pass


class _FakeSpaceMouse:
    """serl_ext.robots.spacemouse.SpaceMouse stand-in: the motion and buttons set by the test."""

    def __init__(self, poll_hz=200.0):
        self.motion, self.buttons = np.zeros(6, np.float32), [0, 0]

    def get_action(self):
        return self.motion.copy(), list(self.buttons)

    def close(self, timeout_s=1.0):
        pass


@pytest.fixture
def fake_robot(monkeypatch):
    """ur_rtde, the cameras and the SpaceMouse replaced by fakes; the arm is a KinematicArm."""
    from serl_ext.robots import cameras, spacemouse, ur
    from serl_ext.robots.fake_rtde import KinematicArm, fake_rtde_factory

    arms = []
    config = get_config("ur:ur5e,hil_serl")

    def factory(host, frequency):
        arms.append(KinematicArm(config.robot.reset.home_pose))
        return fake_rtde_factory(arms[-1])(host, frequency)

    monkeypatch.setattr(ur, "default_rtde_factory", factory)
    monkeypatch.setattr(cameras, "OpenCVCapture", _FakeCapture)
    monkeypatch.setattr(cameras, "RealSenseCapture", _FakeCapture)
    monkeypatch.setattr(spacemouse, "SpaceMouse", _FakeSpaceMouse)
    monkeypatch.setitem(sys.modules, "rtde_control", None)  # importing ur_rtde would fail
    config.robot.gripper.type = "io"  # the Robotiq URCap socket has no fake
    config.robot.control.servo_hz = 125.0
    config.robot.control.watchdog_periods = 10.0  # a loaded test machine, real clock
    config.robot.reset.settle_steps = 0
    return config, arms


def test_learner_spaces_of_a_real_arm_need_no_robot(fake_robot):
    config, arms = fake_robot
    spec, action_dim, bounds = common.task_spaces(config)  # the learner box: no robot, no env
    assert not arms
    assert spec == {"state": ((19,), np.dtype(np.float32)), "front": ((128, 128, 3), np.dtype(np.uint8)),
                    "wrist": ((128, 128, 3), np.dtype(np.uint8))}
    assert action_dim == 7 and bounds["actions"].shape == (7,)
    env = common.make_env(config, 0, with_operator=False)  # the robot PC: UREnv on the fakes
    try:
        assert arms and common.observation_spec(env) == spec
        assert int(env.action_space.shape[0]) == action_dim
        obs, _ = env.reset(seed=0)
        assert obs["wrist"].shape == (128, 128, 3) and obs["state"].shape == (19,)
        obs, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
        assert info["safety_status"] == "ok" and reward == 0.0 and not terminated
    finally:
        env.close()


def test_real_arm_takes_the_spacemouse_and_refuses_the_simulated_operator(fake_robot):
    from serl_ext.envs.intervention import SpaceMouse6Intervention

    config, _ = fake_robot
    config.robot.cameras = {}
    env = common.make_env(config, 0, with_operator=True)
    try:
        assert isinstance(env, SpaceMouse6Intervention)
        env.reset(seed=0)
        env.device.motion[:] = [0.5, 0, 0, 0, 0, 0]  # base +x
        _, _, _, _, info = env.step(np.zeros(7, np.float32))
        assert info["intervene_action"].shape == (7,) and np.abs(info["intervene_action"][:3]).max() > 0.4
        env.device.motion[:] = 0.0
        env.key_source = lambda: ["y"]  # the person marks success
        _, reward, terminated, _, info = env.step(np.zeros(7, np.float32))
        assert terminated and reward == 1.0 and info["success"] and "intervene_action" not in info
    finally:
        env.close()
    config.human_input = "simulated"
    config.operator.enabled = True
    with pytest.raises(ValueError, match="simulated operator needs a simulated task"):
        common.make_env(config, 0, with_operator=True)


class _ZeroAgent:
    def eval_actions(self, obs):
        return np.zeros(7, np.float32)


def test_evaluation_on_the_training_env_of_a_real_arm(fake_robot):
    """One arm: evaluation resets the training env per episode; the SpaceMouse does not take
    over, its success mark still ends an episode; the env stays open for training."""
    from serl_ext.loop.evaluation import run_episodes

    config, arms = fake_robot
    config.robot.cameras = {}
    config.robot.max_episode_steps = 4
    env = common.make_env(config, 0, with_operator=True)
    try:
        env.device.motion[:] = [0, 0, 0.8, 0, 0, 0]  # the person pushes the knob all along
        marks = iter([[], [], ["y"]] + [[]] * 10)
        env.key_source = lambda: next(marks)
        records = run_episodes(_ZeroAgent(), config, 2, env=env)
        assert len(arms) == 1  # no second env was built
        assert [r["seed"] for r in records] == [common.eval_seed(config, i) for i in range(2)]
        assert records[0]["success"] and records[0]["length"] == 3  # marked at its third step
        assert not records[1]["success"] and records[1]["length"] == 4  # the time limit
        assert env.takeover  # restored after the evaluation
        env.reset(seed=1)
        _, _, _, _, info = env.step(np.zeros(7, np.float32))
        assert "intervene_action" in info  # training again: the knob takes over
    finally:
        env.close()


# ------------------------------------------------------------------ the simulated UR5e
@pytest.fixture(scope="module")
def lift_config():
    pytest.importorskip("robosuite")
    return get_config("ur5e-sim-lift,hil_serl")


def test_sim_env_spaces_match_what_the_learner_uses(lift_config):
    spec, action_dim, _ = common.task_spaces(lift_config)
    assert spec == {"state": ((25,), np.dtype(np.float32))} and action_dim == 7
    env = common.make_env(lift_config, 0, with_operator=True)
    try:
        assert common.observation_spec(env) == spec and env.action_space.shape == (7,)
    finally:
        env.close()
    wipe = get_config("ur5e-sim-wipe,hil_serl")
    wipe_spec, _, _ = common.task_spaces(wipe)
    env = common.make_env(wipe, 0, with_operator=False)
    try:
        assert common.observation_spec(env) == wipe_spec == {"state": ((23,), np.dtype(np.float32))}
    finally:
        env.close()


def _episode(env, policy, seed, handbacks=None):
    obs, info = env.reset(seed=seed)
    human = length = 0
    success, done = False, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs, env))
        human += int("intervene_action" in info)
        length += 1
        success = success or info["success"]
        done = terminated or truncated
        if handbacks is not None and info["operator/handback"] and (
                not handbacks or handbacks[-1][1] != info["operator/takeovers"]):
            handbacks.append((info["operator/handback"], info["operator/takeovers"]))
    return human, length, success, info


def test_simulated_operator_rescues_an_idle_robot_and_leaves_the_expert_alone(lift_config):
    from serl_ext.envs.ur_tasks import expert_policy

    config = get_config("ur5e-sim-lift,hil_serl")
    assert config.operator.handback_on_progress is False  # Lift: hand back on the grasp, not mid-reach
    env = common.make_env(config, 0, with_operator=True)
    try:
        handbacks = []
        human, length, success, info = _episode(env, lambda obs, env: np.zeros(7, np.float32), seed=0,
                                                handbacks=handbacks)
        # The first takeover reaches and grasps the cube and hands back on the grasp, not on
        # progress alone; the idle robot stalls again and the operator takes over again.
        assert info["operator/trigger"] == "stall" and info["operator/takeovers"] >= 2
        assert handbacks[0] == ("subgoal", 1), handbacks
        assert all(reason != "progress" for reason, _ in handbacks), handbacks
        assert 0.3 < human / length < 0.8
        first = (human, length)
        assert _episode(env, lambda obs, env: np.zeros(7, np.float32), seed=0)[:2] == first  # seeded
        human, length, success, info = _episode(env, expert_policy(), seed=5)
        assert success and human == 0 and info["operator/takeovers"] == 0
    finally:
        env.close()


def test_evaluation_on_the_training_env_steps_around_the_simulated_operator(lift_config):
    from serl_ext.loop.evaluation import run_episodes

    config = get_config("ur5e-sim-lift,hil_serl")
    config.actor.eval_on_training_env = True
    config.env.max_episode_steps = 30
    assert common.eval_on_training_env(config)
    env = common.make_env(config, 0, with_operator=True)
    try:
        records = run_episodes(_ZeroAgent(), config, 1, env=env)
        # An idle robot for 30 steps: the operator would have taken over at step ~13.
        assert records[0]["length"] == 30 and not records[0]["success"]
        human, length, _, _ = _episode(env, lambda obs, env: np.zeros(7, np.float32), seed=5)
        assert length == 30 and human > 0  # training again, with the operator
    finally:
        env.close()


def test_simulated_person_frees_the_arm_after_a_force_stop_that_persists(lift_config):
    """A force-limit stop whose contact force lasts past the episode: UREnv alone cannot reset
    (on a real arm a person frees it); URSimTask resets the scene and the run goes on."""
    from serl_ext.envs.ur_tasks import find_sim_task
    from serl_ext.robots.ur import SafetyStopError

    config = get_config("ur5e-sim-lift,hil_serl")
    config.env.max_episode_steps = 40
    env = common.make_env(config, 0, with_operator=False)
    try:
        task, base = find_sim_task(env), env.unwrapped
        arm = base.arm
        pressed = {"on": False}
        true_force, true_reset = arm.tcp_force, arm.env.reset

        def force():  # the gripper pressed into the scene: 120 N down until the scene is reset
            extra = np.array([0.0, 0.0, -120.0, 0.0, 0.0, 0.0]) if pressed["on"] else 0.0
            return true_force() + extra

        def scene_reset(*args, **kwargs):
            pressed["on"] = False
            return true_reset(*args, **kwargs)

        arm.tcp_force, arm.env.reset = force, scene_reset
        obs, info = env.reset(seed=7)
        assert info["safety/freed_arm"] is False and task.freed_arm == 0
        start_cube = task.cube_pos()
        for t in range(40):
            pressed["on"] = pressed["on"] or t == 5
            obs, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
            if terminated or truncated:
                break
        assert info["safety_status"] == "force_limit" and t < 10  # the stop ended the episode
        pressed["on"] = True  # the contact is still there at the reset
        with pytest.raises(SafetyStopError, match="free the arm"):
            base.reset(seed=8)  # the real-arm code path: waits for a person
        assert pressed["on"] and base.servo.fault is not None
        obs, info = env.reset(seed=7)
        assert info["safety/freed_arm"] is True and task.freed_arm == 1
        assert base.servo.fault is None and np.all(np.isfinite(obs["state"]))
        np.testing.assert_allclose(task.cube_pos(), start_cube, atol=1e-6)  # same seed, same layout
        obs, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
        assert info["safety_status"] == "ok" and not (terminated or truncated)
        obs, info = env.reset(seed=9)
        assert info["safety/freed_arm"] is False and task.freed_arm == 1
    finally:
        env.close()


def test_simulated_person_does_not_clear_a_protective_stop(lift_config):
    from serl_ext.envs.ur_tasks import find_sim_task
    from serl_ext.robots.ur import SafetyStopError

    config = get_config("ur5e-sim-lift,hil_serl")
    env = common.make_env(config, 0, with_operator=False)
    try:
        env.reset(seed=1)
        env.unwrapped.arm.protective_stopped = True
        with pytest.raises(SafetyStopError, match="protective stop"):
            env.reset(seed=2)
        assert find_sim_task(env).freed_arm == 0
    finally:
        env.close()
