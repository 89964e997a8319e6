"""Frame features cached in the replay buffer (``ReplayBuffer.attach_frame_features``) and the
head-only SAC update on them (``SACAgent.update(frame_features=True)``,
``learner.cache_frame_features``): the cache returns the function of the frames actually sampled
(after the ring wraps and after ``load_state_dict``), computes each stored frame once, and the
update on cached features equals the update on the frames."""

import jax
import ml_collections
import numpy as np
import pytest

from serl_ext.agents import sac
from serl_ext.data.replay_buffer import ReplayBuffer, sample_mixed_many
from serl_ext.loop.learner import attach_frame_features

SIZE = 8


def _features(images):
    """A plain per-frame function: (N, 8, 8, 3) uint8 -> (N, 2, 2, 3) float32 mean pools."""
    x = images["front"].astype(np.float32).reshape(-1, 2, 4, 2, 4, 3)
    return {"front": x.mean(axis=(2, 4))}


def _transition(r):
    obs = {"front": r.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), "state": r.normal(size=3).astype(np.float32)}
    nxt = {"front": r.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), "state": r.normal(size=3).astype(np.float32)}
    return {"observations": obs, "next_observations": nxt, "actions": r.uniform(-1, 1, 2).astype(np.float32),
            "rewards": np.float32(r.uniform()), "masks": np.float32(1.0), "dones": False,
            "interventions": False, "action_source": np.int8(0)}


def _buffer(capacity=10, seed=0):
    spec = {"front": ((SIZE, SIZE, 3), np.uint8), "state": ((3,), np.float32)}
    return ReplayBuffer(spec, 2, capacity, seed=seed)


class _Counting:
    def __init__(self):
        self.rows = []

    def __call__(self, images):
        self.rows.append(len(images["front"]))
        return _features(images)


def _fill(buffers, n, seed):
    r = np.random.default_rng(seed)
    for _ in range(n):
        tr = _transition(r)
        for b in buffers:
            b.insert(tr)


def test_cached_features_are_the_function_of_the_sampled_frames_after_wrap_and_reload():
    plain, cached = _buffer(seed=3), _buffer(seed=3)
    fn = _Counting()
    cached.attach_frame_features(fn, ["front"], chunk=4)
    for round_ in range(3):  # 3 x 8 inserts into a 10-slot ring: frames overwritten twice
        _fill([plain, cached], 8, seed=round_)
        for _ in range(3):
            want, got = plain.sample(16), cached.sample(16, frame_features=True)
            for part in ("observations", "next_observations"):
                np.testing.assert_allclose(got[part]["front"], _features(want[part])["front"], rtol=1e-6)
                assert got[part]["front"].dtype == np.float32 and got[part]["front"].shape == (16, 2, 2, 3)
                np.testing.assert_array_equal(got[part]["state"], want[part]["state"])  # other keys as stored
            np.testing.assert_array_equal(got["actions"], want["actions"])
    # Each frame at most once: every call is a full chunk, no more frames than were written.
    assert set(fn.rows) == {4}
    assert cached.feature_calls <= cached.frames_written
    assert cached.feature_bytes_per_frame == 8 + 2 * 2 * 3 * 4 and plain.feature_bytes_per_frame == 0
    before = cached.feature_calls
    cached.sample(64, frame_features=True)  # everything live is cached by now, or nearly
    assert cached.feature_calls - before <= cached.num_live_frames()
    # load_state_dict replaces the frames (same global frame numbers, other content): recomputed.
    other = _buffer(seed=3)
    _fill([other], 24, seed=99)
    cached.load_state_dict(other.state_dict())
    plain.load_state_dict(other.state_dict())
    want, got = plain.sample(16), cached.sample(16, frame_features=True)
    np.testing.assert_allclose(got["observations"]["front"], _features(want["observations"])["front"], rtol=1e-6)
    # Mixed sampling passes the flag to every buffer.
    demo = _buffer(seed=4)
    demo.attach_frame_features(fn, ["front"])
    _fill([demo], 5, seed=7)
    mixed = sample_mixed_many([cached, demo], 6, 2, fractions=(0.5, 0.5), frame_features=True)
    assert mixed["observations"]["front"].shape == (12, 2, 2, 3)


def test_frame_feature_errors():
    b = _buffer()
    _fill([b], 3, seed=0)
    with pytest.raises(ValueError, match="attach_frame_features"):
        b.sample(2, frame_features=True)
    with pytest.raises(ValueError, match="not in the observation spec"):
        b.attach_frame_features(_features, ["wrist"])
    with pytest.raises(ValueError, match="chunk"):
        b.attach_frame_features(_features, ["front"], chunk=0)
    b.attach_frame_features(lambda images: {"front": np.zeros((3, 1))}, ["front"], chunk=2)
    with pytest.raises(ValueError, match="shape"):
        b.sample(2, frame_features=True)
    b.attach_frame_features(lambda images: {}, ["front"])
    with pytest.raises(ValueError, match="returned no 'front'"):
        b.sample(2, frame_features=True)
    b.attach_frame_features(lambda images: {"front": np.full((64, 1), np.nan, np.float32)}, ["front"])
    with pytest.raises(ValueError, match="NaN"):
        b.sample(2, frame_features=True)
    assert b.feature_calls == 0


def _agent(order="sac", augmentation="none", freeze=True, hybrid=False):
    from serl_ext.agents import sac_hybrid

    c = sac_hybrid.get_default_config() if hybrid else sac.get_default_config()
    c.hidden_dims = (8, 8)
    c.update_order = order
    c.encoder.type = "resnet10"
    c.encoder.image_keys = ("front",)
    c.encoder.latent_dim = 8
    c.encoder.widths = (64, 64, 64, 64)  # see tests/test_frozen_backbone_once.py
    c.encoder.num_spatial_features = 2
    c.encoder.freeze = freeze
    c.encoder.augmentation = augmentation
    example = {"state": np.zeros(3, np.float32), "front": np.zeros((16, 16, 3), np.uint8)}
    cls = sac_hybrid.SACHybridAgent if hybrid else sac.SACAgent
    return cls.create(jax.random.PRNGKey(2), example, np.zeros(2, np.float32), c)


def _batch(n, seed):
    r = np.random.default_rng(seed)

    def obs():
        return {"state": r.normal(size=(n, 3)).astype(np.float32),
                "front": r.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)}

    actions = r.uniform(-1, 1, (n, 2)).astype(np.float32)
    actions[:, -1] = r.integers(-1, 2, n)  # the hybrid agent's gripper entry in {-1, 0, 1}
    return {"observations": obs(), "next_observations": obs(), "actions": actions,
            "rewards": r.uniform(size=n).astype(np.float32), "masks": (r.uniform(size=n) > 0.3).astype(np.float32),
            "grasp_penalty": -0.1 * r.integers(0, 2, n).astype(np.float32)}


@pytest.mark.parametrize("order,hybrid", [("sac", False), ("upstream", False), ("sac", True)])
def test_update_on_cached_features_equals_update_on_frames(order, hybrid):
    agent = _agent(order, hybrid=hybrid)
    fn = agent.frame_features_fn()
    spec = dict((k, (shape, dt)) for k, shape, dt in agent.feature_obs_spec())
    assert spec["front"] == ((1, 1, 64), "float32") and spec["state"] == ((3,), "float32")
    on_frames, on_features = agent, agent
    for s in range(2):
        batch = _batch(2 * 4, seed=s)
        feats = {k: {**batch[k], **fn({"front": batch[k]["front"]})} for k in ("observations", "next_observations")}
        on_frames, info_a = on_frames.update(batch, 2)
        on_features, info_b = on_features.update({**batch, **feats}, 2, frame_features=True)
        for key in info_a:
            np.testing.assert_allclose(np.asarray(info_a[key]), np.asarray(info_b[key]), rtol=1e-5, atol=1e-6,
                                       err_msg=key)
    assert on_features.nets == agent.nets  # handed back at the full stage
    for x, y in zip(jax.tree_util.tree_leaves((on_frames.critic.params, on_frames.actor.params)),
                    jax.tree_util.tree_leaves((on_features.critic.params, on_features.actor.params))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    # It acted on real frames still: the trained head moved.
    moved = jax.tree_util.tree_leaves(on_features.critic.params["encoder"]["image_front"]["proj"])
    start = jax.tree_util.tree_leaves(agent.critic.params["encoder"]["image_front"]["proj"])
    assert any(not np.allclose(a, b) for a, b in zip(moved, start))
    # A frame batch passed as features is refused with the shape named.
    with pytest.raises(ValueError, match="front"):
        agent.update(_batch(8, 0), 2, frame_features=True)


def test_frame_features_need_a_frozen_backbone_and_no_augmentation():
    with pytest.raises(ValueError, match="augmentation"):
        _agent(augmentation="random_crop").frame_features_fn()
    with pytest.raises(ValueError, match="frozen"):
        _agent(freeze=False).update(_batch(4, 0), 1, frame_features=True)
    config = ml_collections.ConfigDict({"learner": {"data_parallel_devices": 0}})
    with pytest.raises(ValueError, match="learner.cache_frame_features: .*augmentation"):
        attach_frame_features(config, _agent(augmentation="random_crop"), [])
    config.learner.data_parallel_devices = 2
    with pytest.raises(ValueError, match="data_parallel"):
        attach_frame_features(config, _agent(), [])
