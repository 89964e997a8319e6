"""Config composition: base + task + algorithm, overrides, errors."""

import pytest

from configs.train import get_config


def test_task_alone_means_hil_serl_and_no_task_is_an_error():
    with pytest.raises(ValueError, match="name the task"):
        get_config()
    config = get_config("pick-place")
    assert config.task == "pick-place"
    assert config.algorithm == "hil_serl"
    assert config.agent.num_qs == 2 and config.agent.num_min_qs is None
    assert config.learner.utd_ratio == 2
    assert config.operator.enabled
    # Calibration of DESIGN.md section 7: action repeat 4, gamma 0.97, target clip for 0/1 reward.
    assert config.env.action_repeat == 4
    assert config.agent.discount == pytest.approx(0.97)
    assert tuple(config.agent.critic_target_clip) == (0.0, 1.0)


def test_algorithm_overrides():
    rlpd = get_config("assembly,rlpd")
    assert rlpd.task == "assembly" and rlpd.algorithm == "rlpd"
    assert rlpd.agent.num_qs == 10 and rlpd.agent.num_min_qs == 2
    assert not rlpd.operator.enabled
    sac = get_config("sweep-into,sac")
    assert sac.demos.num_demos == 0 and sac.learner.demo_fraction == 0.0


def test_task_alone_means_hil_serl():
    assert get_config("box-close").algorithm == "hil_serl"


@pytest.mark.parametrize("spec", ["nope", "pick-place,nope", "a,b,c", ""])
def test_unknown_names_raise(spec):
    with pytest.raises((KeyError, ValueError)):
        get_config(spec)


def test_configs_are_independent():
    a = get_config("pick-place,hil_serl")
    a.agent.hidden_dims = (8,)
    b = get_config("pick-place,hil_serl")
    assert tuple(b.agent.hidden_dims) == (256, 256)


def test_command_line_overrides_including_none_defaults():
    """The real entry point parses overrides, also of fields whose default is None."""
    import json
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [
            sys.executable, "-m", "serl_ext.loop.main", "--print_config",
            "--config=configs/train.py:assembly,rlpd",
            "--config.seed=3",
            "--config.operator.stall_window=40",
            "--config.agent.num_min_qs=1",
            "--config.env.state_obs=proprio",
            "--config.agent.hidden_dims=(32, 32)",
        ],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    config = json.loads(out.stdout[out.stdout.index("{"):])
    assert config["task"] == "assembly" and config["algorithm"] == "rlpd"
    assert config["seed"] == 3
    assert config["operator"]["stall_window"] == 40
    assert config["agent"]["num_min_qs"] == 1
    assert config["env"]["state_obs"] == "proprio"
    assert list(config["agent"]["hidden_dims"]) == [32, 32]


def test_hil_serl_hybrid_preset_builds_the_hybrid_agent():
    import numpy as np

    from serl_ext.agents.sac_hybrid import SACHybridAgent
    from serl_ext.loop import common

    config = get_config("pick-place,hil_serl_hybrid")
    plain = get_config("pick-place,hil_serl")
    assert config.algorithm == "hil_serl_hybrid" and config.agent_name == "sac_hybrid"
    assert plain.agent_name == "sac" and "grasp_num_qs" not in plain.agent
    # Otherwise hil_serl: same ensemble, UTD, demos and operator.
    for a, b in ((config.agent.num_qs, plain.agent.num_qs), (config.learner.utd_ratio, plain.learner.utd_ratio),
                 (config.demos.num_demos, plain.demos.num_demos), (config.operator.enabled, plain.operator.enabled)):
        assert a == b
    config.agent.hidden_dims = (8, 8)
    config.agent.grasp_num_qs = 1
    agent, spec, action_dim = common.agent_for_task(config)
    assert isinstance(agent, SACHybridAgent) and action_dim == 4
    assert agent.config.grasp_num_qs == 1 and agent.config.target_entropy == -(action_dim - 1) / 2
    assert set(agent.policy_params()) == {"actor", "encoder", "grasp_critic"}
    obs = common.example_observation(spec)
    action = np.asarray(agent.eval_actions(obs))
    assert action.shape == (4,) and action[-1] in (-1.0, 0.0, 1.0)


def test_hil_serl_hybrid_resolves_from_the_command_line():
    import json
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [
            sys.executable, "-m", "serl_ext.loop.main", "--print_config",
            "--config=configs/train.py:pick-place,hil_serl_hybrid",
            "--config.agent.grasp_num_qs=1",
            "--config.agent.grasp_target_clip=(-1.0, 1.0)",
        ],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    config = json.loads(out.stdout[out.stdout.index("{"):])
    assert config["algorithm"] == "hil_serl_hybrid" and config["agent_name"] == "sac_hybrid"
    assert config["agent"]["grasp_num_qs"] == 1
    assert list(config["agent"]["grasp_target_clip"]) == [-1.0, 1.0]
    assert config["agent"]["num_qs"] == 2 and config["operator"]["enabled"]
