"""UREnv closing the loop on a simulated UR5e (robosuite 1.5.2, MuJoCo): the same servo
thread, envelope and policy loop as on the robot, through the fake RTDE interfaces.

Skipped when robosuite is not installed (``pip install -e .[robosuite]`` then
``pip install --no-deps robosuite==1.5.2``).
"""

import numpy as np
import pytest

pytest.importorskip("robosuite")

from configs.robots import ur5e_sim  # noqa: E402
from serl_ext.envs.robosuite_env import make_robosuite_ur_env, scripted_expert  # noqa: E402
from serl_ext.robots import safety  # noqa: E402


@pytest.fixture(scope="module")
def lift_env():
    env = make_robosuite_ur_env("Lift", seed=0)
    yield env
    env.close()


def test_reset_and_tcp_frame_motion_on_the_simulated_arm(lift_env):
    env = lift_env
    obs, info = env.reset(seed=3)
    home = np.asarray(env.config.reset.home_pose)
    assert np.abs(env.arm.tcp_pose()[:3] - home[:3]).max() <= env.config.reset.random_xyz + 0.011
    assert obs["state"].shape == env.observation_space["state"].shape == (19 + 6,)
    z0 = env.arm.tcp_pose()[2]
    n_servo = len(env.arm.commands_named("servoL"))
    for _ in range(5):  # TCP +z points down (tool down)
        obs, _, _, _, info = env.step(np.array([0, 0, 1.0, 0, 0, 0, -1.0], np.float32))
    assert env.arm.tcp_pose()[2] < z0 - 0.015  # lags the 10 cm asked: targets start from the measured pose
    # 5 policy steps at 10 Hz with a 125 Hz servo thread: 62-63 servoL commands.
    assert 60 <= len(env.arm.commands_named("servoL")) - n_servo <= 65
    assert info["latency/servo_period_ms_mean"] == pytest.approx(8.0)
    assert info["safety_status"] == safety.OK
    assert obs["state"][2] > 0.015  # relative pose, reset frame (tool down): TCP +z is down


def test_lift_expert_succeeds_on_a_seed(lift_env):
    env = lift_env
    obs, _ = env.reset(seed=1)
    policy = scripted_expert(env)
    for _ in range(env.max_episode_steps):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        if terminated or truncated:
            break
    assert terminated and info["success"] and reward == 1.0
    assert info["safety_status"] == safety.OK


def test_pressing_into_the_table_trips_the_force_limit():
    cfg = ur5e_sim.get_config("Lift")
    cfg.safety.xyz_min = (0.30, -0.25, -0.30)  # box below the table: only the force limit protects it
    cfg.safety.max_force = 40.0
    cfg.reset.random_xyz = 0.0
    env = make_robosuite_ur_env("Lift", seed=0, config=cfg)
    try:
        env.reset(seed=0)
        env.arm.commands.clear()
        status, steps = safety.OK, 0
        for steps in range(1, 60):
            # Down, beside the cube (fingers closed): TCP +z = base -z; TCP x = base y.
            _, _, _, truncated, info = env.step(np.array([0.5, 0, 1.0, 0, 0, 0, 1.0], np.float32))
            status = info["safety_status"]
            if truncated:
                break
        assert status == safety.FORCE_LIMIT, (steps, info["safety_message"])
        assert env.arm.commands_named("servoStop")
        assert env.arm.tcp_pose()[2] > -0.16  # stopped on the table, not pushed through it
    finally:
        env.close()


def test_rendered_cameras_on_the_simulated_arm():
    from configs.robots import ur5e

    cfg = ur5e_sim.get_config("Lift")
    cfg.cameras.front = ur5e.camera("robosuite", device="frontview", width=48, height=48, crop=(8, 48, 4, 44),
                                    size=(20, 20))
    try:
        env = make_robosuite_ur_env("Lift", seed=0, config=cfg)
    except Exception as err:  # no EGL / OSMesa on this machine
        pytest.skip(f"offscreen rendering unavailable: {err!r}")
    try:
        assert env.observation_space["front"].shape == (20, 20, 3)
        obs, _ = env.reset(seed=0)
        obs, _, _, _, info = env.step(np.zeros(7, np.float32))
        assert obs["front"].dtype == np.uint8 and obs["front"].shape == (20, 20, 3)
        assert obs["front"].std() > 5  # a scene, not a blank frame
        assert info["obs_timestamps"]["front"] == pytest.approx(env.clock.now())
    finally:
        env.close()
