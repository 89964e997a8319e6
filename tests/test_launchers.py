"""End to end through the real launchers: demo collection, then learner.sh and actor.sh as two
processes talking over loopback, then a second run of both that resumes from the first."""

import json
import os
import subprocess
import sys

import pytest

from launcher_runs import (REPO, collect_demos, cpu_env, find_free_ports, read_run, replace_flags,
                           run_learner_and_actor, run_task, tiny_flags)


# summary.json keys of every run (serl_ext/loop/actor.py:write_summary), and those a gate with
# run totals adds (uniintervene_jax/gate.py:UniInterveneGate.summary).
SUMMARY_KEYS = {
    "task", "algorithm", "seed", "env_steps", "episodes", "eval_success_rate", "best_eval_success_rate",
    "eval_system_success_rate", "intervention_rate", "human_steps", "recovery_steps", "train_success_rate",
    "wall_clock_s", "learner_steps", "action_repeat", "eval_episodes", "eval_history",
    # reliability counters (issue 15, docs/reliability.md)
    "sensor_faults", "action_faults", "transport_items_queued", "transport_items_sent",
    "transport_items_delivered", "transport_items_acknowledged", "transport_items_dropped",
    "transport_items_unacknowledged", "delivered_to_learner", "param_messages_received", "param_errors",
    "param_network_refused",
    # selectivity from the per-step sources (serl_ext/loop/sources.py; issue 13 item 4)
    "policy_steps", "recovery_onsets", "takeover_onsets", "recovery_onsets_followed_by_takeover",
    "takeover_onsets_preceded_by_recovery", "recovery_runs_ended_by_human", "trigger_onset_precision",
    "trigger_onset_recall", "selectivity_window",
    # several actors (issue 14 item 5)
    "actor_id", "num_actors",
    # takeovers by the operator's trigger reason and who acted (serl_ext/loop/sources.py)
    "takeover_causes", "takeovers_noticed_during_recovery",
}
GATE_SUMMARY_KEYS = {
    "gate_triggers", "gate_recovery_steps", "gate_aborted_chunks", "gate_no_goal", "gate_decisions",
    "gate_proposals_under_human", "gate_latency_ms_p50", "gate_latency_ms_p99",
    # issue 13: trigger rate per decision, recovery chunks and their value gain, history warm-up
    "gate_trigger_rate", "gate_recovery_chunks", "gate_recovery_chunks_ended",
    "gate_recovery_value_gain_sum", "gate_recovery_value_gain_mean", "gate_history_warmup_steps",
}


def _flags(tmp_path, ports, max_env_steps):
    return tiny_flags(tmp_path, ports, max_env_steps)


def _run_task(tmp_path, max_env_steps):
    """launchers/run_task.sh: demos (already there), learner --quiet and actor; the terminal gets
    the actor's output only and a result table at the end; both logs are in the run folder."""
    run = run_task("pick-place,hil_serl", _flags(tmp_path, find_free_ports(2), max_env_steps))
    run_dir, summary, learner_summary = read_run(tmp_path, "pick-place,hil_serl")
    header, rule, row, folder = run.stdout.strip().splitlines()[-4:]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "task", "method", "env steps", "minutes", "final SR", "IR"]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["pick-place", "hil_serl", str(max_env_steps)]
    # Relative to the working folder (the repo) when inside it, else absolute (serl_ext/loop/main.py).
    inside = os.path.commonpath([str(run_dir), REPO]) == REPO
    assert folder == f"run folder: {os.path.relpath(run_dir, REPO) if inside else run_dir}"
    assert "[learner]" not in run.stdout + run.stderr  # the learner's console went to its log
    learner_log = (run_dir / "logs" / "learner.log").read_text()
    assert "[learner] done:" in learner_log and "resumed from checkpoint" in learner_log
    assert "[actor] eval at" in (run_dir / "logs" / "actor.log").read_text()
    return run_dir, summary, learner_summary


def _run_pair(tmp_path, max_env_steps):
    run_learner_and_actor("pick-place,hil_serl", _flags(tmp_path, find_free_ports(2), max_env_steps))
    return read_run(tmp_path, "pick-place,hil_serl")


@pytest.mark.timeout(900)
def test_actor_and_learner_processes_train_and_resume(tmp_path):
    collect_demos("pick-place", tmp_path / "demos")

    run_dir, summary, learner_summary = _run_pair(tmp_path, 300)
    assert set(summary) == SUMMARY_KEYS
    for key in ("task", "algorithm", "seed", "env_steps", "episodes", "eval_success_rate",
                "intervention_rate", "wall_clock_s"):
        assert key in summary, key
    assert summary["task"] == "pick-place" and summary["algorithm"] == "hil_serl"
    assert summary["env_steps"] == 300
    assert 0.0 <= summary["intervention_rate"] <= 1.0
    assert 0.0 <= summary["eval_success_rate"] <= 1.0
    # Every transition the actor produced reached the learner's online buffer, once.
    assert learner_summary["replay_size"] == 300
    # Demo buffer = the demos plus every human (operator) transition.
    demo_transitions = learner_summary["demo_size"] - summary["human_steps"]
    assert demo_transitions > 0
    assert learner_summary["learner_steps"] > 0
    assert (run_dir / "metrics" / "actor.jsonl").exists()
    assert (run_dir / "metrics" / "learner.jsonl").exists()
    first_steps = learner_summary["learner_steps"]

    # Second run, through run_task.sh: both processes resume (actor counters, learner checkpoint
    # with buffers); the terminal shows the actor only and ends with the result table.
    run_dir, summary2, learner_summary2 = _run_task(tmp_path, 400)
    assert summary2["env_steps"] == 400
    assert learner_summary2["replay_size"] == 400
    assert learner_summary2["learner_steps"] > first_steps
    assert learner_summary2["demo_size"] - summary2["human_steps"] == demo_transitions

    # Evaluation mode restores the newest learner checkpoint and writes eval.json.
    evaluation = subprocess.run(
        ["bash", "launchers/eval.sh", "pick-place,hil_serl", *_flags(tmp_path, [0, 0], 400), "--eval_episodes=2"],
        cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=300,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["learner_step"] == learner_summary2["learner_steps"]
    assert result["episodes"] == 2 and 0.0 <= result["eval_success_rate"] <= 1.0


@pytest.mark.timeout(600)
def test_a_metaworld_task_that_is_no_stand_in_trains_through_the_launchers(tmp_path):
    """drawer-open is none of the five stand-ins and has no entry in configs/tasks.py: by its
    name alone, run_task.sh collects its scripted demos, and learner and actor train on it
    (issue 18). Every transition reaches the learner, the operator's steps go to the demo
    buffer, and the result table names the task."""
    task, steps = "drawer-open", 200
    run = run_task(f"{task},hil_serl", _flags(tmp_path, find_free_ports(2), steps))
    assert len(list((tmp_path / "demos").glob("*.npz"))) == 2  # collected by run_task.sh
    run_dir, summary, learner_summary = read_run(tmp_path, f"{task},hil_serl")
    assert summary["task"] == task and summary["env_steps"] == steps and set(summary) == SUMMARY_KEYS
    assert learner_summary["replay_size"] == steps
    assert learner_summary["demo_size"] - summary["human_steps"] > 0  # the demos are in
    assert "[learner] done:" in (run_dir / "logs" / "learner.log").read_text()
    cells = [c.strip() for c in run.stdout.strip().splitlines()[-2].strip("|").split("|")]
    assert cells[:3] == [task, "hil_serl", str(steps)]


@pytest.mark.timeout(600)
def test_uniintervene_gate_end_to_end(tmp_path):
    """learner.sh + actor.sh with hil_serl+uniintervene and tiny budgets: the learner's online
    UniIntervene models become ready, are pushed, and the actor's gate scores with them."""
    collect_demos("pick-place", tmp_path / "demos")
    steps = 800
    # The actor keeps to one env step per learner step (plus slack), also through the learner's
    # compile pauses (learner_timeout_s), so that the learner's UniIntervene models become
    # ready while the actor still has episodes to run.
    flags = replace_flags(
        _flags(tmp_path, find_free_ports(2), steps),
        "--config.learner.training_starts=300",
        "--config.actor.steps_per_update=1",
        "--config.actor.throttle_slack=100",
        "--config.actor.learner_timeout_s=120",
        "--config.uniintervene.min_episodes=2",
        # No wait for a ready gate after min_episodes: here the gate gets ready only with the
        # rebuild after episode 5 (refresh_episodes=4, about env step 550), so the 60 s wait
        # always ran out (the learner training its models flat out meanwhile) and only delayed
        # the run; the throttle keeps the actor within 100 steps of a learner busy rebuilding.
        "--config.uniintervene.wait_for_ready_s=0",
        "--config.uniintervene.min_updates=20",
        "--config.uniintervene.pretrain_steps=20",
        "--config.uniintervene.refresh_episodes=4",
        "--config.uniintervene.publish_period=20",
        "--config.uniintervene.timeline_every=1",
        "--config.uniintervene.batch_size=32",
        "--config.uniintervene.recovery_batch_size=16",
        "--config.uniintervene.value.hidden_dims=(32, 32)",
        "--config.uniintervene.value.head_hidden_dims=(32,)",
        "--config.uniintervene.value.latent_dim=16",
        "--config.uniintervene.intervention.model.hidden_dims=(32, 32)",
        "--config.uniintervene.intervention.model.head_hidden_dims=(32,)",
        "--config.uniintervene.recovery.cond_hidden_dims=(32,)",
        "--config.uniintervene.recovery.chunk_hidden_dims=(32,)",
    )
    # Start the actor once the learner has pretrained and is about to publish (before that the
    # actor would run unthrottled: the learner counts as away).
    run_learner_and_actor("pick-place,hil_serl+uniintervene", flags, actor_timeout=500,
                          learner_log=tmp_path / "learner.log", start_actor_when="UniIntervene pretrained")
    run_dir = tmp_path / "runs" / "pick-place" / "hil_serl+uniintervene" / "seed0"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["algorithm"] == "hil_serl+uniintervene" and summary["env_steps"] == steps
    assert set(summary) == SUMMARY_KEYS | GATE_SUMMARY_KEYS
    assert summary["gate_decisions"] > 0, summary  # the pushed models were ready and the gate scored
    assert summary["gate_latency_ms_p50"] is not None
    # The final evaluation also ran the policy + gate system (no human) with the ready models.
    assert 0.0 <= summary["eval_system_success_rate"] <= 1.0
    assert 0.0 <= summary["eval_history"][-1]["system_recovery_fraction"] <= 1.0
    state = json.loads((run_dir / "uniintervene" / "state.json").read_text())
    assert state["episodes_seen"] >= 2 and state["counters"]["intervention_updates"] >= 20
    learner_summary = json.loads((run_dir / "learner_summary.json").read_text())
    assert learner_summary["uniintervene_ready"] == 1.0
    rows = [json.loads(line) for line in (run_dir / "gate_timeline.jsonl").read_text().splitlines()]
    assert len(rows) >= 2
    for row in rows:
        n = len(row["source"])
        assert n > 0 and len(row["value"]) == len(row["risk"]) == len(row["trigger"]) == n
        assert set(row["source"]) <= {0, 1, 2} and set(row["trigger"]) <= {0, 1}
    # Once ready, every step records its value; the risk is recorded at scored steps.
    ready_rows = [r for r in rows if any(v is not None for v in r["value"])]
    assert ready_rows and any(p is not None for r in ready_rows for p in r["risk"])
    # benchmarks/system_eval.py restores this run (the tiny networks come from its saved config)
    # and evaluates the policy alone and with the gate.
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import system_eval

    row = system_eval.evaluate_run(str(run_dir), 1)
    assert (row["task"], row["algorithm"], row["seed"]) == ("pick-place", "hil_serl+uniintervene", 0)
    assert 0.0 <= row["policy_success_rate"] <= 1.0 and 0.0 <= row["system_success_rate"] <= 1.0
    assert row["memory_size"] > 0 and 0.0 <= row["system_recovery_fraction"] <= 1.0
