"""Robot-PC checks before a run: connection, envelope, cameras; optional SpaceMouse teleop.

    python -m serl_ext.robots.ur_check --robot=configs/robots/ur5e.py --robot.host=10.0.0.3
    python -m serl_ext.robots.ur_check --robot=configs/robots/ur5e.py --teleop_s=60 --speed_scale=0.3

The first form moves nothing: it connects, reads the TCP pose, wrench and safety state,
says whether the arm is inside the workspace box and how far from home it is, opens the
cameras and reports their frame rate and age. The second also moves home and then lets the
operator drive the arm with the SpaceMouse (zero policy) for the given time, with the speed
limits scaled down, to try the envelope by hand (docs/real_ur_arm.md, safety checklist).
"""

from __future__ import annotations

import json
import time
from typing import Callable, Optional

import numpy as np

from serl_ext.robots import safety


def check(config, rtde_factory: Optional[Callable] = None, cameras=None, camera_seconds: float = 2.0) -> dict:
    """Reads the robot and the cameras without moving anything.

    Args:
        config: a robot config (``configs/robots/ur5e.py``).
        rtde_factory: as for ``UREnv``; None = ur_rtde.
        cameras: a ``CameraRig`` to check; None = built from ``config.cameras`` (none if empty).
        camera_seconds: how long to watch the cameras.
    Returns:
        A report dict: ``tcp_pose``, ``wrench``, ``protective_stopped``, ``emergency_stopped``,
        ``inside_envelope``, ``distance_to_home_m``, ``angle_to_home_rad``, ``wrench_ok``,
        ``cameras`` ({name: {"frames", "fps", "age_ms"}}), ``ok`` (everything fine).
    Raises:
        ImportError: ur_rtde / opencv / pyrealsense2 missing (with the install hint).
    """
    from serl_ext.robots.ur import default_rtde_factory

    control, receive, _ = (rtde_factory or default_rtde_factory)(config.host, float(config.rtde_frequency))
    home = safety.check_pose(config.reset.home_pose, "reset.home_pose")
    envelope = safety.Envelope.from_config(config.safety, home[3:])
    pose = np.asarray(receive.getActualTCPPose(), float)
    wrench = np.asarray(receive.getActualTCPForce(), float)
    report = {
        "tcp_pose": pose.round(5).tolist(),
        "wrench": wrench.round(3).tolist(),
        "protective_stopped": bool(receive.isProtectiveStopped()),
        "emergency_stopped": bool(receive.isEmergencyStopped()),
        "inside_envelope": envelope.contains(pose, tol=1e-4),
        "home_inside_envelope": envelope.contains(home),
        "distance_to_home_m": float(np.linalg.norm(pose[:3] - home[:3])),
        "angle_to_home_rad": safety.rotation_angle(pose[3:], home[3:]),
        "wrench_ok": envelope.wrench_exceeded(wrench) is None,
        "cameras": {},
    }
    if cameras is None and len(config.get("cameras", {})) > 0:
        from serl_ext.robots.cameras import CameraRig
        from serl_ext.robots.clock import RealClock

        cameras = CameraRig.from_config(config.cameras, RealClock(), float(config.camera_max_age_s), "flag")
    if cameras is not None:
        try:
            first = {c.name: c.latest()[2] for c in cameras.cameras}
            time.sleep(camera_seconds)
            for cam in cameras.cameras:
                image, t, seq = cam.latest()
                report["cameras"][cam.name] = {
                    "frames": int(seq),
                    "fps": (seq - first[cam.name]) / camera_seconds,
                    "age_ms": None if t is None else (time.monotonic() - t) * 1e3,
                    "shape": None if image is None else list(image.shape),
                }
        finally:
            cameras.close()
    try:
        control.disconnect()
    except Exception:  # pragma: no cover - hardware dependent
        pass
    cams_ok = all(c["age_ms"] is not None and c["age_ms"] <= float(config.camera_max_age_s) * 1e3
                  for c in report["cameras"].values())
    report["ok"] = bool(report["inside_envelope"] and report["home_inside_envelope"] and report["wrench_ok"]
                        and not report["protective_stopped"] and not report["emergency_stopped"] and cams_ok)
    return report


def teleop(config, seconds: float, speed_scale: float = 0.3, rtde_factory=None, device=None,
           clock=None) -> dict:
    """Moves home, then drives the arm with the SpaceMouse (zero policy) for ``seconds``.

    The speed limits are multiplied by ``speed_scale`` (in (0, 1]). ``rtde_factory``,
    ``device`` (SpaceMouse) and ``clock`` as for ``UREnv`` / ``SpaceMouse6Intervention``.
    Returns the count of steps, takeover steps, clipped targets and the final safety status.
    """
    from serl_ext.envs.intervention import SpaceMouse6Intervention
    from serl_ext.robots.ur import UREnv

    if not 0.0 < speed_scale <= 1.0:
        raise ValueError(f"speed_scale must be in (0, 1], got {speed_scale}")
    config = config.copy_and_resolve_references()
    config.safety.max_linear_speed *= speed_scale
    config.safety.max_angular_speed *= speed_scale
    config.max_episode_steps = int(seconds * config.control.policy_hz) + 1
    env = SpaceMouse6Intervention(UREnv(config, rtde_factory=rtde_factory, clock=clock), device=device)
    counts = {"steps": 0, "takeover_steps": 0, "clipped": 0, "status": safety.OK}
    try:
        env.reset()
        while counts["steps"] < config.max_episode_steps - 1:
            _, _, terminated, truncated, info = env.step(np.zeros(7, np.float32))
            counts["steps"] += 1
            counts["takeover_steps"] += int("intervene_action" in info)
            counts["clipped"] += int(info["safety/target_clipped"])
            counts["status"] = info["safety_status"]
            if terminated or truncated:
                break
    finally:
        env.close()
    return counts


def main(argv) -> None:  # pragma: no cover - needs a robot
    from absl import flags

    flags_ = flags.FLAGS
    report = check(flags_.robot)
    print(json.dumps(report, indent=2))
    if flags_.teleop_s > 0:
        if not report["ok"]:
            raise SystemExit("checks failed: fix them before moving the arm")
        print(json.dumps(teleop(flags_.robot, flags_.teleop_s, flags_.speed_scale), indent=2))


if __name__ == "__main__":  # pragma: no cover
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("robot", "configs/robots/ur5e.py", "robot config file")
    flags.DEFINE_float("teleop_s", 0.0, "after the checks, SpaceMouse teleop for this many seconds")
    flags.DEFINE_float("speed_scale", 0.3, "speed limits x this during teleop")
    app.run(main)
