"""UREnv on the fake ur_rtde interfaces: the safety envelope, rule by rule, and the env API.

Each envelope test fails when its rule is removed from ``serl_ext/robots/safety.py`` or the
servo thread. Time is simulated (``LockstepClock``), so the servo thread and the policy loop
interleave deterministically whatever the machine's load; one test uses the real clock.
"""

import math
import sys
import time

import numpy as np
import pytest
from ml_collections import ConfigDict
from scipy.spatial.transform import Rotation

from configs.robots import ur5e
from serl_ext.robots import safety
from serl_ext.robots.clock import LockstepClock, RealClock
from serl_ext.robots.fake_rtde import KinematicArm, fake_rtde_factory
from serl_ext.robots.gripper import RobotiqSocketGripper
from serl_ext.robots.ur import STATE_DIM, SafetyStopError, UREnv

SERVO_HZ = 125.0
DT = 1.0 / SERVO_HZ


def robot_config(**safety_overrides):
    cfg = ur5e.get_config()
    cfg.cameras = ConfigDict()
    cfg.gripper.type = "io"
    cfg.control.servo_hz = SERVO_HZ
    cfg.reset.random_xyz = 0.0
    cfg.reset.random_rot = 0.0
    cfg.reset.settle_steps = 0
    for key, value in safety_overrides.items():
        cfg.safety[key] = value
    return cfg


def make(cfg=None, wrench_fn=None, start=None, real_clock=False):
    cfg = cfg or robot_config()
    clock = RealClock() if real_clock else LockstepClock(wall_timeout_s=30.0)
    arm = KinematicArm(start if start is not None else cfg.reset.home_pose, wrench_fn=wrench_fn, clock=clock)
    if not real_clock:
        clock.on_tick = arm.advance
    env = UREnv(cfg, rtde_factory=fake_rtde_factory(arm), clock=clock)
    return env, arm, clock


def action(x=0.0, y=0.0, z=0.0, rx=0.0, ry=0.0, rz=0.0, g=0.0):
    return np.array([x, y, z, rx, ry, rz, g], np.float32)


def servo_poses(arm, since=0.0, start=None):
    """Poses of every servoL command from time ``since`` on; ``start`` (6,): a pose at rest
    before them (put in twice, so that the first velocity difference starts from rest)."""
    poses = [args[0] for t, args in arm.commands_named("servoL") if t >= since]
    return np.array(([start, start] if start is not None else []) + poses)


@pytest.fixture
def env_arm():
    env, arm, clock = make()
    yield env, arm, clock
    env.close()


def test_reset_observation_layout_and_info(env_arm):
    env, arm, _ = env_arm
    obs, info = env.reset(seed=0)
    assert set(obs) == {"state"} and obs["state"].shape == (STATE_DIM,) == env.observation_space["state"].shape
    assert obs["state"].dtype == np.float32
    np.testing.assert_allclose(obs["state"][:6], 0.0, atol=1e-6)  # relative to the reset pose
    assert info["safety_status"] == safety.OK and "state" in info["obs_timestamps"]
    obs, reward, terminated, truncated, info = env.step(action(x=0.5))
    assert not terminated and not truncated and reward == 0.0
    assert info["obs_timestamps"]["state"] == pytest.approx(env.clock.now(), abs=DT + 1e-9)
    for key in ("latency/policy_ms", "latency/command_to_servo_ms", "latency/servo_period_ms_mean",
                "latency/servo_period_ms_max", "latency/servo_overruns", "latency/state_age_ms",
                "latency/step_overrun_ms"):
        assert np.isfinite(info[key]), key
    assert info["latency/servo_period_ms_mean"] == pytest.approx(DT * 1e3)
    assert 0.0 <= info["latency/command_to_servo_ms"] <= DT * 1e3 + 1e-6
    assert arm.commands_named("zeroFtSensor"), "F/T sensor zeroed at reset"


def test_actions_are_in_the_tcp_frame(env_arm):
    env, arm, _ = env_arm
    env.reset(seed=0)
    start = arm.tcp_pose()
    for _ in range(5):  # tool points down (rotvec (pi, 0, 0)): TCP +z is base -z, TCP +y is base -y
        env.step(action(z=1.0, y=1.0))
    moved = arm.tcp_pose()[:3] - start[:3]
    commanded = 5 * env.config.action.pos_scale * np.sqrt(2.0)
    # Each target is relative to the measured pose, and the acceleration-limited setpoint lags
    # behind it, so the arm covers a large part of the commanded path, in the right direction.
    np.testing.assert_allclose(moved / np.linalg.norm(moved), [0, -1 / np.sqrt(2), -1 / np.sqrt(2)], atol=1e-6)
    assert 0.5 * commanded < np.linalg.norm(moved) <= commanded
    tcp = env.base_to_action_frame([0, 0, -1.0, 0, 0, 0])  # base down = TCP +z
    np.testing.assert_allclose(tcp[:3], [0, 0, 1.0], atol=1e-6)


def test_out_of_box_targets_are_clipped(env_arm):
    env, arm, _ = env_arm
    env.reset(seed=0)
    box_hi = np.asarray(env.config.safety.xyz_max)
    t0 = env.clock.now()
    clipped = []
    for _ in range(40):  # TCP -y = base +y: pushes past y_max = 0.15 (home y = -0.10)
        clipped.append(env.step(action(y=-1.0, x=1.0))[4]["safety/target_clipped"])
    poses = servo_poses(arm, since=t0)
    assert poses[:, 1].max() <= box_hi[1] + 1e-9 and poses[:, 0].max() <= box_hi[0] + 1e-9
    assert arm.tcp_pose()[1] == pytest.approx(box_hi[1], abs=1e-4)
    assert clipped[-1] and not clipped[0]


def test_rotation_is_kept_near_home(env_arm):
    env, arm, _ = env_arm
    env.reset(seed=0)
    home = env.home_pose
    clipped = [env.step(action(rx=1.0))[4]["safety/target_clipped"] for _ in range(40)]  # 2 rad asked
    assert clipped[-1] and not clipped[0]
    angles = [safety.rotation_angle(home[3:], p[3:]) for p in servo_poses(arm)]
    assert max(angles) <= env.config.safety.max_rot_deviation + 1e-6
    assert max(angles) > env.config.safety.max_rot_deviation - 0.01


def test_linear_speed_and_acceleration_are_limited():
    cfg = robot_config(max_linear_speed=0.2, max_linear_accel=0.5)
    cfg.action.pos_scale = 0.1  # a 10 cm jump per step if nothing limited it
    env, arm, _ = make(cfg)
    try:
        env.reset(seed=0)
        t0, arm_start = env.clock.now(), arm.tcp_pose()
        for _ in range(6):
            env.step(action(x=1.0))
        for _ in range(6):
            env.step(action(x=-1.0))
        poses = servo_poses(arm, since=t0, start=arm_start)  # from rest at home
        vel = np.diff(poses[:, :3], axis=0) / DT
        speed = np.linalg.norm(vel, axis=1)
        accel = np.linalg.norm(np.diff(vel, axis=0), axis=1) / DT
        assert speed.max() <= 0.2 + 1e-6
        assert speed.max() > 0.15  # the limit is reached, not an artefact of small steps
        assert accel.max() <= 0.5 + 1e-6
    finally:
        env.close()


def test_angular_speed_and_acceleration_are_limited():
    cfg = robot_config(max_angular_speed=0.5, max_angular_accel=2.0, max_rot_deviation=1.5)
    cfg.action.rot_scale = 0.3
    env, arm, _ = make(cfg)
    try:
        env.reset(seed=0)
        t0, arm_start = env.clock.now(), arm.tcp_pose()
        for _ in range(8):
            env.step(action(rz=1.0))
        poses = servo_poses(arm, since=t0, start=arm_start)  # from rest at home
        rots = Rotation.from_rotvec(poses[:, 3:])
        omega = np.array([(rots[i + 1] * rots[i].inv()).as_rotvec() for i in range(len(rots) - 1)]) / DT
        speed = np.linalg.norm(omega, axis=1)
        alpha = np.linalg.norm(np.diff(omega, axis=0), axis=1) / DT
        assert speed.max() <= 0.5 + 1e-6 and speed.max() > 0.4
        assert alpha.max() <= 2.0 + 1e-6
    finally:
        env.close()


def test_watchdog_stops_the_arm_when_the_policy_stalls(env_arm):
    env, arm, clock = env_arm
    env.reset(seed=0)
    env.step(action(x=0.5))
    clock.advance(0.5 * env.policy_dt)  # 1.5 periods since the last command: within the limit
    assert env.servo.fault is None and not arm.commands_named("servoStop")
    clock.advance(1.0 * env.policy_dt)  # 2.5 periods: the watchdog fires
    assert env.servo.fault[0] == safety.WATCHDOG
    stop_t = arm.commands_named("servoStop")[0][0]
    clock.advance(3 * env.policy_dt)
    assert len(servo_poses(arm, since=stop_t)) == 0, "no servoL after the watchdog stop"
    _, _, terminated, truncated, info = env.step(action(x=0.5))
    assert truncated and not terminated and info["safety_status"] == safety.WATCHDOG
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action())
    env.reset(seed=0)  # a watchdog stop clears at reset
    assert env.step(action())[4]["safety_status"] == safety.OK


@pytest.mark.parametrize("kind", ["protective", "emergency"])
def test_safety_stops_end_the_episode_and_block_reset(env_arm, kind):
    env, arm, _ = env_arm
    env.reset(seed=0)
    env.step(action(x=0.5))
    setattr(arm, f"{kind}_stopped", True)
    _, _, terminated, truncated, info = env.step(action(x=0.5))
    status = safety.PROTECTIVE_STOP if kind == "protective" else safety.EMERGENCY_STOP
    assert truncated and not terminated and info["safety_status"] == status
    n_servo = len(arm.commands_named("servoL"))
    env.clock.advance(2 * env.policy_dt)
    assert len(arm.commands_named("servoL")) == n_servo, "nothing is commanded while stopped"
    with pytest.raises(SafetyStopError, match=kind):
        env.reset(seed=0)
    setattr(arm, f"{kind}_stopped", False)
    env.reset(seed=0)
    assert env.step(action())[4]["safety_status"] == safety.OK


def test_force_limit_stops_the_arm():
    z_wall, stiffness = 0.20, 5000.0  # N/m; home z = 0.25, 60 N at 1.2 cm into the wall

    def wall(pose):
        return np.array([0, 0, max(0.0, (z_wall - pose[2]) * stiffness), 0, 0, 0])

    env, arm, clock = make(wrench_fn=wall)
    try:
        env.reset(seed=0)
        statuses = []
        for _ in range(30):  # TCP +z = base down, 1 cm per step
            _, _, _, truncated, info = env.step(action(z=1.0))
            statuses.append(info["safety_status"])
            if truncated:
                break
        assert statuses[-1] == safety.FORCE_LIMIT and "N" in info["safety_message"]
        stop_t = arm.commands_named("servoStop")[0][0]
        clock.advance(2 * env.policy_dt)
        assert len(servo_poses(arm, since=stop_t + 1e-9)) == 0
        # The force stayed within one servo tick of motion of the limit.
        max_v = env.config.safety.max_linear_speed
        assert (z_wall - arm.tcp_pose()[2]) * stiffness <= 60.0 + stiffness * max_v * DT + 1e-6
        with pytest.raises(SafetyStopError, match="free the arm"):
            env.reset(seed=0)  # still pressed into the wall
        arm.servo(np.asarray(env.home_pose))  # the operator frees the arm
        env.reset(seed=0)
        assert env.step(action())[4]["safety_status"] == safety.OK
    finally:
        env.close()


def test_servo_thread_errors_stop_the_arm_and_surface(env_arm):
    env, arm, _ = env_arm
    env.reset(seed=0)
    env.step(action(x=0.5))
    original = env.receive.getActualTCPPose

    def broken():
        raise ConnectionError("RTDE connection lost")

    env.receive.getActualTCPPose = broken
    _, _, _, truncated, info = env.step(action(x=0.5))
    assert truncated and info["safety_status"] == safety.SERVO_ERROR
    assert "RTDE connection lost" in info["safety_message"] and arm.commands_named("servoStop")
    env.receive.getActualTCPPose = original
    with pytest.raises(RuntimeError, match="servo thread died"):
        env.reset(seed=0)


def test_speedl_mode_obeys_the_same_limits():
    cfg = robot_config(max_linear_speed=0.1)
    cfg.control.mode = "speedL"
    cfg.action.pos_scale = 0.1
    env, arm, _ = make(cfg)
    try:
        env.reset(seed=0)
        for _ in range(5):
            env.step(action(x=1.0, y=-1.0))
        cmds = np.array([args[0] for _, args in arm.commands_named("speedL")])
        assert np.linalg.norm(cmds[:, :3], axis=1).max() <= 0.1 + 1e-9
        assert arm.tcp_pose()[1] > env.home_pose[1] + 0.02  # it moved (TCP -y = base +y)
    finally:
        env.close()


def test_gripper_commands_and_grasp_penalty(env_arm):
    env, arm, _ = env_arm
    env.reset(seed=0)
    info = env.step(action(g=1.0))[4]
    assert info["grasp_penalty"] == pytest.approx(-0.02)
    assert arm.commands_named("setStandardDigitalOut")[-1][1] == (0, True)
    assert env.step(action(g=1.0))[4]["grasp_penalty"] == 0.0  # no change, no command
    assert env.step(action(g=0.2))[4]["grasp_penalty"] == 0.0  # inside the threshold: keep
    obs, _, _, _, info = env.step(action(g=-1.0))
    assert info["grasp_penalty"] == pytest.approx(-0.02) and obs["state"][18] == 0.0
    assert arm.commands_named("setStandardDigitalOut")[-1][1] == (0, False)


def test_bad_input_raises(env_arm):
    env, _, _ = env_arm
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(action(x=float("nan")))
    with pytest.raises(ValueError, match="outside"):
        cfg = robot_config()
        cfg.reset.home_pose = (0.9, 0.0, 0.25, math.pi, 0, 0)
        make(cfg)


@pytest.mark.parametrize("field,value,match", [
    ("control.policy_hz", 100.0, "twice"),
    ("control.servo_hz", 1000.0, "rtde_frequency"),
    ("action.pos_scale", 0.0, "pos_scale"),
    ("action.gripper_threshold", 1.5, "gripper_threshold"),
    ("control.watchdog_periods", 0.5, "watchdog_periods"),
])
def test_bad_robot_config_is_rejected_before_connecting(field, value, match):
    cfg = robot_config()
    group, key = field.split(".")
    cfg[group][key] = value
    with pytest.raises(ValueError, match=match):
        UREnv(cfg, rtde_factory=lambda host, freq: pytest.fail("connected despite a bad config"))


def test_reset_randomisation_is_seeded_and_bounded():
    cfg = robot_config()
    cfg.reset.random_xyz = 0.02
    env, arm, _ = make(cfg)
    try:
        poses = []
        for seed in (1, 2, 1):
            env.reset(seed=seed)
            poses.append(arm.tcp_pose())
        assert np.abs(poses[0][:3] - env.home_pose[:3]).max() <= 0.02 + cfg.reset.tolerance_m
        assert np.linalg.norm(poses[0][:3] - poses[1][:3]) > 1e-3
        np.testing.assert_allclose(poses[0], poses[2], atol=2 * cfg.reset.tolerance_m)
    finally:
        env.close()


def test_policy_side_control_calls_run_on_the_servo_thread(env_arm):
    import threading

    env, _, _ = env_arm
    threads = []
    original = env.control.zeroFtSensor

    def zero():
        threads.append(threading.current_thread().name)
        return original()

    env.control.zeroFtSensor = zero
    env.reset(seed=0)
    assert threads == ["ur-servo"]


def test_missing_ur_rtde_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "rtde_control", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[robot\]"):
        UREnv(robot_config())


def test_watchdog_with_the_real_clock():
    cfg = robot_config()
    cfg.control.servo_hz = 100.0
    cfg.control.policy_hz = 20.0
    env, arm, _ = make(cfg, real_clock=True)
    try:
        env.reset(seed=0)
        env.step(action(x=0.2))
        deadline = time.monotonic() + 10.0
        while env.servo.fault is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert env.servo.fault is not None and env.servo.fault[0] == safety.WATCHDOG
        assert arm.commands_named("servoStop")
    finally:
        env.close()


def test_robotiq_socket_gripper_protocol():
    class FakeSocket:
        def __init__(self):
            self.sent, self.pos = [], 0

        def sendall(self, data):
            self.sent.append(data.decode().strip())

        def recv(self, n):
            cmd = self.sent[-1]
            if cmd.startswith("SET POS"):
                self.pos = int(cmd.split()[2])
            return (f"POS {self.pos}" if cmd == "GET POS" else "ack").encode()

        def close(self):
            pass

    sock = FakeSocket()
    gripper = RobotiqSocketGripper("robot", socket_factory=lambda h, p, t: sock)
    try:
        assert sock.sent[:2] == ["SET ACT 1", "SET GTO 1"]
        gripper.command(True)
        deadline = time.monotonic() + 5.0
        while gripper.position() < 1.0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "SET POS 255" in sock.sent and gripper.position() == 1.0
    finally:
        gripper.close()


def test_missing_robosuite_gives_install_hint(monkeypatch):
    from serl_ext.envs.robosuite_env import make_robosuite_ur_env

    monkeypatch.setitem(sys.modules, "robosuite", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps robosuite==1\.5\.2"):
        make_robosuite_ur_env("Lift")


def test_lockstep_runs_are_deterministic():
    def rollout():
        cfg = robot_config()
        cfg.reset.random_xyz = 0.02
        env, _, _ = make(cfg)
        try:
            rng = np.random.default_rng(0)
            obs, _ = env.reset(seed=5)
            states = [obs["state"]]
            for _ in range(15):
                states.append(env.step(rng.uniform(-1, 1, 7).astype(np.float32))[0]["state"])
            return np.array(states)
        finally:
            env.close()

    np.testing.assert_array_equal(rollout(), rollout())


def test_robot_pc_check_reports_without_moving():
    from serl_ext.robots.ur_check import check, teleop

    cfg = robot_config()
    arm = KinematicArm(cfg.reset.home_pose)
    report = check(cfg, rtde_factory=fake_rtde_factory(arm))
    assert report["ok"] and report["inside_envelope"] and report["distance_to_home_m"] == 0.0
    assert not [c for _, c, _ in arm.commands if c in ("servoL", "speedL", "moveL")]
    arm = KinematicArm([0.9, 0.0, 0.25, math.pi, 0, 0])  # outside the box
    arm.protective_stopped = True
    report = check(cfg, rtde_factory=fake_rtde_factory(arm))
    assert not report["ok"] and not report["inside_envelope"] and report["protective_stopped"]

    class Mouse:
        def get_action(self):
            return np.array([0.0, 1.0, 0, 0, 0, 0]), [0, 0]  # base +y, past the box edge

    clock = LockstepClock(wall_timeout_s=30.0)
    arm = KinematicArm(cfg.reset.home_pose, clock=clock)
    clock.on_tick = arm.advance
    counts = teleop(cfg, seconds=5.0, speed_scale=0.5, rtde_factory=fake_rtde_factory(arm), device=Mouse(),
                    clock=clock)
    assert counts == {"steps": 50, "takeover_steps": 50, "clipped": counts["clipped"], "status": safety.OK}
    assert counts["clipped"] > 0 and arm.tcp_pose()[1] == pytest.approx(cfg.safety.xyz_max[1], abs=1e-4)
    speeds = np.linalg.norm(np.diff([a[0][:3] for _, a in arm.commands_named("servoL")], axis=0), axis=1) * SERVO_HZ
    assert speeds.max() <= 0.5 * cfg.safety.max_linear_speed + 1e-6
    assert speeds.max() > 0.4 * cfg.safety.max_linear_speed


def test_time_limit_holds_the_arm_without_a_watchdog_stop():
    cfg = robot_config()
    cfg.max_episode_steps = 3
    env, arm, clock = make(cfg)
    try:
        env.reset(seed=0)
        truncated = False
        for _ in range(3):
            truncated = env.step(action(x=1.0))[3]
        assert truncated
        clock.advance(10 * env.policy_dt)  # the actor is busy between episodes
        assert env.servo.fault is None and not arm.commands_named("servoStop")
        settled = arm.tcp_pose()
        clock.advance(2 * env.policy_dt)
        np.testing.assert_allclose(arm.tcp_pose(), settled, atol=1e-9)  # braked and holding
        assert env.reset(seed=0)[1]["safety_status"] == safety.OK
    finally:
        env.close()


def test_robot_side_watchdog_is_armed_and_kicked_every_tick(env_arm):
    env, arm, clock = env_arm
    assert arm.commands_named("setWatchdog")[0][1] == (env.config.control.rtde_watchdog_hz,)
    env.reset(seed=0)
    kicks = len(arm.commands_named("kickWatchdog"))
    clock.advance(env.policy_dt)
    assert len(arm.commands_named("kickWatchdog")) - kicks in (12, 13)  # 125 Hz ticks in 0.1 s


def test_fakes_match_ur_rtde_signatures():
    """Where ur_rtde is installed: every fake method exists in ur_rtde with the same arity."""
    import inspect
    import re

    rtde_control = pytest.importorskip("rtde_control")
    rtde_receive = pytest.importorskip("rtde_receive")
    rtde_io = pytest.importorskip("rtde_io")
    from serl_ext.robots import fake_rtde

    pairs = [(fake_rtde.FakeRTDEControl, rtde_control.RTDEControlInterface),
             (fake_rtde.FakeRTDEReceive, rtde_receive.RTDEReceiveInterface),
             (fake_rtde.FakeRTDEIO, rtde_io.RTDEIOInterface)]
    for fake, real in pairs:
        for name, method in inspect.getmembers(fake, inspect.isfunction):
            if name.startswith("_"):
                continue
            assert hasattr(real, name), f"{real.__name__} has no {name}"
            doc = getattr(real, name).__doc__ or ""
            match = re.match(rf"{name}\(self: [\w.]+(.*?)\) ->", doc.strip())
            if match is None:  # overloaded in ur_rtde (e.g. moveL): name checked only
                continue
            real_args = [a for a in match.group(1).split(",") if a.strip()]
            fake_args = list(inspect.signature(method).parameters)[1:]
            assert len(real_args) == len(fake_args), (name, real_args, fake_args)
