"""HiL-SERL fidelity options of serl_ext/agents/sac.py: ``update_order``, ``idle_adam_steps``,
``temperature_parameterization`` and the empty-tuple ``critic_target_clip``.

Each option is checked against an unjitted reference written here from the formulas (the keys
are drawn in the order the agent documents); the default path against numbers computed on the
code before the options existed.
"""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from serl_ext.agents import sac, sac_hybrid
from serl_ext.agents.sac import SACAgent, get_default_config, inverse_softplus, softplus_temperature_loss
from serl_ext.networks.heads import tanh_gaussian_sample

OBS_DIM, ACT_DIM = 5, 3
B1, B2, EPS = 0.9, 0.999, 1e-8  # optax.adam defaults (serl_ext.agents.common.make_train_state)


def config(**kw):
    c = get_default_config()
    c.hidden_dims = (8, 8)
    for k, v in kw.items():
        c[k] = v
    return c


def make_agent(seed=0, **kw):
    obs = {"state": np.zeros(OBS_DIM, np.float32)}
    return SACAgent.create(jax.random.PRNGKey(seed), obs, np.zeros(ACT_DIM, np.float32), config(**kw))


def batch(n, seed, act_dim=ACT_DIM, hybrid=False):
    r = np.random.default_rng(seed)
    b = {
        "observations": {"state": r.normal(size=(n, OBS_DIM)).astype(np.float32)},
        "next_observations": {"state": r.normal(size=(n, OBS_DIM)).astype(np.float32)},
        "actions": r.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": r.uniform(size=n).astype(np.float32),
        "masks": (r.uniform(size=n) > 0.3).astype(np.float32),
    }
    if hybrid:
        b["actions"][:, -1] = np.round(b["actions"][:, -1])
    return b


@jax.jit
def critic_step(agent, mb):
    """The agent's own critic step (the part the options leave alone), jitted for speed."""
    return agent._critic_step(mb)


def minibatch(b, i, size):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x[i * size:(i + 1) * size]), b)


def adam_grad(train_state):
    """The gradient of a TrainState's first Adam step: mu = (1 - b1) g."""
    assert int(train_state.opt_state[0].count) == 1
    return jax.tree_util.tree_map(lambda m: np.asarray(m) / (1 - B1), train_state.opt_state[0].mu)


@jax.jit
def ref_actor_grad(agent, critic_params, alpha, feats, key):
    """d/d actor params of mean(alpha log pi(a|s) - mean_i Q_i(s, a)), a ~ pi reparameterised."""
    def loss(p):
        mean, log_std = agent.nets.actor.apply({"params": p}, feats)
        a, logp = tanh_gaussian_sample(key, mean, log_std)
        q = agent.nets.critic.apply({"params": critic_params["critic"]}, feats, a).mean(axis=0)
        return jnp.mean(alpha * logp - q), logp

    return jax.grad(loss, has_aux=True)(agent.actor.params)


def entropy_at(agent, actor_params, obs, key):
    mean, log_std = agent.nets.actor.apply({"params": actor_params}, obs["state"])
    return float(-jnp.mean(tanh_gaussian_sample(key, mean, log_std)[1]))


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])


# ------------------------------------------------------------------ defaults: unchanged

# Computed on the code before these options (commit d6f9887): 3 updates (utd 2, 6 per
# minibatch) + 1 update_critic of the (8, 8) agents below; per tree (sum, sum of |x|) over all
# leaves in float64, and the last update's info. On that machine the parameters after the
# change were bit for bit the same (sha256 of all leaves).
OLD = {
    "sac": {
        "actor": (15.712333476662025, 68.15018391526428),
        "critic": (33.923294809355866, 115.67732402897673),
        "target": (33.91566304347418, 115.5833372170506),
        "temp": (-4.605220317840576, 4.605220317840576),
        "actor_opt": (2.9533930540614395, 4.054462825717042),
        "temp_opt": (3.2183661197777838, 3.2183661197777838),
        "info": {"actor_loss": 0.7919114828109741, "critic_loss": 1.5644292831420898, "entropy": 0.019505184143781662, "q_mean": -0.7838883399963379, "rewards_mean": 0.6012058258056641, "target_q_mean": -0.6058065891265869, "temperature": 0.0100016538053751, "temperature_loss": -6.997329235076904, "critic_only_critic_loss": 1.3321017026901245, "critic_only_q_mean": -1.342717170715332, "critic_only_rewards_mean": 0.34965452551841736, "critic_only_target_q_mean": -0.8219888210296631},  # noqa: E501
    },
    "sac_clip": {
        "actor": (15.713107122493966, 68.15144715891802),
        "critic": (33.936018173219054, 115.69741895256448),
        "target": (33.915984446478205, 115.58367835693912),
        "temp": (-4.605220317840576, 4.605220317840576),
        "actor_opt": (2.9661505972121773, 3.9427152926814557),
        "temp_opt": (3.2183625733014196, 3.2183625733014196),
        "info": {"actor_loss": 0.7706815600395203, "critic_loss": 1.6321693658828735, "entropy": 0.019470851868391037, "q_mean": -0.7675997018814087, "rewards_mean": 0.6012058258056641, "target_q_mean": 0.15903866291046143, "temperature": 0.0100016538053751, "temperature_loss": -6.997170925140381, "critic_only_critic_loss": 2.118891477584839, "critic_only_q_mean": -1.3282063007354736, "critic_only_rewards_mean": 0.34965452551841736, "critic_only_target_q_mean": 0.03955277055501938},  # noqa: E501
    },
    "hybrid": {
        "actor": (15.713136870235758, 68.1514818018295),
        "critic": (70.78158774702388, 228.1210575804762),
        "target": (70.7062029250343, 227.94449417926802),
        "temp": (-4.605220317840576, 4.605220317840576),
        "actor_opt": (2.966137058262394, 3.9359727287972426),
        "temp_opt": (3.2183609150815755, 3.2183609150815755),
        "info": {"actor_loss": 0.779707670211792, "critic_loss": 1.308356523513794, "entropy": 0.01945488713681698, "grasp_critic_loss": 1.6047189235687256, "grasp_q_mean": 0.11840048432350159, "grasp_target_mean": 0.723716676235199, "q_mean": -0.8100425004959106, "rewards_mean": 0.5796061158180237, "target_q_mean": -0.14768411219120026, "temperature": 0.0100016538053751, "temperature_loss": -6.997096538543701, "critic_only_critic_loss": 1.4276970624923706, "critic_only_grasp_critic_loss": 2.3566172122955322, "critic_only_grasp_q_mean": -0.4510447382926941, "critic_only_grasp_target_mean": 0.693596601486206, "critic_only_q_mean": -1.2589267492294312, "critic_only_rewards_mean": 0.4376794695854187, "critic_only_target_q_mean": -0.7308276891708374},  # noqa: E501
    },
}


@pytest.mark.parametrize("kind", sorted(OLD))
def test_default_update_matches_the_code_before_the_options(kind):
    obs = {"state": np.zeros(OBS_DIM, np.float32)}
    if kind == "hybrid":
        c = sac_hybrid.get_default_config()
        c.hidden_dims = (8, 8)
        agent = sac_hybrid.SACHybridAgent.create(jax.random.PRNGKey(0), obs, np.zeros(ACT_DIM + 1, np.float32), c)
        act_dim = ACT_DIM + 1
    else:
        agent = make_agent(**({"critic_target_clip": (0.0, 1.0)} if kind == "sac_clip" else {}))
        act_dim = ACT_DIM
    assert agent.config.update_order == "sac" and agent.config.temperature_parameterization == "exp"
    assert agent.config.idle_adam_steps is False
    for i in range(3):
        agent, info = agent.update(batch(12, i, act_dim, kind == "hybrid"), utd_ratio=2)
    agent, info2 = agent.update_critic(batch(6, 10, act_dim, kind == "hybrid"))
    info = {k: float(v) for k, v in info.items()}
    info.update({"critic_only_" + k: float(v) for k, v in info2.items()})
    trees = {"actor": agent.actor.params, "critic": agent.critic.params, "target": agent.target_critic_params,
             "temp": agent.temp.params, "actor_opt": agent.actor.opt_state, "temp_opt": agent.temp.opt_state}
    for name, tree in trees.items():
        leaves = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]
        total, total_abs = sum(float(x.sum()) for x in leaves), sum(float(np.abs(x).sum()) for x in leaves)
        assert total == pytest.approx(OLD[kind][name][0], rel=1e-5, abs=1e-6), name
        assert total_abs == pytest.approx(OLD[kind][name][1], rel=1e-5, abs=1e-6), name
    assert set(info) == set(OLD[kind]["info"])
    for k, v in OLD[kind]["info"].items():
        assert info[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


# ------------------------------------------------------------------ update_order="upstream"


def test_upstream_order_full_step_uses_pre_update_parameters():
    """utd 2: one critic-only step on minibatch 0, then on minibatch 1 the critic, actor and
    temperature gradients at the parameters after that first step (not after the second critic
    step), applied together."""
    size = 6
    agent0 = make_agent(update_order="upstream", critic_lr=0.5)  # a big critic step, so it shows
    b = batch(2 * size, 3)
    new, info = agent0.update(b, utd_ratio=2)

    a1, _ = critic_step(agent0, minibatch(b, 0, size))  # the critic-only step
    _, k_critic, k_actor, _ = jax.random.split(a1.rng, 4)
    last = minibatch(b, 1, size)
    feats = last["observations"]["state"]  # the state encoder has no parameters
    g_pre, logp = ref_actor_grad(a1, a1.critic.params, a1.temperature, feats, k_actor)
    a2, _ = critic_step(a1, last)  # what the "sac" order would have used
    g_post, _ = ref_actor_grad(a1, a2.critic.params, a1.temperature, feats, k_actor)

    g_used = adam_grad(new.actor)
    np.testing.assert_allclose(flat(g_used), flat(g_pre), rtol=1e-4, atol=1e-6)
    assert not np.allclose(flat(g_used), flat(g_post), rtol=1e-3, atol=1e-5)
    # temperature ("exp"): d/d log_alpha = entropy - target, entropy of the actor loss's samples
    t_grad = float(new.temp.opt_state[0].mu["log_temp"]) / (1 - B1)
    assert t_grad == pytest.approx(float(-jnp.mean(logp)) - agent0.config.target_entropy, rel=1e-5)
    assert float(info["entropy"]) == pytest.approx(float(-jnp.mean(logp)), rel=1e-5)
    # the critic: two Adam steps; its second gradient is at a1's critic params, like the "sac" order
    c_grad, _ = jax.jit(lambda a: jax.grad(a._critic_loss, has_aux=True)(a.critic.params, last, k_critic))(a1)
    mu = jax.tree_util.tree_map(lambda m1, g: B1 * m1 + (1 - B1) * g, a1.critic.opt_state[0].mu, c_grad)
    np.testing.assert_allclose(flat(new.critic.opt_state[0].mu), flat(mu), rtol=1e-4, atol=1e-7)
    assert int(new.actor.step) == 1 and int(new.critic.step) == 2 and int(new.temp.step) == 1


def test_upstream_order_utd1_is_one_full_step_and_jitted_equals_unjitted():
    agent = make_agent(update_order="upstream")
    keys = {"critic_loss", "q_mean", "target_q_mean", "rewards_mean", "actor_loss", "entropy", "temperature",
            "temperature_loss"}
    for utd in (1, 3):
        b = batch(6 * utd, 4 + utd)
        jitted, info = agent.update(b, utd_ratio=utd)
        assert set(info) == keys and int(jitted.critic.step) == utd and int(jitted.actor.step) == 1
    plain, info_p = sac._update_impl(agent, agent._check_batch(b, 3), 3)  # not jitted
    np.testing.assert_allclose(flat(jitted.actor.params), flat(plain.actor.params), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat(jitted.critic.params), flat(plain.critic.params), rtol=1e-5, atol=1e-6)
    assert set(info_p) == keys
    size = sac._update_jit._cache_size()
    agent2, _ = agent.update(b, utd_ratio=3)
    agent2.update(batch(18, 6), utd_ratio=3)
    assert sac._update_jit._cache_size() == size  # no recompilation


def test_idle_adam_steps_move_the_actor_by_momentum_only():
    agent = make_agent(update_order="upstream", idle_adam_steps=True)
    agent, _ = agent.update(batch(18, 7), utd_ratio=3)
    # 2 idle steps (zero gradient, zero moments: no move) + 1 real one
    assert int(agent.actor.opt_state[0].count) == 3 and int(agent.temp.opt_state[0].count) == 3
    mb = minibatch(batch(6, 8), 0, 6)
    moved, _ = jax.jit(lambda a, m: a._critic_only_step(m))(agent, mb)
    count = 4
    lr = 3e-4
    for ts, new_ts in ((agent.actor, moved.actor), (agent.temp, moved.temp)):
        st = ts.opt_state[0]  # Adam with g = 0: mu <- b1 mu, nu <- b2 nu, bias-corrected step
        want = jax.tree_util.tree_map(
            lambda p, m, v: np.asarray(p, np.float64) - lr * (B1 * np.asarray(m, np.float64) / (1 - B1 ** count))
            / (np.sqrt(B2 * np.asarray(v, np.float64) / (1 - B2 ** count)) + EPS),
            ts.params, st.mu, st.nu,
        )
        np.testing.assert_allclose(flat(new_ts.params), flat(want), rtol=1e-5, atol=1e-8)
        assert not np.allclose(flat(new_ts.params), flat(ts.params), rtol=0, atol=1e-6)
    plain, _ = critic_step(agent, mb)  # the critic side is the ordinary critic step
    np.testing.assert_array_equal(flat(moved.critic.params), flat(plain.critic.params))
    no_idle, _ = make_agent(update_order="upstream").update(batch(18, 7), utd_ratio=3)
    assert int(no_idle.actor.opt_state[0].count) == 1
    still, _ = jax.jit(lambda a, m: a._critic_only_step(m))(no_idle, mb)
    np.testing.assert_array_equal(flat(still.actor.params), flat(no_idle.actor.params))
    np.testing.assert_array_equal(flat(still.temp.params), flat(no_idle.temp.params))


# ------------------------------------------------------------------ temperature "softplus"


def test_softplus_loss_value_and_gradient_by_hand():
    for x, h, t in ((-4.6, 0.3, -1.5), (0.7, -2.0, -1.5), (2.0, -1.5, -1.5)):
        sp = math.log1p(math.exp(x))
        loss = float(softplus_temperature_loss(jnp.float32(x), jnp.float32(h), t))
        assert loss == pytest.approx(sp * (h - t), rel=1e-5, abs=1e-7)
        grad = float(jax.grad(softplus_temperature_loss)(jnp.float32(x), jnp.float32(h), t))
        assert grad == pytest.approx((h - t) / (1 + math.exp(-x)), rel=1e-5, abs=1e-7)
    # the entropy is a constant of the loss
    assert float(jax.grad(softplus_temperature_loss, argnums=1)(jnp.float32(0.1), jnp.float32(1.0), 0.0)) == 0.0
    assert math.log1p(math.exp(inverse_softplus(1e-2))) == pytest.approx(1e-2, rel=1e-12)
    with pytest.raises(ValueError):
        inverse_softplus(0.0)


@pytest.mark.parametrize("order", ["sac", "upstream"])
def test_softplus_temperature_starts_at_init_and_steps_on_the_next_state_entropy(order):
    size = 6
    agent0 = make_agent(temperature_parameterization="softplus", update_order=order)
    assert set(agent0.temp.params) == {"softplus_temp"}
    assert float(agent0.temperature) == pytest.approx(1e-2, rel=1e-5)
    assert float(agent0.temp.params["softplus_temp"]) == pytest.approx(math.log(math.expm1(1e-2)), rel=1e-6)
    b = batch(2 * size, 9)
    new, info = agent0.update(b, utd_ratio=2)
    last = minibatch(b, 1, size)
    if order == "sac":  # two critic steps, then rng -> (rng, key), key -> (key, k_temp)
        a = agent0
        for i in range(2):
            a, _ = critic_step(a, minibatch(b, i, size))
        _, key = jax.random.split(a.rng)
        _, k_temp = jax.random.split(key)
    else:  # one critic-only step, then rng -> (rng, k_critic, k_actor, k_temp)
        a, _ = critic_step(agent0, minibatch(b, 0, size))
        k_temp = jax.random.split(a.rng, 4)[3]
    h_next = entropy_at(agent0, agent0.actor.params, last["next_observations"], k_temp)  # pre-update actor
    x0 = float(agent0.temp.params["softplus_temp"])
    t = agent0.config.target_entropy
    g = float(new.temp.opt_state[0].mu["softplus_temp"]) / (1 - B1)
    assert g == pytest.approx((h_next - t) / (1 + math.exp(-x0)), rel=1e-4)
    assert float(info["temperature_loss"]) == pytest.approx(math.log1p(math.exp(x0)) * (h_next - t), rel=1e-4)
    # the actor's entropy at s is another number: the temperature did not use it
    assert abs(float(info["entropy"]) - h_next) > 1e-3
    assert float(new.temperature) == pytest.approx(float(jax.nn.softplus(new.temp.params["softplus_temp"])))


def test_options_validated():
    for kw in (dict(update_order="serl"), dict(temperature_parameterization="linear"),
               dict(idle_adam_steps=True)):  # idle steps need the upstream order
        with pytest.raises(ValueError):
            make_agent(**kw)


# ------------------------------------------------------------------ critic_target_clip=()


def test_empty_clip_means_none_and_the_command_line_can_set_it():
    assert make_agent(critic_target_clip=()).config.critic_target_clip is None
    assert make_agent(critic_target_clip=(0.0, 1.0)).config.critic_target_clip == (0.0, 1.0)
    c = ml_collections.ConfigDict({"agent": config(critic_target_clip=(0.0, 1.0)).to_dict()})
    c.agent.critic_target_clip = (0.0, 1.0)
    argv = ["prog", "--config.agent.critic_target_clip=()"]  # what the launchers pass on
    fv = flags.FlagValues()
    holder = config_flags.DEFINE_config_dict("config", c, flag_values=fv, sys_argv=argv)
    fv(argv)
    assert tuple(holder.value.agent.critic_target_clip) == ()
    obs = {"state": np.zeros(OBS_DIM, np.float32)}
    agent = SACAgent.create(jax.random.PRNGKey(0), obs, np.zeros(ACT_DIM, np.float32),
                            ml_collections.ConfigDict(holder.value.agent.to_dict()))
    assert agent.config.critic_target_clip is None


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_and_load_agent_round_trip_with_the_options(tmp_path):
    from configs.train import get_config
    from serl_ext.loop import common
    from serl_ext.loop.checkpoint import Checkpointer, load_agent, make_policy_spec

    spec, a = {"state": ((39,), np.dtype(np.float32))}, 4
    cfg = get_config("pick-place,hil_serl")
    cfg.agent.hidden_dims = (16, 16)
    cfg.agent.update_order = "upstream"
    cfg.agent.idle_adam_steps = True
    cfg.agent.temperature_parameterization = "softplus"
    cfg.agent.critic_target_clip = ()
    agent = common.create_agent(cfg, spec, a)
    r = np.random.default_rng(0)
    b = {"observations": {"state": r.normal(size=(8, 39)).astype(np.float32)},
         "next_observations": {"state": r.normal(size=(8, 39)).astype(np.float32)},
         "actions": r.uniform(-1, 1, size=(8, a)).astype(np.float32),
         "rewards": np.zeros(8, np.float32), "masks": np.ones(8, np.float32)}
    agent, _ = agent.update(b, utd_ratio=2)
    ckpt = Checkpointer(str(tmp_path / "run" / "checkpoints"))
    buffers = {n: common.make_buffer(spec, a, 8, seed=0, with_extras=True).state_dict() for n in ("replay", "demo")}
    ckpt.save(3, agent, buffers, {"learner_step": 3, "version": 1}, policy_spec=make_policy_spec(cfg, spec, a))
    ckpt.close()
    loaded, info = load_agent(str(tmp_path / "run"))
    assert loaded.config.update_order == "upstream" and loaded.config.idle_adam_steps is True
    assert loaded.config.temperature_parameterization == "softplus" and loaded.config.critic_target_clip is None
    np.testing.assert_array_equal(flat(loaded.temp.params), flat(agent.temp.params))
    np.testing.assert_array_equal(flat(loaded.actor.params), flat(agent.actor.params))
    assert float(loaded.temperature) == pytest.approx(float(agent.temperature))
    # an agent config written before the options existed builds today's agent
    old = ml_collections.ConfigDict(json.loads(cfg.agent.to_json_best_effort()))
    for k in ("update_order", "idle_adam_steps", "temperature_parameterization"):
        del old[k]
    old.critic_target_clip = (0.0, 1.0)
    old.hidden_dims = (16, 16)
    rebuilt = SACAgent.create(jax.random.PRNGKey(0), {"state": np.zeros(39, np.float32)}, np.zeros(a, np.float32), old)
    assert rebuilt.config.update_order == "sac" and set(rebuilt.temp.params) == {"log_temp"}
