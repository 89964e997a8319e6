"""A frozen backbone runs once per image in an update (``SACAgent._with_frozen_features``):
the encoder's stages compose to the full encoder, and the update equals the one that encodes
every use through the full encoder (what it did before), to float rounding, for both update
orders and both backbones, with fewer FLOPs."""

import functools
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from serl_ext.agents import sac
from serl_ext.networks.encoders import ImageEncoder, ObservationEncoder

SIZE, B = 16, 4
RTOL, ATOL = 1e-5, 1e-6


def _images(n, seed):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8))


@pytest.mark.parametrize("etype,widths", [("small_cnn", (4, 8)), ("resnet10", (4, 8, 8, 8))])
def test_stages_compose_to_the_full_encoder(etype, widths):
    obs = {"front": _images(3, 0), "wrist": _images(3, 1), "state": jnp.arange(12, dtype=jnp.float32).reshape(3, 4)}
    full = ObservationEncoder(etype, ("front", "wrist"), latent_dim=8, num_spatial_features=2, widths=widths,
                              image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.25, 0.3), freeze_backbone=True)
    params = full.init(jax.random.PRNGKey(0), obs)
    maps = full.clone(stage="backbone").apply(params, obs)
    assert sorted(maps) == ["front", "wrist"] and maps["front"].dtype == jnp.float32
    # The backbone stage is the backbone on the normalised image, nothing else.
    cam = ImageEncoder(etype, 8, 2, widths, image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.25, 0.3))
    from serl_ext.networks.encoders import make_backbone
    by_hand = make_backbone(etype, widths).apply(
        {"params": params["params"]["image_front"]["backbone"]},
        (obs["front"].astype(jnp.float32) / 255.0 - jnp.asarray([0.4, 0.5, 0.6])) / jnp.asarray([0.2, 0.25, 0.3]))
    np.testing.assert_allclose(maps["front"], by_hand, rtol=1e-5, atol=1e-6)
    head = full.clone(stage="head").apply(params, {**obs, **maps})
    np.testing.assert_allclose(head, full.apply(params, obs), rtol=1e-6, atol=1e-6)
    assert head.shape == (3, 2 * 8 + 4)
    with pytest.raises(ValueError, match="stage"):
        cam.clone(stage="neck").init(jax.random.PRNGKey(0), obs["front"])


@functools.lru_cache(maxsize=None)
def _agent(etype, freeze, order):
    c = sac.get_default_config()
    c.hidden_dims = (8, 8)
    c.update_order = order
    c.encoder.type = etype
    c.encoder.image_keys = ("front", "wrist")
    c.encoder.latent_dim = 8
    # ResNet-10: 64 channels (GroupNorm's 32 groups of 2): narrower, a 16 px image's last
    # 1 x 1 map would be one channel per group, normalised to zero.
    c.encoder.widths = (4, 8) if etype == "small_cnn" else (64, 64, 64, 64)
    c.encoder.num_spatial_features = 2
    c.encoder.freeze = freeze
    example = {"state": np.zeros(4, np.float32), "front": np.zeros((SIZE, SIZE, 3), np.uint8),
               "wrist": np.zeros((SIZE, SIZE, 3), np.uint8)}
    return sac.SACAgent.create(jax.random.PRNGKey(2), example, np.zeros(2, np.float32), c)


def _batch(n, seed):
    r = np.random.default_rng(seed)

    def obs():
        return {"state": r.normal(size=(n, 4)).astype(np.float32),
                "front": r.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
                "wrist": r.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)}

    return {"observations": obs(), "next_observations": obs(), "actions": r.uniform(-1, 1, (n, 2)).astype(np.float32),
            "rewards": r.uniform(size=n).astype(np.float32), "masks": (r.uniform(size=n) > 0.3).astype(np.float32)}


def _every_use_full(agent, batch):
    return agent, batch  # the update before: every use of an image goes through the full encoder


def _updates(agent, utd, steps, patched):
    fn = jax.jit(lambda a, b: sac._update_impl(a, b, utd))  # a fresh trace for each variant
    ctx = mock.patch.object(sac.SACAgent, "_with_frozen_features", _every_use_full) if patched else mock.MagicMock()
    infos = []
    with ctx:
        for s in range(steps):
            agent, info = fn(agent, agent._check_batch(_batch(utd * B, seed=s), utd))
            infos.append(info)
    return agent, infos


def _assert_close(a, b):
    la, ta = jax.tree_util.tree_flatten_with_path(a)
    lb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb
    for (path, x), (_, y) in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL, err_msg=jax.tree_util.keystr(path))


def _state(agent):
    return {"actor": (agent.actor.params, agent.actor.opt_state), "critic": (agent.critic.params, agent.critic.opt_state),
            "target": agent.target_critic_params, "temp": agent.temp.params,
            "rng": jax.random.key_data(agent.rng) if jax.dtypes.issubdtype(agent.rng.dtype, jax.dtypes.prng_key)
            else agent.rng}


@pytest.mark.parametrize("etype,order", [("resnet10", "sac"), ("small_cnn", "upstream")])
def test_frozen_update_equals_encoding_every_use(etype, order):
    agent = _agent(etype, True, order)
    once, once_infos = _updates(agent, 2, 2, patched=False)
    every, every_infos = _updates(agent, 2, 2, patched=True)
    assert once.nets.encoder.stage == "full" and once.nets == agent.nets  # handed back as it came
    _assert_close(_state(once), _state(every))
    for a, b in zip(once_infos, every_infos):
        _assert_close(a, b)
    # The trained parts moved (the backbone's features reach them); the frozen backbone did not.
    for part in ("spatial", "proj"):
        for x, y in zip(jax.tree_util.tree_leaves(once.critic.params["encoder"]["image_front"][part]),
                        jax.tree_util.tree_leaves(agent.critic.params["encoder"]["image_front"][part])):
            assert np.abs(np.asarray(x) - np.asarray(y)).max() > 1e-5
    for x, y in zip(jax.tree_util.tree_leaves(once.critic.params["encoder"]["image_front"]["backbone"]),
                    jax.tree_util.tree_leaves(agent.critic.params["encoder"]["image_front"]["backbone"])):
        np.testing.assert_array_equal(x, y)


def _convolutions(fn, *args):
    """How many convolutions XLA's compiled program of ``fn(*args)`` runs (after its own
    common-subexpression elimination; the scan over image minibatches is unrolled)."""
    import re

    return len(re.findall(r"\bconvolution\(", jax.jit(fn).lower(*args).compile().as_text()))


def _update_convolutions(agent, utd, patched):
    batch = agent._check_batch(_batch(utd * B, seed=0), utd)
    ctx = mock.patch.object(sac.SACAgent, "_with_frozen_features", _every_use_full) if patched else mock.MagicMock()
    with ctx:
        return _convolutions(lambda a, b: sac._update_impl(a, b, utd), agent, batch)


@pytest.mark.parametrize("utd", [1, 2, 3])
def test_frozen_update_runs_each_backbone_once_per_image(utd):
    agent = _agent("resnet10", True, "sac")
    per_pass = _convolutions(lambda p, x: agent.nets.encoder.clone(stage="backbone").apply({"params": p}, x),
                             agent.critic.params["encoder"], _batch(B, 0)["observations"])
    assert per_pass == 2 * 11  # two cameras x (stem + 4 blocks x 2 + 2 projection shortcuts)
    # One pass over all utd x B observations s and one over their s'. Encoding every use
    # (3 per critic step: s online, s' online and target; 1 for the actor) ran more: XLA
    # merges some of the uses that read the same buffers (2 utd + 1 passes of B images on
    # jax 0.10), not all.
    assert _update_convolutions(agent, utd, patched=False) == 2 * per_pass
    assert _update_convolutions(agent, utd, patched=True) > 2 * per_pass


def test_trained_backbones_and_state_encoders_are_left_alone():
    trained = _agent("small_cnn", False, "sac")
    b = _batch(B, 0)
    same_agent, same_batch = trained._with_frozen_features(b)
    assert same_agent is trained and same_batch is b  # a trained backbone needs its gradient every use
    with pytest.raises(ValueError, match="stage"):
        ObservationEncoder("small_cnn", ("front",), stage="neck").init(jax.random.PRNGKey(0), {"front": _images(1, 0)})
