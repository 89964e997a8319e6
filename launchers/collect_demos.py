"""Collects successful scripted-expert demos as episode files.

  python launchers/collect_demos.py --task=pick-place --num_demos=20 [--out=demos/pick-place]

Runs the task's scripted Meta-World expert (privileged state, no operator) through the same env
the training run uses (``--config``: action repeat, episode length, reward, observations), keeps
only successful episodes and writes them with ``serl_ext.data.episodes.save_episode`` as
``episode_000000.npz`` ... in ``--out``. Existing episodes count: a folder that already holds
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


def collect_episode(env, expert, seed: int, rng: np.random.Generator, noise: float):
    """Runs one expert episode; returns (episode dict in the episodes.py format, success)."""
    from serl_ext.envs import get_privileged_state
    from serl_ext.loop.gate import HUMAN

    obs, _ = env.reset(seed=seed)
    observations = {k: [v] for k, v in obs.items()}
    actions, rewards, terminals, truncations, successes = [], [], [], [], []
    done, success = False, False
    while not done:
        action = np.asarray(expert(get_privileged_state(env)), dtype=np.float32)
        if noise > 0:
            action = action + rng.normal(0.0, noise, size=action.shape).astype(np.float32)
        action = np.clip(action, -1.0, 1.0)
        obs, reward, terminated, truncated, info = env.step(action)
        for k, v in obs.items():
            observations[k].append(v)
        actions.append(action)
        rewards.append(reward)
        terminals.append(terminated)
        truncations.append(truncated)
        success = success or bool(info.get("success", False))
        successes.append(bool(info.get("success", False)))
        done = terminated or truncated
    length = len(actions)
    episode = {
        "observations": {k: np.stack(v) for k, v in observations.items()},
        "actions": np.stack(actions).astype(np.float32),
        "rewards": np.asarray(rewards, np.float32),
        "terminals": np.asarray(terminals, bool),
        "truncations": np.asarray(truncations, bool),
        "interventions": np.zeros(length, bool),
        "action_source": np.full(length, HUMAN, np.int8),
        "success": np.asarray(successes, bool),
    }
    return episode, success


def main(argv):
    del argv
    from configs.train import get_config
    from serl_ext.data.episodes import list_episodes, save_episode
    from serl_ext.envs import get_expert
    from serl_ext.loop import common

    config = get_config(f"{_TASK.value},{_ALGO.value}")
    out = os.path.abspath(_OUT.value or os.path.join("demos", _TASK.value))
    os.makedirs(out, exist_ok=True)
    existing = list_episodes(out)
    if len(existing) >= _NUM.value:
        print(f"{out} already holds {len(existing)} demos (>= {_NUM.value}); nothing to do")
        return
    expert = get_expert(_TASK.value)
    rng = np.random.default_rng(_SEED.value)
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
                episode, success = collect_episode(env, expert, seed, rng, _NOISE.value)
            finally:
                env.close()
            if not success:
                continue
            episode["metadata"] = {
                "task": _TASK.value, "seed": seed, "success": True, "source": "demo",
                "episode_id": index, "action_repeat": int(config.env.action_repeat),
            }
            save_episode(os.path.join(out, f"episode_{index:06d}.npz"), episode)
            lengths.append(len(episode["actions"]))
            index += 1
            pbar.update(1)
    print(f"wrote {len(lengths)} demos to {out} ({attempts} attempts, mean length {np.mean(lengths):.1f} steps)")


if __name__ == "__main__":
    app.run(main)
