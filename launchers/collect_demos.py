"""Collects successful scripted-expert demos as episode files.

  python launchers/collect_demos.py --task=pick-place --num_demos=20 [--out=demos/pick-place]

Runs the task's scripted Meta-World expert (privileged state, no operator) through the same env
the training run uses (``--config``: action repeat, episode length, reward, observations), keeps
only successful episodes and writes them with ``serl_ext.data.episodes.save_episode`` as
``episode_000000.npz`` ... in ``--out``. Each step carries the ``success``, ``dense_reward`` and
``grasp_penalty`` extras (``serl_ext/loop/rollouts.py``; the learner reads ``grasp_penalty`` as 0
from demo files written before it existed). Existing episodes count: a folder that already holds
``num_demos`` episodes is left as it is, so the command is cheap to rerun.
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
    config = get_config(f"{_TASK.value},{_ALGO.value}")
    out = os.path.abspath(_OUT.value or os.path.join("demos", _TASK.value))
    os.makedirs(out, exist_ok=True)
    existing = list_episodes(out)
    if len(existing) >= _NUM.value:
        print(f"{out} already holds {len(existing)} demos (>= {_NUM.value}); nothing to do")
        return
    policy = expert_policy(_TASK.value, noise=_NOISE.value, rng=np.random.default_rng(_SEED.value))
    index, attempts, lengths = len(existing), 0, []
    max_attempts = 3 * _NUM.value + 20
    with tqdm(total=_NUM.value, initial=index, desc=f"demos {_TASK.value}") as pbar:
        while index < _NUM.value:
            if attempts >= max_attempts:
                sys.exit(f"only {index} successful demos after {attempts} attempts; the expert fails too often")
            seed = 2_000_000 + _SEED.value * 10_000 + attempts
            attempts += 1
            env = common.make_env(config, seed, with_operator=False)
            try:
                episode, stats = run_episode(
                    env, policy, seed, policy_source=ACTION_SOURCE_HUMAN,
                    metadata={"task": _TASK.value, "source": "demo", "episode_id": index,
                              "action_repeat": int(config.env.action_repeat)},
                )
            finally:
                env.close()
            if not stats["success"]:
                continue
            save_episode(os.path.join(out, f"episode_{index:06d}.npz"), episode)
            lengths.append(len(episode["actions"]))
            index += 1
            pbar.update(1)
    print(f"wrote {len(lengths)} demos to {out} ({attempts} attempts, mean length {np.mean(lengths):.1f} steps)")


if __name__ == "__main__":
    app.run(main)
