"""Import of HiL-SERL demo pickles: round trip of values, refusal of anything but arrays."""

import os
import pickle

import numpy as np
import pytest

from serl_ext.data.episodes import load_episode
from serl_ext.data.hil_serl_import import import_hil_serl_demos, load_transitions


def _hil_serl_transitions(lengths, rng):
    """Transition dicts shaped like HiL-SERL's record_demos.py output (frame-stack axis 1)."""
    transitions, episodes = [], []
    for length in lengths:
        states = rng.normal(size=(length + 1, 1, 5)).astype(np.float32)
        images = rng.integers(0, 255, size=(length + 1, 1, 8, 8, 3), dtype=np.uint8)
        actions = rng.uniform(-1, 1, size=(length, 7)).astype(np.float32)
        for t in range(length):
            done = t == length - 1
            transitions.append({
                "observations": {"state": states[t], "wrist_1": images[t]},
                "actions": actions[t], "next_observations": {"state": states[t + 1],
                                                             "wrist_1": images[t + 1]},
                "rewards": float(done), "masks": 1.0 - done, "dones": done,
                "infos": {"succeed": done}, "grasp_penalty": -0.02 * (t % 2)})
        episodes.append((states[:, 0], images[:, 0], actions))
    return transitions, episodes


def test_round_trip_values_keys_and_human_marking(tmp_path):
    transitions, truth = _hil_serl_transitions([4, 6, 3], np.random.default_rng(0))
    path = tmp_path / "demos.pkl"
    with open(path, "wb") as f:
        pickle.dump(transitions, f)
    paths = import_hil_serl_demos(str(path), str(tmp_path / "out"),
                                  obs_keys={"state": "state", "wrist_1": "pixels"})
    assert len(paths) == 3
    for p, (states, images, actions) in zip(paths, truth):
        ep = load_episode(p)
        np.testing.assert_array_equal(ep["observations"]["state"], states)
        np.testing.assert_array_equal(ep["observations"]["pixels"], images)
        np.testing.assert_array_equal(ep["actions"], actions)
        assert ep["terminals"][-1] and not ep["terminals"][:-1].any()
        assert ep["interventions"].all() and (ep["action_source"] == 2).all()
        np.testing.assert_allclose(ep["grasp_penalty"], -0.02 * (np.arange(len(actions)) % 2))
        assert ep["metadata"]["source"] == "hil_serl_demo"
    # A second import numbers after the files already there.
    more = import_hil_serl_demos(str(path), str(tmp_path / "out"))
    assert os.path.basename(more[0]) == "episode_000003.npz"


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_refuses_anything_but_arrays_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump([{"observations": _Exploit()}], f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_transitions(str(path))
    assert not (tmp_path / "pwned_marker").exists()
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(pickle.UnpicklingError):
        load_transitions(str(tmp_path / "junk.pkl"))


def test_broken_episodes_fail_clearly_and_write_nothing(tmp_path):
    transitions, _ = _hil_serl_transitions([4], np.random.default_rng(1))
    transitions[2]["observations"]["state"] = transitions[2]["observations"]["state"] + 1.0
    path = tmp_path / "broken.pkl"
    with open(path, "wb") as f:
        pickle.dump(transitions, f)
    with pytest.raises(ValueError, match="continuity"):
        import_hil_serl_demos(str(path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with open(path, "wb") as f:
        pickle.dump(_hil_serl_transitions([4], np.random.default_rng(2))[0][:3], f)
    with pytest.raises(ValueError, match="do not end with done"):
        import_hil_serl_demos(str(path), str(tmp_path / "out"))
