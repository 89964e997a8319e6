"""Cameras for ``UREnv``: threaded capture with latest-frame semantics, crop, resize and a
staleness check against the control step.

- A *capture backend* has ``read() -> (frame uint8 (H, W, 3) RGB, t float or None)`` (blocking
  until a frame arrives; ``t`` on the env's clock, None = stamp at arrival) and ``close()``.
  ``OpenCVCapture`` (``cv2.VideoCapture``) and ``RealSenseCapture`` (pyrealsense2) are the
  real ones; tests inject their own.
- ``Camera`` runs one backend in a daemon thread and keeps only the newest frame (older
  frames are dropped, never queued), already cropped and resized.
- ``CameraRig`` reads every camera at the control step and checks each frame's age:
  older than ``max_age_s`` -> ``StaleFrameError`` (``on_stale="error"``) or the camera's
  name in the returned stale list (``on_stale="flag"``; the frame is still returned).

opencv and pyrealsense2 are imported lazily (``pip install -e .[robot]``).
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np


class StaleFrameError(RuntimeError):
    """A camera's newest frame is older than allowed (or no frame ever arrived)."""


def crop_and_resize(frame: np.ndarray, crop: Optional[Tuple[int, int, int, int]],
                    size: Tuple[int, int]) -> np.ndarray:
    """Crops ``(top, bottom, left, right)`` then resizes to ``size = (height, width)``.

    Uses ``cv2.resize`` (area interpolation) when opencv is installed, else nearest
    neighbour in numpy.

    Args:
        frame: uint8 (H, W, 3).
    Returns:
        uint8 (size[0], size[1], 3).
    Raises:
        ValueError: a frame that is not (H, W, 3), or a crop outside the frame / empty.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3), got {frame.shape}")
    if crop is not None:
        top, bottom, left, right = (int(v) for v in crop)
        h, w = frame.shape[:2]
        if not (0 <= top < bottom <= h and 0 <= left < right <= w):
            raise ValueError(f"crop {crop} does not fit a {h}x{w} frame")
        frame = frame[top:bottom, left:right]
    out_h, out_w = int(size[0]), int(size[1])
    if frame.shape[:2] == (out_h, out_w):
        return np.ascontiguousarray(frame, dtype=np.uint8)
    try:
        import cv2

        return cv2.resize(np.ascontiguousarray(frame, np.uint8), (out_w, out_h), interpolation=cv2.INTER_AREA)
    except ImportError:
        rows = (np.arange(out_h) * frame.shape[0] / out_h).astype(int)
        cols = (np.arange(out_w) * frame.shape[1] / out_w).astype(int)
        return np.ascontiguousarray(frame[rows][:, cols], dtype=np.uint8)


class OpenCVCapture:
    """``cv2.VideoCapture`` backend (USB webcams, V4L2 devices); frames converted BGR -> RGB.

    Args:
        device: index (``"0"``) or path/URL.
        width, height, fps: requested mode. clock: stamps frames at arrival (``now()``).
    Raises:
        ImportError: opencv missing (``pip install -e .[robot]``).
        RuntimeError: the device does not open.
    """

    def __init__(self, device: str, width: int, height: int, fps: int, clock):
        try:
            import cv2
        except ImportError as err:
            raise ImportError("OpenCV cameras need opencv (`pip install -e .[robot]`)") from err
        self._cv2 = cv2
        source = int(device) if str(device).isdigit() else device
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            raise RuntimeError(f"could not open camera {device!r} with OpenCV")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._cap.set(cv2.CAP_PROP_FPS, fps)
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver queue short: latest frame
        self._clock = clock

    def read(self):
        ok, frame = self._cap.read()
        if not ok:
            raise RuntimeError("OpenCV camera read failed")
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB), self._clock.now()

    def close(self) -> None:
        self._cap.release()


class RealSenseCapture:
    """Intel RealSense colour stream (pyrealsense2), RGB8.

    Args:
        serial: device serial number; "" = the first device.
        width, height, fps: the colour stream mode. clock: stamps frames at arrival.
    Raises:
        ImportError: pyrealsense2 missing (``pip install pyrealsense2``).
    """

    def __init__(self, serial: str, width: int, height: int, fps: int, clock):
        try:
            import pyrealsense2 as rs
        except ImportError as err:
            raise ImportError("RealSense cameras need pyrealsense2 (`pip install pyrealsense2`)") from err
        self._pipeline = rs.pipeline()
        cfg = rs.config()
        if serial:
            cfg.enable_device(serial)
        cfg.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        self._pipeline.start(cfg)
        self._clock = clock

    def read(self):
        frames = self._pipeline.wait_for_frames()
        color = frames.get_color_frame()
        return np.asanyarray(color.get_data()).copy(), self._clock.now()

    def close(self) -> None:
        self._pipeline.stop()


class Camera:
    """One camera: a capture thread keeping the newest processed frame.

    Args:
        name: observation key.
        backend: capture backend (see the module docstring).
        crop, size: see ``crop_and_resize``.
        clock: stamps frames whose backend gives ``t=None``.
        threaded: False reads the backend synchronously in ``latest()`` (simulated cameras
            that render on demand).
    """

    def __init__(self, name: str, backend, crop, size, clock, threaded: bool = True):
        self.name, self.backend = name, backend
        self.crop = None if crop is None else tuple(int(v) for v in crop)
        self.size = (int(size[0]), int(size[1]))
        self.clock = clock
        self.threaded = threaded
        self._lock = threading.Lock()
        self._frame: Optional[np.ndarray] = None
        self._t: Optional[float] = None
        self._seq = 0
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name=f"camera-{name}", daemon=True)
            self._thread.start()

    def _grab(self):
        frame, t = self.backend.read()
        image = crop_and_resize(frame, self.crop, self.size)
        return image, (self.clock.now() if t is None else float(t))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                image, t = self._grab()
            except BaseException as err:  # reported by latest()
                self._error = err
                return
            with self._lock:
                self._frame, self._t, self._seq = image, t, self._seq + 1

    def latest(self) -> Tuple[Optional[np.ndarray], Optional[float], int]:
        """``(image uint8 (h, w, 3) or None, capture time or None, sequence number)``.

        Raises:
            RuntimeError: the capture thread died (the backend's error is chained).
        """
        if not self.threaded:
            image, t = self._grab()
            with self._lock:
                self._frame, self._t, self._seq = image, t, self._seq + 1
        if self._error is not None:
            raise RuntimeError(f"camera {self.name!r} capture failed: {self._error!r}") from self._error
        with self._lock:
            return self._frame, self._t, self._seq

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        try:
            self.backend.close()
        except Exception:  # pragma: no cover - device dependent
            pass


class CameraRig:
    """The cameras of an env, read together at each control step.

    Args:
        cameras: list of ``Camera``.
        max_age_s: largest allowed ``now - capture time`` (s).
        on_stale: ``"error"`` or ``"flag"``.
    Raises:
        ValueError: duplicate names, ``max_age_s <= 0`` or an unknown ``on_stale``.
    """

    def __init__(self, cameras: List[Camera], max_age_s: float, on_stale: str = "error"):
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        if "state" in names:
            raise ValueError("'state' is reserved for the proprioceptive observation")
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        if on_stale not in ("error", "flag"):
            raise ValueError(f"on_stale must be 'error' or 'flag', got {on_stale!r}")
        self.cameras = list(cameras)
        self.max_age_s, self.on_stale = float(max_age_s), on_stale

    @classmethod
    def from_config(cls, cameras_cfg: Mapping, clock, max_age_s: float, on_stale: str,
                    backend_factory: Optional[Callable] = None) -> "CameraRig":
        """Builds the rig from ``config.cameras`` (see ``configs/robots/ur5e.py``).

        ``backend_factory(name, cfg, clock) -> backend`` replaces the OpenCV / RealSense
        backends (tests, simulation).
        """
        cams = []
        for name in sorted(cameras_cfg.keys()):
            cfg = cameras_cfg[name]
            if backend_factory is not None:
                backend = backend_factory(name, cfg, clock)
            elif cfg.backend == "opencv":
                backend = OpenCVCapture(cfg.device, cfg.width, cfg.height, cfg.fps, clock)
            elif cfg.backend == "realsense":
                backend = RealSenseCapture(cfg.device, cfg.width, cfg.height, cfg.fps, clock)
            else:
                raise ValueError(f"camera {name!r}: backend must be 'opencv' or 'realsense', got {cfg.backend!r}")
            cams.append(Camera(name, backend, cfg.crop, cfg.size, clock))
        return cls(cams, max_age_s, on_stale)

    def shapes(self) -> Dict[str, tuple]:
        return {c.name: (c.size[0], c.size[1], 3) for c in self.cameras}

    def read(self, now: float) -> Tuple[Dict[str, np.ndarray], Dict[str, float], List[str]]:
        """Newest frame of every camera at control time ``now``.

        Returns:
            ``(images {name: uint8 (h, w, 3)}, timestamps {name: s}, stale names)``; a camera
            with no frame yet gives zeros and ``nan`` (and counts as stale).
        Raises:
            StaleFrameError: with ``on_stale="error"``, when a frame is older than ``max_age_s``
                or missing (the message names the camera and the age).
        """
        images, stamps, stale = {}, {}, []
        for cam in self.cameras:
            image, t, _ = cam.latest()
            if image is None:
                age = float("inf")
                image, t = np.zeros((cam.size[0], cam.size[1], 3), np.uint8), float("nan")
            else:
                age = now - t
            if age > self.max_age_s:
                if self.on_stale == "error":
                    raise StaleFrameError(
                        f"camera {cam.name!r}: newest frame is {age * 1e3:.0f} ms old at the control step "
                        f"(limit {self.max_age_s * 1e3:.0f} ms)" if np.isfinite(age) else
                        f"camera {cam.name!r}: no frame received yet")
                stale.append(cam.name)
            images[cam.name], stamps[cam.name] = image, float(t)
        return images, stamps, stale

    def close(self) -> None:
        for cam in self.cameras:
            cam.close()
