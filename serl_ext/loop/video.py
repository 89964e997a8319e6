"""Evaluation videos: frames from a chosen camera, an optional side plot of a gate's per-step
scalars (:meth:`serl_ext.loop.gate.Gate.step_info`), written as mp4 (imageio + imageio-ffmpeg,
``pip install -e .[video]``).

Rendering is MuJoCo's offscreen renderer, headless with EGL or OSMesa (``MUJOCO_GL``;
:func:`serl_ext.envs.check_rendering` probes it). A recorder owns its own renderer, so the
camera of a video is independent of the env's image observation.
"""

import dataclasses
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

# Colours of the plotted series (RGB), in the order the keys first appear.
_COLOURS = [(80, 160, 255), (255, 120, 60), (120, 220, 120), (230, 200, 60), (200, 120, 230)]
_TRIGGER_COLOUR = (150, 30, 30)
_FLAG_COLOURS = [_TRIGGER_COLOUR, (30, 80, 140), (30, 120, 60), (120, 100, 20)]  # shades of bool keys


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """What to record in an evaluation.

    Attributes:
      directory: folder of the mp4 files (created).
      name: file name stem; episode ``i`` goes to ``{directory}/{name}_ep{i}.mp4``.
      episodes: record the first this many episodes of the evaluation.
      camera: a camera of the env (Meta-World: ``serl_ext.envs.metaworld_env.CAMERAS``).
      size: frame width and height in pixels (a multiple of 16, for the H.264 encoder).
      fps: frames per second (one frame per agent step; 20 = the 20 Hz control rate).
      optional: True (the actor's training-time videos): a recorder that cannot render logs a
        warning and the episode goes on unfilmed; False: the error is raised.
    """

    directory: str
    name: str
    episodes: int = 1
    camera: str = "corner"
    size: int = 256
    fps: int = 20
    optional: bool = False

    def __post_init__(self):
        if int(self.size) < 16 or int(self.size) % 16:
            raise ValueError(f"video size must be a multiple of 16 (>= 16), got {self.size}")
        if int(self.fps) < 1:
            raise ValueError(f"video fps must be >= 1, got {self.fps}")

    def path(self, episode: int) -> str:
        return os.path.join(self.directory, f"{self.name}_ep{int(episode)}.mp4")


def spec_from_config(config, directory: str, name: str, episodes: Optional[int] = None,
                     camera: Optional[str] = None) -> VideoSpec:
    """A :class:`VideoSpec` from ``config.logging.video_*`` (arguments override)."""
    lg = config.logging
    return VideoSpec(directory=directory, name=name,
                     episodes=int(lg.get("video_episodes", 1) if episodes is None else episodes),
                     camera=str(camera or lg.get("video_camera", "corner")),
                     size=int(lg.get("video_size", 256)), fps=int(lg.get("video_fps", 20)))


class VideoRecorder:
    """Collects one episode's frames and per-step scalars, then writes the mp4.

    Args:
      env: the evaluation env (a Meta-World stack from ``serl_ext.envs.make_env``; another env
        with ``render()`` returning an RGB array is filmed through that, camera ignored).
      spec: the :class:`VideoSpec`.
    Raises:
      ValueError: an unknown camera (the message lists the env's cameras).
      RuntimeError: rendering unavailable (the message says what ``MUJOCO_GL`` was).
    """

    def __init__(self, env, spec: VideoSpec):
        self.spec = spec
        self._frames: List[np.ndarray] = []
        self._infos: List[Dict[str, float]] = []
        self._renderer, self._data, self._env = None, None, env
        base = _metaworld_base(env)
        if base is not None:
            from serl_ext.envs.metaworld_env import CAMERAS, _FastRenderer

            if spec.camera not in CAMERAS:
                raise ValueError(f"video camera must be one of {CAMERAS}, got {spec.camera!r}")
            try:
                self._renderer = _FastRenderer(base._mw.model, int(spec.size), spec.camera)
            except Exception as e:  # noqa: BLE001 - the GL back end is missing or broken
                raise RuntimeError(f"cannot render video frames with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: "
                                   f"{type(e).__name__}: {e}") from e
            self._data = base._mw.data

    def frame(self, step_info: Optional[Mapping[str, Any]] = None) -> None:
        """Renders the env's current state (call after reset and after each step) and keeps
        ``step_info`` (the gate's scalars for the step that follows; {} or None: none)."""
        if self._renderer is not None:
            image = self._renderer.render(self._data)
        else:
            image = np.asarray(self._env.render())
            if image.ndim != 3:
                raise RuntimeError(f"env.render() gave {image.shape if image.ndim else image!r}, not an RGB image "
                                   "(an env without render_mode='rgb_array' cannot be filmed)")
            image = _resize(image, int(self.spec.size))
        self._frames.append(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
        self._infos.append({str(k): (bool(v) if isinstance(v, (bool, np.bool_)) else float(v))
                            for k, v in (step_info or {}).items()
                            if isinstance(v, (bool, int, float, np.number, np.bool_))})

    def write(self, path: str) -> str:
        """Writes the mp4 (side plot below the frames when any step had scalars); returns path."""
        import imageio.v2 as imageio

        if not self._frames:
            raise ValueError("no frames recorded")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        frames = overlay_plot(self._frames, self._infos)
        with warnings.catch_warnings():  # imageio-ffmpeg starts ffmpeg (fork + exec: no JAX in the child)
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            with imageio.get_writer(path, fps=int(self.spec.fps), codec="libx264", macro_block_size=16,
                                    ffmpeg_log_level="error") as writer:
                for image in frames:
                    writer.append_data(image)
        return path

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _metaworld_base(env):
    try:
        from serl_ext.envs.metaworld_env import get_base_env

        base = get_base_env(env)
    except Exception:  # noqa: BLE001 - not a Meta-World stack
        return None
    return base if hasattr(base, "_mw") else None


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image[..., :3].astype(np.uint8)).resize((size, size)))


def overlay_plot(frames: List[np.ndarray], infos: List[Dict[str, float]]) -> List[np.ndarray]:
    """Adds a side plot below each frame of the scalars in ``infos`` (one dict per frame).

    Flags shade the steps where they are set, each in its own colour: keys whose values are all
    bools (e.g. ``triggered``, ``recovery``), and keys naming a trigger whose values are all 0/1;
    the other scalars are drawn as lines (those within [0, 1] on that scale, others
    scaled to their own range), each with its current value in the legend; a white cursor marks
    the frame's step. No scalars at all: the frames unchanged.
    """
    keys: List[str] = []
    for info in infos:
        keys.extend(k for k in info if k not in keys)
    if not keys:
        return frames
    from PIL import Image, ImageDraw

    height, width = frames[0].shape[:2]
    panel_h = max(16, (height // 32) * 16)
    n = len(frames)
    series = {k: np.array([info.get(k, np.nan) for info in infos], dtype=np.float64) for k in keys}
    booleans = [k for k in keys if all(isinstance(info[k], (bool, np.bool_)) for info in infos if k in info)]
    flags = [k for k in keys if k in booleans or (
        "trigger" in k.lower() and set(np.unique(series[k][np.isfinite(series[k])])) <= {0.0, 1.0})]
    lines = [k for k in keys if k not in flags]

    def x_of(t):
        return int(round(t * (width - 1) / max(n - 1, 1)))

    background = Image.new("RGB", (width, panel_h), (20, 20, 20))
    draw = ImageDraw.Draw(background)
    for i, k in enumerate(flags):  # later flags are drawn as thinner bands, so overlaps stay visible
        inset = min(i * 3, panel_h // 3)
        for t in np.flatnonzero(series[k] > 0.5):
            draw.rectangle([x_of(t), inset, x_of(t + 1), panel_h - 1 - inset], fill=_FLAG_COLOURS[i % len(_FLAG_COLOURS)])
    top, bottom = 12, panel_h - 2
    scaled = {}
    for k in lines:
        v = series[k]
        finite = v[np.isfinite(v)]
        lo, hi = (0.0, 1.0) if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0 else (
            (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
        scaled[k] = (v - lo) / max(hi - lo, 1e-9)
    for i, k in enumerate(lines):
        points = [(x_of(t), bottom - (bottom - top) * float(y)) for t, y in enumerate(scaled[k]) if np.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=_COLOURS[i % len(_COLOURS)], width=1)
    out = []
    for t, image in enumerate(frames):
        panel = background.copy()
        d = ImageDraw.Draw(panel)
        d.line([(x_of(t), 0), (x_of(t), panel_h - 1)], fill=(255, 255, 255))
        x = 2
        for i, k in enumerate(keys):
            value = series[k][t]
            text = f"{k} {value:.2f}" if np.isfinite(value) else f"{k} -"
            if k in flags:  # the legend text in a light tint of the flag's shade
                colour = tuple(min(255, c + 105) for c in _FLAG_COLOURS[flags.index(k) % len(_FLAG_COLOURS)])
            else:
                colour = _COLOURS[lines.index(k) % len(_COLOURS)]
            d.text((x, 0), text, fill=colour)
            x += 6 * len(text) + 8
        out.append(np.concatenate([image, np.asarray(panel, dtype=np.uint8)], axis=0))
    return out
