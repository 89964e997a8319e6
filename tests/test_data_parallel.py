"""The data-parallel update (serl_ext/agents/data_parallel.py) equals the single-device one.

The check runs in a subprocess (this file run as a script) with two CPU devices,
``XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu``: the flag must be
set before jax starts, and the test process's jax has already started with one device. It
compares the sharded and the single-device update (every parameter, optimiser state, target
critic, rng and info value) on fixed seeds at rtol 1e-5 for plain SAC with RLPD's ensemble
(10, min over 2; UTD 2, two chained updates), the hybrid agent (ensemble 2, upstream order,
softplus temperature) and images with random-crop augmentation; checks that the compiled
update is split (per-device rows, all-reduces, no all-gather) and checks the errors.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL, ATOL = 1e-5, 1e-7
MINIBATCH = 8


def test_data_parallel_update_equals_single_device_update():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "ALL OK" in proc.stdout, proc.stdout[-4000:]


def test_make_updater_off_is_agent_update():
    from serl_ext.agents.data_parallel import make_updater

    class Fake:
        def update(self, batch, utd_ratio):
            return ("updated", batch, utd_ratio)

    assert make_updater(0)(Fake(), "b", 3) == ("updated", "b", 3)
    assert make_updater(1)(Fake(), "b", 2) == ("updated", "b", 2)
    with pytest.raises(ValueError, match=">= 0"):
        make_updater(-1)


def test_too_few_devices_raises():
    import jax

    from serl_ext.agents.data_parallel import DataParallelUpdate

    with pytest.raises(ValueError, match="jax sees only 1 device"):
        DataParallelUpdate(2, devices=jax.devices()[:1])
    with pytest.raises(ValueError, match=">= 2"):
        DataParallelUpdate(1)


# --------------------------------------------------------------------------- subprocess


def _batch(n, obs_dim, act_dim, seed, hybrid=False, image=None):
    import numpy as np

    r = np.random.default_rng(seed)
    actions = r.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    if hybrid:
        actions[:, -1] = r.integers(-1, 2, size=n).astype(np.float32)
    obs = {"state": r.normal(size=(n, obs_dim)).astype(np.float32)}
    next_obs = {"state": r.normal(size=(n, obs_dim)).astype(np.float32)}
    if image is not None:
        obs["pixels"] = r.integers(0, 256, size=(n,) + image, dtype=np.uint8)
        next_obs["pixels"] = r.integers(0, 256, size=(n,) + image, dtype=np.uint8)
    batch = {
        "observations": obs,
        "next_observations": next_obs,
        "actions": actions,
        "rewards": (r.uniform(size=n) > 0.7).astype(np.float32),
        "masks": r.uniform(size=n) > 0.2,  # bool masks, as the buffers may give
    }
    if hybrid:
        batch["grasp_penalty"] = np.where(r.uniform(size=n) > 0.8, -0.02, 0.0).astype(np.float32)
    return batch


def _assert_trees_close(name, expected, got):
    import jax
    import numpy as np

    flat_e = jax.tree_util.tree_flatten_with_path(expected)[0]
    flat_g = jax.tree_util.tree_leaves(got)
    assert len(flat_e) == len(flat_g), (name, len(flat_e), len(flat_g))
    for (path, e), g in zip(flat_e, flat_g):
        e, g = np.asarray(jax.device_get(e)), np.asarray(jax.device_get(g))
        if e.dtype.kind in "iub" or e.dtype == np.uint32:
            np.testing.assert_array_equal(g, e, err_msg=f"{name}{jax.tree_util.keystr(path)}")
        else:
            np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL, err_msg=f"{name}{jax.tree_util.keystr(path)}")


def _check_case(name, agent_cls, config, utd, hybrid=False, image=None, steps=1, check_hlo=False):
    import jax
    import numpy as np

    from serl_ext.agents.data_parallel import DataParallelUpdate

    t0 = time.perf_counter()
    obs_dim, act_dim = 5, 3
    example = {"state": np.zeros(obs_dim, np.float32)}
    if image is not None:
        example["pixels"] = np.zeros(image, np.uint8)
    agent = agent_cls.create(jax.random.PRNGKey(3), example, np.zeros(act_dim, np.float32), config)
    update = DataParallelUpdate(2)
    run = update
    if check_hlo:  # the compiled update is split: all-reduces, no gathers of the batch; it then runs the steps
        batch = _batch(utd * MINIBATCH, obs_dim, act_dim, seed=10, hybrid=hybrid, image=image)
        compiled = update._update.lower(update.place_agent(agent), update.place_batch(agent, batch, utd), utd).compile()
        hlo = compiled.as_text()
        assert re.search(r"\ball-reduce(-start)?\(", hlo), name
        assert not re.search(r"\ball-gather(-start)?\(|\ball-to-all\(", hlo), name

        def run(a, b, u):
            return compiled(update.place_agent(a), update.place_batch(a, b, u))
    single, sharded = agent, agent
    for step in range(steps):
        batch = _batch(utd * MINIBATCH, obs_dim, act_dim, seed=10 + step, hybrid=hybrid, image=image)
        single, info_single = single.update(batch, utd)
        sharded, info_sharded = run(sharded, batch, utd)
        _assert_trees_close(f"{name} step {step} info", info_single, info_sharded)
        _assert_trees_close(f"{name} step {step} agent", single, sharded)
    assert all(len(x.sharding.device_set) == 2 for x in jax.tree_util.tree_leaves(sharded)), name
    assert sharded.rng.sharding.is_fully_replicated, name
    placed = update.place_batch(agent, batch, utd)
    assert placed["rewards"].addressable_shards[0].data.shape == (utd, MINIBATCH // 2), name
    print(f"{name}: OK ({time.perf_counter() - t0:.1f} s)", flush=True)
    return agent


def _main():
    import jax
    import numpy as np

    from serl_ext.agents import bc, sac, sac_hybrid
    from serl_ext.agents.data_parallel import DataParallelUpdate

    assert len(jax.devices()) == 2, jax.devices()

    c = sac.get_default_config()
    c.hidden_dims = (16, 16)
    c.num_qs, c.num_min_qs = 10, 2  # RLPD
    c.critic_target_clip = (0.0, 1.0)
    agent = _check_case("sac ensemble 10 utd 2", sac.SACAgent, c, utd=2, steps=2, check_hlo=True)

    c = sac_hybrid.get_default_config()
    c.hidden_dims = (16, 16)
    c.update_order = "upstream"
    c.temperature_parameterization = "softplus"
    _check_case("hybrid upstream utd 2", sac_hybrid.SACHybridAgent, c, utd=2, hybrid=True)

    c = sac.get_default_config()
    c.hidden_dims = (16, 16)
    c.encoder.type = "small_cnn"
    c.encoder.image_keys = ("pixels",)
    c.encoder.widths = (4,)
    c.encoder.latent_dim = 8
    c.encoder.num_spatial_features = 2
    _check_case("images random crop utd 1", sac.SACAgent, c, utd=1, image=(8, 8, 3))

    update = DataParallelUpdate(2)
    bad = _batch(2 * 7, 5, 3, seed=0)  # minibatch 7 over 2 devices
    try:
        update(agent, bad, 2)
    except ValueError as e:
        assert "not a multiple of the 2 devices" in str(e), e
    else:
        raise AssertionError("an odd minibatch must raise")
    bc_agent = bc.BCAgent.create(jax.random.PRNGKey(0), {"state": np.zeros(5, np.float32)},
                                 np.zeros(3, np.float32))
    try:
        update(bc_agent, _batch(8, 5, 3, seed=0), 1)
    except TypeError as e:
        assert "SAC agents" in str(e), e
    else:
        raise AssertionError("a BC agent must raise")
    print("ALL OK", flush=True)


if __name__ == "__main__":
    _main()
