"""Human input devices behind HiL-SERL's intervention interface.

A wrapper reads the device at every ``step(action)``. Any nonzero input is a
takeover for that step (as in HiL-SERL's SpaceMouse wrapper): the person's
action is executed instead of the policy's and reported as
``info["intervene_action"]`` (float32 (4,)); with no input the policy's
action is executed unchanged and the key is absent. The same key is set by
``SimulatedOperator``, so the actor loop cannot tell them apart.

Action layout (4,): xyz velocity/delta in [-1, 1] and the gripper command
(+1 close, -1 open). The gripper part of a human action is the person's last
gripper command in the current takeover segment; until they give one, the
policy's own gripper command is kept.

For the UR arm (7-D actions ``[dx dy dz rx ry rz gripper]``): ``SpaceMouse6Intervention``
(translation and rotation, gripper buttons, success/failure marks) and its keyboard fallback
``Keyboard6Intervention``; both convert the operator's base-frame motion into the env's action
frame (``base_to_action_frame``), as HiL-SERL's relative-frame wrapper does.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Callable, Iterable, Optional

import gymnasium as gym
import numpy as np


class _HumanInterventionBase(gym.Wrapper):
    """Shared step logic; subclasses implement ``_read() -> (xyz (3,), gripper or None)``.

    ``xyz`` all zeros and ``gripper is None`` means no input this step.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._human_gripper: Optional[float] = None
        self._intervening = False

    def _read(self) -> tuple[np.ndarray, Optional[float]]:
        raise NotImplementedError

    def reset(self, **kwargs):
        self._human_gripper = None
        self._intervening = False
        return self.env.reset(**kwargs)

    def step(self, action):
        policy_action = np.asarray(action, dtype=np.float32)
        if policy_action.shape != (4,):
            raise ValueError(f"action must have shape (4,), got {policy_action.shape}")
        xyz, gripper = self._read()
        xyz = np.clip(np.asarray(xyz, dtype=np.float32).reshape(3), -1.0, 1.0)
        active = bool(np.any(xyz != 0.0)) or gripper is not None
        if not active:
            self._intervening = False
            self._human_gripper = None
            return self.env.step(action)
        if not self._intervening:
            self._intervening = True
            self._human_gripper = None
        if gripper is not None:
            self._human_gripper = float(np.clip(gripper, -1.0, 1.0))
        grip = self._human_gripper if self._human_gripper is not None else float(
            np.clip(policy_action[-1], -1.0, 1.0))
        executed = np.concatenate([xyz, [grip]]).astype(np.float32)
        obs, reward, terminated, truncated, info = self.env.step(executed)
        info["intervene_action"] = executed
        return obs, reward, terminated, truncated, info


class SpaceMouseIntervention(_HumanInterventionBase):
    """Take over with a 3Dconnexion SpaceMouse (HiL-SERL's device).

    Translation axes (x, y, z) times ``action_scale`` give the xyz action;
    left button = close gripper (+1), right button = open (-1). A step is a
    takeover when ``||xyz|| > deadzone`` or a button is pressed.

    Args:
        env: the env to wrap.
        device: object with ``get_action() -> (motion (>=3,), buttons list)``;
            None opens ``serl_ext.robots.spacemouse.SpaceMouse`` (imports
            ``pyspacemouse`` lazily).
        action_scale: multiplier on the device's translation in [-1, 1].
        deadzone: norm below which translation counts as no input.

    Raises:
        ImportError: when ``device`` is None and ``pyspacemouse`` is missing
            (install with ``pip install -e .[robot]``).
    """

    def __init__(self, env: gym.Env, device=None, action_scale: float = 1.0,
                 deadzone: float = 1e-3):
        super().__init__(env)
        if device is None:
            from serl_ext.robots.spacemouse import SpaceMouse

            device = SpaceMouse()
        if not callable(getattr(device, "get_action", None)):
            raise TypeError("device must have a get_action() -> (motion, buttons) method")
        self.device = device
        self.action_scale = float(action_scale)
        self.deadzone = float(deadzone)

    def _read(self):
        motion, buttons = self.device.get_action()
        xyz = np.asarray(motion, dtype=np.float32)[:3] * self.action_scale
        if float(np.linalg.norm(xyz)) <= self.deadzone:
            xyz = np.zeros(3, np.float32)
        buttons = list(buttons) + [0, 0]
        gripper = None
        if buttons[0]:
            gripper = 1.0
        elif buttons[1]:
            gripper = -1.0
        return xyz, gripper


#: Default key map: key -> (axis, sign). Meta-World frame: x right, y forward, z up.
DEFAULT_KEYMAP = {
    "w": (1, +1.0), "s": (1, -1.0),  # forward / back
    "d": (0, +1.0), "a": (0, -1.0),  # right / left
    "r": (2, +1.0), "f": (2, -1.0),  # up / down
}
GRIPPER_KEY = " "


class StdinKeySource:
    """Non-blocking key reader for a terminal.

    A daemon thread reads single characters from stdin in cbreak mode
    (``termios``/``tty``; no Enter needed, no echo) into a queue; calling the
    object returns the characters typed since the last call. ``close()``
    restores the terminal settings (also registered with ``atexit``).

    Raises:
        RuntimeError: if stdin is not a terminal (then inject a ``key_source``).
        ImportError: on platforms without ``termios`` (Windows).
    """

    def __init__(self, stream=None):
        import atexit
        import termios
        import tty

        self._stream = stream or sys.stdin
        if not self._stream.isatty():
            raise RuntimeError("StdinKeySource needs an interactive terminal on stdin; "
                               "pass key_source=... to KeyboardIntervention instead")
        self._fd = self._stream.fileno()
        self._termios = termios
        self._old = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)
        atexit.register(self.close)
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            try:
                char = os.read(self._fd, 1).decode(errors="ignore")
            except OSError:
                return
            if char:
                self._queue.put(char)

    def __call__(self) -> list:
        keys = []
        while True:
            try:
                keys.append(self._queue.get_nowait())
            except queue.Empty:
                return keys

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._termios.tcsetattr(self._fd, self._termios.TCSADRAIN, self._old)


def _key_source_and_speed(key_source, speed: float):
    """Checked keyboard settings: ``key_source`` (None = ``StdinKeySource()``) and the action
    magnitude per key in (0, 1]. Raises ValueError (speed) or TypeError (not callable)."""
    if not 0.0 < speed <= 1.0:
        raise ValueError(f"speed must be in (0, 1], got {speed}")
    key_source = key_source if key_source is not None else StdinKeySource()
    if not callable(key_source):
        raise TypeError("key_source must be callable")
    return key_source, float(speed)


def _read_keys(key_source, keymap, speed: float, dim: int, gripper_closed: bool):
    """Keys pressed since the last call -> ``(keys, motion (dim,) float32, gripper, closed)``.

    Each mapped key adds ``sign * speed`` on its axis (a key repeated in one read counts once);
    the gripper key toggles ``closed`` and gives the gripper command (+1 close, -1 open),
    otherwise ``gripper`` is None (the policy's command stands).
    """
    keys = set(str(k).lower() if k != GRIPPER_KEY else k for k in key_source())
    motion = np.zeros(dim, np.float32)
    for key in keys:
        if key in keymap:
            axis, sign = keymap[key]
            motion[axis] += sign * speed
    gripper = None
    if GRIPPER_KEY in keys:
        gripper_closed = not gripper_closed
        gripper = 1.0 if gripper_closed else -1.0
    return keys, motion, gripper, gripper_closed


class KeyboardIntervention(_HumanInterventionBase):
    """Take over with the keyboard.

    Keys pressed since the previous step set the xyz action for this step:
    w/s = forward/back (+y/-y), d/a = right/left (+x/-x), r/f = up/down
    (+z/-z), each ``speed`` in magnitude (opposite keys cancel); space toggles
    the gripper between closed (+1) and open (-1) (first press: close). Any of
    these keys makes the step a takeover; other keys are ignored. Holding a key
    relies on the terminal's auto-repeat.

    Args:
        env: the env to wrap.
        key_source: callable returning an iterable of the characters typed
            since its last call; None = ``StdinKeySource()`` (needs a tty).
        speed: magnitude of the xyz action per pressed key, in (0, 1].
        keymap: key -> (axis index 0..2, sign); default ``DEFAULT_KEYMAP``.
    """

    def __init__(self, env: gym.Env, key_source: Optional[Callable[[], Iterable[str]]] = None,
                 speed: float = 1.0, keymap: Optional[dict] = None):
        super().__init__(env)
        self.key_source, self.speed = _key_source_and_speed(key_source, speed)
        self.keymap = dict(DEFAULT_KEYMAP if keymap is None else keymap)
        self._gripper_closed = False

    def reset(self, **kwargs):
        self._gripper_closed = False
        return super().reset(**kwargs)

    def _read(self):
        keys, xyz, gripper, self._gripper_closed = _read_keys(
            self.key_source, self.keymap, self.speed, 3, self._gripper_closed)
        return xyz, gripper


# ------------------------------------------------------------------ 7-D (UR arm) devices
#: Buttons of ``SpaceMouse6Intervention``: role -> button index in the device's list (None = unused).
DEFAULT_BUTTONS6 = {"close": 0, "open": 1, "success": None, "failure": None}
#: Keys marking the end of an episode (both 7-D wrappers).
SUCCESS_KEY, FAILURE_KEY = "y", "n"
#: Key map of ``Keyboard6Intervention``: key -> (axis 0..5, sign); base frame, axes 3..5 = rotation.
DEFAULT_KEYMAP6 = {
    "w": (0, +1.0), "s": (0, -1.0), "a": (1, +1.0), "d": (1, -1.0), "r": (2, +1.0), "f": (2, -1.0),
    "u": (3, +1.0), "o": (3, -1.0), "i": (4, +1.0), "k": (4, -1.0), "j": (5, +1.0), "l": (5, -1.0),
}


def apply_deadzone(values, deadzone: float) -> np.ndarray:
    """Per axis: ``|v| <= deadzone`` -> 0, else ``sign(v) (|v| - deadzone) / (1 - deadzone)``.

    Continuous at the deadzone edge and 1 at full deflection. float32 in, float32 out.
    """
    v = np.clip(np.asarray(values, np.float32), -1.0, 1.0)
    if deadzone <= 0:
        return v
    mag = np.maximum(np.abs(v) - deadzone, 0.0) / (1.0 - deadzone)
    return (np.sign(v) * mag).astype(np.float32)


class _Human7Base(gym.Wrapper):
    """Shared step logic for 7-D actions ``[dx dy dz rx ry rz gripper]`` in [-1, 1].

    Subclasses implement ``_read() -> (motion float32 (6,), gripper float or None, mark)``,
    with ``motion`` in the device frame (``device_frame``: ``"base"`` = the robot base frame,
    converted with the env's ``base_to_action_frame`` when it has one; ``"action"`` = already
    in the action frame) and ``mark`` one of None, ``"success"``, ``"failure"``.

    A step is a takeover when the motion is nonzero or a gripper command is given: the human
    action is executed and returned as ``info["intervene_action"]`` (float32 (7,)); otherwise
    the policy's action runs unchanged and the key is absent. The gripper part of a human
    action is the person's last gripper command in the current takeover segment (else the
    policy's). A success mark ends the episode with ``terminated=True``,
    ``reward = max(reward, success_reward)`` and ``info["success"] = True``; a failure mark
    with ``truncated=True`` and ``info["success"] = False``; both set ``info["operator_mark"]``.

    ``takeover`` (attribute, default True): False ignores the device's motion and gripper (the
    policy acts every step) but keeps the success / failure marks, as evaluation on a real arm
    needs (``serl_ext.loop.evaluation.human_input_off``).
    """

    def __init__(self, env: gym.Env, device_frame: str = "base", success_reward: float = 1.0):
        super().__init__(env)
        if device_frame not in ("base", "action"):
            raise ValueError(f"device_frame must be 'base' or 'action', got {device_frame!r}")
        self.device_frame = device_frame
        self.success_reward = float(success_reward)
        self._human_gripper: Optional[float] = None
        self._intervening = False
        self.takeover = True

    def _read(self):
        raise NotImplementedError

    def reset(self, **kwargs):
        self._human_gripper = None
        self._intervening = False
        return self.env.reset(**kwargs)

    def _to_action_frame(self, motion: np.ndarray) -> np.ndarray:
        if self.device_frame == "base":
            try:
                convert = self.env.get_wrapper_attr("base_to_action_frame")
            except AttributeError:
                convert = None
            if convert is not None:
                motion = np.asarray(convert(motion), np.float32)
        peak = float(np.max(np.abs(motion[:3]))) if motion.size else 0.0
        if peak > 1.0:  # a rotated unit-box vector: shrink, keep the direction
            motion[:3] /= peak
        peak = float(np.max(np.abs(motion[3:])))
        if peak > 1.0:
            motion[3:] /= peak
        return motion.astype(np.float32)

    def step(self, action):
        policy_action = np.asarray(action, dtype=np.float32)
        if policy_action.shape != (7,):
            raise ValueError(f"action must have shape (7,), got {policy_action.shape}")
        if not np.all(np.isfinite(policy_action)):
            raise ValueError(f"action has non-finite values: {policy_action}")
        motion, gripper, mark = self._read()
        motion = np.clip(np.asarray(motion, np.float32).reshape(6), -1.0, 1.0)
        if not self.takeover:  # marks only (evaluation)
            motion, gripper = np.zeros(6, np.float32), None
        active = bool(np.any(motion != 0.0)) or gripper is not None
        if not active:
            self._intervening = False
            self._human_gripper = None
            obs, reward, terminated, truncated, info = self.env.step(policy_action)
        else:
            if not self._intervening:
                self._intervening = True
                self._human_gripper = None
            if gripper is not None:
                self._human_gripper = float(np.clip(gripper, -1.0, 1.0))
            grip = self._human_gripper if self._human_gripper is not None else float(
                np.clip(policy_action[6], -1.0, 1.0))
            executed = np.concatenate([self._to_action_frame(motion), [grip]]).astype(np.float32)
            obs, reward, terminated, truncated, info = self.env.step(executed)
            info["intervene_action"] = executed
        if mark == "success":
            terminated, reward = True, max(float(reward), self.success_reward)
            info["success"], info["operator_mark"] = True, "success"
        elif mark == "failure":
            truncated = True
            info["success"], info["operator_mark"] = False, "failure"
        return obs, reward, terminated, truncated, info


class SpaceMouse6Intervention(_Human7Base):
    """6-DoF SpaceMouse takeover for 7-D actions (UR arm; HiL-SERL's SpacemouseIntervention).

    Translation and rotation of the device (after a per-axis ``deadzone``, see
    ``apply_deadzone``) times ``translation_scale`` / ``rotation_scale`` give ``a[:6]``; the
    ``close`` / ``open`` buttons give the gripper (+1 / -1); the ``success`` / ``failure``
    buttons (if the device has them) or the ``y`` / ``n`` keys of ``key_source`` mark the end
    of the episode (on the press, not while held). See ``_Human7Base`` for the step rules.

    Args:
        env: a 7-D env (``UREnv``, the robosuite UR5e tasks).
        device: object with ``get_action() -> (motion (6,), buttons list)``; None opens
            ``serl_ext.robots.spacemouse.SpaceMouse`` (pyspacemouse, imported lazily).
        translation_scale, rotation_scale: multipliers after the deadzone, in (0, 1].
        deadzone: per-axis deadzone in [0, 1).
        buttons: role -> button index (``DEFAULT_BUTTONS6``).
        key_source: optional callable returning the characters typed since its last call.
        device_frame: ``"base"`` (default; the SpaceMouse reader reports the robot base frame)
            or ``"action"``.

    Raises:
        ImportError: ``device`` is None and pyspacemouse is missing (``pip install -e .[robot]``).
        ValueError: scales or deadzone out of range, unknown button roles.
    """

    def __init__(self, env: gym.Env, device=None, translation_scale: float = 1.0,
                 rotation_scale: float = 1.0, deadzone: float = 0.05, buttons: Optional[dict] = None,
                 key_source: Optional[Callable[[], Iterable[str]]] = None, device_frame: str = "base",
                 success_reward: float = 1.0):
        super().__init__(env, device_frame, success_reward)
        if not (0.0 < translation_scale <= 1.0 and 0.0 < rotation_scale <= 1.0):
            raise ValueError("translation_scale and rotation_scale must be in (0, 1]")
        if not 0.0 <= deadzone < 1.0:
            raise ValueError(f"deadzone must be in [0, 1), got {deadzone}")
        buttons = dict(DEFAULT_BUTTONS6 if buttons is None else buttons)
        unknown = set(buttons) - set(DEFAULT_BUTTONS6)
        if unknown:
            raise ValueError(f"unknown button roles {sorted(unknown)}; known: {sorted(DEFAULT_BUTTONS6)}")
        if device is None:
            from serl_ext.robots.spacemouse import SpaceMouse

            device = SpaceMouse()
        if not callable(getattr(device, "get_action", None)):
            raise TypeError("device must have a get_action() -> (motion, buttons) method")
        self.device, self.key_source = device, key_source
        self.translation_scale, self.rotation_scale = float(translation_scale), float(rotation_scale)
        self.deadzone = float(deadzone)
        self.buttons = {role: buttons.get(role) for role in DEFAULT_BUTTONS6}
        self._held: set = set()

    def reset(self, **kwargs):
        self._held = set()
        return super().reset(**kwargs)

    def _pressed(self, buttons: list, role: str) -> bool:
        index = self.buttons[role]
        return index is not None and index < len(buttons) and bool(buttons[index])

    def _read(self):
        motion, buttons = self.device.get_action()
        motion = np.asarray(motion, np.float32).reshape(-1)
        if motion.shape != (6,):
            raise ValueError(f"SpaceMouse motion must have 6 values, got {motion.shape}")
        motion = apply_deadzone(motion, self.deadzone)
        motion[:3] *= self.translation_scale
        motion[3:] *= self.rotation_scale
        buttons = list(buttons)
        gripper = 1.0 if self._pressed(buttons, "close") else -1.0 if self._pressed(buttons, "open") else None
        mark = None
        for role in ("success", "failure"):
            pressed = self._pressed(buttons, role)
            if pressed and role not in self._held:
                mark = role
            self._held = (self._held | {role}) if pressed else (self._held - {role})
        if self.key_source is not None:
            keys = {str(k).lower() for k in self.key_source()}
            mark = "success" if SUCCESS_KEY in keys else "failure" if FAILURE_KEY in keys else mark
        return motion, gripper, mark


class Keyboard6Intervention(_Human7Base):
    """Keyboard fallback for 7-D actions when no SpaceMouse is at hand.

    Keys typed since the previous step (``DEFAULT_KEYMAP6``, base frame): w/s = +x/-x,
    a/d = +y/-y, r/f = +z/-z, u/o = +/- rotation about x, i/k = about y, j/l = about z, each
    ``speed`` in magnitude; space toggles the gripper (first press closes); ``y`` marks
    success, ``n`` failure.

    Args:
        env: a 7-D env.
        key_source: callable returning the characters typed since its last call; None =
            ``StdinKeySource()`` (needs a terminal).
        speed: magnitude per key, in (0, 1].
        keymap: key -> (axis 0..5, sign).
        device_frame: ``"base"`` or ``"action"`` (see ``_Human7Base``).
    """

    def __init__(self, env: gym.Env, key_source: Optional[Callable[[], Iterable[str]]] = None,
                 speed: float = 1.0, keymap: Optional[dict] = None, device_frame: str = "base",
                 success_reward: float = 1.0):
        super().__init__(env, device_frame, success_reward)
        self.key_source, self.speed = _key_source_and_speed(key_source, speed)
        self.keymap = dict(DEFAULT_KEYMAP6 if keymap is None else keymap)
        self._gripper_closed = False

    def reset(self, **kwargs):
        self._gripper_closed = False
        return super().reset(**kwargs)

    def _read(self):
        keys, motion, gripper, self._gripper_closed = _read_keys(
            self.key_source, self.keymap, self.speed, 6, self._gripper_closed)
        mark = "success" if SUCCESS_KEY in keys else "failure" if FAILURE_KEY in keys else None
        return motion, gripper, mark
