"""Configuration of the actor/learner transport (agentlace-compatible names)."""

from __future__ import annotations

import dataclasses
import ipaddress

from serl_ext.transport.auth import MIN_KEY_BYTES, is_loopback

from serl_ext.transport.codec import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_OBJECTS

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
      bind_address: interface the server binds, default loopback only. A
        non-loopback address needs ``auth_key`` (the server refuses to start
        without one).
      max_message_bytes: size limit of one message, bytes (default 64 MiB).
        Applies to data chunks, requests, replies and published parameters.
      timeout_ms: how long the client waits for a reply, milliseconds.
      max_items_per_message: at most this many data items per ``"data"``
        message (chunks are also limited by ``max_message_bytes``); the server
        refuses larger messages.
      auth_key: shared key (bytes, >= 16; from
        :func:`serl_ext.transport.auth.load_auth_key`, never the command
        line). With a key every frame in both directions carries an
        HMAC-SHA256 with replay protection (:mod:`serl_ext.transport.auth`)
        and unauthenticated frames are refused before decoding. Not shown
        in ``repr``.
      auth: ``"auto"`` (default): authenticate when a key is given; a key is
        required when the server binds, or the client connects to, a
        non-loopback address. ``"required"``: a key is required everywhere.
      max_clock_skew_s: authenticated frames older/newer than this are
        refused, seconds (the actor's and learner's clocks must agree this
        well, e.g. NTP).
      monotonic_fields: names of int fields of a published (dict) parameter
        message that must be ints >= 0 that never decrease within one
        publisher and never jump by more than ``max_counter_jump``; the
        client refuses such a message before the callback sees it. A new
        publisher (learner restart) may start lower.
      max_counter_jump: see ``monotonic_fields``.
      max_sessions: the server remembers the last data id (and the last
        frame counter) of at most this many client sessions (LRU).
      max_decoded_objects: at most this many msgpack objects (containers and
        scalars, arrays count 1) in one message; checked before allocation.

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
    auth_key: bytes | None = dataclasses.field(default=None, repr=False, compare=False)
    auth: str = "auto"
    max_clock_skew_s: float = 120.0
    monotonic_fields: tuple[str, ...] = ()
    max_counter_jump: int = 10_000_000
    max_sessions: int = 1024
    max_decoded_objects: int = DEFAULT_MAX_OBJECTS

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
        if self.auth_key is not None:
            if not isinstance(self.auth_key, (bytes, bytearray)):
                raise TypeError(f"auth_key must be bytes or None, got {type(self.auth_key).__name__}")
            if len(self.auth_key) < MIN_KEY_BYTES:
                raise ValueError(f"auth_key must have at least {MIN_KEY_BYTES} bytes, got "
                                 f"{len(self.auth_key)}")
            object.__setattr__(self, "auth_key", bytes(self.auth_key))
        if self.auth not in ("auto", "required"):
            raise ValueError(f"auth must be 'auto' or 'required', got {self.auth!r}")
        if not (isinstance(self.max_clock_skew_s, (int, float)) and self.max_clock_skew_s > 0):
            raise ValueError(f"max_clock_skew_s must be > 0, got {self.max_clock_skew_s!r}")
        if isinstance(self.monotonic_fields, str):
            raise TypeError("monotonic_fields must be a sequence of str, got a single str")
        object.__setattr__(self, "monotonic_fields", tuple(self.monotonic_fields))
        for name in ("max_message_bytes", "timeout_ms", "max_items_per_message",
                     "max_counter_jump", "max_sessions", "max_decoded_objects"):
            v = getattr(self, name)
            if type(v) is not int or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.max_message_bytes < 4096:
            raise ValueError(f"max_message_bytes must be >= 4096, got {self.max_message_bytes}")

    def check_key_for(self, host: str, role: str) -> None:
        """Raises ValueError if ``host`` needs a key (non-loopback or ``auth="required"``)
        and ``auth_key`` is None; ``role`` ("server bind" / "client connect") names it."""
        if self.auth_key is not None:
            return
        if self.auth == "required" or not is_loopback(host):
            why = ("auth='required'" if self.auth == "required"
                   else f"{host!r} is not a loopback address")
            raise ValueError(
                f"transport {role} address {host!r}: an authentication key is required "
                f"({why}). Put a key of >= {MIN_KEY_BYTES} bytes in a file (chmod 600) and pass "
                f"--config.transport.auth_key_file=PATH, or set $SERL_TRANSPORT_KEY_FILE or "
                f"$SERL_TRANSPORT_KEY, on both the learner and the actor")
