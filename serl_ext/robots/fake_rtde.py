"""Stand-ins for ur_rtde's interfaces, for tests and simulation (no robot, no network).

``FakeRTDEControl``, ``FakeRTDEReceive`` and ``FakeRTDEIO`` have the method names and
signatures of ur_rtde's ``RTDEControlInterface``, ``RTDEReceiveInterface`` and
``RTDEIOInterface`` (the subset ``UREnv`` uses, plus a few common ones), and forward to an
*arm backend*. Every call is recorded in ``arm.commands`` as ``(time, name, args)``.

Backends:

- ``KinematicArm`` (here): the TCP follows ``servoL`` setpoints exactly and integrates
  ``speedL`` velocities; the wrench comes from an optional ``wrench_fn(pose)`` (e.g. a stiff
  wall); protective and emergency stops are set by the test. While stopped, motion commands
  return False and do nothing, as on the robot (the control script is not running).
- ``RobosuiteArm`` (``serl_ext/envs/robosuite_env.py``): a UR5e simulated in MuJoCo.

A backend implements: ``tcp_pose() (6,)``, ``tcp_speed() (6,)``, ``tcp_force() (6,)``,
``servo(pose)``, ``speed(xd, acceleration)``, ``stop(deceleration)``, ``time() -> float``,
attributes ``protective_stopped``, ``emergency_stopped``, ``digital_out`` (dict),
``commands`` (list), and ``advance(dt)`` (called by the ``LockstepClock`` between servo ticks).
"""

from __future__ import annotations

import threading
from typing import Callable, List, Optional, Sequence

import numpy as np
from scipy.spatial.transform import Rotation


class KinematicArm:
    """An ideal arm: pose follows commands, no dynamics.

    Args:
        pose: initial TCP pose (6,) ``[x, y, z, rx, ry, rz]`` (m, rad), base frame.
        wrench_fn: ``pose (6,) -> wrench (6,)`` [N, Nm]; None = zero wrench.
        clock: object with ``now()``; the timestamps of ``commands`` and ``getTimestamp``.
    """

    def __init__(self, pose: Sequence[float], wrench_fn: Optional[Callable] = None, clock=None):
        self._lock = threading.Lock()
        self._pose = np.asarray(pose, np.float64).reshape(6).copy()
        self._speed = np.zeros(6)
        self._velocity_cmd = np.zeros(6)
        self.wrench_fn = wrench_fn
        self.clock = clock
        self.protective_stopped = False
        self.emergency_stopped = False
        self.ft_offset = np.zeros(6)
        self.digital_out: dict = {}
        self.commands: List[tuple] = []

    # -- bookkeeping
    def time(self) -> float:
        return float(self.clock.now()) if self.clock is not None else 0.0

    def record(self, name: str, *args) -> None:
        with self._lock:
            self.commands.append((self.time(), name, tuple(np.array(a, copy=True) if isinstance(a, (list, np.ndarray)) else a for a in args)))

    def commands_named(self, name: str) -> list:
        """The recorded ``(time, args)`` of every call named ``name``."""
        with self._lock:
            return [(t, args) for t, n, args in self.commands if n == name]

    @property
    def stopped(self) -> bool:
        return self.protective_stopped or self.emergency_stopped

    # -- state
    def tcp_pose(self) -> np.ndarray:
        with self._lock:
            return self._pose.copy()

    def tcp_speed(self) -> np.ndarray:
        with self._lock:
            return self._speed.copy()

    def tcp_force(self) -> np.ndarray:
        raw = np.zeros(6) if self.wrench_fn is None else np.asarray(self.wrench_fn(self.tcp_pose()), float)
        return raw - self.ft_offset

    # -- commands
    def servo(self, pose) -> None:
        with self._lock:
            self._velocity_cmd = np.zeros(6)
            self._pose = np.asarray(pose, np.float64).copy()

    def speed(self, xd, acceleration: float) -> None:
        with self._lock:
            self._velocity_cmd = np.asarray(xd, np.float64).copy()

    def stop(self, deceleration: float) -> None:
        with self._lock:
            self._velocity_cmd = np.zeros(6)
            self._speed = np.zeros(6)

    def advance(self, dt: float) -> None:
        """Integrates the ``speedL`` velocity over ``dt`` seconds."""
        with self._lock:
            if self.stopped:
                self._velocity_cmd = np.zeros(6)
            v = self._velocity_cmd
            if np.any(v):
                self._pose[:3] += v[:3] * dt
                self._pose[3:] = (Rotation.from_rotvec(v[3:] * dt) * Rotation.from_rotvec(self._pose[3:])).as_rotvec()
            self._speed = v.copy()


class FakeRTDEControl:
    """``rtde_control.RTDEControlInterface`` stand-in forwarding to an arm backend."""

    def __init__(self, arm, hostname: str = "fake", frequency: float = -1.0):
        self.arm = arm
        self.hostname = hostname
        self._connected = True

    def _motion_allowed(self) -> bool:
        return self._connected and not self.arm.stopped

    def servoL(self, pose: List[float], speed: float, acceleration: float, time: float,
               lookahead_time: float, gain: float) -> bool:
        self.arm.record("servoL", list(pose), speed, acceleration, time, lookahead_time, gain)
        if not self._motion_allowed():
            return False
        self.arm.servo(np.asarray(pose, float))
        return True

    def speedL(self, xd: List[float], acceleration: float = 0.25, time: float = 0.0) -> bool:
        self.arm.record("speedL", list(xd), acceleration, time)
        if not self._motion_allowed():
            return False
        self.arm.speed(np.asarray(xd, float), acceleration)
        return True

    def servoStop(self, a: float = 10.0) -> bool:
        self.arm.record("servoStop", a)
        self.arm.stop(a)
        return True

    def speedStop(self, a: float = 10.0) -> bool:
        self.arm.record("speedStop", a)
        self.arm.stop(a)
        return True

    def moveL(self, pose: List[float], speed: float = 0.25, acceleration: float = 1.2,
              asynchronous: bool = False) -> bool:
        self.arm.record("moveL", list(pose), speed, acceleration, asynchronous)
        if not self._motion_allowed():
            return False
        self.arm.servo(np.asarray(pose, float))
        return True

    def zeroFtSensor(self) -> bool:
        self.arm.record("zeroFtSensor")
        if hasattr(self.arm, "ft_offset"):
            self.arm.ft_offset = self.arm.ft_offset + self.arm.tcp_force()
        return True

    def setWatchdog(self, min_frequency: float = 10.0) -> bool:
        self.arm.record("setWatchdog", min_frequency)
        return True

    def kickWatchdog(self) -> bool:
        self.arm.record("kickWatchdog")
        return True

    def triggerProtectiveStop(self) -> bool:
        self.arm.record("triggerProtectiveStop")
        self.arm.protective_stopped = True
        return True

    def isProgramRunning(self) -> bool:
        return self._connected and not self.arm.stopped

    def isConnected(self) -> bool:
        return self._connected

    def reconnect(self) -> bool:
        self.arm.record("reconnect")
        self._connected = True
        return True

    def reuploadScript(self) -> bool:
        self.arm.record("reuploadScript")
        return True

    def stopScript(self) -> None:
        self.arm.record("stopScript")

    def disconnect(self) -> None:
        self.arm.record("disconnect")
        self._connected = False


class FakeRTDEReceive:
    """``rtde_receive.RTDEReceiveInterface`` stand-in."""

    def __init__(self, arm, hostname: str = "fake", frequency: float = -1.0):
        self.arm = arm
        self.hostname = hostname

    def getActualTCPPose(self) -> List[float]:
        return self.arm.tcp_pose().tolist()

    def getActualTCPSpeed(self) -> List[float]:
        return self.arm.tcp_speed().tolist()

    def getActualTCPForce(self) -> List[float]:
        return np.asarray(self.arm.tcp_force(), float).tolist()

    def isProtectiveStopped(self) -> bool:
        return bool(self.arm.protective_stopped)

    def isEmergencyStopped(self) -> bool:
        return bool(self.arm.emergency_stopped)

    def getSafetyMode(self) -> int:
        # UR safety modes: 1 normal, 3 protective stop, 7 system emergency stop.
        if self.arm.emergency_stopped:
            return 7
        return 3 if self.arm.protective_stopped else 1

    def getRobotMode(self) -> int:
        return 7  # RUNNING

    def getTimestamp(self) -> float:
        return self.arm.time()

    def getDigitalOutState(self, output_id: int) -> bool:
        return bool(self.arm.digital_out.get(("standard", int(output_id)), False))

    def isConnected(self) -> bool:
        return True

    def disconnect(self) -> None:
        pass


class FakeRTDEIO:
    """``rtde_io.RTDEIOInterface`` stand-in (digital outputs drive a gripper)."""

    def __init__(self, arm, hostname: str = "fake"):
        self.arm = arm

    def setStandardDigitalOut(self, output_id: int, signal: bool) -> bool:
        self.arm.record("setStandardDigitalOut", int(output_id), bool(signal))
        self.arm.digital_out[("standard", int(output_id))] = bool(signal)
        return True

    def setToolDigitalOut(self, output_id: int, signal: bool) -> bool:
        self.arm.record("setToolDigitalOut", int(output_id), bool(signal))
        self.arm.digital_out[("tool", int(output_id))] = bool(signal)
        return True

    def disconnect(self) -> None:
        pass


def fake_rtde_factory(arm):
    """A ``UREnv`` ``rtde_factory``: ``(host, frequency) -> (control, receive, io)`` on ``arm``."""

    def factory(host: str, frequency: float):
        return FakeRTDEControl(arm, host, frequency), FakeRTDEReceive(arm, host, frequency), FakeRTDEIO(arm, host)

    return factory
