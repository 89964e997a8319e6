"""Thin 3Dconnexion SpaceMouse reader (HiL-SERL's intervention device).

``pyspacemouse`` is imported lazily, only when a ``SpaceMouse`` is created,
so that the package imports without the device's libraries. Install with
``pip install -e .[robot]``.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np


def _import_pyspacemouse():
    try:
        import pyspacemouse  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ImportError(
            "SpaceMouse support needs the 'pyspacemouse' package (and libhidapi); "
            "install the robot extras with `pip install -e .[robot]`") from err
    return pyspacemouse


class SpaceMouse:
    """Background reader of a SpaceMouse's 6-DoF state and buttons.

    ``get_action()`` returns ``(motion, buttons)``: ``motion`` float32 (6,)
    = (x, y, z, roll, pitch, yaw) in [-1, 1] (device units, as pyspacemouse
    reports them in its legacy axis convention, axes permuted to HiL-SERL's robot frame:
    x = -device y, y = device x); ``buttons`` list[int] (1 = pressed; [left, right, ...]).

    Works with pyspacemouse 2.x (``open()`` returns a device with ``read()`` / ``close()``)
    and 1.x (module-level ``open()`` / ``read()`` / ``close()``).

    Args:
        poll_hz: read rate of the background thread.

    Raises:
        ImportError: if ``pyspacemouse`` is missing (message says how to install).
        RuntimeError: if no device can be opened; from ``get_action()`` when the reader
            thread died (the device's error is chained).
    """

    def __init__(self, poll_hz: float = 200.0):
        self._psm = _import_pyspacemouse()
        try:
            handle = self._psm.open()
        except (RuntimeError, OSError, ValueError) as err:
            raise RuntimeError("could not open a SpaceMouse (is it plugged in and readable?)") from err
        if handle is None or handle is False:
            raise RuntimeError("could not open a SpaceMouse (is it plugged in and readable?)")
        self._device = handle if callable(getattr(handle, "read", None)) else self._psm
        self._lock = threading.Lock()
        self._motion = np.zeros(6, np.float32)
        self._buttons = [0, 0]
        self._error: Optional[BaseException] = None
        self._period = 1.0 / float(poll_hz)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                state = self._device.read()
                motion = np.array([-state.y, state.x, state.z, -state.roll, -state.pitch,
                                   -state.yaw], dtype=np.float32)
                buttons = [int(b) for b in state.buttons]
            except BaseException as err:  # reported by get_action()
                self._error = err
                return
            with self._lock:
                self._motion = np.clip(motion, -1.0, 1.0)
                self._buttons = buttons
            time.sleep(self._period)

    def get_action(self) -> tuple[np.ndarray, list]:
        if self._error is not None:
            raise RuntimeError(f"the SpaceMouse reader stopped: {self._error!r}") from self._error
        with self._lock:
            return self._motion.copy(), list(self._buttons)

    def close(self, timeout_s: Optional[float] = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        try:
            self._device.close()
        except Exception:  # pragma: no cover - device dependent
            pass
