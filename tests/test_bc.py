"""Tests for serl_ext.agents.bc: loss values, learning on a fixed dataset, API."""

import math

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from serl_ext.agents.bc import BCAgent, bc_loss, get_default_config

OBS_DIM, ACT_DIM = 4, 2


def tiny_config(**kw):
    c = get_default_config()
    c.hidden_dims = (16, 16)
    for k, v in kw.items():
        c[k] = v
    return c


def dataset(n=32, seed=0):
    r = np.random.default_rng(seed)
    obs = r.normal(size=(n, OBS_DIM)).astype(np.float32)
    w = r.normal(size=(OBS_DIM, ACT_DIM)).astype(np.float32)
    actions = np.tanh(obs @ w * 0.5).astype(np.float32)  # a learnable target in (-1, 1)
    return {"observations": {"state": obs}, "actions": actions}


def make_agent(seed=0, **kw):
    return BCAgent.create(
        jax.random.PRNGKey(seed), {"state": np.zeros(OBS_DIM, np.float32)}, np.zeros(ACT_DIM, np.float32), tiny_config(**kw)
    )


def test_bc_loss_reference_values():
    mean = jnp.array([[0.2, -0.4]])
    log_std = jnp.array([[math.log(0.5), math.log(2.0)]])
    a = jnp.array([[0.3, -0.6]])
    x = np.arctanh(np.array([0.3, -0.6]))
    std = np.array([0.5, 2.0])
    logp = np.sum(
        -0.5 * ((x - np.array([0.2, -0.4])) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
        - np.log(1 - np.array([0.3, -0.6]) ** 2)
    )
    assert float(bc_loss(mean, log_std, a, "nll")) == pytest.approx(-logp, rel=1e-5)
    mse = (np.tanh(0.2) - 0.3) ** 2 + (np.tanh(-0.4) + 0.6) ** 2
    assert float(bc_loss(mean, log_std, a, "mse")) == pytest.approx(mse, rel=1e-5)
    with pytest.raises(ValueError):
        bc_loss(mean, log_std, a, "l1")


@pytest.mark.parametrize("loss", ["nll", "mse"])
def test_bc_loss_decreases_on_fixed_dataset(loss):
    agent = make_agent(loss=loss, actor_lr=3e-3)
    data = dataset()
    agent, info0 = agent.update(data)
    mse0 = float(info0["action_mse"])
    losses = [float(info0["bc_loss"])]
    for _ in range(15):
        agent, info = agent.update(data, utd_ratio=4)  # 4 steps on 4 minibatches per call
        losses.append(float(info["bc_loss"]))
    # nll: ~4.9 -> ~0.0, mse: ~1.5 -> ~0.05 with this seed; demand a large, steady drop
    assert losses[-1] < losses[0] - 1.0
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert float(info["action_mse"]) < 0.5 * mse0
    pred = agent.eval_actions(data["observations"])
    assert pred.shape == (32, ACT_DIM)
    assert float(jnp.mean(jnp.sum((pred - data["actions"]) ** 2, -1))) < 0.5 * mse0


def test_bc_api_and_policy_params():
    agent, _ = make_agent().update(dataset())
    obs = {"state": np.ones(OBS_DIM, np.float32)}
    a = agent.sample_actions(obs, jax.random.PRNGKey(0))
    assert a.shape == (ACT_DIM,) and np.all(np.abs(a) <= 1)
    params = agent.policy_params()
    assert set(params) == {"actor", "encoder"}  # same layout as SAC
    restored = flax.serialization.msgpack_restore(flax.serialization.msgpack_serialize(params))
    other = make_agent(seed=9).load_policy_params(restored)
    np.testing.assert_allclose(other.eval_actions(obs), agent.eval_actions(obs), rtol=1e-6)
    restored["actor"]["Dense_0"]["kernel"] = restored["actor"]["Dense_0"]["kernel"][:, :1]
    with pytest.raises(ValueError, match="Dense_0/kernel"):
        other.load_policy_params(restored)
    with pytest.raises(ValueError):
        agent.update(dataset(n=30), utd_ratio=4)
    with pytest.raises(ValueError):
        agent.update({"observations": {"state": np.zeros((4, OBS_DIM), np.float32)}})
    with pytest.raises(ValueError):
        make_agent(loss="l1")


def test_bc_image_smoke():
    c = tiny_config()
    c.encoder.type = "small_cnn"
    c.encoder.image_keys = ("pixels",)
    c.encoder.widths = (4, 4)
    c.encoder.latent_dim = 8
    c.encoder.num_spatial_features = 2
    obs = {"state": np.zeros(OBS_DIM, np.float32), "pixels": np.zeros((32, 32, 3), np.uint8)}
    agent = BCAgent.create(jax.random.PRNGKey(0), obs, np.zeros(ACT_DIM, np.float32), c)
    r = np.random.default_rng(0)
    batch = {
        "observations": {"state": r.normal(size=(8, OBS_DIM)).astype(np.float32), "pixels": r.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)},
        "actions": r.uniform(-0.9, 0.9, (8, ACT_DIM)).astype(np.float32),
    }
    before = [np.asarray(x) for x in jax.tree_util.tree_leaves(agent.actor.params["encoder"])]
    agent, info = agent.update(batch, utd_ratio=2)
    assert np.isfinite(float(info["bc_loss"]))
    after = [np.asarray(x) for x in jax.tree_util.tree_leaves(agent.actor.params["encoder"])]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))  # BC trains its encoder


def test_bc_accepts_sac_config():
    from serl_ext.agents.sac import get_default_config as sac_config

    c = sac_config()
    c.hidden_dims = (8,)
    c.actor_lr = 1e-3
    agent = BCAgent.create(jax.random.PRNGKey(0), {"state": np.zeros(OBS_DIM, np.float32)}, np.zeros(ACT_DIM, np.float32), c)
    assert agent.config.hidden_dims == (8,) and agent.config.actor_lr == 1e-3 and agent.config.loss == "nll"
    assert "critic_lr" not in agent.config
    with pytest.raises(TypeError):
        BCAgent.create(jax.random.PRNGKey(0), {"state": np.zeros(OBS_DIM, np.float32)}, np.zeros(ACT_DIM, np.float32), {"loss": "nll"})
