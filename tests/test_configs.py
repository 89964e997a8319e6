"""Config composition: base + task + algorithm, overrides, errors."""

import pytest

from configs.train import get_config


def test_default_is_pick_place_hil_serl():
    config = get_config()
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
