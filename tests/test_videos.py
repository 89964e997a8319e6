"""Evaluation videos (serl_ext/loop/video.py): an mp4 per filmed episode from the chosen camera,
with a side plot of the gate's step_info() for gated methods; skipped where MuJoCo cannot
render headless (as tests/test_envs.py::test_image_observations)."""


import numpy as np
import pytest

from configs.train import get_config
from serl_ext.envs import check_rendering
from serl_ext.loop.evaluation import run_episodes, training_video_spec
from serl_ext.loop.gate import POLICY, BaseGate
from serl_ext.loop.video import VideoSpec, overlay_plot

imageio = pytest.importorskip("imageio.v2")
pytest.importorskip("imageio_ffmpeg")


class _ZeroAgent:
    def eval_actions(self, obs):
        return np.zeros((4,), np.float32)


class _ScalarGate(BaseGate):
    """Passes the policy through and reports a value, a risk and a trigger every step."""

    eval_with_gate = True

    def __init__(self):
        self.t = 0

    def select_action(self, observation, policy_action):
        self.t += 1
        return policy_action, POLICY

    def step_info(self):
        return {"value": 0.1 * self.t, "risk_prob": 0.5, "triggered": self.t % 4 == 0}


def _config(tmp_path, steps=8):
    config = get_config("pick-place,hil_serl")
    config.run_root = str(tmp_path / "runs")
    config.env.max_episode_steps = steps
    return config


@pytest.fixture(scope="module")
def rendering_problem():
    """None when MuJoCo renders offscreen here, else the reason (probed once, in a subprocess)."""
    return check_rendering()


@pytest.fixture
def rendering(rendering_problem):
    if rendering_problem is not None:
        pytest.skip(rendering_problem)


def test_eval_episode_video_with_the_gate_side_plot(tmp_path, rendering):
    config = _config(tmp_path)
    spec = VideoSpec(directory=str(tmp_path / "videos"), name="eval_system_x", episodes=1, camera="topview",
                     size=64, fps=10)
    records = run_episodes(_ZeroAgent(), config, 2, gate=_ScalarGate(), video=spec)
    assert records[0]["video"] == str(tmp_path / "videos" / "eval_system_x_ep0.mp4")
    assert records[1]["video"] is None  # only the first episode is filmed
    frames = np.stack(imageio.mimread(records[0]["video"]))
    # One frame after reset and one per step; the side plot (32 px) below the 64 px frame.
    assert frames.shape == (9, 96, 64, 3)
    assert frames[:, :64].std() > 5.0  # the scene, not a blank image
    assert frames[:, 64:].max() > 100  # the plot's lines and legend
    # The cursor moves: two plot panels differ.
    assert np.abs(frames[1, 64:].astype(int) - frames[7, 64:].astype(int)).max() > 50


def test_policy_alone_video_has_no_side_plot_and_bad_camera_is_refused(tmp_path, rendering):
    config = _config(tmp_path, steps=3)
    spec = VideoSpec(directory=str(tmp_path / "v"), name="eval", size=32)
    [record] = run_episodes(_ZeroAgent(), config, 1, video=spec)
    assert np.stack(imageio.mimread(record["video"])).shape == (4, 32, 32, 3)
    with pytest.raises(ValueError, match="camera must be one of"):
        run_episodes(_ZeroAgent(), config, 1, video=VideoSpec(directory=str(tmp_path), name="x", camera="nope"))
    with pytest.raises(ValueError, match="multiple of 16"):
        VideoSpec(directory=str(tmp_path), name="x", size=30)


def test_overlay_shades_trigger_steps():
    from serl_ext.loop.video import _FLAG_COLOURS

    frames = [np.zeros((32, 32, 3), np.uint8) for _ in range(4)]
    infos = [{"triggered": t == 2, "recovery": t >= 2, "value": 0.5} for t in range(4)]
    out = overlay_plot(frames, infos)
    assert out[0].shape == (48, 32, 3)
    panel = out[0][32:]  # 16 rows; step 2 spans columns 21-31 of 32, step 0 columns 0-10
    background = (20, 20, 20)
    # Each bool key shades its steps in its own colour (the second as an inset band); the
    # value (0.5) is a line at row 13; unset steps keep the background.
    assert tuple(panel[15, 25]) == _FLAG_COLOURS[0] and tuple(panel[11, 25]) == _FLAG_COLOURS[1]
    assert tuple(panel[15, 10]) == background and tuple(panel[11, 10]) == background
    assert tuple(panel[13, 10]) == (80, 160, 255)
    assert overlay_plot(frames, [{}] * 4) is frames  # nothing to draw: unchanged


def test_training_videos_every_nth_evaluation(tmp_path, monkeypatch, rendering_problem):
    from serl_ext.loop import evaluation

    config = _config(tmp_path)
    assert training_video_spec(config, str(tmp_path), 0, 100) is None  # video_period=0: none
    config.logging.video_period = 2
    monkeypatch.setattr(evaluation, "_RENDERING_PROBLEM", {"problem": "no GL here"})
    assert training_video_spec(config, str(tmp_path), 0, 100) is None  # no rendering: off, no crash
    monkeypatch.setattr(evaluation, "_RENDERING_PROBLEM", {"problem": rendering_problem})
    if rendering_problem is not None:
        return
    spec = training_video_spec(config, str(tmp_path), 0, 100)
    assert spec.path(0) == str(tmp_path / "videos" / "eval_00000100_ep0.mp4")
    assert spec.camera == config.logging.video_camera and spec.episodes == 1
    assert training_video_spec(config, str(tmp_path), 1, 200) is None
    assert training_video_spec(config, str(tmp_path), 2, 300) is not None


def test_videos_are_logged_with_their_run_folder_path(tmp_path):
    from serl_ext.loop.logging import MetricLogger, read_jsonl

    logger = MetricLogger(str(tmp_path), "actor", tensorboard=False)
    logger.log_video("eval_system/video", str(tmp_path / "videos" / "eval_system_00000100_ep0.mp4"), 100)
    logger.close()
    [row] = read_jsonl(str(tmp_path / "metrics" / "actor.jsonl"))
    assert row["step"] == 100 and row["eval_system/video"] == "videos/eval_system_00000100_ep0.mp4"


class _NoRenderEnv:
    """Two steps, no rendering (render() is None, as a gymnasium env without render_mode)."""

    def reset(self, seed=None):
        self.t = 0
        return {"state": np.zeros(3, np.float32)}, {}

    def step(self, action):
        self.t += 1
        return {"state": np.zeros(3, np.float32)}, 0.0, False, self.t >= 2, {}

    def render(self):
        return None

    def close(self):
        pass


def test_an_env_that_cannot_render_fails_clearly_or_goes_unfilmed_in_training(tmp_path, monkeypatch):
    import dataclasses

    from serl_ext.loop import common

    monkeypatch.setattr(common, "make_env", lambda config, seed, with_operator: _NoRenderEnv())
    spec = VideoSpec(directory=str(tmp_path), name="x", size=32)
    with pytest.raises(RuntimeError, match="render_mode='rgb_array'"):
        run_episodes(_ZeroAgent(), _config(tmp_path), 1, video=spec)
    [record] = run_episodes(_ZeroAgent(), _config(tmp_path), 1, video=dataclasses.replace(spec, optional=True))
    assert record["video"] is None and record["length"] == 2
