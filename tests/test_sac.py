"""Tests for serl_ext.agents.sac: TD target, temperature loss, agent API and jit caching."""

import math

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from serl_ext.agents import sac
from serl_ext.agents.sac import SACAgent, compute_td_target, get_default_config, temperature_loss
from serl_ext.networks import ResNet10, SmallCNN, save_params

OBS_DIM, ACT_DIM = 5, 3


def tiny_config(**kw):
    c = get_default_config()
    c.hidden_dims = (8, 8)
    for k, v in kw.items():
        c[k] = v
    return c


def state_batch(n, seed=0, obs_dim=OBS_DIM, act_dim=ACT_DIM):
    r = np.random.default_rng(seed)
    return {
        "observations": {"state": r.normal(size=(n, obs_dim)).astype(np.float32)},
        "next_observations": {"state": r.normal(size=(n, obs_dim)).astype(np.float32)},
        "actions": r.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": r.uniform(size=n).astype(np.float32),
        "masks": r.uniform(size=n) > 0.3,
        "dones": np.zeros(n, bool),
        "interventions": np.zeros(n, bool),
    }


def make_agent(seed=0, **kw):
    obs = {"state": np.zeros(OBS_DIM, np.float32)}
    return SACAgent.create(jax.random.PRNGKey(seed), obs, np.zeros(ACT_DIM, np.float32), tiny_config(**kw))


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


# ------------------------------------------------------------------ pure losses


def test_td_target_matches_loop_with_subset_backup_and_clip():
    r = np.random.default_rng(1)
    m, b = 5, 6
    qs = r.normal(size=(m, b)).astype(np.float32) * 2
    rew = r.uniform(size=b).astype(np.float32)
    masks = np.array([1, 0, 1, 1, 0, 1], np.float32)
    logp = r.normal(size=b).astype(np.float32)
    alpha, gamma = 0.3, 0.9
    idx = np.array([3, 1])
    for backup in (False, True):
        for clip in (None, (0.0, 1.0)):
            ours = np.asarray(
                compute_td_target(
                    rew, masks, jnp.asarray(qs), gamma, next_log_probs=logp, temperature=alpha,
                    backup_entropy=backup, target_clip=clip, subset_indices=jnp.asarray(idx),
                )
            )
            for j in range(b):
                v = min(qs[i, j] for i in idx)
                if backup:
                    v = v - alpha * logp[j]
                y = rew[j] + gamma * masks[j] * v
                if clip is not None:
                    y = min(max(y, clip[0]), clip[1])
                assert ours[j] == pytest.approx(y, abs=1e-5)
    # no subset = min over all members
    ours = compute_td_target(rew, masks, jnp.asarray(qs), gamma)
    np.testing.assert_allclose(ours, rew + gamma * masks * qs.min(0), rtol=1e-6)
    # clip actually binds for this data
    clipped = compute_td_target(rew, masks, jnp.asarray(qs + 5), gamma, target_clip=(0.0, 1.0))
    assert float(jnp.max(clipped)) == 1.0 and float(jnp.min(clipped)) >= 0.0
    with pytest.raises(ValueError):
        compute_td_target(rew, masks, jnp.asarray(qs), gamma, backup_entropy=True)
    with pytest.raises(ValueError):
        compute_td_target(rew[:3], masks[:3], jnp.asarray(qs), gamma)


def test_temperature_loss_hand_value_and_gradient():
    log_alpha = jnp.float32(math.log(0.1))
    logp = jnp.array([-1.0, 0.5, 2.0])
    # entropy = -mean(logp) = -0.5; target -2 -> factor 1.5
    loss = temperature_loss(log_alpha, logp, -2.0)
    assert float(loss) == pytest.approx(math.log(0.1) * 1.5, rel=1e-6)
    g = jax.grad(temperature_loss)(log_alpha, logp, -2.0)
    assert float(g) == pytest.approx(1.5, rel=1e-6)


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_qs=2, num_min_qs=3),
        dict(critic_target_clip=(1.0, 0.0)),
        dict(discount=1.5),
        dict(std_min=10.0),
        dict(hidden_dims=()),
    ],
)
def test_bad_config_raises(kw):
    with pytest.raises(ValueError):
        make_agent(**kw)


def test_bad_examples_raise():
    c = tiny_config()
    with pytest.raises(ValueError):
        SACAgent.create(jax.random.PRNGKey(0), {"state": np.zeros(3, np.float32)}, np.zeros((1, 2), np.float32), c)
    with pytest.raises(TypeError):
        SACAgent.create(jax.random.PRNGKey(0), np.zeros(3, np.float32), np.zeros(2, np.float32), c)
    c.encoder.image_keys = ("pixels",)
    with pytest.raises(ValueError):
        SACAgent.create(jax.random.PRNGKey(0), {"state": np.zeros(3, np.float32)}, np.zeros(2, np.float32), c)


def test_default_config_values():
    c = get_default_config()
    assert c.discount == 0.97 and c.tau == 0.005 and c.num_qs == 2 and c.num_min_qs is None
    assert c.init_temperature == 1e-2 and c.critic_target_clip is None and c.backup_entropy is False
    assert c.encoder.type == "state" and c.encoder.crop_pad == 4
    agent = make_agent()
    assert agent.config.target_entropy == -ACT_DIM / 2
    assert agent.temp.params["log_temp"].dtype == jnp.float32
    assert float(agent.temperature) == pytest.approx(0.01, rel=1e-5)


# ------------------------------------------------------------------ agent behaviour


def test_update_smoke_no_recompile_and_params_change():
    agent = make_agent(critic_target_clip=(0.0, 1.0))
    before = {n: leaves(getattr(agent, n).params) for n in ("actor", "critic", "temp")}
    target_before = leaves(agent.target_critic_params)
    batch = state_batch(2 * 8)
    agent, info = agent.update(batch, utd_ratio=2)
    size = sac._update_jit._cache_size()
    for expected in ("critic_loss", "q_mean", "target_q_mean", "actor_loss", "entropy", "temperature", "temperature_loss"):
        assert expected in info and np.isfinite(float(info[expected])), expected
        assert np.shape(info[expected]) == ()
    assert 0.0 <= float(info["target_q_mean"]) <= 1.0  # clipped target
    for n in ("actor", "critic", "temp"):
        after = leaves(getattr(agent, n).params)
        assert any(not np.allclose(a, b) for a, b in zip(before[n], after)), n
    assert any(not np.allclose(a, b) for a, b in zip(target_before, leaves(agent.target_critic_params)))
    assert int(agent.critic.step) == 2 and int(agent.actor.step) == 1
    for seed in (1, 2):
        agent, info = agent.update(state_batch(2 * 8, seed=seed), utd_ratio=2)
        assert all(np.isfinite(float(v)) for v in info.values())
    assert sac._update_jit._cache_size() == size  # no recompilation on later calls
    assert int(agent.critic.step) == 6 and int(agent.actor.step) == 3


def test_update_critic_polyak_target():
    agent = make_agent(tau=0.1)
    old_target = leaves(agent.target_critic_params)
    new_agent, info = agent.update_critic(state_batch(8))
    assert np.isfinite(float(info["critic_loss"]))
    new_params = leaves(new_agent.critic.params)
    for t0, p1, t1 in zip(old_target, new_params, leaves(new_agent.target_critic_params)):
        np.testing.assert_allclose(t1, 0.1 * p1 + 0.9 * t0, rtol=1e-5, atol=1e-6)
    # the actor is untouched by a critic step
    for a, b in zip(leaves(agent.actor.params), leaves(new_agent.actor.params)):
        np.testing.assert_array_equal(a, b)


def test_critic_regresses_to_clipped_reward():
    """Terminal transitions with reward 1: Q(s, a) must move towards 1."""
    agent = make_agent(critic_lr=1e-2, critic_target_clip=(0.0, 1.0))
    batch = state_batch(16)
    batch["rewards"] = np.ones(16, np.float32)
    batch["masks"] = np.zeros(16, np.float32)
    first = None
    for _ in range(30):
        agent, info = agent.update(batch)
        first = float(info["critic_loss"]) if first is None else first
    assert float(info["critic_loss"]) < 0.1 * first
    assert float(info["q_mean"]) == pytest.approx(1.0, abs=0.1)


def test_rlpd_ensemble_subsample_and_donation():
    agent = make_agent(num_qs=4, num_min_qs=2)
    assert agent.nets.target_critic.num == 2 and agent.nets.critic.num == 4
    agent, info = agent.update(state_batch(8), utd_ratio=2, donate=True)
    agent, info = agent.update(state_batch(8, seed=3), utd_ratio=2, donate=True)
    assert np.isfinite(float(info["critic_loss"]))


def test_bad_batch_raises():
    agent = make_agent()
    b = state_batch(9)
    with pytest.raises(ValueError, match="multiple"):
        agent.update(b, utd_ratio=2)
    b = state_batch(8)
    del b["masks"]
    with pytest.raises(ValueError, match="masks"):
        agent.update(b)
    b = state_batch(8, obs_dim=4)
    with pytest.raises(ValueError, match="state"):
        agent.update(b)
    b = state_batch(8)
    b["actions"] = b["actions"][:, :2]
    with pytest.raises(ValueError, match="actions"):
        agent.update(b)


def test_sample_and_eval_actions():
    agent, _ = make_agent().update(state_batch(8))
    obs = {"state": np.random.default_rng(0).normal(size=OBS_DIM).astype(np.float32)}
    a1 = agent.sample_actions(obs, jax.random.PRNGKey(1))
    a2 = agent.sample_actions(obs, jax.random.PRNGKey(2))
    assert a1.shape == (ACT_DIM,) and np.all(np.abs(a1) <= 1)
    assert not np.allclose(a1, a2)
    e1, e2 = agent.eval_actions(obs), agent.eval_actions(obs)
    np.testing.assert_array_equal(e1, e2)
    assert e1.shape == (ACT_DIM,) and np.all(np.abs(e1) <= 1)
    batched = {"state": np.stack([obs["state"]] * 4)}
    eb = agent.eval_actions(batched)
    assert eb.shape == (4, ACT_DIM)
    np.testing.assert_allclose(eb[0], e1, rtol=1e-5, atol=1e-6)
    sb = agent.sample_actions(batched, jax.random.PRNGKey(3))
    assert sb.shape == (4, ACT_DIM) and np.all(np.abs(sb) <= 1)
    with pytest.raises(ValueError):
        agent.eval_actions({"state": np.zeros(OBS_DIM + 1, np.float32)})
    with pytest.raises(ValueError):
        agent.eval_actions({"other": np.zeros(OBS_DIM, np.float32)})


def test_policy_params_round_trip_and_rejection():
    trained, _ = make_agent(seed=0).update(state_batch(8))
    params = trained.policy_params()
    assert set(params) == {"actor", "encoder"}
    assert all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(params))
    blob = flax.serialization.msgpack_serialize(params)
    restored = flax.serialization.msgpack_restore(blob)
    fresh = make_agent(seed=5)
    obs = {"state": np.ones(OBS_DIM, np.float32)}
    assert not np.allclose(fresh.eval_actions(obs), trained.eval_actions(obs))
    loaded = fresh.load_policy_params(restored)
    np.testing.assert_allclose(loaded.eval_actions(obs), trained.eval_actions(obs), rtol=1e-6)

    bad = flax.serialization.msgpack_restore(blob)
    bad["actor"]["Dense_0"]["kernel"] = np.zeros((8, 4), np.float32)
    with pytest.raises(ValueError, match="actor/Dense_0/kernel"):
        fresh.load_policy_params(bad)
    bad = flax.serialization.msgpack_restore(blob)
    bad["actor"]["Dense_0"]["bias"] = bad["actor"]["Dense_0"]["bias"].astype(np.float64)
    with pytest.raises(ValueError, match="dtype"):
        fresh.load_policy_params(bad)
    bad = flax.serialization.msgpack_restore(blob)
    del bad["actor"]["Dense_1"]
    with pytest.raises(ValueError, match="Dense_1"):
        fresh.load_policy_params(bad)


# ------------------------------------------------------------------ images


def image_setup(tmp_path=None, pretrained=False, etype="small_cnn"):
    c = tiny_config()
    c.encoder.type = etype
    c.encoder.image_keys = ("pixels",)
    c.encoder.latent_dim = 8
    c.encoder.widths = (4, 4, 8, 8) if etype == "resnet10" else (4, 8)
    c.encoder.num_spatial_features = 2
    obs = {"state": np.zeros(4, np.float32), "pixels": np.zeros((32, 32, 3), np.uint8)}
    if pretrained:
        net = ResNet10(widths=(4, 4, 8, 8)) if etype == "resnet10" else SmallCNN(features=(4, 8), strides=(2, 2))
        backbone = net.init(jax.random.PRNGKey(42), jnp.ones((1, 32, 32, 3)))["params"]
        path = str(tmp_path / "backbone.msgpack")
        save_params(path, backbone)
        c.encoder.pretrained_path = path
        return c, obs, backbone
    return c, obs, None


def test_image_agent_update_trains_encoder(tmp_path):
    c, obs, _ = image_setup()
    agent = SACAgent.create(jax.random.PRNGKey(0), obs, np.zeros(2, np.float32), c)
    r = np.random.default_rng(0)
    n = 8
    batch = {
        "observations": {"state": r.normal(size=(n, 4)).astype(np.float32), "pixels": r.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)},
        "next_observations": {"state": r.normal(size=(n, 4)).astype(np.float32), "pixels": r.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)},
        "actions": r.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": np.ones(n, np.float32),
        "masks": np.ones(n, np.float32),
    }
    enc_before = leaves(agent.critic.params["encoder"])
    new, info = agent.update(batch, utd_ratio=2)
    assert all(np.isfinite(float(v)) for v in info.values())
    assert any(not np.allclose(a, b) for a, b in zip(enc_before, leaves(new.critic.params["encoder"])))
    a = new.sample_actions({"state": obs["state"], "pixels": batch["observations"]["pixels"][0]}, jax.random.PRNGKey(0))
    assert a.shape == (2,) and np.all(np.abs(a) <= 1)
    params = new.policy_params()
    assert "image_pixels" in params["encoder"]
    with pytest.raises(ValueError, match="pixels"):
        new.update(dict(batch, observations=dict(batch["observations"], pixels=batch["observations"]["pixels"].astype(np.float32))))


@pytest.mark.parametrize("etype", ["small_cnn"])  # ResNet10 file round trip: test_networks
def test_pretrained_backbone_loaded(tmp_path, etype):
    c, obs, backbone = image_setup(tmp_path, pretrained=True, etype=etype)
    agent = SACAgent.create(jax.random.PRNGKey(0), obs, np.zeros(2, np.float32), c)
    loaded = agent.critic.params["encoder"]["image_pixels"]["backbone"]
    for a, b in zip(leaves(backbone), leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    c.encoder.widths = (4, 16) if etype == "small_cnn" else (4, 4, 8, 16)  # file no longer matches
    with pytest.raises(ValueError, match="pretrained_encoder"):
        SACAgent.create(jax.random.PRNGKey(0), obs, np.zeros(2, np.float32), c)
    c.encoder.pretrained_path = str(tmp_path / "nope.msgpack")
    with pytest.raises(FileNotFoundError):
        SACAgent.create(jax.random.PRNGKey(0), obs, np.zeros(2, np.float32), c)
