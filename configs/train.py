"""Training config entry: ``--config=configs/train.py:TASK,ALGORITHM``.

Examples::

  --config=configs/train.py:pick-place,hil_serl --config.seed=1
  --config=configs/train.py:assembly,rlpd --config.learner.utd_ratio=4
"""

import ml_collections

from configs.algorithms import apply_algorithm
from configs.base import get_base_config
from configs.tasks import apply_task


def get_config(config_string: str = "pick-place,hil_serl") -> ml_collections.ConfigDict:
    """Composes base + task + algorithm.

    Args:
      config_string: ``"TASK,ALGORITHM"``; ``"TASK"`` alone means ``hil_serl``.
    Raises:
      KeyError: unknown task or algorithm.
    """
    parts = [p.strip() for p in config_string.split(",") if p.strip()]
    if not parts or len(parts) > 2:
        raise ValueError(f"config string must be 'TASK[,ALGORITHM]', got {config_string!r}")
    task = parts[0]
    algorithm = parts[1] if len(parts) == 2 else "hil_serl"
    config = get_base_config()
    apply_task(config, task)
    apply_algorithm(config, algorithm)
    return config
