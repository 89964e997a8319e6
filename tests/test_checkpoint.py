"""Self-describing checkpoints (serl_ext/loop/checkpoint.py): the policy spec rides with each
checkpoint step and ``load_agent(run_dir)`` restores the policy from the folder alone."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs.train import get_config
from serl_ext.loop import common
from serl_ext.loop.checkpoint import Checkpointer, load_agent, make_policy_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = {"state": ((39,), np.dtype(np.float32))}
A = 4


def _trained_looking_agent(config):
    """An agent whose policy differs from the fresh one of the same seed (so that a restore that
    silently returned the template would fail the comparison)."""
    agent = common.create_agent(config, SPEC, A)
    params = agent.policy_params()
    rng = np.random.default_rng(3)
    import jax

    shifted = jax.tree.map(lambda x: (x + rng.normal(0, 0.1, np.shape(x))).astype(x.dtype), params)
    return agent.load_policy_params(shifted)


def _save(tmp_path, algorithm="hil_serl", with_spec=True):
    config = get_config(f"pick-place,{algorithm}")
    config.agent.hidden_dims = (16, 16)
    config.seed = 5
    agent = _trained_looking_agent(config)
    run_dir = tmp_path / "run"
    ckpt = Checkpointer(str(run_dir / "checkpoints"))
    buffers = {name: common.make_buffer(SPEC, A, 8, seed=0, with_extras=True).state_dict() for name in ("replay", "demo")}
    ckpt.save(7, agent, buffers, {"learner_step": 7, "version": 2},
              policy_spec=make_policy_spec(config, SPEC, A) if with_spec else None)
    ckpt.close()
    return run_dir, config, agent


@pytest.mark.parametrize("algorithm", ["hil_serl", "hil_serl_hybrid"])
def test_load_agent_restores_the_policy_from_the_folder(tmp_path, algorithm):
    run_dir, config, agent = _save(tmp_path, algorithm)
    loaded, info = load_agent(str(run_dir))
    assert info["learner_step"] == 7 and info["action_dim"] == A
    assert info["observation_spec"] == SPEC
    assert info["config"].agent_name == config.agent_name and info["config"].seed == 5
    assert tuple(info["config"].agent.hidden_dims) == (16, 16)
    obs = {"state": np.linspace(-1, 1, 39).astype(np.float32)}
    np.testing.assert_allclose(np.asarray(loaded.eval_actions(obs)), np.asarray(agent.eval_actions(obs)), atol=1e-6)
    fresh = common.create_agent(config, SPEC, A)
    assert not np.allclose(np.asarray(fresh.eval_actions(obs)), np.asarray(agent.eval_actions(obs)))


def test_load_agent_needs_neither_configs_nor_an_env(tmp_path):
    run_dir, _, agent = _save(tmp_path)
    obs = np.linspace(-1, 1, 39).astype(np.float32)
    expected = np.asarray(agent.eval_actions({"state": obs}))
    code = ("import sys, numpy as np\n"
            "sys.modules['configs'] = None; sys.modules['metaworld'] = None\n"
            "from serl_ext.loop.checkpoint import load_agent\n"
            f"agent, info = load_agent({str(run_dir)!r})\n"
            f"obs = np.linspace(-1, 1, 39).astype(np.float32)\n"
            "print(np.asarray(agent.eval_actions({'state': obs}), np.float64).tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == 0, out.stderr[-3000:]
    np.testing.assert_allclose(json.loads(out.stdout.strip().splitlines()[-1]), expected, atol=1e-6)


def test_checkpoint_without_a_policy_spec_is_refused_clearly(tmp_path):
    run_dir, _, _ = _save(tmp_path, with_spec=False)
    with pytest.raises(FileNotFoundError, match="no policy_spec"):
        load_agent(str(run_dir))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_agent(str(tmp_path / "empty"))


def test_the_method_section_survives_the_policy_spec_round_trip(tmp_path):
    """A hil_serl+uniintervene run's stored config rebuilds its gate and learner models
    (benchmarks/system_eval.py evaluates such runs from load_agent's config)."""
    from test_online import shrink_uniintervene
    from uniintervene_jax.gate import make_gate
    from uniintervene_jax.online import OnlineUniIntervene

    config = get_config("pick-place,hil_serl+uniintervene")
    config.agent.hidden_dims = (16, 16)
    shrink_uniintervene(config.uniintervene)
    config.uniintervene.cooldown_steps = 2
    agent = common.create_agent(config, SPEC, A)
    ckpt = Checkpointer(str(tmp_path / "run" / "checkpoints"))
    buffers = {name: common.make_buffer(SPEC, A, 8, seed=0, with_extras=True).state_dict() for name in ("replay", "demo")}
    ckpt.save(1, agent, buffers, {"learner_step": 1, "version": 1}, policy_spec=make_policy_spec(config, SPEC, A))
    ckpt.close()
    _, info = load_agent(str(tmp_path / "run"))
    restored = info["config"]
    assert restored.components.gate == "uniintervene_jax.gate:make_gate"
    assert restored.uniintervene.value.hidden_dims == (16, 16)  # tuples again
    gate = make_gate(restored, SPEC, A, None)
    assert gate.cooldown_steps == 2 and gate.part_name == "uniintervene"
    ui = OnlineUniIntervene(restored, SPEC, A)
    gate.load_params(ui.payload())  # the same structures on both sides
    assert gate.models.version == ui.version
