"""Meta-World v3 tasks as dict-observation gymnasium envs with exact seeding.

``make_env`` builds the stack used everywhere in the project::

    EpisodeStatistics(GripperPenalty([SimulatedOperator](TimeLimit(
        SparseReward|DenseReward(MetaWorldEnv)))))

Seeding. ``gym.make("Meta-World/MT1", seed=s)`` is exact only for its first
reset: MT1 draws one of 50 pre-sampled layouts from the wrapper's generator,
so a second ``reset(seed=s)`` can give another layout (DESIGN.md section 7).
``MetaWorldEnv`` instead builds the Sawyer env class directly, lets it sample
its layout ("rand_vec") from the env's own generator (Meta-World's
``seeded_rand_vec`` mode, same uniform distribution over
``_random_reset_space`` that MT1 uses) and re-seeds that generator at every
reset. Every episode has an *episode seed*: ``reset(seed=s)`` uses ``s``; an
unseeded reset uses the construction seed the first time and then draws the
next episode seed from a generator seeded by the last explicit seed. The
layout is a pure function of the episode seed, so ``reset(seed=s)`` is exact
any number of times, on any env instance.

Rendering. Images come from MuJoCo's offscreen renderer (headless: EGL with
Mesa's llvmpipe on CPU; ``serl_ext.envs`` sets ``MUJOCO_GL=egl`` if unset and
no display exists). Shadows, reflections and multisampling are turned off
(about 170 frames/s at 128 px instead of 17 on this machine). Each env owns
one renderer per render size, created on first use; run one image env per process.

Cameras. ``image_obs`` adds one uint8 (S, S, 3) observation per entry of ``cameras`` (default
``("pixels",)``, the historical single image). The entry is the observation key; HiL-SERL's names
map to Meta-World cameras (``CAMERA_ALIASES``): ``front`` -> ``corner`` (a fixed scene camera that
shows the object, the gripper and the goal), ``wrist`` -> ``gripperPOV`` (the camera mounted on the
hand, between the fingers); ``pixels`` -> the ``camera`` argument (``corner``); any name of
``CAMERAS`` is its own key. ``camera_crops`` gives a box per key as fractions of the rendered
frame, applied before the resize to S (:func:`check_camera_crops`, :func:`crop_pixels`).
"""

from __future__ import annotations

import atexit
import math
import os
import subprocess
import sys
import weakref
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from serl_ext.envs.tasks import TaskSpec, get_task_spec, scale_steps

RAW_OBS_DIM = 39
PROPRIO_DIM = 4  # hand xyz + gripper opening (raw obs[0:4])
ACTION_DIM = 4
# Meta-World's corner cameras are mounted upside down; flip their images.
_FLIPPED_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper",
           "gripperPOV")
#: The historical single image key: rendered from the env's ``camera`` argument.
PIXELS_KEY = "pixels"
#: HiL-SERL's camera names as observation keys -> the Meta-World camera rendered for them.
#: ``front``: ``corner`` shows the object, the gripper and the goal at every layout (``corner2`` /
#: ``corner3`` see the whole table from farther away, ``topview`` hides the gripper under the arm).
#: ``wrist``: ``gripperPOV`` is mounted on the hand between the fingers (``behindGripper`` is a
#: camera 0.5 m behind the hand looking at it, a third-person view).
CAMERA_ALIASES = {"front": "corner", "wrist": "gripperPOV"}
#: Every key ``cameras`` accepts (``pixels``, the aliases and the Meta-World names).
CAMERA_KEYS = (PIXELS_KEY,) + tuple(CAMERA_ALIASES) + CAMERAS
#: Largest frame rendered for a cropped camera (MuJoCo's offscreen buffer grows to it).
MAX_RENDER_SIZE = 1024


class _FastRenderer:
    """One MuJoCo offscreen renderer with shadows/reflections/MSAA turned off.

    ``render(data)`` renders ``camera``; ``render(data, other)`` renders another camera of the
    model at the same size (one renderer serves every camera of one size).
    """

    def __init__(self, model, size: int, camera: str):
        import mujoco

        self._mujoco = mujoco
        model.vis.quality.offsamples = 0  # no multisample anti-aliasing
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), size)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), size)
        self._renderer = mujoco.Renderer(model, height=size, width=size)
        scene = self._renderer.scene
        scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self.camera = camera
        # Close before MuJoCo's own atexit hook terminates the EGL display
        # (atexit runs hooks last-registered-first), avoiding EGL errors at exit.
        ref = weakref.ref(self)
        atexit.register(lambda: ref() is not None and ref().close())

    def render(self, data, camera: Optional[str] = None) -> np.ndarray:
        """uint8 (size, size, 3) of ``camera`` (default: the renderer's own)."""
        if self._renderer is None:
            raise RuntimeError("renderer already closed")
        camera = self.camera if camera is None else camera
        self._renderer.update_scene(data, camera=camera)
        image = self._renderer.render()
        if camera in _FLIPPED_CAMERAS:
            image = image[::-1]
        return np.ascontiguousarray(image, dtype=np.uint8)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def check_rendering(timeout_s: float = 60.0) -> Optional[str]:
    """Probe offscreen rendering in a subprocess.

    Returns:
        None if a 16x16 MuJoCo image can be rendered with the current
        ``MUJOCO_GL`` backend, otherwise a string saying why not (used by
        tests to skip with a clear reason). A crash of the GL stack cannot
        take the caller down because the probe runs in a child process.
    """
    code = (
        "import serl_ext.envs, mujoco\n"
        "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos=\"0 0 1\"/>"
        "<geom type=\"sphere\" size=\".1\"/></worldbody></mujoco>')\n"
        "d = mujoco.MjData(m); mujoco.mj_forward(m, d)\n"
        "r = mujoco.Renderer(m, 16, 16); r.update_scene(d); im = r.render(); r.close()\n"
        "assert im.shape == (16, 16, 3)\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"rendering probe timed out after {timeout_s} s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        return (f"MuJoCo offscreen rendering unavailable with MUJOCO_GL="
                f"{os.environ.get('MUJOCO_GL', '<unset>')}: {last}. On Debian install "
                f"libegl1 libegl-mesa0 libgl1-mesa-dri and set MUJOCO_GL=egl.")
    return None


def resolve_cameras(cameras: Optional[Sequence[str]], camera: str = "corner") -> Dict[str, str]:
    """Observation key -> Meta-World camera of a ``cameras`` tuple.

    Args:
        cameras: observation keys (``CAMERA_KEYS``): ``pixels`` (rendered from ``camera``),
            ``front`` / ``wrist`` (``CAMERA_ALIASES``) or a Meta-World camera name
            (``CAMERAS``); None = ``("pixels",)``.
        camera: the camera of the ``pixels`` key (one of ``CAMERAS``).
    Returns:
        ``{key: camera name}`` in the order given.
    Raises:
        ValueError: an unknown key or camera, a repeated key, no key at all, or a string
            instead of a tuple of strings.
    """
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
    if cameras is None:
        cameras = (PIXELS_KEY,)
    if isinstance(cameras, str):
        raise ValueError(f"cameras must be a tuple of camera keys, e.g. ('front', 'wrist'), got the "
                         f"string {cameras!r}")
    keys = tuple(cameras)
    if not keys:
        raise ValueError("cameras is empty: give at least one camera key (or image_obs=False)")
    out: Dict[str, str] = {}
    for key in keys:
        if not isinstance(key, str) or key not in CAMERA_KEYS:
            raise ValueError(f"unknown camera key {key!r}; expected one of {CAMERA_KEYS}")
        if key in out:
            raise ValueError(f"camera key {key!r} is given twice in cameras {keys}")
        out[key] = camera if key == PIXELS_KEY else CAMERA_ALIASES.get(key, key)
    return out


def check_camera_crops(crops: Optional[Mapping[str, Any]],
                       keys: Sequence[str]) -> Dict[str, Tuple[float, float, float, float]]:
    """Validates per-camera crop boxes.

    Args:
        crops: None, or ``{key: None | (top, bottom, left, right)}`` (a dict or ConfigDict):
            fractions of the rendered frame's height (top, bottom) and width (left, right),
            ``0 <= top < bottom <= 1`` and ``0 <= left < right <= 1``; None entries mean no
            crop. ``(0.0, 1.0, 0.0, 1.0)`` is the full frame.
        keys: the env's camera keys.
    Returns:
        ``{key: (top, bottom, left, right)}`` floats, only the cropped keys.
    Raises:
        ValueError: a crop for a key that is not among ``keys``, a box that is not 4 numbers,
            not finite, outside [0, 1] (pixel boxes are refused: give fractions) or empty.
    """
    if crops is None:
        return {}
    if not hasattr(crops, "items"):
        raise ValueError(f"camera_crops must be a mapping {{camera key: (top, bottom, left, right)}}, "
                         f"got {crops!r}")
    out: Dict[str, Tuple[float, float, float, float]] = {}
    for key, box in crops.items():
        if box is None:
            continue
        if key not in keys:
            raise ValueError(f"camera_crops has a crop for {key!r}, but the env's cameras are "
                             f"{tuple(keys)}")
        try:
            values = tuple(box)
        except TypeError:
            values = ()
        if len(values) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer,
                                                                             np.floating))
                                   for v in values):
            raise ValueError(f"camera_crops[{key!r}] must be 4 numbers (top, bottom, left, right), "
                             f"got {box!r}")
        top, bottom, left, right = (float(v) for v in values)
        if not all(math.isfinite(v) for v in (top, bottom, left, right)):
            raise ValueError(f"camera_crops[{key!r}] must be finite, got {box!r}")
        if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
            raise ValueError(f"camera_crops[{key!r}] = {box!r}: a box (top, bottom, left, right) as "
                             "fractions of the frame, 0 <= top < bottom <= 1 and 0 <= left < right "
                             "<= 1 (pixels are not accepted: the frame is rendered at the size the "
                             "crop needs)")
        out[str(key)] = (top, bottom, left, right)
    return out


def render_size_for(image_size: int, crop: Optional[Tuple[float, float, float, float]]) -> int:
    """Side R in pixels of the square frame rendered for a camera: ``image_size`` without a
    crop, else ``ceil(image_size / shorter side of the box)`` (so the box holds at least
    ``image_size`` pixels along both sides), at most ``MAX_RENDER_SIZE``."""
    if crop is None:
        return int(image_size)
    top, bottom, left, right = crop
    extent = min(bottom - top, right - left)
    return int(min(MAX_RENDER_SIZE, max(int(image_size), math.ceil(int(image_size) / extent - 1e-9))))


def crop_pixels(crop: Tuple[float, float, float, float], render_size: int) -> Tuple[int, int, int, int]:
    """The crop box in pixels ``(top, bottom, left, right)`` of a ``render_size`` frame
    (rounded, at least one pixel each way)."""
    top, bottom, left, right = (int(round(v * render_size)) for v in crop)
    top, left = min(top, render_size - 1), min(left, render_size - 1)
    return top, max(bottom, top + 1), left, max(right, left + 1)


def camera_options(env_config: Mapping[str, Any]) -> Dict[str, Any]:
    """:func:`make_env` keyword arguments from a training config's ``env`` section.

    Args:
        env_config: ``config.env`` (``image_obs``, and ``cameras`` / ``camera_crops`` when
            present: ``configs/algorithms.py:camera_fields``).
    Returns:
        ``{"cameras": tuple of keys, "camera_crops": {key: box}}`` with ``image_obs``; ``{}``
        without (no images: the defaults apply). Crops are returned unchecked (the env checks
        them).
    """
    if not bool(env_config.get("image_obs", False)):
        return {}
    cameras = env_config.get("cameras")
    crops = env_config.get("camera_crops")
    return {"cameras": None if cameras is None else tuple(cameras),
            "camera_crops": None if crops is None else {str(k): (None if v is None else tuple(v))
                                                        for k, v in crops.items()}}


class MetaWorldEnv(gym.Env):
    """A Meta-World v3 task with action repeat, dict observations and exact seeding.

    One ``step`` = one agent step = ``action_repeat`` Meta-World env steps
    (each 5 MuJoCo substeps, 12.5 ms), the action held constant.

    Observation (dict):
        ``"state"``: float32 (39,) the raw Meta-World obs (``state_obs="full"``)
        or float32 (4,) hand xyz + gripper opening (``state_obs="proprio"``);
        with ``image_obs``, one uint8 (image_size, image_size, 3) frame per key of
        ``cameras`` (default: ``"pixels"``, rendered from ``camera``).
    Action: Box(-1, 1, (4,), float32): xyz position delta (scaled by
        Meta-World to 1 cm per env step at 1.0), gripper effort (+1 close).
    Reward: Meta-World's dense shaped reward (v2 reward functions, range
        [0, 10]) of the *last* repeated env step, i.e. a function of the
        state reached; it is not summed over the repeat, so its scale does not
        depend on ``action_repeat``. Use ``SparseReward`` for the 0/1 reward.
    terminated/truncated: always False here (wrappers add them).
    info: ``success`` (bool, true if any repeated env step succeeded; the
        repeat stops early at the first success), ``dense_reward`` (float, as
        the reward; on reset computed for the initial state with a zero
        action), ``sim_steps`` (int, Meta-World env steps since reset),
        ``episode_seed`` (int).

    Args:
        task: short or v3 task name (see ``serl_ext.envs.tasks``).
        seed: construction seed (int >= 0); the first unseeded reset uses it.
        action_repeat: env steps per agent step (>= 1).
        image_obs, image_size, camera: add camera frames of image_size x image_size
            pixels (8..1024); ``camera`` (one of ``CAMERAS``) renders the ``"pixels"`` key.
        cameras: the image observation keys (:func:`resolve_cameras`); None = ``("pixels",)``.
        camera_crops: ``{key: (top, bottom, left, right)}`` fractions of the frame, applied
            before the resize to image_size (:func:`check_camera_crops`); None = no crops.
        state_obs: ``"full"`` or ``"proprio"``; None = proprio with images,
            full without.

    Raises:
        ValueError/TypeError: on bad arguments.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str, seed: int = 0, *, action_repeat: int = 4,
                 image_obs: bool = False, image_size: int = 64, camera: str = "corner",
                 state_obs: Optional[str] = None, cameras: Optional[Sequence[str]] = None,
                 camera_crops: Optional[Mapping[str, Any]] = None):
        self.spec_task: TaskSpec = get_task_spec(task)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if not isinstance(action_repeat, (int, np.integer)) or action_repeat < 1:
            raise ValueError(f"action_repeat must be an int >= 1, got {action_repeat!r}")
        if state_obs is None:
            state_obs = "proprio" if image_obs else "full"
        if state_obs not in ("full", "proprio"):
            raise ValueError(f"state_obs must be 'full' or 'proprio', got {state_obs!r}")
        self.camera_names: Dict[str, str] = {}
        self.camera_crops: Dict[str, Tuple[float, float, float, float]] = {}
        if image_obs:
            if camera not in CAMERAS:
                raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
            if not isinstance(image_size, (int, np.integer)) or not 8 <= image_size <= 1024:
                raise ValueError(f"image_size must be an int in [8, 1024], got {image_size!r}")
            self.camera_names = resolve_cameras(cameras, camera)  # never "state"
            self.camera_crops = check_camera_crops(camera_crops, tuple(self.camera_names))
        self.task_name = self.spec_task.name
        self.action_repeat = int(action_repeat)
        self.image_obs = bool(image_obs)
        self.image_size = int(image_size)
        self.camera = camera
        self.state_obs = state_obs
        self._seed = int(seed)
        self._seed_rng: Optional[np.random.Generator] = None
        self.episode_seed: Optional[int] = None
        self._renderers: Dict[int, _FastRenderer] = {}

        self._mw = self._build_inner()
        self._raw_obs: Optional[np.ndarray] = None
        self._task_info: dict = {}
        self._sim_steps = 0

        state_dim = RAW_OBS_DIM if state_obs == "full" else PROPRIO_DIM
        obs_spaces = {"state": spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)}
        for key in self.camera_names:
            obs_spaces[key] = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    def _build_inner(self):
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        mw = ALL_V3_ENVIRONMENTS[self.spec_task.env_name]()
        # MT1 semantics: goal visible in the obs. The observation space is a
        # cached property computed for the partially observable case (goal
        # bounds zero, so the goal would be clipped to 0 in step()): recompute.
        mw._partially_observable = False
        try:
            del mw.sawyer_observation_space
        except AttributeError:
            pass
        # Sample the layout from the env's own (re-seeded) generator.
        mw._freeze_rand_vec = False
        mw.seeded_rand_vec = True
        mw._set_task_inner()
        mw._set_task_called = True
        # Our TimeLimit wrapper ends episodes; Meta-World's own limit must not.
        mw.max_path_length = np.iinfo(np.int32).max
        return mw

    # ------------------------------------------------------------------ API
    @property
    def raw_obs(self) -> np.ndarray:
        """Raw Meta-World obs of the current state, float64 (39,) (privileged)."""
        if self._raw_obs is None:
            raise RuntimeError("call reset() before reading the state")
        return self._raw_obs.copy()

    @property
    def task_info(self) -> dict:
        """Meta-World's own evaluation of the current state (privileged).

        The info dict of its ``evaluate_state`` after the last step (on reset:
        for the initial state with a zero action): ``near_object``,
        ``grasp_success``, ``obj_to_target`` (m), ``in_place_reward``, ... as
        floats. For the simulated operator only; never part of an observation.
        """
        return dict(self._task_info)

    @property
    def sim_steps(self) -> int:
        """Meta-World env steps since the last reset."""
        return self._sim_steps

    @property
    def mw_env(self):
        """The wrapped ``metaworld`` SawyerXYZEnv (for tests and tools)."""
        return self._mw

    def _next_episode_seed(self, seed: Optional[int]) -> int:
        if seed is not None:
            if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
                raise ValueError(f"reset seed must be an int >= 0 or None, got {seed!r}")
            self._seed_rng = np.random.default_rng(int(seed))
            return int(seed)
        if self._seed_rng is None:  # first unseeded reset == reset(seed=construction seed)
            self._seed_rng = np.random.default_rng(self._seed)
            return self._seed
        return int(self._seed_rng.integers(0, 2**31 - 1))

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        self.episode_seed = self._next_episode_seed(seed)
        super().reset(seed=self.episode_seed)
        self._mw.seed(self.episode_seed)
        raw, _ = self._mw.reset()
        self._raw_obs = np.asarray(raw, dtype=np.float64)
        self._sim_steps = 0
        dense, mw_info = self._mw.evaluate_state(self._raw_obs, np.zeros(ACTION_DIM))
        self._task_info = {k: float(v) for k, v in mw_info.items()}
        info = {"success": bool(mw_info.get("success", 0.0)), "dense_reward": float(dense),
                "sim_steps": 0, "episode_seed": self.episode_seed}
        return self._make_obs(), info

    def step(self, action):
        if self._raw_obs is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        action = np.clip(action, -1.0, 1.0)
        success = False
        reward = 0.0
        for _ in range(self.action_repeat):
            raw, reward, _, _, mw_info = self._mw.step(action)
            self._sim_steps += 1
            if mw_info.get("success", 0.0):
                success = True
                break
        self._raw_obs = np.asarray(raw, dtype=np.float64)
        self._task_info = {k: float(v) for k, v in mw_info.items()}
        info = {"success": success, "dense_reward": float(reward),
                "sim_steps": self._sim_steps, "episode_seed": self.episode_seed}
        return self._make_obs(), float(reward), False, False, info

    @property
    def image_keys(self) -> Tuple[str, ...]:
        """The image observation keys, in the order of ``cameras`` (empty without images)."""
        return tuple(self.camera_names)

    def _make_obs(self) -> dict:
        raw = self._raw_obs
        state = raw if self.state_obs == "full" else raw[:PROPRIO_DIM]
        obs = {"state": np.asarray(state, dtype=np.float32).copy()}
        for key in self.camera_names:
            obs[key] = self.render_image(key)
        return obs

    def render_image(self, camera: Optional[str] = None) -> np.ndarray:
        """Render the current state: uint8 (image_size, image_size, 3).

        Args:
            camera: an image key of this env, or the Meta-World camera of one; None = the first
                key (``"pixels"`` by default). A key's crop is applied, then the box is resized
                to image_size (``serl_ext.robots.cameras.crop_and_resize``: area interpolation
                with opencv, else nearest neighbour).
        Raises:
            ValueError: a camera this env does not render.
        """
        names = self.camera_names or {PIXELS_KEY: self.camera}
        if camera is None:
            key = next(iter(names))
        elif camera in names:
            key = camera
        else:
            key = next((k for k, c in names.items() if c == camera), None)
            if key is None:
                raise ValueError(f"this env renders the cameras {names}, got {camera!r}")
        crop = self.camera_crops.get(key)
        size = render_size_for(self.image_size, crop)
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = _FastRenderer(self._mw.model, size, names[key])
        frame = renderer.render(self._mw.data, names[key])
        if crop is None:
            return frame
        from serl_ext.robots.cameras import crop_and_resize

        return crop_and_resize(frame, crop_pixels(crop, size), (self.image_size, self.image_size))

    def render(self):
        return self.render_image()

    def close(self):
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers = {}
        super().close()


def get_base_env(env: gym.Env) -> MetaWorldEnv:
    """Find the ``MetaWorldEnv`` under any stack of wrappers.

    Raises:
        TypeError: if ``env`` does not wrap a ``MetaWorldEnv``.
    """
    base = getattr(env, "unwrapped", env)
    if not isinstance(base, MetaWorldEnv):
        raise TypeError(f"expected an env built on MetaWorldEnv, got {type(base).__name__}")
    return base


def get_privileged_state(env: gym.Env) -> np.ndarray:
    """Raw Meta-World obs of the current state, float64 (39,).

    Privileged: hand pos (0:3), gripper opening (3), object pose (4:11),
    unused (11:18), previous-frame copy (18:36), goal (36:39). For the
    simulated operator and the scripted expert only; it is the agent's
    observation only when the agent chose ``state_obs="full"``.
    """
    return get_base_env(env).raw_obs


# The wrapper class that carries the simulated operator: ``cls(env, operator_config)`` with a
# ``.config.enabled``. Registered by ``serl_ext/envs/__init__.py`` (serl_ext.envs.operator's
# SimulatedOperator), so that this module never imports the operator (the operator imports
# this module for the base env and its privileged state).
_OPERATOR_WRAPPER: Optional[Callable[[gym.Env, Any], gym.Env]] = None


def register_operator_wrapper(wrapper: Callable[[gym.Env, Any], gym.Env]) -> None:
    """Sets the default ``operator_wrapper`` of :func:`make_env`."""
    global _OPERATOR_WRAPPER
    _OPERATOR_WRAPPER = wrapper


def make_env(task: str, seed: int = 0, *, action_repeat: int = 4,
             max_episode_steps: Optional[int] = None, reward_type: str = "sparse",
             terminate_on_success: bool = True, image_obs: bool = False,
             image_size: int = 64, camera: str = "corner", state_obs: Optional[str] = None,
             cameras: Optional[Sequence[str]] = None,
             camera_crops: Optional[Mapping[str, Any]] = None,
             operator: Any = None, grasp_penalty: float = -0.02,
             operator_wrapper: Optional[Callable[[gym.Env, Any], gym.Env]] = None) -> gym.Env:
    """Build a simulated task with the project's wrapper stack.

    Args:
        task: ``pick-place``, ``peg-insert-side``, ``assembly``, ``sweep-into``,
            ``box-close`` or their ``*-v3`` names.
        seed: construction seed (first unseeded reset uses it; the operator's
            noise is seeded from each episode seed).
        action_repeat: Meta-World env steps per agent step (4 -> 20 Hz).
        max_episode_steps: episode length in agent steps; None = the task
            default (``TaskSpec.max_episode_steps``, given at action repeat 4,
            scaled to keep the same simulated time).
        reward_type: ``"sparse"`` (1.0 on the step success first happens, else
            0) or ``"dense"`` (Meta-World's shaped reward, see MetaWorldEnv).
        terminate_on_success: ``terminated=True`` on the first success step.
        image_obs, image_size, camera, state_obs, cameras, camera_crops: see
            ``MetaWorldEnv`` (``cameras=("front", "wrist")`` gives HiL-SERL's two cameras).
        operator: None, or a ConfigDict/dict (overrides of
            ``get_default_operator_config()``) to add a ``SimulatedOperator``
            (not added when its ``enabled`` is False).
        grasp_penalty: value put in ``info["grasp_penalty"]`` when the
            executed gripper command changes state (HiL-SERL: -0.02).
        operator_wrapper: ``cls(env, operator)`` that adds the operator; default:
            the registered one (:func:`register_operator_wrapper`;
            ``serl_ext.envs.operator.SimulatedOperator``).

    Returns:
        A gymnasium env with dict observations. Episode stats are in
        ``info["episode"]`` at the last step (see ``EpisodeStatistics``).

    Raises:
        ValueError/TypeError: on bad arguments, or an operator config with no
            operator wrapper given or registered.
    """
    from serl_ext.envs import wrappers

    if reward_type not in ("sparse", "dense"):
        raise ValueError(f"reward_type must be 'sparse' or 'dense', got {reward_type!r}")
    wrapper = operator_wrapper or _OPERATOR_WRAPPER
    if operator is not None and wrapper is None:
        raise ValueError("make_env got an operator config but no operator wrapper is registered "
                         "(import serl_ext.envs, or pass operator_wrapper=)")
    base = MetaWorldEnv(task, seed, action_repeat=action_repeat, image_obs=image_obs,
                        image_size=image_size, camera=camera, state_obs=state_obs,
                        cameras=cameras, camera_crops=camera_crops)
    if max_episode_steps is None:
        max_episode_steps = scale_steps(base.spec_task.max_episode_steps, action_repeat)
    if not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")
    env: gym.Env
    if reward_type == "sparse":
        env = wrappers.SparseReward(base, terminate_on_success=terminate_on_success)
    else:
        env = wrappers.SuccessTermination(base, terminate_on_success=terminate_on_success)
    env = wrappers.TimeLimit(env, int(max_episode_steps))
    if operator is not None:
        op_env = wrapper(env, operator)
        if op_env.config.enabled:
            env = op_env
    env = wrappers.GripperPenalty(env, penalty=grasp_penalty)
    env = wrappers.EpisodeStatistics(env)
    return env
