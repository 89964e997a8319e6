"""Grippers for ``UREnv``: a digital output through ``RTDEIOInterface`` or a Robotiq
gripper through its URCap socket (port 63352).

A gripper has ``command(closed: bool)`` (non-blocking where the hardware allows),
``position() -> float`` in [0, 1] (0 open, 1 closed) and ``close()``.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, Optional


class IOGripper:
    """Gripper on a digital output (pneumatic grippers, simple electric ones).

    Args:
        io: an ``RTDEIOInterface`` (or fake) with ``setStandardDigitalOut`` / ``setToolDigitalOut``.
        receive: an ``RTDEReceiveInterface`` (for ``getDigitalOutState``); None = report the
            last command.
        output_id: the digital output number.
        tool_output: True = tool digital output, False = standard (controller box) output.
        close_level: the output level that closes the gripper.
    """

    def __init__(self, io, receive=None, output_id: int = 0, tool_output: bool = False,
                 close_level: bool = True):
        if io is None:
            raise ValueError("IOGripper needs an RTDEIOInterface (rtde_factory returned io=None)")
        self.io, self.receive = io, receive
        self.output_id, self.tool_output, self.close_level = int(output_id), bool(tool_output), bool(close_level)
        self._closed = False

    def command(self, closed: bool) -> None:
        level = self.close_level if closed else not self.close_level
        if self.tool_output:
            self.io.setToolDigitalOut(self.output_id, level)
        else:
            self.io.setStandardDigitalOut(self.output_id, level)
        self._closed = bool(closed)

    def position(self) -> float:
        if self.receive is not None and not self.tool_output:
            level = bool(self.receive.getDigitalOutState(self.output_id))
            return 1.0 if level == self.close_level else 0.0
        return 1.0 if self._closed else 0.0

    def close(self) -> None:
        pass


class RobotiqSocketGripper:
    """Robotiq 2F gripper through the Robotiq URCap's ASCII socket server.

    Protocol: ``SET ACT 1`` (activate), ``SET GTO 1``, ``SET SPE n``, ``SET FOR n``,
    ``SET POS n`` (0 open .. 255 closed), each answered ``ack``; ``GET POS`` answered
    ``POS n``. ``command`` sends ``SET POS`` from a worker thread so that the policy loop
    does not wait on the socket; ``position()`` returns the last ``GET POS`` reading, polled
    by the same thread.

    Args:
        host: the robot's address (the URCap listens on the controller).
        port: the URCap port (63352).
        speed, force: 0..255.
        socket_factory: ``(host, port, timeout_s) -> socket-like`` with ``sendall``/``recv``/
            ``close``; None = ``socket.create_connection``. Tests inject a fake.
        timeout_s: socket timeout.
    Raises:
        ConnectionError: the gripper does not answer ``ack`` to the activation.
    """

    def __init__(self, host: str, port: int = 63352, speed: int = 255, force: int = 100,
                 socket_factory: Optional[Callable] = None, timeout_s: float = 2.0):
        factory = socket_factory or (lambda h, p, t: socket.create_connection((h, p), timeout=t))
        self._sock = factory(host, int(port), float(timeout_s))
        self._io_lock = threading.Lock()
        for cmd in ("SET ACT 1", "SET GTO 1", f"SET SPE {int(speed)}", f"SET FOR {int(force)}"):
            if self._send(cmd) != "ack":
                raise ConnectionError(f"Robotiq gripper at {host}:{port} did not acknowledge {cmd!r}")
        self._target: Optional[int] = None
        self._position = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _send(self, cmd: str) -> str:
        with self._io_lock:
            self._sock.sendall((cmd + "\n").encode())
            return self._sock.recv(1024).decode().strip()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            try:
                target = self._target
                if target is not None:
                    self._target = None
                    self._send(f"SET POS {target}")
                reply = self._send("GET POS")
                if reply.startswith("POS"):
                    self._position = min(max(int(reply.split()[1]) / 255.0, 0.0), 1.0)
            except (OSError, ValueError, IndexError):  # pragma: no cover - hardware dependent
                continue

    def command(self, closed: bool) -> None:
        self._target = 255 if closed else 0
        self._wake.set()

    def position(self) -> float:
        return float(self._position)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=1.0)
        try:
            self._sock.close()
        except OSError:  # pragma: no cover
            pass
