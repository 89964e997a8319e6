"""The UniIntervene intervention gate (uniintervene_jax/gate.py).

Most tests drive :class:`UniInterveneGate` directly with :class:`ScriptedModels` (scripted
trigger decisions, values and recovery chunks; every call is recorded) so that the gate logic
is checked step by step: trigger -> chunk, re-evaluation at a chunk's end, ``max_chunks``,
cooldown, human precedence, the value history, no-goal, the timeline file and the counters.
The last tests load a learner payload into the real :class:`NetworkGateModels`.
"""

import copy
import json

import numpy as np
import pytest

from serl_ext.loop.gate import HUMAN, POLICY, RECOVERY
from uniintervene_jax.gate import UniInterveneGate
from test_online import shrink_uniintervene  # noqa: E402  (shared tiny-network settings)

A = 4
POLICY_ACTION = np.full((A,), -0.5, np.float32)


def _obs(t):
    """Observation of step t: the step index is readable from it."""
    return {"state": np.array([float(t), 0.0, 0.0], np.float32)}


def _step_of(obs):
    return int(obs["state"][0])


class ScriptedModels:
    """GateModels with scripted outputs; records every call.

    Args:
      triggers: trigger decision of the n-th ``score`` call (False once exhausted).
      values: value of the n-th ``value`` call (default 0.5 for every call).
      H: chunk length. Chunk k (0-based, in order of ``chunk`` calls) has rows
        ``chunk_row(k, i) = full(A, (10 k + i + 1) / 100)`` so executed actions name their origin.
      goal_none: ``goal`` returns None.
    """

    def __init__(self, triggers=(), values=None, H=3, ready=True, tau=0.5, goal_none=False, probs=None):
        self.ready = ready
        self.tau = tau
        self.triggers = list(triggers)
        self.values = None if values is None else list(values)
        self.probs = probs
        self.H = H
        self.goal_none = goal_none
        self.value_calls = 0
        self.score_calls = []  # (step, policy_action, value_history)
        self.goal_calls = []  # (step, value)
        self.chunk_calls = []  # (observation, goal)
        self.bad_chunk = None

    @staticmethod
    def chunk_row(k, i):
        return np.full((A,), (10 * k + i + 1) / 100.0, np.float32)

    def value(self, observation):
        # the n-th call's scripted value; past the script the last one (the gate's chunk-end
        # value, V after a recovery chunk, is one more call at the episode's end)
        v = 0.5 if self.values is None else self.values[min(self.value_calls, len(self.values) - 1)]
        self.value_calls += 1
        return v

    def score(self, observation, policy_action, value_history):
        n = len(self.score_calls)
        self.score_calls.append((_step_of(observation), np.array(policy_action), np.array(value_history)))
        trigger = self.triggers[n] if n < len(self.triggers) else False
        prob = self.probs[n] if self.probs is not None else (0.9 if trigger else 0.1)
        return prob, trigger

    def goal(self, observation, value):
        self.goal_calls.append((_step_of(observation), value))
        return None if self.goal_none else {"state": np.full((3,), 7.0, np.float32)}

    def chunk(self, observation, goal):
        k = len(self.chunk_calls)
        self.chunk_calls.append((observation, goal))
        if self.bad_chunk is not None:
            return self.bad_chunk
        return np.stack([self.chunk_row(k, i) for i in range(self.H)])

    @property
    def scored_steps(self):
        return [s for s, _, _ in self.score_calls]


def _drive(gate, start, n, human=(), info_at=None):
    """Runs steps ``start .. start+n-1`` (observation ``_obs(t)``); the human takes over at the
    steps in ``human``. Returns ``[(t, action, gate_source, executed_source)]``."""
    out = []
    for t in range(start, start + n):
        obs = _obs(t)
        action, source = gate.select_action(obs, POLICY_ACTION)
        executed = HUMAN if t in human else source
        executed_action = np.zeros((A,), np.float32) if executed == HUMAN else action
        info = {} if info_at is None else info_at(t)
        gate.observe(obs, executed_action, executed, 0.0, _obs(t + 1), info)
        out.append((t, np.array(action), source, executed))
    return out


WARM_V = 0.5  # value of the K history steps _warm pretends the gate has already seen


def _warm(gate):
    """Fills the value history with K real steps (value WARM_V) after a reset, as if the episode
    were already K steps old, so that step 0 of a test is the first step the gate may decide at
    (it makes no decision before K real history steps; the warm-up has its own tests below)."""
    gate.history.extend([WARM_V] * gate.K)
    return gate


def _new_gate(models, warm=True, **kwargs):
    kwargs.setdefault("history_len", 2)
    kwargs.setdefault("cooldown_steps", 2)
    kwargs.setdefault("max_chunks", 2)
    gate = UniInterveneGate(models, **kwargs)
    gate.reset(_obs(0))
    return _warm(gate) if warm else gate


# ------------------------------------------------------------------ scripted logic
def test_not_ready_passes_policy_action_and_never_scores():
    models = ScriptedModels(triggers=[True] * 20, ready=False)
    gate = _new_gate(models)
    for t, action, source, _ in _drive(gate, 0, 12):
        assert source == POLICY
        np.testing.assert_array_equal(action, POLICY_ACTION)
    assert models.score_calls == [] and models.chunk_calls == [] and models.goal_calls == []
    stats = gate.stats()
    assert stats["ready"] == 0.0 and stats["triggers"] == 0.0 and stats["recovery_steps"] == 0.0
    assert gate.summary()["gate_decisions"] == 0
    # The models become ready (a payload arrived): the very next step is scored.
    models.ready = True
    _drive(gate, 12, 1)
    assert models.scored_steps == [12]


def test_chunks_in_a_row_then_forced_cooldown():
    # H=3, max_chunks=2, cooldown_steps=2: trigger at step 0 -> chunk 0 at steps 0,1,2; re-evaluated
    # at step 3 (scored, triggers again) -> chunk 1 at steps 3,4,5; step 6 is the end of the second
    # chunk in a row: no re-evaluation, the policy acts and the cooldown starts; steps 7, 8 are
    # the cooldown_steps policy steps; step 9 is scored again.
    models = ScriptedModels(triggers=[True, True, True, True], H=3)
    gate = _new_gate(models, cooldown_steps=2, max_chunks=2)
    steps = _drive(gate, 0, 12)
    for t in range(0, 3):
        assert steps[t][2] == RECOVERY
        np.testing.assert_array_equal(steps[t][1], ScriptedModels.chunk_row(0, t))
    for t in range(3, 6):
        assert steps[t][2] == RECOVERY
        np.testing.assert_array_equal(steps[t][1], ScriptedModels.chunk_row(1, t - 3))
    for t in (6, 7, 8):
        assert steps[t][2] == POLICY
        np.testing.assert_array_equal(steps[t][1], POLICY_ACTION)
    # Score calls: the two chunk starts, then nothing until the cooldown is over; the third
    # trigger (step 9) starts chunk 2 at steps 9, 10, 11.
    assert models.scored_steps == [0, 3, 9]
    assert [steps[t][2] for t in (9, 10, 11)] == [RECOVERY] * 3
    np.testing.assert_array_equal(steps[11][1], ScriptedModels.chunk_row(2, 2))
    # The policy's proposal is what gets scored.
    np.testing.assert_array_equal(models.score_calls[0][1], POLICY_ACTION)
    stats = gate.stats()
    assert stats["triggers"] == 3.0 and stats["recovery_steps"] == 9.0 and stats["aborted_chunks"] == 0.0
    assert stats["mean_risk_prob"] == pytest.approx(0.9)


def test_forced_cooldown_length_follows_cooldown_steps():
    # Same as above with cooldown_steps=4, max_chunks=1: chunk 0 at steps 0..2, step 3 forced
    # stop, steps 4..7 cooldown, step 8 scored. With cooldown_steps=0 the step after the forced
    # stop is scored.
    for cooldown, first_after in ((4, 8), (0, 4)):
        models = ScriptedModels(triggers=[True, False, False], H=3)
        gate = _new_gate(models, cooldown_steps=cooldown, max_chunks=1)
        steps = _drive(gate, 0, first_after + 2)
        assert [s[2] for s in steps[:3]] == [RECOVERY] * 3
        assert all(s[2] == POLICY for s in steps[3:])
        assert models.scored_steps == [0, first_after, first_after + 1], cooldown


def test_no_trigger_at_chunk_end_cools_down():
    # H=3, cooldown 2: chunk at 0..2; step 3 re-evaluated (no trigger) -> policy; steps 4, 5
    # cooldown (not scored); scored again from step 6 on at every step.
    models = ScriptedModels(triggers=[True, False, False, False, False], H=3)
    gate = _new_gate(models, cooldown_steps=2, max_chunks=4)
    steps = _drive(gate, 0, 9)
    assert [s[2] for s in steps] == [RECOVERY] * 3 + [POLICY] * 6
    assert models.scored_steps == [0, 3, 6, 7, 8]
    assert len(models.chunk_calls) == 1
    stats = gate.stats()
    assert stats["triggers"] == 1.0 and stats["recovery_steps"] == 3.0
    assert stats["mean_risk_prob"] == pytest.approx((0.9 + 4 * 0.1) / 5)


@pytest.mark.parametrize("propose_under_human", [False, True])
def test_human_takeover_aborts_chunk_and_gate_does_not_score_until_cooldown_ends(propose_under_human):
    # H=4, cooldown 2. Trigger at 0 -> chunk rows 0, 1 executed at steps 0, 1; the human takes
    # over at step 2 (the gate proposed row 2) and keeps control at 3, 4; step 5 is the first
    # step the robot acts again (hand-back seen in observe); steps 6, 7 cooldown; step 8 scored.
    models = ScriptedModels(triggers=[True, True, True], H=4, values=[0.1 * (i + 1) for i in range(9)])
    gate = _new_gate(models, cooldown_steps=2, max_chunks=4, propose_under_human=propose_under_human)
    steps = _drive(gate, 0, 9, human=(2, 3, 4))
    assert [s[2] for s in steps[:3]] == [RECOVERY] * 3
    np.testing.assert_array_equal(steps[2][1], ScriptedModels.chunk_row(0, 2))
    assert models.scored_steps == [0, 8]
    if propose_under_human:
        # While the human holds control (steps 3, 4, 5 as the gate sees them) the proposal is
        # the first action of a fresh recovery chunk each step (goal asked with that step's
        # value); no chunk is started: nothing of them runs on after the hand-back.
        for k, t in enumerate((3, 4, 5), start=1):
            assert steps[t][2] == RECOVERY, t
            np.testing.assert_array_equal(steps[t][1], ScriptedModels.chunk_row(k, 0))
        assert models.goal_calls[1:4] == [(3, pytest.approx(0.4)), (4, pytest.approx(0.5)), (5, pytest.approx(0.6))]
        first_new_chunk = 4
        policy_steps = (6, 7)
    else:
        assert len(models.chunk_calls) == 2
        first_new_chunk = 1
        policy_steps = (3, 4, 5, 6, 7)
    # The aborted chunk's last row is never proposed again once the human took over.
    for t in policy_steps:
        assert steps[t][2] == POLICY, t
        np.testing.assert_array_equal(steps[t][1], POLICY_ACTION)
    assert steps[8][2] == RECOVERY  # a fresh chunk, not the aborted one
    np.testing.assert_array_equal(steps[8][1], ScriptedModels.chunk_row(first_new_chunk, 0))
    stats = gate.stats()
    assert stats["aborted_chunks"] == 1.0
    assert stats["triggers"] == 2.0
    assert stats.get("proposals_under_human", 0.0) == (3.0 if propose_under_human else 0.0)


def test_proposal_under_human_without_goal_is_the_policy_action():
    models = ScriptedModels(triggers=[], goal_none=True)
    gate = _new_gate(models, propose_under_human=True)
    steps = _drive(gate, 0, 4, human=(0, 1, 2))
    for t in (1, 2, 3):
        assert steps[t][2] == POLICY
        np.testing.assert_array_equal(steps[t][1], POLICY_ACTION)
    assert models.chunk_calls == [] and models.scored_steps == [0]


def test_human_takeover_outside_a_chunk_is_not_an_abort():
    # No chunk running: the human takes over at step 1 (the gate scored step 1 before it could
    # know) and keeps control at 2; step 3 is the hand-back step (silent: the gate cannot know
    # yet that the human let go), steps 4, 5 cooldown, scored again from 6 on.
    models = ScriptedModels(triggers=[], H=2)
    gate = _new_gate(models, cooldown_steps=2)
    _drive(gate, 0, 8, human=(1, 2))
    assert models.scored_steps == [0, 1, 6, 7]
    assert gate.stats()["aborted_chunks"] == 0.0


def test_recovery_steps_count_only_executed_recovery_actions():
    # The actor's summary counts recovery_steps as the steps whose executed source is RECOVERY;
    # the gate's gate_recovery_steps should count the same steps. Trigger at 0 (H=4): rows 0, 1
    # executed, row 2 proposed at step 2 but the human's action was executed instead.
    models = ScriptedModels(triggers=[True], H=4)
    gate = _new_gate(models, cooldown_steps=2, max_chunks=4, propose_under_human=False)
    steps = _drive(gate, 0, 5, human=(2,))
    executed_recovery = sum(executed == RECOVERY for _, _, _, executed in steps)
    assert executed_recovery == 2
    stats = gate.stats()
    assert stats["aborted_chunks"] == 1.0
    assert stats["recovery_steps"] == executed_recovery
    assert gate.summary()["gate_recovery_steps"] == executed_recovery


def test_no_decision_before_k_real_history_steps_and_no_padding():
    """Issue 13: the history used to be padded with V_0, so the first step of every episode was
    scored (and, with a positive padded TVR, fired). Now the gate scores nothing until the
    history [V_{t-K} .. V_t] holds K real steps before V_t (step t = K); meanwhile it executes
    the policy's action, counted as history_warmup_steps."""
    # K=3; values 0.1, 0.2, ... (one value call per ready step); always triggering when scored.
    values = [round(0.1 * (i + 1), 1) for i in range(12)]
    models = ScriptedModels(values=values, triggers=[False] * 20)
    gate = _new_gate(models, history_len=3, warm=False)
    steps = _drive(gate, 0, 5)
    assert [s[2] for s in steps[:3]] == [POLICY] * 3  # steps 0, 1, 2: no decision
    for s_ in steps[:3]:
        np.testing.assert_array_equal(s_[1], POLICY_ACTION)
    assert models.scored_steps == [3, 4]  # the first decision at t = K
    assert models.value_calls == 5  # V is still computed (and recorded) at every ready step
    expected = [[0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.5]]  # real values only, oldest first
    for (_, _, hist), want in zip(models.score_calls, expected):
        assert hist.dtype == np.float32 and hist.shape == (4,)
        np.testing.assert_allclose(hist, want, rtol=1e-6)
    stats = gate.stats()
    assert stats["history_warmup_steps"] == 3.0 and stats["trigger_rate"] == 0.0
    # A new episode starts an empty history again: its first K steps are not scored either.
    gate.reset(_obs(0))
    _drive(gate, 0, 4)
    assert models.scored_steps == [3, 4, 3]
    np.testing.assert_allclose(models.score_calls[2][2], [0.6, 0.7, 0.8, 0.9], rtol=1e-6)
    assert gate.summary()["gate_history_warmup_steps"] == 3  # the open episode's are added at close()
    gate.close()
    assert gate.summary()["gate_history_warmup_steps"] == 6


def test_first_step_never_fires_even_when_the_model_would():
    models = ScriptedModels(triggers=[True] * 10, H=2)
    gate = _new_gate(models, history_len=2, warm=False)
    steps = _drive(gate, 0, 3)
    assert [s[2] for s in steps] == [POLICY, POLICY, RECOVERY] and models.scored_steps == [2]


def test_step_info_reports_each_steps_value_decision_and_source():
    # K=2, H=2: steps 0-1 warm up (no decision), step 2 fires (p 0.8) and starts a chunk, step 3
    # runs its second action (no decision), step 4 is re-evaluated (p 0.3, no trigger: policy).
    models = ScriptedModels(triggers=[True, False], probs=[0.8, 0.3], values=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], H=2)
    gate = _new_gate(models, history_len=2, cooldown_steps=1, warm=False)
    infos = []
    for t in range(5):
        gate.select_action(_obs(t), POLICY_ACTION)
        infos.append(gate.step_info())
        gate.observe(_obs(t), POLICY_ACTION, POLICY, 0.0, _obs(t + 1), {})
    assert [i["value"] for i in infos[:3]] == pytest.approx([0.1, 0.2, 0.3])
    probs = [i["risk_prob"] for i in infos]
    assert np.isnan(probs[0]) and np.isnan(probs[1]) and np.isnan(probs[3])
    assert probs[2] == pytest.approx(0.8) and probs[4] == pytest.approx(0.3)
    assert [i["triggered"] for i in infos] == [False, False, True, False, False]
    assert [i["recovery"] for i in infos] == [False, False, True, True, False]
    not_ready = _new_gate(ScriptedModels(ready=False))
    not_ready.select_action(_obs(0), POLICY_ACTION)
    info = not_ready.step_info()
    assert np.isnan(info["value"]) and info["triggered"] is False and info["recovery"] is False


def test_value_history_keeps_running_during_a_chunk():
    # K=2, H=2: after two warm-up steps, trigger at step 2 (history [.1 .2 .3]); steps 2, 3 chunk;
    # step 4 re-evaluated with the values of steps 2..4, which kept being recorded during the chunk.
    models = ScriptedModels(triggers=[True, False], values=[0.1, 0.2, 0.3, 0.4, 0.5], H=2)
    gate = _new_gate(models, history_len=2, cooldown_steps=1, warm=False)
    _drive(gate, 0, 5)
    assert models.scored_steps == [2, 4]
    np.testing.assert_allclose(models.score_calls[0][2], [0.1, 0.2, 0.3], rtol=1e-6)
    np.testing.assert_allclose(models.score_calls[1][2], [0.3, 0.4, 0.5], rtol=1e-6)
    # 5 step values + V after the chunk's last action (observe of step 3, the chunk-end value)
    assert models.value_calls == 6


def test_no_goal_means_no_chunk():
    models = ScriptedModels(triggers=[True, True, False], values=[0.25, 0.35, 0.45], goal_none=True)
    gate = _new_gate(models, cooldown_steps=2)
    steps = _drive(gate, 0, 3)
    assert [s[2] for s in steps] == [POLICY] * 3
    for s in steps:
        np.testing.assert_array_equal(s[1], POLICY_ACTION)
    # The goal is asked with the current value; no goal -> no chunk and no cooldown (scored at
    # every step).
    assert models.goal_calls == [(0, 0.25), (1, 0.35)]
    assert models.chunk_calls == []
    assert models.scored_steps == [0, 1, 2]
    stats = gate.stats()
    assert stats["no_goal"] == 2.0 and stats["triggers"] == 0.0 and stats["recovery_steps"] == 0.0
    assert gate.summary()["gate_no_goal"] == 2


def test_without_memory_goal_the_current_observation_is_the_goal():
    models = ScriptedModels(triggers=[True], H=2)
    gate = _new_gate(models, use_memory_goal=False)
    steps = _drive(gate, 0, 2)
    assert models.goal_calls == []
    assert len(models.chunk_calls) == 1
    observation, goal = models.chunk_calls[0]
    np.testing.assert_array_equal(goal["state"], _obs(0)["state"])
    np.testing.assert_array_equal(observation["state"], _obs(0)["state"])
    assert [s[2] for s in steps] == [RECOVERY, RECOVERY]


@pytest.mark.parametrize("bad", [
    np.zeros((3, A + 1), np.float32),
    np.zeros((A,), np.float32),
    np.zeros((0, A), np.float32),
    np.full((3, A), np.nan, np.float32),
    np.array([[0.0, 0.0, np.inf, 0.0]], np.float32),
])
def test_bad_chunk_raises(bad):
    models = ScriptedModels(triggers=[True])
    models.bad_chunk = bad
    gate = _new_gate(models)
    with pytest.raises(ValueError):
        gate.select_action(_obs(0), POLICY_ACTION)


def test_chunk_actions_are_clipped_to_the_action_box():
    models = ScriptedModels(triggers=[True])
    models.bad_chunk = np.array([[2.0, -3.0, 0.5, 1.0]], np.float32)
    gate = _new_gate(models)
    action, source = gate.select_action(_obs(0), POLICY_ACTION)
    assert source == RECOVERY
    np.testing.assert_array_equal(action, [1.0, -1.0, 0.5, 1.0])


def test_constructor_and_load_params_errors():
    for kwargs in ({"history_len": 0}, {"max_chunks": 0}, {"cooldown_steps": -1}):
        with pytest.raises(ValueError):
            UniInterveneGate(ScriptedModels(), **kwargs)
    with pytest.raises(TypeError):
        UniInterveneGate(ScriptedModels()).load_params({"version": 1})


def test_stats_and_summary_over_two_episodes():
    # Episode 1 (H=2, cooldown 1, max_chunks 4): trigger at 0 -> chunk 0..1; step 2 re-evaluated,
    # triggers -> chunk 2..3; step 4 re-evaluated, no trigger, cooldown 1 (step 5); step 6 scored.
    models = ScriptedModels(triggers=[True, True, False, False], H=2)
    gate = _new_gate(models, cooldown_steps=1, max_chunks=4)
    _drive(gate, 0, 7)
    assert models.scored_steps == [0, 2, 4, 6]
    s1 = gate.stats()
    assert (s1["triggers"], s1["recovery_steps"], s1["aborted_chunks"], s1["no_goal"]) == (2.0, 4.0, 0.0, 0.0)
    assert s1["mean_risk_prob"] == pytest.approx((0.9 + 0.9 + 0.1 + 0.1) / 4)
    assert s1["tau"] == 0.5 and s1["ready"] == 1.0
    # Episode 2: trigger with no goal at step 0, then a trigger with a goal at step 1 (chunk
    # 1..3, H=3), then the human takes over at step 2 (abort: row 2 was still pending).
    _warm(gate.reset(_obs(0)) or gate)
    models.H = 3
    models.triggers += [True, True]
    models.goal_none = True
    _drive(gate, 0, 1)
    models.goal_none = False
    _drive(gate, 1, 1)
    _drive(gate, 2, 2, human=(2, 3))
    s2 = gate.stats()
    assert (s2["triggers"], s2["aborted_chunks"], s2["no_goal"]) == (1.0, 1.0, 1.0)
    assert "mean_risk_prob" in s2
    summary = gate.summary()
    assert summary["gate_triggers"] == 3
    assert summary["gate_aborted_chunks"] == 1
    assert summary["gate_no_goal"] == 1
    assert summary["gate_decisions"] == 4 + 2
    assert summary["gate_latency_ms_p50"] is not None
    assert summary["gate_latency_ms_p99"] >= summary["gate_latency_ms_p50"]
    # An episode without any decision reports no mean risk (not NaN).
    gate.reset(_obs(0))
    models.ready = False
    _drive(gate, 0, 2)
    assert "mean_risk_prob" not in gate.stats()


def test_timeline_records_each_step_of_each_episode(tmp_path):
    path = tmp_path / "run" / "gate_timeline.jsonl"
    # Episode 0 (K=1, H=2, cooldown 1): step 0 scored (prob 0.2, no trigger), step 1 scored
    # (prob 0.8, trigger) -> chunk at 1, 2; step 3 re-evaluated (prob 0.3) -> cooldown; step 4
    # cooldown; human takes over at step 4.
    models = ScriptedModels(triggers=[False, True, False, False], probs=[0.2, 0.8, 0.3, 0.4, 0.1],
                            # 0.35: V after the chunk's last action (observe of step 2)
                            values=[0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8], H=2)
    gate = UniInterveneGate(models, history_len=1, cooldown_steps=1, max_chunks=4,
                            timeline_path=str(path), timeline_every=1)
    _warm(gate.reset(_obs(0)) or gate)
    ep0 = _drive(gate, 0, 5, human=(4,))
    # Episode 1: not ready for 1 step, then ready; success reported at the last step.
    _warm(gate.reset(_obs(0)) or gate)
    models.ready = False
    ep1 = _drive(gate, 0, 1)
    models.ready = True
    ep1 += _drive(gate, 1, 2, info_at=lambda t: {"success": t == 2})
    gate.reset(_obs(0))  # the actor resets after every episode; an empty episode writes nothing
    gate.close()

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2
    r0, r1 = rows
    assert r0["episode"] == 0 and r1["episode"] == 1
    assert r0["env_steps"] == 5 and r1["env_steps"] == 8
    assert r0["success"] is False and r1["success"] is True
    assert r0["tau"] == 0.5
    assert r0["source"] == [executed for *_, executed in ep0] == [POLICY, RECOVERY, RECOVERY, POLICY, HUMAN]
    assert r0["value"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert r0["risk"] == [0.2, 0.8, None, 0.3, None]
    assert r0["trigger"] == [0, 1, 0, 0, 0]
    assert r1["source"] == [executed for *_, executed in ep1] == [POLICY, POLICY, POLICY]
    assert r1["value"] == [None, 0.6, 0.7]
    assert r1["risk"] == [None, 0.4, 0.1]
    assert r1["trigger"] == [0, 0, 0]


def test_timeline_every_other_episode(tmp_path):
    path = tmp_path / "tl.jsonl"
    gate = UniInterveneGate(ScriptedModels(), history_len=1, timeline_path=str(path), timeline_every=2)
    for _ in range(5):
        gate.reset(_obs(0))
        _drive(gate, 0, 2)
    gate.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["episode"] for r in rows] == [0, 2, 4]
    assert all(len(r["value"]) == 2 for r in rows)


# ------------------------------------------------------------------ real networks
def _tiny_config(seed=0):
    from configs.train import get_config

    config = get_config("pick-place,hil_serl+uniintervene")
    config.seed = seed
    shrink_uniintervene(config.uniintervene)
    return config


SPEC = {"state": ((39,), np.dtype(np.float32))}


def _items(ui, rng, n=3):
    """Hand-made memory items whose keys are the learner's embeddings of n observations."""
    from uniintervene_jax.memory.mining import RecoveryItems

    keys = rng.normal(size=(n, 39)).astype(np.float32)
    goals = rng.normal(size=(n, 39)).astype(np.float32)
    emb = lambda x: np.asarray(ui.value.encode({"state": x}, ui.instr), np.float32)  # noqa: E731
    return RecoveryItems(
        tasks=["pick-place"] * n, episode_id=np.arange(n, dtype=np.int64), start=np.zeros(n, np.int64),
        end=np.full(n, 8, np.int64), start_progress=np.zeros(n, np.float32), bin=np.zeros(n, np.int32),
        key_observations={"state": keys}, goal_observations={"state": goals},
        key_embedding=emb(keys), goal_embedding=emb(goals), goal_state=goals,
        start_value=np.full(n, 0.2, np.float32), goal_value=np.full(n, 0.9, np.float32),
        actions=rng.uniform(-1, 1, (n, 8, A)).astype(np.float32))


@pytest.fixture(scope="module")
def learner_and_gate_models():
    """A learner-side OnlineUniIntervene (seed 1, so its fresh parameters differ from the gate
    models' seed-0 ones) with a hand-made memory, and fresh NetworkGateModels (seed 0)."""
    from uniintervene_jax.gate import NetworkGateModels
    from uniintervene_jax.online import OnlineUniIntervene

    ui = OnlineUniIntervene(_tiny_config(seed=1), SPEC, A)
    rng = np.random.default_rng(0)
    ui.memory_items = _items(ui, rng)
    ui.version = 7
    ui.tau = 0.625
    models = NetworkGateModels(_tiny_config(seed=0), SPEC, A)
    return ui, models, rng


def _wire(payload):
    from serl_ext.transport.codec import decode, encode

    return decode(encode(payload))


def test_network_models_load_a_wire_payload(learner_and_gate_models):
    ui, models, rng = learner_and_gate_models
    obs = {"state": rng.normal(size=(39,)).astype(np.float32)}
    before = models.value(obs)
    learner_value = float(ui.value.values(obs, ui.instr))
    assert before != pytest.approx(learner_value, abs=1e-6)  # different seeds, different nets
    assert models.version == -1 and models.ready is False and models.goal(obs, 0.0) is None

    payload = _wire(ui.payload())
    assert payload["ready"] is False  # no online episodes yet
    payload["ready"] = True
    models.load(payload)
    assert models.version == 7 and models.ready is True and models.tau == 0.625
    assert models.value(obs) == pytest.approx(learner_value, abs=1e-6)

    # score: the learner's intervention model on the same input; trigger = prob >= tau.
    action = rng.uniform(-1, 1, A).astype(np.float32)
    hist = np.linspace(0.1, 0.5, 9).astype(np.float32)
    prob, trigger = models.score(obs, action, hist)
    out = ui.intervention.predict({"state": obs["state"][None]}, ui.instr, action[None], hist[None])
    assert prob == pytest.approx(float(out["trigger_prob"][0]), abs=1e-6)
    assert trigger == (prob >= 0.625)
    # chunk: the learner's recovery policy.
    goal = {"state": rng.normal(size=(39,)).astype(np.float32)}
    chunk = models.chunk(obs, goal)
    assert chunk.shape == (8, A)
    np.testing.assert_allclose(chunk, ui.recovery.predict_chunk(obs, goal, ui.instr)[0], atol=1e-6)
    # goal: the memory came along; querying with an item's key observation returns its goal
    # (value 0.9 > 0.5), and nothing has a value above 0.95.
    items = ui.memory_items
    key = {"state": items.key_observations["state"][1]}
    found = models.goal(key, 0.5)
    np.testing.assert_array_equal(found["state"], items.goal_observations["state"][1])
    assert models.goal(key, 0.95) is None


def test_one_pass_value_embedding_and_trigger_match_the_separate_calls(learner_and_gate_models):
    """The gate's fast paths compute the same numbers: values_and_embeddings = (values, encode),
    batched and unbatched; trigger_probs = predict's trigger_prob."""
    ui, _, rng = learner_and_gate_models
    obs = {"state": rng.normal(size=(5, 39)).astype(np.float32)}
    v, z = ui.value.values_and_embeddings(obs, ui.instr)
    assert v.shape == (5,) and z.shape == (5, ui.value.config.latent_dim)
    np.testing.assert_allclose(v, ui.value.values(obs, ui.instr), atol=1e-6)
    np.testing.assert_allclose(z, ui.value.encode(obs, ui.instr), atol=1e-6)
    one = {"state": obs["state"][2]}
    v1, z1 = ui.value.values_and_embeddings(one, ui.instr)
    assert np.shape(v1) == () and z1.shape == (ui.value.config.latent_dim,)
    np.testing.assert_allclose(z1, z[2], atol=1e-6)
    actions = rng.uniform(-1, 1, (5, A)).astype(np.float32)
    hist = rng.uniform(0, 1, (5, 9)).astype(np.float32)
    probs = ui.intervention.trigger_probs(obs, ui.instr, actions, hist)
    assert probs.dtype == np.float32 and probs.shape == (5,)
    np.testing.assert_allclose(probs, ui.intervention.predict(obs, ui.instr, actions, hist)["trigger_prob"], atol=1e-6)
    with pytest.raises(ValueError, match="value_history"):
        ui.intervention.trigger_probs(obs, ui.instr, actions, hist[:, :4])


def test_gate_models_reuse_the_value_calls_embedding_only_for_that_observation(learner_and_gate_models, monkeypatch):
    """A triggering decision embeds its observation once (in value()); goal() and the recovery
    view reuse that z. Another observation, the same dict edited in place, or a payload swapped
    in since then gets a fresh encoder call with the same result as without the reuse."""
    import uniintervene_jax.value.model as value_model

    ui, models, rng = learner_and_gate_models
    payload = _wire(ui.payload())
    payload["ready"] = True
    models.load(payload)
    items = ui.memory_items
    obs = {"state": items.key_observations["state"][1].copy()}
    other = {"state": items.key_observations["state"][2].copy()}
    z_obs, z_other = ui.value.encode(obs, ui.instr), ui.value.encode(other, ui.instr)
    calls = []
    real = value_model._encode_jit
    monkeypatch.setattr(value_model, "_encode_jit", lambda *a: calls.append(1) or real(*a))

    models.value(obs)
    found = models.goal(obs, 0.5)
    np.testing.assert_array_equal(found["state"], items.goal_observations["state"][1])
    np.testing.assert_allclose(models._embedding(obs), z_obs, atol=1e-6)
    assert calls == []  # the kept z served the retrieval and the view

    np.testing.assert_array_equal(models.goal(other, 0.5)["state"], items.goal_observations["state"][2])
    assert len(calls) == 1  # not the observation value() saw

    obs["state"][:] = other["state"]  # same dict object, new contents: not reused
    np.testing.assert_allclose(models._embedding(obs), z_other, atol=1e-6)
    assert len(calls) == 2

    models.value(other)
    models.load(payload)  # parameters swapped in after value(): the kept z is stale
    models._embedding(other)
    assert len(calls) == 3


def _bad_payloads(good):
    def nan_value(p):
        leaf = p["value"]
        path = []
        while isinstance(leaf, dict):
            k = sorted(leaf)[0]
            path.append(k)
            leaf = leaf[k]
        leaf = np.array(leaf)
        leaf.flat[0] = np.nan
        node = p["value"]
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = leaf
        return p

    def wrong_shape(p):
        def first_kernel(tree):
            for k in sorted(tree):
                if isinstance(tree[k], dict):
                    found = first_kernel(tree[k])
                    if found is not None:
                        return found
                elif k == "kernel":
                    return tree
            return None

        node = first_kernel(p["intervention"])
        shape = np.shape(node["kernel"])
        node["kernel"] = np.zeros(tuple(shape[:-1]) + (shape[-1] + 1,), np.float32)
        return p

    def missing(key):
        def f(p):
            del p[key]
            return p
        return f

    def memory_missing_field(p):
        del p["memory"]["goal_value"]
        return p

    def set_(key, value):
        def f(p):
            p[key] = value
            return p
        return f

    cases = {
        "nan": nan_value, "wrong_shape": wrong_shape, "missing_value": missing("value"),
        "missing_memory": missing("memory"), "memory_missing_field": memory_missing_field,
        "tau_out_of_range": set_("tau", 1.5), "tau_nan": set_("tau", float("nan")),
        "not_a_dict": lambda p: [p],
    }
    return {name: f(copy.deepcopy(good)) for name, f in cases.items()}


def test_network_models_reject_malformed_payloads_unchanged(learner_and_gate_models):
    from uniintervene_jax.online import OnlineUniIntervene

    ui, models, rng = learner_and_gate_models
    good = _wire(ui.payload())
    models.load(good)
    obs = {"state": rng.normal(size=(39,)).astype(np.float32)}
    value_before = models.value(obs)
    # The bad payloads carry parameters of another learner (seed 2): a partial swap would show.
    other = OnlineUniIntervene(_tiny_config(seed=2), SPEC, A)
    other.memory_items = _items(other, np.random.default_rng(1))
    other.version = 8
    other_payload = _wire(other.payload())
    for name, bad in _bad_payloads(other_payload).items():
        with pytest.raises((ValueError, TypeError)):
            models.load(bad)
        assert models.version == 7, name
        assert models.tau == 0.625, name
        assert models.value(obs) == value_before, name
    # The other learner's payload itself loads.
    models.load(other_payload)
    assert models.version == 8 and models.value(obs) != value_before


def test_network_models_reject_a_memory_of_another_embedding_dim(learner_and_gate_models):
    # A memory whose key embeddings do not match the value encoder's latent width can never be
    # queried (RecoveryMemory.retrieve raises on the first trigger, inside the actor loop), so
    # load must refuse it like any other bad memory.
    ui, models, rng = learner_and_gate_models
    payload = _wire(ui.payload())
    mem = payload["memory"]
    n, d = mem["key_embedding"].shape
    mem["key_embedding"] = rng.normal(size=(n, d + 1)).astype(np.float32)
    mem["goal_embedding"] = rng.normal(size=(n, d + 1)).astype(np.float32)
    payload["version"] = 9
    with pytest.raises(ValueError):
        models.load(payload)
    assert models.version != 9


def test_network_models_bad_version_leaves_parameters_unchanged(learner_and_gate_models):
    # A payload whose version field is not an int is rejected; the parameters must stay those of
    # the last good payload (the swap must be all or nothing).
    from uniintervene_jax.online import OnlineUniIntervene

    ui, models, rng = learner_and_gate_models
    models.load(_wire(ui.payload()))
    obs = {"state": rng.normal(size=(39,)).astype(np.float32)}
    value_before = models.value(obs)
    other = OnlineUniIntervene(_tiny_config(seed=3), SPEC, A)
    bad = _wire(other.payload())
    bad["version"] = None
    with pytest.raises((ValueError, TypeError)):
        models.load(bad)
    assert models.version == 7
    assert models.value(obs) == value_before


def test_make_gate_follows_config(tmp_path):
    from uniintervene_jax.gate import make_gate

    config = _tiny_config()
    config.uniintervene.cooldown_steps = 3
    config.uniintervene.max_chunks = 2
    config.uniintervene.timeline_every = 3
    gate = make_gate(config, SPEC, A, str(tmp_path))
    assert (gate.K, gate.cooldown_steps, gate.max_chunks, gate.timeline_every) == (8, 3, 2, 3)
    assert gate.use_memory_goal is True
    assert gate.timeline_path == str(tmp_path / "gate_timeline.jsonl")
    assert gate.models.ready is False and gate.models.tau == config.uniintervene.trigger.tau_int
    # The loop options the actor reads from the gate (serl_ext.loop.gate.Gate), from config.uniintervene.
    assert gate.part_name == "uniintervene" and gate.eval_with_gate is True
    assert gate.intervention_sources == frozenset()  # recovery_buffer "online"
    assert gate.ready_wait_s == 60.0 and gate.ready_wait_after_episodes == config.uniintervene.min_episodes
    config.uniintervene.recovery_buffer = "both"
    config.uniintervene.eval_with_gate = False
    config.uniintervene.wait_for_ready_s = 0.0
    gate = make_gate(config, SPEC, A, None)
    assert gate.intervention_sources == frozenset({RECOVERY}) and gate.eval_with_gate is False
    assert gate.ready_wait_s == 0.0 and gate.ready_wait_after_episodes == 0 and gate.timeline_path is None
    config.uniintervene.enabled = False
    assert make_gate(config, SPEC, A, None) is None  # the loop then uses the pass-through gate
    config.uniintervene.enabled = True
    config.uniintervene.cooldown_steps = -1
    with pytest.raises(ValueError):
        make_gate(config, SPEC, A, str(tmp_path))


def test_replan_every_repredicts_the_running_chunk_toward_the_same_goal():
    """replan_every=2: the chunk's rest is re-predicted from the current observation at the
    chunk's steps 2, 4, 6 with the goal retrieved at the trigger; open loop otherwise."""

    class Models:
        ready, tau, version = True, 0.5, 1

        def __init__(self):
            self.chunk_calls = []

        def value(self, observation):
            return 0.1

        def score(self, observation, policy_action, value_history):
            return 0.9, True

        def goal(self, observation, value):
            return {"state": np.full(3, 7.0, np.float32)}

        def chunk(self, observation, goal):
            call = len(self.chunk_calls)
            self.chunk_calls.append((float(observation["state"][0]), float(goal["state"][0])))
            # Row j of the call-th chunk is (call / 2 + j / 20) in every dimension (inside [-1, 1]).
            return np.stack([np.full(2, call / 2 + j / 20, np.float32) for j in range(4)])

    models = Models()
    gate = UniInterveneGate(models, history_len=2, cooldown_steps=0, max_chunks=1, replan_every=2)
    _warm(gate.reset({"state": np.zeros(3, np.float32)}) or gate)
    executed = []
    for t in range(4):
        obs = {"state": np.full(3, float(t), np.float32)}
        action, source = gate.select_action(obs, np.zeros(2, np.float32))
        gate.observe(obs, action, source, 0.0, obs, {})
        executed.append((round(float(action[0]), 3), source))
    # t=0: trigger, chunk 0 row 0; t=1: row 1 (open loop); t=2: re-predicted (call 1) -> its
    # first of the 2 remaining rows = 0.5; t=3: the next row 0.55 of that re-predicted chunk.
    assert executed == [(0.0, RECOVERY), (0.05, RECOVERY), (0.5, RECOVERY), (0.55, RECOVERY)]
    assert models.chunk_calls == [(0.0, 7.0), (2.0, 7.0)]
    with pytest.raises(ValueError):
        UniInterveneGate(models, replan_every=-1)


def test_for_evaluation_copies_settings_shares_models_and_keeps_state_apart(tmp_path):
    models = ScriptedModels(triggers=[True], H=3)
    path = tmp_path / "timeline.jsonl"
    gate = _new_gate(models, cooldown_steps=3, max_chunks=5, replan_every=2, use_memory_goal=False,
                     propose_under_human=False, timeline_path=str(path), timeline_every=1)
    _drive(gate, 0, 2)  # trigger at 0: the training gate is inside chunk 0
    assert len(gate.chunk) == 1
    before = (dict(gate.total), gate.episode, list(gate.history))
    ev = gate.for_evaluation()
    assert ev.models is models and ev is not gate
    assert (ev.K, ev.cooldown_steps, ev.max_chunks, ev.replan_every, ev.use_memory_goal, ev.propose_under_human) == (
        2, 3, 5, 2, False, False)
    assert ev.timeline_path is None and not ev.chunk and not ev.history
    _warm(ev.reset(_obs(0)) or ev)
    models.triggers += [True]
    out = _drive(ev, 0, 4)
    assert [s for _, _, s, _ in out[:3]] == [RECOVERY] * 3  # its own chunk from its own trigger
    ev.stats()
    ev.close()
    # The training gate is untouched: same chunk, totals, episode and history.
    assert len(gate.chunk) == 1 and (dict(gate.total), gate.episode, list(gate.history)) == before
    gate.close()
    rows = [json.loads(line) for line in open(path)]
    assert len(rows) == 1 and len(rows[0]["source"]) == 2  # only the training gate's steps


# ------------------------------------------------------------------ issue 13: gate stats, threshold sweep
def test_trigger_rate_and_recovery_value_gain_stats():
    # Episode 1 (K=2 warm, H=2, cooldown 1): trigger at 0 (V 0.2) -> chunk 0, 1; V after its last
    # action (observe of step 1) 0.7 -> gain 0.5; step 2 re-evaluated (no trigger), 3 cooldown,
    # 4 and 5 scored: 4 decisions, 1 trigger.
    models = ScriptedModels(triggers=[True, False, False, False], H=2, values=[0.2, 0.3, 0.7, 0.7, 0.7, 0.7])
    gate = _new_gate(models, cooldown_steps=1, max_chunks=4)
    _drive(gate, 0, 6)
    s1 = gate.stats()
    assert s1["trigger_rate"] == pytest.approx(0.25)
    assert s1["recovery_value_gain"] == pytest.approx(0.5)
    # Episode 2: trigger at 0 (V 0.4), H=3; the episode ends after step 1, inside the chunk: the
    # chunk ends there, its gain uses V of the last observation it reached (0.6) -> 0.2.
    _warm(gate.reset(_obs(0)) or gate)
    models.H, models.values, models.value_calls = 3, [0.4, 0.45, 0.6], 0
    models.triggers += [True]
    _drive(gate, 0, 2)
    s2 = gate.stats()
    assert s2["trigger_rate"] == 1.0 and s2["recovery_value_gain"] == pytest.approx(0.2)
    # Episode 3: a chunk aborted by the human has no gain; no ended chunk -> key omitted.
    _warm(gate.reset(_obs(0)) or gate)
    models.triggers += [True]
    _drive(gate, 0, 2, human=(1,))
    s3 = gate.stats()
    assert s3["aborted_chunks"] == 1.0 and "recovery_value_gain" not in s3 and s3["trigger_rate"] == 1.0
    # Episode 4: not ready -> no decision -> no trigger_rate.
    _warm(gate.reset(_obs(0)) or gate)
    models.ready = False
    _drive(gate, 0, 2)
    s4 = gate.stats()
    assert "trigger_rate" not in s4 and "recovery_value_gain" not in s4
    summary = gate.summary()
    assert summary["gate_decisions"] == 6 and summary["gate_triggers"] == 3
    assert summary["gate_trigger_rate"] == pytest.approx(3 / 6)
    assert summary["gate_recovery_chunks"] == 3 and summary["gate_recovery_chunks_ended"] == 2
    assert summary["gate_recovery_value_gain_mean"] == pytest.approx((0.5 + 0.2) / 2)
    assert summary["gate_recovery_value_gain_sum"] == pytest.approx(0.7)
    for key in ("gate_recovery_chunks", "gate_recovery_chunks_ended", "gate_recovery_value_gain_sum",
                "gate_history_warmup_steps"):
        assert key in UniInterveneGate.summary_counters
    assert set(UniInterveneGate.summary_counters) <= set(summary)
    assert "gate_trigger_rate" not in UniInterveneGate.summary_counters  # ratios do not add up
    fresh = UniInterveneGate(ScriptedModels(), history_len=2).summary()
    assert fresh["gate_trigger_rate"] is None and fresh["gate_recovery_value_gain_mean"] is None
    assert fresh["gate_recovery_chunks"] == 0


def _sweep_loop(probs, labels, thresholds):
    """Plain-loop reference of the official threshold_sweep_metrics (pred = prob >= t here)."""
    best = (-1.0, None, None, None, None)
    for t in thresholds:
        tp = sum(1 for p, y in zip(probs, labels) if p >= t and y)
        fp = sum(1 for p, y in zip(probs, labels) if p >= t and not y)
        fn = sum(1 for p, y in zip(probs, labels) if p < t and y)
        prec, rec = tp / max(1, tp + fp), tp / max(1, tp + fn)
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        if f1 > best[0]:
            best = (f1, t, prec, rec, sum(p >= t for p in probs) / len(probs))
    return best


def test_threshold_sweep_best_f1_against_a_loop():
    from uniintervene_jax.gate import SWEEP_THRESHOLDS, threshold_sweep

    assert SWEEP_THRESHOLDS[0] == 0.05 and SWEEP_THRESHOLDS[-1] == 0.95 and len(SWEEP_THRESHOLDS) == 19
    r = np.random.default_rng(0)
    labels = r.random(300) < 0.2
    probs = np.clip(0.45 + 0.1 * labels + r.normal(0, 0.05, 300), 0, 1)  # a narrow band, like the issue's
    out = threshold_sweep(probs, labels)
    f1, t, prec, rec, rate = _sweep_loop(probs, labels, SWEEP_THRESHOLDS)
    assert out["best_threshold"] == t and out["best_f1"] == pytest.approx(f1)
    assert (out["precision_at_best"], out["recall_at_best"], out["trigger_rate_at_best"]) == pytest.approx((prec, rec, rate))
    assert 0.4 < out["best_threshold"] < 0.6  # inside the band, not 0.4 below all of it
    assert out["n_pos"] == int(labels.sum()) and out["n_total"] == 300 and len(out["sweep"]) == 19
    assert 0.0 < out["auprc"] <= 1.0
    # hand case: probs [0.9, 0.6, 0.3], labels [1, 0, 1]: t=0.05..0.3 -> P 2/3 R 1 F1 0.8 (best, lowest)
    hand = threshold_sweep([0.9, 0.6, 0.3], [True, False, True])
    assert hand["best_threshold"] == 0.05 and hand["best_f1"] == pytest.approx(0.8)
    assert threshold_sweep([], [])["best_threshold"] is None
    with pytest.raises(ValueError):
        threshold_sweep([0.1, 0.2], [True])
