"""Simulated UR5e (robosuite 1.5.2) config: ``configs/robots/ur5e.py`` with the cell of the
robosuite scene. Used by ``serl_ext.envs.robosuite_env.make_robosuite_ur_env``.

Frames as on the real arm: poses in the robot's base frame (robosuite's robot base body, not
rotated; at world (-0.56, 0, 0.912) in Lift, where the table top is at base z = -0.112 and the
cube starts near base (0.56, 0, -0.09); at (-0.41, 0, 0.912) in Wipe). Only the fields that differ from the real
config are set here; see ``ur5e.py`` for what every field means.
"""

import math

import ml_collections

from configs.robots import ur5e

# Tool pointing down, fingers along the base y axis (robosuite's initial UR5e orientation).
_DOWN = (math.pi / math.sqrt(2.0), math.pi / math.sqrt(2.0), 0.0)


def get_config(task: str = "Lift") -> ml_collections.ConfigDict:
    """Args: task: ``"Lift"`` or ``"Wipe"`` (workspace and episode length differ)."""
    config = ur5e.get_config()
    config.host = "robosuite"  # Not a network address: the fake RTDE interfaces ignore it.
    config.rtde_frequency = 125.0
    config.control.servo_hz = 125.0  # = robosuite's control frequency (one OSC update per tick).
    config.control.policy_hz = 10.0
    config.gripper.type = "io"  # Standard digital output 0 drives robosuite's gripper.
    # State observations only; for images add robosuite cameras, e.g.
    # config.cameras.front = ur5e.camera("robosuite", device="frontview", width=64, height=64,
    #                                    size=(64, 64))   # also "robot0_eye_in_hand"
    config.cameras = ml_collections.ConfigDict()
    config.reset.zero_ft_sensor = True
    config.reset.random_xyz = 0.02
    config.reset.random_rot = 0.0
    config.reset.timeout_s = 20.0
    config.reset.tolerance_m = 0.01  # The OSC controller sags a few mm under gravity.
    config.reset.tolerance_rad = 0.05
    config.safety.max_linear_speed = 0.3
    config.safety.max_linear_accel = 2.0
    config.safety.max_rot_deviation = 0.5
    config.action.pos_scale = 0.02  # 0.2 m/s at 10 Hz and |a| = 1.
    config.action.rot_scale = 0.05
    if task == "Lift":
        config.max_episode_steps = 80
        config.reset.home_pose = (0.50, 0.0, 0.05) + _DOWN
        config.safety.xyz_min = (0.30, -0.25, -0.105)  # 7 mm above the table top (base z -0.112).
        config.safety.xyz_max = (0.75, 0.25, 0.25)
        config.safety.max_force = 80.0
        config.safety.max_torque = 10.0
        # A top-down pick: the tool stays within 0.15 rad of pointing down. With 0.5 rad the
        # policy's rotation dims (which the expert leaves at ~0) tilted the gripper to the limit.
        config.safety.max_rot_deviation = 0.15
    elif task == "Wipe":
        config.max_episode_steps = 150
        config.gripper.type = "none"  # The wiping tool has no fingers.
        config.reset.home_pose = (0.56, 0.0, 0.0) + _DOWN
        config.safety.xyz_min = (0.30, -0.35, -0.13)  # Lets the sponge press into the table.
        config.safety.xyz_max = (0.85, 0.35, 0.20)
        config.safety.max_force = 120.0
        config.safety.max_torque = 15.0
    else:
        raise ValueError(f"task must be 'Lift' or 'Wipe', got {task!r}")
    return config
