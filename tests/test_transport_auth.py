"""Authentication of the transport (HMAC on every frame, replay refusal, counter checks)."""

import dataclasses
import os
import threading
import time

import numpy as np
import pytest
import zmq

from serl_ext.transport import (
    QueuedDataStore,
    TrainerClient,
    TrainerConfig,
    TrainerServer,
    decode,
    encode,
    find_free_ports,
)
from serl_ext.transport import auth

pytestmark = pytest.mark.timeout(60)

KEY = b"k" * 32
OTHER_KEY = b"x" * 32


class ListStore:
    def __init__(self):
        self.items, self.lock = [], threading.Lock()

    def insert(self, item):
        with self.lock:
            self.items.append(item)


def _wait_until(pred, timeout_s=5.0, step_s=0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return pred()


def _item(i):
    return {"id": np.int64(i), "x": np.full(3, i, np.float32)}


@pytest.fixture
def cfg():
    data_port, pub_port = find_free_ports(2)
    return TrainerConfig(port_number=data_port, broadcast_port=pub_port,
                         request_types=("actor_done",), timeout_ms=1000,
                         max_message_bytes=64 * 1024, max_items_per_message=16, auth_key=KEY,
                         monotonic_fields=("version", "learner_step"), max_counter_jump=1000)


@pytest.fixture
def cleanup():
    objs = []
    yield objs
    for o in reversed(objs):
        o.stop() if hasattr(o, "stop") else _close(o)


def _server(cfg, cleanup, calls=None):
    store = ListStore()
    srv = TrainerServer(cfg, request_callback=lambda t, p: (calls.append(t) if calls is not None
                                                            else None, "ok")[1])
    srv.register_data_store("env", store)
    srv.start(threaded=True)
    cleanup.append(srv)
    return srv, store


def _raw_req(port, frame, timeout_ms=3000):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send(frame)
        assert sock.poll(timeout_ms, zmq.POLLIN), "server did not answer"
        return sock.recv()
    finally:
        sock.close(linger=0)


def _message(version, step):
    return {"version": version, "learner_step": step, "w": np.ones(2, np.float32)}


# ------------------------------------------------------------------- config / key


def test_non_loopback_needs_a_key(cfg):
    no_key = dataclasses.replace(cfg, auth_key=None, bind_address="0.0.0.0")
    with pytest.raises(ValueError, match="authentication key is required"):
        TrainerServer(no_key).start()
    with pytest.raises(ValueError, match="authentication key is required"):
        TrainerClient("actor", "10.0.0.2", dataclasses.replace(cfg, auth_key=None))
    with pytest.raises(ValueError, match="auth='required'"):
        TrainerServer(dataclasses.replace(cfg, auth_key=None, auth="required")).start()
    assert "kkkk" not in repr(cfg)  # the key never shows in a repr / log line
    with pytest.raises(ValueError, match="at least 16"):
        dataclasses.replace(cfg, auth_key=b"short")
    assert auth.is_loopback("127.0.0.1") and auth.is_loopback("localhost")
    assert not auth.is_loopback("0.0.0.0") and not auth.is_loopback("*")


def test_load_auth_key_sources(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"0123456789abcdef0123\n")
    os.chmod(path, 0o644)
    warnings = []
    assert auth.load_auth_key(str(path), env={}, log_fn=warnings.append) == b"0123456789abcdef0123"
    assert warnings and "chmod 600" in warnings[0]
    assert auth.load_auth_key(None, env={auth.KEY_FILE_ENV_VAR: str(path)}) == b"0123456789abcdef0123"
    assert auth.load_auth_key("", env={auth.KEY_ENV_VAR: "s" * 20}) == b"s" * 20
    assert auth.load_auth_key("", env={}) is None
    with pytest.raises(ValueError, match="at least 16"):
        auth.load_auth_key("", env={auth.KEY_ENV_VAR: "short"})
    with pytest.raises(FileNotFoundError):
        auth.load_auth_key(str(tmp_path / "missing"), env={})


# -------------------------------------------------------------------- end to end


def test_right_key_works_end_to_end(cfg, cleanup):
    calls = []
    srv, store = _server(cfg, cleanup, calls)
    q = QueuedDataStore(100)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q}, wait_for_server=True,
                           wait_timeout_s=5)
    cleanup.append(client)
    for i in range(40):
        q.insert(_item(i))
    assert client.update()
    assert [int(it["id"]) for it in store.items] == list(range(40))
    assert client.request("actor_done", {"n": 1}) == "ok" and calls == ["actor_done"]
    seen = []
    client.recv_network_callback(lambda m: seen.append(m["learner_step"]))
    step = [0]

    def publish():
        step[0] += 1
        srv.publish_network(_message(step[0], step[0]))
        return bool(seen)

    assert _wait_until(publish, step_s=0.05)
    assert srv.num_rejected == 0 and srv.num_unauthenticated == 0
    assert client.num_network_unauthenticated == 0 and client.num_network_refused == 0


def test_wrong_key_refused(cfg, cleanup):
    calls = []
    srv, store = _server(cfg, cleanup, calls)
    q = QueuedDataStore(100)
    q.insert(_item(0))
    bad = TrainerClient("actor", "127.0.0.1", dataclasses.replace(cfg, auth_key=OTHER_KEY),
                        {"env": q})
    cleanup.append(bad)
    assert not bad.update()
    assert bad.request("actor_done", None) is None
    assert store.items == [] and calls == []
    assert srv.num_unauthenticated >= 2 and srv.num_rejected >= 2
    assert bad.num_unauthenticated_replies >= 2  # the unsigned refusals are not trusted either
    assert len(q) == 1  # nothing acknowledged: the item is still pending


def test_stranger_client_cannot_deliver_data_or_end_the_run(cfg, cleanup):
    calls = []
    srv, store = _server(cfg, cleanup, calls)
    plain_done = encode({"type": "request", "client": "x", "session": "s",
                         "request_type": "actor_done", "payload": None})
    plain_data = encode({"type": "data", "client": "x", "session": "s", "store": "env",
                         "items": [[0, _item(0)]]})
    forged = auth.Authenticator(OTHER_KEY).sign(auth.CHANNEL_REQUEST, plain_done)
    for frame in (plain_done, plain_data, forged):
        reply = decode(_raw_req(cfg.port_number, frame))
        assert reply["ok"] is False
    assert calls == [] and store.items == []
    assert srv.num_unauthenticated == 3 and srv.num_rejected == 3
    # a stranger without a key cannot use the keyless client against a keyed server either
    stranger = TrainerClient("x", "127.0.0.1", dataclasses.replace(cfg, auth_key=None))
    cleanup.append(stranger)
    assert stranger.request("actor_done", None) is None and calls == []


def test_replayed_request_frame_refused(cfg, cleanup):
    calls = []
    srv, store = _server(cfg, cleanup, calls)
    peer = auth.Authenticator(KEY)  # a legitimate client whose frames an attacker captures
    hello = decode(_raw_req(cfg.port_number, peer.sign(auth.CHANNEL_REQUEST, encode(
        {"type": "hello", "client": "a", "session": "s"})))[auth.HEADER_BYTES:])
    sid = bytes.fromhex(hello["server_id"])
    data = peer.sign(auth.CHANNEL_REQUEST, encode(
        {"type": "data", "client": "a", "session": "s", "store": "env",
         "items": [[0, _item(0)]]}), bound_to=sid)
    done = peer.sign(auth.CHANNEL_REQUEST, encode(
        {"type": "request", "client": "a", "session": "s", "request_type": "actor_done",
         "payload": None}), bound_to=sid)
    assert decode(_raw_req(cfg.port_number, data)[auth.HEADER_BYTES:])["ok"]
    assert decode(_raw_req(cfg.port_number, done)[auth.HEADER_BYTES:])["ok"]
    assert len(store.items) == 1 and calls == ["actor_done"]
    for frame in (data, done):  # the captured frames, replayed
        assert decode(_raw_req(cfg.port_number, frame))["ok"] is False
    assert srv.num_replayed == 2 and len(store.items) == 1 and calls == ["actor_done"]
    # replayed at the next learner process (same ports): refused as bound to the old server
    srv.stop()
    srv2, store2 = _server(cfg, cleanup, calls)
    reply = decode(_raw_req(cfg.port_number, done)[auth.HEADER_BYTES:])
    assert reply["ok"] is False and reply["error"].startswith("stale_server")
    assert calls == ["actor_done"] and srv2.num_unauthenticated == 1
    # a frame outside the clock window is refused as a replay
    old = auth.Authenticator(KEY, max_clock_skew_s=1)
    frame = old.sign(auth.CHANNEL_REQUEST, encode({"type": "hello", "client": "a"}))
    time.sleep(0.01)
    srv2._auth.max_clock_skew_s = 0.001
    assert decode(_raw_req(cfg.port_number, frame))["ok"] is False
    assert srv2.num_replayed == 1


def test_client_follows_a_restarted_server(cfg, cleanup):
    srv, _ = _server(cfg, cleanup)
    q = QueuedDataStore(100)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"env": q}, wait_for_server=True,
                           wait_timeout_s=5)
    cleanup.append(client)
    q.insert(_item(0))
    assert client.update()
    srv.stop()
    srv2, store2 = _server(cfg, cleanup)
    q.insert(_item(1))
    assert _wait_until(client.update, timeout_s=5, step_s=0.1)  # re-learns the server id
    assert [int(it["id"]) for it in store2.items] == [1]


# ------------------------------------------------------------------ publishers


def _publisher(port):
    """A PUB socket on ``port`` in a context of its own, so that closing it (``_close``) can
    wait until the port is free again (``Context.term`` returns once the socket is closed)."""
    sock = zmq.Context().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"tcp://127.0.0.1:{port}")
    return sock


def _close(sock):
    context = sock.context
    sock.close(linger=0)
    context.term()


def test_stranger_publisher_cannot_steer_the_client(cfg, cleanup):
    client = TrainerClient("actor", "127.0.0.1", cfg)
    cleanup.append(client)
    seen = []
    client.recv_network_callback(seen.append)
    pub = _publisher(cfg.broadcast_port)  # binds the port before the learner does
    cleanup.append(pub)
    forger = auth.Authenticator(OTHER_KEY)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        pub.send(encode(_message(1, 1)))  # no key at all
        pub.send(forger.sign(auth.CHANNEL_PARAMS, encode(_message(2, 2))))  # wrong key
        time.sleep(0.02)
    assert _wait_until(lambda: client.num_network_unauthenticated >= 10)
    assert seen == []  # nothing reached the callback
    cleanup.remove(pub)
    _close(pub)  # the port is free when this returns: the real learner can bind it
    srv, _ = _server(cfg, cleanup)  # the real learner
    assert _wait_until(lambda: (srv.publish_network(_message(3, 3)), bool(seen))[1],
                       step_s=0.05)
    assert seen[0]["learner_step"] == 3


def test_replayed_and_absurd_parameter_messages_refused(cfg, cleanup):
    client = TrainerClient("actor", "127.0.0.1", cfg)
    cleanup.append(client)
    seen = []
    client.recv_network_callback(lambda m: seen.append(int(m["learner_step"])))
    pub = _publisher(cfg.broadcast_port)
    cleanup.append(pub)
    learner = auth.Authenticator(KEY)
    first = learner.sign(auth.CHANNEL_PARAMS, encode(_message(5, 100)))
    assert _wait_until(lambda: (pub.send(first), bool(seen))[1], step_s=0.05)
    time.sleep(0.1)
    replayed_before = client.num_network_replayed
    assert replayed_before >= 0 and seen == [100]
    pub.send(first)  # the captured frame again
    assert _wait_until(lambda: client.num_network_replayed > replayed_before)

    def send(version, step):
        n = client.num_network_refused + len(seen)
        pub.send(learner.sign(auth.CHANNEL_PARAMS, encode(_message(version, step))))
        assert _wait_until(lambda: client.num_network_refused + len(seen) > n)

    send(6, 50)          # learner_step backwards
    send(7, -10 ** 12)   # negative
    send(8, 10 ** 12)    # absurd jump
    send(4, 150)         # version backwards
    send(9, 200)         # fine
    assert seen == [100, 200] and client.num_network_refused == 4
    # a restarted learner (new authenticated publisher, newer timestamps) may start lower
    restarted = auth.Authenticator(KEY)
    send_restart = restarted.sign(auth.CHANNEL_PARAMS, encode(_message(3, 80)))
    pub.send(send_restart)
    assert _wait_until(lambda: seen[-1] == 80)
    # ... but a frame of the earlier publisher (older timestamp) is now refused
    old = learner.sign(auth.CHANNEL_PARAMS, encode(_message(10, 300)))
    restarted_frame = restarted.sign(auth.CHANNEL_PARAMS, encode(_message(4, 90)))
    pub.send(restarted_frame)
    assert _wait_until(lambda: seen[-1] == 90)
    n = client.num_network_replayed
    pub.send(old)
    assert _wait_until(lambda: client.num_network_replayed > n)
    assert seen[-1] == 90


def test_counter_checks_without_a_key(cfg, cleanup):
    plain = dataclasses.replace(cfg, auth_key=None)
    srv, _ = _server(plain, cleanup)
    client = TrainerClient("actor", "127.0.0.1", plain)
    cleanup.append(client)
    seen = []
    client.recv_network_callback(lambda m: seen.append(int(m["learner_step"])))
    assert _wait_until(lambda: (srv.publish_network(_message(1, 10)), bool(seen))[1],
                       step_s=0.05)
    time.sleep(0.1)
    n = client.num_network_refused
    srv.publish_network(_message(2, -1))
    assert _wait_until(lambda: client.num_network_refused == n + 1)
    srv.publish_network(_message(3, 5))  # backwards within the publisher's stream
    assert _wait_until(lambda: client.num_network_refused == n + 2)
    assert set(seen) == {10}
