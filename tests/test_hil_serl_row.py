"""benchmarks/hil_serl.py: the budget flag parser and one run truncated at its budget, against
values worked out by hand."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.hil_serl import parse_budgets, row_at_budget  # noqa: E402


def test_parse_budgets_and_its_errors():
    assert parse_budgets("pick-place:60000,assembly:90000") == {"pick-place": 60000,
                                                                "assembly": 90000}
    assert parse_budgets("") == {}
    for bad in ("pick-place", "pick-place:", "pick-place:0", "pick-place:6e4", "a:-5"):
        with pytest.raises(ValueError, match="TASK:ENV_STEPS"):
            parse_budgets(bad)


def test_row_at_budget_truncates_history_and_episodes():
    history = [{"env_steps": 5000 * (i + 1), "success_rate": sr, "wall_clock_s": 120.0 * (i + 1)}
               for i, sr in enumerate([0.2, 0.85, 0.9, 0.1])]
    episodes = [  # (end step, length, operator steps, takeovers, success)
        dict(step=4000, length=100, human=50, segments=2, success=False),
        dict(step=8000, length=100, human=10, segments=1, success=True),
        dict(step=12000, length=50, human=0, segments=0, success=True),
        dict(step=14000, length=50, human=20, segments=1, success=True),
        dict(step=19000, length=100, human=100, segments=5, success=False),  # after the budget
    ]
    row = {"task": "pick-place", "seed": 1, "eval_history": history, "episodes": episodes}
    r = row_at_budget(row, 15000, target_sr=0.8)
    assert r["eval_sr"] == 0.9 and r["eval_step"] == 15000 and r["minutes"] == 6.0
    assert r["ir"] == pytest.approx((50 + 10 + 0 + 20) / 300)
    # Last quarter: episodes ending after 11250 env steps (the 12000 and 14000 ones).
    assert r["ir_last_quarter"] == pytest.approx(20 / 100)
    assert r["takeovers_per_episode"] == pytest.approx(4 / 4)
    assert r["takeovers_per_episode_last_quarter"] == pytest.approx(0.5)
    assert r["train_sr"] == pytest.approx(0.75)
    assert r["autonomous_sr_last_quarter"] == pytest.approx(0.5)  # 12000 without a human step
    assert r["env_steps_to_target"] == 10000 and r["minutes_to_target"] == 4.0
    assert row_at_budget(row, 15000, target_sr=0.95)["env_steps_to_target"] is None


def _fake_run(root, task, seed, action_repeat, srs, human_per_episode):
    """A finished run folder as the launchers leave it: summary.json, actor_config.json and the
    actor's and learner's metrics (4 episodes of 100 env steps per 500 env steps)."""
    import json

    run = os.path.join(root, "runs", task, "hil_serl", f"seed{seed}")
    os.makedirs(os.path.join(run, "metrics"))
    history = [{"env_steps": 500 * (i + 1), "success_rate": sr, "wall_clock_s": 60.0 * (i + 1)}
               for i, sr in enumerate(srs)]
    with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump({"env_steps": 500 * len(srs), "learner_steps": 250 * len(srs),
                   "eval_history": history}, f)
    with open(os.path.join(run, "actor_config.json"), "w") as f:
        json.dump({"env": {"action_repeat": action_repeat}}, f)
    with open(os.path.join(run, "metrics", "actor.jsonl"), "w") as f:
        for k in range(1, 5 * len(srs) + 1):
            f.write(json.dumps({"step": 100 * k, "rollout/length": 100,
                                "intervention/steps": human_per_episode,
                                "intervention/segments": 1, "rollout/success": 1}) + "\n")
    with open(os.path.join(run, "metrics", "learner.jsonl"), "w") as f:
        f.write(json.dumps({"step": 10, "train/updates_per_s": 40.0}) + "\n")


def test_report_states_each_tasks_action_repeat_and_aggregates_the_runs(tmp_path):
    """The report over fake finished runs: each task's action repeat comes from its runs (the
    simulated UR5e runs at 1, Meta-World at 4), IR and SR are the runs' own, worked by hand."""
    import json

    from benchmarks.hil_serl import aggregate, parse_args, report

    out = str(tmp_path)
    _fake_run(out, "ur5e-sim-lift", 0, 1, [0.0, 0.5, 0.9, 0.9], human_per_episode=10)
    _fake_run(out, "ur5e-sim-lift", 1, 1, [0.0, 0.85, 0.9, 1.0], human_per_episode=30)
    _fake_run(out, "pick-place", 0, 4, [0.9, 0.9, 0.9, 0.9], human_per_episode=0)
    args, _ = parse_args(["--tasks=ur5e-sim-lift,pick-place", "--seeds=0,1", f"--out={out}"])
    report(args, out, aggregate(args, out))
    text = open(os.path.join(out, "results.md")).read()
    assert "action repeat: ur5e-sim-lift 1, pick-place 4" in text
    result = json.load(open(os.path.join(out, "results.json")))
    lift = result["per_task"]["ur5e-sim-lift"]
    assert lift["seeds"] == [0, 1] and lift["run_env_steps"] == 2000
    assert lift["ir_mean"] == pytest.approx((0.1 + 0.3) / 2)  # 10 and 30 of 100 steps per episode
    assert lift["updates_per_env_step"] == [0.5, 0.5]
    assert result["per_task"]["pick-place"]["seeds"] == [0]  # seed 1 has no run: left out
    assert os.path.isfile(os.path.join(out, "curves.png"))


def test_a_run_not_expected_to_finish_by_the_deadline_is_deferred(tmp_path, capsys, monkeypatch):
    """--stop_after_min: with a finished run of 60 min on record, a 10-minute window starts no
    new run (no launcher call), and the recorded command leaves the schedule flag out."""
    import json

    from benchmarks import hil_serl

    out = str(tmp_path)
    _fake_run(out, "pick-place", 0, 4, [0.5, 0.9], human_per_episode=0)
    summary = os.path.join(out, "runs", "pick-place", "hil_serl", "seed0", "summary.json")
    data = json.load(open(summary))
    data["wall_clock_s"] = 3600.0
    json.dump(data, open(summary, "w"))
    # run_one skips a finished run itself (seed 0); any other call would start one.
    monkeypatch.setattr(hil_serl, "run_one",
                        lambda args, out, task, seed, extra: False if seed == "0" else pytest.fail("a run was started"))
    hil_serl.main(["--tasks=pick-place", "--seeds=0,1", f"--out={out}", "--stop_after_min=10"])
    assert "[bench] deferred pick-place seed 1: expected 60 min, 10 min left" in capsys.readouterr().out
    result = json.load(open(os.path.join(out, "results.json")))
    assert "stop_after_min" not in result["command"]
    args, _ = hil_serl.parse_args(["--tasks=pick-place", f"--out={out}"])
    assert args.deadline is None
    # Nothing on record: the run is expected to take --unknown_run_min (60).
    fresh = str(tmp_path / "fresh")
    hil_serl.main(["--tasks=pick-place", "--seeds=0", f"--out={fresh}", "--stop_after_min=10"])
    assert "[bench] deferred pick-place seed 0: expected 60 min, 10 min left" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        hil_serl.parse_args(["--stop_by=2026-12-03T20:00", "--stop_after_min=5"])
