"""Real UR5e robot config for ``serl_ext.robots.ur.UREnv`` (every field documented).

Load with ``configs.robots.ur5e.get_config()`` or ``config_flags.DEFINE_config_file("robot",
"configs/robots/ur5e.py")`` and override from the command line, e.g.
``--robot.host=10.0.0.3 --robot.safety.max_force=40``. Base frame = the robot's base frame as
the pendant shows it; poses are ``[x, y, z, rx, ry, rz]`` (m, rotation vector in rad), the
same as ``getActualTCPPose()``. Measure the home pose and the workspace box on your cell with
the pendant before the first run (docs/real_ur_arm.md, safety checklist).
"""

import math

import ml_collections


def camera(backend: str, device="", width=640, height=480, fps=30, crop=None, size=(128, 128)):
    """One camera entry.

    Args:
        backend: ``"opencv"`` (``cv2.VideoCapture(device)``; device = index or path such as
            ``/dev/video0``) or ``"realsense"`` (pyrealsense2; device = serial number, "" = the
            first one found).
        width, height, fps: capture mode requested from the device.
        crop: ``(top, bottom, left, right)`` in pixels of the captured frame, applied first;
            None = the full frame.
        size: ``(height, width)`` of the observation after the crop (resized, area/nearest).
    """
    cfg = ml_collections.ConfigDict()
    cfg.backend = backend
    cfg.device = str(device)
    cfg.width, cfg.height, cfg.fps = int(width), int(height), int(fps)
    cfg.crop = None if crop is None else tuple(int(v) for v in crop)
    cfg.size = tuple(int(v) for v in size)
    return cfg


def get_config() -> ml_collections.ConfigDict:
    """The UR5e config; every field is documented inline."""
    config = ml_collections.ConfigDict()
    config.host = "192.168.1.10"  # Robot controller address (RTDE ports 30004/30001 on it).
    config.rtde_frequency = 500.0  # RTDE data rate (Hz): 500 on e-Series, 125 on CB3.
    config.max_episode_steps = 100  # Policy steps per episode (10 s at 10 Hz).

    # The two loops.
    config.control = ml_collections.ConfigDict()
    config.control.mode = "servoL"  # "servoL" (pose setpoints) or "speedL" (velocity commands).
    config.control.servo_hz = 500.0  # Servo thread rate (125-500 Hz; <= rtde_frequency).
    config.control.policy_hz = 10.0  # Policy steps per second.
    config.control.servo_lookahead_s = 0.1  # servoL lookahead_time (UR range 0.03-0.2 s): smooths, adds lag.
    config.control.servo_gain = 300.0  # servoL gain (UR range 100-2000): stiffer tracking when higher.
    config.control.servo_speed = 0.5  # servoL speed argument (not used by current UR software).
    config.control.servo_accel = 0.5  # servoL acceleration argument (not used by current UR software).
    config.control.stop_deceleration = 2.0  # servoStop (rad/s^2) / speedStop (m/s^2) on a fault.
    # The servo thread stops the arm when no new target came for this many policy periods.
    config.control.watchdog_periods = 2.0
    # ur_rtde's robot-side watchdog (setWatchdog / kickWatchdog every servo tick): the controller
    # stops the arm when updates from this process arrive slower than this (Hz). 0 = off.
    config.control.rtde_watchdog_hz = 50.0

    # Safety envelope, enforced by the servo thread (serl_ext/robots/safety.py).
    config.safety = ml_collections.ConfigDict()
    config.safety.xyz_min = (0.25, -0.35, 0.05)  # Workspace box corner (m, base frame): targets clipped.
    config.safety.xyz_max = (0.60, 0.15, 0.45)  # Opposite corner (m).
    config.safety.max_rot_deviation = 0.6  # Largest angle (rad) away from the home orientation.
    config.safety.max_linear_speed = 0.25  # m/s, commanded TCP speed.
    config.safety.max_angular_speed = 1.0  # rad/s.
    config.safety.max_linear_accel = 1.0  # m/s^2, change of commanded velocity per second.
    config.safety.max_angular_accel = 4.0  # rad/s^2.
    config.safety.max_force = 60.0  # N, |TCP force| above this stops the arm and ends the episode.
    config.safety.max_torque = 8.0  # Nm, |TCP torque| above this does the same.

    # Action -> target (HiL-SERL's relative frame).
    config.action = ml_collections.ConfigDict()
    config.action.frame = "tcp"  # "tcp": deltas in the current TCP frame; "base": in the base frame.
    config.action.pos_scale = 0.01  # m per step at |a| = 1 (0.1 m/s at 10 Hz).
    config.action.rot_scale = 0.05  # rad per step at |a| = 1.
    config.action.gripper_threshold = 0.5  # a[6] > t closes, < -t opens, otherwise no change.
    config.action.grasp_penalty = -0.02  # info["grasp_penalty"] on a gripper change (HiL-SERL).

    # Reset.
    config.reset = ml_collections.ConfigDict()
    config.reset.home_pose = (0.42, -0.10, 0.25, math.pi, 0.0, 0.0)  # Tool pointing down.
    config.reset.random_xyz = 0.02  # Uniform +-m added to the home position per episode (0 = none).
    config.reset.random_rot = 0.05  # Uniform +-rad per axis (TCP frame) added to the home orientation.
    config.reset.speed_scale = 0.5  # Fraction of the speed limits used while moving home.
    config.reset.tolerance_m = 0.003  # Home reached when within this distance ...
    config.reset.tolerance_rad = 0.02  # ... and this angle.
    config.reset.timeout_s = 20.0  # TimeoutError when home is not reached in this time.
    config.reset.settle_steps = 2  # Policy periods to wait at home before zeroing the F/T sensor.
    config.reset.zero_ft_sensor = True  # zeroFtSensor() at home (UR's wrench drifts).
    config.reset.open_gripper = True  # Open the gripper at reset.

    # Gripper.
    config.gripper = ml_collections.ConfigDict()
    config.gripper.type = "robotiq"  # "robotiq" (URCap socket), "io" (digital output) or "none".
    config.gripper.robotiq_port = 63352  # Robotiq URCap socket port on the controller.
    config.gripper.robotiq_speed = 255  # 0..255.
    config.gripper.robotiq_force = 100  # 0..255.
    config.gripper.io_output = 0  # Digital output number (type "io").
    config.gripper.io_tool_output = False  # True: tool output; False: controller box output.
    config.gripper.io_close_level = True  # Output level that closes the gripper.

    # Observation.
    config.observation = ml_collections.ConfigDict()
    config.observation.relative_frame = True  # TCP pose relative to the pose reached at reset.

    # Cameras: name -> camera(...); the observation key is the name.
    config.cameras = ml_collections.ConfigDict()
    config.cameras.wrist = camera("realsense", device="", width=640, height=480, fps=30,
                                  crop=(0, 480, 80, 560), size=(128, 128))
    config.cameras.front = camera("opencv", device="0", width=640, height=480, fps=30,
                                  crop=(40, 440, 120, 520), size=(128, 128))
    config.camera_max_age_s = 0.1  # A frame older than this at observation time is stale.
    config.camera_on_stale = "error"  # "error": raise StaleFrameError; "flag": info["stale_cameras"].
    return config
