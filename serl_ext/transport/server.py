"""Learner side of the transport: ``TrainerServer`` (agentlace API on pyzmq).

Wire protocol (REQ/REP on ``tcp://{bind_address}:{port_number}``); every
request is one msgpack frame (see :mod:`serl_ext.transport.codec`) holding a
dict with ``"type"`` and ``"client"`` (str) and an optional ``"session"``
(str, a random token per ``TrainerClient`` instance):

* ``{"type": "hello"}`` -> ``{"ok": True, "server_id", "stores", "request_types"}``
* ``{"type": "last_id", "store"}`` -> ``{"ok": True, "last_id", "durable_id"}``:
  the last data id inserted for this (client, session, store), -1 if unknown,
  and, with ``durable_ack`` only, the id up to which the client may delete
  its copies (without it the client deletes up to ``last_id``).
* ``{"type": "data", "store", "items": [[id, item], ...]}`` with strictly
  increasing int ids >= 0 and dict items -> ``{"ok": True, "last_id",
  "inserted", "insert_errors"}`` (+ ``"durable_id"``). Items with id <= the last id
  are skipped (duplicates of a resent chunk).

Durable acknowledgement (``TrainerServer(..., durable_ack=True)``): the
client deletes an item only once it is in a checkpoint. The learner saves
with ``with server.hold_inserts() as ids: state_dicts = ...`` (no insert
runs meanwhile, so ``ids`` says exactly what the state dicts hold), stores
``ids`` with the checkpoint, and calls ``server.mark_durable(ids)`` once the
checkpoint is complete; ``durable_id`` then advances. A restarted learner
calls ``server.restore_ids(ids)`` (of the checkpoint it restored) before
``start``: the client (same session) learns that everything up to those ids
is held, deletes it, and resends the rest, so a SIGKILL at any moment loses
and duplicates nothing (within the client's queue capacity).
* ``{"type": "request", "request_type", "payload"}`` ->
  ``{"ok": True, "response": request_callback(request_type, payload)}``.

Anything else (undecodable, oversized, multipart, wrong schema, unknown
type/store/request type, more than ``max_items_per_message`` items) gets
``{"ok": False, "error": "..."}`` and adds 1 to ``num_rejected`` (one log
line per message); the server thread never dies on a bad message.

Authentication (``config.auth_key`` set; required when ``bind_address`` is
not loopback): every frame is wrapped as in :mod:`serl_ext.transport.auth`.
A request without a valid HMAC, replayed (counter not above the session's
last, or timestamp outside ``max_clock_skew_s``), or bound to another server
id (captured from an earlier learner process; ``hello`` excepted) is refused
before its payload is decoded, counted in ``num_unauthenticated`` /
``num_replayed`` (and ``num_rejected``), and answered with an unsigned error.
Replies are signed and bound to their request; published parameters are
signed (channel 3) with a per-publish counter.

Parameters go out on a PUB socket (``tcp://{bind_address}:{broadcast_port}``)
as one frame: ``encode(params)``. The PUB socket conflates (keeps only the
newest unsent message per subscriber).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import secrets
import threading
import time
from typing import Any, Callable

import zmq

from serl_ext.transport import auth as _auth
from serl_ext.transport.codec import MessageError, decode, encode
from serl_ext.transport.config import TrainerConfig

__all__ = ["TrainerServer"]

_logger = logging.getLogger(__name__)

_POLL_MS = 50
_FINAL_LINGER_MS = 200  # lets the last reply leave before the REP socket closes
_MAX_NAME_LEN = 256


class _Rejected(Exception):
    """Internal: the message is rejected with this reason."""


def _require_str(msg: dict, key: str, optional: bool = False) -> str | None:
    v = msg.get(key)
    if v is None and optional:
        return None
    if type(v) is not str or not v or len(v) > _MAX_NAME_LEN:
        raise _Rejected(f"field {key!r} must be a non-empty str of at most {_MAX_NAME_LEN} "
                        f"chars, got {type(v).__name__}")
    return v


class TrainerServer:
    """Learner-side endpoint: receives actor data and requests, publishes parameters.

    Same API as agentlace's ``TrainerServer`` without its flaws: messages are
    msgpack (never pickle) and validated, the sockets bind
    ``config.bind_address`` (loopback by default), and ``stop()`` is bounded.

    Data stores: ``register_data_store(name, store)`` takes any object with
    ``insert(item: dict)``. Inserts are called **on the server thread**
    (the one started by ``start(threaded=True)``), concurrently with whatever
    the learner's main thread does, so the store must be thread safe (e.g. a
    replay buffer guarded by a lock). An item whose ``insert`` raises is
    skipped, logged and counted in ``num_insert_errors`` (it is not resent).

    Args:
      config: the shared :class:`TrainerConfig`.
      request_callback: ``fn(request_type: str, payload) -> response`` for
        ``config.request_types``; the response must be encodable by the codec.
        Called on the server thread. Exceptions are logged, counted in
        ``num_callback_errors`` and answered with an error reply.
      log_fn: ``fn(message: str)`` for warnings/info; default: module logger.
      durable_ack: keyword-only; True: clients may delete items only up to
        the ids passed to :meth:`mark_durable` (module docstring).

    Counters (ints, written by the server thread): ``num_received`` (all
    messages), ``num_rejected`` (all refused messages, including the next
    two), ``num_unauthenticated`` (no/bad HMAC, wrong channel or server id),
    ``num_replayed`` (replayed or stale frames), ``num_items_inserted``,
    ``num_duplicates``, ``num_insert_errors``, ``num_callback_errors``,
    ``num_published``. Liveness: ``last_contact_time`` (``time.time()`` of
    the last accepted, decodable message, None before any) and
    ``last_contact`` (client name -> that time; at most ``max_sessions``
    names), so the learner can notice an actor that stopped.

    The last data id of at most ``config.max_sessions`` client sessions per
    store is kept (least recently used forgotten first; a forgotten session's
    resent chunk is then inserted again: a duplicate, never a loss).

    Raises:
      TypeError: bad config / callback types.
    """

    def __init__(self, config: TrainerConfig,
                 request_callback: Callable[[str, Any], Any] | None = None,
                 log_fn: Callable[[str], None] | None = None, *,
                 durable_ack: bool = False) -> None:
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig, got {type(config).__name__}")
        if request_callback is not None and not callable(request_callback):
            raise TypeError("request_callback must be callable or None")
        if log_fn is not None and not callable(log_fn):
            raise TypeError("log_fn must be callable or None")
        self.config = config
        self.request_callback = request_callback
        self._log_fn = log_fn
        self.durable_ack = bool(durable_ack)
        self._durable: dict[tuple[str, str, str], int] = {}
        self._insert_lock = threading.Lock()
        self._auth = (_auth.Authenticator(config.auth_key, config.max_clock_skew_s)
                      if config.auth_key is not None else None)
        self._replay = _auth.ReplayWindow(config.max_sessions)
        self.server_id = (self._auth.sender_id.hex() if self._auth is not None
                          else secrets.token_hex(8))
        self._stores: dict[str, Any] = {}
        self._last_ids: "collections.OrderedDict[tuple[str, str, str], int]" = (
            collections.OrderedDict())
        self._ctx: zmq.Context | None = None
        self._rep: zmq.Socket | None = None
        self._pub: zmq.Socket | None = None
        self._pub_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._serve_done = threading.Event()
        self._started = False
        self.endpoints: tuple[str, str] | None = None
        self.num_received = 0
        self.num_rejected = 0
        self.num_unauthenticated = 0
        self.num_replayed = 0
        self.num_items_inserted = 0
        self.num_duplicates = 0
        self.num_insert_errors = 0
        self.num_callback_errors = 0
        self.num_published = 0
        self.last_contact_time: float | None = None
        self.last_contact: dict[str, float] = {}

    # ------------------------------------------------------------------ setup

    def _log(self, msg: str, level: int = logging.WARNING) -> None:
        if self._log_fn is not None:
            self._log_fn(msg)
        else:
            _logger.log(level, msg)

    def register_data_store(self, name: str, store: Any) -> None:
        """Registers ``store`` (any object with ``insert(item: dict)``) under ``name``.

        Raises:
          TypeError: name not a non-empty str or store without a callable insert.
          ValueError: name already registered.
        """
        if type(name) is not str or not name or len(name) > _MAX_NAME_LEN:
            raise TypeError(f"store name must be a non-empty str, got {name!r}")
        if not callable(getattr(store, "insert", None)):
            raise TypeError(f"store {name!r} must have a callable insert(item: dict)")
        if name in self._stores:
            raise ValueError(f"a data store named {name!r} is already registered")
        self._stores = {**self._stores, name: store}  # atomic swap, server thread reads

    def start(self, threaded: bool = True) -> None:
        """Binds both sockets and serves requests.

        Args:
          threaded: True: serve on a daemon thread and return. False: serve on
            the calling thread until ``stop()`` is called from another thread.

        Raises:
          RuntimeError: already started.
          ValueError: ``bind_address`` is not loopback (or ``auth="required"``)
            and the config has no ``auth_key``.
          OSError: a port cannot be bound (e.g. already in use).
        """
        if self._started:
            raise RuntimeError("TrainerServer.start() called twice")
        cfg = self.config
        cfg.check_key_for(cfg.bind_address, "server bind")
        ctx = zmq.Context()
        rep = pub = None
        data_ep = f"tcp://{cfg.bind_address}:{cfg.port_number}"
        pub_ep = f"tcp://{cfg.bind_address}:{cfg.broadcast_port}"
        try:
            rep = ctx.socket(zmq.REP)
            rep.setsockopt(zmq.LINGER, 0)
            # hard guard against huge frames (connection dropped without reply);
            # frames up to the limit get a proper error reply below
            rep.setsockopt(zmq.MAXMSGSIZE, 2 * cfg.max_message_bytes)
            rep.bind(data_ep)
            pub = ctx.socket(zmq.PUB)
            pub.setsockopt(zmq.LINGER, 0)
            pub.setsockopt(zmq.CONFLATE, 1)
            pub.bind(pub_ep)
        except zmq.ZMQError as e:
            for s in (rep, pub):
                if s is not None:
                    s.close(linger=0)
            ctx.term()
            raise OSError(f"TrainerServer cannot bind {data_ep} / {pub_ep}: {e}") from e
        self._ctx, self._rep, self._pub = ctx, rep, pub
        self.endpoints = (rep.getsockopt_string(zmq.LAST_ENDPOINT),
                          pub.getsockopt_string(zmq.LAST_ENDPOINT))
        self._started = True
        self._log(f"TrainerServer {self.server_id} serving data on {self.endpoints[0]}, "
                  f"parameters on {self.endpoints[1]}", logging.INFO)
        if threaded:
            self._thread = threading.Thread(target=self._serve, name="TrainerServer",
                                            daemon=True)
            self._thread.start()
        else:
            self._serve()

    # ------------------------------------------------------------ publishing

    def publish_network(self, params: Any) -> None:
        """Sends ``params`` (a pytree of arrays) to every subscribed client.

        Thread safe; non-blocking (a slow subscriber only ever gets the newest).

        Raises:
          RuntimeError: server not started or stopped.
          MessageError: params not encodable or larger than max_message_bytes.
        """
        data = encode(params, max_bytes=self.config.max_message_bytes)
        with self._pub_lock:
            if self._pub is None:
                raise RuntimeError("publish_network() needs a started, not stopped, server")
            if self._auth is not None:
                data = self._auth.sign(_auth.CHANNEL_PARAMS, data)
            try:
                self._pub.send(data, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._log("publish_network: send would block, parameters dropped")
                return
            self.num_published += 1

    # --------------------------------------------------------------- serving

    def _serve(self) -> None:
        rep = self._rep
        try:
            while not self._stop_event.is_set():
                try:
                    if not rep.poll(_POLL_MS, zmq.POLLIN):
                        continue
                    frames = rep.recv_multipart(copy=False)
                except zmq.ZMQError as e:
                    if self._stop_event.is_set():
                        break
                    self._log(f"TrainerServer receive error: {e}")
                    time.sleep(_POLL_MS / 1000)
                    continue
                reply, sign_for = self._handle_frames(frames)
                try:
                    data = encode(reply, max_bytes=self.config.max_message_bytes)
                except MessageError as e:
                    self.num_callback_errors += 1
                    self._log(f"TrainerServer: reply not encodable: {e}")
                    data = encode({"ok": False, "error": f"reply not encodable: {e}"})
                if sign_for is not None:  # authenticated request: signed reply bound to it
                    sender, tag = sign_for
                    data = self._auth.sign(_auth.CHANNEL_REPLY, data, bound_to=sender, extra=tag)
                try:
                    rep.send(data, zmq.NOBLOCK)
                except zmq.ZMQError as e:
                    self._log(f"TrainerServer send error (peer gone?): {e}")
        except Exception as e:  # noqa: BLE001 - last resort, keep a trace
            self._log(f"TrainerServer thread crashed: {type(e).__name__}: {e}", logging.ERROR)
            raise
        finally:
            rep.close(linger=_FINAL_LINGER_MS)
            self._serve_done.set()

    def _reject(self, reason: str) -> dict:
        self.num_rejected += 1
        self._log(f"TrainerServer rejected a message: {reason}")
        return {"ok": False, "error": reason}

    def _handle_frames(self, frames: list) -> tuple[dict, tuple[bytes, bytes] | None]:
        """Checks authentication (if on) before decoding; returns (reply, sign_for)."""
        if self._auth is None:
            if len(frames) == 1 and _auth.is_authenticated_frame(frames[0].buffer):
                self.num_received += 1
                return self._reject("message is authenticated but this server has no key "
                                    "(set the same transport key on both sides)"), None
            return self._handle(frames), None
        if len(frames) != 1:
            self.num_received += 1
            self.num_unauthenticated += 1
            return self._reject(f"expected a single-frame message, got {len(frames)} "
                                f"frames"), None
        try:
            sender, counter, _, bound_to, tag, payload = self._auth.verify(
                frames[0].buffer, _auth.CHANNEL_REQUEST)
            self._replay.check(sender, counter)
        except _auth.AuthError as e:
            self.num_received += 1
            if e.replay:
                self.num_replayed += 1
            else:
                self.num_unauthenticated += 1
            return self._reject(f"refused unauthenticated frame: {e}"), None
        self._replay.accept(sender, counter)
        return self._handle([payload], bound_to=bound_to), (sender, tag)

    def _handle(self, frames: list, bound_to: bytes | None = None) -> dict:
        self.num_received += 1
        if len(frames) != 1:
            return self._reject(f"expected a single-frame message, got {len(frames)} frames")
        frame = frames[0]
        try:
            msg = decode(getattr(frame, "buffer", frame), max_bytes=self.config.max_message_bytes,
                         max_objects=self.config.max_decoded_objects)
        except MessageError as e:
            return self._reject(f"undecodable message: {e}")
        try:
            if not isinstance(msg, dict):
                raise _Rejected(f"message must be a dict, got {type(msg).__name__}")
            kind = _require_str(msg, "type")
            client_name = msg.get("client")
            if type(client_name) is str and 0 < len(client_name) <= _MAX_NAME_LEN:
                now = time.time()
                self.last_contact_time = now
                if client_name in self.last_contact or len(self.last_contact) < self.config.max_sessions:
                    self.last_contact[client_name] = now
            if (bound_to is not None and kind != "hello"
                    and bound_to != self._auth.sender_id):
                self.num_unauthenticated += 1
                raise _Rejected("stale_server: request was made for another server id "
                                "(send hello first)")
            client = _require_str(msg, "client")
            session = _require_str(msg, "session", optional=True) or ""
            if kind == "hello":
                return {"ok": True, "server_id": self.server_id,
                        "stores": sorted(self._stores),
                        "request_types": list(self.config.request_types)}
            if kind == "last_id":
                store_name = self._store_name(msg)
                key = (client, session, store_name)
                return self._with_durable({"ok": True, "last_id": self._last_ids.get(key, -1)}, key)
            if kind == "data":
                return self._handle_data(msg, client, session)
            if kind == "request":
                return self._handle_request(msg)
            raise _Rejected(f"unknown message type {kind!r}; expected one of "
                            "hello, last_id, data, request")
        except _Rejected as e:
            return self._reject(str(e))

    def _store_name(self, msg: dict) -> str:
        name = _require_str(msg, "store")
        if name not in self._stores:
            raise _Rejected(f"unknown data store {name!r}; registered: {sorted(self._stores)}")
        return name

    def _handle_data(self, msg: dict, client: str, session: str) -> dict:
        store_name = self._store_name(msg)
        items = msg.get("items")
        if type(items) is not list:
            raise _Rejected(f"field 'items' must be a list, got {type(items).__name__}")
        if len(items) > self.config.max_items_per_message:
            raise _Rejected(f"message holds {len(items)} items, more than "
                            f"max_items_per_message={self.config.max_items_per_message}")
        prev = -1
        for pair in items:
            if type(pair) is not list or len(pair) != 2:
                raise _Rejected("each entry of 'items' must be a [id, item] pair")
            data_id, item = pair
            if type(data_id) is not int or data_id < 0:
                raise _Rejected(f"item ids must be non-negative ints, got {data_id!r:.40}")
            if data_id <= prev:
                raise _Rejected("item ids must be strictly increasing within a message")
            if not isinstance(item, dict):
                raise _Rejected(f"items must be dicts, got {type(item).__name__}")
            prev = data_id
        with self._insert_lock:
            return self._insert_items(store_name, items, client, session)

    def _with_durable(self, reply: dict, key: tuple[str, str, str]) -> dict:
        """Adds ``durable_id`` in durable mode (absent: clients delete up to ``last_id``)."""
        if self.durable_ack:
            reply["durable_id"] = min(self._durable.get(key, -1), reply["last_id"])
        return reply

    def _insert_items(self, store_name: str, items: list, client: str, session: str) -> dict:
        store = self._stores[store_name]
        key = (client, session, store_name)
        last = self._last_ids.get(key, -1)
        inserted = errors = 0
        first_error = None
        for data_id, item in items:
            if data_id <= last:
                self.num_duplicates += 1
                continue
            try:
                store.insert(item)
                inserted += 1
            except Exception as e:  # noqa: BLE001 - a bad item must not kill the server
                errors += 1
                if first_error is None:
                    first_error = f"item {data_id}: {type(e).__name__}: {str(e)[:300]}"
            last = data_id
        if errors:  # one line per message, not one per item
            self._log(f"TrainerServer: store {store_name!r} rejected {errors} of {len(items)} "
                      f"item(s) from {client!r}; first: {first_error}")
        self._last_ids[key] = last
        self._last_ids.move_to_end(key)
        limit = self.config.max_sessions * max(1, len(self._stores))
        while len(self._last_ids) > limit:
            self._last_ids.popitem(last=False)
        self.num_items_inserted += inserted
        self.num_insert_errors += errors
        return self._with_durable({"ok": True, "last_id": last, "inserted": inserted,
                                   "insert_errors": errors}, key)

    # ------------------------------------------------------------ durability

    @contextlib.contextmanager
    def hold_inserts(self):
        """Context manager: no data message is inserted while it is open; yields the last ids.

        Take the stores' state dicts inside it, so that the yielded ids describe exactly what
        they hold. Yields ``[[client, session, store, last_id], ...]`` (JSON-able; store it
        with the checkpoint). Keep the block short: the server thread waits meanwhile.
        """
        with self._insert_lock:
            yield [[c, s, st, int(i)] for (c, s, st), i in self._last_ids.items()]

    def mark_durable(self, ids: list) -> None:
        """Declares the items up to ``ids`` (from :meth:`hold_inserts`) durable (checkpointed);
        clients then delete their copies. Raises ValueError for malformed ids."""
        self._durable = self._parse_ids(ids)

    def restore_ids(self, ids: list) -> None:
        """Restores the last ids of a checkpoint (from :meth:`hold_inserts`) after a restart,
        as both received and durable; call before :meth:`start`. Raises ValueError for
        malformed ids, RuntimeError once started."""
        if self._started:
            raise RuntimeError("restore_ids() must be called before start()")
        parsed = self._parse_ids(ids)
        self._last_ids = collections.OrderedDict(parsed)
        self._durable = dict(parsed)

    @staticmethod
    def _parse_ids(ids: list) -> dict[tuple[str, str, str], int]:
        out = {}
        if not isinstance(ids, (list, tuple)):
            raise ValueError(f"ids must be a list of [client, session, store, id], got {type(ids).__name__}")
        for entry in ids:
            if (not isinstance(entry, (list, tuple)) or len(entry) != 4
                    or not all(isinstance(x, str) for x in entry[:3])
                    or isinstance(entry[3], bool) or not isinstance(entry[3], int) or entry[3] < -1):
                raise ValueError(f"ids entries must be [client, session, store, int >= -1], got {entry!r:.80}")
            out[(entry[0], entry[1], entry[2])] = int(entry[3])
        return out

    def _handle_request(self, msg: dict) -> dict:
        rtype = _require_str(msg, "request_type")
        if rtype not in self.config.request_types or self.request_callback is None:
            raise _Rejected(f"unknown request type {rtype!r}; accepted: "
                            f"{list(self.config.request_types) if self.request_callback else []}")
        try:
            response = self.request_callback(rtype, msg.get("payload"))
        except Exception as e:  # noqa: BLE001 - report to the caller, keep serving
            self.num_callback_errors += 1
            self._log(f"TrainerServer: request_callback({rtype!r}) raised "
                      f"{type(e).__name__}: {e}", logging.ERROR)
            return {"ok": False, "error": f"request_callback raised {type(e).__name__}: {e}"}
        return {"ok": True, "response": response}

    # --------------------------------------------------------------- teardown

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stops serving and closes both sockets; returns within about ``timeout_s``.

        The request being handled (if any) is finished and its reply flushed
        (at most 0.2 s). Safe to call twice or before ``start``.
        """
        self._stop_event.set()
        deadline = time.monotonic() + timeout_s
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._pub_lock:
            if self._pub is not None:
                self._pub.close(linger=0)
                self._pub = None
        if self._ctx is not None:
            if self._started and not self._serve_done.wait(
                    max(0.0, deadline - time.monotonic())):
                self._log("TrainerServer.stop: serving loop still busy; context left to GC")
            else:
                self._ctx.term()
            self._ctx = None

    def close(self) -> None:
        """Same as :meth:`stop`."""
        self.stop()

    def __enter__(self) -> "TrainerServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def is_running(self) -> bool:
        """True between ``start`` and the end of the serving loop."""
        return self._started and not self._serve_done.is_set()
