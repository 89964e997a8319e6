"""Server-side limits of the transport (issue 15 item 5): items per message, one log line
per refused message, bounded last-id map, hostile frames at the port."""

import threading
import time

import numpy as np
import pytest
import zmq

from serl_ext.transport import TrainerConfig, TrainerServer, decode, encode, find_free_ports

pytestmark = pytest.mark.timeout(60)


class Store:
    def __init__(self, fail=False):
        self.items, self.fail, self.lock = [], fail, threading.Lock()

    def insert(self, item):
        if self.fail and int(item["id"]) % 2:
            raise ValueError("odd id refused")
        with self.lock:
            self.items.append(item)


def _server(cleanup, store, **kw):
    data_port, pub_port = find_free_ports(2)
    cfg = TrainerConfig(port_number=data_port, broadcast_port=pub_port, timeout_ms=2000, **kw)
    logs = []
    srv = TrainerServer(cfg, log_fn=logs.append)
    srv.register_data_store("env", store)
    srv.start(threaded=True)
    cleanup.append(srv)
    return srv, logs


@pytest.fixture
def cleanup():
    objs = []
    yield objs
    for o in reversed(objs):
        o.stop()


def _send(port, frame, timeout_ms=20000):
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send(frame)
        assert sock.poll(timeout_ms, zmq.POLLIN), "server did not answer"
        return decode(sock.recv())
    finally:
        sock.close(linger=0)


def _data(ids, session="s", client="c"):
    return encode({"type": "data", "client": client, "session": session, "store": "env",
                   "items": [[i, {"id": i, "x": np.zeros(2, np.float32)}] for i in ids]})


def test_server_enforces_max_items_per_message(cleanup):
    store = Store()
    srv, _ = _server(cleanup, store, max_items_per_message=8)
    reply = _send(srv.config.port_number, _data(range(9)))
    assert reply["ok"] is False and "max_items_per_message=8" in reply["error"]
    assert store.items == [] and srv.num_rejected == 1
    assert _send(srv.config.port_number, _data(range(8)))["ok"]
    assert len(store.items) == 8


def test_insert_errors_log_one_line_per_message(cleanup):
    store = Store(fail=True)
    srv, logs = _server(cleanup, store)
    reply = _send(srv.config.port_number, _data(range(200)))
    assert reply["ok"] and reply["inserted"] == 100 and reply["insert_errors"] == 100
    lines = [m for m in logs if "rejected" in m]
    assert len(lines) == 1, lines
    assert "rejected 100 of 200 item(s)" in lines[0] and "odd id refused" in lines[0]
    assert srv.num_insert_errors == 100


def test_last_id_map_is_bounded(cleanup):
    store = Store()
    srv, _ = _server(cleanup, store, max_sessions=16)
    port = srv.config.port_number
    for k in range(60):
        assert _send(port, _data([0], session=f"s{k}"))["ok"]
    assert len(srv._last_ids) <= 16  # one store registered: 16 sessions at most
    # the newest sessions are remembered (their resent chunk is still a duplicate)
    assert _send(port, _data([0], session="s59"))["inserted"] == 0
    last = _send(port, encode({"type": "last_id", "client": "c", "session": "s0", "store": "env"}))
    assert last["last_id"] == -1  # the oldest was forgotten


def test_hostile_frame_at_the_port_is_refused_quickly(cleanup):
    store = Store()
    srv, logs = _server(cleanup, store)
    n = 16 * 1024 * 1024 - 5
    frame = b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n
    t0 = time.perf_counter()
    reply = _send(srv.config.port_number, frame)
    assert time.perf_counter() - t0 < 15.0
    assert reply["ok"] is False and "max_objects" in reply["error"]
    assert srv.num_rejected == 1 and len(logs) >= 1
    assert _send(srv.config.port_number, _data([0]))["ok"]  # still serving
