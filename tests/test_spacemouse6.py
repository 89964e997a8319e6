"""7-D human takeover: SpaceMouse (6-DoF + buttons + marks) and the keyboard fallback."""

import sys

import gymnasium as gym
import numpy as np
import pytest
from ml_collections import ConfigDict

from configs.robots import ur5e
from serl_ext.envs.intervention import (Keyboard6Intervention, SpaceMouse6Intervention,
                                        apply_deadzone)
from serl_ext.robots.clock import LockstepClock
from serl_ext.robots.fake_rtde import KinematicArm, fake_rtde_factory
from serl_ext.robots.ur import UREnv


class RecordingEnv7(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (7,), np.float32)
        self.actions = []

    def reset(self, *, seed=None, options=None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.actions.append(np.asarray(action, np.float32).copy())
        return np.zeros(1, np.float32), 0.0, False, False, {}


class ScriptedMouse:
    def __init__(self, states):
        self.states = iter(states)

    def get_action(self):
        return next(self.states)


POLICY = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, -0.7], np.float32)
Z6 = np.zeros(6)


def test_deadzone_is_continuous_and_reaches_one():
    out = apply_deadzone([0.04, -0.05, 0.1, -1.0, 1.0, 0.525], 0.05)
    np.testing.assert_allclose(out, [0, 0, 0.05 / 0.95, -1.0, 1.0, 0.5], atol=1e-6)


def test_spacemouse6_translation_rotation_gripper_and_segments():
    mouse = ScriptedMouse([
        (Z6, [0, 0]),                                   # nothing: the policy acts
        (np.array([0.03, 0, 0, 0, 0, 0.02]), [0, 0]),   # inside the deadzone: still nothing
        (np.array([0.525, 0, -1.0, 0, 0.525, 0]), [0, 0]),  # takeover, policy's gripper kept
        (Z6, [1, 0]),                                   # close button: gripper only
        (np.array([0, 0, 0, 0, 0, 1.0]), [0, 0]),       # same segment: stays closed
        (Z6, [0, 0]),                                   # released
        (np.array([0, 1.0, 0, 0, 0, 0]), [0, 0]),       # new segment: policy's gripper again
        (Z6, [0, 1]),                                   # open button
    ])
    inner = RecordingEnv7()
    env = SpaceMouse6Intervention(inner, device=mouse, rotation_scale=0.5, deadzone=0.05,
                                  device_frame="action")
    env.reset()
    expected = [None, None, [0.5, 0, -1, 0, 0.25, 0, -0.7], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0.5, 1],
                None, [0, 1, 0, 0, 0, 0, -0.7], [0, 0, 0, 0, 0, 0, -1]]
    for want in expected:
        info = env.step(POLICY)[4]
        if want is None:
            assert "intervene_action" not in info
            np.testing.assert_array_equal(inner.actions[-1], POLICY)
        else:
            np.testing.assert_allclose(info["intervene_action"], want, atol=1e-6)
            np.testing.assert_allclose(inner.actions[-1], want, atol=1e-6)
            assert info["intervene_action"].dtype == np.float32 and info["intervene_action"].shape == (7,)


def test_success_and_failure_marks_by_button_and_key():
    keys = iter([[], ["n"], [], []])
    mouse = ScriptedMouse([(Z6, [0, 0, 1]), (Z6, [0, 0, 1]), (Z6, [0, 0, 0]), (Z6, [0, 0, 1])])
    env = SpaceMouse6Intervention(RecordingEnv7(), device=mouse, key_source=lambda: next(keys),
                                  buttons={"close": 0, "open": 1, "success": 2}, device_frame="action")
    env.reset()
    _, reward, terminated, truncated, info = env.step(POLICY)
    assert terminated and not truncated and reward == 1.0 and info["success"] and info["operator_mark"] == "success"
    _, reward, terminated, truncated, info = env.step(POLICY)  # button still held + "n" typed
    assert truncated and not terminated and info["success"] is False and info["operator_mark"] == "failure"
    assert "operator_mark" not in env.step(POLICY)[4]  # released
    assert env.step(POLICY)[4]["operator_mark"] == "success"  # pressed again


def test_bad_actions_and_missing_pyspacemouse(monkeypatch):
    env = SpaceMouse6Intervention(RecordingEnv7(), device=ScriptedMouse([(Z6, [0, 0])] * 3))
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        env.step(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.full(7, np.nan, np.float32))
    with pytest.raises(ValueError, match="unknown button roles"):
        SpaceMouse6Intervention(RecordingEnv7(), device=ScriptedMouse([]), buttons={"grip": 0})
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[robot\]"):
        SpaceMouse6Intervention(RecordingEnv7())


def test_keyboard6_fallback():
    script = iter([[], ["w", "j"], [" "], ["f", "y"]])
    inner = RecordingEnv7()
    env = Keyboard6Intervention(inner, key_source=lambda: next(script), speed=0.5, device_frame="action")
    env.reset()
    assert "intervene_action" not in env.step(POLICY)[4]
    np.testing.assert_allclose(env.step(POLICY)[4]["intervene_action"], [0.5, 0, 0, 0, 0, 0.5, -0.7])
    np.testing.assert_allclose(env.step(POLICY)[4]["intervene_action"], [0, 0, 0, 0, 0, 0, 1.0])
    _, _, terminated, _, info = env.step(POLICY)
    np.testing.assert_allclose(info["intervene_action"], [0, 0, -0.5, 0, 0, 0, 1.0])
    assert terminated and info["success"]


def test_base_frame_motion_reaches_the_urenv_in_its_tcp_frame():
    cfg = ur5e.get_config()
    cfg.cameras = ConfigDict()
    cfg.gripper.type = "none"
    cfg.control.servo_hz = 125.0
    cfg.reset.random_xyz = cfg.reset.random_rot = 0.0
    clock = LockstepClock(wall_timeout_s=30.0)
    arm = KinematicArm(cfg.reset.home_pose, clock=clock)
    clock.on_tick = arm.advance
    ur = UREnv(cfg, rtde_factory=fake_rtde_factory(arm), clock=clock)
    down = np.array([0, 0, -1.0, 0, 0, 0])  # the operator pushes the knob down (base -z)
    env = SpaceMouse6Intervention(ur, device=ScriptedMouse([(down, [0, 0])] * 5), deadzone=0.0)
    try:
        env.reset(seed=0)
        z0 = arm.tcp_pose()[2]
        info = env.step(np.zeros(7, np.float32))[4]
        # tool pointing down: base -z is TCP +z, recorded in the policy's (TCP) frame
        np.testing.assert_allclose(info["intervene_action"][:6], [0, 0, 1, 0, 0, 0], atol=1e-6)
        for _ in range(3):
            env.step(np.zeros(7, np.float32))
        assert arm.tcp_pose()[2] < z0 - 0.01  # the arm went down
    finally:
        env.close()


@pytest.mark.parametrize("api", ["v2", "v1"])
def test_spacemouse_reader_with_both_pyspacemouse_apis(monkeypatch, api):
    import time
    import types

    from serl_ext.robots.spacemouse import SpaceMouse

    state = types.SimpleNamespace(x=0.1, y=0.2, z=0.3, roll=0.4, pitch=0.5, yaw=0.6, buttons=[1, 0])

    class Device:
        closed = False

        def read(self):
            return state

        def close(self):
            Device.closed = True

    module = types.ModuleType("pyspacemouse")
    if api == "v2":  # open() returns the device
        module.open = lambda: Device()
    else:  # 1.x: module-level read/close
        dev = Device()
        module.open, module.read, module.close = (lambda: True), dev.read, dev.close
    monkeypatch.setitem(sys.modules, "pyspacemouse", module)
    mouse = SpaceMouse(poll_hz=500)
    try:
        deadline = time.monotonic() + 10.0
        while not mouse.get_action()[1][0] and time.monotonic() < deadline:
            time.sleep(0.01)
        motion, buttons = mouse.get_action()
        np.testing.assert_allclose(motion, [-0.2, 0.1, 0.3, -0.4, -0.5, -0.6], atol=1e-6)
        assert buttons == [1, 0]
    finally:
        mouse.close()
    assert Device.closed


def test_spacemouse_reader_errors_surface(monkeypatch):
    import types

    from serl_ext.robots.spacemouse import SpaceMouse

    class Device:
        def read(self):
            raise OSError("device unplugged")

        def close(self):
            pass

    module = types.ModuleType("pyspacemouse")
    module.open = lambda: Device()
    monkeypatch.setitem(sys.modules, "pyspacemouse", module)
    mouse = SpaceMouse()
    mouse._thread.join(timeout=5.0)
    with pytest.raises(RuntimeError, match="unplugged"):
        mouse.get_action()
    module.open = lambda: (_ for _ in ()).throw(RuntimeError("No device found"))
    with pytest.raises(RuntimeError, match="could not open a SpaceMouse"):
        SpaceMouse()
