"""Tests for serl_ext.agents.sac_hybrid: double-DQN gripper target and the hybrid agent."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from serl_ext.agents import sac
from serl_ext.agents.sac_hybrid import (
    SACHybridAgent,
    compute_grasp_target,
    get_default_config,
    gripper_to_index,
    index_to_gripper,
)

OBS_DIM, ACT_DIM = 5, 4


def tiny_config(**kw):
    c = get_default_config()
    c.hidden_dims = (8, 8)
    for k, v in kw.items():
        c[k] = v
    return c


def make_agent(seed=0, **kw):
    obs = {"state": np.zeros(OBS_DIM, np.float32)}
    return SACHybridAgent.create(jax.random.PRNGKey(seed), obs, np.zeros(ACT_DIM, np.float32), tiny_config(**kw))


def hybrid_batch(n, seed=0, penalty=True):
    r = np.random.default_rng(seed)
    actions = r.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32)
    actions[:, -1] = r.integers(-1, 2, size=n)
    b = {
        "observations": {"state": r.normal(size=(n, OBS_DIM)).astype(np.float32)},
        "next_observations": {"state": r.normal(size=(n, OBS_DIM)).astype(np.float32)},
        "actions": actions,
        "rewards": r.uniform(size=n).astype(np.float32),
        "masks": np.ones(n, np.float32),
    }
    if penalty:
        b["grasp_penalty"] = np.where(r.uniform(size=n) > 0.5, -0.02, 0.0).astype(np.float32)
    return b


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_gripper_index_mapping():
    np.testing.assert_array_equal(gripper_to_index(jnp.array([-1.0, 0.0, 1.0, 0.9999, -0.2])), [0, 1, 2, 2, 1])
    np.testing.assert_array_equal(index_to_gripper(jnp.array([0, 1, 2])), [-1.0, 0.0, 1.0])


def test_grasp_target_matches_loop():
    r = np.random.default_rng(0)
    g, b, k = 2, 7, 3
    online = r.normal(size=(g, b, k)).astype(np.float32)
    target = r.normal(size=(g, b, k)).astype(np.float32)
    rew = r.uniform(size=b).astype(np.float32)
    pen = np.where(r.uniform(size=b) > 0.5, -0.02, 0.0).astype(np.float32)
    masks = np.array([1, 1, 0, 1, 0, 1, 1], np.float32)
    gamma = 0.97
    ours = np.asarray(compute_grasp_target(rew, pen, masks, jnp.asarray(online), jnp.asarray(target), gamma))
    for j in range(b):
        mean_online = [sum(online[i, j, a] for i in range(g)) / g for a in range(k)]
        best = int(np.argmax(mean_online))
        nxt = min(target[i, j, best] for i in range(g))
        assert ours[j] == pytest.approx(rew[j] + pen[j] + gamma * masks[j] * nxt, abs=1e-5)
    clipped = compute_grasp_target(rew, pen, masks, jnp.asarray(online), jnp.asarray(target + 10), gamma, (0.0, 1.0))
    assert float(clipped.max()) <= 1.0 and float(clipped.min()) >= 0.0
    with pytest.raises(ValueError):
        compute_grasp_target(rew, pen, masks, jnp.asarray(online), jnp.asarray(target[:1]), gamma)


def test_hybrid_update_and_actions():
    agent = make_agent()
    assert agent.config.target_entropy == -(ACT_DIM - 1) / 2
    grasp_before = leaves(agent.critic.params["grasp_critic"])
    agent, info = agent.update(hybrid_batch(16), utd_ratio=2)
    for key in ("critic_loss", "grasp_critic_loss", "grasp_q_mean", "actor_loss", "temperature"):
        assert np.isfinite(float(info[key])), key
    assert any(not np.allclose(a, b) for a, b in zip(grasp_before, leaves(agent.critic.params["grasp_critic"])))
    size = sac._update_jit._cache_size()
    agent, info = agent.update(hybrid_batch(16, seed=1, penalty=False), utd_ratio=2)  # penalty optional
    assert np.isfinite(float(info["grasp_critic_loss"]))
    assert sac._update_jit._cache_size() == size  # missing penalty = zeros, same compiled update
    obs = {"state": np.ones(OBS_DIM, np.float32)}
    a = agent.sample_actions(obs, jax.random.PRNGKey(0))
    e = agent.eval_actions(obs)
    assert a.shape == (ACT_DIM,) and e.shape == (ACT_DIM,)
    assert np.all(np.abs(a) <= 1) and np.all(np.abs(e) <= 1)
    assert a[-1] in (-1.0, 0.0, 1.0) and e[-1] == a[-1]  # greedy gripper either way
    eb = agent.eval_actions({"state": np.ones((3, OBS_DIM), np.float32)})
    assert eb.shape == (3, ACT_DIM)


def test_grasp_penalty_enters_target():
    agent = make_agent()
    b = hybrid_batch(8, penalty=False)
    _, info0 = agent.update_critic(b)
    b["grasp_penalty"] = np.full(8, -0.5, np.float32)
    _, info1 = agent.update_critic(b)
    # same rng, params and data: only the penalty differs
    assert float(info1["grasp_target_mean"]) == pytest.approx(float(info0["grasp_target_mean"]) - 0.5, abs=1e-5)
    assert float(info1["target_q_mean"]) == pytest.approx(float(info0["target_q_mean"]), abs=1e-6)


def test_grasp_critic_learns_best_gripper_command():
    """One-step task: reward 1 only for gripper command +1 -> greedy gripper becomes +1."""
    agent = make_agent(critic_lr=1e-2)
    n = 48
    obs = {"state": np.tile(np.ones(OBS_DIM, np.float32), (n, 1))}
    actions = np.zeros((n, ACT_DIM), np.float32)
    actions[:, -1] = np.tile([-1.0, 0.0, 1.0], n // 3)
    batch = {
        "observations": obs,
        "next_observations": obs,
        "actions": actions,
        "rewards": (actions[:, -1] == 1.0).astype(np.float32),
        "masks": np.zeros(n, np.float32),
    }
    for _ in range(20):
        agent, info = agent.update(batch, utd_ratio=4)
    assert agent.eval_actions({"state": np.ones(OBS_DIM, np.float32)})[-1] == 1.0
    assert float(info["grasp_critic_loss"]) < 0.05


def test_hybrid_policy_params_round_trip():
    trained, _ = make_agent(seed=0).update(hybrid_batch(8))
    params = trained.policy_params()
    assert set(params) == {"actor", "encoder", "grasp_critic"}
    restored = flax.serialization.msgpack_restore(flax.serialization.msgpack_serialize(params))
    loaded = make_agent(seed=3).load_policy_params(restored)
    obs = {"state": np.full(OBS_DIM, 0.3, np.float32)}
    np.testing.assert_allclose(loaded.eval_actions(obs), trained.eval_actions(obs), rtol=1e-6)
    restored["grasp_critic"]["VmapDiscreteCritic_0"] = {}
    with pytest.raises(ValueError, match="grasp_critic"):
        loaded.load_policy_params(restored)


def test_hybrid_rejects_bad_setup():
    obs = {"state": np.zeros(OBS_DIM, np.float32)}
    with pytest.raises(ValueError):
        SACHybridAgent.create(jax.random.PRNGKey(0), obs, np.zeros(1, np.float32), tiny_config())
    with pytest.raises(ValueError):
        SACHybridAgent.create(jax.random.PRNGKey(0), obs, np.zeros(4, np.float32), tiny_config(grasp_num_qs=0))
    agent = make_agent()
    b = hybrid_batch(8)
    b["grasp_penalty"] = np.zeros((8, 1), np.float32)
    with pytest.raises(ValueError, match="grasp_penalty"):
        agent.update(b)


def test_hybrid_accepts_plain_sac_config():
    from serl_ext.agents.sac import get_default_config as sac_config

    c = sac_config()
    c.hidden_dims = (8, 8)
    c.critic_target_clip = (0.0, 1.0)
    agent = SACHybridAgent.create(jax.random.PRNGKey(0), {"state": np.zeros(OBS_DIM, np.float32)}, np.zeros(ACT_DIM, np.float32), c)
    assert agent.config.grasp_num_qs == get_default_config().grasp_num_qs
    assert agent.config.critic_target_clip == (0.0, 1.0) and agent.config.hidden_dims == (8, 8)


def _constant_grasp_heads(params, biases):
    """Gripper-critic params whose heads output ``biases[g]`` (3,) whatever the input."""
    out = jax.tree_util.tree_map(lambda x: x, params)  # copy of the nested dicts
    head = dict(out["VmapDiscreteCritic_0"]["Dense_0"])
    head["kernel"] = jnp.zeros_like(head["kernel"])
    head["bias"] = jnp.asarray(biases, jnp.float32)
    out["VmapDiscreteCritic_0"] = dict(out["VmapDiscreteCritic_0"], Dense_0=head)
    return out


def test_grasp_critic_target_is_reward_plus_penalty_hand_computed():
    """Double-DQN gripper target and loss of a real update on a 2-row batch, by hand:
    y = r + grasp_penalty + gamma * mask * min_g Q'_g(s', argmax_k mean_g Q_g(s', k))."""
    agent = make_agent(grasp_num_qs=2, discount=0.97)
    online = [[0.1, 0.5, 0.2], [0.3, 0.1, 0.2]]  # mean [0.2, 0.3, 0.2]: k* = 1 (stay)
    target = [[9.0, 0.4, 9.0], [9.0, 0.6, 9.0]]  # min over heads at k*: 0.4 (9 if k* were wrong)
    critic_params = dict(agent.critic.params,
                         grasp_critic=_constant_grasp_heads(agent.critic.params["grasp_critic"], online))
    target_params = dict(agent.target_critic_params,
                         grasp_critic=_constant_grasp_heads(agent.target_critic_params["grasp_critic"], target))
    agent = agent.replace(critic=agent.critic.replace(params=critic_params), target_critic_params=target_params)
    r = np.random.default_rng(0)
    batch = {
        "observations": {"state": r.normal(size=(2, OBS_DIM)).astype(np.float32)},
        "next_observations": {"state": r.normal(size=(2, OBS_DIM)).astype(np.float32)},
        "actions": np.array([[0.1, 0.2, 0.3, 1.0], [0.0, 0.0, 0.0, -1.0]], np.float32),  # k = 2, 0
        "rewards": np.array([1.0, 0.0], np.float32),
        "masks": np.array([1.0, 0.0], np.float32),
        "grasp_penalty": np.array([-0.02, -0.02], np.float32),
    }
    y = np.array([1.0 - 0.02 + 0.97 * 0.4, 0.0 - 0.02])  # [1.368, -0.02]
    taken = np.array([[online[0][2], online[0][0]], [online[1][2], online[1][0]]])  # (G, B)
    _, info = agent.update_critic(batch)
    assert float(info["grasp_target_mean"]) == pytest.approx(y.mean(), abs=1e-6)
    assert float(info["grasp_q_mean"]) == pytest.approx(taken.mean(), abs=1e-6)
    assert float(info["grasp_critic_loss"]) == pytest.approx(np.mean((taken - y[None]) ** 2), abs=1e-6)
    # Without the key the penalty is 0: the same target minus the penalty.
    _, info0 = agent.update_critic({k: v for k, v in batch.items() if k != "grasp_penalty"})
    assert float(info0["grasp_target_mean"]) == pytest.approx((y + 0.02).mean(), abs=1e-6)
    assert float(info0["grasp_critic_loss"]) == pytest.approx(np.mean((taken - (y + 0.02)[None]) ** 2), abs=1e-6)
