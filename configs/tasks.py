"""Per-task overrides applied on top of the base config.

Tasks: the Meta-World stand-ins (``TASK_OVERRIDES``), any other Meta-World v3 task by its name,
or any registered gymnasium env with Box actions as ``gym:ENV_ID`` / ``gym:MODULE:ENV_ID``
(``serl_ext/envs/gym_env.py``; ``GYM_OVERRIDES`` and :func:`finish_gym_task`).

Episode lengths, expert parameters and operator stall windows live with the tasks in
``serl_ext/envs/tasks.py`` (measured there); here only training-run choices differ per task.
"""

import ml_collections

# Training budget (env steps = agent steps at action repeat 4) and discount per stand-in task.
# The budgets are the HiL-SERL row's (benchmarks/hil_serl.py, benchmarks/results/hil_serl_row/):
# 1.5 x the first evaluation point from which HiL-SERL's median eval SR over 3 seeds stays
# >= 0.8, rounded up to 10k; every later comparison runs with them (the UniIntervene issue).
# Converged at: pick-place, assembly, sweep-into 30k; peg-insert-side 25k; box-close 50k.
TASK_OVERRIDES = {
    "pick-place": dict(max_env_steps=50_000, discount=0.97),
    "peg-insert-side": dict(max_env_steps=40_000, discount=0.97),
    "assembly": dict(max_env_steps=50_000, discount=0.97),
    "sweep-into": dict(max_env_steps=50_000, discount=0.97),
    "box-close": dict(max_env_steps=80_000, discount=0.97),
}


# Any other Meta-World v3 task (by its name, e.g. "drawer-open"): these training choices.
DEFAULT_OVERRIDES = dict(max_env_steps=100_000, discount=0.97)


# A gymnasium env's training choices: its own reward (any range, so the critic's TD target is not
# clipped), discount 0.99 (gymnasium's control tasks), one env step per agent step, the
# episode length of its TimeLimit (config.env.max_episode_steps overrides).
GYM_OVERRIDES = dict(max_env_steps=100_000, discount=0.99)


def _apply_gym_task(config: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
    from serl_ext.envs.gym_env import check_gym_task

    try:
        spec = check_gym_task(task)
    except ValueError as error:
        raise KeyError(str(error)) from None
    config.task = spec.name
    config.actor.max_env_steps = GYM_OVERRIDES["max_env_steps"]
    config.agent.discount = GYM_OVERRIDES["discount"]
    config.agent.critic_target_clip = None
    config.env.action_repeat = 1
    config.env.reward_type = "env"
    return config


def finish_gym_task(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """After the algorithm: what a ``gym:`` task cannot have. The simulated operator (it reads
    Meta-World's privileged state) is off, the env's own ``info["intervene_action"]`` is read
    instead; no demos are required (``demos.num_demos=0``: HiL-SERL algorithms start from the
    online data and fill the demo + intervention buffer with the env's interventions; give
    ``--config.demos.path=DIR --config.demos.num_demos=N`` for episode files of your own, e.g.
    from ``launchers/import_rlds.py``). Other tasks are returned unchanged."""
    from serl_ext.envs.gym_env import is_gym_task

    if is_gym_task(config.task):
        config.operator.enabled = False
        config.demos.num_demos = 0
    return config


def apply_task(config: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
    """Sets ``config.task`` and the task's overrides.

    ``task`` is a stand-in (``TASK_OVERRIDES``), any Meta-World v3 task by its name
    (``serl_ext.envs.tasks.get_task_spec``), which gets ``DEFAULT_OVERRIDES``, or a gymnasium env
    ``gym:[MODULE:]ENV_ID`` (its module imported and its id checked, no env built), which gets
    ``GYM_OVERRIDES``, action repeat 1, the env's own reward and no TD-target clip.

    Raises:
      KeyError: ``task`` is none of these (the message lists the known names, or says why the
        gym task is not found).
    """
    from serl_ext.envs.gym_env import is_gym_task

    if is_gym_task(task):
        return _apply_gym_task(config, task)
    if task not in TASK_OVERRIDES:
        from serl_ext.envs.tasks import get_task_spec

        try:
            spec = get_task_spec(task)
        except ValueError as error:
            raise KeyError(f"Unknown task {task!r}: {error}") from None
        task = spec.name
    overrides = TASK_OVERRIDES.get(task, DEFAULT_OVERRIDES)
    config.task = task
    config.actor.max_env_steps = overrides["max_env_steps"]
    config.agent.discount = overrides["discount"]
    return config
