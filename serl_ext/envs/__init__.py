"""Simulated tasks (Meta-World v3), wrappers, the simulated operator and human input devices.

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
    make_env,
    register_operator_wrapper,
)
from serl_ext.envs.operator import SimulatedOperator  # noqa: E402

# The operator imports metaworld_env, never the reverse: make_env finds the operator here.
register_operator_wrapper(SimulatedOperator)

__all__ = [
    "TASKS",
    "TaskSpec",
    "get_expert",
    "get_task_spec",
    "MetaWorldEnv",
    "check_rendering",
    "get_base_env",
    "get_privileged_state",
    "make_env",
    "register_operator_wrapper",
]
