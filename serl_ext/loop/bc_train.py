"""Behaviour cloning on recorded episodes: the SFT baseline and weak base policies.

``train_bc`` fits a :class:`serl_ext.agents.bc.BCAgent` (tanh-Gaussian NLL by default) to the
actions of a list of episodes (the ``serl_ext.data.episodes`` format). The paper's SFT row
(pi0.5 fine-tuned on the demos) is stood in for by BC on the 20 scripted demos
(DESIGN.md section 6b); a few updates give the weak policies of the offline data of the method.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

import jax
import numpy as np


def load_demo_episodes(directory: str, num_demos: int) -> List[Dict[str, Any]]:
    """The first ``num_demos`` episode files of ``directory`` (sorted by name).

    Raises:
      FileNotFoundError: the folder holds fewer than ``num_demos`` episodes; the message says
        how to collect them.
      ValueError: ``num_demos < 1``.
    """
    from serl_ext.data.episodes import list_episodes, load_episode

    if int(num_demos) < 1:
        raise ValueError(f"num_demos must be >= 1, got {num_demos}")
    paths = list_episodes(directory) if os.path.isdir(directory) else []
    if len(paths) < int(num_demos):
        raise FileNotFoundError(
            f"{directory} holds {len(paths)} demo episodes, {num_demos} needed; collect them with "
            f"`python launchers/collect_demos.py --task TASK --num_demos {num_demos}`")
    return [load_episode(p) for p in paths[: int(num_demos)]]


def train_bc(agent_config, episodes: Sequence[Dict[str, Any]], steps: int, seed: int,
             batch_size: int = 256):
    """Behaviour cloning on every transition of ``episodes`` for ``steps`` updates.

    Args:
      agent_config: a BC or SAC agent config (``config.agent``; BC takes the fields it has:
        widths, LayerNorm, encoder, learning rate).
      episodes: episode dicts (``observations`` dict of (T+1, ...) arrays, ``actions`` (T, A)
        float32 in [-1, 1]).
      steps: gradient updates (>= 0; 0 returns the untrained policy).
      seed: seeds the network initialisation and the minibatch sampling.
      batch_size: transitions per update (sampled uniformly with replacement).

    Returns:
      The trained :class:`serl_ext.agents.bc.BCAgent` (``eval_actions`` = tanh(mean)).

    Raises:
      ValueError: no episodes, or ``steps < 0`` / ``batch_size < 1``.
    """
    from serl_ext.agents.bc import BCAgent
    from serl_ext.data.episodes import episode_to_transitions
    from serl_ext.data.replay_buffer import TRANSITION_KEYS, ReplayBuffer

    if not episodes:
        raise ValueError("train_bc needs at least one episode")
    if int(steps) < 0 or int(batch_size) < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    first = episodes[0]
    spec = {k: (v.shape[1:], v.dtype) for k, v in first["observations"].items()}
    action_dim = first["actions"].shape[1]
    total = sum(len(e["actions"]) for e in episodes)
    buffer = ReplayBuffer(spec, action_dim, max(total, 1), seed=seed)
    for episode in episodes:
        for transition in episode_to_transitions(episode):
            buffer.insert({k: v for k, v in transition.items() if k in TRANSITION_KEYS})
    example = {k: v[0] for k, v in first["observations"].items()}
    agent = BCAgent.create(jax.random.PRNGKey(seed), example, first["actions"][0], agent_config)
    for _ in range(int(steps)):
        agent, _ = agent.update(buffer.sample(int(batch_size)))
    return agent


def bc_policy(agent):
    """``policy(obs, env) -> action`` (float32 (A,)) acting with ``agent.eval_actions``."""

    def policy(obs, env):
        del env
        return np.asarray(agent.eval_actions(obs), dtype=np.float32)

    return policy
