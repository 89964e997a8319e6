"""Safety envelope of the UR arm: workspace box, speed and acceleration limits, force limit.

Pure functions and a small config holder, used by the servo thread of ``UREnv``
(``serl_ext/robots/ur.py``), which is the only code that commands the arm. Poses are UR's
``[x, y, z, rx, ry, rz]`` in the robot base frame: position in metres, orientation as a
rotation vector (axis * angle, radians), float64 (6,).

Rules (each one has a test in ``tests/test_ur.py`` that fails when the rule is removed):

- workspace box: every target position is clipped into ``[xyz_min, xyz_max]``; the
  orientation is kept within ``max_rot_deviation`` radians of the reference (home)
  orientation.
- speed: the commanded linear speed never exceeds ``max_linear_speed`` (m/s), the angular
  speed never ``max_angular_speed`` (rad/s).
- acceleration: from one servo tick to the next the commanded velocity changes by at most
  ``max_linear_accel * dt`` (m/s) and ``max_angular_accel * dt`` (rad/s); the setpoint also
  slows down in time to stop at the target (``v <= sqrt(2 a d)``).
- force: ``|F| > max_force`` (N) or ``|T| > max_torque`` (Nm) on the TCP wrench stops the arm.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

# Safety statuses reported in ``info["safety_status"]``.
OK = "ok"
FORCE_LIMIT = "force_limit"
PROTECTIVE_STOP = "protective_stop"
EMERGENCY_STOP = "emergency_stop"
WATCHDOG = "watchdog"
SERVO_ERROR = "servo_error"  # the servo thread raised (e.g. the RTDE connection broke)
STATUSES = (OK, FORCE_LIMIT, PROTECTIVE_STOP, EMERGENCY_STOP, WATCHDOG, SERVO_ERROR)


@dataclasses.dataclass(frozen=True)
class Envelope:
    """Limits of the safety envelope (SI units).

    Attributes:
        xyz_min, xyz_max: corners of the workspace box in the base frame (m), each (3,).
        max_rot_deviation: largest angle (rad) between a target orientation and
            ``reference_rotvec`` (the home orientation); larger rotations are scaled back.
        reference_rotvec: rotation vector (3,) of the reference orientation.
        max_linear_speed: m/s. max_angular_speed: rad/s.
        max_linear_accel: m/s^2. max_angular_accel: rad/s^2.
        max_force: N (norm of the TCP force). max_torque: Nm (norm of the TCP torque).

    Raises:
        ValueError: a non-positive limit, a box with ``xyz_min >= xyz_max`` on any axis, or
            a non-finite value.
    """

    xyz_min: Tuple[float, float, float]
    xyz_max: Tuple[float, float, float]
    max_rot_deviation: float
    reference_rotvec: Tuple[float, float, float]
    max_linear_speed: float
    max_angular_speed: float
    max_linear_accel: float
    max_angular_accel: float
    max_force: float
    max_torque: float

    def __post_init__(self):
        lo, hi = np.asarray(self.xyz_min, float), np.asarray(self.xyz_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or np.asarray(self.reference_rotvec).shape != (3,):
            raise ValueError("xyz_min, xyz_max and reference_rotvec must each have 3 values")
        values = np.concatenate([lo, hi, np.asarray(self.reference_rotvec, float),
                                 [self.max_rot_deviation, self.max_linear_speed,
                                  self.max_angular_speed, self.max_linear_accel,
                                  self.max_angular_accel, self.max_force, self.max_torque]])
        if not np.all(np.isfinite(values)):
            raise ValueError(f"envelope values must be finite: {self}")
        if np.any(lo >= hi):
            raise ValueError(f"workspace box needs xyz_min < xyz_max on every axis, got {lo} / {hi}")
        for name in ("max_rot_deviation", "max_linear_speed", "max_angular_speed",
                     "max_linear_accel", "max_angular_accel", "max_force", "max_torque"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, safety: Mapping, reference_rotvec, speed_scale: float = 1.0) -> "Envelope":
        """Builds an envelope from a robot config's ``safety`` block (see ``configs/robots``).

        ``speed_scale`` multiplies the speed limits (the reset uses ``reset_speed_scale``).
        """
        return cls(
            xyz_min=tuple(float(v) for v in safety["xyz_min"]),
            xyz_max=tuple(float(v) for v in safety["xyz_max"]),
            max_rot_deviation=float(safety["max_rot_deviation"]),
            reference_rotvec=tuple(float(v) for v in reference_rotvec),
            max_linear_speed=float(safety["max_linear_speed"]) * speed_scale,
            max_angular_speed=float(safety["max_angular_speed"]) * speed_scale,
            max_linear_accel=float(safety["max_linear_accel"]),
            max_angular_accel=float(safety["max_angular_accel"]),
            max_force=float(safety["max_force"]),
            max_torque=float(safety["max_torque"]),
        )

    def contains(self, pose, tol: float = 1e-9) -> bool:
        """Whether ``pose`` (6,) lies in the box and within the rotation limit."""
        pose = np.asarray(pose, float)
        inside = np.all(pose[:3] >= np.asarray(self.xyz_min) - tol) and np.all(
            pose[:3] <= np.asarray(self.xyz_max) + tol)
        return bool(inside) and rotation_angle(self.reference_rotvec, pose[3:]) <= self.max_rot_deviation + 1e-6

    def clip_pose(self, pose) -> Tuple[np.ndarray, bool]:
        """Clips a target pose into the envelope.

        Args:
            pose: float (6,) target ``[x, y, z, rx, ry, rz]`` (m, rad).
        Returns:
            ``(clipped float64 (6,), was_clipped bool)``.
        Raises:
            ValueError: wrong shape or non-finite values.
        """
        pose = check_pose(pose, "target pose")
        out = pose.copy()
        out[:3] = np.clip(pose[:3], self.xyz_min, self.xyz_max)
        ref = Rotation.from_rotvec(self.reference_rotvec)
        rel = (ref.inv() * Rotation.from_rotvec(pose[3:])).as_rotvec()
        angle = float(np.linalg.norm(rel))
        if angle > self.max_rot_deviation:
            rel = rel * (self.max_rot_deviation / angle)
            out[3:] = (ref * Rotation.from_rotvec(rel)).as_rotvec()
        clipped = bool(np.any(np.abs(out[:3] - pose[:3]) > 0.0)) or angle > self.max_rot_deviation
        return out, clipped

    def wrench_exceeded(self, wrench) -> Optional[str]:
        """A message when the wrench (6,) [Fx, Fy, Fz (N), Tx, Ty, Tz (Nm)] exceeds a limit, else None."""
        wrench = np.asarray(wrench, float).reshape(6)
        force, torque = float(np.linalg.norm(wrench[:3])), float(np.linalg.norm(wrench[3:]))
        if not np.isfinite(force) or force > self.max_force:
            return f"TCP force {force:.1f} N > limit {self.max_force:.1f} N"
        if not np.isfinite(torque) or torque > self.max_torque:
            return f"TCP torque {torque:.2f} Nm > limit {self.max_torque:.2f} Nm"
        return None


def check_pose(pose, what: str = "pose") -> np.ndarray:
    """``pose`` as float64 (6,); raises ValueError on a wrong shape or NaN/inf."""
    arr = np.asarray(pose, dtype=np.float64)
    if arr.shape != (6,):
        raise ValueError(f"{what} must have shape (6,) [x, y, z, rx, ry, rz], got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} has non-finite values: {arr}")
    return arr


def rotation_angle(rotvec_a, rotvec_b) -> float:
    """Angle (rad, in [0, pi]) of the rotation between two orientations given as rotation vectors."""
    rel = Rotation.from_rotvec(np.asarray(rotvec_a, float)).inv() * Rotation.from_rotvec(
        np.asarray(rotvec_b, float))
    return float(np.linalg.norm(rel.as_rotvec()))


def _limit_axis(error: np.ndarray, velocity: np.ndarray, dt: float, v_max: float,
                a_max: float) -> np.ndarray:
    """Next velocity (3,) towards ``error`` under speed, acceleration and stopping limits."""
    dist = float(np.linalg.norm(error))
    if dist > 1e-12:
        # Fastest speed that still stops at the target with deceleration a_max, and never
        # more than what reaches the target within this tick (no overshoot at low speed).
        speed = min(v_max, np.sqrt(2.0 * a_max * dist), dist / dt)
        desired = error / dist * speed
    else:
        desired = np.zeros(3)
    change = desired - velocity
    max_change = a_max * dt
    norm = float(np.linalg.norm(change))
    if norm > max_change:
        change = change * (max_change / norm)
    new = velocity + change
    speed = float(np.linalg.norm(new))
    if speed > v_max:  # velocity carried from a higher limit (e.g. reset -> policy)
        new = new * (v_max / speed)
    return new


def limit_motion(pose, velocity, target, dt: float, envelope: Envelope) -> Tuple[np.ndarray, np.ndarray]:
    """One servo tick of the motion limiter.

    Moves the setpoint ``pose`` towards ``target`` so that the linear and angular speed,
    and their change per tick, stay within ``envelope``'s limits.

    Args:
        pose: float (6,) current setpoint (m, rotation vector in rad), base frame.
        velocity: float (6,) current commanded velocity ``[vx, vy, vz, wx, wy, wz]``
            (m/s, rad/s, angular velocity in the base frame).
        target: float (6,) target pose (already clipped into the envelope).
        dt: servo period (s), > 0.
        envelope: the limits.
    Returns:
        ``(new_pose float64 (6,), new_velocity float64 (6,))``.
    Raises:
        ValueError: bad shapes, non-finite input or ``dt <= 0``.
    """
    pose = check_pose(pose, "setpoint")
    target = check_pose(target, "target")
    velocity = np.asarray(velocity, np.float64).reshape(6)
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    v_lin = _limit_axis(target[:3] - pose[:3], velocity[:3], dt, envelope.max_linear_speed,
                        envelope.max_linear_accel)
    rot = Rotation.from_rotvec(pose[3:])
    rot_error = (Rotation.from_rotvec(target[3:]) * rot.inv()).as_rotvec()  # base frame
    v_ang = _limit_axis(rot_error, velocity[3:], dt, envelope.max_angular_speed,
                        envelope.max_angular_accel)
    v_lin = _brake_at_walls(pose[:3], v_lin, envelope)
    v_ang = _brake_at_rotation_limit(pose[3:], v_ang, envelope)
    new_pose = np.empty(6)
    new_pose[:3] = pose[:3] + v_lin * dt
    new_pose[3:] = (Rotation.from_rotvec(v_ang * dt) * rot).as_rotvec()
    # Hard guard: the setpoint never leaves the envelope (nor moves further out if it starts
    # outside, e.g. after the arm was jogged by hand). The braking above makes this rare.
    lo = np.minimum(envelope.xyz_min, pose[:3])
    hi = np.maximum(envelope.xyz_max, pose[:3])
    guarded = np.clip(new_pose[:3], lo, hi)
    if np.any(guarded != new_pose[:3]):
        new_pose[:3] = guarded
        v_lin = (guarded - pose[:3]) / dt
    old_dev = rotation_angle(envelope.reference_rotvec, pose[3:])
    limit = max(envelope.max_rot_deviation, old_dev)
    if rotation_angle(envelope.reference_rotvec, new_pose[3:]) > limit:
        ref = Rotation.from_rotvec(envelope.reference_rotvec)
        rel = (ref.inv() * Rotation.from_rotvec(new_pose[3:])).as_rotvec()
        rel *= limit / np.linalg.norm(rel)
        new_rot = ref * Rotation.from_rotvec(rel)
        new_pose[3:] = new_rot.as_rotvec()
        v_ang = (new_rot * rot.inv()).as_rotvec() / dt
    return new_pose, np.concatenate([v_lin, v_ang])


def _brake_at_walls(pos: np.ndarray, v: np.ndarray, envelope: Envelope) -> np.ndarray:
    """Per axis, caps the speed towards a wall of the box at ``sqrt(2 a d_wall)``."""
    v = v.copy()
    a = envelope.max_linear_accel
    for i in range(3):
        if v[i] > 0:
            v[i] = min(v[i], np.sqrt(2.0 * a * max(envelope.xyz_max[i] - pos[i], 0.0)))
        elif v[i] < 0:
            v[i] = max(v[i], -np.sqrt(2.0 * a * max(pos[i] - envelope.xyz_min[i], 0.0)))
    return v


def _brake_at_rotation_limit(rotvec: np.ndarray, w: np.ndarray, envelope: Envelope) -> np.ndarray:
    """Caps the rate at which the deviation from the reference grows at ``sqrt(2 alpha margin)``.

    With ``R = R_ref exp(r)`` and a base-frame angular velocity ``w``, the deviation angle
    ``|r|`` grows at ``r_hat . (R_ref^T w)``.
    """
    ref = Rotation.from_rotvec(envelope.reference_rotvec)
    r = (ref.inv() * Rotation.from_rotvec(rotvec)).as_rotvec()
    dev = float(np.linalg.norm(r))
    if dev < 1e-9:
        return w
    r_hat = r / dev
    w_ref = ref.inv().apply(w)
    rate = float(r_hat @ w_ref)
    cap = np.sqrt(2.0 * envelope.max_angular_accel * max(envelope.max_rot_deviation - dev, 0.0))
    if rate > cap:
        w_ref = w_ref - (rate - cap) * r_hat
        return ref.apply(w_ref)
    return w
