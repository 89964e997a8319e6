"""anchors_like_online: the offline pipeline's recovery anchors follow the online trainer's rule."""

import numpy as np
import pytest

from uniintervene_jax.recovery.dataset import (SOURCE_INTERVENTION, SOURCE_SUCCESS, anchors_like_online,
                                               recovery_training_pairs)


def _episode(T, source, success, interventions=()):
    obs = np.arange(T + 1, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    inter = np.zeros(T, bool)
    inter[list(interventions)] = True
    return {"observations": {"state": obs}, "actions": np.full((T, 2), 0.1, np.float32),
            "interventions": inter, "rewards": np.zeros(T, np.float32),
            "metadata": {"source": source, "success": success, "task": "pick-place"}}


def test_keeps_demo_anchors_and_operator_steps_only():
    eps = [_episode(10, "demo", True), _episode(10, "assisted", True, interventions=(4, 5, 6)),
           _episode(10, "assisted", False, interventions=(2,))]
    curves = [np.linspace(0, 1, 11)] * 3  # rising: every anchor with t < T qualifies
    pairs = recovery_training_pairs(eps, curves, horizon=4, goal_offset=2)
    got = anchors_like_online(pairs, eps)
    # all anchors: demo 10 + successful assisted 10 (3 of them operator steps) + failed assisted 1
    assert len(pairs["actions"]) == 21
    # kept: the demo's 10, the 3 operator steps of episode 1, the 1 of episode 2
    assert len(got["actions"]) == 14
    kept = sorted(zip(got["episode_index"].tolist(), got["t"].tolist()))
    assert kept == [(0, t) for t in range(10)] + [(1, 4), (1, 5), (1, 6), (2, 2)]
    assert set(got["source"][got["episode_index"] == 1].tolist()) == {SOURCE_INTERVENTION}
    assert set(got["source"][got["episode_index"] == 0].tolist()) == {SOURCE_SUCCESS}
    for key in ("observations", "goal_observations"):
        assert got[key]["state"].shape == (14, 3)
    assert got["instructions"].shape[0] == got["actions"].shape[0] == 14
    # rows stay aligned: the observation of each kept anchor is o_t of its episode
    np.testing.assert_array_equal(got["observations"]["state"][:, 0], got["t"].astype(np.float32))


def test_out_of_range_episode_index():
    eps = [_episode(4, "demo", True)]
    pairs = recovery_training_pairs(eps, [np.linspace(0, 1, 5)], horizon=2, goal_offset=1)
    with pytest.raises(ValueError, match="out of range"):
        anchors_like_online(pairs, [])
