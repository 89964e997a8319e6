"""Tests of the actor/learner transport (loopback only, bounded waits)."""

import threading
import time

import numpy as np
import pytest
import zmq

from serl_ext.transport import (
    MessageError,
    QueuedDataStore,
    TrainerClient,
    TrainerConfig,
    TrainerServer,
    decode,
    encode,
    find_free_ports,
)

pytestmark = pytest.mark.timeout(30)


class ListStore:
    """Thread-safe server-side store recording what was inserted."""

    def __init__(self, fail_on=None):
        self.items = []
        self.lock = threading.Lock()
        self.fail_on = fail_on

    def insert(self, item):
        if self.fail_on is not None and self.fail_on(item):
            raise ValueError("bad item")
        with self.lock:
            self.items.append(item)

    def ids(self):
        with self.lock:
            return [int(it["id"]) for it in self.items]


def _wait_until(pred, timeout_s=5.0, step_s=0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return pred()


def _item(i):
    return {"id": np.int64(i), "observations": {"state": np.full(4, i, np.float32)},
            "actions": np.zeros(2, np.float32), "rewards": float(i), "masks": 1.0,
            "dones": False}


@pytest.fixture
def cfg():
    data_port, pub_port = find_free_ports(2)
    return TrainerConfig(port_number=data_port, broadcast_port=pub_port,
                         request_types=("echo", "boom"), timeout_ms=2000,
                         max_message_bytes=64 * 1024, max_items_per_message=16)


@pytest.fixture
def cleanup():
    objs = []
    yield objs
    for o in reversed(objs):
        o.stop()


def _server(cfg, store=None, callback=None, cleanup=None, name="env"):
    srv = TrainerServer(cfg, request_callback=callback)
    if store is not None:
        srv.register_data_store(name, store)
    srv.start(threaded=True)
    if cleanup is not None:
        cleanup.append(srv)
    return srv


def _raw_exchange(ctx, port, frames):
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send_multipart(frames)
        assert sock.poll(3000, zmq.POLLIN), "server did not answer"
        return decode(sock.recv())
    finally:
        sock.close(linger=0)


# ------------------------------------------------------------------ data store


def test_queued_data_store_ids_ack_and_pending():
    q = QueuedDataStore(capacity=100)
    assert q.latest_data_id() == -1 and len(q) == 0
    ids = [q.insert({"i": i}) for i in range(10)]
    assert ids == list(range(10)) and q.latest_data_id() == 9
    assert [i for i, _ in q.pending_items(after_id=6)] == [7, 8, 9]
    assert [i for i, _ in q.pending_items(after_id=-1, max_items=3)] == [0, 1, 2]
    assert q.acknowledge(4) == 5 and len(q) == 5
    assert [it["i"] for _, it in q.pending_items()] == [5, 6, 7, 8, 9]
    assert q.acknowledge(4) == 0  # idempotent
    assert q.discard(7) and not q.discard(7)
    assert [i for i, _ in q.pending_items()] == [5, 6, 8, 9]
    with pytest.raises(TypeError):
        q.insert([1, 2])
    with pytest.raises(ValueError):
        QueuedDataStore(capacity=0)
    with pytest.raises(ValueError):
        QueuedDataStore(capacity=5, overflow="block")


def test_pending_items_matches_a_plain_scan_with_gaps():
    """pending_items (bisect, walking from the nearer end) against a plain loop over the pending
    pairs, for every after_id and several max_items, with ids missing from the middle (discard)
    and the front (acknowledge)."""
    rng = np.random.default_rng(0)
    q = QueuedDataStore(capacity=1000)
    for i in range(200):
        q.insert({"i": i})
    for i in rng.choice(200, size=60, replace=False):
        q.discard(int(i))
    q.acknowledge(17)
    held = [p for p in q.pending_items()]
    assert all(a[0] < b[0] for a, b in zip(held, held[1:])) and held[0][0] > 17
    for after_id in range(-3, 203):
        for max_items in (None, 0, 1, 5, 300):
            want = [p for p in held if p[0] > after_id]
            want = want if max_items is None else want[:max_items]
            got = q.pending_items(after_id=after_id, max_items=max_items)
            assert [i for i, _ in got] == [i for i, _ in want], (after_id, max_items)
            assert all(g[1] is w[1] for g, w in zip(got, want))


def test_queued_data_store_overflow_policies():
    q = QueuedDataStore(capacity=3)
    for i in range(8):
        q.insert({"i": i})
    assert q.num_dropped == 5 and [i for i, _ in q.pending_items()] == [5, 6, 7]
    q2 = QueuedDataStore(capacity=3, overflow="drop_newest")
    for i in range(8):
        q2.insert({"i": i})
    assert q2.num_dropped == 5 and [i for i, _ in q2.pending_items()] == [0, 1, 2]
    assert q2.latest_data_id() == 7


def test_queued_data_store_thread_safe():
    q = QueuedDataStore(capacity=100_000)

    def work():
        for i in range(3000):
            q.insert({"i": i})

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [i for i, _ in q.pending_items()] == list(range(9000))


def test_config_validation_and_defaults():
    c = TrainerConfig(request_types=["send-stats"])
    assert (c.port_number, c.broadcast_port, c.bind_address) == (5588, 5589, "127.0.0.1")
    assert c.request_types == ("send-stats",) and c.max_message_bytes == 64 * 2**20
    for kwargs in [dict(port_number=0), dict(port_number=5000, broadcast_port=5000),
                   dict(bind_address="localhost:1"), dict(max_message_bytes=-1),
                   dict(timeout_ms=0)]:
        with pytest.raises(ValueError):
            TrainerConfig(**kwargs)
    with pytest.raises(TypeError):
        TrainerConfig(request_types="send-stats")


# ------------------------------------------------------------------- delivery


def test_binds_loopback_by_default(cfg, cleanup):
    srv = _server(cfg, ListStore(), cleanup=cleanup)
    assert srv.endpoints == (f"tcp://127.0.0.1:{cfg.port_number}",
                             f"tcp://127.0.0.1:{cfg.broadcast_port}")
    with pytest.raises(OSError, match="cannot bind"):  # port already taken
        TrainerServer(cfg).start()


def test_update_delivers_in_order_in_chunks(cfg, cleanup):
    store = ListStore()
    srv = _server(cfg, store, cleanup=cleanup)
    q = QueuedDataStore(capacity=1000)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q}, wait_for_server=True,
                           wait_timeout_s=5)
    cleanup.append(client)
    for i in range(50):
        q.insert(_item(i))
    # big items: 2 fit in a 64 KiB message, so they need several chunks
    for i in range(50, 56):
        q.insert(dict(_item(i), blob=np.zeros(20_000, np.uint8)))
    # reference chunking: greedy, at most 16 items and 64 KiB - 4 KiB per message
    sizes = [len(encode([i, it])) for i, it in q.pending_items()]
    n_chunks, count, size = 1, 0, 0
    for sz in sizes:
        if count == 16 or size + sz > 64 * 1024 - 4096:
            n_chunks, count, size = n_chunks + 1, 0, 0
        count, size = count + 1, size + sz
    assert n_chunks >= 5  # 4 by count alone; the blobs force more
    assert client.update()
    assert store.ids() == list(range(56)) and len(q) == 0
    assert srv.num_received == 1 + 1 + n_chunks  # hello, last_id, data chunks
    got = store.items[3]
    np.testing.assert_array_equal(got["observations"]["state"], np.full(4, 3, np.float32))
    assert client.connected and client.last_contact_time is not None
    assert client.update() and srv.num_items_inserted == 56  # nothing resent


def test_resent_chunk_is_deduplicated(cfg, cleanup):
    store = ListStore()
    srv = _server(cfg, store, cleanup=cleanup)
    msg = encode({"type": "data", "client": "c", "session": "s", "store": "env",
                  "items": [[i, _item(i)] for i in range(5)]})
    ctx = zmq.Context()
    try:
        r1 = _raw_exchange(ctx, cfg.port_number, [msg])
        r2 = _raw_exchange(ctx, cfg.port_number, [msg])  # e.g. reply lost, resent
        r3 = _raw_exchange(ctx, cfg.port_number, [encode(
            {"type": "last_id", "client": "c", "session": "s", "store": "env"})])
        r4 = _raw_exchange(ctx, cfg.port_number, [encode(
            {"type": "last_id", "client": "c", "session": "other", "store": "env"})])
    finally:
        ctx.term()
    assert r1 == {"ok": True, "last_id": 4, "inserted": 5, "insert_errors": 0}
    assert r2 == {"ok": True, "last_id": 4, "inserted": 0, "insert_errors": 0}
    assert r3["last_id"] == 4 and r4["last_id"] == -1
    assert store.ids() == [0, 1, 2, 3, 4] and srv.num_duplicates == 5


def test_server_survives_bad_messages(cfg, cleanup):
    store = ListStore()
    srv = _server(cfg, store, callback=lambda t, p: p, cleanup=cleanup)
    ok_env = {"client": "evil", "session": "x"}
    bad = [
        [b"\xc1\x00garbage"],                                           # not msgpack
        [encode([1, 2, 3])],                                            # not a dict
        [encode({"type": "data"})],                                     # no client
        [encode({"type": "bogus", **ok_env})],                          # unknown type
        [encode({"type": "data", **ok_env, "store": "nope", "items": []})],  # unknown store
        [encode({"type": "data", **ok_env, "store": "env", "items": [[0, 5]]})],  # bad item
        [encode({"type": "data", **ok_env, "store": "env",
                 "items": [[1, {}], [1, {}]]})],                        # ids not increasing
        [encode({"type": "request", **ok_env, "request_type": "nope"})],  # unknown request
        [encode({"type": "hello", **ok_env}), b"second frame"],         # multipart
        [encode({"type": "hello", **ok_env,
                 "pad": np.zeros(cfg.max_message_bytes, np.uint8)})],   # oversized
    ]
    ctx = zmq.Context()
    try:
        for frames in bad:
            reply = _raw_exchange(ctx, cfg.port_number, frames)
            assert reply["ok"] is False and isinstance(reply["error"], str)
    finally:
        ctx.term()
    assert srv.num_rejected == len(bad) and srv.num_received == len(bad)
    assert store.items == [] and srv.is_running
    # a proper client is still served
    q = QueuedDataStore(capacity=10)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q})
    cleanup.append(client)
    q.insert(_item(0))
    assert _wait_until(client.update)
    assert store.ids() == [0] and srv.num_rejected == len(bad)


def test_store_insert_errors_skip_item(cfg, cleanup):
    store = ListStore(fail_on=lambda it: int(it["id"]) == 2)
    srv = _server(cfg, store, cleanup=cleanup)
    q = QueuedDataStore(capacity=10)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q}, wait_for_server=True,
                           wait_timeout_s=5)
    cleanup.append(client)
    for i in range(5):
        q.insert(_item(i))
    assert client.update()
    assert store.ids() == [0, 1, 3, 4] and srv.num_insert_errors == 1 and len(q) == 0


def test_unencodable_item_raises_and_is_removed(cfg, cleanup):
    store = ListStore()
    _server(cfg, store, cleanup=cleanup)
    q = QueuedDataStore(capacity=10)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q}, wait_for_server=True,
                           wait_timeout_s=5)
    cleanup.append(client)
    q.insert(_item(0))
    q.insert({"id": 1, "bad": np.array([object()])})
    q.insert(_item(2))
    with pytest.raises(MessageError, match="item 1"):
        client.update()
    assert client.update()
    assert store.ids() == [0, 2]


def test_request_round_trip(cfg, cleanup):
    calls = []

    def callback(rtype, payload):
        calls.append(rtype)
        if rtype == "boom":
            raise RuntimeError("callback failure")
        return {"type": rtype, "sum": float(np.sum(payload["x"])), "x2": payload["x"] * 2}

    srv = _server(cfg, ListStore(), callback=callback, cleanup=cleanup)
    client = TrainerClient("actor", "127.0.0.1", cfg, wait_for_server=True, wait_timeout_s=5)
    cleanup.append(client)
    resp = client.request("echo", {"x": np.arange(4, dtype=np.int32)})
    assert resp["type"] == "echo" and resp["sum"] == 6.0
    np.testing.assert_array_equal(resp["x2"], [0, 2, 4, 6])
    assert client.request("boom", None) is None and srv.num_callback_errors == 1
    with pytest.raises(ValueError, match="request_types"):
        client.request("not-configured", 1)
    assert calls == ["echo", "boom"]


def test_publish_reaches_callback_and_conflates(cfg, cleanup):
    srv = _server(cfg, ListStore(), cleanup=cleanup)
    client = TrainerClient("actor", "127.0.0.1", cfg)
    cleanup.append(client)
    seen = []

    def on_params(params):
        seen.append(int(params["step"]))
        assert params["w"].shape == (3, 2) and params["w"].flags.writeable
        time.sleep(0.2)  # a slow consumer: newer parameters pile up meanwhile

    client.recv_network_callback(on_params)
    # slow joiner: publish until the subscription is live
    assert _wait_until(lambda: (srv.publish_network({"step": 0, "w": np.ones((3, 2))}),
                                bool(seen))[1], timeout_s=5, step_s=0.05)
    time.sleep(0.3)
    n0 = len(seen)
    for step in range(1, 51):
        srv.publish_network({"step": step, "w": np.full((3, 2), step, np.float32)})
    assert _wait_until(lambda: seen[-1] == 50, timeout_s=5)
    after = seen[n0:]
    assert after == sorted(after)           # never out of order
    assert len(after) <= 5                  # conflated: not 50 callbacks
    with pytest.raises(MessageError):
        srv.publish_network({"too_big": np.zeros(cfg.max_message_bytes, np.uint8)})


def test_restart_mid_stream_no_loss_no_duplicates(cfg, cleanup):
    store1, store2 = ListStore(), ListStore()
    srv1 = _server(cfg, store1)
    q = QueuedDataStore(capacity=5000)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q})
    cleanup.append(client)
    done = threading.Event()

    def actor():
        for i in range(1000):
            q.insert(_item(i))
            if i % 5 == 0:
                client.update()
            time.sleep(0.001)
        done.set()

    t = threading.Thread(target=actor)
    t.start()
    try:
        assert _wait_until(lambda: q.latest_data_id() >= 300, timeout_s=10)
        srv1.stop()
        assert _wait_until(lambda: q.latest_data_id() >= 600, timeout_s=10)
        srv2 = _server(cfg, store2, cleanup=cleanup)
        assert done.wait(15)
    finally:
        t.join(15)
        srv1.stop()
    assert _wait_until(lambda: client.update() and len(q) == 0, timeout_s=10)
    ids1, ids2 = store1.ids(), store2.ids()
    assert ids1 and ids2, "both servers should have received part of the stream"
    assert ids1 == sorted(ids1) and ids2 == sorted(ids2)
    assert sorted(ids1 + ids2) == list(range(1000))  # none lost, none duplicated
    assert srv2.num_duplicates == 0


def test_overflow_while_server_down(cfg, cleanup):
    q = QueuedDataStore(capacity=10)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q})
    cleanup.append(client)
    t0 = time.monotonic()
    for i in range(25):
        q.insert(_item(i))
        assert client.update() is False
    assert time.monotonic() - t0 < 10  # each failed update returns quickly
    assert q.num_dropped == 15 and len(q) == 10 and not client.connected
    store = ListStore()
    _server(cfg, store, cleanup=cleanup)
    assert _wait_until(client.update, timeout_s=5)
    assert store.ids() == list(range(15, 25)) and len(q) == 0


def test_reply_timeout_recreates_socket(cfg, cleanup):
    # a peer that accepts requests but never answers
    ctx = zmq.Context()
    mute = ctx.socket(zmq.REP)
    mute.setsockopt(zmq.LINGER, 0)
    mute.bind(f"tcp://127.0.0.1:{cfg.port_number}")
    q = QueuedDataStore(capacity=10)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q}, timeout_ms=300,
                           connect_timeout_ms=500)
    cleanup.append(client)
    q.insert(_item(0))
    t0 = time.monotonic()
    assert client.update() is False
    assert 0.25 < time.monotonic() - t0 < 2.0
    assert client.request("echo", 1) is None
    mute.close(linger=0)
    ctx.term()
    store = ListStore()
    _server(cfg, store, callback=lambda t, p: p, cleanup=cleanup)
    assert _wait_until(client.update, timeout_s=5)
    assert store.ids() == [0] and client.request("echo", 7) == 7


def test_stop_is_bounded_with_peer_gone(cfg):
    # client without a server: calls fail fast, stop is quick
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": QueuedDataStore(5)})
    client.recv_network_callback(lambda p: None)
    t0 = time.monotonic()
    assert client.request("echo", 1) is None and client.update() is False
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    client.stop()
    assert time.monotonic() - t0 < 2.0
    client.stop()  # idempotent
    # server whose client went away mid-conversation
    srv = _server(cfg, ListStore())
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(f"tcp://127.0.0.1:{cfg.port_number}")
    req.send(encode({"type": "hello", "client": "gone"}))
    req.close(linger=0)
    ctx.term()
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2.0 and not srv.is_running


def test_stop_interrupts_blocked_update(cfg):
    ctx = zmq.Context()
    mute = ctx.socket(zmq.REP)
    mute.setsockopt(zmq.LINGER, 0)
    mute.bind(f"tcp://127.0.0.1:{cfg.port_number}")
    q = QueuedDataStore(capacity=10)
    q.insert(_item(0))
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q}, timeout_ms=20_000,
                           connect_timeout_ms=1000)
    result = []
    t = threading.Thread(target=lambda: result.append(client.update()))
    t.start()
    assert _wait_until(lambda: mute.poll(0, zmq.POLLIN), timeout_s=5)  # request in flight
    t0 = time.monotonic()
    client.stop()
    t.join(5)
    assert time.monotonic() - t0 < 2.0 and result == [False]
    mute.close(linger=0)
    ctx.term()


def test_wait_for_server_times_out(cfg):
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        TrainerClient("actor", "127.0.0.1", cfg, wait_for_server=True, wait_timeout_s=0.3)
    assert time.monotonic() - t0 < 3.0


def test_start_unthreaded_serves_until_stopped(cfg):
    store = ListStore()
    srv = TrainerServer(cfg)
    srv.register_data_store("env", store)
    t = threading.Thread(target=srv.start, kwargs={"threaded": False})
    t.start()
    q = QueuedDataStore(capacity=10)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q})
    try:
        q.insert(_item(7))
        assert _wait_until(client.update, timeout_s=5) and store.ids() == [7]
    finally:
        client.stop()
        t0 = time.monotonic()
        srv.stop()
        t.join(2)
    assert time.monotonic() - t0 < 2.0 and not t.is_alive()
    with pytest.raises(RuntimeError):
        srv.start()
