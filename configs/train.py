"""Training config entry: ``--config=configs/train.py:TASK,ALGORITHM``.

Examples::

  --config=configs/train.py:pick-place,hil_serl --config.seed=1
  --config=configs/train.py:assembly,rlpd --config.learner.utd_ratio=4
  --config=configs/train.py:gym:Pendulum-v1,sac                 # any gymnasium env, Box actions
  --config=configs/train.py:gym:my_pkg.envs:MyEnv-v0,hil_serl    # import my_pkg.envs, then make it
  --config=configs/train.py:ur5e-sim-lift,hil_serl                # the simulated UR5e (robosuite)
  --config=configs/train.py:ur:ur5e,hil_serl --config.robot.host=10.0.0.3   # a real UR5e
"""

from typing import Optional

import ml_collections

from configs.algorithms import apply_algorithm
from configs.base import get_base_config
from configs.tasks import apply_task, finish_task


def get_config(config_string: Optional[str] = None) -> ml_collections.ConfigDict:
    """Composes base + task + algorithm.

    Args:
      config_string: ``"TASK,ALGORITHM"``; ``"TASK"`` alone means ``hil_serl``. TASK may be
        ``gym:ENV_ID`` or ``gym:MODULE:ENV_ID``, or a UR task (configs/tasks.py).
    Raises:
      ValueError: no config string (``--config=configs/train.py`` without ``:TASK``: a run
        must name its task rather than silently train pick-place) or a malformed one.
      KeyError: unknown task or algorithm.
    """
    if config_string is None:
        raise ValueError("name the task: --config=configs/train.py:TASK[,ALGORITHM], "
                         "e.g. configs/train.py:pick-place,hil_serl")
    parts = [p.strip() for p in config_string.split(",") if p.strip()]
    if not parts or len(parts) > 2:
        raise ValueError(f"config string must be 'TASK[,ALGORITHM]', got {config_string!r}")
    task = parts[0]
    algorithm = parts[1] if len(parts) == 2 else "hil_serl"
    config = get_base_config()
    apply_task(config, task)
    apply_algorithm(config, algorithm)
    return finish_task(config)
