"""The UniIntervene intervention gate: plugs into the actor's gate slot (``serl_ext/loop/gate.py``).

Per actor step (DESIGN section 4 "Online", the guide's "Inference in a HiL-RL loop")::

    V_t = V(o_t, l)                                    # proxy value, appended to the history
    if fewer than K+1 values this episode: execute the policy's action     (source POLICY; no
                                      decision until the history [V_{t-K} .. V_t] holds K real
                                      steps before V_t, i.e. from step t = K on: no V_0 padding)
    elif a recovery chunk is running: execute its next action              (source RECOVERY)
    elif a chunk just ended:          re-evaluate (below) without cooldown; after max_chunks
                                      chunks in a row, or when no longer triggered -> cooldown
    elif cooling down:                execute the policy's action           (source POLICY)
    else: p = sigmoid(risk(o_t, l, a_t^policy, [V_{t-K} .. V_t]))
          if p >= tau:  goal = memory.retrieve(embed(o_t), task, V_t)  (top-1 of cosine top-5
                        with goal value > V_t; the current observation with use_memory_goal=False)
                        chunk = recovery_policy(o_t, goal, l)  (H actions)  -> first action
    # after env.step: a human (real or simulated) action always wins; it aborts any chunk at
    # once. While the human is in control the gate starts no chunk; its proposal is the
    # recovery policy's action (propose_under_human, default) or the policy's, and after the
    # hand-back it waits cooldown_steps policy steps before it may fire again.

The gate fires only when the learner's payload says ``ready`` (see ``uniintervene_jax/online.py``);
until then it passes the policy's action through without calling any model.
The model calls sit behind :class:`GateModels` so the gate logic is tested with scripted
outputs; :class:`NetworkGateModels` is the real implementation (jitted networks + faiss memory).

The trigger and its threshold tau live here and nowhere else: :func:`trigger_rule` (used by
the gate and by the offline report), :func:`get_trigger_config` (the default tau,
``config.uniintervene.trigger`` online, ``config.trigger`` of the offline pipeline) and
:func:`threshold_sweep` (the official ``threshold_sweep_metrics``: tau = the best-F1 threshold
against the mined labels on held-out episodes). The offline pipeline stores the calibrated tau
in the intervention model folder (``model.json`` extra ``trigger_threshold``); the online
learner starts from it and keeps it fixed unless ``tau_recalibrate`` re-sweeps it at a refresh
on held-out online episodes. tau's run-time value comes with the learner's message
(``payload["tau"]``, :mod:`uniintervene_jax.message`).
"""

import collections
import json
import os
import threading
import time
from typing import Any, Dict, Optional, Protocol, Sequence, Tuple

import numpy as np

import ml_collections

from serl_ext.loop.gate import HUMAN, POLICY, RECOVERY, BaseGate
from uniintervene_jax.message import PART_NAME


# ------------------------------------------------------------------ the trigger and tau
def get_trigger_config() -> ml_collections.ConfigDict:
    """The trigger's config (DESIGN section 4): the default threshold."""
    c = ml_collections.ConfigDict()
    # Fire when sigmoid(risk) >= tau_int (DESIGN section 4 and the official default: 0.5). Used
    # only until a calibrated threshold exists: the offline pipeline replaces it by the best-F1
    # threshold on held-out episodes (threshold_sweep), which the online run then starts from.
    c.tau_int = 0.5
    return c


def check_trigger_config(c: Any) -> None:
    """Raises ValueError for ``tau_int`` outside (0, 1)."""
    if not 0.0 < float(c.tau_int) < 1.0:
        raise ValueError(f"trigger.tau_int must be in (0, 1), got {c.tau_int}")


def trigger_rule(outputs: Dict[str, Any], tau: float) -> np.ndarray:
    """Whether each scored row fires: bool ``(B,)`` = ``sigmoid(risk) >= tau`` (DESIGN section 4),
    in both head modes and every ablation (the w/o-TVR ablation is the learned ``binary`` head).

    Args:
      outputs: :meth:`InterventionModel.predict` output (``trigger_prob`` float32 ``(B,)``).
      tau: threshold in [0, 1] (the calibrated one from the model folder / the learner's message).
    Raises KeyError when ``outputs`` has no ``trigger_prob``.
    """
    return np.asarray(outputs["trigger_prob"]) >= float(tau)


SWEEP_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95, official np.arange(0.05, 1, 0.05)


def threshold_sweep(probs: Any, labels: Any, thresholds: Sequence[float] = SWEEP_THRESHOLDS) -> Dict[str, Any]:
    """Best-F1 threshold of the trigger against the mined labels (official
    ``vq1_heads.threshold_sweep_metrics``; the sweep its report logs).

    For each ``t`` in ``thresholds`` a row fires when ``prob >= t`` (the gate's rule; the official
    code writes ``prob > t``, which differs only at exact ties); precision ``tp / max(1, tp+fp)``,
    recall ``tp / max(1, tp+fn)``, F1. The best F1 wins (the first, i.e. lowest, threshold on a
    tie). AUPRC: trapezoid over (recall, precision) of the sweep plus thresholds 0 and 1, as the
    official code.

    Args:
      probs: float ``(N,)`` sigmoid(risk) of the decision rows of held-out episodes.
      labels: bool ``(N,)`` stagnation labels of the same rows.
      thresholds: increasing floats in (0, 1).
    Returns:
      ``{"best_threshold", "best_f1", "precision_at_best", "recall_at_best",
      "trigger_rate_at_best", "auprc", "n_pos", "n_total", "sweep": [{"threshold", "precision",
      "recall", "f1", "trigger_rate"}, ...]}``; with no rows, ``best_threshold`` is None.
    Raises ValueError for shapes that differ or an empty threshold list.
    """
    p = np.asarray(probs, np.float64).reshape(-1)
    y = np.asarray(labels).astype(bool).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"probs {p.shape} and labels {y.shape} differ")
    ts = [float(t) for t in thresholds]
    if not ts:
        raise ValueError("threshold_sweep needs at least one threshold")

    def point(t):
        pred = p >= t
        tp, fp, fn = float(np.sum(pred & y)), float(np.sum(pred & ~y)), float(np.sum(~pred & y))
        prec, rec = tp / max(1.0, tp + fp), tp / max(1.0, tp + fn)
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        return {"threshold": t, "precision": prec, "recall": rec, "f1": f1,
                "trigger_rate": float(pred.mean()) if p.size else 0.0}

    out: Dict[str, Any] = {"n_pos": int(y.sum()), "n_total": int(y.size)}
    if p.size == 0:
        out.update(best_threshold=None, best_f1=None, precision_at_best=None, recall_at_best=None,
                   trigger_rate_at_best=None, auprc=None, sweep=[])
        return out
    sweep = [point(t) for t in ts]
    best = max(sweep, key=lambda r: r["f1"])  # max keeps the first of equal F1s
    curve = [point(t) for t in [0.0] + ts + [1.0 + 1e-9]]
    rc = np.array([r["recall"] for r in curve])
    pr = np.array([r["precision"] for r in curve])
    order = np.argsort(rc, kind="stable")
    trapz = getattr(np, "trapezoid", None) or np.trapz
    out.update(best_threshold=best["threshold"], best_f1=best["f1"], precision_at_best=best["precision"],
               recall_at_best=best["recall"], trigger_rate_at_best=best["trigger_rate"],
               auprc=max(0.0, float(trapz(pr[order], rc[order]))), sweep=sweep)
    return out


class GateModels(Protocol):
    """What the gate asks of the models (all single, unbatched observations)."""

    ready: bool
    tau: float

    def value(self, observation: Dict[str, np.ndarray]) -> float:
        """Proxy value V(o, l) in [0, 1]."""

    def score(self, observation, policy_action: np.ndarray, value_history: np.ndarray) -> Tuple[float, bool]:
        """``(sigmoid(risk) in [0, 1], trigger)`` for the candidate action; ``value_history``
        float32 ``(K+1,)`` oldest first, V_t last."""

    def goal(self, observation, value: float) -> Optional[Dict[str, np.ndarray]]:
        """Goal observation retrieved from the memory, or None when no item has a higher value."""

    def chunk(self, observation, goal: Dict[str, np.ndarray]) -> np.ndarray:
        """Recovery chunk float32 ``(H, A)`` in [-1, 1]."""


class UniInterveneGate(BaseGate):
    """Gate-slot implementation (module docstring).

    Args:
      models: a :class:`GateModels` (``ready``/``tau`` read every step).
      history_len: K (value history has K+1 entries).
      cooldown_steps: policy steps without triggering after a recovery ends or the human hands back.
      max_chunks: consecutive chunks before a forced cooldown.
      use_memory_goal: False (ablation) conditions the recovery policy on the current observation.
      propose_under_human: while the human holds control, propose the recovery policy's action
        (goal from the memory) instead of the base policy's; the human's action is executed
        either way, but the hand-back (the human lets go once the robot's proposals agree with
        what they would do) then judges the recovery policy.
      replan_every: 0 (default) executes each chunk open loop; n > 0 re-predicts the rest of
        the running chunk every n steps from the current observation toward the same goal.
      timeline_path: append the per-step value/risk/trigger/source of every ``timeline_every``-th
        episode to this JSONL file (None: off).
    Loop options (``serl_ext.loop.gate.BaseGate`` attributes, set by :func:`make_gate` from
    ``config.uniintervene``): ``eval_with_gate``, ``intervention_sources`` ({RECOVERY} with
    ``recovery_buffer="both"``), ``ready_wait_s`` / ``ready_wait_after_episodes``
    (``wait_for_ready_s`` / ``min_episodes``); it takes the ``"uniintervene"`` message part.
    Raises:
      ValueError: ``history_len < 1``, ``max_chunks < 1`` or ``cooldown_steps < 0``.
    """

    part_name = PART_NAME
    summary_counters = ("gate_triggers", "gate_recovery_steps", "gate_aborted_chunks", "gate_no_goal",
                        "gate_decisions", "gate_proposals_under_human", "gate_recovery_chunks",
                        "gate_recovery_chunks_ended", "gate_recovery_value_gain_sum", "gate_history_warmup_steps")

    def __init__(self, models: GateModels, history_len: int = 8, cooldown_steps: int = 4, max_chunks: int = 4,
                 use_memory_goal: bool = True, timeline_path: Optional[str] = None, timeline_every: int = 5,
                 propose_under_human: bool = True, replan_every: int = 0):
        if int(history_len) < 1 or int(max_chunks) < 1 or int(cooldown_steps) < 0 or int(replan_every) < 0:
            raise ValueError(f"need history_len >= 1, max_chunks >= 1, cooldown_steps >= 0; got "
                             f"{history_len}, {max_chunks}, {cooldown_steps}")
        self.models = models
        self.K = int(history_len)
        self.cooldown_steps = int(cooldown_steps)
        self.max_chunks = int(max_chunks)
        self.use_memory_goal = bool(use_memory_goal)
        self.propose_under_human = bool(propose_under_human)
        self.replan_every = int(replan_every)
        self._goal, self._chunk_t = None, 0
        self.timeline_path = timeline_path
        self.timeline_every = int(timeline_every)
        self.history: collections.deque = collections.deque(maxlen=self.K + 1)
        self.chunk: collections.deque = collections.deque()
        self.chunks_in_row = 0
        self.cooldown = 0
        self.human_active = False
        self.episode = -1
        self.total = collections.Counter()
        self.latencies_ms: collections.deque = collections.deque(maxlen=5000)
        self._ep = collections.Counter()
        self._timeline: Optional[Dict[str, list]] = None
        self._pending: Optional[Tuple[float, float, int]] = None  # (value, prob, trigger) of this step
        self._last_source: Optional[int] = None  # the source select_action returned last
        self._chunk_open = False  # a started recovery chunk has not ended (or been aborted) yet
        self._chunk_start_value = float("nan")
        self._chunk_last_obs = None  # next observation after the chunk's latest executed action

    @property
    def ready(self) -> bool:
        """Whether the loaded models may fire (the learner's ``ready`` flag of the last payload)."""
        return bool(self.models.ready)

    def for_evaluation(self) -> "UniInterveneGate":
        """A gate with these settings and these models (shared, only read) but its own episode
        state, counters and no timeline: evaluation episodes run the whole system (base policy +
        gate, no human) without touching the training gate's state or its run totals."""
        return UniInterveneGate(
            self.models, history_len=self.K, cooldown_steps=self.cooldown_steps, max_chunks=self.max_chunks,
            use_memory_goal=self.use_memory_goal, timeline_path=None, timeline_every=0,
            propose_under_human=self.propose_under_human, replan_every=self.replan_every)

    # ------------------------------------------------------------------ episode
    def reset(self, observation) -> None:
        self._flush_timeline()
        self.episode += 1
        self.history.clear()
        self.chunk.clear()
        self.chunks_in_row = 0
        self.cooldown = 0
        self.human_active = False
        self._ep = collections.Counter()
        self._chunk_open, self._chunk_last_obs = False, None
        record = self.timeline_path is not None and self.timeline_every > 0 and self.episode % self.timeline_every == 0
        self._timeline = {"value": [], "risk": [], "trigger": [], "source": [], "success": False} if record else None

    # ------------------------------------------------------------------ acting
    def select_action(self, observation, policy_action) -> Tuple[np.ndarray, int]:
        action, source = self._select(observation, policy_action)
        self._last_source = source
        return action, source

    def step_info(self) -> Dict[str, Any]:
        """The last :meth:`select_action` step, for the evaluation video's side plot.

        Returns:
          ``{"value": V(o_t) (float, the proxy value; NaN while the models are not ready),
          "risk_prob": sigmoid(risk) of this step's decision (float in [0, 1]; NaN on a step
          with no decision: warm-up, cooldown, inside a chunk), "triggered": a chunk started at
          this step (bool), "recovery": the executed action is the recovery policy's (bool)}``.
        """
        value, prob, trigger = self._pending if self._pending is not None else (float("nan"),) * 2 + (0,)
        return {"value": float(value), "risk_prob": float(prob), "triggered": bool(trigger),
                "recovery": self._last_source == RECOVERY}

    def _select(self, observation, policy_action) -> Tuple[np.ndarray, int]:
        models = self.models
        policy_action = np.asarray(policy_action, np.float32)
        if not models.ready:
            self._pending = (float("nan"), float("nan"), 0)
            return policy_action, POLICY
        v = float(models.value(observation))
        self.history.append(v)  # real values only: no V_0 padding
        self._pending = (v, float("nan"), 0)
        if self.human_active:
            if not self.propose_under_human:
                return policy_action, POLICY
            # The human holds control: the robot's proposal (what would run if the human let go,
            # and what the human's hand-back judges) is the recovery policy's action, one step
            # at a time; the human's action is executed, so no chunk is started or counted.
            t0 = time.perf_counter()
            goal = self.models.goal(observation, v) if self.use_memory_goal else observation
            if goal is None:
                return policy_action, POLICY
            chunk = self._check_chunk(self.models.chunk(observation, goal), policy_action)
            self._ep["proposals_under_human"] += 1
            self.latencies_ms.append(1e3 * (time.perf_counter() - t0))
            return chunk[0], RECOVERY
        if self.chunk:
            self._chunk_t += 1
            if self.replan_every and self._chunk_t % self.replan_every == 0:
                # Receding horizon: re-predict the rest of the chunk from the new observation
                # toward the same goal (the trigger is still re-evaluated at the chunk's end).
                fresh = self._check_chunk(self.models.chunk(observation, self._goal), policy_action)
                remaining = len(self.chunk)
                self.chunk.clear()
                self.chunk.extend(fresh[:remaining])
            return self._next_chunk_action(), RECOVERY
        if self.chunks_in_row:  # a chunk just ended: re-evaluate
            if self.chunks_in_row >= self.max_chunks:
                return self._end_recovery(policy_action)
            action = self._evaluate(observation, policy_action, v)
            return action if action is not None else self._end_recovery(policy_action)
        if self.cooldown > 0:
            self.cooldown -= 1
            return policy_action, POLICY
        if len(self.history) <= self.K:  # fewer than K real steps before V_t: no decision yet
            self._ep["history_warmup_steps"] += 1
            return policy_action, POLICY
        action = self._evaluate(observation, policy_action, v)
        return action if action is not None else (policy_action, POLICY)

    def _end_recovery(self, policy_action):
        self.chunks_in_row = 0
        self.cooldown = self.cooldown_steps
        return policy_action, POLICY

    def _next_chunk_action(self) -> np.ndarray:
        return self.chunk.popleft()

    def _evaluate(self, observation, policy_action, v) -> Optional[Tuple[np.ndarray, int]]:
        """Scores the policy's action; on a trigger starts a chunk and returns its first action."""
        t0 = time.perf_counter()
        prob, trigger = self.models.score(observation, policy_action, np.asarray(self.history, np.float32))
        self._ep["decisions"] += 1
        self._ep["prob_sum"] += float(prob)
        self._pending = (v, float(prob), 0)
        result = None
        if trigger:
            goal = self.models.goal(observation, v) if self.use_memory_goal else observation
            if goal is None:
                self._ep["no_goal"] += 1
            else:
                chunk = self._check_chunk(self.models.chunk(observation, goal), policy_action)
                self.chunk.extend(chunk)
                self._goal, self._chunk_t = goal, 0
                self.chunks_in_row += 1
                self._ep["triggers"] += 1
                self._ep["recovery_chunks"] += 1
                self._chunk_open, self._chunk_start_value, self._chunk_last_obs = True, float(v), None
                self._pending = (v, float(prob), 1)
                result = (self._next_chunk_action(), RECOVERY)
        self.latencies_ms.append(1e3 * (time.perf_counter() - t0))
        return result

    @staticmethod
    def _check_chunk(chunk, policy_action) -> np.ndarray:
        chunk = np.asarray(chunk, np.float32)
        if chunk.ndim != 2 or chunk.shape[1] != policy_action.shape[0] or chunk.shape[0] < 1:
            raise ValueError(f"recovery chunk must be (H, {policy_action.shape[0]}), got {chunk.shape}")
        if not np.all(np.isfinite(chunk)):
            raise ValueError("recovery chunk contains NaN or inf")
        return np.clip(chunk, -1.0, 1.0)

    def observe(self, observation, action, source, reward, next_observation, info) -> None:
        if source == HUMAN:
            if self.chunk or self.chunks_in_row:
                self._ep["aborted_chunks"] += int(bool(self.chunk))
                self.chunk.clear()
                self.chunks_in_row = 0
            self._chunk_open, self._chunk_last_obs = False, None  # an aborted chunk has no gain
            self.human_active = True
        elif self.human_active:  # the human handed back
            self.human_active = False
            self.cooldown = self.cooldown_steps
        if self._timeline is not None:
            v, p, trig = self._pending if self._pending is not None else (float("nan"), float("nan"), 0)
            self._timeline["value"].append(v)
            self._timeline["risk"].append(p)
            self._timeline["trigger"].append(trig)
            self._timeline["source"].append(int(source))
            self._timeline["success"] = self._timeline["success"] or bool(info.get("success", False))
        self._pending = None
        if source == RECOVERY and self._chunk_open:
            self._chunk_last_obs = next_observation
            if not self.chunk:  # the chunk's last action was executed: it ended
                self._end_chunk()
        self._ep["recovery_steps"] += int(source == RECOVERY)  # executed, not overridden
        self._ep["steps"] += 1
        self.total["steps"] += 1

    def _end_chunk(self) -> None:
        """Records ``V(o after the chunk's last executed action) - V(o at its start)``."""
        if self._chunk_open and self._chunk_last_obs is not None and self.models.ready:
            gain = float(self.models.value(self._chunk_last_obs)) - self._chunk_start_value
            if np.isfinite(gain):
                self._ep["recovery_chunks_ended"] += 1
                self._ep["recovery_value_gain_sum"] += gain
        self._chunk_open, self._chunk_last_obs = False, None

    # ------------------------------------------------------------------ params
    def load_params(self, payload: Dict[str, Any]) -> None:
        """Forwards a learner payload to the models (``NetworkGateModels.load``); raises
        ValueError/TypeError for a malformed one, leaving the current models in place."""
        loader = getattr(self.models, "load", None)
        if loader is None:
            raise TypeError(f"{type(self.models).__name__} cannot load parameters")
        loader(payload)

    # ------------------------------------------------------------------ reporting
    _COUNTS = ("triggers", "recovery_steps", "aborted_chunks", "no_goal", "decisions", "proposals_under_human",
               "recovery_chunks", "recovery_chunks_ended", "recovery_value_gain_sum", "history_warmup_steps")

    def stats(self) -> Dict[str, float]:
        """Per-episode scalars (logged under ``gate/``); also adds them to the run totals.

        A chunk still running when the episode ends ends there (its gain uses the last
        observation it reached). Keys: ``triggers``, ``recovery_steps``, ``aborted_chunks``,
        ``no_goal``, ``proposals_under_human``, ``history_warmup_steps`` (policy steps before
        the first possible decision), ``ready``, ``tau``, ``version``; ``trigger_rate``
        (triggers / decisions; omitted without a decision), ``mean_risk_prob`` (idem),
        ``recovery_value_gain`` (mean over the chunks that ended in the episode of V at the
        chunk's end minus V at its start, proxy-value units; omitted without one),
        ``decision_latency_ms_p50``.
        """
        self._end_chunk()
        ep = self._ep
        for k in self._COUNTS:
            self.total[k] += ep[k]
        out = {
            "triggers": float(ep["triggers"]),
            "recovery_steps": float(ep["recovery_steps"]),
            "aborted_chunks": float(ep["aborted_chunks"]),
            "no_goal": float(ep["no_goal"]),
            "proposals_under_human": float(ep["proposals_under_human"]),
            "history_warmup_steps": float(ep["history_warmup_steps"]),
            "ready": float(bool(self.models.ready)),
            "tau": float(getattr(self.models, "tau", float("nan"))),
            "version": float(getattr(self.models, "version", -1)),
        }
        if ep["decisions"]:
            out["mean_risk_prob"] = ep["prob_sum"] / ep["decisions"]
            out["trigger_rate"] = ep["triggers"] / ep["decisions"]
        if ep["recovery_chunks_ended"]:
            out["recovery_value_gain"] = ep["recovery_value_gain_sum"] / ep["recovery_chunks_ended"]
        if self.latencies_ms:
            out["decision_latency_ms_p50"] = float(np.percentile(self.latencies_ms, 50))
        return out

    def summary(self) -> Dict[str, Any]:
        """Run totals for ``summary.json``: triggers, recovery steps, aborted chunks, decisions,
        ``gate_trigger_rate`` (triggers / decisions over the run; None without decisions),
        ``gate_recovery_chunks`` (chunks started), ``gate_recovery_value_gain_mean`` (mean V gain
        of the chunks that ended; None without one; its sum and count are the counters
        ``gate_recovery_value_gain_sum`` / ``gate_recovery_chunks_ended``), decision latency
        p50/p99 (ms; model + retrieval + chunk)."""
        lat = np.asarray(self.latencies_ms, np.float64)
        t = self.total
        return {
            "gate_triggers": int(t["triggers"]),
            "gate_recovery_steps": int(t["recovery_steps"]),
            "gate_aborted_chunks": int(t["aborted_chunks"]),
            "gate_no_goal": int(t["no_goal"]),
            "gate_decisions": int(t["decisions"]),
            "gate_proposals_under_human": int(t["proposals_under_human"]),
            "gate_recovery_chunks": int(t["recovery_chunks"]),
            "gate_recovery_chunks_ended": int(t["recovery_chunks_ended"]),
            "gate_recovery_value_gain_sum": float(t["recovery_value_gain_sum"]),
            "gate_history_warmup_steps": int(t["history_warmup_steps"]),
            "gate_trigger_rate": t["triggers"] / t["decisions"] if t["decisions"] else None,
            "gate_recovery_value_gain_mean": (t["recovery_value_gain_sum"] / t["recovery_chunks_ended"]
                                              if t["recovery_chunks_ended"] else None),
            "gate_latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "gate_latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
        }

    def _flush_timeline(self) -> None:
        tl = self._timeline
        self._timeline = None
        if tl is None or not tl["value"] or self.timeline_path is None:
            return
        clean = lambda xs: [None if not np.isfinite(x) else round(float(x), 5) for x in xs]  # noqa: E731
        row = {"episode": self.episode, "env_steps": int(self.total["steps"]), "success": bool(tl["success"]),
               "tau": float(getattr(self.models, "tau", float("nan"))), "value": clean(tl["value"]),
               "risk": clean(tl["risk"]), "trigger": tl["trigger"], "source": tl["source"]}
        os.makedirs(os.path.dirname(os.path.abspath(self.timeline_path)), exist_ok=True)
        with open(self.timeline_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        """Ends the run: the unfinished episode's counts join the totals, its timeline is written."""
        if self._ep["steps"]:
            self.stats()
            self._ep = collections.Counter()
        self._flush_timeline()


class NetworkGateModels:
    """The real :class:`GateModels`: proxy value, intervention model, recovery policy and memory
    built from ``config.uniintervene`` (same structures as the learner's) and filled by
    :meth:`load` with pushed parameters.

    Args:
      config: the composed training config. obs_spec: ``{key: (shape, dtype)}``. action_dim: A.
    """

    def __init__(self, config, obs_spec, action_dim: int):
        from uniintervene_jax.instructions import instruction_for, tokenize_instruction
        from uniintervene_jax.message import build_models
        from uniintervene_jax.views import uses_value_embedding

        c = config.uniintervene
        self.task = config.task
        self.instr = tokenize_instruction(instruction_for(self.task))
        self._value, self._intervention, self._recovery = build_models(config, obs_spec, action_dim)
        self.embedding_dim = int(self._value.config.latent_dim)  # the folder's with uniintervene.init_from
        # recovery_inputs="state+value_embedding": the recovery policy reads the recovery view
        # {"state": [state, z]} (uniintervene_jax/views.py) of the observation and of the goal;
        # memory goals arrive as views, a raw goal (use_memory_goal=False) is viewed here.
        self._view_dim = int(self._recovery.obs_spec[0][1][0]) if uses_value_embedding(c) else None
        self._memory = None
        self.ready = False
        self.tau = float(c.trigger.tau_int)  # until the first message brings the learner's (calibrated) tau
        if str(c.get("init_from", "") or ""):
            from uniintervene_jax.intervention.model import InterventionModel

            saved = InterventionModel.saved_trigger_threshold(os.path.join(str(c.init_from), "models", "intervention"))
            self.tau = self.tau if saved is None else saved
        self.version = -1
        self._lock = threading.Lock()
        self._embedded = None  # (loads, observation copy, z) of the last value() call
        self._loads = 0  # payloads swapped in: a kept z from older parameters is not reused
        self._warm_up(obs_spec, int(action_dim), int(self._intervention.config.history_len))

    def _warm_up(self, obs_spec, action_dim: int, history_len: int) -> None:
        """Compiles every call of a decision once, on a zero observation, so that no decision of
        the run (and no ``gate_latency_ms`` sample) pays XLA's compile time (a first triggering
        decision took 1.6 s). Loaded parameters keep the shapes, so nothing compiles again."""
        from serl_ext.loop.common import example_observation

        obs = example_observation(obs_spec)
        action = np.zeros((action_dim,), np.float32)
        self.value(obs)
        self.score(obs, action, np.zeros((history_len + 1,), np.float32))
        np.asarray(self._value.encode(obs, self.instr))
        self.chunk(obs, obs)

    def load(self, payload: Dict[str, Any]) -> None:
        """Swaps in a learner payload (:func:`uniintervene_jax.message.make_payload`) atomically;
        its ``tau`` becomes the threshold of :meth:`score`.

        Raises:
          ValueError / TypeError: missing keys, a parameter tree that does not match these
            networks, NaN/inf parameters, a bad memory or tau; nothing is changed then.
        """
        from serl_ext.agents.common import replace_in_params
        from uniintervene_jax.message import memory_from_payload, read_payload

        checked = read_payload(payload)
        v_params = replace_in_params(payload["value"], self._value.state.params, "value params")
        i_params = replace_in_params(payload["intervention"], self._intervention.state.params, "intervention params")
        r_params = replace_in_params(payload["recovery"], self._recovery.state.params, "recovery params")
        memory = memory_from_payload(payload["memory"])
        if memory is not None and memory.embedding_dim != self.embedding_dim:
            raise ValueError(f"memory keys have dim {memory.embedding_dim}, the proxy value's embedding {self.embedding_dim}")
        with self._lock:
            self._value = self._value.replace(state=self._value.state.replace(params=v_params))
            self._intervention = self._intervention.replace(state=self._intervention.state.replace(params=i_params))
            self._recovery.state = self._recovery.state.replace(params=r_params)
            self._memory = memory
            self._loads += 1
            self.tau = checked["tau"]
            self.ready = checked["ready"]
            self.version = checked["version"]

    def value(self, observation) -> float:
        # One forward gives V and the embedding z; z is kept for this observation, so that a
        # triggering decision's retrieval key and recovery view do not run the encoder again.
        loads = self._loads  # read before the forward: a swap during it makes the kept z stale
        v, z = self._value.values_and_embeddings(observation, self.instr)
        self._embedded = (loads, {k: np.array(x, copy=True) for k, x in observation.items()},
                          np.asarray(z, np.float32))
        return float(v)

    def _embedding(self, observation) -> np.ndarray:
        """z of one observation: the one :meth:`value` kept when the observation is the same
        (same keys, equal arrays) and no payload came in since, else a fresh encoder call."""
        kept = self._embedded
        if kept is not None and kept[0] == self._loads and kept[1].keys() == observation.keys() and all(
                np.array_equal(kept[1][k], observation[k]) for k in kept[1]):
            return kept[2]
        return np.asarray(self._value.encode(observation, self.instr), np.float32)

    def score(self, observation, policy_action, value_history) -> Tuple[float, bool]:
        obs = {k: np.asarray(v)[None] for k, v in observation.items()}
        history = np.asarray(value_history, np.float32)[None]
        prob = self._intervention.trigger_probs(obs, self.instr, np.asarray(policy_action, np.float32)[None], history)
        fires = trigger_rule({"trigger_prob": prob}, self.tau)
        return float(prob[0]), bool(fires[0])

    def goal(self, observation, value: float):
        if self._memory is None or len(self._memory) == 0:
            return None
        emb = self._embedding(observation)
        found = self._memory.retrieve(emb, self.task, float(value))
        return None if found is None else found.goal_observations

    def chunk(self, observation, goal) -> np.ndarray:
        if self._view_dim is not None:
            observation, goal = self._view(observation), self._view(goal)
        return self._recovery.predict_chunk(observation, goal, self.instr)[0]

    def _view(self, observation):
        """The recovery view of one observation (unchanged when it already is one)."""
        from uniintervene_jax.views import is_view, view_one

        if is_view(observation, self._view_dim):
            return observation
        return view_one(observation, self._embedding(observation))


def make_gate(config, obs_spec, action_dim: int, run_dir: Optional[str] = None) -> Optional[UniInterveneGate]:
    """The actor's gate for ``config.uniintervene`` (``NetworkGateModels``; the timeline goes to
    ``{run_dir}/gate_timeline.jsonl``), or None when ``config.uniintervene.enabled`` is off.

    The gate factory of the ``hil_serl+uniintervene`` algorithms (``config.components.gate``).
    Raises:
      ValueError: bad ``config.uniintervene`` (``check_online_config``).
    """
    from uniintervene_jax.online_config import check_online_config

    c = config.uniintervene
    if not bool(c.enabled):
        return None
    check_online_config(c)
    gate = UniInterveneGate(
        NetworkGateModels(config, obs_spec, action_dim), history_len=int(c.intervention.history_len),
        cooldown_steps=int(c.cooldown_steps), max_chunks=int(c.max_chunks),
        use_memory_goal=bool(c.use_memory_goal),
        timeline_path=os.path.join(run_dir, "gate_timeline.jsonl") if run_dir else None,
        timeline_every=int(c.timeline_every), propose_under_human=bool(c.propose_under_human),
        replan_every=int(c.replan_every))
    gate.eval_with_gate = bool(c.eval_with_gate)
    gate.intervention_sources = frozenset({RECOVERY}) if c.recovery_buffer == "both" else frozenset()
    gate.ready_wait_s = float(c.wait_for_ready_s)
    gate.ready_wait_after_episodes = int(c.min_episodes) if gate.ready_wait_s > 0 else 0
    return gate
