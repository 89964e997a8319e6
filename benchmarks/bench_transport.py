"""Transport throughput/latency on loopback (TrainerServer <-> TrainerClient).

Run:
  python benchmarks/bench_transport.py --num_items=2000 --image_size=128

Measures (one process, two threads, 127.0.0.1):
  * codec encode/decode time of one transition;
  * transitions/s and MB/s delivered by ``client.update()``;
  * publish_network -> callback latency for an MLP-sized parameter tree.
"""

import statistics
import threading
import time

import numpy as np
from absl import app, flags

from serl_ext.transport import (
    QueuedDataStore,
    TrainerClient,
    TrainerConfig,
    TrainerServer,
    decode,
    encode,
    find_free_ports,
)

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_items", 2000, "Transitions to deliver.")
flags.DEFINE_integer("image_size", 0, "Side of two uint8 RGB images per observation (0: none).")
flags.DEFINE_integer("state_dim", 39, "State dimension.")
flags.DEFINE_integer("hidden", 256, "Width of the 3-network MLP used as parameter payload.")
flags.DEFINE_integer("publishes", 20, "Parameter publishes for the latency measurement.")


def _transition(i: int) -> dict:
    obs = {"state": np.random.default_rng(i).standard_normal(FLAGS.state_dim).astype(np.float32)}
    if FLAGS.image_size:
        s = FLAGS.image_size
        obs["front"] = np.full((s, s, 3), i % 255, np.uint8)
        obs["wrist"] = np.full((s, s, 3), i % 255, np.uint8)
    return {"observations": obs, "next_observations": obs,
            "actions": np.zeros(4, np.float32), "rewards": 0.0, "masks": 1.0, "dones": False,
            "interventions": False, "action_source": np.int8(0)}


def _params() -> dict:
    h, d = FLAGS.hidden, FLAGS.state_dim
    rng = np.random.default_rng(0)

    def dense(i, o):
        return {"kernel": rng.standard_normal((i, o), np.float32), "bias": np.zeros(o, np.float32)}

    def mlp(i, o):
        return {"Dense_0": dense(i, h), "Dense_1": dense(h, h), "Dense_2": dense(h, o)}

    return {"actor": mlp(d, 8), "critic_0": mlp(d + 4, 1), "critic_1": mlp(d + 4, 1)}


class _CountingStore:
    def __init__(self):
        self.n = 0

    def insert(self, item):
        self.n += 1


def main(_):
    tr = _transition(0)
    data = encode(tr)
    t0 = time.perf_counter()
    for _ in range(200):
        encode(tr)
    t_enc = (time.perf_counter() - t0) / 200
    t0 = time.perf_counter()
    for _ in range(200):
        decode(data)
    t_dec = (time.perf_counter() - t0) / 200
    print(f"transition: {len(data)} bytes, encode {t_enc * 1e6:.0f} us, "
          f"decode {t_dec * 1e6:.0f} us")

    p1, p2 = find_free_ports(2)
    cfg = TrainerConfig(port_number=p1, broadcast_port=p2)
    store = _CountingStore()
    server = TrainerServer(cfg)
    server.register_data_store("actor_env", store)
    server.start(threaded=True)
    q = QueuedDataStore(capacity=FLAGS.num_items)
    client = TrainerClient("actor", "127.0.0.1", cfg, {"actor_env": q}, wait_for_server=True,
                           wait_timeout_s=10)
    try:
        items = [_transition(i) for i in range(FLAGS.num_items)]
        t0 = time.perf_counter()
        for it in items:
            q.insert(it)
        ok = client.update()
        dt = time.perf_counter() - t0
        assert ok and store.n == FLAGS.num_items, (ok, store.n)
        mb = FLAGS.num_items * len(data) / 1e6
        print(f"delivered {FLAGS.num_items} transitions in {dt:.3f} s: "
              f"{FLAGS.num_items / dt:.0f} transitions/s, {mb / dt:.1f} MB/s")

        params = _params()
        size = len(encode(params))
        got = threading.Event()
        stamp = {}

        def on_params(p):
            stamp["t"] = time.perf_counter()
            got.set()

        client.recv_network_callback(on_params)
        deadline = time.monotonic() + 10
        while not got.is_set() and time.monotonic() < deadline:  # slow joiner
            server.publish_network(params)
            got.wait(0.05)
        lat = []
        for _ in range(FLAGS.publishes):
            got.clear()
            t0 = time.perf_counter()
            server.publish_network(params)
            if got.wait(5):
                lat.append(stamp["t"] - t0)
            time.sleep(0.02)
        print(f"params {size / 1e6:.2f} MB: publish->callback latency median "
              f"{statistics.median(lat) * 1e3:.1f} ms, max {max(lat) * 1e3:.1f} ms "
              f"({len(lat)}/{FLAGS.publishes} received)")
    finally:
        client.stop()
        server.stop()


if __name__ == "__main__":
    app.run(main)
