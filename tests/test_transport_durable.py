"""Durable acknowledgement (issue 15 item 2, transport side): with ``durable_ack`` the client
deletes items only once they are checkpointed, so a learner killed at any moment and restarted
from its checkpoint loses and duplicates nothing."""

import threading
import time

import numpy as np
import pytest

from serl_ext.transport import QueuedDataStore, TrainerClient, TrainerConfig, TrainerServer, find_free_ports

pytestmark = pytest.mark.timeout(60)


class Store:
    def __init__(self, items=()):
        self.items, self.lock = list(items), threading.Lock()

    def insert(self, item):
        with self.lock:
            self.items.append(item)

    def state_dict(self):
        with self.lock:
            return list(self.items)


@pytest.fixture
def cfg():
    data_port, pub_port = find_free_ports(2)
    return TrainerConfig(port_number=data_port, broadcast_port=pub_port, timeout_ms=2000)


def _learner(cfg, checkpoint=None):
    """A learner process: a server and its store, restored from ``checkpoint`` if given."""
    store = Store(checkpoint["items"] if checkpoint else ())
    srv = TrainerServer(cfg, durable_ack=True)
    srv.register_data_store("env", store)
    if checkpoint:
        srv.restore_ids(checkpoint["ids"])
    srv.start(threaded=True)
    return srv, store


def _checkpoint(srv, store):
    with srv.hold_inserts() as ids:
        ckpt = {"items": store.state_dict(), "ids": ids}
    return ckpt


def _wait_until(pred, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _ids(items):
    return [int(it["id"]) for it in items]


def _insert(q, ids):
    for i in ids:
        q.insert({"id": np.int64(i)})


@pytest.mark.parametrize("marked", [True, False])  # killed after / before mark_durable
def test_kill_after_checkpoint_loses_and_duplicates_nothing(cfg, marked):
    srv, store = _learner(cfg)
    q = QueuedDataStore(1000)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q})
    try:
        _insert(q, range(10))
        assert client.update()
        assert _ids(store.items) == list(range(10))
        assert len(q) == 10          # delivered, not durable: the actor keeps them
        ckpt = _checkpoint(srv, store)
        if marked:
            srv.mark_durable(ckpt["ids"])
        _insert(q, range(10, 15))
        assert client.update()       # 10..14 acknowledged as received, not checkpointed
        assert len(q) == (5 if marked else 15)
        srv.stop()                   # "SIGKILL": everything after the checkpoint is gone
        srv, store = _learner(cfg, ckpt)
        _insert(q, range(15, 20))
        assert _wait_until(client.update)  # the REQ socket reconnects first
        assert _ids(store.items) == list(range(20))  # no loss, no duplicate
        assert srv.num_duplicates == 0
    finally:
        client.stop()
        srv.stop()


def test_without_durable_ack_items_are_deleted_on_receipt(cfg):
    srv = TrainerServer(cfg)
    srv.register_data_store("env", Store())
    srv.start(threaded=True)
    q = QueuedDataStore(100)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q})
    try:
        _insert(q, range(5))
        assert client.update() and len(q) == 0
    finally:
        client.stop()
        srv.stop()


def test_hold_inserts_blocks_the_server_thread(cfg):
    srv, store = _learner(cfg)
    q = QueuedDataStore(100)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q})
    try:
        _insert(q, range(3))
        with srv.hold_inserts() as ids:
            assert ids == []
            t = threading.Thread(target=client.update)
            t.start()
            t.join(0.5)
            assert store.items == []  # nothing inserted while held
        t.join(5)
        assert _ids(store.items) == [0, 1, 2]
        with srv.hold_inserts() as ids:
            assert ids == [["actor", client.session, "env", 2]]
        with pytest.raises(ValueError):
            srv.mark_durable([["actor", "s", "env", "x"]])
        with pytest.raises(RuntimeError):
            srv.restore_ids(ids)
    finally:
        client.stop()
        srv.stop()


def test_delivery_counters_and_liveness(cfg):
    srv, store = _learner(cfg)
    q = QueuedDataStore(100)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q})
    try:
        assert srv.last_contact_time is None
        _insert(q, range(7))
        assert client.update()
        assert client.num_items_sent == 7 and client.num_items_delivered == 7
        assert client.num_items_acknowledged == 0          # not checkpointed yet
        with srv.hold_inserts() as ids:
            pass
        srv.mark_durable(ids)
        assert client.update()
        assert client.num_items_acknowledged == 7 and len(q) == 0
        assert srv.last_contact_time is not None and "actor" in srv.last_contact
    finally:
        client.stop()
        srv.stop()
