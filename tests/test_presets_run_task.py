"""Every preset runs from launchers/run_task.sh (issue 17 item 1): demos and episodes are
recorded with the same observation keys, each observation mode has its own demo folder, and a
demo folder of another mode gets a clear error instead of a buffer insert failure."""

import os
import subprocess

import numpy as np
import pytest

from configs.algorithms import ALGORITHMS
from configs.train import get_config
from launcher_runs import find_free_ports, read_run, run_task
from serl_ext.data.episodes import ObservationMismatchError, check_episode_fits, load_episodes_into_buffer, save_episode
from serl_ext.loop.config_overrides import apply_overrides
from serl_ext.loop.demo_folders import demo_dir_for, observation_tag

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_preset_composes_with_its_demo_folder(algorithm):
    """State presets keep demos/TASK (existing folders and benchmarks); the pixel preset gets its
    own folder; the folder follows the observation settings, not the algorithm's name."""
    config = get_config(f"pick-place,{algorithm}")
    folder = demo_dir_for(config)
    assert os.path.isabs(folder)
    size = int(config.env.image_size)
    if config.env.image_obs and tuple(config.env.cameras) == ("pixels",):
        assert folder == os.path.abspath(f"demos/pick-place-pixels{size}")
    elif config.env.image_obs:
        keys = "-".join(f"{key}{size}" for key in sorted(config.env.cameras))
        assert folder == os.path.abspath(f"demos/pick-place-cams-{keys}")
    else:
        assert folder == os.path.abspath("demos/pick-place")
    # The same env settings give the same folder, whatever the algorithm.
    state = get_config("pick-place,hil_serl")
    apply_overrides(state, ["env.image_obs=True", f"env.image_size={size}",
                            f"env.cameras={tuple(config.env.cameras)!r}"])
    if config.env.image_obs:
        assert demo_dir_for(state) == folder
    config.demos.path = "/somewhere/else"
    assert demo_dir_for(config) == "/somewhere/else"


def test_observation_tags_of_other_modes():
    config = get_config("pick-place,hil_serl")
    assert observation_tag(config) == ""
    apply_overrides(config, ["env.state_obs=proprio"])
    assert observation_tag(config) == "-proprio"
    apply_overrides(config, ["env.image_obs=true", "env.image_size=32", "env.state_obs=full"])
    assert observation_tag(config) == "-pixels32-full"
    apply_overrides(config, ["env.state_obs=bogus"])
    with pytest.raises(ValueError, match="state_obs"):
        observation_tag(config)
    # UR tasks: the task's own cameras keep the plain folder; other cameras get a suffix.
    ur = get_config("ur5e-sim-lift,hil_serl")
    assert observation_tag(ur) == ""
    from configs.robots.ur5e import camera

    ur.robot.cameras.front = camera("robosuite", device="frontview", width=64, height=64, size=(64, 64))
    assert observation_tag(ur) == "-cams-front64x64"
    assert observation_tag(get_config("ur:ur5e,hil_serl")) == ""  # its default cameras
    ur.robot.cameras.front.crop = (0, 60, 0, 60)
    assert observation_tag(ur).startswith("-cams-front64x64-crop")
    ur.robot.privileged_state = False
    assert observation_tag(ur).endswith("-proprio")


def test_camera_sets_sizes_and_crops_get_their_own_demo_folders():
    """A 64 px single-camera folder is never the default folder of a 128 px two-camera run,
    and any change of camera set, size or crop gives another folder."""
    tags = set()
    for overrides in ([], ["env.image_size=64"], ["env.cameras=('front',)"], ["env.cameras=('wrist', 'front')"],
                      ["env.camera_crops.wrist=(0.0, 0.8, 0.1, 0.9)"], ["env.camera_crops.wrist=(0.0, 0.8, 0.1, 0.8)"],
                      ["env.state_obs=full"]):
        config = get_config("pick-place,hil_serl_cameras")
        apply_overrides(config, overrides)
        tags.add(observation_tag(config))
    assert len(tags) == 6  # the reordered camera tuple is the same observation layout
    assert "-cams-front128-wrist128" in tags and "-cams-front128-wrist128-full" in tags
    assert observation_tag(get_config("pick-place,hil_serl_pixels")) == "-pixels64" not in tags


def test_a_single_camera_folder_for_a_two_camera_buffer_names_the_mismatch(tmp_path):
    from serl_ext.loop import common

    save_episode(tmp_path / "episode_000000.npz", _episode({"state": np.zeros((4, 4), np.float32),
                                                            "pixels": np.zeros((4, 64, 64, 3), np.uint8)}))
    image = ((128, 128, 3), np.dtype(np.uint8))
    spec = {"front": image, "wrist": image, "state": ((4,), np.dtype(np.float32))}
    buffer = common.make_buffer(spec, 4, 100, seed=0, with_extras=True)
    with pytest.raises(ObservationMismatchError) as info:
        load_episodes_into_buffer(str(tmp_path), buffer)
    message = str(info.value)
    assert "missing keys ['front', 'wrist']" in message and "does not have ['pixels']" in message
    assert len(buffer) == 0
    small = {"front": np.zeros((4, 64, 64, 3), np.uint8), "wrist": np.zeros((4, 64, 64, 3), np.uint8),
             "state": np.zeros((4, 4), np.float32)}
    with pytest.raises(ObservationMismatchError, match=r"'front' has shape \(64, 64, 3\), the buffer \(128, 128, 3\)"):
        check_episode_fits(_episode(small), spec)


def _episode(obs):
    T = 3
    return {"observations": obs, "actions": np.zeros((T, 4), np.float32), "rewards": np.zeros(T, np.float32),
            "terminals": np.array([0, 0, 1], bool), "truncations": np.zeros(T, bool),
            "interventions": np.zeros(T, bool), "action_source": np.full(T, 2, np.int8),
            "metadata": {"task": "pick-place"}}


def test_a_state_demo_folder_for_an_image_buffer_names_the_mismatch(tmp_path):
    from serl_ext.loop import common

    save_episode(tmp_path / "episode_000000.npz", _episode({"state": np.zeros((4, 39), np.float32)}))
    spec = {"pixels": ((32, 32, 3), np.dtype(np.uint8)), "state": ((4,), np.dtype(np.float32))}
    buffer = common.make_buffer(spec, 4, 100, seed=0, with_extras=True)
    with pytest.raises(ObservationMismatchError) as info:
        load_episodes_into_buffer(str(tmp_path), buffer)
    message = str(info.value)
    assert "episode_000000.npz" in message and "missing keys ['pixels']" in message
    assert "'state' has shape (39,), the buffer (4,)" in message and "state-only demos" in message
    assert len(buffer) == 0
    # A matching episode passes; an image key stored as float does not.
    check_episode_fits(_episode({"pixels": np.zeros((4, 32, 32, 3), np.uint8),
                                 "state": np.zeros((4, 4), np.float32)}), spec, 4)
    with pytest.raises(ObservationMismatchError, match="'pixels' is float32, the buffer uint8"):
        check_episode_fits(_episode({"pixels": np.zeros((4, 32, 32, 3), np.float32),
                                     "state": np.zeros((4, 4), np.float32)}), spec)
    with pytest.raises(ObservationMismatchError, match="actions have size 4, the buffer 7"):
        check_episode_fits(_episode({"state": np.zeros((4, 4), np.float32),
                                     "pixels": np.zeros((4, 32, 32, 3), np.uint8)}), spec, 7)


def _tiny_image_run_flags(steps):
    """Tiny networks, buffers and schedule of the image-preset run_task tests."""
    return [
        "--config.agent.hidden_dims=(16, 16)", "--config.agent.encoder.widths=(8, 8, 8, 8)",
        "--config.agent.encoder.latent_dim=16", "--config.agent.encoder.num_spatial_features=2",
        "--config.learner.batch_size=16", "--config.learner.training_starts=50",
        "--config.learner.replay_capacity=1000", "--config.learner.demo_capacity=1000",
        "--config.learner.publish_period=10", "--config.learner.checkpoint_period=0",
        f"--config.actor.max_env_steps={steps}", "--config.actor.eval_period=0",
        "--config.actor.eval_episodes=1", "--config.actor.steps_per_update=0",
    ]


@pytest.mark.timeout(600)
def test_run_task_trains_the_pixel_preset(tmp_path):
    """run_task.sh TASK,hil_serl_pixels: collect_demos records image demos (the run's env: 32 px
    camera + proprio), learner and actor train on them, every transition arrives. The backbone is
    frozen with its features cached per stored frame (``learner.cache_frame_features``; the
    two-camera test below trains the preset's default encoder)."""
    ports, steps = find_free_ports(2), 150
    demos = tmp_path / "demos"
    flags = [
        f"--config.run_root={tmp_path / 'runs'}", f"--config.demos.path={demos}", "--config.demos.num_demos=2",
        f"--config.transport.port={ports[0]}", f"--config.transport.broadcast_port={ports[1]}",
        "--config.env.image_size=32",
        *_tiny_image_run_flags(steps),
        "--config.agent.encoder.freeze=True", "--config.agent.encoder.augmentation=none",
        "--config.learner.cache_frame_features=True",
        "--config.logging.progress_bar=False",
    ]
    run_task("pick-place,hil_serl_pixels", flags, timeout=550)
    files = sorted(demos.glob("*.npz"))
    assert len(files) == 2
    with np.load(files[0]) as npz:
        assert npz["observations/pixels"].shape[1:] == (32, 32, 3)
        assert npz["observations/pixels"].dtype == np.uint8
        assert npz["observations/state"].shape[1:] == (4,)
    _, summary, learner_summary = read_run(tmp_path, "pick-place,hil_serl_pixels")
    assert summary["algorithm"] == "hil_serl_pixels" and summary["env_steps"] == steps
    assert learner_summary["replay_size"] == steps
    assert learner_summary["demo_size"] - summary["human_steps"] > 0  # the image demos are in
    assert learner_summary["learner_steps"] > 0
    # Each stored frame's features at most once (a transition adds at most 2 frames, an episode
    # start 1 more), far fewer than the 2 x batch x learner steps of sampled uses.
    computed = learner_summary["frame_features_computed"]
    stored = learner_summary["replay_size"] + learner_summary["demo_size"]
    assert 0 < computed <= 2 * stored
    assert computed < 2 * 16 * 2 * learner_summary["learner_steps"]
    assert learner_summary["frame_feature_bytes_per_frame"] > 8


@pytest.mark.timeout(600)
def test_run_task_trains_the_two_camera_preset(tmp_path):
    """run_task.sh TASK,hil_serl_cameras at 32 px: the demos carry the front and wrist frames
    beside proprioception, the episodes the actor records the same keys, and the run trains."""
    from serl_ext.loop import common

    # The loop's make_env passes the preset's cameras to the env.
    probe_config = get_config("pick-place,hil_serl_cameras")
    apply_overrides(probe_config, ["env.image_size=8"])
    probe = common.make_env(probe_config, 0, with_operator=False)
    keys = sorted(probe.observation_space.spaces)
    probe.close()
    assert keys == ["front", "state", "wrist"], keys
    ports, steps = find_free_ports(2), 120
    demos = tmp_path / "demos"
    flags = [
        f"--config.run_root={tmp_path / 'runs'}", f"--config.demos.path={demos}", "--config.demos.num_demos=2",
        f"--config.transport.port={ports[0]}", f"--config.transport.broadcast_port={ports[1]}",
        "--config.env.image_size=32", "--config.env.camera_crops.wrist=(0.0, 0.75, 0.0, 1.0)",
        *_tiny_image_run_flags(steps),
        "--config.env.max_episode_steps=40", "--config.actor.save_episodes=True",
        "--config.logging.progress_bar=False",
    ]
    run_task("pick-place,hil_serl_cameras", flags, timeout=550)
    run_dir, summary, learner_summary = read_run(tmp_path, "pick-place,hil_serl_cameras")
    recorded = sorted(demos.glob("*.npz")) + sorted((run_dir / "episodes").glob("*.npz"))
    assert len(recorded) >= 3
    for path in recorded:  # demos and the actor's episodes: the same keys and shapes
        with np.load(path) as npz:
            obs = sorted(k for k in npz.files if k.startswith("observations/"))
            assert obs == ["observations/front", "observations/state", "observations/wrist"], (path, obs)
            for key in ("front", "wrist"):
                assert npz[f"observations/{key}"].shape[1:] == (32, 32, 3)
                assert npz[f"observations/{key}"].dtype == np.uint8
            assert npz["observations/state"].shape[1:] == (4,)
    assert summary["algorithm"] == "hil_serl_cameras" and summary["env_steps"] == steps
    assert learner_summary["replay_size"] == steps
    assert learner_summary["demo_size"] - summary["human_steps"] > 0
    assert learner_summary["learner_steps"] > 0


def test_collect_demos_names_the_run_folder_and_skips_presets_without_demos(tmp_path):
    """What run_task.sh reads back from collect_demos.py (--dir_file): the pixel preset's own
    folder; sac (num_demos 0) collects nothing."""
    dir_file = tmp_path / "dir"
    run = subprocess.run(
        ["python", "launchers/collect_demos.py", "--task=pick-place", "--algorithm=sac", f"--dir_file={dir_file}",
         "--config.env.image_obs=True", "--config.env.image_size=48"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "nothing to do" in run.stdout
    assert dir_file.read_text().strip() == os.path.join(REPO, "demos", "pick-place-pixels48")
    assert not os.path.exists(os.path.join(REPO, "demos", "pick-place-pixels48"))
