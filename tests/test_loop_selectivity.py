"""The actor's selectivity counts (serl_ext/loop/sources.py wired into serl_ext/loop/actor.py):
per-episode ``selectivity/`` rows in metrics/actor.jsonl and the run totals in summary.json,
checked against the sources of the transitions the actor sent."""

import json
import os

import numpy as np
import pytest

from configs.train import get_config
from serl_ext.loop import common, sources
from serl_ext.loop.actor import DATA_STORE, run_actor
from serl_ext.loop.gate import PassThroughGate
from serl_ext.loop.logging import read_jsonl
from test_loop import EveryOtherStepRecovery, FakeClient, small_actor_settings


def _episodes(transitions):
    """Per-episode (T,) int8 source arrays of the sent transitions (split after ``dones``)."""
    episodes, current = [], []
    for t in transitions:
        current.append(int(t["action_source"]))
        if t["dones"]:
            episodes.append(np.asarray(current, np.int8))
            current = []
    return episodes, np.asarray(current, np.int8)


def _run(tmp_path, gate, max_env_steps):
    config = small_actor_settings(get_config("pick-place,hil_serl"), tmp_path, max_env_steps=max_env_steps)
    config.actor.selectivity_window = 4
    clients = []

    def make_client(stores):
        clients.append(FakeClient(stores))
        return clients[-1]

    summary = run_actor(config, gate=gate, make_client=make_client)
    rows = [r for r in read_jsonl(os.path.join(common.run_dir_for(config), "metrics", "actor.jsonl"))
            if "rollout/length" in r]
    return summary, rows, clients[0].received[DATA_STORE]


def test_episode_rows_and_summary_totals_match_the_sent_sources(tmp_path):
    # 150 steps of 0.5-recovery with the simulated operator on top: a cut last episode too.
    summary, rows, sent = _run(tmp_path, EveryOtherStepRecovery(), 150)
    finished, cut = _episodes(sent)
    assert len(rows) == len(finished) == summary["episodes"] and len(cut) > 0
    total = {}
    for row, src in zip(rows, finished):
        expected = sources.source_counts(src, 4)
        assert {k: row[f"selectivity/{k}"] for k in sources.COUNT_KEYS} == expected
        assert row["selectivity/human_steps"] == row["intervention/steps"]
        assert row["selectivity/takeover_onsets"] == row["intervention/segments"]
        sources.add_counts(total, expected)
    sources.add_counts(total, sources.source_counts(cut, 4))  # the cut episode is in the totals
    assert total["recovery_onsets"] > 0 and total["takeover_onsets"] > 0
    for k in sources.EVENT_KEYS:
        assert summary[k] == total[k], k
    assert summary["policy_steps"] == total["policy_steps"]
    assert summary["policy_steps"] + summary["recovery_steps"] + summary["human_steps"] == 150
    precision, recall = sources.onset_precision_recall(total)
    assert summary["trigger_onset_precision"] == pytest.approx(precision)
    assert summary["trigger_onset_recall"] == pytest.approx(recall)
    assert summary["selectivity_window"] == 4
    # every takeover has a cause, per episode and in the run totals; with recovery on every
    # other step both actors are seen noticing the operator's triggers
    assert sum(summary["takeover_causes"].values()) == summary["takeover_onsets"]
    for row in rows:
        assert sum(v for k, v in row.items() if k.startswith("intervention/cause/")) == row["intervention/segments"]
    actors = {k.split("/")[1] for k in summary["takeover_causes"]}
    assert actors <= {"policy", "recovery"} and not any(k.startswith("unannounced/") for k in summary["takeover_causes"])
    assert summary["takeovers_noticed_during_recovery"] == pytest.approx(sources.during_recovery_share(
        summary["takeover_causes"]))
    on_disk = json.loads(open(os.path.join(str(tmp_path), "pick-place", "hil_serl", "seed0", "summary.json")).read())
    assert on_disk["recovery_onsets"] == total["recovery_onsets"]


def test_plain_hil_serl_logs_zeros_and_resumes_adding_up(tmp_path):
    summary, rows, sent = _run(tmp_path, PassThroughGate(), 60)
    assert rows and all(r["selectivity/recovery_onsets"] == 0 == r["selectivity/recovery_steps"] for r in rows)
    assert summary["recovery_onsets"] == 0 and summary["recovery_runs_ended_by_human"] == 0
    assert summary["trigger_onset_precision"] is None
    takeovers = summary["takeover_onsets"]
    assert summary["trigger_onset_recall"] == (0.0 if takeovers else None)
    # A second actor process on the same run folder adds to the first one's totals.
    again, _, sent2 = _run(tmp_path, PassThroughGate(), 120)
    finished, cut = _episodes(sent2)
    added = sum(sources.source_counts(e, 4)["takeover_onsets"] for e in finished + [cut])
    assert again["takeover_onsets"] == takeovers + added
    assert again["policy_steps"] + again["human_steps"] == 120
    # the causes add up across the restart too, all noticed while the policy acted
    assert sum(again["takeover_causes"].values()) == again["takeover_onsets"]
    assert all(k.endswith("/policy") for k in again["takeover_causes"])
    assert again["takeovers_noticed_during_recovery"] == (0.0 if again["takeover_onsets"] else None)
