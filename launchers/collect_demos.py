"""Collects successful scripted-expert demos as episode files.

  python launchers/collect_demos.py --task=pick-place --num_demos=20 [--out=demos/pick-place]
  python launchers/collect_demos.py --task=pick-place --algorithm=hil_serl_pixels   # image demos

Runs the task's scripted Meta-World expert (privileged state, no operator) through the env of the
training config ``--task,--algorithm`` plus ``--config.FIELD=VALUE`` overrides (action repeat,
episode length, reward, observations: ``--config.env.image_obs`` etc.), so that the demos carry
the observation keys the run's buffers expect. Keeps only successful episodes and writes them
with ``serl_ext.data.episodes.save_episode`` as ``episode_000000.npz`` ... in ``--out``, default
the run's demo folder (``serl_ext/loop/demo_folders.py``: ``demos/TASK`` for the task's default
state observations, ``demos/TASK-pixelsS`` for images, ...), so state and image demos never
share a folder. Each step carries the ``success``, ``dense_reward`` and ``grasp_penalty`` extras
(``serl_ext/loop/rollouts.py``; the learner reads ``grasp_penalty`` as 0 from demo files written
before it existed). Existing episodes count: a folder that already holds ``num_demos`` episodes
is left as it is, so the command is cheap to rerun; a folder whose episodes have other
observation keys or shapes than this config's env is refused (the message says which).
``--num_demos`` defaults to ``config.demos.num_demos`` (0 for ``sac``: nothing to collect).

UR tasks (``serl_ext/envs/ur_tasks.py``): the simulated UR5e (``ur5e-sim-lift``,
``ur5e-sim-wipe``) records its scripted expert (privileged simulator state) on one env reset
with each seed; a real arm (``ur:ur5e``) has no scripted expert: its demos are recorded by a
person, as ``launchers/record_demos.py`` does (``serl_ext/loop/recording.py``; device
``--config.human_input``, the task's ``spacemouse``; keys y success, n failure, x re-record,
q quit; only successes are kept).

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
_NUM = flags.DEFINE_integer("num_demos", None, "Successful episodes wanted (default: config.demos.num_demos).")
_OUT = flags.DEFINE_string("out", "", "Output folder (default: the run's demo folder, serl_ext/loop/demo_folders.py).")
_DIR_FILE = flags.DEFINE_string("dir_file", "", "Write the demo folder used (absolute path) to this file "
                                "(launchers/run_task.sh passes it on to learner and actor).")
_ALGO = flags.DEFINE_string("algorithm", "hil_serl", "Algorithm config whose env settings are used.")
_SEED = flags.DEFINE_integer("seed", 0, "Demo env seeds are 2_000_000 + seed * 10_000 + attempt.")
_NOISE = flags.DEFINE_float("noise", 0.0, "Gaussian noise std added to expert actions.")
_OVERRIDES = flags.DEFINE_multi_string(
    "config", [], "Training-config overrides FIELD=VALUE (e.g. --config=env.image_obs=True; a "
    "--config.FIELD=VALUE flag is read the same way): the env's settings, the robot of a ur: task.")


def _check_folder(directory, paths, env):
    """Refuses a folder whose first episode does not fit ``env``'s observations and actions.

    Raises:
      SystemExit: the mismatch (``ObservationMismatchError``'s message).
    """
    from serl_ext.data.episodes import ObservationMismatchError, check_episode_fits, load_episode
    from serl_ext.loop import common

    if not paths:
        return
    try:
        check_episode_fits(load_episode(paths[0]), common.observation_spec(env),
                           int(env.action_space.shape[0]), source=paths[0], target="env")
    except ObservationMismatchError as e:
        raise SystemExit(f"{directory} holds demos of another observation mode: {e}") from None


def main(argv):
    del argv
    from configs.train import get_config
    from serl_ext.data.episodes import list_episodes, save_episode
    from serl_ext.data.replay_buffer import ACTION_SOURCE_HUMAN
    from serl_ext.loop import common
    from serl_ext.loop.config_overrides import apply_overrides
    from serl_ext.loop.demo_folders import demo_dir_for
    from serl_ext.loop.rollouts import expert_policy, run_episode

    if _TASK.value.startswith("gym:"):
        raise SystemExit(f"{_TASK.value}: gym tasks have no scripted expert to record demos "
                         "with; record your own episodes (teleop, or launchers/import_rlds.py) "
                         "and pass --config.demos.path=DIR --config.demos.num_demos=N")
    from serl_ext.envs import ur_tasks

    config = get_config(f"{_TASK.value},{_ALGO.value}")
    apply_overrides(config, _OVERRIDES.value)
    num = int(config.demos.num_demos if _NUM.value is None else _NUM.value)
    out = os.path.abspath(_OUT.value or demo_dir_for(config))
    if _DIR_FILE.value:
        with open(_DIR_FILE.value, "w") as f:
            f.write(out + "\n")
    if num <= 0:
        print(f"{config.algorithm} uses no demos (num_demos={num}); nothing to do")
        return
    os.makedirs(out, exist_ok=True)
    existing = list_episodes(out)
    if ur_tasks.is_ur_real_task(config.task):  # no scripted expert: a person records them
        from serl_ext.loop.recording import INPUTS, run_recording

        human_input = config.human_input if config.human_input in INPUTS else "spacemouse"
        if len(existing) >= num:
            print(f"{out} already holds {len(existing)} demos (>= {num}); nothing to do")
            return
        print(f"teleoperated demos ({human_input}): drive the arm; keys y success, n failure, "
              "x re-record, q quit")
        try:
            report = run_recording(config, input_kind=human_input, out_dir=out, num_demos=num, seed=_SEED.value)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        print(f"wrote {len(report.written)} demos to {out} (ended: {report.ended_by})")
        return
    rng = np.random.default_rng(_SEED.value)
    shared_env = None  # the simulated UR arm: one env (a simulator build takes seconds)
    if ur_tasks.is_ur_sim_task(config.task):
        policy = ur_tasks.expert_policy(noise=_NOISE.value, rng=rng)
        shared_env = common.make_env(config, 0, with_operator=False)
    else:
        policy = expert_policy(_TASK.value, noise=_NOISE.value, rng=rng)
    if existing:
        probe = shared_env or common.make_env(config, 0, with_operator=False)
        try:
            _check_folder(out, existing, probe)
        finally:
            if shared_env is None:
                probe.close()
    if len(existing) >= num:
        if shared_env is not None:
            shared_env.close()
        print(f"{out} already holds {len(existing)} demos (>= {num}); nothing to do")
        return
    index, attempts, lengths = len(existing), 0, []
    max_attempts = 3 * num + 20
    try:
        with tqdm(total=num, initial=index, desc=f"demos {_TASK.value}") as pbar:
            while index < num:
                if attempts >= max_attempts:
                    sys.exit(f"only {index} successful demos after {attempts} attempts; the expert fails too often")
                seed = 2_000_000 + _SEED.value * 10_000 + attempts
                attempts += 1
                env = shared_env or common.make_env(config, seed, with_operator=False)
                try:
                    episode, stats = run_episode(
                        env, policy, seed, policy_source=ACTION_SOURCE_HUMAN,
                        metadata={"task": _TASK.value, "source": "demo", "episode_id": index,
                                  "action_repeat": int(config.env.action_repeat)},
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
    from serl_ext.loop.config_overrides import split_config_flags

    app.run(main, argv=split_config_flags(sys.argv))
