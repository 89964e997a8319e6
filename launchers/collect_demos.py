"""Collects successful scripted-expert demos as episode files.

  python launchers/collect_demos.py --task=pick-place --num_demos=20 [--out=demos/pick-place]

Runs the task's scripted Meta-World expert (privileged state, no operator) through the same env
the training run uses (``--config``: action repeat, episode length, reward, observations), keeps
only successful episodes and writes them with ``serl_ext.data.episodes.save_episode`` as
``episode_000000.npz`` ... in ``--out``. Each step carries the ``success``, ``dense_reward`` and
``grasp_penalty`` extras (``serl_ext/loop/rollouts.py``; the learner reads ``grasp_penalty`` as 0
from demo files written before it existed). Existing episodes count: a folder that already holds
``num_demos`` episodes is left as it is, so the command is cheap to rerun.

UR tasks (``serl_ext/envs/ur_tasks.py``): the simulated UR5e (``ur5e-sim-lift``,
``ur5e-sim-wipe``) records its scripted expert (privileged simulator state) on one env reset
with each seed; a real arm (``ur:ur5e``) records teleoperated demos: the policy holds still and
the person at the SpaceMouse (``--config.human_input``, the task's ``spacemouse``) drives the
arm and marks each episode a success (``y``) or failure (``n``); only successes are kept.

  python launchers/collect_demos.py --task=ur5e-sim-lift --num_demos=20
  python launchers/collect_demos.py --task=ur:ur5e --num_demos=20 --config.robot.host=10.0.0.3
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

_TASK = flags.DEFINE_string("task", "pick-place", "Stand-in task name.")
_NUM = flags.DEFINE_integer("num_demos", 20, "Successful episodes wanted.")
_OUT = flags.DEFINE_string("out", "", "Output folder (default demos/TASK).")
_ALGO = flags.DEFINE_string("algorithm", "hil_serl", "Algorithm config whose env settings are used.")
_SEED = flags.DEFINE_integer("seed", 0, "Demo env seeds are 2_000_000 + seed * 10_000 + attempt.")
_NOISE = flags.DEFINE_float("noise", 0.0, "Gaussian noise std added to expert actions.")
_OVERRIDES = flags.DEFINE_multi_string(
    "config", [], "Training-config overrides FIELD=VALUE (e.g. --config=robot.host=10.0.0.3; a "
    "--config.FIELD=VALUE flag is read the same way), for the robot of a ur: task.")


def _split_config_flags(argv):
    """``--config.FIELD=VALUE`` -> ``--config=FIELD=VALUE`` (absl has no dotted flags here)."""
    return [("--config=" + a[len("--config."):]) if a.startswith("--config.") else a for a in argv]


def _apply_overrides(config, overrides):
    """Sets ``FIELD=VALUE`` overrides on ``config``: the value is read as a Python literal
    (``40``, ``0.05``, ``True``, ``(0.3, -0.2, 0.1)``), else kept as a string (``10.0.0.3``).

    Raises:
      SystemExit: a malformed override or an unknown field.
    """
    import ast

    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"--config.{item}: expected --config.FIELD=VALUE")
        path, text = item.split("=", 1)
        *parents, leaf = path.split(".")
        node = config
        try:
            for name in parents:
                node = node[name]
            current = node[leaf]
        except (KeyError, AttributeError):
            raise SystemExit(f"--config.{path}: no such config field") from None
        try:
            value = text if isinstance(current, str) else ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        with node.ignore_type():
            node[leaf] = value


def _teleop_policy(obs, env):
    """The policy of teleoperated demos: hold still (the person's input replaces it)."""
    del obs, env
    return np.zeros(7, np.float32)


def main(argv):
    del argv
    from configs.train import get_config
    from serl_ext.data.episodes import list_episodes, save_episode
    from serl_ext.data.replay_buffer import ACTION_SOURCE_HUMAN
    from serl_ext.loop import common
    from serl_ext.loop.rollouts import expert_policy, run_episode

    if _TASK.value.startswith("gym:"):
        raise SystemExit(f"{_TASK.value}: gym tasks have no scripted expert to record demos "
                         "with; record your own episodes (teleop, or launchers/import_rlds.py) "
                         "and pass --config.demos.path=DIR --config.demos.num_demos=N")
    from serl_ext.envs import ur_tasks

    config = get_config(f"{_TASK.value},{_ALGO.value}")
    _apply_overrides(config, _OVERRIDES.value)
    out = os.path.abspath(_OUT.value or os.path.join("demos", _TASK.value))
    os.makedirs(out, exist_ok=True)
    existing = list_episodes(out)
    if len(existing) >= _NUM.value:
        print(f"{out} already holds {len(existing)} demos (>= {_NUM.value}); nothing to do")
        return
    rng = np.random.default_rng(_SEED.value)
    teleop = ur_tasks.is_ur_real_task(config.task)
    shared_env = None  # the UR tasks: one env (a simulator build takes seconds; one arm)
    if teleop:
        policy = _teleop_policy
        shared_env = common.make_env(config, 0, with_operator=True)
        print("teleoperated demos: drive the arm with the SpaceMouse; type y (success) or n (failure) "
              "to end each episode")
    elif ur_tasks.is_ur_sim_task(config.task):
        policy = ur_tasks.expert_policy(noise=_NOISE.value, rng=rng)
        shared_env = common.make_env(config, 0, with_operator=False)
    else:
        policy = expert_policy(_TASK.value, noise=_NOISE.value, rng=rng)
    index, attempts, lengths = len(existing), 0, []
    max_attempts = 3 * _NUM.value + 20
    try:
        with tqdm(total=_NUM.value, initial=index, desc=f"demos {_TASK.value}") as pbar:
            while index < _NUM.value:
                if attempts >= max_attempts:
                    sys.exit(f"only {index} successful demos after {attempts} attempts; the expert fails too often")
                seed = 2_000_000 + _SEED.value * 10_000 + attempts
                attempts += 1
                env = shared_env or common.make_env(config, seed, with_operator=False)
                try:
                    episode, stats = run_episode(
                        env, policy, seed, policy_source=ACTION_SOURCE_HUMAN,
                        metadata={"task": _TASK.value, "source": "teleop" if teleop else "demo",
                                  "episode_id": index, "action_repeat": int(config.env.action_repeat)},
                    )
                finally:
                    if shared_env is None:
                        env.close()
                if not stats["success"]:
                    continue
                save_episode(os.path.join(out, f"episode_{index:06d}.npz"), episode)
                lengths.append(len(episode["actions"]))
                index += 1
                pbar.update(1)
    finally:
        if shared_env is not None:
            shared_env.close()
    print(f"wrote {len(lengths)} demos to {out} ({attempts} attempts, mean length {np.mean(lengths):.1f} steps)")


if __name__ == "__main__":
    app.run(main, argv=_split_config_flags(sys.argv))
