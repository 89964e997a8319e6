"""Actor side of the transport: ``TrainerClient`` (agentlace API on pyzmq).

Delivery: for each data store, ``update()`` asks the server for the last id
it inserted for this client, acknowledges (removes) everything up to it,
then sends the remaining items in chunks and acknowledges each chunk on its
reply. A chunk whose reply is lost is simply resent on the next
``update()``; the server skips ids it already has. A new learner process
knows nothing of this client (each ``TrainerClient`` has a random session
token), answers -1 and gets every item still pending. So across a graceful
learner stop/restart every item is delivered exactly once (bounded by the
store capacity). If the learner dies (crash, kill), what it received after
its last checkpoint is gone from its buffers: by default the client has
already deleted those items (lost); with a server in ``durable_ack`` mode
the reply's ``durable_id`` says what is checkpointed, the client deletes only
up to it and the restarted learner (``restore_ids``) receives exactly the
rest: nothing lost, nothing duplicated, within the store capacity (which
must then cover the transitions between two checkpoints; overflow drops the
oldest, counted in ``num_dropped``).

Authentication (``config.auth_key``; required when ``server_ip`` is not
loopback): requests are signed and bound to the server id learned from
``hello`` (re-learned when a restarted learner answers ``stale_server``);
a reply is accepted only if it is signed for this very request; published
parameters only with a valid HMAC, a counter above the publisher's last and,
from a new publisher (learner restart), a timestamp newer than the last
accepted message (see :mod:`serl_ext.transport.auth`). Refused frames are
counted and never decoded.

Parameter counters: with ``config.monotonic_fields`` (the loop sets
``("version", "learner_step")``) a published dict whose field is not an
int >= 0, decreases, or jumps by more than ``max_counter_jump`` is refused
before the callback sees it (``num_network_refused``). A new authenticated
publisher, or without a key one silent for ``PUBLISHER_RESET_S`` (a
restarted learner resumes from an older checkpoint), may start lower.

Reachability: the REQ socket uses ZMQ_IMMEDIATE, so while no server is
listening ``update()``/``request()`` return after ``connect_timeout_ms``
(default 50 ms) instead of queueing. A request without a reply in
``timeout_ms`` closes and recreates the REQ socket ("lazy pirate").
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from typing import Any, Callable, Mapping

import numpy as np
import zmq

from serl_ext.transport import auth as _auth
from serl_ext.transport.codec import MessageError, decode, encode, encode_map_with_raw_list
from serl_ext.transport.config import TrainerConfig
from serl_ext.transport.data_store import QueuedDataStore

__all__ = ["TrainerClient", "find_free_ports"]

_logger = logging.getLogger(__name__)

_POLL_MS = 50
_CHUNK_OVERHEAD_BYTES = 4096  # headroom for the message envelope (and the HMAC header)
PUBLISHER_RESET_S = 3.0
"""Without a key: after this long without an accepted parameter message, the counters of
``monotonic_fields`` may restart lower (a restarted learner), seconds."""


def find_free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Returns ``n`` distinct TCP ports that were free on ``host`` a moment ago (tests).

    Raises:
      ValueError: n < 1.
    """
    if type(n) is not int or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TrainerClient:
    """Actor-side endpoint: ships data stores, sends requests, receives parameters.

    Same API as agentlace's ``TrainerClient``. Thread safe: ``update`` and
    ``request`` share the REQ socket under a lock; parameters arrive on a
    separate SUB thread.

    Args:
      name: client name (non-empty str, e.g. "actor_env").
      server_ip: learner host (IP or name) to connect to.
      config: the shared :class:`TrainerConfig`.
      data_stores: ``{store_name: QueuedDataStore}`` to deliver; names must be
        registered on the server.
      wait_for_server: if True, block in the constructor until the server
        answers a hello (or ``wait_timeout_s`` passes).
      timeout_ms: reply timeout in ms; default ``config.timeout_ms``.
      wait_timeout_s: bound for ``wait_for_server`` (None: wait forever).
      connect_timeout_ms: how long a call waits for the TCP connection before
        giving up (server unreachable), ms.
      log_fn: ``fn(message: str)``; default: module logger.

    Attributes:
      connected: True if the last exchange with the server succeeded.
      last_contact_time: ``time.time()`` of the last successful reply or None.
      num_networks_received, num_network_errors: SUB-thread counters
        (delivered messages; undecodable messages and callback errors).
      num_network_unauthenticated, num_network_replayed, num_network_refused:
        parameter frames refused before decoding (no/bad HMAC; replayed or
        stale) and after decoding, before the callback (``monotonic_fields``).
      num_unauthenticated_replies: replies refused (unsigned, bad HMAC, not
        for this request).
      num_items_sent, num_items_delivered, num_items_acknowledged: items put
        in data messages that got a reply (resends included), items the
        server's replies report as newly received (a chunk whose reply was
        lost is not counted), items deleted from the stores (with a
        ``durable_ack`` server: only once checkpointed). An actor whose
        ``num_items_delivered`` is 0 never reached a learner.

    Raises:
      TypeError / ValueError: bad arguments; ValueError also when
        ``server_ip`` is not loopback (or ``auth="required"``) and the config
        has no ``auth_key``.
      TimeoutError: ``wait_for_server`` and no answer within ``wait_timeout_s``.
    """

    def __init__(self, name: str, server_ip: str, config: TrainerConfig,
                 data_stores: Mapping[str, QueuedDataStore] | None = None,
                 wait_for_server: bool = False, timeout_ms: int | None = None,
                 wait_timeout_s: float | None = None, connect_timeout_ms: int = 50,
                 log_fn: Callable[[str], None] | None = None) -> None:
        if type(name) is not str or not name or len(name) > 256:
            raise TypeError(f"name must be a non-empty str (<= 256 chars), got {name!r}")
        if type(server_ip) is not str or not server_ip:
            raise TypeError(f"server_ip must be a non-empty str, got {server_ip!r}")
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig, got {type(config).__name__}")
        stores = dict(data_stores or {})
        for k, v in stores.items():
            if type(k) is not str or not k:
                raise TypeError(f"data store names must be non-empty str, got {k!r}")
            if not isinstance(v, QueuedDataStore):
                raise TypeError(f"data store {k!r} must be a QueuedDataStore, "
                                f"got {type(v).__name__}")
        timeout_ms = config.timeout_ms if timeout_ms is None else timeout_ms
        if type(timeout_ms) is not int or timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be a positive int, got {timeout_ms!r}")
        if type(connect_timeout_ms) is not int or connect_timeout_ms < 0:
            raise ValueError(f"connect_timeout_ms must be an int >= 0, got {connect_timeout_ms!r}")
        config.check_key_for(server_ip, "client connect")
        self._auth = (_auth.Authenticator(config.auth_key, config.max_clock_skew_s)
                      if config.auth_key is not None else None)
        self._server_bytes: bytes | None = None  # server id requests are bound to (auth)
        self._pub_state: dict[str, Any] = {}      # last accepted publisher / counters
        self.name = name
        self.server_ip = server_ip
        self.config = config
        self.data_stores = stores
        self.timeout_ms = timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        self._log_fn = log_fn
        self.session = secrets.token_hex(8)
        self._ctx = zmq.Context()
        self._req_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._req: zmq.Socket | None = None
        self._new_req_socket()
        self._connected = False
        self.last_contact_time: float | None = None
        self.server_id: str | None = None
        self._net_fn: Callable[[Any], None] | None = None
        self._sub_thread: threading.Thread | None = None
        self.num_networks_received = 0
        self.num_network_errors = 0
        self.num_network_unauthenticated = 0
        self.num_network_replayed = 0
        self.num_network_refused = 0
        self.num_unauthenticated_replies = 0
        self.num_items_sent = 0          # items put in data messages (resends included)
        self.num_items_delivered = 0     # items the server confirmed received (first time)
        self.num_items_acknowledged = 0  # items deleted from the stores (delivered, durable)
        if wait_for_server:
            self._wait_for_server(wait_timeout_s)

    # ------------------------------------------------------------- internals

    def _log(self, msg: str, level: int = logging.WARNING) -> None:
        if self._log_fn is not None:
            self._log_fn(msg)
        else:
            _logger.log(level, msg)

    def _endpoint(self, port: int) -> str:
        return f"tcp://{self.server_ip}:{port}"

    def _new_req_socket(self) -> None:
        if self._req is not None:
            self._req.close(linger=0)
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing while disconnected
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, 2 * self.config.max_message_bytes)
        sock.connect(self._endpoint(self.config.port_number))
        self._req = sock

    def _poll(self, sock: zmq.Socket, event: int, timeout_ms: int) -> bool:
        """Polls in slices so that ``stop()`` interrupts a long wait."""
        deadline = time.monotonic() + timeout_ms / 1000
        while not self._stop_event.is_set():
            remaining = int((deadline - time.monotonic()) * 1000)
            if sock.poll(max(0, min(_POLL_MS, remaining)), event):
                return True
            if remaining <= 0:
                return False
        return False

    def _exchange(self, data: bytes, connect_timeout_ms: int | None = None) -> dict | None:
        """One REQ/REP round trip (caller holds ``_req_lock``); None on failure."""
        if self._stop_event.is_set() or self._req is None:
            return None
        wait = self.connect_timeout_ms if connect_timeout_ms is None else connect_timeout_ms
        sock = self._req
        tag = b""
        if self._auth is not None:
            data = self._auth.sign(_auth.CHANNEL_REQUEST, data,
                                   bound_to=self._server_bytes or _auth.NO_ID)
            tag = data[_auth.HEADER_BYTES - _auth.TAG_BYTES:_auth.HEADER_BYTES]
        if not self._poll(sock, zmq.POLLOUT, wait):
            self._connected = False
            return None
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self._connected = False
            return None
        if not self._poll(sock, zmq.POLLIN, self.timeout_ms):
            # lazy pirate: a REQ socket without its reply cannot send again
            if not self._stop_event.is_set():
                self._log(f"TrainerClient {self.name!r}: no reply within {self.timeout_ms} ms; "
                          "recreating the socket", logging.INFO)
                self._new_req_socket()
            self._connected = False
            return None
        frames = sock.recv_multipart(copy=False)
        try:
            if len(frames) != 1:
                raise MessageError(f"reply has {len(frames)} frames, expected 1")
            body = frames[0].buffer
            if self._auth is not None:
                try:
                    _, _, _, bound_to, _, body = self._auth.verify(body, _auth.CHANNEL_REPLY,
                                                                   extra=tag)
                    if bound_to != self._auth.sender_id:
                        raise _auth.AuthError("reply is bound to another client")
                except _auth.AuthError as e:
                    self.num_unauthenticated_replies += 1
                    raise MessageError(f"reply refused: {e} (the server refuses unauthenticated "
                                       "requests this way too: same key on both sides?)") from e
            reply = decode(body, max_bytes=self.config.max_message_bytes,
                           max_objects=self.config.max_decoded_objects)
            if not isinstance(reply, dict) or type(reply.get("ok")) is not bool:
                raise MessageError("reply is not a dict with a bool 'ok'")
        except MessageError as e:
            self._log(f"TrainerClient {self.name!r}: invalid reply from server: {e}")
            return None
        self._connected = True
        self.last_contact_time = time.time()
        return reply

    def _envelope(self, kind: str, **fields: Any) -> dict:
        return {"type": kind, "client": self.name, "session": self.session, **fields}

    def _hello(self, connect_timeout_ms: int | None = None) -> bool:
        """Sends hello (caller holds ``_req_lock``); learns the server id."""
        reply = self._exchange(encode(self._envelope("hello")),
                               connect_timeout_ms=connect_timeout_ms)
        if reply is None or not reply["ok"]:
            return False
        sid = reply.get("server_id")
        if self._auth is not None:
            try:
                sid_bytes = bytes.fromhex(sid) if type(sid) is str else b""
            except ValueError:
                sid_bytes = b""
            if len(sid_bytes) != _auth.ID_BYTES:
                self._log(f"TrainerClient {self.name!r}: bad server id {sid!r:.60} in hello")
                return False
            self._server_bytes = sid_bytes
        self.server_id = sid
        return True

    def _call(self, data: bytes) -> dict | None:
        """``_exchange`` plus the hello an authenticated request needs (caller holds the lock)."""
        if self._auth is None:
            return self._exchange(data)
        if self._server_bytes is None and not self._hello():
            return None
        reply = self._exchange(data)
        if (reply is not None and not reply["ok"]
                and str(reply.get("error", "")).startswith("stale_server")):
            self._server_bytes = None  # the learner restarted: learn its new id, resend once
            if not self._hello():
                return None
            reply = self._exchange(data)
        return reply

    def _wait_for_server(self, wait_timeout_s: float | None) -> None:
        start = time.monotonic()
        last_log = start
        while not self._stop_event.is_set():
            with self._req_lock:
                ok = self._hello(connect_timeout_ms=500)
            if ok:
                return
            now = time.monotonic()
            if wait_timeout_s is not None and now - start >= wait_timeout_s:
                raise TimeoutError(f"no TrainerServer answered at "
                                   f"{self._endpoint(self.config.port_number)} within "
                                   f"{wait_timeout_s} s")
            if now - last_log > 5.0:
                self._log(f"TrainerClient {self.name!r}: waiting for the server at "
                          f"{self._endpoint(self.config.port_number)}", logging.INFO)
                last_log = now

    # ------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """True if the most recent exchange with the server succeeded."""
        return self._connected

    def update(self) -> bool:
        """Delivers pending items of every data store; True if all were acknowledged.

        Never raises for an unreachable or slow server (returns False, items
        stay pending). Returns within ``connect_timeout_ms`` when nothing is
        listening, and within about ``timeout_ms`` per exchange otherwise.

        Raises:
          MessageError: an item cannot be encoded (unsupported type) or alone
            exceeds ``max_message_bytes``; that item is removed from its store
            first, so the next ``update`` proceeds.
        """
        with self._req_lock:
            for store_name, store in self.data_stores.items():
                if not self._sync_store(store_name, store):
                    return False
        return True

    def _sync_store(self, store_name: str, store: QueuedDataStore) -> bool:
        reply = self._call(encode(self._envelope("last_id", store=store_name)))
        if reply is None:
            return False
        if not reply["ok"]:
            self._log(f"TrainerClient {self.name!r}: server refused last_id for store "
                      f"{store_name!r}: {reply.get('error')}")
            return False
        last = reply.get("last_id")
        if type(last) is not int or last < -1:
            self._log(f"TrainerClient {self.name!r}: bad last_id {last!r} in reply")
            return False
        durable = reply.get("durable_id", last)
        if type(durable) is not int or not -1 <= durable <= last:
            self._log(f"TrainerClient {self.name!r}: bad durable_id {durable!r} in reply")
            return False
        newest = store.latest_data_id()
        if last > newest:
            self._log(f"TrainerClient {self.name!r}: server's last id {last} for store "
                      f"{store_name!r} is ahead of the client's newest id {newest}")
            return False
        self.num_items_acknowledged += store.acknowledge(durable)  # up to durable: safe to delete
        cfg = self.config
        budget = cfg.max_message_bytes - _CHUNK_OVERHEAD_BYTES
        head = self._envelope("data", store=store_name)
        while True:
            pending = store.pending_items(after_id=last, max_items=cfg.max_items_per_message)
            pending = [p for p in pending if p[0] <= newest]
            if not pending:
                return True
            encoded, size, chunk_last = [], 0, last
            for data_id, item in pending:
                try:
                    e = encode([data_id, item])
                except MessageError as err:
                    store.discard(data_id)
                    raise MessageError(f"item {data_id} of store {store_name!r} cannot be "
                                       f"sent and was removed: {err}") from err
                if len(e) > budget:
                    store.discard(data_id)
                    raise MessageError(f"item {data_id} of store {store_name!r} is {len(e)} "
                                       f"bytes, more than max_message_bytes allows "
                                       f"({budget}); it was removed")
                if size + len(e) > budget:
                    break
                encoded.append(e)
                size += len(e)
                chunk_last = data_id
            reply = self._call(encode_map_with_raw_list(head, "items", encoded))
            if reply is not None:
                self.num_items_sent += len(encoded)
            if reply is None:
                return False
            new_last = reply.get("last_id")
            if not reply["ok"] or type(new_last) is not int:
                self._log(f"TrainerClient {self.name!r}: server refused data for store "
                          f"{store_name!r}: {reply.get('error')}")
                return False
            new_durable = reply.get("durable_id", new_last)
            if type(new_durable) is int and -1 <= new_durable <= new_last:
                self.num_items_acknowledged += store.acknowledge(new_durable)
            for k in ("inserted", "insert_errors"):
                if type(reply.get(k)) is int and reply[k] > 0:
                    self.num_items_delivered += reply[k]
            if reply.get("insert_errors"):
                self._log(f"TrainerClient {self.name!r}: server failed to insert "
                          f"{reply['insert_errors']} item(s) of store {store_name!r}")
            if new_last < chunk_last:
                self._log(f"TrainerClient {self.name!r}: server acknowledged up to {new_last}, "
                          f"expected {chunk_last}")
                return False
            last = new_last

    def request(self, request_type: str, payload: Any = None) -> Any:
        """Sends a request to the server's ``request_callback``; returns its response.

        Returns None if the server is unreachable, times out, or answers with
        an error (logged).

        Raises:
          ValueError: ``request_type`` not in ``config.request_types``.
          MessageError: ``payload`` is not encodable or too large.
        """
        if request_type not in self.config.request_types:
            raise ValueError(f"request type {request_type!r} is not in config.request_types "
                             f"{list(self.config.request_types)}")
        data = encode(self._envelope("request", request_type=request_type, payload=payload),
                      max_bytes=self.config.max_message_bytes)
        with self._req_lock:
            reply = self._call(data)
        if reply is None:
            return None
        if not reply["ok"]:
            self._log(f"TrainerClient {self.name!r}: request {request_type!r} failed: "
                      f"{reply.get('error')}")
            return None
        return reply.get("response")

    def recv_network_callback(self, fn: Callable[[Any], None]) -> None:
        """Calls ``fn(params)`` on a background thread whenever the server publishes.

        The SUB socket conflates: if several parameter sets arrive while ``fn``
        runs, only the newest is delivered. ``params`` is the decoded pytree
        (nested dicts of writeable numpy arrays). Exceptions in ``fn`` are
        logged and counted in ``num_network_errors``. Calling again replaces
        ``fn``.

        Raises:
          TypeError: ``fn`` not callable.
        """
        if not callable(fn):
            raise TypeError("recv_network_callback expects a callable fn(params)")
        self._net_fn = fn
        if self._sub_thread is None and not self._stop_event.is_set():
            self._sub_thread = threading.Thread(target=self._sub_loop, daemon=True,
                                                name=f"TrainerClient-{self.name}-sub")
            self._sub_thread.start()

    def _sub_loop(self) -> None:
        sock = self._ctx.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.CONFLATE, 1)  # must precede connect
            sock.setsockopt(zmq.MAXMSGSIZE, 2 * self.config.max_message_bytes)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(self._endpoint(self.config.broadcast_port))
            while not self._stop_event.is_set():
                if not sock.poll(_POLL_MS, zmq.POLLIN):
                    continue
                frame = sock.recv(copy=False)
                body, publisher = frame.buffer, None
                if self._auth is not None:
                    try:
                        body, publisher = self._check_param_frame(body)
                    except _auth.AuthError as e:
                        if e.replay:
                            self.num_network_replayed += 1
                        else:
                            self.num_network_unauthenticated += 1
                        self._log(f"TrainerClient {self.name!r}: refused parameter frame: {e}")
                        continue
                elif _auth.is_authenticated_frame(body):
                    self.num_network_errors += 1
                    self._log(f"TrainerClient {self.name!r}: parameter frame is authenticated "
                              "but this client has no key")
                    continue
                try:
                    params = decode(body, max_bytes=self.config.max_message_bytes,
                                    max_objects=self.config.max_decoded_objects)
                except MessageError as e:
                    self.num_network_errors += 1
                    self._log(f"TrainerClient {self.name!r}: bad parameter message: {e}")
                    continue
                try:
                    counters = self._check_counters(params, publisher)
                except MessageError as e:
                    self.num_network_refused += 1
                    self._log(f"TrainerClient {self.name!r}: refused parameter message: {e}")
                    continue
                self._commit_publisher(publisher, counters)
                try:
                    self._net_fn(params)
                    self.num_networks_received += 1
                except Exception as e:  # noqa: BLE001 - keep receiving
                    self.num_network_errors += 1
                    self._log(f"TrainerClient {self.name!r}: network callback raised "
                              f"{type(e).__name__}: {e}", logging.ERROR)
        except zmq.ZMQError as e:
            if not self._stop_event.is_set():
                self._log(f"TrainerClient {self.name!r}: SUB thread error: {e}", logging.ERROR)
        finally:
            sock.close(linger=0)

    def _check_param_frame(self, frame) -> tuple[memoryview, tuple[bytes, int, int]]:
        """Verifies a signed parameter frame (HMAC, replay); returns (payload, publisher)."""
        sender, counter, ts, _, _, payload = self._auth.verify(frame, _auth.CHANNEL_PARAMS)
        st = self._pub_state
        if st.get("sender") == sender:
            if counter <= st["counter"]:
                raise _auth.AuthError(f"replayed parameter frame (counter {counter} <= "
                                      f"{st['counter']})", replay=True)
        elif st and ts <= st["ts"]:
            raise _auth.AuthError("parameter frame from another publisher older than the last "
                                  "accepted one (replay of an earlier learner?)", replay=True)
        return payload, (sender, counter, ts)

    def _check_counters(self, params: Any, publisher) -> dict[str, int]:
        """Checks ``config.monotonic_fields`` of a decoded message; returns their values."""
        fields = self.config.monotonic_fields
        if not fields:
            return {}
        if not isinstance(params, dict):
            raise MessageError(f"parameter message must be a dict, got {type(params).__name__}")
        st = self._pub_state
        if publisher is not None:
            same = st.get("sender") == publisher[0]
        else:
            same = bool(st) and time.monotonic() - st["time"] < PUBLISHER_RESET_S
        prev = st.get("counters", {})
        out = {}
        for name in fields:
            v = params.get(name)
            if isinstance(v, np.integer):
                v = int(v)
            if type(v) is not int or v < 0:
                raise MessageError(f"{name} must be an int >= 0, got {v!r:.60}")
            last = prev.get(name, 0)
            if same and v < last:
                raise MessageError(f"{name} went backwards: {v} < {last}")
            if v - last > self.config.max_counter_jump:
                raise MessageError(f"{name} jumped from {last} to {v} (more than "
                                   f"max_counter_jump={self.config.max_counter_jump})")
            if not same and prev and v < last:
                self._log(f"TrainerClient {self.name!r}: new publisher (learner restarted?): "
                          f"{name} {last} -> {v}", logging.INFO)
            out[name] = v
        return out

    def _commit_publisher(self, publisher, counters: dict[str, int]) -> None:
        st = {"time": time.monotonic(), "counters": counters}
        if publisher is not None:
            st.update(sender=publisher[0], counter=publisher[1], ts=publisher[2])
        self._pub_state = st

    def stop(self, timeout_s: float = 2.0) -> None:
        """Closes all sockets; returns within about ``timeout_s`` even with the server gone.

        An ``update``/``request`` in progress on another thread is aborted
        (returns False/None). Safe to call twice.
        """
        self._stop_event.set()
        deadline = time.monotonic() + timeout_s
        sub_done = True
        if self._sub_thread is not None:
            self._sub_thread.join(timeout=max(0.0, deadline - time.monotonic()))
            sub_done = not self._sub_thread.is_alive()
        req_closed = False
        if self._req_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            try:
                if self._req is not None:
                    self._req.close(linger=0)
                    self._req = None
                req_closed = True
            finally:
                self._req_lock.release()
        self._connected = False
        if self._ctx is not None:
            if sub_done and req_closed:
                self._ctx.term()
            else:
                self._log(f"TrainerClient {self.name!r}: stop timed out; context left to GC")
            self._ctx = None

    def close(self) -> None:
        """Same as :meth:`stop`."""
        self.stop()

    def __enter__(self) -> "TrainerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
