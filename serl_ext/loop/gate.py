"""The actor's intervention-gate slot.

Every actor step runs, in this order (serl_ext/loop/actor.py)::

    policy_action = agent.sample_actions(obs, key)            # the base policy proposes
    action, source = gate.select_action(obs, policy_action)   # <- THE GATE SLOT
    next_obs, reward, terminated, truncated, info = env.step(action)
    if "intervene_action" in info:                            # a human (real or simulated)
        action, source = info["intervene_action"], HUMAN      # took over: always on top
    gate.observe(obs, action, source, reward, next_obs, info)  # a human step aborts any chunk

A gate may replace the policy's action with its own (for example a UniIntervene recovery
chunk, ``source = RECOVERY``) but it never overrides the human: the env wrapper that carries the
operator sits below the gate and its ``intervene_action`` wins. The default
:class:`PassThroughGate` executes the policy's action unchanged (plain HiL-SERL).
"""

from typing import Any, Dict, Protocol, Tuple

import numpy as np

from serl_ext.data.replay_buffer import ACTION_SOURCE_HUMAN as HUMAN
from serl_ext.data.replay_buffer import ACTION_SOURCE_POLICY as POLICY
from serl_ext.data.replay_buffer import ACTION_SOURCE_RECOVERY as RECOVERY

# Values of the per-transition ``action_source`` field (int8), STYLE.md house convention.
ACTION_SOURCE_NAMES = {POLICY: "policy", RECOVERY: "recovery", HUMAN: "human"}


class Gate(Protocol):
    """Interface of an intervention gate plugged in between the policy and the env."""

    def reset(self, observation: Dict[str, np.ndarray]) -> None:
        """Called at the start of every episode with the first observation."""

    def select_action(
        self, observation: Dict[str, np.ndarray], policy_action: np.ndarray
    ) -> Tuple[np.ndarray, int]:
        """Returns ``(action (A,) float32 in [-1, 1], source)`` with source POLICY or RECOVERY."""

    def observe(
        self,
        observation: Dict[str, np.ndarray],
        action: np.ndarray,
        source: int,
        reward: float,
        next_observation: Dict[str, np.ndarray],
        info: Dict[str, Any],
    ) -> None:
        """Called after each env step with the action actually executed and its source.

        ``source == HUMAN`` means the human took over: a gate must abort any running chunk.
        """

    def stats(self) -> Dict[str, float]:
        """Per-episode scalars logged under ``gate/`` at the end of each episode."""


class PassThroughGate:
    """The HiL-SERL default: always executes the policy's action."""

    def reset(self, observation):
        del observation

    def select_action(self, observation, policy_action):
        del observation
        return policy_action, POLICY

    def observe(self, observation, action, source, reward, next_observation, info):
        del observation, action, source, reward, next_observation, info

    def stats(self):
        return {}
