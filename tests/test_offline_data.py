"""Offline data collection: demos, weak-policy rollouts, operator-assisted rollouts."""

import numpy as np

from configs.train import get_config
from uniintervene_jax.offline_data import collect_offline_data, load_offline_data


def test_collect_offline_data_small(tmp_path):
    config = get_config("pick-place,hil_serl")
    config.agent.hidden_dims = (16, 16)
    out = str(tmp_path / "offline")
    manifest = collect_offline_data(config, out, num_demos=2, num_rollouts=2, num_assisted=2,
                                    bc_steps=5, seed=0, progress_bar=False)
    data = load_offline_data(out)
    assert len(data["demos"]) == 2 and len(data["rollouts"]) == 2 and len(data["assisted"]) == 2
    for e in data["demos"]:
        assert e["metadata"]["success"] and e["metadata"]["source"] == "demo"
        assert e["success"][-1] and not e["interventions"].any()
    for e in data["rollouts"]:
        assert e["metadata"]["source"] == "rollout"
        assert not e["interventions"].any() and e["metadata"]["first_intervention_step"] is None
        assert e["metadata"]["success"] == bool(e["success"].any())
    for e in data["assisted"]:
        first = e["metadata"]["first_intervention_step"]
        flags = e["interventions"]
        if flags.any():
            assert first == int(np.argmax(flags))
            # Human steps are marked as such in action_source too.
            np.testing.assert_array_equal(e["action_source"] == 2, flags)
        else:
            assert first is None
    steps = sum(len(e["actions"]) for e in data["assisted"])
    ir = sum(int(e["interventions"].sum()) for e in data["assisted"]) / steps
    assert manifest["assisted"]["intervention_rate"] == ir
    # A rerun adds nothing and keeps the files.
    again = collect_offline_data(config, out, num_demos=2, num_rollouts=2, num_assisted=2,
                                 bc_steps=5, seed=0, progress_bar=False)
    assert again["rollouts"]["steps"] == manifest["rollouts"]["steps"]
    assert len(load_offline_data(out)["assisted"]) == 2
