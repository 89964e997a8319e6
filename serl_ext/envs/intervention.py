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
        if not 0.0 < speed <= 1.0:
            raise ValueError(f"speed must be in (0, 1], got {speed}")
        self.key_source = key_source if key_source is not None else StdinKeySource()
        if not callable(self.key_source):
            raise TypeError("key_source must be callable")
        self.speed = float(speed)
        self.keymap = dict(DEFAULT_KEYMAP if keymap is None else keymap)
        self._gripper_closed = False

    def reset(self, **kwargs):
        self._gripper_closed = False
        return super().reset(**kwargs)

    def _read(self):
        keys = set(str(k).lower() if k != GRIPPER_KEY else k for k in self.key_source())
        xyz = np.zeros(3, np.float32)
        for key in keys:
            if key in self.keymap:
                axis, sign = self.keymap[key]
                xyz[axis] += sign * self.speed
        gripper = None
        if GRIPPER_KEY in keys:
            self._gripper_closed = not self._gripper_closed
            gripper = 1.0 if self._gripper_closed else -1.0
        return xyz, gripper
