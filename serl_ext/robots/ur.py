"""``UREnv``: a Universal Robots arm as a gymnasium env, on ur_rtde.

Two loops:

- the **servo thread** (``ServoThread``, ``control.servo_hz``, 125-500 Hz) is the only code
  that commands the arm. Each tick it reads the robot state, checks the emergency stop, the
  protective stop, the TCP force/torque limit and the watchdog, moves its setpoint towards the
  current target under the speed and acceleration limits (``serl_ext/robots/safety.py``) and
  sends ``servoL`` (or ``speedL``). On any fault it stops the arm (``servoStop`` /
  ``speedStop``), latches the fault and sends nothing more until ``reset()`` clears it.
- the **policy loop** (``UREnv.step``, ``control.policy_hz``, 10 Hz by default) turns an
  action into a target pose, clips it into the workspace box, hands it to the servo thread,
  commands the gripper, waits for the end of the step and returns the observation.

Action, float32 (7,) in [-1, 1] (HiL-SERL's relative frame): ``a[:3] * action.pos_scale``
is a translation (m) and ``a[3:6] * action.rot_scale`` a rotation vector (rad), both in the
current TCP frame (``action.frame = "tcp"``; ``"base"`` for the base frame), applied to the
measured TCP pose; ``a[6]`` is the gripper: ``> gripper_threshold`` closes,
``< -gripper_threshold`` opens, in between keeps.

Observation, dict:

- ``"state"`` float32 (19 + task extra,): TCP pose (xyz m, rotation vector rad; relative to
  the pose reached at reset, in that pose's frame, with ``observation.relative_frame``; else
  base frame), TCP velocity (6, m/s and rad/s, TCP frame), TCP wrench (6, N and Nm, TCP
  frame), gripper position (1, 0 open .. 1 closed), then the task's extra state.
- one uint8 (H, W, 3) image per camera, keyed by the camera's name.

``info``: ``safety_status`` (``ok`` / ``force_limit`` / ``protective_stop`` /
``emergency_stop`` / ``watchdog`` / ``servo_error``), ``safety_message``, ``safety/target_clipped``,
``obs_timestamps`` (``{"state": t, <camera>: t}``, seconds on the env's clock),
``stale_cameras``, ``grasp_penalty``, ``tcp_pose_base`` (6,) and the latency statistics
``latency/*`` (ms): ``policy_ms`` (previous observation -> this action),
``command_to_servo_ms`` (target set -> first servo tick using it), ``servo_period_ms_mean`` /
``_max`` (over the step), ``servo_overruns`` (ticks later than 1.5 periods, cumulative),
``state_age_ms`` and ``step_overrun_ms`` (how late the step ended).

A safety stop ends the episode with ``truncated=True`` (it is no task outcome) and the status
in ``info``; ``step()`` after that raises until ``reset()``. ``reset()`` raises
``SafetyStopError`` while an emergency or protective stop is active.

ur_rtde is imported lazily (``rtde_control``, ``rtde_receive``, ``rtde_io``); the RTDE
interfaces can be injected with ``rtde_factory`` (tests use ``serl_ext/robots/fake_rtde.py``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from typing import Any, Callable, Dict, Optional

import gymnasium as gym
import numpy as np
from scipy.spatial.transform import Rotation

from serl_ext.errors import ResetBlockedError
from serl_ext.robots import safety
from serl_ext.robots.clock import RealClock

STATE_LAYOUT = (("tcp_pose", 6), ("tcp_vel", 6), ("tcp_wrench", 6), ("gripper", 1))
STATE_DIM = sum(n for _, n in STATE_LAYOUT)


class SafetyStopError(ResetBlockedError):
    """Raised when the arm cannot move: emergency stop, protective stop, or a fault that does not
    clear. A ``RuntimeError``; as a :class:`ResetBlockedError` from ``reset`` the actor waits for
    the person to clear it and retries (``actor.blocked_reset_*``) instead of ending the run."""


def _import_rtde():
    try:
        import rtde_control
        import rtde_receive
    except ImportError as err:
        raise ImportError(
            "UREnv needs ur_rtde (modules rtde_control, rtde_receive, rtde_io); install the robot "
            "extras with `pip install -e .[robot]`") from err
    try:
        import rtde_io
    except ImportError:  # pragma: no cover - part of the same wheel
        rtde_io = None
    return rtde_control, rtde_receive, rtde_io


def default_rtde_factory(host: str, frequency: float):
    """Connects ur_rtde's interfaces: ``(host, frequency Hz) -> (control, receive, io)``.

    Raises:
        ImportError: ur_rtde is missing (message says ``pip install -e .[robot]``).
        RuntimeError: from ur_rtde when the robot cannot be reached.
    """
    rtde_control, rtde_receive, rtde_io = _import_rtde()
    control = rtde_control.RTDEControlInterface(host, frequency)
    receive = rtde_receive.RTDEReceiveInterface(host, frequency)
    io = rtde_io.RTDEIOInterface(host) if rtde_io is not None else None
    return control, receive, io


@dataclasses.dataclass
class ServoState:
    """What one servo tick read from the robot (base frame, SI units)."""

    t: float  # clock time of the tick (s)
    pose: np.ndarray  # (6,) TCP pose
    speed: np.ndarray  # (6,) TCP velocity
    wrench: np.ndarray  # (6,) TCP force (N) and torque (Nm)
    protective_stopped: bool
    emergency_stopped: bool


class ServoThread:
    """The thread that owns the arm and enforces the safety envelope.

    Modes: ``"idle"`` (reads state, commands nothing), ``"reset"`` (moves to the target at
    ``reset.speed_scale`` of the speed limits, no watchdog), ``"policy"`` (full limits,
    watchdog on).

    Args:
        control, receive: ur_rtde interfaces (or fakes).
        envelope: limits for the policy mode; ``reset_envelope``: for the reset mode.
        servo_hz: tick rate. mode: ``"servoL"`` or ``"speedL"``.
        lookahead_s, gain: ``servoL`` parameters (UR ranges: 0.03-0.2 s, 100-2000).
        servo_speed, servo_accel: ``servoL``'s speed/acceleration arguments (unused by current
            UR software, passed for completeness).
        stop_deceleration: deceleration passed to ``servoStop`` / ``speedStop``.
        watchdog_s: in policy mode, the arm stops when no target came for this long.
        clock: ``RealClock`` or ``LockstepClock``.
        rtde_watchdog_hz: > 0 arms ur_rtde's robot-side watchdog (``setWatchdog``), kicked
            every tick (``kickWatchdog``): the controller stops the arm when this process
            stops ticking (frozen, killed), whatever state Python is in. 0 = off.
    """

    def __init__(self, control, receive, envelope: safety.Envelope, reset_envelope: safety.Envelope,
                 servo_hz: float, mode: str, lookahead_s: float, gain: float, servo_speed: float,
                 servo_accel: float, stop_deceleration: float, watchdog_s: float, clock,
                 rtde_watchdog_hz: float = 0.0):
        if mode not in ("servoL", "speedL"):
            raise ValueError(f"control.mode must be 'servoL' or 'speedL', got {mode!r}")
        if not 1.0 <= servo_hz <= 1000.0:
            raise ValueError(f"control.servo_hz must be in [1, 1000], got {servo_hz}")
        self.control, self.receive = control, receive
        self.envelopes = {"policy": envelope, "reset": reset_envelope}
        self.dt = 1.0 / float(servo_hz)
        self.command_mode = mode
        self.lookahead_s, self.gain = float(lookahead_s), float(gain)
        self.servo_speed, self.servo_accel = float(servo_speed), float(servo_accel)
        self.stop_deceleration = float(stop_deceleration)
        self.watchdog_s = float(watchdog_s)
        self.rtde_watchdog_hz = float(rtde_watchdog_hz)
        self.clock = clock
        self._lock = threading.Lock()
        self._mode = "idle"
        self._target: Optional[np.ndarray] = None
        self._target_t = 0.0
        self._target_fresh = False
        self._last_command_t = 0.0
        self._setpoint: Optional[np.ndarray] = None
        self._velocity = np.zeros(6)
        self._fault: Optional[tuple] = None
        self._state: Optional[ServoState] = None
        self._periods: deque = deque(maxlen=4096)
        self._last_tick_t: Optional[float] = None
        self._overruns = 0
        self._command_latencies: deque = deque(maxlen=256)
        self._rejected = 0
        self._error: Optional[BaseException] = None
        self._calls: deque = deque()
        self._stop = threading.Event()
        self._first_state = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ur-servo", daemon=True)

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        if self.rtde_watchdog_hz > 0:
            self.control.setWatchdog(self.rtde_watchdog_hz)
        self._thread.start()

    def _run(self) -> None:
        try:
            start, k = self.clock.now(), 0
            while not self._stop.is_set():
                self._tick(self.clock.now())
                k += 1
                next_t = start + k * self.dt
                now = self.clock.now()
                if now > next_t + self.dt:  # fell behind by more than a tick: resynchronise
                    start, k, next_t = now, 0, now
                self.clock.wait_servo(next_t)
        except BaseException as err:  # surfaced by UREnv; the arm is stopped
            self._error = err
            with self._lock:
                self._fault = self._fault or (safety.SERVO_ERROR, f"servo thread died: {err!r}")
                self._mode = "idle"
            try:
                self._stop_arm()
            finally:
                self._first_state.set()
                self.clock.close()  # a lockstep policy loop must not wait for ticks that never come

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self.clock.close()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    # ------------------------------------------------------------------ tick
    def _read(self, now: float) -> ServoState:
        r = self.receive
        return ServoState(
            t=now,
            pose=np.asarray(r.getActualTCPPose(), np.float64),
            speed=np.asarray(r.getActualTCPSpeed(), np.float64),
            wrench=np.asarray(r.getActualTCPForce(), np.float64),
            protective_stopped=bool(r.isProtectiveStopped()),
            emergency_stopped=bool(r.isEmergencyStopped()),
        )

    def _stop_arm(self) -> None:
        if self.command_mode == "servoL":
            self.control.servoStop(self.stop_deceleration)
        else:
            self.control.speedStop(self.stop_deceleration)

    def _latch(self, status: str, message: str, stop_arm: bool) -> None:
        with self._lock:
            if self._fault is not None:
                return
            self._fault = (status, message)
            self._mode = "idle"
            self._velocity = np.zeros(6)
        if stop_arm:
            self._stop_arm()

    def _run_calls(self) -> None:
        while self._calls:
            fn, done, box = self._calls.popleft()
            try:
                box["result"] = fn()
            except BaseException as err:  # handed to the caller
                box["error"] = err
            done.set()

    def _tick(self, now: float) -> None:
        self._run_calls()
        if self.rtde_watchdog_hz > 0:
            self.control.kickWatchdog()
        state = self._read(now)
        with self._lock:
            if self._last_tick_t is not None:
                period = now - self._last_tick_t
                self._periods.append(period)
                if period > 1.5 * self.dt:
                    self._overruns += 1
            self._last_tick_t = now
            self._state = state
            mode, target, fault = self._mode, self._target, self._fault
            if self._target_fresh:
                self._command_latencies.append(now - self._target_t)
                self._target_fresh = False
            last_command = self._last_command_t
        self._first_state.set()
        if state.emergency_stopped:
            self._latch(safety.EMERGENCY_STOP, "emergency stop is pressed", stop_arm=False)
            return
        if state.protective_stopped:
            self._latch(safety.PROTECTIVE_STOP, "the robot is in a protective stop", stop_arm=False)
            return
        if fault is not None or mode == "idle" or target is None:
            return
        envelope = self.envelopes[mode]
        message = envelope.wrench_exceeded(state.wrench)
        if message is not None:
            self._latch(safety.FORCE_LIMIT, message, stop_arm=True)
            return
        if mode == "policy" and now - last_command > self.watchdog_s:
            self._latch(safety.WATCHDOG, f"no command for {now - last_command:.3f} s "
                        f"(> {self.watchdog_s:.3f} s)", stop_arm=True)
            return
        if self.command_mode == "servoL":
            setpoint, velocity = safety.limit_motion(self._setpoint, self._velocity, target, self.dt, envelope)
            ok = self.control.servoL(setpoint.tolist(), self.servo_speed, self.servo_accel, self.dt,
                                     self.lookahead_s, self.gain)
        else:
            setpoint, velocity = safety.limit_motion(state.pose, self._velocity, target, self.dt, envelope)
            ok = self.control.speedL(velocity.tolist(), envelope.max_linear_accel, 0.0)
        with self._lock:
            if self._mode == mode:  # not changed under us
                self._setpoint, self._velocity = setpoint, velocity
            if ok is False:
                self._rejected += 1

    # ------------------------------------------------------------------ API (policy side)
    def wait_for_state(self, timeout_s: float = 5.0) -> ServoState:
        """The first state read; raises TimeoutError when the thread never ticked."""
        if not self._first_state.wait(timeout_s):
            self.raise_if_dead()
            raise TimeoutError("the servo thread has not read the robot state")
        return self.state()

    def call(self, fn: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Runs ``fn()`` on the servo thread (before its next tick) and returns its result.

        ur_rtde's control interface is not meant to be driven from two threads at once, so
        the policy side sends its few control calls (``zeroFtSensor``, ``reuploadScript``)
        through here. Raises what ``fn`` raised, or TimeoutError.
        """
        if not self._thread.is_alive():
            return fn()
        done, box = threading.Event(), {}
        self._calls.append((fn, done, box))
        deadline = self.clock.now() + timeout_s
        while not done.is_set():
            self.raise_if_dead()
            if self.clock.now() > deadline:
                raise TimeoutError("the servo thread did not run the request")
            self.clock.wait_policy(self.clock.now() + self.dt)
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def hold(self, now: float) -> None:
        """Between episodes: brake to a stop and hold there, no watchdog (the actor may be
        busy with the learner); the force limit and the stops stay active. No-op after a fault."""
        with self._lock:
            if self._fault is not None or self._mode == "idle":
                return
            self._mode = "reset"
            self._target = self._setpoint.copy() if self._setpoint is not None else self._state.pose.copy()

    def halt(self, now: float) -> None:
        """Stops the arm and goes idle (on errors of the policy loop)."""
        with self._lock:
            was_moving = self._mode != "idle"
            self._mode = "idle"
            self._velocity = np.zeros(6)
        if was_moving:
            self.call(self._stop_arm)

    def raise_if_dead(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the servo thread died: {self._error!r}") from self._error

    def state(self) -> ServoState:
        """The state read by the newest tick."""
        with self._lock:
            return self._state

    def read_now(self) -> ServoState:
        """A fresh state read from the receive interface by the caller's thread."""
        return self._read(self.clock.now())

    @property
    def fault(self) -> Optional[tuple]:
        """``(status, message)`` of the latched fault, or None."""
        with self._lock:
            return self._fault

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    def set_mode(self, mode: str, now: float) -> None:
        """Switches mode; entering a moving mode starts from the measured pose, at rest."""
        if mode not in ("idle", "reset", "policy"):
            raise ValueError(f"unknown servo mode {mode!r}")
        fresh = self._read(now) if mode != "idle" else None
        with self._lock:
            if mode != "idle" and self._fault is not None:
                raise SafetyStopError(f"cannot move: {self._fault[0]} ({self._fault[1]})")
            if mode != "idle" and self._mode == "idle":
                pose = fresh.pose.copy()
                self._setpoint, self._velocity = pose, np.zeros(6)
                self._target = pose
            self._mode = mode
            self._last_command_t = now

    def set_target(self, pose: np.ndarray, now: float) -> None:
        """A new target (6,) for the limiter; restarts the watchdog."""
        pose = safety.check_pose(pose, "target")
        with self._lock:
            self._target = pose
            self._target_t = now
            self._target_fresh = True
            self._last_command_t = now

    def clear_fault(self, state: ServoState) -> None:
        """Clears a latched fault when its cause is gone.

        Raises:
            SafetyStopError: emergency or protective stop still active, or the force still
                above the limit.
        """
        if state.emergency_stopped:
            raise SafetyStopError("emergency stop is active: release it and re-enable the arm on the pendant")
        if state.protective_stopped:
            raise SafetyStopError("protective stop is active: unlock it on the pendant (or dashboard), then reset")
        message = self.envelopes["reset"].wrench_exceeded(state.wrench)
        if message is not None:
            raise SafetyStopError(f"cannot clear the force-limit stop: {message}; free the arm first")
        with self._lock:
            self._fault = None
            self._mode = "idle"

    def pop_stats(self) -> Dict[str, float]:
        """Servo period and command latency statistics since the last call (ms)."""
        with self._lock:
            periods = np.asarray(self._periods, float)
            latencies = np.asarray(self._command_latencies, float)
            self._periods.clear()
            self._command_latencies.clear()
            overruns, rejected = self._overruns, self._rejected
        return {
            "latency/servo_period_ms_mean": float(periods.mean() * 1e3) if periods.size else 0.0,
            "latency/servo_period_ms_max": float(periods.max() * 1e3) if periods.size else 0.0,
            "latency/command_to_servo_ms": float(latencies.mean() * 1e3) if latencies.size else 0.0,
            "latency/servo_overruns": float(overruns),
            "latency/rejected_commands": float(rejected),
        }


def _validate(config) -> None:
    """Raises ValueError on robot-config values that cannot work (see ``configs/robots/ur5e.py``)."""
    c, a = config.control, config.action
    problems = []
    if not float(c.policy_hz) > 0:
        problems.append(f"control.policy_hz must be > 0, got {c.policy_hz}")
    elif float(c.servo_hz) < 2 * float(c.policy_hz):
        problems.append("control.servo_hz must be at least twice control.policy_hz")
    if float(config.rtde_frequency) > 0 and float(c.servo_hz) > float(config.rtde_frequency) + 1e-9:
        problems.append(f"control.servo_hz ({c.servo_hz}) must not exceed rtde_frequency ({config.rtde_frequency})")
    if not float(c.watchdog_periods) >= 1.0:
        problems.append(f"control.watchdog_periods must be >= 1, got {c.watchdog_periods}")
    if not (float(a.pos_scale) > 0 and float(a.rot_scale) > 0):
        problems.append("action.pos_scale and action.rot_scale must be > 0")
    if not 0.0 < float(a.gripper_threshold) < 1.0:
        problems.append(f"action.gripper_threshold must be in (0, 1), got {a.gripper_threshold}")
    if int(config.max_episode_steps) < 1:
        problems.append("max_episode_steps must be >= 1")
    if not 0.0 < float(config.reset.speed_scale) <= 1.0:
        problems.append(f"reset.speed_scale must be in (0, 1], got {config.reset.speed_scale}")
    if problems:
        raise ValueError("bad robot config: " + "; ".join(problems))


def spaces_for(config, extra_state_dim: int = 0) -> tuple:
    """``(observation_space, action_space)`` of a ``UREnv`` with ``config``, without a robot.

    For the learner box, which needs the spaces but has no arm: ``"state"`` float32
    (19 + extra,), one uint8 ``(h, w, 3)`` Box per entry of ``config.cameras`` (``size``),
    actions Box(-1, 1, (7,)).
    """
    spaces = {"state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM + int(extra_state_dim),), np.float32)}
    for name in sorted(config.get("cameras", {}).keys()):
        h, w = (int(v) for v in config.cameras[name].size)
        spaces[name] = gym.spaces.Box(0, 255, (h, w, 3), np.uint8)
    return gym.spaces.Dict(spaces), gym.spaces.Box(-1.0, 1.0, (7,), np.float32)


class UREnv(gym.Env):
    """UR arm env (see the module docstring for actions, observations and ``info``).

    Args:
        config: a robot config (``configs/robots/*.py``: ``host``, ``control``, ``safety``,
            ``action``, ``reset``, ``gripper``, ``observation``, ``cameras``, ...).
        rtde_factory: ``(host, frequency) -> (control, receive, io)``; None = ur_rtde.
        gripper: an object with ``command(closed)``, ``position()``, ``close()``; None = built
            from ``config.gripper`` (``io``, ``robotiq`` or ``none``).
        cameras: a ``serl_ext.robots.cameras.CameraRig``; None = built from
            ``config.cameras`` (no cameras when that is empty).
        clock: ``RealClock()`` (default) or a ``LockstepClock`` (simulation, tests).
        task: optional hooks for a task (simulation): ``extra_state_dim`` (int),
            ``extra_state() -> float32 (extra_state_dim,)``, ``reward() -> (float, bool)``
            and ``on_reset(rng)``; without it the reward is 0 and success comes from the
            operator (``SpaceMouse6Intervention``'s success mark).

    Raises:
        ImportError: ``rtde_factory`` is None and ur_rtde is missing.
        ValueError: inconsistent config (home pose outside the workspace, bad rates).
    """

    metadata = {"render_modes": []}

    def __init__(self, config, rtde_factory: Optional[Callable] = None, gripper=None, cameras=None,
                 clock=None, task=None):
        self.config = config
        self.clock = clock if clock is not None else RealClock()
        self.task = task
        control_cfg, safety_cfg = config.control, config.safety
        _validate(config)
        self.policy_dt = 1.0 / float(control_cfg.policy_hz)
        self.home_pose = safety.check_pose(config.reset.home_pose, "reset.home_pose")
        self.envelope = safety.Envelope.from_config(safety_cfg, self.home_pose[3:])
        self.reset_envelope = safety.Envelope.from_config(safety_cfg, self.home_pose[3:],
                                                          float(config.reset.speed_scale))
        if not self.envelope.contains(self.home_pose):
            raise ValueError(f"reset.home_pose {self.home_pose} is outside the workspace box / rotation limit")
        if config.action.frame not in ("tcp", "base"):
            raise ValueError(f"action.frame must be 'tcp' or 'base', got {config.action.frame!r}")
        factory = rtde_factory or default_rtde_factory
        self.control, self.receive, self.io = factory(config.host, float(config.rtde_frequency))
        self.gripper = gripper if gripper is not None else self._make_gripper(config.gripper)
        if cameras is None and len(config.get("cameras", {})) > 0:
            from serl_ext.robots.cameras import CameraRig

            cameras = CameraRig.from_config(config.cameras, clock=self.clock,
                                            max_age_s=float(config.camera_max_age_s),
                                            on_stale=config.camera_on_stale)
        self.cameras = cameras
        self.servo = ServoThread(
            self.control, self.receive, self.envelope, self.reset_envelope,
            servo_hz=float(control_cfg.servo_hz), mode=control_cfg.mode,
            lookahead_s=float(control_cfg.servo_lookahead_s), gain=float(control_cfg.servo_gain),
            servo_speed=float(control_cfg.servo_speed), servo_accel=float(control_cfg.servo_accel),
            stop_deceleration=float(control_cfg.stop_deceleration),
            watchdog_s=float(control_cfg.watchdog_periods) * self.policy_dt, clock=self.clock,
            rtde_watchdog_hz=float(control_cfg.get("rtde_watchdog_hz", 0.0)))
        extra = int(getattr(task, "extra_state_dim", 0)) if task is not None else 0
        spaces = {"state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM + extra,), np.float32)}
        if self.cameras is not None:
            for name, shape in self.cameras.shapes().items():
                spaces[name] = gym.spaces.Box(0, 255, shape, np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.max_episode_steps = int(config.max_episode_steps)
        self._reset_pose = self.home_pose.copy()
        self._gripper_closed: Optional[bool] = None
        self._episode_over = True
        self._steps = 0
        self._next_step_t = 0.0
        self._obs_t = 0.0
        self._closed = False
        self.servo.start()
        self.servo.wait_for_state()

    # ------------------------------------------------------------------ helpers
    def _make_gripper(self, cfg):
        from serl_ext.robots.gripper import IOGripper, RobotiqSocketGripper

        if cfg.type == "none":
            return None
        if cfg.type == "io":
            return IOGripper(self.io, self.receive, cfg.io_output, cfg.io_tool_output, cfg.io_close_level)
        if cfg.type == "robotiq":
            return RobotiqSocketGripper(self.config.host, cfg.robotiq_port, cfg.robotiq_speed, cfg.robotiq_force)
        raise ValueError(f"gripper.type must be 'io', 'robotiq' or 'none', got {cfg.type!r}")

    def base_to_action_frame(self, motion) -> np.ndarray:
        """Re-expresses a base-frame motion (6,) [dx dy dz wx wy wz] in the action frame.

        The SpaceMouse wrapper uses it so the operator moves the arm in the base frame while
        the recorded ``intervene_action`` stays in the policy's (TCP) frame.
        """
        motion = np.asarray(motion, np.float64).reshape(6)
        if self.config.action.frame == "base":
            return motion.astype(np.float32)
        rot = Rotation.from_rotvec(self.servo.state().pose[3:])
        return np.concatenate([rot.inv().apply(motion[:3]), rot.inv().apply(motion[3:])]).astype(np.float32)

    def action_to_target(self, action: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Target pose (6,) of ``action`` (7,) applied to the measured ``pose`` (6,) (before clipping)."""
        cfg = self.config.action
        rot = Rotation.from_rotvec(pose[3:])
        dpos = action[:3].astype(np.float64) * float(cfg.pos_scale)
        drot = Rotation.from_rotvec(action[3:6].astype(np.float64) * float(cfg.rot_scale))
        target = np.empty(6)
        if cfg.frame == "tcp":
            target[:3] = pose[:3] + rot.apply(dpos)
            target[3:] = (rot * drot).as_rotvec()
        else:
            target[:3] = pose[:3] + dpos
            target[3:] = (drot * rot).as_rotvec()
        return target

    def _command_gripper(self, value: float) -> float:
        """Sends a gripper change; returns the grasp penalty for this step."""
        if self.gripper is None:
            return 0.0
        thr = float(self.config.action.gripper_threshold)
        want = True if value > thr else False if value < -thr else None
        if want is None or want == self._gripper_closed:
            return 0.0
        self.gripper.command(want)
        self._gripper_closed = want
        return float(self.config.action.grasp_penalty)

    def _observe(self, now: float) -> tuple[dict, dict]:
        state = self.servo.state()
        rot = Rotation.from_rotvec(state.pose[3:])
        if self.config.observation.relative_frame:
            ref = Rotation.from_rotvec(self._reset_pose[3:])
            pos = ref.inv().apply(state.pose[:3] - self._reset_pose[:3])
            ori = (ref.inv() * rot).as_rotvec()
        else:
            pos, ori = state.pose[:3], state.pose[3:]
        vel = np.concatenate([rot.inv().apply(state.speed[:3]), rot.inv().apply(state.speed[3:])])
        wrench = np.concatenate([rot.inv().apply(state.wrench[:3]), rot.inv().apply(state.wrench[3:])])
        grip = [self.gripper.position() if self.gripper is not None else 0.0]
        parts = [pos, ori, vel, wrench, grip]
        if self.task is not None and getattr(self.task, "extra_state_dim", 0):
            parts.append(np.asarray(self.task.extra_state(), np.float64).reshape(-1))
        obs = {"state": np.concatenate(parts).astype(np.float32)}
        timestamps = {"state": float(state.t)}
        stale: list = []
        if self.cameras is not None:
            images, cam_t, stale = self.cameras.read(now)
            obs.update(images)
            timestamps.update(cam_t)
        info = {"obs_timestamps": timestamps, "stale_cameras": stale,
                "tcp_pose_base": state.pose.copy(), "latency/state_age_ms": (now - state.t) * 1e3}
        return obs, info

    def _status_info(self) -> dict:
        fault = self.servo.fault
        return {"safety_status": fault[0] if fault else safety.OK,
                "safety_message": fault[1] if fault else ""}

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        """Moves to the home pose (plus the configured randomisation) and starts an episode.

        Raises:
            SafetyStopError: emergency / protective stop active, or a force fault that does not clear.
            TimeoutError: the home pose was not reached within ``reset.timeout_s``.
        """
        super().reset(seed=seed)
        self._check_open()
        self.servo.raise_if_dead()
        cfg = self.config.reset
        state = self.servo.read_now()
        self.servo.set_mode("idle", self.clock.now())
        if self.servo.fault is not None:
            self.servo.clear_fault(state)
        elif state.emergency_stopped or state.protective_stopped:
            self.servo.clear_fault(state)  # raises with the instructions
        if hasattr(self.control, "isProgramRunning") and not self.servo.call(self.control.isProgramRunning):
            self.servo.call(self.control.reuploadScript)  # after a protective stop was unlocked
        home = self.home_pose.copy()
        if float(cfg.random_xyz) > 0:
            home[:3] += self.np_random.uniform(-cfg.random_xyz, cfg.random_xyz, 3)
        if float(cfg.random_rot) > 0:
            noise = Rotation.from_rotvec(self.np_random.uniform(-cfg.random_rot, cfg.random_rot, 3))
            home[3:] = (Rotation.from_rotvec(home[3:]) * noise).as_rotvec()
        home, _ = self.envelope.clip_pose(home)
        if self.gripper is not None and cfg.open_gripper:
            self.gripper.command(False)
            self._gripper_closed = False
        if self.task is not None and hasattr(self.task, "on_reset"):
            self.task.on_reset(self.np_random)
        now = self.clock.now()
        self.servo.set_mode("reset", now)
        self.servo.set_target(home, now)
        deadline = now + float(cfg.timeout_s)
        while True:
            now = self.clock.now()
            pose = self.servo.state().pose
            fault = self.servo.fault
            if fault is not None:
                raise SafetyStopError(f"reset stopped by {fault[0]}: {fault[1]}")
            if (np.linalg.norm(pose[:3] - home[:3]) <= cfg.tolerance_m
                    and safety.rotation_angle(pose[3:], home[3:]) <= cfg.tolerance_rad):
                break
            if now > deadline:
                self.servo.halt(now)
                raise TimeoutError(f"reset did not reach {np.round(home, 4)} within {cfg.timeout_s} s "
                                   f"(at {np.round(pose, 4)})")
            self.clock.wait_policy(now + self.policy_dt)
            self.servo.raise_if_dead()
        for _ in range(int(cfg.settle_steps)):
            self.clock.wait_policy(self.clock.now() + self.policy_dt)
        if cfg.zero_ft_sensor:
            self.servo.call(self.control.zeroFtSensor)
        now = self.clock.now()
        self._reset_pose = self.servo.state().pose.copy()
        self.servo.set_mode("policy", now)
        self.servo.set_target(self._reset_pose, now)
        self.servo.pop_stats()
        self._steps = 0
        self._episode_over = False
        self._next_step_t = now + self.policy_dt
        obs, info = self._observe(now)
        self._obs_t = now
        info.update(self._status_info())
        return obs, info

    def step(self, action):
        """One policy step (see the module docstring).

        Raises:
            ValueError: ``action`` not of shape (7,) or not finite.
            RuntimeError: called before ``reset()`` or after the episode ended.
        """
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (7,):
            raise ValueError(f"action must have shape (7,), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action}")
        self._check_open()
        if self._episode_over:
            raise RuntimeError("the episode is over (time limit or safety stop): call reset()")
        self.servo.raise_if_dead()
        action = np.clip(action, -1.0, 1.0)
        now = self.clock.now()
        info: Dict[str, Any] = {"latency/policy_ms": (now - self._obs_t) * 1e3}
        clipped = False
        if self.servo.fault is None:
            target, clipped = self.envelope.clip_pose(self.action_to_target(action, self.servo.state().pose))
            self.servo.set_target(target, now)
            info["grasp_penalty"] = self._command_gripper(float(action[6]))
        else:
            info["grasp_penalty"] = 0.0
        try:
            self.clock.wait_policy(self._next_step_t)
            now = self.clock.now()
            info["latency/step_overrun_ms"] = max(0.0, now - self._next_step_t) * 1e3
            self._next_step_t = max(self._next_step_t + self.policy_dt, now)
            self._steps += 1
            obs, obs_info = self._observe(now)
        except BaseException:  # e.g. StaleFrameError: stop the arm, end the episode, re-raise
            self._episode_over = True
            self.servo.halt(self.clock.now())
            raise
        self._obs_t = now
        info.update(obs_info)
        info.update(self.servo.pop_stats())
        info.update(self._status_info())
        info["safety/target_clipped"] = bool(clipped)
        reward, success = 0.0, False
        if self.task is not None:
            reward, success = self.task.reward()
        info["success"] = bool(success)
        terminated = bool(success)
        truncated = self._steps >= self.max_episode_steps or info["safety_status"] != safety.OK
        if terminated or truncated:
            self._episode_over = True
            self.servo.hold(now)
        return obs, float(reward), terminated, truncated, info

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("UREnv is closed")

    def close(self) -> None:
        """Stops the servo thread and the arm, disconnects (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.servo.stop()
        try:
            self.servo._stop_arm()
            self.control.stopScript()
        finally:
            if self.cameras is not None:
                self.cameras.close()
            if self.gripper is not None:
                self.gripper.close()
