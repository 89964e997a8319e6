"""Cameras: crop/resize, latest-frame capture thread, stale-frame checks, UREnv images."""

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
