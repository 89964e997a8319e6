"""Configuration of the actor/learner transport (agentlace-compatible names)."""

from __future__ import annotations

import dataclasses
import ipaddress

from serl_ext.transport.codec import DEFAULT_MAX_MESSAGE_BYTES

__all__ = ["TrainerConfig"]


def _check_port(name: str, value: object) -> None:
    if type(value) is not int or not 1 <= value <= 65535:
        raise ValueError(f"{name} must be an int in [1, 65535], got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Ports and limits shared by :class:`TrainerServer` and :class:`TrainerClient`.

    Same field names as agentlace's ``TrainerConfig`` (HiL-SERL defaults
    5588/5589), plus the safety fields agentlace lacks.

    Attributes:
      port_number: TCP port of the REQ/REP socket (data and requests).
      broadcast_port: TCP port of the PUB/SUB socket (network parameters).
      request_types: names accepted by ``TrainerClient.request`` (a list is
        converted to a tuple). Other names are rejected by the server.
      bind_address: interface the server binds, default loopback only. Use the
        learner's LAN address (or "0.0.0.0") only on a trusted network: there
        is no authentication; the codec never executes received data, but any
        peer that reaches the port can insert transitions.
      max_message_bytes: size limit of one message, bytes (default 64 MiB).
        Applies to data chunks, requests, replies and published parameters.
      timeout_ms: how long the client waits for a reply, milliseconds.
      max_items_per_message: at most this many data items per ``"data"``
        message (chunks are also limited by ``max_message_bytes``).

    Raises:
      ValueError / TypeError: on invalid values (ports out of range or equal,
        non-str request types, non-positive limits, malformed bind address).
    """

    port_number: int = 5588
    broadcast_port: int = 5589
    request_types: tuple[str, ...] = ()
    bind_address: str = "127.0.0.1"
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    timeout_ms: int = 3000
    max_items_per_message: int = 256

    def __post_init__(self) -> None:
        _check_port("port_number", self.port_number)
        _check_port("broadcast_port", self.broadcast_port)
        if self.port_number == self.broadcast_port:
            raise ValueError(f"port_number and broadcast_port must differ, both are "
                             f"{self.port_number}")
        if isinstance(self.request_types, str):
            raise TypeError("request_types must be a sequence of str, got a single str "
                            f"{self.request_types!r}")
        types = tuple(self.request_types)
        for t in types:
            if not isinstance(t, str) or not t:
                raise TypeError(f"request_types entries must be non-empty str, got {t!r}")
        object.__setattr__(self, "request_types", types)
        if not isinstance(self.bind_address, str):
            raise TypeError(f"bind_address must be a str, got {type(self.bind_address).__name__}")
        if self.bind_address != "*":
            try:
                ipaddress.ip_address(self.bind_address)
            except ValueError as e:
                raise ValueError(f"bind_address must be an IP address such as '127.0.0.1', "
                                 f"got {self.bind_address!r}") from e
        for name in ("max_message_bytes", "timeout_ms", "max_items_per_message"):
            v = getattr(self, name)
            if type(v) is not int or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.max_message_bytes < 4096:
            raise ValueError(f"max_message_bytes must be >= 4096, got {self.max_message_bytes}")
