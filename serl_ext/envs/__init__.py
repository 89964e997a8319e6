"""Simulated tasks (Meta-World v3, any gymnasium env as ``gym:ENV_ID``, the simulated UR5e as
``ur5e-sim-lift`` / ``ur5e-sim-wipe``), a real UR arm (``ur:ROBOT_CONFIG``), wrappers, the
simulated operator and human input devices.

Importing this package sets ``MUJOCO_GL=egl`` when it is unset and there is
no X display, so MuJoCo's offscreen renderer works headless (it must be set
before ``mujoco`` is first imported). Override by exporting ``MUJOCO_GL``.
"""

import os as _os

if "MUJOCO_GL" not in _os.environ and not _os.environ.get("DISPLAY"):
    _os.environ["MUJOCO_GL"] = "egl"

from serl_ext.envs.tasks import TASKS, TaskSpec, get_expert, get_task_spec  # noqa: E402
from serl_ext.envs.metaworld_env import (  # noqa: E402
    MetaWorldEnv,
    check_rendering,
    get_base_env,
    get_privileged_state,
    make_env as make_metaworld_env,
    register_operator_wrapper,
)
from serl_ext.envs.gym_env import is_gym_task, make_gym_env  # noqa: E402
from serl_ext.envs.ur_tasks import is_ur_task, make_ur_env  # noqa: E402
from serl_ext.envs.operator import SimulatedOperator  # noqa: E402

# The operator imports metaworld_env, never the reverse: make_env finds the operator here.
register_operator_wrapper(SimulatedOperator)


def make_env(task: str, seed: int = 0, **kwargs):
    """Builds ``task``: a ``gym:`` task (:func:`serl_ext.envs.gym_env.make_gym_env`), a UR arm
    task (:func:`serl_ext.envs.ur_tasks.make_ur_env`, which also takes ``robot=``, the robot
    config) or a Meta-World one (:func:`serl_ext.envs.metaworld_env.make_env`; same keyword
    arguments).

    Raises:
      ValueError/TypeError: what the builder raises (unknown task, bad arguments).
      ImportError: a UR task whose simulator (robosuite) or robot library (ur_rtde) is missing.
    """
    if is_gym_task(task):
        return make_gym_env(task, seed, **kwargs)
    if is_ur_task(task):
        return make_ur_env(task, seed, **kwargs)
    return make_metaworld_env(task, seed, **kwargs)


__all__ = [
    "TASKS",
    "TaskSpec",
    "get_expert",
    "get_task_spec",
    "MetaWorldEnv",
    "check_rendering",
    "get_base_env",
    "get_privileged_state",
    "is_gym_task",
    "is_ur_task",
    "make_env",
    "make_gym_env",
    "make_metaworld_env",
    "make_ur_env",
    "register_operator_wrapper",
]
