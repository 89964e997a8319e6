"""Clocks for the two loops of ``UREnv``: the servo thread and the policy loop.

A clock has ``now() -> float`` (seconds), ``wait_servo(t)`` (the servo thread's wait for
its next tick) and ``wait_policy(t)`` (the policy loop's wait for the end of its step).

- ``RealClock``: both waits sleep until ``time.monotonic()`` reaches ``t`` (the robot).
- ``LockstepClock``: simulated time. It advances only in ``wait_servo``, one servo tick at
  a time, calling ``on_tick(dt)`` (the physics step of a simulated arm), and only as far as
  the policy loop has asked in ``wait_policy``. The servo thread and the policy loop then
  interleave exactly as they would in real time on an unloaded machine, deterministically,
  whatever the CPU load (``wait_policy`` returns only once the servo thread has finished its
  tick at the new time): tests and the simulated UR5e use it. ``advance(dt)`` lets time pass
  with no policy step (a stalled policy, to test the watchdog).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional


class RealClock:
    """Wall-clock time (``time.monotonic``)."""

    def now(self) -> float:
        return time.monotonic()

    def _sleep_until(self, t: float) -> None:
        remaining = t - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def wait_servo(self, t: float) -> None:
        self._sleep_until(t)

    def wait_policy(self, t: float) -> None:
        self._sleep_until(t)

    def close(self) -> None:
        pass


class LockstepClock:
    """Simulated time shared by the servo thread and the policy loop.

    Args:
        on_tick: called as ``on_tick(dt)`` by the servo thread each time simulated time
            advances by ``dt`` seconds (e.g. a MuJoCo step); None = nothing.
        wall_timeout_s: ``wait_policy`` raises ``TimeoutError`` when simulated time has not
            reached the requested time after this many wall-clock seconds (a dead servo
            thread).
    """

    def __init__(self, on_tick: Optional[Callable[[float], None]] = None, wall_timeout_s: float = 60.0):
        self.on_tick = on_tick
        self.wall_timeout_s = float(wall_timeout_s)
        self._t = 0.0
        self._allowed = 0.0
        self._closed = False
        self._servo_waiting = False
        self._cond = threading.Condition()

    def now(self) -> float:
        with self._cond:
            return self._t

    def wait_servo(self, t: float) -> None:
        """Blocks until the policy loop allows time to pass, then advances to ``t``."""
        with self._cond:
            while self._t >= self._allowed - 1e-12 and not self._closed:
                self._servo_waiting = True  # the tick at self._t is complete
                self._cond.notify_all()
                self._cond.wait(0.05)
            self._servo_waiting = False
            if self._closed:
                return
            dt = t - self._t
        if dt > 0 and self.on_tick is not None:
            self.on_tick(dt)
        with self._cond:
            self._t = max(self._t, t)
            self._cond.notify_all()

    def wait_policy(self, t: float) -> None:
        """Lets simulated time run to ``t`` and blocks until it has.

        Raises:
            TimeoutError: the servo thread did not advance time within ``wall_timeout_s``.
        """
        deadline = time.monotonic() + self.wall_timeout_s
        with self._cond:
            self._allowed = max(self._allowed, t)
            self._cond.notify_all()
            # Wake only once the servo thread has finished its tick at the new time and waits
            # again: the policy then always sees that tick's state, deterministically.
            while self._t < t - 1e-12 or not self._servo_waiting:
                if self._closed:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"simulated time stuck at {self._t:.3f} s (wanted {t:.3f} s): is the servo thread running?")
                self._cond.wait(0.05)

    def advance(self, dt: float) -> None:
        """Lets ``dt`` seconds pass with no policy step."""
        self.wait_policy(self.now() + dt)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
