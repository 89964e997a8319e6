"""The learner-side slot for what a method adds to HiL-SERL (the actor-side slot is
``serl_ext/loop/gate.py``).

A learner extension lives inside the learner process next to the agent. The learner loop
(``serl_ext/loop/learner.py``) calls it, in this order::

    on_transition(transition)          # transport thread: every transition of the online store
    warmup_step()                      # each loop pass while the agent waits for training_starts
    train_step(learner_step)           # after each agent update
    message_part(learner_step, force)  # at each publish: its part of the parameter message or None
    stats()                            # with the train/ scalars (keys already namespaced)
    save(directory) / restore(directory)   # with each checkpoint / on resume

It sees every transition the actor sends (``dones`` ends an episode; finished episodes can be
cut with :class:`serl_ext.data.episodes.EpisodeAssembler`), trains its own models on its own
schedule, and contributes the part named :attr:`LearnerExtension.name` of the parameter
message (``serl_ext/loop/param_message.py``; a dict with an int ``version``), which the actor
hands to the gate whose ``part_name`` is the same. Its files live in
``{run_dir}/{name}`` beside the agent checkpoint.

An algorithm names its extension factory in ``config.components.learner_extension``
(``configs/algorithms.py``); :func:`serl_ext.loop.components.make_learner_extension` builds it.
"""

import logging
from typing import Any, Dict, Optional, Protocol

log = logging.getLogger(__name__)


class LearnerExtension(Protocol):
    """Interface of a learner extension (module docstring)."""

    name: str

    def on_transition(self, transition: Dict[str, Any]) -> None:
        """One online transition (house keys, ``action_source``, ``grasp_penalty``); called on the
        transport thread, so it must be quick and thread safe."""

    def warmup_step(self) -> bool:
        """Work done while the agent waits for ``learner.training_starts`` transitions; returns
        True when it did work (the learner then does not sleep)."""

    def train_step(self, learner_step: int) -> None:
        """Called after each agent update (``learner_step`` counts them, from 1)."""

    def message_part(self, learner_step: int, force: bool) -> Optional[Dict[str, Any]]:
        """Its part of the next parameter message, or None to send none this time; ``force``
        (heartbeats, the last publish) asks for one regardless of its own schedule."""

    def stats(self) -> Dict[str, float]:
        """Scalars logged with the learner's ``train/`` keys (namespaced by the extension)."""

    def save(self, directory: str) -> None:
        """Writes its state under ``directory`` (called with every agent checkpoint)."""

    def restore(self, directory: str) -> bool:
        """Reloads what :meth:`save` wrote; False when nothing is there."""


class TeeStore:
    """A data store for the transport server that inserts into ``store`` and also calls
    ``on_insert(transition)`` (a learner extension). ``len()`` is the store's.

    A failure of ``on_insert`` is logged and never loses the transition.
    """

    def __init__(self, store, on_insert):
        self.store = store
        self.on_insert = on_insert

    def insert(self, transition):
        self.store.insert(transition)
        try:
            self.on_insert(transition)
        except Exception as e:  # never lose the transition because the side path failed
            log.warning("learner extension failed on a transition: %s", e)

    def __len__(self):
        return len(self.store)
