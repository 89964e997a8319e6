"""Pieces shared by the actor, the learner and the evaluation: run folders, envs, agents,
buffers and ``summary.json``."""

import json
import os
from typing import Any, Dict, Optional

import jax
import ml_collections
import numpy as np

from serl_ext.files import atomic_write_json  # noqa: F401  (the loop's JSON files)


def agent_class(name: str):
    """Maps ``config.agent_name`` to an agent class.

    Raises:
      KeyError: unknown agent name.
    """
    if name == "sac":
        from serl_ext.agents.sac import SACAgent

        return SACAgent
    if name == "sac_hybrid":
        from serl_ext.agents.sac_hybrid import SACHybridAgent

        return SACHybridAgent
    if name == "bc":
        from serl_ext.agents.bc import BCAgent

        return BCAgent
    raise KeyError(f"unknown agent_name {name!r}; expected 'sac', 'sac_hybrid' or 'bc'")


def run_dir_for(config: ml_collections.ConfigDict) -> str:
    """``{run_root}/{run_name}``; the default name is ``{task}/{algorithm}/seed{seed}``."""
    name = config.run_name or f"{config.task}/{config.algorithm}/seed{config.seed}"
    return os.path.abspath(os.path.join(config.run_root, name))


def actor_fleet(config: ml_collections.ConfigDict) -> tuple:
    """``(actor_id, num_actors)`` of ``config.actor.actor_id`` / ``config.learner.num_actors``.

    Raises:
      ValueError: ``num_actors < 1`` or ``actor_id`` outside ``[0, num_actors)``.
    """
    n = int(config.learner.get("num_actors", 1))
    k = int(config.actor.get("actor_id", 0))
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"need learner.num_actors >= 1 and 0 <= actor.actor_id < num_actors; got "
                         f"actor_id={k}, num_actors={n} (give every actor and the learner the same num_actors)")
    return k, n


def actor_dir_for(config: ml_collections.ConfigDict) -> str:
    """Where an actor writes its files: the run folder for actor 0 (the primary actor),
    ``{run_dir}/actors/actor{k}`` for actor k > 0."""
    k, _ = actor_fleet(config)
    run_dir = run_dir_for(config)
    return run_dir if k == 0 else os.path.join(run_dir, "actors", f"actor{k}")


def actor_budget(config: ml_collections.ConfigDict) -> int:
    """Env steps this actor runs: its share of ``actor.max_env_steps`` (the whole run's), the
    remainder going to the lowest ids (7 steps over 2 actors: 4 and 3)."""
    k, n = actor_fleet(config)
    total = int(config.actor.max_env_steps)
    return total // n + (1 if k < total % n else 0)


def demo_dir_for(config: ml_collections.ConfigDict) -> str:
    """The run's demo folder: ``config.demos.path``, else one per observation mode
    (``demos/TASK`` for state observations, ``demos/TASK-pixels64`` for images, ...;
    :func:`serl_ext.loop.demo_folders.demo_dir_for`), so state and image demos never mix."""
    from serl_ext.loop.demo_folders import demo_dir_for as _demo_dir_for

    return _demo_dir_for(config)


def write_config(run_dir: str, config: ml_collections.ConfigDict, name: str) -> None:
    """Saves the resolved config as ``{run_dir}/{name}_config.json``."""
    atomic_write_json(os.path.join(run_dir, f"{name}_config.json"), json.loads(config.to_json_best_effort()))


# Names of the actor -> learner data stores (HiL-SERL): every transition goes to DATA_STORE
# (the online buffer); human steps, and the sources a gate adds, also to INTERVENTION_STORE
# (the demo + intervention buffer).
DATA_STORE = "actor_env"
INTERVENTION_STORE = "actor_env_intvn"


# Requests the actor sends (serl_ext/loop/learner.py answers them): ``actor_done`` when its
# last transition is delivered, ``actor_stats`` (optional stats), ``actor_closed`` once the
# learner's final checkpoint acknowledged everything (or the actor gave up waiting), with the
# actor's delivery counters as payload.
REQUEST_TYPES = ("actor_done", "actor_stats", "actor_closed")
#: Training totals an actor sends with ``actor_done`` (its ``actor_state.json`` counts, over
#: restarts), summed by the learner into ``learner_summary.json`` ``fleet``.
FLEET_COUNT_KEYS = ("env_steps", "episodes", "human_steps", "recovery_steps", "successes")


def transport_config(config: ml_collections.ConfigDict):
    """The :class:`serl_ext.transport.TrainerConfig` of ``config.transport`` (both processes)."""
    from serl_ext.transport import TrainerConfig
    from serl_ext.transport.auth import load_auth_key

    t = config.transport
    return TrainerConfig(
        port_number=t.port,
        broadcast_port=t.broadcast_port,
        request_types=REQUEST_TYPES,
        bind_address=t.bind_address,
        auth_key=load_auth_key(t.get("auth_key_file", "") or None, log_fn=print),
        auth=t.get("auth", "auto"),
        max_clock_skew_s=float(t.get("max_clock_skew_s", 120.0)),
        # the parameter message's counters (serl_ext/loop/param_message.py), checked by the
        # client before the actor's callback stores anything
        monotonic_fields=("version", "learner_step"),
    )


HUMAN_INPUTS = ("simulated", "keyboard", "spacemouse", "none")


def make_env(config: ml_collections.ConfigDict, seed: int, *, with_operator: bool):
    """Builds the task env of ``config.env``.

    With ``with_operator`` the human input of ``config.human_input`` sits on top: the simulated
    operator (if ``config.operator.enabled``), a keyboard or a SpaceMouse; all put their action
    into ``info["intervene_action"]``. Evaluation envs are built with ``with_operator=False``.
    UR tasks (``serl_ext/envs/ur_tasks.py``: 7-D actions) are built from ``config.robot`` and
    get the 6-DoF devices (``SpaceMouse6Intervention``, ``Keyboard6Intervention``), whose
    success / failure marks (``y`` / ``n`` typed in the actor's terminal, when it is one) end
    an episode on a real arm. With ``config.env.reward_classifier`` (a classifier folder) the
    training env (``with_operator``) takes its reward and termination from the classifier
    (:class:`serl_ext.envs.reward_classifier.RewardClassifierWrapper`; the true success stays in
    ``info["true_success"]``); evaluation envs keep the simulator's success.

    Raises:
      ValueError: unknown ``config.human_input``, or ``"simulated"`` on a real arm.
    """
    from serl_ext.envs import is_gym_task, is_ur_task, make_env as _make_env
    from serl_ext.envs.metaworld_env import camera_options

    human_input = config.get("human_input", "simulated")
    if human_input not in HUMAN_INPUTS:
        raise ValueError(f"config.human_input must be one of {HUMAN_INPUTS}, got {human_input!r}")
    simulated = with_operator and human_input == "simulated" and config.operator.enabled
    ur_task = is_ur_task(config.task)
    # A learned reward (HiL-SERL's reward classifier) on the training env only: it decides
    # success and termination, so the env itself must not end the episode on its own success.
    classifier = str(config.env.get("reward_classifier", "") or "") if with_operator else ""
    env = _make_env(
        config.task,
        seed,
        action_repeat=config.env.action_repeat,
        max_episode_steps=config.env.max_episode_steps,
        reward_type=config.env.reward_type,
        image_obs=config.env.image_obs,
        image_size=config.env.image_size,
        state_obs=config.env.state_obs,
        # Meta-World cameras (env.cameras, env.camera_crops); a UR task's cameras are in config.robot.
        **({} if ur_task or is_gym_task(config.task) else camera_options(config.env)),
        operator=config.operator if simulated else None,
        **({"robot": config.get("robot")} if ur_task else {}),
        **({"terminate_on_success": False} if classifier else {}),
    )
    if classifier:
        from serl_ext.envs.reward_classifier import RewardClassifier, RewardClassifierWrapper

        env = RewardClassifierWrapper(env, RewardClassifier.load(classifier),
                                      threshold=config.env.get("reward_classifier_threshold"))
    if with_operator and human_input in ("keyboard", "spacemouse") and ur_task:
        from serl_ext.envs import intervention

        if human_input == "keyboard":
            env = intervention.Keyboard6Intervention(env)
        else:
            import sys

            keys = intervention.StdinKeySource() if sys.stdin is not None and sys.stdin.isatty() else None
            env = intervention.SpaceMouse6Intervention(env, key_source=keys)
    elif with_operator and human_input == "keyboard":
        from serl_ext.envs.intervention import KeyboardIntervention

        env = KeyboardIntervention(env)
    elif with_operator and human_input == "spacemouse":
        from serl_ext.envs.intervention import SpaceMouseIntervention

        env = SpaceMouseIntervention(env)
    return env


def eval_on_training_env(config: ml_collections.ConfigDict) -> bool:
    """Whether evaluation runs on the actor's training env (one physical arm:
    ``config.actor.eval_on_training_env``, True for ``ur:`` tasks) instead of fresh envs."""
    return bool(config.actor.get("eval_on_training_env", False))


def observation_spec(env) -> Dict[str, tuple]:
    """``{key: (shape, dtype)}`` of a gymnasium Dict observation space."""
    return {k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in env.observation_space.spaces.items()}


def example_observation(spec: Dict[str, tuple]) -> Dict[str, np.ndarray]:
    return {k: np.zeros(shape, dtype) for k, (shape, dtype) in spec.items()}


def create_agent(config: ml_collections.ConfigDict, spec: Dict[str, tuple], action_dim: int):
    """Creates the agent of ``config.agent_name`` from observation/action examples (seeded).

    Raises:
      ValueError: the env has image observations the encoder does not read (or the reverse).
    """
    cls = agent_class(config.agent_name)
    image_keys = sorted(k for k, (_, dtype) in spec.items() if np.dtype(dtype) == np.uint8)
    wanted = sorted(config.agent.encoder.image_keys)
    if image_keys != wanted:
        raise ValueError(
            f"env image observations {image_keys} != agent.encoder.image_keys {wanted}; for images use "
            "the hil_serl_pixels algorithm or set --config.agent.encoder.type=small_cnn and "
            "--config.agent.encoder.image_keys=\"('pixels',)\""
        )
    return cls.create(
        jax.random.PRNGKey(config.seed),
        example_observation(spec),
        np.zeros((action_dim,), np.float32),
        config.agent,
    )


def value_bounds(env) -> Dict[str, Any]:
    """The replay buffer's value bounds for ``env``'s spaces
    (:func:`serl_ext.data.replay_buffer.value_bounds_from_spaces`: per-element ``|x|`` bounds with
    a 10 % margin; dimensions without a finite space bound get the default 1e6; the reward keeps
    the buffer's default). The actor checks observations and actions against the same bounds
    before they are sent (sensor faults), the learner's buffers on insert."""
    from serl_ext.data.replay_buffer import value_bounds_from_spaces

    return value_bounds_from_spaces(env.observation_space, env.action_space)


def task_spaces(config: ml_collections.ConfigDict):
    """Reads ``config.task``'s spaces from a throw-away env; a UR task's come from
    ``config.robot`` alone (:func:`serl_ext.envs.ur_tasks.ur_task_spaces`: no robot, no
    simulator, so the learner box needs neither).

    Returns:
      ``(observation spec, action_dim, value bounds)`` (:func:`value_bounds`).
    """
    from serl_ext.envs.ur_tasks import is_ur_task, robot_config_for, ur_task_spaces

    if is_ur_task(config.task):
        from serl_ext.data.replay_buffer import value_bounds_from_spaces

        robot = config.get("robot") or robot_config_for(config.task)
        obs_space, action_space = ur_task_spaces(config.task, robot)
        spec = {k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in obs_space.spaces.items()}
        return spec, int(action_space.shape[0]), value_bounds_from_spaces(obs_space, action_space)
    env = make_env(config, config.seed, with_operator=False)
    try:
        return observation_spec(env), int(env.action_space.shape[0]), value_bounds(env)
    finally:
        env.close()


def agent_for_task(config: ml_collections.ConfigDict):
    """Creates the agent for ``config.task`` from a throw-away env's spaces.

    Returns:
      ``(agent, observation spec, action_dim)``.
    """
    spec, action_dim, _ = task_spaces(config)
    return create_agent(config, spec, action_dim), spec, action_dim


# Per-transition fields the actor sends besides the house keys, name -> (shape, dtype):
# ``grasp_penalty`` is ``info["grasp_penalty"]`` of ``serl_ext.envs.wrappers.GripperPenalty``
# (-0.02 on a step whose executed gripper command changes state, else 0; HiL-SERL), read by
# the hybrid agent's gripper critic and ignored by the others.
TRANSITION_EXTRAS = {"grasp_penalty": ((), np.float32)}
# Value of each extra in data recorded before it existed (demo files, checkpoints).
TRANSITION_EXTRA_DEFAULTS = {"grasp_penalty": 0.0}


def grasp_penalty(info: Dict[str, Any]) -> np.float32:
    """``info["grasp_penalty"]`` as a float32 scalar (0 when the env does not set it).

    Raises:
      ValueError: the value is not a finite scalar.
    """
    value = np.asarray(info.get("grasp_penalty", 0.0), dtype=np.float32)
    if value.shape != () or not np.isfinite(value):
        raise ValueError(f"info['grasp_penalty'] must be a finite scalar, got {info.get('grasp_penalty')!r}")
    return np.float32(value)


def make_buffer(spec, action_dim: int, capacity: int, seed: int, with_extras: bool = False,
                value_bounds: Optional[Dict[str, Any]] = None):
    """A :class:`serl_ext.data.replay_buffer.ReplayBuffer` for the observation ``spec``.

    Args:
      with_extras: also store :data:`TRANSITION_EXTRAS` (every insert must then carry them, as
        the actor's transitions do), with :data:`TRANSITION_EXTRA_DEFAULTS` for old demo files
        and checkpoints. The learner's buffers use True; False gives house keys only.
      value_bounds: the task's bounds (:func:`value_bounds`); None: the buffer's default
        ``|x| <= 1e6`` on every float field. Inserts (and ``load_state_dict``) outside them are
        refused and counted in ``num_out_of_bounds``.
    """
    from serl_ext.data.replay_buffer import ReplayBuffer

    if not with_extras:
        return ReplayBuffer(spec, action_dim, capacity, seed=seed, value_bounds=value_bounds)
    return ReplayBuffer(spec, action_dim, capacity, extra_keys=TRANSITION_EXTRAS, seed=seed,
                        extra_defaults=TRANSITION_EXTRA_DEFAULTS, value_bounds=value_bounds)


def to_numpy_tree(tree):
    """Converts a pytree of jax arrays to nested dicts of numpy arrays (for the transport)."""
    return jax.tree.map(lambda x: np.asarray(x), tree)


def episode_seed(config: ml_collections.ConfigDict, episode: int) -> int:
    """Training episode ``episode`` resets with this seed (deterministic, resumable); actor k > 0
    of several (:func:`actor_fleet`) is offset by ``k * 100_003`` so that actors do not repeat
    each other's episodes (disjoint for fewer than 100,003 episodes per actor)."""
    k = int(config.actor.get("actor_id", 0))
    return int(config.seed) * 1_000_003 + k * 100_003 + int(episode)


def eval_seed(config: ml_collections.ConfigDict, index: int) -> int:
    return int(config.seed) * 1000 + int(config.actor.eval_seed_offset) + int(index)


def read_json(path: str) -> Optional[Dict[str, Any]]:
    """The JSON object in ``path``, or None when the file does not exist.

    Raises:
      ValueError: the file is not valid JSON (the message names the file).
    """
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); fix or remove it") from None
