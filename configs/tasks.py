"""Per-task overrides applied on top of the base config.

Tasks: the Meta-World stand-ins (``TASK_OVERRIDES``), any other Meta-World v3 task by its name,
any registered gymnasium env with Box actions as ``gym:ENV_ID`` / ``gym:MODULE:ENV_ID``
(``serl_ext/envs/gym_env.py``; ``GYM_OVERRIDES`` and :func:`finish_gym_task`), and the UR arm
(``serl_ext/envs/ur_tasks.py``): the simulated UR5e ``ur5e-sim-lift`` / ``ur5e-sim-wipe``
(``UR_SIM_OVERRIDES``) and a real arm ``ur:ROBOT_CONFIG`` (``UR_REAL_OVERRIDES``), which carry
their robot config as ``config.robot`` (:func:`finish_task`).

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
    _apply_overrides(config, GYM_OVERRIDES)
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


# The UR arm at 10 Hz, one env step per agent step. Simulated UR5e budgets: provisional (not yet
# measured like the stand-ins' HiL-SERL row; the benchmark on the simulated arm sets them).
# "operator": the task's simulated-operator fields (the same for every method). On Lift the
# operator hands back on the grasp (or at its cap), not on progress alone: Lift's progress is
# 3 points of reach, 2 of grasp and 5 of lift, so the default margin of 1.0 handed back
# mid-reach, ~5 cm from the cube, and the operator never finished an episode (HiL-SERL seed 0,
# 20k steps: training SR 1 of 220 episodes, eval SR 0; docs/real_ur_arm.md).
UR_SIM_OVERRIDES = {
    "ur5e-sim-lift": dict(max_env_steps=20_000, discount=0.97, operator=dict(handback_on_progress=False)),
    "ur5e-sim-wipe": dict(max_env_steps=40_000, discount=0.97),
}
# A real arm: HiL-SERL's real tasks train in 1-2.5 h of interaction, 36k-90k steps at 10 Hz.
UR_REAL_OVERRIDES = dict(max_env_steps=50_000, discount=0.97)


def _apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
    """A task's budget (``max_env_steps``), ``discount`` and, if given, its ``operator`` fields."""
    config.actor.max_env_steps = overrides["max_env_steps"]
    config.agent.discount = overrides["discount"]
    with config.operator.ignore_type():
        for key, value in overrides.get("operator", {}).items():
            config.operator[key] = value


def _apply_ur_task(config: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
    from serl_ext.envs.ur_tasks import is_ur_real_task, robot_config_for

    try:
        robot = robot_config_for(task)
    except ValueError as error:
        raise KeyError(str(error)) from None
    overrides = UR_REAL_OVERRIDES if is_ur_real_task(task) else UR_SIM_OVERRIDES[task]
    config.task = task
    config.robot = robot  # every field settable: --config.robot.host=10.0.0.3
    _apply_overrides(config, overrides)
    config.env.action_repeat = 1  # the arm's policy loop: robot.control.policy_hz
    config.env.reward_type = "sparse"
    # One physical arm: evaluate on the training env, between its episodes (the simulated arm
    # builds fresh envs; True there tests the robot's path).
    config.actor.eval_on_training_env = is_ur_real_task(task)
    if is_ur_real_task(task):
        config.human_input = "spacemouse"
    return config


def finish_task(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """After the algorithm: :func:`finish_gym_task`, and on a real arm (``ur:``) no simulated
    operator (a person takes over, ``human_input="spacemouse"``). Other tasks unchanged."""
    from serl_ext.envs.ur_tasks import is_ur_real_task

    finish_gym_task(config)
    if is_ur_real_task(config.task):
        config.operator.enabled = False
    return config


def apply_task(config: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
    """Sets ``config.task`` and the task's overrides.

    ``task`` is a stand-in (``TASK_OVERRIDES``), any Meta-World v3 task by its name
    (``serl_ext.envs.tasks.get_task_spec``), which gets ``DEFAULT_OVERRIDES``, or a gymnasium env
    ``gym:[MODULE:]ENV_ID`` (its module imported and its id checked, no env built), which gets
    ``GYM_OVERRIDES``, action repeat 1, the env's own reward and no TD-target clip.

    A UR task (``ur5e-sim-lift``, ``ur5e-sim-wipe``, ``ur:ROBOT_CONFIG``) gets
    ``UR_SIM_OVERRIDES`` / ``UR_REAL_OVERRIDES``, action repeat 1, its robot config as
    ``config.robot`` and ``actor.eval_on_training_env`` (True on a real arm, which also gets
    ``human_input="spacemouse"``).

    Raises:
      KeyError: ``task`` is none of these (the message lists the known names, or says why the
        gym task or the robot config is not found).
    """
    from serl_ext.envs.gym_env import is_gym_task
    from serl_ext.envs.ur_tasks import is_ur_task

    if is_gym_task(task):
        return _apply_gym_task(config, task)
    if is_ur_task(task):
        return _apply_ur_task(config, task)
    if task not in TASK_OVERRIDES:
        from serl_ext.envs.tasks import get_task_spec

        try:
            spec = get_task_spec(task)
        except ValueError as error:
            raise KeyError(f"Unknown task {task!r}: {error}") from None
        task = spec.name
    overrides = TASK_OVERRIDES.get(task, DEFAULT_OVERRIDES)
    config.task = task
    _apply_overrides(config, overrides)
    return config
