"""Offline data for the UniIntervene models, recorded in simulation.

For one task this writes, under ``out_dir``:

* ``demos/episode_*.npz``: successful scripted-expert episodes (``source = "demo"``);
* ``rollouts/rollout_*.npz``: episodes of a weak base policy acting alone (BC on the demos,
  trained for few steps, sampled stochastically), which fail or get stuck
  (``source = "rollout"``);
* ``assisted/assisted_*.npz``: episodes of the same weak policy with the simulated operator on
  top; the operator's takeover segments are the steps with ``interventions = True``
  (``source = "assisted"``; ``metadata["first_intervention_step"]`` is the first takeover);
* ``manifest.json``: counts, success rates, intervention rate, the settings used.

All files use the episode format of ``serl_ext/data/episodes.py`` (per-step ``success`` and
``dense_reward`` extras). Env settings (action repeat, episode length, reward, observations)
come from the training config, so the offline data matches what the online runs see.
"""

import json
import os
from typing import Any, Dict

import jax
import numpy as np
from tqdm import tqdm

from serl_ext.data.episodes import EpisodeWriter, list_episodes, load_episode
from serl_ext.data.replay_buffer import ACTION_SOURCE_HUMAN
from serl_ext.loop import common
from serl_ext.loop.rollouts import expert_policy, run_episode


def train_weak_bc(config, demo_episodes, steps: int, seed: int, batch_size: int = 128):
    """Behaviour cloning on the demos for ``steps`` updates (few steps => a weak policy).

    ``serl_ext.loop.bc_train.train_bc`` with ``config.agent``. Returns the
    :class:`serl_ext.agents.bc.BCAgent`. Raises ValueError when there are no demo episodes.
    """
    from serl_ext.loop.bc_train import train_bc

    return train_bc(config.agent, demo_episodes, steps, seed, batch_size)


def collect_offline_data(
    config,
    out_dir: str,
    *,
    num_demos: int = 20,
    num_rollouts: int = 30,
    num_assisted: int = 30,
    bc_steps: int = 300,
    seed: int = 0,
    progress_bar: bool = True,
) -> Dict[str, Any]:
    """Records demos, weak-policy rollouts and operator-assisted rollouts for ``config.task``.

    Existing files count (a rerun only adds what is missing). Seeds: demos
    ``3_000_000 + seed * 10_000 + attempt``, rollouts ``4_000_000 + ...``, assisted
    ``5_000_000 + ...`` (disjoint from training and evaluation seeds).

    Returns:
      the manifest dict (also written to ``{out_dir}/manifest.json``).
    Raises:
      RuntimeError: the scripted expert fails too often to produce ``num_demos`` demos.
    """
    task = config.task
    os.makedirs(out_dir, exist_ok=True)
    base_meta = {"task": task, "action_repeat": int(config.env.action_repeat)}

    # 1. Successful scripted demos.
    demo_dir = os.path.join(out_dir, "demos")
    writer = EpisodeWriter(demo_dir, prefix="episode")
    policy = expert_policy(task)
    attempts = 0
    with tqdm(total=num_demos, initial=min(writer.next_id, num_demos), desc=f"{task} demos",
              disable=not progress_bar) as pbar:
        while len(list_episodes(demo_dir)) < num_demos:
            if attempts > 3 * num_demos + 20:
                raise RuntimeError(f"{task}: expert failed too often ({attempts} attempts)")
            s = 3_000_000 + seed * 10_000 + attempts
            attempts += 1
            env = common.make_env(config, s, with_operator=False)
            try:
                episode, stats = run_episode(env, policy, s, policy_source=ACTION_SOURCE_HUMAN,
                                             metadata={**base_meta, "source": "demo"})
            finally:
                env.close()
            if stats["success"]:
                writer.write(episode)
                pbar.update(1)
    demos = [load_episode(p) for p in list_episodes(demo_dir)[:num_demos]]

    # 2. A weak base policy: BC on the demos for a few steps, sampled stochastically (trained
    # only when some rollout is still missing).
    rng = [jax.random.PRNGKey(seed + 11)]
    agent = []

    def bc_policy(obs, env):
        del env
        if not agent:
            agent.append(train_weak_bc(config, demos, bc_steps, seed))
        rng[0], key = jax.random.split(rng[0])
        return np.asarray(agent[0].sample_actions(obs, key))

    def record(kind: str, count: int, with_operator: bool, seed_base: int):
        directory = os.path.join(out_dir, kind)
        writer = EpisodeWriter(directory, prefix=kind[:-1] if kind.endswith("s") else kind)
        stats_all = []
        start = len(list_episodes(directory))
        for i in tqdm(range(start, count), desc=f"{task} {kind}", disable=not progress_bar):
            s = seed_base + seed * 10_000 + i
            env = common.make_env(config, s, with_operator=with_operator)
            try:
                episode, stats = run_episode(env, bc_policy, s, metadata={
                    **base_meta, "source": kind[:-1] if kind.endswith("s") else kind,
                    "bc_steps": int(bc_steps)})
            finally:
                env.close()
            writer.write(episode)
            stats_all.append(stats)
        episodes = [load_episode(p) for p in list_episodes(directory)[:count]]
        steps = sum(len(e["actions"]) for e in episodes)
        return {
            "episodes": len(episodes),
            "success_rate": float(np.mean([e["metadata"]["success"] for e in episodes])) if episodes else None,
            "steps": int(steps),
            "intervention_rate": float(sum(e["interventions"].sum() for e in episodes) / max(steps, 1)),
            "episodes_with_takeover": int(sum(e["interventions"].any() for e in episodes)),
        }

    rollouts = record("rollouts", num_rollouts, False, 4_000_000)
    assisted = record("assisted", num_assisted, True, 5_000_000)
    manifest = {
        "task": task,
        "seed": int(seed),
        "bc_steps": int(bc_steps),
        "demos": {"episodes": len(demos), "mean_length": float(np.mean([len(e["actions"]) for e in demos]))},
        "rollouts": rollouts,
        "assisted": assisted,
        "env": {"action_repeat": int(config.env.action_repeat), "reward_type": config.env.reward_type,
                "image_obs": bool(config.env.image_obs)},
    }
    common.atomic_write_json(os.path.join(out_dir, "manifest.json"), manifest)
    return manifest


def load_offline_data(out_dir: str) -> Dict[str, Any]:
    """Loads ``{"demos": [...], "rollouts": [...], "assisted": [...], "manifest": {...}}``.

    Raises:
      FileNotFoundError: ``out_dir`` or its manifest is missing (run the collector first).
    """
    manifest_path = os.path.join(out_dir, "manifest.json")
    if not os.path.exists(manifest_path):
        raise FileNotFoundError(f"{manifest_path} missing; run launchers/collect_offline.py first")
    with open(manifest_path) as f:
        manifest = json.load(f)
    data: Dict[str, Any] = {"manifest": manifest}
    for kind in ("demos", "rollouts", "assisted"):
        directory = os.path.join(out_dir, kind)
        data[kind] = [load_episode(p) for p in list_episodes(directory)] if os.path.isdir(directory) else []
    return data
