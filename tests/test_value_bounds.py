"""Value bounds at the replay buffer (issue 15 item 1, data side): finite but absurd values are
refused at insert and when a checkpointed buffer loads, with a clear error, and counted."""

import gymnasium as gym
import numpy as np
import pytest

from serl_ext.data._validation import DEFAULT_MAX_ABS, OutOfBoundsError, space_bound
from serl_ext.data.replay_buffer import ReplayBuffer, value_bounds_from_spaces

SPEC = {"state": ((3,), np.float32), "pixels": ((2, 2, 1), np.uint8)}


def _tr(state=(0.1, 0.2, 0.3), action=(0.0, 0.0), reward=0.0):
    obs = {"state": np.asarray(state, np.float32), "pixels": np.zeros((2, 2, 1), np.uint8)}
    return {"observations": obs, "next_observations": obs, "actions": np.asarray(action, np.float32),
            "rewards": reward, "masks": 1.0, "dones": False, "interventions": False, "action_source": 0}


def test_default_bound_refuses_absurd_finite_values():
    buf = ReplayBuffer(SPEC, 2, 16)
    for bad, name in ((_tr(state=(3e38, 0, 0)), "observations['state']"),
                      (_tr(action=(0.0, -2e38)), "actions"),
                      (_tr(reward=1e30), "rewards")):
        with pytest.raises(ValueError, match=r"exceeds the bound") as err:
            buf.insert(bad)
        assert name in str(err.value) and isinstance(err.value, OutOfBoundsError)
    assert len(buf) == 0 and buf.num_out_of_bounds == 3
    buf.insert(_tr(state=(1e5, -1e5, 0)))  # large but plausible: accepted
    assert len(buf) == 1
    # the rule is what refuses: without a default bound 3e38 (finite in float32) goes in
    loose = ReplayBuffer(SPEC, 2, 16, default_max_abs=None)
    loose.insert(_tr(state=(3e38, 0, 0)))
    assert len(loose) == 1


def test_bounds_from_spaces_with_margin():
    obs_space = gym.spaces.Dict({
        "state": gym.spaces.Box(low=np.array([-1, -2, -np.inf], np.float32),
                                high=np.array([1, 2, np.inf], np.float32),
                                dtype=np.float32),
        "pixels": gym.spaces.Box(0, 255, (2, 2, 1), np.uint8),
    })
    act_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    bounds = value_bounds_from_spaces(obs_space, act_space, margin=0.1, reward_bound=10.0)
    np.testing.assert_allclose(bounds["observations"]["state"], [1.1, 2.2, DEFAULT_MAX_ABS])
    assert "pixels" not in bounds["observations"]
    buf = ReplayBuffer(SPEC, 2, 16, value_bounds=bounds)
    buf.insert(_tr(state=(1.05, -2.1, 5e5), action=(1.05, -1.0), reward=-10.0))
    for bad in (_tr(state=(1.2, 0, 0)), _tr(state=(0, 0, 2e6)), _tr(action=(1.2, 0.0)),
                _tr(reward=10.5)):
        with pytest.raises(OutOfBoundsError):
            buf.insert(bad)
    assert len(buf) == 1 and buf.num_out_of_bounds == 4
    with pytest.raises(ValueError, match="unknown fields"):
        ReplayBuffer(SPEC, 2, 16, value_bounds={"obs": {}})
    with pytest.raises(ValueError, match="finite and > 0"):
        ReplayBuffer(SPEC, 2, 16, value_bounds={"actions": [1.0, 0.0]})
    np.testing.assert_allclose(space_bound(0.0, 0.0, (1,)), [0.1])  # at least 0.1 absolute


def _filled():
    buf = ReplayBuffer(SPEC, 2, 8)
    for i in range(4):
        buf.insert(_tr(state=(i, i, i)))
    return buf


@pytest.mark.parametrize("field,value,match", [
    (("frames", "state"), 3e38, "exceeds the bound"),
    (("actions",), 3e38, "exceeds the bound"),
    (("rewards",), np.nan, "NaN or inf"),
    (("frames", "state"), np.inf, "NaN or inf"),
    (("masks",), 2.0, r"outside \[0, 1\]"),
])
def test_load_state_dict_applies_the_insert_checks(field, value, match):
    state = _filled().state_dict()
    target = state
    for k in field[:-1]:
        target = target[k]
    target[field[-1]].reshape(-1)[1] = value
    fresh = ReplayBuffer(SPEC, 2, 8)
    with pytest.raises(ValueError, match=match) as err:
        fresh.load_state_dict(state)
    assert "state dict" in str(err.value)
    assert len(fresh) == 0  # unchanged
    assert fresh.num_out_of_bounds == (1 if "bound" in match else 0)


def test_load_state_dict_refuses_bad_action_source():
    state = _filled().state_dict()
    state["action_source"][0] = 7
    with pytest.raises(ValueError, match="action_source"):
        ReplayBuffer(SPEC, 2, 8).load_state_dict(state)


def test_intact_state_dict_still_loads():
    src = _filled()
    dst = ReplayBuffer(SPEC, 2, 8)
    dst.load_state_dict(src.state_dict())
    assert len(dst) == 4
