"""The actor's intervention-gate slot.

Every actor step runs, in this order (serl_ext/loop/actor.py)::

    policy_action = agent.sample_actions(obs, key)            # the base policy proposes
    action, source = gate.select_action(obs, policy_action)   # <- THE GATE SLOT
    next_obs, reward, terminated, truncated, info = env.step(action)
    if "intervene_action" in info:                            # a human (real or simulated)
        action, source = info["intervene_action"], HUMAN      # took over: always on top
    gate.observe(obs, action, source, reward, next_obs, info)  # a human step aborts any chunk

A gate may replace the policy's action with its own (for example a method's recovery
chunk, ``source = RECOVERY``) but it never overrides the human: the env wrapper that carries the
operator sits below the gate and its ``intervene_action`` wins. The default
:class:`PassThroughGate` executes the policy's action unchanged (plain HiL-SERL).
"""

from typing import Any, Dict, FrozenSet, Protocol, Tuple

import numpy as np

from serl_ext.data.replay_buffer import ACTION_SOURCE_HUMAN as HUMAN
from serl_ext.data.replay_buffer import ACTION_SOURCE_POLICY as POLICY
from serl_ext.data.replay_buffer import ACTION_SOURCE_RECOVERY as RECOVERY

# Values of the per-transition ``action_source`` field (int8), STYLE.md house convention.
ACTION_SOURCE_NAMES = {POLICY: "policy", RECOVERY: "recovery", HUMAN: "human"}


class Gate(Protocol):
    """Interface of an intervention gate plugged in between the policy and the env.

    Required: :meth:`reset`, :meth:`select_action`, :meth:`observe`, :meth:`stats`. The rest is
    optional (the actor reads it with a default, :class:`BaseGate` has them all): a gate built
    by an algorithm's gate factory (``config.components.gate``, see
    ``serl_ext/loop/components.py``) usually subclasses :class:`BaseGate`.

    Attributes read by the actor loop (defaults in :class:`BaseGate`):
      part_name: name of the parameter-message part (``serl_ext/loop/param_message.py``) the
        gate's :meth:`load_params` takes; "" takes none.
      ready: False while the gate cannot act yet (the actor then skips the system evaluation).
      eval_with_gate: evaluations also run the policy + :meth:`for_evaluation` copy, no human.
      intervention_sources: action sources, besides HUMAN, whose transitions also go to the
        demo + intervention store.
      ready_wait_s, ready_wait_after_episodes: once per run, after that many episodes, wait at
        an episode boundary up to ``ready_wait_s`` seconds for ``ready`` (0: never).
      summary_counters: keys of :meth:`summary` that add up over actor restarts.
    """

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

    def load_params(self, part: Dict[str, Any]) -> None:
        """Swaps in the gate's part of a parameter message (a dict with an int ``version``).

        Raises ValueError / TypeError for a part it cannot take, leaving itself unchanged (the
        actor then rejects the whole message, the agent's parameters included).
        """

    def for_evaluation(self) -> "Gate":
        """A fresh copy sharing the current models, for the no-human system evaluation."""

    def step_info(self) -> Dict[str, Any]:
        """Optional: scalars of the last :meth:`select_action` decision, for evaluation videos.

        A flat dict of numbers or bools, e.g. ``{"value": proxy value, "risk_prob": sigmoid(risk)
        in [0, 1], "triggered": bool}``; ``serl_ext/loop/video.py`` draws every key it gets (a
        bool key naming a trigger shades its steps, the rest are lines) below the frames of the
        system evaluation. Called once per step right after :meth:`select_action`; default {}.
        """

    def summary(self) -> Dict[str, Any]:
        """Run totals merged into ``summary.json`` at the end."""

    def close(self) -> None:
        """End of the run (flush files)."""


class BaseGate:
    """Defaults of every optional part of :class:`Gate`; its action is the policy's."""

    part_name = ""
    ready = True
    eval_with_gate = False
    intervention_sources: FrozenSet[int] = frozenset()
    ready_wait_s = 0.0
    ready_wait_after_episodes = 0
    summary_counters: Tuple[str, ...] = ()

    def reset(self, observation):
        del observation

    def select_action(self, observation, policy_action):
        del observation
        return policy_action, POLICY

    def observe(self, observation, action, source, reward, next_observation, info):
        del observation, action, source, reward, next_observation, info

    def stats(self):
        return {}

    def load_params(self, part):
        raise TypeError(f"{type(self).__name__} takes no parameter-message part (got one with keys {sorted(part)})")

    def for_evaluation(self):
        return type(self)()

    def step_info(self):
        return {}

    def summary(self):
        return {}

    def close(self):
        pass


class PassThroughGate(BaseGate):
    """The HiL-SERL default: always executes the policy's action."""
