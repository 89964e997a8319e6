"""The optimised SAC update (``agent.fused_update=True``, issue 14) computes what the rolled
``lax.scan`` update (``fused_update=False``, the default) computes, to float tolerance:
parameters, Adam state, target critic, carried rng and info after a few updates from the same
agent and batches on fixed seeds."""

import functools

import jax
import ml_collections
import numpy as np
import pytest

from serl_ext.agents import sac

OBS, ACT, B = 11, 3, 32
RTOL, ATOL = 1e-5, 1e-6


@functools.lru_cache(maxsize=None)
def _base_agent(num_qs, num_min_qs):
    c = sac.get_default_config()
    c.hidden_dims = (32, 32)
    c.num_qs = num_qs
    c.num_min_qs = num_min_qs
    c.critic_target_clip = (0.0, 1.0)
    # Built under jit: the same values as the eager SACAgent.create, a few seconds faster.
    return jax.jit(lambda key: sac.SACAgent.create(key, {"state": np.zeros(OBS, np.float32)},
                                                   np.zeros(ACT, np.float32), c))(jax.random.PRNGKey(3))


def _agent(num_qs, num_min_qs, fused, order="sac"):
    """The same agent (params, rng, optimizer states) with ``fused_update=fused`` and
    ``update_order=order``."""
    agent = _base_agent(num_qs, num_min_qs)
    config = ml_collections.FrozenConfigDict({**agent.config.to_dict(), "fused_update": fused, "update_order": order})
    return agent.replace(config=config)


def _batch(n, seed):
    r = np.random.default_rng(seed)
    return {
        "observations": {"state": r.normal(size=(n, OBS)).astype(np.float32)},
        "next_observations": {"state": r.normal(size=(n, OBS)).astype(np.float32)},
        "actions": r.uniform(-1, 1, size=(n, ACT)).astype(np.float32),
        "rewards": (r.uniform(size=n) > 0.7).astype(np.float32),
        "masks": (r.uniform(size=n) > 0.1).astype(np.float32),
    }


def _state(agent):
    """Everything an update changes: rng, params, opt states (mu, nu, counts), steps, target."""
    return {
        "rng": jax.random.key_data(agent.rng) if jax.dtypes.issubdtype(agent.rng.dtype, jax.dtypes.prng_key)
        else agent.rng,
        "actor": (agent.actor.params, agent.actor.opt_state, agent.actor.step),
        "critic": (agent.critic.params, agent.critic.opt_state, agent.critic.step),
        "target": agent.target_critic_params,
        "temp": (agent.temp.params, agent.temp.opt_state, agent.temp.step),
    }


def _assert_close(a, b):
    la, ta = jax.tree_util.tree_flatten_with_path(a)
    lb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb
    for (path, x), (_, y) in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL,
                                   err_msg=jax.tree_util.keystr(path))


def _run(agent, utd, steps=3):
    infos = []
    for s in range(steps):
        agent, info = agent.update(_batch(utd * B, seed=s), utd_ratio=utd)
        infos.append(info)
    return agent, infos


@pytest.mark.parametrize("num_qs,num_min_qs", [(2, None), (10, 2)])
@pytest.mark.parametrize("utd", [1, 2])
def test_fused_update_matches_rolled_scan(num_qs, num_min_qs, utd):
    cur, cur_infos = _run(_agent(num_qs, num_min_qs, fused=False), utd)
    opt, opt_infos = _run(_agent(num_qs, num_min_qs, fused=True), utd)
    assert cur.config.fused_update is False and opt.config.fused_update is True
    _assert_close(_state(cur), _state(opt))
    for ci, oi in zip(cur_infos, opt_infos):
        assert sorted(ci) == sorted(oi)
        _assert_close(ci, oi)
    assert int(opt.critic.step) == 3 * utd and int(opt.actor.step) == 3


def test_fused_update_matches_rolled_scan_upstream_order():
    # update_order="upstream": utd - 1 = 2 critic-only steps in the (un)rolled scan.
    cur, cur_infos = _run(_agent(2, None, fused=False, order="upstream"), 3, steps=2)
    opt, opt_infos = _run(_agent(2, None, fused=True, order="upstream"), 3, steps=2)
    _assert_close(_state(cur), _state(opt))
    for ci, oi in zip(cur_infos, opt_infos):
        _assert_close(ci, oi)


def test_fused_update_config():
    assert sac.get_default_config().fused_update is False  # bit-identical to earlier versions
    assert sac._scan_unroll(_agent(2, None, fused=True).config, 2) == 2
    assert sac._scan_unroll(_agent(2, None, fused=True).config, sac.FUSED_UNROLL_MAX_UTD + 1) == 1
    assert sac._scan_unroll(_agent(2, None, fused=False).config, 2) == 1
    c = sac.get_default_config()
    with pytest.raises(TypeError, match="fused_update"):  # refused on assignment or by the check
        c.fused_update = 1
        sac.validate_sac_config(c)
