"""The default (not frozen, no weights file) agents update exactly as before issue 17's
frozen-encoder option.

``tests/data/encoder_default_reference.npz`` holds every parameter after one update of small
SAC (state, SmallCNN) and BC (SmallCNN) agents on fixed seeds, written by the code *before* the option existed (commit 973661e):
``nice -n 19 python tests/test_encoder_defaults_unchanged.py --write``. The test rebuilds
the same agents with today's code, options off, and compares within rtol 1e-5, atol 1e-6:
XLA's float sums differ with the JAX version and with the host's instruction set (on another
machine, with the JAX version that wrote the file, a few small biases differed by up to 1.3e-9).
One Adam update moves every parameter by about the learning rate (3e-4), so a changed default
shows far above that bound.
"""

import os
import sys

import jax
import numpy as np
import pytest

from serl_ext.agents import bc, sac
from serl_ext.networks import flatten_params

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "encoder_default_reference.npz")
SIZE = 24


def _image_batch(n, seed):
    r = np.random.default_rng(seed)

    def obs():
        return {"state": r.normal(size=(n, 4)).astype(np.float32),
                "pixels": r.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)}

    return {"observations": obs(), "next_observations": obs(),
            "actions": r.uniform(-1, 1, (n, 2)).astype(np.float32),
            "rewards": r.uniform(size=n).astype(np.float32), "masks": (r.uniform(size=n) > 0.3)}


def _state_batch(n, seed):
    r = np.random.default_rng(seed)
    return {"observations": {"state": r.normal(size=(n, 5)).astype(np.float32)},
            "next_observations": {"state": r.normal(size=(n, 5)).astype(np.float32)},
            "actions": r.uniform(-1, 1, (n, 3)).astype(np.float32),
            "rewards": r.uniform(size=n).astype(np.float32), "masks": (r.uniform(size=n) > 0.3)}


def _image_config(get_config, etype, widths):
    c = get_config()
    c.hidden_dims = (8, 8)
    c.encoder.type = etype
    c.encoder.image_keys = ("pixels",)
    c.encoder.latent_dim = 8
    c.encoder.widths = widths
    c.encoder.num_spatial_features = 2
    return c


def _image_example():
    return {"state": np.zeros(4, np.float32), "pixels": np.zeros((SIZE, SIZE, 3), np.uint8)}


def _sac_params(agent):
    return {"actor": agent.actor.params, "critic": agent.critic.params,
            "target": agent.target_critic_params, "temp": agent.temp.params}


def compute_cases():
    """``{case/param/path: np.ndarray}`` after one update of each reference agent."""
    out = {}

    def add(case, tree):
        for path, leaf in flatten_params(tree).items():
            out[f"{case}/{path}"] = np.asarray(jax.device_get(leaf))

    c = sac.get_default_config()
    c.hidden_dims = (8, 8)
    agent = sac.SACAgent.create(jax.random.PRNGKey(0), {"state": np.zeros(5, np.float32)},
                                np.zeros(3, np.float32), c)
    add("sac_state", _sac_params(agent.update(_state_batch(8, 1), utd_ratio=2)[0]))

    c = _image_config(sac.get_default_config, "small_cnn", (4, 8))
    agent = sac.SACAgent.create(jax.random.PRNGKey(3), _image_example(), np.zeros(2, np.float32), c)
    add("sac_small_cnn", _sac_params(agent.update(_image_batch(8, 2), utd_ratio=2)[0]))

    c = _image_config(bc.get_default_config, "small_cnn", (4, 8))
    agent = bc.BCAgent.create(jax.random.PRNGKey(7), _image_example(), np.zeros(2, np.float32), c)
    batch = _image_batch(8, 6)
    add("bc_small_cnn", agent.update({"observations": batch["observations"], "actions": batch["actions"]})[0].actor.params)
    return out


def test_default_agent_updates_match_reference():
    if not os.path.isfile(REFERENCE):
        pytest.fail(f"missing {REFERENCE}; write it from commit 973661e (module docstring)")
    with np.load(REFERENCE, allow_pickle=False) as f:
        ref = {k: f[k] for k in f.files}
    jax_version = str(ref.pop("__jax_version__"))
    got = compute_cases()
    assert sorted(got) == sorted(ref)
    assert jax_version  # written by --write with the JAX version that made it
    for key in sorted(ref):
        assert got[key].dtype == ref[key].dtype and got[key].shape == ref[key].shape, key
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_encoder_defaults_unchanged.py --write")
    cases = compute_cases()
    os.makedirs(os.path.dirname(REFERENCE), exist_ok=True)
    np.savez(REFERENCE, __jax_version__=np.asarray(jax.__version__), **cases)
    print(f"wrote {len(cases)} arrays to {REFERENCE}")
