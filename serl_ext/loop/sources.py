"""Selectivity of a gate, from the per-step action sources of an episode alone.

Every executed step has a source (``serl_ext/data/replay_buffer.py``: ``ACTION_SOURCE_POLICY``
0, ``ACTION_SOURCE_RECOVERY`` 1, ``ACTION_SOURCE_HUMAN`` 2). Nothing here knows a method: a gate
is whatever returned RECOVERY steps (``serl_ext/loop/gate.py``), a human whoever's
``intervene_action`` was executed. Definitions, on one episode's sources ``s[0..T-1]``:

* a **run** is a maximal block of consecutive steps with the same source;
* a **recovery onset** is the first step of a run of RECOVERY steps (``s[t] == RECOVERY`` and
  ``t == 0`` or ``s[t-1] != RECOVERY``). Chunks executed back to back, with no other step
  between them, form one run and so one onset (the gate's own ``gate/triggers`` counts chunks);
* a **takeover onset** is the first step of a run of HUMAN steps (``intervention/segments``);
* a recovery onset at ``t`` is **followed by a takeover** when a takeover onset ``u`` lies in
  ``t < u <= t + N`` (one of the N steps after the onset step). A takeover that starts while the
  recovery run is still going (the human aborts the chunk) counts like one right after it;
* a takeover onset at ``u`` is **preceded by a recovery onset** when a recovery onset ``t`` lies
  in ``u - N <= t < u`` (the same pairs, counted from the takeover's side);
* a recovery run **ended by the human** is one whose next step is HUMAN. From the sources alone
  a chunk the human aborted and a chunk that ran to its end with the human taking over on the
  very next step look the same; both are counted (the gate's ``gate/aborted_chunks`` counts only
  the first kind).

Windows stop at the episode's end (an onset at the last step is never followed by a takeover);
nothing pairs across episodes. ``N = actor.selectivity_window`` (``configs/base.py``, default 10).
Onset precision = onsets followed by a takeover / recovery onsets; recall = takeovers preceded
by an onset / takeover onsets (:func:`onset_precision_recall`).
"""

from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from serl_ext.data.replay_buffer import ACTION_SOURCE_HUMAN as HUMAN
from serl_ext.data.replay_buffer import ACTION_SOURCE_POLICY as POLICY
from serl_ext.data.replay_buffer import ACTION_SOURCE_RECOVERY as RECOVERY

# Keys of :func:`source_counts`: steps by source, then the onset and run counts. Logged as
# ``selectivity/KEY`` in each episode's row of metrics/actor.jsonl; in summary.json as ``KEY``
# summed over episodes (serl_ext/loop/actor.py:write_summary).
STEP_KEYS = ("policy_steps", "recovery_steps", "human_steps")
EVENT_KEYS = (
    "recovery_onsets", "takeover_onsets",
    "recovery_onsets_followed_by_takeover", "takeover_onsets_preceded_by_recovery",
    "recovery_runs_ended_by_human",
)
COUNT_KEYS = STEP_KEYS + EVENT_KEYS


def onsets(sources: np.ndarray, source: int) -> np.ndarray:
    """Indices (int64, ascending) of the first steps of the runs of ``source`` in ``sources``
    ((T,) integer array; T may be 0)."""
    is_source = np.asarray(sources) == source
    previous = np.concatenate([[False], is_source[:-1]])
    return np.flatnonzero(is_source & ~previous)


def source_counts(sources, window: int) -> Dict[str, int]:
    """The selectivity counts of one episode (module docstring for every definition).

    Args:
      sources: (T,) integer array (int8 in the buffers) of per-step action sources, T >= 0, each
        POLICY (0), RECOVERY (1) or HUMAN (2).
      window: N >= 0, in env (agent) steps.
    Returns:
      ``{key: int}`` for every key of :data:`COUNT_KEYS`: steps by source; recovery onsets;
      takeover onsets; recovery onsets followed by a takeover onset within N; takeover onsets
      preceded by a recovery onset within N; recovery runs ended by a HUMAN step. All zero for an
      episode without RECOVERY and HUMAN steps except ``policy_steps``.
    Raises:
      ValueError: ``sources`` is not one-dimensional or holds another value; ``window < 0``.
    """
    s = np.asarray(sources)
    if s.ndim != 1:
        raise ValueError(f"sources must be a (T,) array, got shape {s.shape}")
    if s.size and (s.dtype.kind not in "iu" or not np.isin(s, (POLICY, RECOVERY, HUMAN)).all()):
        bad = sorted(set(np.unique(s).tolist()) - {POLICY, RECOVERY, HUMAN})
        raise ValueError(f"sources must be integers in {{{POLICY}, {RECOVERY}, {HUMAN}}}, got {bad or s.dtype}")
    window = int(window)
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    rec, hum = onsets(s, RECOVERY), onsets(s, HUMAN)
    # The first takeover onset after each recovery onset (a sentinel past any window when none),
    # and the last recovery onset before each takeover onset (a sentinel before any window).
    next_takeover = np.append(hum, np.iinfo(np.int64).max)[np.searchsorted(hum, rec, side="right")]
    last_onset = np.concatenate([[-window - 1], rec])[np.searchsorted(rec, hum, side="left")]
    followed = int(np.sum(next_takeover - rec <= window))
    preceded = int(np.sum(hum - last_onset <= window))
    is_rec = s == RECOVERY
    ended_by_human = int(np.sum(is_rec[:-1] & (s[1:] == HUMAN))) if s.size else 0
    return {
        "policy_steps": int(np.sum(s == POLICY)),
        "recovery_steps": int(np.sum(is_rec)),
        "human_steps": int(np.sum(s == HUMAN)),
        "recovery_onsets": int(len(rec)),
        "takeover_onsets": int(len(hum)),
        "recovery_onsets_followed_by_takeover": followed,
        "takeover_onsets_preceded_by_recovery": preceded,
        "recovery_runs_ended_by_human": ended_by_human,
    }


def add_counts(total: Dict[str, int], counts: Mapping[str, int]) -> Dict[str, int]:
    """Adds ``counts`` (a :func:`source_counts` dict) into ``total`` in place (missing keys start
    at 0) and returns ``total``."""
    for k in COUNT_KEYS:
        total[k] = int(total.get(k, 0)) + int(counts.get(k, 0))
    return total


def onset_precision_recall(counts: Mapping[str, int]) -> Tuple[Optional[float], Optional[float]]:
    """``(precision, recall)`` of trigger onsets against takeover onsets from (summed)
    :func:`source_counts`: precision = recovery onsets followed by a takeover within N /
    recovery onsets (None without a recovery onset); recall = takeover onsets preceded by a
    recovery onset within N / takeover onsets (None without a takeover; 0.0 for a run with
    takeovers and no recovery, e.g. plain HiL-SERL)."""
    onsets_, takeovers = int(counts.get("recovery_onsets", 0)), int(counts.get("takeover_onsets", 0))
    precision = counts.get("recovery_onsets_followed_by_takeover", 0) / onsets_ if onsets_ else None
    recall = counts.get("takeover_onsets_preceded_by_recovery", 0) / takeovers if takeovers else None
    return (None if precision is None else float(precision), None if recall is None else float(recall))


SOURCE_NAMES = {POLICY: "policy", RECOVERY: "recovery", HUMAN: "human"}
# The simulated operators' phase while a noticed trigger waits out the reaction delay
# (serl_ext/envs/operator.py PHASE_REACTING, serl_ext/envs/ur_tasks.py).
REACTING_PHASE = "reacting"


class TakeoverCauses:
    """Attributes each takeover onset of an episode to a cause ``"REASON/ACTOR"``.

    REASON is the operator's trigger reason (``info["operator/trigger"]`` on the step whose
    ``info["operator/phase"]`` turned ``"reacting"``: ``stall``, ``workspace``,
    ``knocked_away``, ... of ``serl_ext/envs/operator.py``), ACTOR who acted on that step
    (``policy`` or ``recovery``: the source chosen before the human's override). A takeover
    with no such step before it (a person at a SpaceMouse, an operator without the info keys) is
    ``"unannounced/ACTOR"`` with the actor of the last robot step before it (``policy`` at the
    episode's first step). Call :meth:`reset` at each episode start and :meth:`step` once per
    executed step.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._phase = None
        self._noticed: Optional[str] = None
        self._prev_human = False
        self._last_robot = POLICY

    def step(self, robot_source: int, source: int, info: Mapping) -> Optional[str]:
        """Returns the cause when this step is a takeover onset, else None.

        Args:
          robot_source: the source the gate chose for this step (POLICY or RECOVERY).
          source: the executed step's source (HUMAN when the human's action replaced it).
          info: the env's info of this step.
        """
        phase = info.get("operator/phase")
        if phase == REACTING_PHASE and self._phase != REACTING_PHASE:
            reason = str(info.get("operator/trigger", "") or "unknown")
            self._noticed = f"{reason}/{SOURCE_NAMES.get(int(robot_source), str(robot_source))}"
        self._phase = phase
        human = int(source) == HUMAN
        cause = None
        if human and not self._prev_human:
            cause = self._noticed or f"unannounced/{SOURCE_NAMES.get(int(self._last_robot), str(self._last_robot))}"
            self._noticed = None
        if not human:
            self._last_robot = int(source)
        self._prev_human = human
        return cause


def during_recovery_share(causes: Mapping[str, int]) -> Optional[float]:
    """Share of the takeovers in ``causes`` (``{"REASON/ACTOR": count}``) noticed while recovery
    acted; None without a takeover."""
    total = sum(int(v) for v in causes.values())
    if not total:
        return None
    return sum(int(v) for k, v in causes.items() if k.endswith("/recovery")) / total
