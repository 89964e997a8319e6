"""Where a run's demos live: one folder per task and observation mode.

State-only and image demos of the same task never share a folder, so that the learner's demo
buffer never meets episodes of another observation layout. The folder of the task's default
observations keeps the historical name ``demos/{task}`` (existing folders and benchmarks keep
working); any other observation setting gets a suffix naming it (:func:`observation_tag`):

* Meta-World, ``env.image_obs=False`` (the default): ``state`` (39,) in ``demos/pick-place``;
* ``env.state_obs="proprio"``: ``state`` (4,) in ``demos/pick-place-proprio``;
* ``env.image_obs=True`` (``hil_serl_pixels``): ``state`` (4,) + ``pixels`` uint8 (S, S, 3) in
  ``demos/pick-place-pixels64``; with ``state_obs="full"`` in ``demos/pick-place-pixels64-full``;
* a UR task with the task's own ``robot.cameras``: ``demos/ur5e-sim-lift``; other cameras add
  one image each: ``demos/ur5e-sim-lift-cams-front64x64`` (``-nocams`` with none).

``gym:`` tasks pass the env's own observation: no suffix. ``config.demos.path``, when set,
wins over all of this.
"""

import os

import ml_collections


def _cameras(cameras) -> dict:
    """``{name: (height, width)}`` of a ``robot.cameras`` ConfigDict (None: no cameras)."""
    if not cameras:
        return {}
    return {str(name): tuple(int(v) for v in cam.get("size", ())) for name, cam in cameras.items()}


def observation_tag(config: ml_collections.ConfigDict) -> str:
    """The folder suffix of ``config``'s observation mode: ``""`` for the task's default
    observations, else ``"-pixels{S}"``, ``"-pixels{S}-full"``, ``"-proprio"`` (Meta-World,
    from ``config.env``) or ``"-cams-{name}{H}x{W}..."`` / ``"-nocams"`` (UR tasks whose
    ``config.robot.cameras`` differ from the task's own; names sorted).

    Raises:
      ValueError: ``config.env.state_obs`` is not None, ``"full"`` or ``"proprio"``.
    """
    from serl_ext.envs.gym_env import is_gym_task
    from serl_ext.envs.ur_tasks import is_ur_task, robot_config_for

    task = str(config.task)
    if is_gym_task(task):
        return ""
    if is_ur_task(task):
        robot = config.get("robot")
        own = _cameras(robot_config_for(task).get("cameras"))
        used = _cameras(robot.get("cameras")) if robot is not None else own
        if used == own:
            return ""
        if not used:
            return "-nocams"
        return "-cams-" + "-".join(f"{name}{h}x{w}" for name, (h, w) in sorted(used.items()))
    state_obs = config.env.get("state_obs")
    if state_obs not in (None, "full", "proprio"):
        raise ValueError(f"config.env.state_obs must be None, 'full' or 'proprio', got {state_obs!r}")
    if bool(config.env.image_obs):
        tag = f"-pixels{int(config.env.image_size)}"
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
