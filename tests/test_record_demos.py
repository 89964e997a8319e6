"""Demos recorded by a person (issue 17 item 4), tested with a scripted input device: which
episodes are written, their keys, shapes and success labels, and that re-recorded and quit
episodes leave no file."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from serl_ext.data.episodes import (ObservationMismatchError, list_episodes, load_episode,
                                    load_episodes_into_buffer, save_episode)
from serl_ext.loop.recording import KeyTap, ScriptedInput, record_demos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _ReachEnv(gym.Env):
    """Move the hand along +x: success when x > 0.25 (terminates when ``terminate``)."""

    def __init__(self, dim=4, max_steps=20, terminate=True):
        self.observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-10, 10, (3,), np.float32)})
        self.action_space = gym.spaces.Box(-1, 1, (dim,), np.float32)
        self.max_steps, self.terminate = max_steps, terminate
        self.seeds, self.actions = [], []

    def reset(self, seed=None, options=None):
        self.seeds.append(seed)
        self.pos, self.t = np.zeros(3, np.float32), 0
        return {"state": self.pos.copy()}, {}

    def step(self, action):
        self.actions.append(np.asarray(action, np.float32).copy())
        self.pos = self.pos + 0.1 * np.asarray(action[:3], np.float32)
        self.t += 1
        success = bool(self.pos[0] > 0.25)
        info = {"success": success, "dense_reward": float(self.pos[0])}
        return ({"state": self.pos.copy()}, float(success), success and self.terminate,
                self.t >= self.max_steps, info)


def _record(tmp_path, script, input_kind="keyboard", dim=4, num_demos=2, **kwargs):
    device = ScriptedInput(script)
    envs, env_kwargs = [], kwargs.pop("env_kwargs", {})

    def make_env(seed):
        envs.append(_ReachEnv(dim, **env_kwargs))
        return envs[-1]

    report = record_demos(make_env, str(tmp_path / "demos"), num_demos, input_kind=input_kind,
                          key_source=device.keys, device=device if input_kind == "spacemouse" else None,
                          seed_for=lambda k: 100 + k, metadata={"task": "reach", "source": "teleop"},
                          log=lambda line: None, **kwargs)
    return report, envs


def test_keyboard_success_rerecord_failure_through_a_scripted_device(tmp_path):
    script = (
        [{"keys": "d"}, {"keys": "w"}, {"keys": "y"}]              # scene 0: success
        + [{"keys": "d"}, {"keys": "x"}]                           # scene 1: re-record
        + [{"keys": "d"}, {}, {"keys": "n"}]                       # scene 1 again: failure
        + [{"keys": " "}, {}, {"keys": "dy"}]                      # scene 2: gripper, success
    )
    report, envs = _record(tmp_path, script, keep_failures=True)
    demos = tmp_path / "demos"
    assert [os.path.basename(p) for p in report.written] == ["episode_000000.npz", "episode_000001.npz"]
    assert list_episodes(demos) == report.written  # nothing else in the demo folder
    assert report.rerecorded == 1 and report.ended_by == "done" and report.lengths == [3, 3]
    assert [os.path.relpath(p, demos) for p in report.failures_written] == ["failures/episode_000000.npz"]
    # A re-recorded scene is reset with the same seed; success and failure move on.
    assert [e.seeds for e in envs] == [[100], [101], [101], [102]]

    first, second = (load_episode(p) for p in report.written)
    assert first["metadata"]["success"] and first["metadata"]["end"] == "success_mark"
    assert first["metadata"]["task"] == "reach" and first["metadata"]["source"] == "teleop"
    assert first["metadata"]["episode_id"] == 0 and first["metadata"]["seed"] == 100
    np.testing.assert_array_equal(first["actions"][:, :3], [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    assert first["actions"][:, 3].tolist() == [-1, -1, -1]  # Meta-World: open until a command
    assert first["observations"]["state"].shape == (4, 3)
    assert first["terminals"].tolist() == [False, False, True] and not first["truncations"].any()
    assert first["rewards"][-1] == 1.0 and first["success"].tolist() == [False, False, True]
    assert (first["action_source"] == 2).all() and not first["interventions"].any()
    assert {k for k in first if k not in ("observations", "metadata")} == {
        "actions", "rewards", "terminals", "truncations", "interventions", "action_source",
        "success", "dense_reward", "grasp_penalty"}
    # Space closed the gripper; the idle step after it keeps the command.
    assert second["actions"][:, 3].tolist() == [1, 1, 1] and second["metadata"]["human_input_steps"] == 2
    failure = load_episode(report.failures_written[0])
    assert not failure["metadata"]["success"] and failure["metadata"]["end"] == "failure_mark"
    assert failure["truncations"][-1] and not failure["terminals"].any()


def test_simulator_success_ends_the_episode_and_failures_are_dropped(tmp_path):
    # Scene 0: three steps right reach x > 0.25, the env terminates with success (no key).
    # Scene 1: the time limit (4 steps) without success: a failure, dropped (no keep_failures).
    script = [{"motion": [1, 0, 0]}] * 3 + [{}] * 4 + [{"motion": [1, 0, 0], "buttons": [1]}] * 3
    report, envs = _record(tmp_path, script, input_kind="spacemouse", num_demos=2,
                           env_kwargs={"max_steps": 4})
    assert report.failures_dropped == 1 and not (tmp_path / "demos" / "failures").exists()
    assert len(report.written) == 2
    first, second = (load_episode(p) for p in report.written)
    assert first["metadata"]["end"] == "env_success" and first["terminals"][-1]
    assert second["actions"][:, 3].tolist() == [1, 1, 1]  # left button: close
    # end_on_success also ends an env that does not terminate on success.
    report, _ = _record(tmp_path / "b", [{"motion": [1, 0, 0]}] * 3, input_kind="spacemouse", num_demos=1,
                        env_kwargs={"terminate": False})
    episode = load_episode(report.written[0])
    assert episode["metadata"]["end"] == "env_success" and episode["terminals"].tolist() == [False, False, True]


def test_quit_and_an_exhausted_script_leave_no_partial_file(tmp_path):
    report, _ = _record(tmp_path, [{"keys": "d"}, {"keys": "q"}, {"keys": "y"}])
    assert report.ended_by == "quit" and report.written == [] and list_episodes(tmp_path / "demos") == []
    report, _ = _record(tmp_path / "b", [{"keys": "d"}, {"keys": "y"}, {"keys": "d"}])
    assert report.ended_by == "input_ended" and len(report.written) == 1


def test_seven_dof_spacemouse_marks_and_existing_demos_count(tmp_path):
    """UR-style 7-D actions through SpaceMouse6Intervention: the y / n keys are its marks too."""
    script = [{"motion": [0, 0, 1, 0, 0, 0]}, {"keys": "y"}, {"motion": [0, 0, 0, 0, 0, 1]}, {"keys": "y"}]
    report, _ = _record(tmp_path, script, input_kind="spacemouse", dim=7, num_demos=1)
    episode = load_episode(report.written[0])
    assert episode["actions"].shape == (2, 7) and episode["terminals"][-1] and episode["metadata"]["success"]
    assert episode["actions"][0, 2] > 0.9  # dz (no base_to_action_frame on this env)
    # The folder already holds one demo: a second session adds the next id only.
    report, _ = _record(tmp_path, script[2:], input_kind="spacemouse", dim=7, num_demos=2)
    assert [os.path.basename(p) for p in report.written] == ["episode_000001.npz"]


def test_a_folder_of_another_observation_mode_is_refused(tmp_path):
    other = {"observations": {"state": np.zeros((2, 39), np.float32)}, "actions": np.zeros((1, 4), np.float32),
             "rewards": np.zeros(1, np.float32), "terminals": np.ones(1, bool), "truncations": np.zeros(1, bool),
             "interventions": np.zeros(1, bool), "action_source": np.full(1, 2, np.int8)}
    os.makedirs(tmp_path / "demos")
    save_episode(tmp_path / "demos" / "episode_000000.npz", other)
    with pytest.raises(ObservationMismatchError, match=r"'state' has shape \(39,\), the env \(3,\)"):
        _record(tmp_path, [{"keys": "y"}])


def test_scripted_input_rejects_bad_steps(tmp_path):
    with pytest.raises(ValueError, match="unknown entries"):
        ScriptedInput([{"mouse": [1]}])
    with pytest.raises(ValueError, match="at most 6"):
        ScriptedInput([{"motion": [0] * 7}])
    path = tmp_path / "s.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ScriptedInput.from_json(str(path))
    tap = KeyTap(lambda: ["a", "y"])
    assert tap() == ["a", "y"] and tap.calls == 1 and tap.take() == ["a", "y"] and tap.take() == []


@pytest.mark.timeout(300)
def test_record_demos_command_writes_what_collect_demos_writes(tmp_path):
    """launchers/record_demos.py on pick-place with a scripted keyboard: the demo file has the
    members and dtypes of a collect_demos.py demo, and the learner's buffer loads both."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"steps": [{"keys": "r"}, {"keys": "x"}, {"keys": "d"}, {"keys": "sy"}]}))
    recorded, scripted = tmp_path / "recorded", tmp_path / "scripted"
    run = subprocess.run(
        [sys.executable, "launchers/record_demos.py", "--task=pick-place", "--input=keyboard", "--num_demos=1",
         f"--out={recorded}", f"--script={script}", "--config.env.max_episode_steps=30"],
        cwd=REPO, capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "wrote 1 demos" in run.stdout and "1 re-recorded" in run.stdout
    collect = subprocess.run(
        [sys.executable, "launchers/collect_demos.py", "--task=pick-place", "--num_demos=1", f"--out={scripted}"],
        cwd=REPO, capture_output=True, text=True, timeout=200)
    assert collect.returncode == 0, collect.stderr[-3000:]
    (path,), (reference,) = list_episodes(recorded), list_episodes(scripted)
    with np.load(path) as a, np.load(reference) as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            if name != "header":
                assert a[name].dtype == b[name].dtype and a[name].shape[1:] == b[name].shape[1:], name
    episode = load_episode(path)
    assert episode["metadata"]["task"] == "pick-place" and episode["metadata"]["input"] == "keyboard"
    assert episode["metadata"]["success"] and episode["metadata"]["action_repeat"] == 4
    np.testing.assert_array_equal(episode["actions"][:, :3], [[1, 0, 0], [0, -1, 0]])

    from serl_ext.loop import common

    spec = {"state": ((39,), np.dtype(np.float32))}
    buffer = common.make_buffer(spec, 4, 1000, seed=0, with_extras=True)
    assert load_episodes_into_buffer([path, reference], buffer) == len(episode["actions"]) + len(
        load_episode(reference)["actions"])


def test_viewer_window_shows_frames_and_gives_its_keys(monkeypatch):
    """ViewerWindow with a stand-in cv2 (no display here): frames resized and shown, the keys
    typed into the window become a key source; an env without a renderer turns the view off."""
    import types

    from serl_ext.loop.recording import MergedKeys, ViewerWindow

    shown, codes = [], iter([ord("y"), -1])
    fake = types.SimpleNamespace(
        INTER_NEAREST=0, resize=lambda frame, size, interpolation: np.zeros((*size, 3), np.uint8),
        imshow=lambda title, frame: shown.append(frame.shape), waitKey=lambda ms: next(codes),
        destroyAllWindows=lambda: None)
    monkeypatch.setitem(sys.modules, "cv2", fake)

    class _Rendered(_ReachEnv):
        def render(self):
            return np.zeros((8, 8, 3), np.uint8)

    viewer = ViewerWindow(size=32)
    viewer(_Rendered())
    viewer(_Rendered())
    assert shown == [(32, 32, 3), (32, 32, 3)]
    assert MergedKeys(lambda: ["d"], viewer.keys)() == ["d", "y"] and viewer.keys() == []
    viewer(_ReachEnv())  # gym.Env.render() raises NotImplementedError: the view goes off
    viewer(_Rendered())
    assert len(shown) == 2
