"""benchmarks/gate_timing.py on hand-made gate timelines (counts checked by hand)."""

import json

import pytest

from benchmarks.gate_timing import auroc, decision_scores, episode_events, main, score_summary, summarise

N = None


def _ep(source, trigger, value, risk=None, success=False, env_steps=100):
    risk = risk if risk is not None else [N] * 2 + [0.5] * (len(source) - 2)
    return {"source": source, "trigger": trigger, "value": value, "risk": risk, "success": success,
            "env_steps": env_steps}


# steps:     0  1  2  3  4  5  6  7  8  9 10 11
SOURCE = [0, 0, 0, 1, 1, 1, 2, 2, 0, 1, 1, 0]
TRIGGER = [0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0]
VALUE = [.1, .2, .3, .3, .25, .2, .4, .5, .6, .6, .8, .9]


def test_episode_events_by_hand():
    ev = episode_events(_ep(SOURCE, TRIGGER, VALUE, success=True), window=2)
    assert ev["first_trigger"] == [3] and ev["first_decision"] == [2]
    # one takeover onset at step 6; steps 4, 5 are recovery -> 2
    assert ev["takeover_recovery_steps"] == [2]
    # run 1: steps 3-5, value 0.2 - 0.3 (step 2) = -0.1, a human at step 6 -> "human";
    # run 2: steps 9-10, 0.8 - 0.6 = +0.2, the episode (successful) ends 1 step later -> "success"
    (l1, g1, o1), (l2, g2, o2) = ev["runs"]
    assert (l1, o1, l2, o2) == (3, "human", 2, "success")
    assert g1 == pytest.approx(-0.1) and g2 == pytest.approx(0.2)


def test_run_followed_by_the_policy_and_a_failed_episode():
    ev = episode_events(_ep([0, 0, 1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0], [.1] * 8), window=3)
    assert ev["runs"] == [(2, 0.0, "policy")]
    assert ev["takeover_recovery_steps"] == []


def test_summary_and_unequal_lengths():
    eps = [_ep(SOURCE, TRIGGER, VALUE, success=True), _ep([0] * 5, [0] * 5, [.1] * 5)]
    s = summarise(eps, window=2)
    assert s["episodes"] == 2 and s["episodes_with_trigger"] == 1
    assert s["first_trigger_step_median"] == 3 and s["first_trigger_at_first_decision"] == 0.0
    assert s["takeovers"] == 1 and s["takeovers_with_recovery_before"] == 1.0
    assert s["takeover_onset_median"] == 6 and s["operator_steps_in_early_takeovers"] is None
    assert s["recovery_runs"] == 2 and s["recovery_value_rises"] == 0.5
    assert s["recovery_ends_human"] == 0.5 and s["recovery_ends_success"] == 0.5
    with pytest.raises(ValueError, match="lengths differ"):
        episode_events({"source": [0, 1], "trigger": [0], "value": [0, 0]}, window=2)


def test_cli_reads_finished_runs_only(tmp_path):
    runs = tmp_path / "runs"
    done = runs / "pick-place" / "m" / "seed0"
    unfinished = runs / "pick-place" / "m" / "seed1"
    for d in (done, unfinished):
        d.mkdir(parents=True)
        with open(d / "gate_timeline.jsonl", "w") as f:
            f.write(json.dumps(_ep(SOURCE, TRIGGER, VALUE, success=True, env_steps=10)) + "\n")
            f.write(json.dumps(_ep(SOURCE, TRIGGER, VALUE, success=True, env_steps=100)) + "\n")
            f.write('{"torn')
    (done / "summary.json").write_text("{}")
    main([f"--runs={runs}", "--method=m", "--window=2", f"--out={tmp_path}"])
    got = json.load(open(tmp_path / "gate_timing.json"))["tasks"]["pick-place"]
    # seed1 has no summary.json; of seed0's two episodes only the one at >= 50% of 100 env steps
    assert got["seeds"] == ["seed0"] and got["episodes"] == 1
    md = (tmp_path / "gate_timing.md").read_text()
    assert "pick-place" in md and "AUROC" in md and "tau 0.55: rate / precision / recall" in md


def test_early_takeovers_share_of_operator_steps():
    # takeovers: steps 1-3 (onset 1, 3 steps), 6-7 (onset 6, 2 steps), 9-13 (onset 9, 5 steps, to the end)
    source = [0, 2, 2, 2, 0, 1, 2, 2, 0, 2, 2, 2, 2, 2]
    ev = episode_events(_ep(source, [0] * 14, [.1] * 14), window=2)
    assert ev["takeovers"] == [(1, 3), (6, 2), (9, 5)]
    s = summarise([_ep(source, [0] * 14, [.1] * 14)], window=2, early_step=6)
    assert s["operator_steps_in_early_takeovers"] == pytest.approx(5 / 10)  # onsets 1 and 6 are <= 6
    assert s["takeover_onset_median"] == 6


def test_early_step_is_stall_window_plus_reaction_delay():
    from benchmarks.gate_timing import early_takeover_step
    from serl_ext.envs.operator import get_default_operator_config
    from serl_ext.envs.tasks import get_task_spec

    assert early_takeover_step("pick-place") == get_task_spec("pick-place").stall_window + \
        get_default_operator_config().reaction_delay == 13
    assert early_takeover_step("no-such-task") is None


def test_cli_reads_the_superseded_layout(tmp_path):
    d = tmp_path / "old" / "pick-place" / "seed0"
    d.mkdir(parents=True)
    (d / "gate_timeline.jsonl").write_text(json.dumps(_ep(SOURCE, TRIGGER, VALUE, success=True)) + "\n")
    (d / "summary.json").write_text("{}")
    main([f"--runs={tmp_path / 'old'}", "--method=", "--window=2", f"--out={tmp_path}"])
    got = json.load(open(tmp_path / "gate_timing.json"))["tasks"]["pick-place"]
    assert got["episodes"] == 1 and got["early_step"] == 13
    assert got["operator_steps_in_early_takeovers"] == 1.0  # the one takeover starts at step 6 <= 13


def test_decision_scores_auroc_and_threshold_rows_by_hand():
    # scores at steps 2..11; the human's steps 6, 7 are not decisions; the onset at 6 makes
    # steps 4 and 5 positive (window 2: 4 < 6 <= 6, 5 < 6 <= 7)
    risk = [N, N, .40, .60, .55, .70, .9, .9, .45, .55, .30, .50]
    scores, labels = decision_scores([_ep(SOURCE, TRIGGER, VALUE, risk=risk)], window=2)
    assert scores.tolist() == [.40, .60, .55, .70, .45, .55, .30, .50]
    assert labels.tolist() == [False, False, True, True, False, False, False, False]
    # positive .55 beats .40 .45 .30 .50 and ties .55 (4.5 of 6); .70 beats all 6: 10.5 / 12
    assert auroc(scores, labels) == pytest.approx(10.5 / 12)
    assert auroc(scores, labels & False) is None
    sc = score_summary(scores, labels, [0.55, 0.6, 0.8])
    assert sc["decisions"] == 8 and sc["positive_rate"] == pytest.approx(0.25)
    assert sc["thresholds"]["0.55"] == pytest.approx({"rate": 0.5, "precision": 0.5, "recall": 1.0})
    assert sc["thresholds"]["0.6"] == pytest.approx({"rate": 0.25, "precision": 0.5, "recall": 0.5})
    assert sc["thresholds"]["0.8"] == {"rate": 0.0, "precision": None, "recall": 0.0}
    assert sc["score_p50"] == pytest.approx(0.525)
