"""Where a run's demos live: one folder per task and observation mode.

State-only and image demos of the same task never share a folder, so that the learner's demo
buffer never meets episodes of another observation layout. The folder of the task's default
observations keeps the historical name ``demos/{task}`` (existing folders and benchmarks keep
working); any other observation setting gets a suffix naming it (:func:`observation_tag`):

* Meta-World, ``env.image_obs=False`` (the default): ``state`` (39,) in ``demos/pick-place``;
* ``env.state_obs="proprio"``: ``state`` (4,) in ``demos/pick-place-proprio``;
* ``env.image_obs=True`` with the single historical camera (``hil_serl_pixels``): ``state`` (4,)
  + ``pixels`` uint8 (S, S, 3) in ``demos/pick-place-pixels64``; with ``state_obs="full"`` in
  ``demos/pick-place-pixels64-full``;
* other ``env.cameras`` (``hil_serl_cameras``): ``state`` (4,) + one uint8 (S, S, 3) frame per
  camera key in ``demos/pick-place-cams-front128-wrist128``; cropped cameras add
  ``-crop{hash}`` (6 hex digits of the crop boxes), ``state_obs="full"`` adds ``-full``;
* a UR task with the task's own ``robot.cameras``: ``demos/ur5e-sim-lift``; other cameras add
  one image each: ``demos/ur5e-sim-lift-cams-front64x64`` (``-nocams`` with none; pixel crops
  add ``-crop{hash}``); ``robot.privileged_state=False`` adds ``-proprio``
  (``hil_serl_cameras``: ``demos/ur5e-sim-lift-cams-front128x128-wrist128x128-proprio``).

So a 64 px single-camera folder is never the default folder of a 128 px two-camera run; a folder
given with ``config.demos.path`` that does not fit is refused with the differences named
(``serl_ext.data.episodes.ObservationMismatchError``: missing keys, other shapes).

``gym:`` tasks pass the env's own observation: no suffix. ``config.demos.path``, when set,
wins over all of this.
"""

import hashlib
import os

import ml_collections


def _crop_hash(crops: dict) -> str:
    """6 hex digits naming a set of crop boxes ``{name: tuple}`` (stable across runs)."""
    text = repr(sorted((str(k), tuple(round(float(v), 6) for v in box)) for k, box in crops.items()))
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def _cameras(cameras) -> dict:
    """``{name: ((height, width), crop)}`` of a ``robot.cameras`` ConfigDict (None: no cameras)."""
    if not cameras:
        return {}
    out = {}
    for name, cam in cameras.items():
        crop = cam.get("crop")
        out[str(name)] = (tuple(int(v) for v in cam.get("size", ())),
                          None if crop is None else tuple(int(v) for v in crop))
    return out


def _ur_tag(config: ml_collections.ConfigDict, task: str) -> str:
    from serl_ext.envs.ur_tasks import is_ur_sim_task, robot_config_for

    robot = config.get("robot")
    own = _cameras(robot_config_for(task).get("cameras"))
    used = _cameras(robot.get("cameras")) if robot is not None else own
    tag = ""
    if used != own:
        if not used:
            tag = "-nocams"
        else:
            tag = "-cams-" + "-".join(f"{name}{h}x{w}" for name, ((h, w), _) in sorted(used.items()))
            crops = {name: crop for name, (_, crop) in used.items() if crop is not None}
            if crops:
                tag += f"-crop{_crop_hash(crops)}"
    if robot is not None and is_ur_sim_task(task) and not bool(robot.get("privileged_state", True)):
        tag += "-proprio"
    return tag


def observation_tag(config: ml_collections.ConfigDict) -> str:
    """The folder suffix of ``config``'s observation mode: ``""`` for the task's default
    observations, else ``"-pixels{S}"``, ``"-pixels{S}-full"``, ``"-proprio"``,
    ``"-cams-{key}{S}-...[-crop{hash}][-full]"`` (Meta-World, from ``config.env``; keys sorted)
    or ``"-cams-{name}{H}x{W}...[-crop{hash}]"`` / ``"-nocams"`` plus ``"-proprio"`` (UR tasks,
    from ``config.robot``; module docstring).

    Raises:
      ValueError: ``config.env.state_obs`` is not None, ``"full"`` or ``"proprio"``; bad
        ``env.cameras`` / ``env.camera_crops`` (``serl_ext.envs.metaworld_env.resolve_cameras``,
        ``check_camera_crops``).
    """
    from serl_ext.envs.gym_env import is_gym_task
    from serl_ext.envs.ur_tasks import is_ur_task

    task = str(config.task)
    if is_gym_task(task):
        return ""
    if is_ur_task(task):
        return _ur_tag(config, task)
    state_obs = config.env.get("state_obs")
    if state_obs not in (None, "full", "proprio"):
        raise ValueError(f"config.env.state_obs must be None, 'full' or 'proprio', got {state_obs!r}")
    if bool(config.env.image_obs):
        from serl_ext.envs.metaworld_env import PIXELS_KEY, check_camera_crops, resolve_cameras

        size = int(config.env.image_size)
        cameras = config.env.get("cameras")
        keys = tuple(resolve_cameras(None if cameras is None else tuple(cameras)))
        crops = check_camera_crops(config.env.get("camera_crops"), keys)
        if keys == (PIXELS_KEY,) and not crops:
            tag = f"-pixels{size}"
        else:
            tag = "-cams-" + "-".join(f"{key}{size}" for key in sorted(keys))
            if crops:
                tag += f"-crop{_crop_hash(crops)}"
        return tag + ("-full" if state_obs == "full" else "")
    return "-proprio" if state_obs == "proprio" else ""


def default_demo_dir(config: ml_collections.ConfigDict) -> str:
    """``demos/{task}{observation_tag}`` as an absolute path (relative to the working folder)."""
    return os.path.abspath(os.path.join("demos", str(config.task) + observation_tag(config)))


def demo_dir_for(config: ml_collections.ConfigDict) -> str:
    """The demo folder of a run: ``config.demos.path`` when set, else :func:`default_demo_dir`
    (absolute path).

    Raises:
      ValueError: from :func:`observation_tag`.
    """
    path = config.demos.get("path", "")
    return os.path.abspath(path) if path else default_demo_dir(config)
