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


# ---------------------------------------------------------------------------- image encoders
# An encoder with image keys always unrolls the scan (serl_ext.agents.common.unrolls_scan): XLA's
# CPU convolutions ran ~14x slower inside the rolled loop (benchmarks/results/pixel_update.md).

IMG = 16


def _image_agent(module, seed=5):
    c = module.get_default_config()
    c.hidden_dims = (8, 8)
    c.encoder.type = "small_cnn"
    c.encoder.image_keys = ("pixels",)
    c.encoder.latent_dim = 8
    c.encoder.widths = (4, 8)
    c.encoder.num_spatial_features = 2
    example = {"state": np.zeros(4, np.float32), "pixels": np.zeros((IMG, IMG, 3), np.uint8)}
    cls = sac.SACAgent if module is sac else module.BCAgent
    return cls.create(jax.random.PRNGKey(seed), example, np.zeros(2, np.float32), c)


def _image_batch(n, seed):
    r = np.random.default_rng(seed)

    def obs():
        return {"state": r.normal(size=(n, 4)).astype(np.float32),
                "pixels": r.integers(0, 256, (n, IMG, IMG, 3), dtype=np.uint8)}

    return {"observations": obs(), "next_observations": obs(), "actions": r.uniform(-1, 1, (n, 2)).astype(np.float32),
            "rewards": r.uniform(size=n).astype(np.float32), "masks": (r.uniform(size=n) > 0.3).astype(np.float32)}


def _scan_unrolls(fn, agent, batch, utd):
    """The ``unroll`` of every ``scan`` in the update's jaxpr (a fresh trace each call)."""
    jaxpr = jax.make_jaxpr(lambda a, b: fn(a, b, utd))(agent, batch)
    return [e.params["unroll"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]


def test_image_encoder_unrolls_the_critic_scan_and_matches_the_rolled_one():
    from unittest import mock

    agent = _image_agent(sac)
    assert agent.config.fused_update is False  # unrolled because it reads images, not by the flag
    assert sac._scan_unroll(agent.config, 3) == 3
    assert sac._scan_unroll(agent.config, sac.FUSED_UNROLL_MAX_UTD + 1) == 1
    batch = agent._check_batch(_image_batch(3 * 4, seed=1), 3)
    assert _scan_unrolls(sac._update_impl, agent, batch, 3) == [3]
    unrolled = jax.jit(lambda a, b: sac._update_impl(a, b, 3))(agent, batch)
    with mock.patch.object(sac, "_scan_unroll", lambda config, num_steps: 1):
        assert _scan_unrolls(sac._update_impl, agent, batch, 3) == [1]  # what every update ran before
        rolled = jax.jit(lambda a, b: sac._update_impl(a, b, 3))(agent, batch)
    _assert_close(_state(rolled[0]), _state(unrolled[0]))
    _assert_close(rolled[1], unrolled[1])
    assert int(unrolled[0].critic.step) == 3 and int(unrolled[0].actor.step) == 1
    # A state encoder keeps the rolled loop unless fused_update is set.
    state_agent = _agent(2, None, fused=False)
    assert _scan_unrolls(sac._update_impl, state_agent, state_agent._check_batch(_batch(2 * B, 0), 2), 2) == [1]


def test_bc_image_update_unrolls_its_scan():
    from serl_ext.agents import bc

    agent = _image_agent(bc)
    batch = _image_batch(2 * 4, seed=2)
    assert _scan_unrolls(bc._bc_update_impl, agent, batch, 2) == [2]
    new, info = agent.update(batch, utd_ratio=2)
    assert int(new.actor.step) == 2 and np.isfinite(float(info["bc_loss"]))
