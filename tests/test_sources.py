"""Selectivity counts from per-step action sources (serl_ext/loop/sources.py), on hand-built
sequences and against a plain-loop reference."""

import numpy as np
import pytest

from serl_ext.loop import sources

P, R, H = 0, 1, 2
ZERO_EVENTS = {k: 0 for k in sources.EVENT_KEYS}


def counts(seq, window=10):
    return sources.source_counts(np.asarray(seq, np.int8), window)


def reference(seq, window):
    """The definitions of the module docstring, one step at a time."""
    s = list(seq)
    rec = [t for t in range(len(s)) if s[t] == R and (t == 0 or s[t - 1] != R)]
    hum = [t for t in range(len(s)) if s[t] == H and (t == 0 or s[t - 1] != H)]
    return {
        "policy_steps": s.count(P), "recovery_steps": s.count(R), "human_steps": s.count(H),
        "recovery_onsets": len(rec), "takeover_onsets": len(hum),
        "recovery_onsets_followed_by_takeover": sum(any(t < u <= t + window for u in hum) for t in rec),
        "takeover_onsets_preceded_by_recovery": sum(any(u - window <= t < u for t in rec) for u in hum),
        "recovery_runs_ended_by_human": sum(s[t] == R and s[t + 1] == H for t in range(len(s) - 1)),
    }


def test_no_recovery_steps_gives_zeros_plain_hil_serl():
    assert counts([]) == dict(ZERO_EVENTS, policy_steps=0, recovery_steps=0, human_steps=0)
    assert counts([P] * 5) == dict(ZERO_EVENTS, policy_steps=5, recovery_steps=0, human_steps=0)
    c = counts([P, P, H, H, P, H])  # plain HiL-SERL: takeovers, never a recovery step
    assert c == dict(ZERO_EVENTS, policy_steps=3, recovery_steps=0, human_steps=3, takeover_onsets=2)
    assert sources.onset_precision_recall(c) == (None, 0.0)  # precision undefined, recall 0
    assert sources.onset_precision_recall(counts([P] * 5)) == (None, None)


def test_onset_at_the_last_step():
    c = counts([P, P, R])
    assert c["recovery_onsets"] == 1 and c["recovery_onsets_followed_by_takeover"] == 0
    assert c["recovery_runs_ended_by_human"] == 0 and c["recovery_steps"] == 1
    assert sources.onset_precision_recall(c) == (0.0, None)


def test_back_to_back_chunks_are_one_onset():
    c = counts([P] + [R] * 16 + [P])  # two chunks of 8 with nothing between them
    assert c["recovery_onsets"] == 1 and c["recovery_steps"] == 16 and c["policy_steps"] == 2
    c = counts([P] + [R] * 8 + [P] + [R] * 8)  # one policy step between: two onsets
    assert c["recovery_onsets"] == 2


def test_human_right_after_a_chunk_and_takeover_during_a_chunk():
    # Chunk at 1..3, human from 4: followed (4 - 1 = 3 <= 10), preceded, ended by the human.
    c = counts([P, R, R, R, H, H, P])
    assert (c["recovery_onsets"], c["takeover_onsets"]) == (1, 1)
    assert c["recovery_onsets_followed_by_takeover"] == 1 and c["takeover_onsets_preceded_by_recovery"] == 1
    assert c["recovery_runs_ended_by_human"] == 1
    assert sources.onset_precision_recall(c) == (1.0, 1.0)
    # A chunk ending into a policy step, the human two steps later: not ended by the human, but paired.
    c = counts([R, R, P, H])
    assert c["recovery_runs_ended_by_human"] == 0 and c["recovery_onsets_followed_by_takeover"] == 1


def test_window_edges():
    # Onset at 0, takeover onset at exactly N: paired; at N + 1: not.
    assert counts([R] + [P] * 9 + [H], 10)["recovery_onsets_followed_by_takeover"] == 1
    assert counts([R] + [P] * 9 + [H], 10)["takeover_onsets_preceded_by_recovery"] == 1
    assert counts([R] + [P] * 10 + [H], 10)["recovery_onsets_followed_by_takeover"] == 0
    assert counts([R] + [P] * 10 + [H], 10)["takeover_onsets_preceded_by_recovery"] == 0
    assert counts([R, H], 0)["recovery_onsets_followed_by_takeover"] == 0  # N = 0 pairs nothing
    # A long chunk: the human takes over at its 11th step, 10 steps after the onset.
    assert counts([R] * 10 + [H], 10)["recovery_onsets_followed_by_takeover"] == 1
    assert counts([R] * 11 + [H], 10)["recovery_onsets_followed_by_takeover"] == 0


def test_many_to_one_pairs_count_from_each_side():
    c = counts([R, P, R, P, H])  # two onsets before one takeover
    assert c["recovery_onsets_followed_by_takeover"] == 2 and c["takeover_onsets_preceded_by_recovery"] == 1
    c = counts([R, H, P, H])  # one onset before two takeovers
    assert c["recovery_onsets_followed_by_takeover"] == 1 and c["takeover_onsets_preceded_by_recovery"] == 2
    c = counts([H, R, P])  # takeover at step 0: nothing before it; recovery after, no takeover after
    assert (c["takeover_onsets_preceded_by_recovery"], c["recovery_onsets_followed_by_takeover"]) == (0, 0)
    c = counts([H, H, R, R, H, P])  # recovery after a hand-back, the human back on the next step
    assert (c["takeover_onsets"], c["recovery_onsets"], c["recovery_runs_ended_by_human"]) == (2, 1, 1)
    assert c["takeover_onsets_preceded_by_recovery"] == 1


def test_matches_the_loop_reference_on_random_sequences():
    rng = np.random.default_rng(0)
    for trial in range(300):
        T = int(rng.integers(0, 40))
        # Sticky sources so that runs of every length appear.
        seq, cur = [], int(rng.integers(0, 3))
        for _ in range(T):
            if rng.random() < 0.3:
                cur = int(rng.integers(0, 3))
            seq.append(cur)
        window = int(rng.integers(0, 12))
        assert counts(seq, window) == reference(seq, window), (seq, window)


def test_add_counts_and_errors():
    total = {}
    sources.add_counts(total, counts([R, H]))
    sources.add_counts(total, counts([P, R, P]))
    assert total["recovery_onsets"] == 2 and total["recovery_onsets_followed_by_takeover"] == 1
    assert sources.onset_precision_recall(total) == (0.5, 1.0)
    assert set(total) == set(sources.COUNT_KEYS)
    with pytest.raises(ValueError, match="shape"):
        sources.source_counts(np.zeros((2, 3), np.int8), 10)
    with pytest.raises(ValueError, match=r"\[3\]"):
        sources.source_counts(np.array([0, 3], np.int8), 10)
    with pytest.raises(ValueError, match="integers"):
        sources.source_counts(np.array([0.0, 1.0]), 10)
    with pytest.raises(ValueError, match="window"):
        sources.source_counts(np.array([0], np.int8), -1)


def test_takeover_causes_by_hand():
    from serl_ext.loop.sources import TakeoverCauses, during_recovery_share

    c = TakeoverCauses()
    robot = lambda **kw: {"operator/phase": kw.get("phase", "robot"), "operator/trigger": kw.get("trigger", "")}
    P, R, H = sources.POLICY, sources.RECOVERY, sources.HUMAN
    # (gate's choice, executed source, info): a stall noticed during recovery at step 1, the
    # human from step 3 on (reaction delay 1 after step 2's info), back to the robot, then a
    # workspace trigger while the policy acts and a human step after it
    steps = [(P, P, robot()), (R, R, robot(phase="reacting", trigger="stall")),
             (R, R, robot(phase="reacting", trigger="stall")), (R, H, robot(phase="expert", trigger="stall")),
             (P, H, robot(phase="expert", trigger="stall")), (P, P, robot(trigger="stall")),
             (P, P, robot(phase="reacting", trigger="workspace")), (R, H, robot(phase="expert", trigger="workspace"))]
    got = [c.step(*s) for s in steps]
    assert got == [None, None, None, "stall/recovery", None, None, None, "workspace/policy"]
    # a takeover with no operator info: unannounced, charged to the last robot step's actor
    c.reset()
    assert [c.step(R, R, {}), c.step(P, H, {}), c.step(P, H, {})] == [None, "unannounced/recovery", None]
    c.reset()
    assert c.step(P, H, {}) == "unannounced/policy"  # the first step of an episode
    assert during_recovery_share({"stall/recovery": 3, "stall/policy": 1}) == pytest.approx(0.75)
    assert during_recovery_share({}) is None
