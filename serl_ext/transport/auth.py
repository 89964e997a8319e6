"""Message authentication for the actor/learner transport (HMAC-SHA256, shared key).

Every frame of an authenticated transport (requests, replies and published
parameters) is::

    MAGIC (4 B, b"SRLA") | channel (1 B) | sender (16 B) | counter (u64 LE)
    | timestamp_ns (u64 LE) | bound_to (16 B) | tag (32 B) | payload (codec bytes)

``tag = HMAC-SHA256(key, everything before the tag | payload [| request tag
for replies])``. The tag is checked with :func:`hmac.compare_digest` on the
raw bytes before the payload is decoded, so an unauthenticated frame never
reaches the codec.

* ``channel``: 1 request (client -> server), 2 reply, 3 parameters. A frame
  of one channel is never accepted on another (no reflection).
* ``sender``: 16 random bytes per process object (client session, server id).
* ``counter``: strictly increasing per sender; a receiver refuses a counter
  it has already seen (replay).
* ``timestamp_ns``: ``time.time_ns()`` of the sender; frames older or newer
  than ``max_clock_skew_s`` are refused (replays of old captures, and old
  sessions a receiver no longer remembers).
* ``bound_to``: requests carry the server id learned from ``hello`` (zeros
  for ``hello`` itself), so a request captured from one learner process is
  refused by the next one; replies carry the client's session.
* replies include the request's tag in the MAC, so a reply only answers the
  request it was made for.

The key is at least 16 bytes, read from a file or an environment variable
(:func:`load_auth_key`), never from the command line.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import itertools
import os
import stat
import struct
import time
from typing import Optional

__all__ = [
    "AuthError",
    "Authenticator",
    "CHANNEL_PARAMS",
    "CHANNEL_REPLY",
    "CHANNEL_REQUEST",
    "KEY_ENV_VAR",
    "KEY_FILE_ENV_VAR",
    "MIN_KEY_BYTES",
    "ReplayWindow",
    "is_authenticated_frame",
    "is_loopback",
    "load_auth_key",
]

MAGIC = b"SRLA"
CHANNEL_REQUEST, CHANNEL_REPLY, CHANNEL_PARAMS = 1, 2, 3
ID_BYTES = 16
TAG_BYTES = 32
_HEAD = struct.Struct("<4sB16sQQ16s")
HEADER_BYTES = _HEAD.size + TAG_BYTES  # 77
MIN_KEY_BYTES = 16
KEY_ENV_VAR = "SERL_TRANSPORT_KEY"
"""Environment variable holding the shared key itself (>= 16 characters)."""
KEY_FILE_ENV_VAR = "SERL_TRANSPORT_KEY_FILE"
"""Environment variable holding the path of the key file."""
NO_ID = bytes(ID_BYTES)


class AuthError(ValueError):
    """A frame that is not authenticated, replayed, stale or for another channel."""

    def __init__(self, message: str, replay: bool = False) -> None:
        super().__init__(message)
        self.replay = replay


def is_loopback(host: str) -> bool:
    """True for a loopback host: ``localhost``, ``127.0.0.0/8``, ``::1``.

    ``"*"``, ``"0.0.0.0"``, ``"::"``, LAN addresses and other host names are
    not loopback.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_authenticated_frame(data: bytes | memoryview) -> bool:
    """True if ``data`` starts like an authenticated frame (magic bytes)."""
    return len(data) >= HEADER_BYTES and bytes(data[:4]) == MAGIC


def _check_key(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"transport key from {where} is {len(key)} bytes; at least "
                         f"{MIN_KEY_BYTES} are needed (e.g. `python -c 'import secrets; "
                         f"print(secrets.token_hex(32))' > key; chmod 600 key`)")
    return key


def load_auth_key(key_file: str | None = None, *, env: Optional[dict] = None,
                  log_fn=None) -> bytes | None:
    """Reads the shared transport key.

    Order: ``key_file`` (if non-empty), else the file named by
    ``$SERL_TRANSPORT_KEY_FILE``, else ``$SERL_TRANSPORT_KEY`` (the key
    itself). Surrounding whitespace (a trailing newline) is stripped. A key
    file readable by group or others is used, with a warning through
    ``log_fn``.

    Args:
      key_file: path of a file holding the key (>= 16 bytes), or None/"".
      env: environment mapping (default ``os.environ``; tests pass a dict).
      log_fn: ``fn(str)`` for the permission warning (default: none).

    Returns:
      The key (``bytes``, >= 16 bytes) or None when no source is set.

    Raises:
      FileNotFoundError: the named key file does not exist.
      ValueError: the key is shorter than 16 bytes.
    """
    env = os.environ if env is None else env
    path = key_file or env.get(KEY_FILE_ENV_VAR) or ""
    if path:
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"transport key file {path!r} does not exist")
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO) and log_fn is not None:
            log_fn(f"transport key file {path!r} is readable by group/others "
                   f"(mode {stat.filemode(mode)}); chmod 600 it")
        with open(path, "rb") as f:
            return _check_key(f.read().strip(), f"file {path!r}")
    value = env.get(KEY_ENV_VAR)
    if value:
        return _check_key(value.strip().encode(), f"${KEY_ENV_VAR}")
    return None


class ReplayWindow:
    """Last counter per sender, bounded (LRU), for replay refusal.

    Args:
      max_senders: senders remembered; the least recently seen is forgotten
        first (an old frame of a forgotten sender is still refused by the
        timestamp window).
    """

    def __init__(self, max_senders: int = 1024) -> None:
        self.max_senders = int(max_senders)
        self._last: "collections.OrderedDict[bytes, int]" = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def check(self, sender: bytes, counter: int) -> None:
        """Raises :class:`AuthError` (replay) if ``counter`` is not above the last one seen."""
        last = self._last.get(sender)
        if last is not None and counter <= last:
            raise AuthError(f"replayed frame (counter {counter} <= last {last})", replay=True)

    def accept(self, sender: bytes, counter: int) -> None:
        """Records ``counter`` as the last one of ``sender`` (call after :meth:`check`)."""
        self._last[sender] = counter
        self._last.move_to_end(sender)
        while len(self._last) > self.max_senders:
            self._last.popitem(last=False)


class Authenticator:
    """Signs and verifies frames with one shared key (see the module docstring).

    Args:
      key: the shared key, bytes (>= 16).
      max_clock_skew_s: frames whose timestamp differs from this host's clock
        by more than this are refused, seconds.

    Attributes:
      sender_id: this endpoint's random 16-byte id.

    Raises:
      ValueError: key too short; TypeError: key not bytes.
    """

    def __init__(self, key: bytes, max_clock_skew_s: float = 120.0) -> None:
        if not isinstance(key, (bytes, bytearray)):
            raise TypeError(f"auth key must be bytes, got {type(key).__name__}")
        self._key = _check_key(bytes(key), "the config")
        self.max_clock_skew_s = float(max_clock_skew_s)
        self.sender_id = os.urandom(ID_BYTES)
        self._counter = itertools.count(1)  # next() is atomic: server threads share it

    def _mac(self, head: bytes, payload, extra: bytes) -> bytes:
        h = hmac.new(self._key, head, hashlib.sha256)
        h.update(payload)
        if extra:
            h.update(extra)
        return h.digest()

    def sign(self, channel: int, payload: bytes, bound_to: bytes = NO_ID,
             extra: bytes = b"") -> bytes:
        """Returns the authenticated frame for ``payload`` (codec bytes).

        Args:
          channel: CHANNEL_REQUEST / CHANNEL_REPLY / CHANNEL_PARAMS.
          bound_to: 16-byte id the frame is meant for (server id or session).
          extra: bytes included in the MAC but not sent (the request's tag).
        """
        head = _HEAD.pack(MAGIC, channel, self.sender_id, next(self._counter), time.time_ns(),
                          bytes(bound_to))
        return b"".join((head, self._mac(head, payload, extra), payload))

    def verify(self, frame, channel: int, extra: bytes = b"") -> tuple[bytes, int, int, bytes,
                                                                        bytes, memoryview]:
        """Checks magic, channel, MAC and timestamp; does not decode the payload.

        Returns:
          ``(sender, counter, timestamp_ns, bound_to, tag, payload view)``.

        Raises:
          AuthError: not an authenticated frame, other channel, wrong MAC
            (wrong key or altered bytes), or timestamp outside the window.
        """
        view = memoryview(frame)
        if not is_authenticated_frame(view):
            raise AuthError("frame is not authenticated (no HMAC header; does the peer have "
                            "the key?)")
        head = bytes(view[:_HEAD.size])
        _, ch, sender, counter, ts, bound_to = _HEAD.unpack(head)
        tag = bytes(view[_HEAD.size:HEADER_BYTES])
        payload = view[HEADER_BYTES:]
        if not hmac.compare_digest(tag, self._mac(head, payload, extra)):
            raise AuthError("bad HMAC (wrong key or altered frame)")
        if ch != channel:
            raise AuthError(f"frame for channel {ch} received on channel {channel}")
        skew = abs(time.time_ns() - ts) / 1e9
        if skew > self.max_clock_skew_s:
            raise AuthError(f"frame timestamp is {skew:.0f} s away from this clock (allowed "
                            f"{self.max_clock_skew_s:.0f} s): a replay, or clocks not in sync",
                            replay=True)
        return sender, counter, ts, bound_to, tag, payload
