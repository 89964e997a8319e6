"""agentlace-compatible actor/learner transport on pyzmq + msgpack (no pickle).

Learner::

    server = TrainerServer(TrainerConfig(request_types=("send-stats",)), stats_cb)
    server.register_data_store("actor_env", replay_buffer)   # needs insert(item)
    server.start(threaded=True)
    server.publish_network(params)

Actor::

    store = QueuedDataStore(capacity=50_000)
    client = TrainerClient("actor_env", "127.0.0.1", config, {"actor_env": store})
    client.recv_network_callback(lambda params: ...)
    store.insert(transition); client.update()

Off loopback both sides need the same key: ``TrainerConfig(..., auth_key=load_auth_key(path))``
(HMAC-SHA256 on every frame, :mod:`serl_ext.transport.auth`).
"""

from serl_ext.transport.auth import load_auth_key
from serl_ext.transport.client import TrainerClient, find_free_ports
from serl_ext.transport.codec import MessageError, decode, encode
from serl_ext.transport.config import TrainerConfig
from serl_ext.transport.data_store import QueuedDataStore
from serl_ext.transport.server import TrainerServer

__all__ = [
    "MessageError",
    "QueuedDataStore",
    "TrainerClient",
    "TrainerConfig",
    "TrainerServer",
    "decode",
    "encode",
    "find_free_ports",
    "load_auth_key",
]
