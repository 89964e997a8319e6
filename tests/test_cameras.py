"""Cameras: crop/resize, latest-frame capture thread, stale-frame checks, UREnv images; the
simulated tasks' camera observations (issue 17 item 1): Meta-World's ``front`` / ``wrist`` keys,
per-camera crops as config data, the encoder's image keys following ``env.cameras``, random crop
on every camera, and the simulated UR5e's robosuite cameras."""

import sys
import threading
import time

import numpy as np
import pytest
from ml_collections import ConfigDict

from configs.robots import ur5e
from serl_ext.robots.cameras import (Camera, CameraRig, OpenCVCapture, StaleFrameError,
                                     crop_and_resize)
from serl_ext.robots.clock import LockstepClock
from serl_ext.robots.fake_rtde import KinematicArm, fake_rtde_factory
from serl_ext.robots.ur import UREnv, spaces_for


class ManualClock:
    def __init__(self):
        self.t = 0.0

    def now(self):
        return self.t


class ScriptedBackend:
    """Returns frames whose pixel value is a frame counter, stamped by ``stamp()``."""

    def __init__(self, shape=(48, 64, 3), stamp=None, delay_s=0.0):
        self.shape, self.stamp, self.delay_s = shape, stamp, delay_s
        self.count = 0
        self.closed = False
        self.running = threading.Event()
        self.running.set()

    def read(self):
        if self.delay_s:
            time.sleep(self.delay_s)
        while not self.running.wait(0.01):
            if self.closed:
                raise OSError("closed")
        self.count += 1
        frame = np.full(self.shape, self.count % 256, np.uint8)
        return frame, (self.stamp() if self.stamp is not None else None)

    def close(self):
        self.closed = True


def test_crop_then_resize():
    frame = np.zeros((40, 60, 3), np.uint8)
    frame[10:20, 30:50] = 200  # the region we crop
    out = crop_and_resize(frame, (10, 20, 30, 50), (5, 10))
    assert out.shape == (5, 10, 3) and out.dtype == np.uint8
    assert np.all(out == 200)
    assert crop_and_resize(frame, None, (40, 60)).shape == (40, 60, 3)
    with pytest.raises(ValueError, match="does not fit"):
        crop_and_resize(frame, (0, 50, 0, 10), (5, 5))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        crop_and_resize(np.zeros((4, 4)), None, (2, 2))


def test_threaded_camera_keeps_only_the_newest_frame():
    clock = ManualClock()
    backend = ScriptedBackend(delay_s=0.002)
    cam = Camera("front", backend, crop=None, size=(24, 32), clock=clock)
    try:
        deadline = time.monotonic() + 10.0
        while cam.latest()[2] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        backend.running.clear()  # hold the device, let the frame in flight land
        deadline = time.monotonic() + 10.0
        while cam.latest()[2] != backend.count and time.monotonic() < deadline:
            time.sleep(0.01)
        image, t, seq = cam.latest()
        assert image.shape == (24, 32, 3) and t == 0.0
        # Frames are never queued: what we get is the newest one the backend produced.
        assert seq == backend.count >= 5 and int(image[0, 0, 0]) == backend.count % 256
        backend.running.set()
        deadline = time.monotonic() + 10.0
        while cam.latest()[2] == seq and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cam.latest()[2] > seq
    finally:
        cam.close()
    assert backend.closed


def test_stale_frames_raise_or_are_flagged():
    clock = ManualClock()
    frame_t = {"t": 0.0}
    backend = ScriptedBackend(stamp=lambda: frame_t["t"])
    cam = Camera("wrist", backend, None, (8, 8), clock, threaded=False)
    rig = CameraRig([cam], max_age_s=0.1, on_stale="error")
    clock.t = 0.05
    images, stamps, stale = rig.read(clock.now())
    assert stamps == {"wrist": 0.0} and stale == [] and images["wrist"].shape == (8, 8, 3)
    clock.t = 0.3  # the camera is frozen at t = 0
    with pytest.raises(StaleFrameError, match="'wrist'.*300 ms old"):
        rig.read(clock.now())
    flagging = CameraRig([cam], max_age_s=0.1, on_stale="flag")
    images, stamps, stale = flagging.read(clock.now())
    assert stale == ["wrist"] and images["wrist"].shape == (8, 8, 3)
    frame_t["t"] = 0.29  # a fresh frame again
    assert flagging.read(clock.now())[2] == []


def test_no_frame_yet_counts_as_stale():
    class NeverBackend:
        def read(self):
            time.sleep(10.0)

        def close(self):
            pass

    cam = Camera("front", NeverBackend(), None, (4, 4), ManualClock())
    with pytest.raises(StaleFrameError, match="no frame"):
        CameraRig([cam], max_age_s=0.1).read(0.0)
    images, stamps, stale = CameraRig([cam], max_age_s=0.1, on_stale="flag").read(0.0)
    assert stale == ["front"] and np.isnan(stamps["front"]) and not images["front"].any()


def test_capture_errors_surface():
    class Broken:
        def read(self):
            raise OSError("unplugged")

        def close(self):
            pass

    cam = Camera("front", Broken(), None, (4, 4), ManualClock())
    cam._thread.join(timeout=5.0)
    with pytest.raises(RuntimeError, match="unplugged"):
        cam.latest()


def test_rig_config_errors_and_missing_opencv(monkeypatch):
    cams = ConfigDict({"a": ur5e.camera("gopro")})
    with pytest.raises(ValueError, match="backend must be"):
        CameraRig.from_config(cams, ManualClock(), 0.1, "error")
    with pytest.raises(ValueError, match="on_stale"):
        CameraRig([], 0.1, on_stale="ignore")
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[robot\]"):
        OpenCVCapture("0", 640, 480, 30, ManualClock())


def _camera_env(stamp_offset_s):
    cfg = ur5e.get_config()
    cfg.gripper.type = "none"
    cfg.control.servo_hz = 125.0
    cfg.reset.random_xyz = cfg.reset.random_rot = 0.0
    cfg.reset.settle_steps = 0
    cfg.cameras = ConfigDict({"front": ur5e.camera("opencv", size=(16, 16), crop=(0, 40, 0, 40)),
                              "wrist": ur5e.camera("realsense", size=(8, 12))})
    clock = LockstepClock(wall_timeout_s=30.0)
    arm = KinematicArm(cfg.reset.home_pose, clock=clock)
    clock.on_tick = arm.advance
    backends = {}

    def factory(name, cam_cfg, clk):
        backends[name] = ScriptedBackend(stamp=lambda: clk.now() - stamp_offset_s[name])
        return backends[name]

    rig = CameraRig.from_config(cfg.cameras, clock, cfg.camera_max_age_s, cfg.camera_on_stale,
                                backend_factory=factory)
    for cam in rig.cameras:  # deterministic for the test: grab at read time
        cam._stop.set()
        cam._thread.join(timeout=5.0)
        cam.threaded = False
    return UREnv(cfg, rtde_factory=fake_rtde_factory(arm), cameras=rig, clock=clock)


def test_urenv_returns_images_with_timestamps_and_checks_their_age():
    offsets = {"front": 0.0, "wrist": 0.02}
    env = _camera_env(offsets)
    try:
        assert env.observation_space["front"].shape == (16, 16, 3)
        obs_space, act_space = spaces_for(env.config)  # what the learner box builds, no robot
        assert obs_space == env.observation_space and act_space == env.action_space
        assert env.observation_space["wrist"].shape == (8, 12, 3)
        obs, info = env.reset(seed=0)
        assert obs["front"].dtype == np.uint8 and obs["wrist"].shape == (8, 12, 3)
        obs, _, _, _, info = env.step(np.zeros(7, np.float32))
        now = env.clock.now()
        assert info["obs_timestamps"]["front"] == pytest.approx(now)
        assert info["obs_timestamps"]["wrist"] == pytest.approx(now - 0.02)
        assert info["stale_cameras"] == []
        offsets["wrist"] = 0.5  # the wrist camera lags by 0.5 s
        with pytest.raises(StaleFrameError, match="'wrist'"):
            env.step(np.zeros(7, np.float32))
        assert env.control.arm.commands_named("servoStop"), "a stale frame stops the arm"
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(7, np.float32))
    finally:
        env.close()


# ------------------------------------------------------------------ simulated task cameras
def _needs_rendering():
    from serl_ext.envs import check_rendering

    reason = check_rendering()
    if reason:
        pytest.skip(reason)


def test_camera_keys_resolve_and_bad_ones_are_refused():
    from serl_ext.envs.metaworld_env import CAMERA_ALIASES, resolve_cameras

    assert resolve_cameras(None) == {"pixels": "corner"}  # the historical single image
    assert resolve_cameras(("pixels",), camera="topview") == {"pixels": "topview"}
    assert resolve_cameras(("front", "wrist")) == {"front": "corner", "wrist": "gripperPOV"}
    assert CAMERA_ALIASES == {"front": "corner", "wrist": "gripperPOV"}
    assert resolve_cameras(("corner4", "behindGripper")) == {"corner4": "corner4", "behindGripper": "behindGripper"}
    with pytest.raises(ValueError, match="unknown camera key 'side'"):
        resolve_cameras(("front", "side"))
    with pytest.raises(ValueError, match="given twice"):
        resolve_cameras(("wrist", "wrist"))
    with pytest.raises(ValueError, match="empty"):
        resolve_cameras(())
    with pytest.raises(ValueError, match="tuple of camera keys"):
        resolve_cameras("front")
    with pytest.raises(ValueError, match="camera must be one of"):
        resolve_cameras(None, camera="nope")


def test_camera_crops_are_validated_as_fractions():
    from serl_ext.envs.metaworld_env import check_camera_crops, crop_pixels, render_size_for

    keys = ("front", "wrist")
    assert check_camera_crops(None, keys) == {}
    assert check_camera_crops({"front": None, "corner3": None}, keys) == {}  # None: no crop, any key
    assert check_camera_crops(ConfigDict({"wrist": (0, 0.5, 0.25, 1)}), keys) == {"wrist": (0.0, 0.5, 0.25, 1.0)}
    bad = [({"topview": (0, 1, 0, 1)}, r"crop for 'topview', but the env's cameras are \('front', 'wrist'\)"),
           ({"wrist": (0, 1, 0)}, "must be 4 numbers"),
           ({"wrist": "0,1,0,1"}, "must be 4 numbers"),
           ({"wrist": (0, 1, 0, True)}, "must be 4 numbers"),
           ({"wrist": (0, float("nan"), 0, 1)}, "finite"),
           ({"wrist": (0, 100, 0, 100)}, "pixels are not accepted"),
           ({"wrist": (0.6, 0.2, 0, 1)}, "0 <= top < bottom <= 1"),
           ({"wrist": (0, 1, 0.5, 0.5)}, "0 <= left < right <= 1"),
           ((("wrist", (0, 1, 0, 1)),), "must be a mapping")]
    for crops, message in bad:
        with pytest.raises(ValueError, match=message):
            check_camera_crops(crops, keys)
    # A box holds at least S pixels along both sides before the resize (up to 1024).
    assert render_size_for(32, None) == 32
    assert render_size_for(32, (0.0, 0.5, 0.0, 1.0)) == 64
    assert render_size_for(128, (0.0, 0.01, 0.0, 1.0)) == 1024
    assert crop_pixels((0.0, 0.5, 0.25, 1.0), 64) == (0, 32, 16, 64)


def test_camera_config_errors_surface_from_the_config():
    from configs.train import get_config
    from serl_ext.loop.config_overrides import apply_overrides
    from serl_ext.loop.demo_folders import observation_tag

    config = get_config("pick-place,hil_serl_cameras")
    apply_overrides(config, ["env.camera_crops.wrist=(0, 100, 0, 100)"])
    with pytest.raises(ValueError, match=r"camera_crops\['wrist'\].*fractions"):
        observation_tag(config)
    config = get_config("pick-place,hil_serl_cameras")
    apply_overrides(config, ["env.camera_crops.topview=(0, 0.5, 0, 0.5)"])
    with pytest.raises(ValueError, match="crop for 'topview'"):
        observation_tag(config)


def test_metaworld_front_and_wrist_cameras_beside_proprioception():
    from serl_ext.envs import make_env

    _needs_rendering()
    env = make_env("pick-place", 0, image_obs=True, image_size=32, cameras=("front", "wrist"))
    legacy = make_env("pick-place", 0, image_obs=True, image_size=32)
    raw = make_env("pick-place", 0, image_obs=True, image_size=32, cameras=("corner", "gripperPOV"))
    try:
        spaces = env.observation_space.spaces
        assert sorted(spaces) == ["front", "state", "wrist"]
        assert spaces["front"].shape == spaces["wrist"].shape == (32, 32, 3) and spaces["front"].dtype == np.uint8
        assert spaces["state"].shape == (4,)  # hand xyz + gripper: no object state with images
        assert sorted(legacy.observation_space.spaces) == ["pixels", "state"]
        obs, _ = env.reset(seed=3)
        old, _ = legacy.reset(seed=3)
        named, _ = raw.reset(seed=3)
        assert sorted(obs) == ["front", "state", "wrist"]
        for key in ("front", "wrist"):
            assert obs[key].shape == (32, 32, 3) and obs[key].dtype == np.uint8 and obs[key].std() > 5
        assert not np.array_equal(obs["front"], obs["wrist"])
        np.testing.assert_array_equal(obs["front"], old["pixels"])  # front is the historical camera
        np.testing.assert_array_equal(obs["front"], named["corner"])
        np.testing.assert_array_equal(obs["wrist"], named["gripperPOV"])
        np.testing.assert_array_equal(obs["state"], old["state"])
        step, *_ = env.step(np.array([0.5, 0.0, -0.5, 1.0], np.float32))
        assert not np.array_equal(step["wrist"], obs["wrist"])  # the wrist camera moves with the hand
        assert env.unwrapped.image_keys == ("front", "wrist")
        np.testing.assert_array_equal(env.unwrapped.render_image("wrist"), step["wrist"])
        np.testing.assert_array_equal(env.unwrapped.render_image("gripperPOV"), step["wrist"])
        with pytest.raises(ValueError, match="renders the cameras"):
            env.unwrapped.render_image("topview")
    finally:
        for e in (env, legacy, raw):
            e.close()


def test_metaworld_crop_is_applied_before_the_resize():
    """A crop of the top-left quadrant at S = 32 renders the camera at 64 px and keeps the
    quadrant: exactly the top-left 32 x 32 pixels of the uncropped 64 px frame."""
    from serl_ext.envs import make_env

    _needs_rendering()
    cropped = make_env("pick-place", 0, image_obs=True, image_size=32, cameras=("front", "wrist"),
                       camera_crops={"front": (0.0, 0.5, 0.0, 0.5), "wrist": None})
    full = make_env("pick-place", 0, image_obs=True, image_size=64, cameras=("front",))
    try:
        obs, _ = cropped.reset(seed=5)
        ref, _ = full.reset(seed=5)
        assert obs["front"].shape == (32, 32, 3)
        np.testing.assert_array_equal(obs["front"], ref["front"][:32, :32])
        # a box that is not a quadrant is resized to S x S
        wide = make_env("pick-place", 0, image_obs=True, image_size=32, cameras=("wrist",),
                        camera_crops={"wrist": (0.25, 0.75, 0.0, 1.0)})
        try:
            frame, _ = wide.reset(seed=5)
            assert frame["wrist"].shape == (32, 32, 3) and frame["wrist"].std() > 5
        finally:
            wide.close()
    finally:
        cropped.close()
        full.close()


def test_encoder_image_keys_follow_the_env_cameras_and_every_camera_is_augmented():
    import jax
    import jax.numpy as jnp

    from configs.train import get_config
    from serl_ext.agents.common import augment_batch
    from serl_ext.loop.config_overrides import apply_overrides
    from serl_ext.envs.metaworld_env import camera_options

    config = get_config("pick-place,hil_serl_cameras")
    assert tuple(config.env.cameras) == ("front", "wrist") and int(config.env.image_size) == 128
    assert tuple(config.agent.encoder.image_keys) == ("front", "wrist")
    assert config.env.state_obs == "proprio" and config.env.image_obs
    apply_overrides(config, ["env.cameras=('wrist',)", "env.image_size=64"])
    assert tuple(config.agent.encoder.image_keys) == ("wrist",)
    assert camera_options(config.env)["cameras"] == ("wrist",)
    assert tuple(get_config("pick-place,hil_serl_pixels").agent.encoder.image_keys) == ("pixels",)
    assert tuple(get_config("pick-place,hil_serl").agent.encoder.image_keys) == ()
    assert camera_options(get_config("pick-place,hil_serl").env) == {}
    # random crop: every camera key of observations and next_observations, independently
    config = get_config("pick-place,hil_serl_cameras")
    rng = np.random.default_rng(0)
    image = lambda: jnp.asarray(rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8))  # noqa: E731
    batch = {f: {"state": jnp.zeros((4, 4)), "front": image(), "wrist": image()}
             for f in ("observations", "next_observations")}
    out = augment_batch(jax.random.PRNGKey(0), batch, config.agent.encoder)
    for field in ("observations", "next_observations"):
        for key in ("front", "wrist"):
            assert out[field][key].shape == (4, 16, 16, 3)
            assert not np.array_equal(np.asarray(out[field][key]), np.asarray(batch[field][key])), (field, key)
        np.testing.assert_array_equal(out[field]["state"], batch[field]["state"])


def test_ur5e_sim_cameras_front_and_wrist_without_privileged_state():
    pytest.importorskip("robosuite")
    from configs.train import get_config
    from serl_ext.envs import make_env
    from serl_ext.envs.robosuite_env import ProprioOnlyTask
    from serl_ext.envs.ur_tasks import ur_task_spaces
    from serl_ext.loop.demo_folders import observation_tag

    config = get_config("ur5e-sim-lift,hil_serl_cameras")
    assert {k: c.device for k, c in config.robot.cameras.items()} == {"front": "agentview", "wrist": "robot0_eye_in_hand"}
    assert all(tuple(c.size) == (128, 128) for c in config.robot.cameras.values())
    assert tuple(config.agent.encoder.image_keys) == ("front", "wrist") and not config.env.image_obs
    assert observation_tag(config) == "-cams-front128x128-wrist128x128-proprio"
    for cam in config.robot.cameras.values():  # small frames: fast on a CPU
        cam.width = cam.height = 24
        cam.size = (16, 16)
    obs_space, _ = ur_task_spaces(config.task, config.robot)
    assert obs_space["state"].shape == (19,) and obs_space["front"].shape == obs_space["wrist"].shape == (16, 16, 3)
    config.robot.privileged_state = True
    assert ur_task_spaces(config.task, config.robot)[0]["state"].shape == (25,)
    config.robot.privileged_state = False
    try:
        env = make_env(config.task, 0, robot=config.robot)
    except Exception as err:  # noqa: BLE001 - no EGL / OSMesa on this machine
        pytest.skip(f"offscreen rendering unavailable: {err!r}")
    try:
        assert env.observation_space == obs_space
        assert isinstance(env.unwrapped.task, ProprioOnlyTask)
        obs, info = env.reset(seed=0)
        assert "dense_reward" in info  # the operator's privileged progress still works
        obs, *_ = env.step(np.zeros(7, np.float32))
        assert obs["state"].shape == (19,)
        for key in ("front", "wrist"):
            assert obs[key].shape == (16, 16, 3) and obs[key].dtype == np.uint8 and obs[key].std() > 3
        assert not np.array_equal(obs["front"], obs["wrist"])
    finally:
        env.close()
