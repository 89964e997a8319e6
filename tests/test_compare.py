"""Tests of the comparison harness (benchmarks/compare.py, benchmarks/comparison/, benchmarks/compare_plots.py).

Synthetic run folders (2 methods x 2 tasks x 2 seeds) with known numbers; no training is run.
"""

import json
import os
import sys

import numpy as np
import pytest
from absl import app, flags
from absl.testing import flagsaver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
sys.path.insert(0, REPO)

import compare  # noqa: E402
import compare_plots  # noqa: E402
from benchmarks.comparison import launch, load, render  # noqa: E402
from configs.algorithms import ALGORITHMS  # noqa: E402
from serl_ext.loop.logging import MetricLogger  # noqa: E402

BASE, UI = "hil_serl", "hil_serl+uniintervene"
METHODS = [BASE, UI]
TASKS = ["pick-place", "assembly"]
SEEDS = [0, 1]
# (task, method) -> per-seed (final SR, IR).
NUMBERS = {
    ("pick-place", BASE): [(0.8, 0.6), (0.6, 0.4)],
    ("pick-place", UI): [(0.9, 0.2), (0.7, 0.2)],
    ("assembly", BASE): [(1.0, 0.7), (1.0, 0.5)],
    ("assembly", UI): [(0.9, 0.1), (0.9, 0.2)],
}
OPERATOR = {"enabled": True, "stall_window": None, "max_takeovers": 3}


@pytest.fixture(autouse=True)
def _uniintervene_registered(monkeypatch):
    """The lead adds hil_serl+uniintervene to ALGORITHMS; register a stand-in until then."""
    if UI not in ALGORITHMS:
        monkeypatch.setitem(ALGORITHMS, UI, ALGORITHMS[BASE])


def _timeline_record(episode, env_steps, trigger_at=None, recovery=False):
    T = 20
    trigger = [0] * T
    source = [0] * T
    if trigger_at is not None:
        trigger[trigger_at] = 1
        if recovery:
            source[trigger_at + 1:trigger_at + 6] = [1] * 5
    source[-3:] = [2, 2, 2]
    risk = [None if t % 4 == 0 else 0.1 + 0.04 * t for t in range(T)]
    return {"episode": episode, "env_steps": env_steps, "success": episode % 2 == 1, "tau": 0.6,
            "value": [0.2 + 0.03 * t for t in range(T)], "risk": risk, "trigger": trigger, "source": source}


def _make_run(out, task, method, seed, sr, ir, operator=OPERATOR, timeline=None):
    rdir = launch.run_dir(str(out), task, method, seed)
    os.makedirs(rdir, exist_ok=True)
    env_steps = 1000
    summary = {
        "task": task, "algorithm": method, "seed": seed, "env_steps": env_steps, "episodes": 10,
        "eval_success_rate": sr, "best_eval_success_rate": min(1.0, sr + 0.1), "intervention_rate": ir,
        "human_steps": int(ir * env_steps), "recovery_steps": 37 if method == UI else 0,
        "train_success_rate": 0.5, "wall_clock_s": 120.0, "learner_steps": 900, "action_repeat": 4,
        "eval_episodes": 10,
        "eval_history": [
            {"env_steps": 500, "wall_clock_s": 60.0, "learner_step": 400, "success_rate": sr / 2, "return": sr / 2},
            {"env_steps": 1000, "wall_clock_s": 120.0, "learner_step": 900, "success_rate": sr, "return": sr},
        ],
    }
    if method == UI:
        summary["gate_triggers"] = 5 + seed
    with open(os.path.join(rdir, "summary.json"), "w") as f:
        json.dump(summary, f)
    with open(os.path.join(rdir, "actor_config.json"), "w") as f:
        json.dump({"operator": operator, "demos": {"num_demos": 20, "path": ""}, "env": {"action_repeat": 4},
                   "actor": {"max_env_steps": env_steps, "eval_period": 500, "eval_episodes": 10}}, f)
    logger = MetricLogger(rdir, "actor", tensorboard=False)
    for i, step in enumerate(range(100, env_steps + 1, 100)):
        rate = ir * (1.5 - 0.5 * i / 9)  # Falls to the final IR at the last episode.
        logger.log({"intervention/rate": rate, "intervention/episode_rate": rate, "rollout/success": 1.0,
                    "intervention/recovery_steps": 3.0}, step=step)
    logger.close()
    if timeline:
        with open(os.path.join(rdir, "gate_timeline.jsonl"), "w") as f:
            for rec in timeline:
                f.write(json.dumps(rec) + "\n")
    return rdir


def _make_sweep(out, operator_for=None):
    for (task, method), per_seed in NUMBERS.items():
        for seed, (sr, ir) in zip(SEEDS, per_seed):
            timeline = None
            if method == UI and task == "pick-place" and seed == 0:
                timeline = [_timeline_record(5, 1000, 4, True), _timeline_record(9, 4000),
                            _timeline_record(7, 3000, 6, True), _timeline_record(8, 3500, 3, False)]
            op = OPERATOR
            if operator_for == (task, method, seed):
                op = dict(OPERATOR, max_takeovers=1)
            _make_run(out, task, method, seed, sr, ir, operator=op, timeline=timeline)


def _is_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    return head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


def test_aggregate_numbers_and_report(tmp_path):
    _make_sweep(tmp_path)
    res = render.report(str(tmp_path), TASKS, METHODS, SEEDS, baseline=BASE, max_env_steps=1000,
                        eval_period=500, eval_episodes=10, command="python benchmarks/compare.py --test")
    pt = res["per_task"]
    # By hand: pick-place base SR (0.8, 0.6), IR (0.6, 0.4); UI SR (0.9, 0.7), IR (0.2, 0.2).
    assert pt["pick-place"][BASE]["sr_mean"] == pytest.approx(0.7)
    assert pt["pick-place"][BASE]["sr_std"] == pytest.approx(np.sqrt(0.02))  # ddof=1
    assert pt["pick-place"][BASE]["ir_mean"] == pytest.approx(0.5)
    assert pt["pick-place"][UI]["sr_mean"] == pytest.approx(0.8)
    assert pt["pick-place"][UI]["ir_mean"] == pytest.approx(0.2)
    assert pt["pick-place"][UI]["ir_std"] == pytest.approx(0.0)
    assert pt["assembly"][BASE]["ir_mean"] == pytest.approx(0.6)
    assert pt["assembly"][UI]["ir_mean"] == pytest.approx(0.15)
    c = res["comparisons"]
    # (0.5 - 0.2) / 0.5 = 60 %, SR +10 points -> target met (but only 2 seeds).
    assert c["pick-place"][UI]["ir_reduction_pct"] == pytest.approx(60.0)
    assert c["pick-place"][UI]["sr_diff_points"] == pytest.approx(10.0)
    assert c["pick-place"][UI]["target_met"] is True
    assert c["pick-place"][UI]["enough_seeds"] is False
    # (0.6 - 0.15) / 0.6 = 75 %, SR 0.9 vs 1.0: -10 points -> not met.
    assert c["assembly"][UI]["ir_reduction_pct"] == pytest.approx(75.0)
    assert c["assembly"][UI]["sr_diff_points"] == pytest.approx(-10.0)
    assert c["assembly"][UI]["target_met"] is False
    # Average over both tasks: base SR 0.85 IR 0.55; UI SR 0.85 IR 0.175 -> 68.18 %, +0 points.
    assert res["average"][BASE]["ir_mean"] == pytest.approx(0.55)
    assert res["average"][UI]["ir_mean"] == pytest.approx(0.175)
    assert c["average"][UI]["ir_reduction_pct"] == pytest.approx(100 * 0.375 / 0.55)
    assert c["average"][UI]["sr_diff_points"] == pytest.approx(0.0, abs=1e-9)
    assert c["average"][UI]["target_met"] is True
    t = res["target"][UI]
    assert t["tasks_met"] == ["pick-place"] and t["tasks_met_with_seeds"] == [] and t["met"] is False
    assert res["budget_env_steps"] == {"pick-place": 1000, "assembly": 1000}
    assert res["fairness_issues"] == [] and res["budget_notes"] == []
    assert len(res["runs"]) == 8

    md = (tmp_path / "results.md").read_text()
    for s in ["0.70 ± 0.14", "0.500 ± 0.141", "0.80 ± 0.14", "0.200 ± 0.000", "0.150 ± 0.071",
              "+60.0%", "+10.0", "+75.0%", "-10.0", "+68.2%", "**average**", "0.85", "0.550", "0.175",
              "target met on 1 of 2 tasks", "not met", "-57% IR, +8.6% SR", "2 CPU cores, no GPU",
              "python benchmarks/compare.py --test", "pick-place 1,000", "action repeat 4",
              "10 deterministic episodes", "gate_triggers=6", "| assembly | hil_serl+uniintervene | 1 | 0.90 |",
              "timeline.png", "identical within each task"]:
        assert s in md, s
    assert "[2/" not in md  # Every asked seed is there.
    # Eval SR is sr / 2 at 500 env steps and sr at 1,000: SR >= 0.8 first at 1,000 where sr >= 0.8.
    to80 = {(r["task"], r["method"], r["seed"]): r["steps_to_sr80"] for r in res["runs"]}
    assert to80[("pick-place", BASE, 0)] == 1000 and to80[("pick-place", BASE, 1)] is None
    assert "| 1,000 [1/2] |" in md  # pick-place hil_serl: one of its two seeds got there
    assert json.loads((tmp_path / "results.json").read_text())["comparisons"]["assembly"][UI]["target_met"] is False
    assert _is_png(tmp_path / "curves.png") and _is_png(tmp_path / "timeline.png")
    assert [(e["episode"]) for e in res["timeline"]["episodes"]] == [7, 5, 8]


def test_missing_seeds_marked_and_fairness_checked(tmp_path):
    _make_sweep(tmp_path, operator_for=("assembly", UI, 1))
    res = render.report(str(tmp_path), TASKS, METHODS, [0, 1, 2], baseline=BASE)
    md = (tmp_path / "results.md").read_text()
    assert "[2/3]" in md and "Fewer seeds than asked" in md
    assert any("assembly: `operator` differs" in i for i in res["fairness_issues"])
    assert "not like for like" in md
    # Asked: the task defaults (configs/tasks.py); the runs' actor_config.json says 1,000: reported as used.
    assert res["budget_env_steps"] == {"pick-place": 1000, "assembly": 1000}
    from configs.tasks import TASK_OVERRIDES

    asked = TASK_OVERRIDES["assembly"]["max_env_steps"]
    assert f"assembly: runs used 1,000 env steps (this command's --max_env_steps gives {asked:,})" in md
    assert "runs used eval_period=500" in md and "every 500 env steps" in md


def test_report_without_timeline_or_runs(tmp_path):
    _make_run(tmp_path, "pick-place", BASE, 0, 0.5, 0.5)
    res = render.report(str(tmp_path), ["pick-place"], METHODS, [0], baseline=BASE)
    md = (tmp_path / "results.md").read_text()
    assert "no `gate_timeline.jsonl` episodes" in md
    assert not (tmp_path / "timeline.png").exists() and _is_png(tmp_path / "curves.png")
    assert res["comparisons"]["pick-place"][UI]["target_met"] is None
    empty = tmp_path / "empty"
    render.report(str(empty), TASKS, METHODS, SEEDS)
    assert "(no finished runs)" in (empty / "results.md").read_text()


def test_main_report_only_and_unknown_method(tmp_path):
    _make_sweep(tmp_path)
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(methods=METHODS, tasks=TASKS, seeds=["0", "1"], out=str(tmp_path), report_only=True,
                             machine="test box"):
        compare.main(["compare"])
    md = (tmp_path / "results.md").read_text()
    assert "Machine: test box" in md and "+60.0%" in md
    assert not (tmp_path / "command.txt").exists()  # --report_only launches nothing.
    with flagsaver.flagsaver(methods=[BASE, "hil_serl+nonsense"], out=str(tmp_path), report_only=True):
        with pytest.raises(app.UsageError, match=r"unknown method.*hil_serl\+nonsense.*known algorithms"):
            compare.main(["compare"])
    with pytest.raises(ValueError, match="unknown task"):
        launch.validate([BASE], ["pick-plate"], BASE)
    with pytest.raises(ValueError, match="baseline"):
        launch.validate([UI], ["pick-place"], BASE)


def test_build_run_command():
    from configs.tasks import TASK_OVERRIDES

    budget = launch.task_budget("assembly", 0)  # the task config's budget (the HiL-SERL row's)
    assert budget == TASK_OVERRIDES["assembly"]["max_env_steps"] == 50_000
    assert launch.task_budget("assembly", 30_000) == 30_000
    cmd = launch.build_run_command("/x/out", "assembly", UI, 2, budget, slot=3, eval_period=1000,
                                   eval_episodes=5, extra=["--config.learner.utd_ratio=4"])
    assert cmd[:3] == ["bash", "launchers/run_task.sh", f"assembly,{UI}"]
    for a in ["--config.seed=2", "--config.run_root=/x/out/runs", "--config.actor.eval_period=1000",
              "--config.actor.eval_episodes=5", "--config.logging.progress_bar=False",
              "--config.transport.port=5630", "--config.transport.broadcast_port=5631",
              "--config.actor.max_env_steps=50000"]:
        assert a in cmd, a
    assert cmd[-1] == "--config.learner.utd_ratio=4"
    # The run folder is serl_ext.loop.common.run_dir_for's default name under run_root.
    assert launch.run_dir("/x/out", "assembly", UI, 2) == os.path.join("/x/out/runs", "assembly", UI, "seed2")


def test_launch_runs_skips_finished_and_uses_distinct_ports(tmp_path, monkeypatch):
    _make_run(tmp_path, "pick-place", BASE, 0, 0.5, 0.5)  # Finished: skipped.
    stale = launch.run_dir(str(tmp_path), "pick-place", UI, 0)
    os.makedirs(stale)
    open(os.path.join(stale, "junk.txt"), "w").close()  # Unfinished: removed and rerun.
    calls = []

    def fake_run(cmd, cwd, stdout, stderr, env):
        assert env["JAX_PLATFORMS"] == "cpu" and cwd == launch.REPO
        task, method = cmd[2].split(",")
        seed = int(next(a for a in cmd if a.startswith("--config.seed=")).split("=")[1])
        port = int(next(a for a in cmd if a.startswith("--config.transport.port=")).split("=")[1])
        rdir = launch.run_dir(str(tmp_path), task, method, seed)
        assert not os.path.exists(os.path.join(rdir, "junk.txt"))
        calls.append((task, method, seed, port))
        _make_run(tmp_path, task, method, seed, 0.5, 0.3)
        return type("P", (), {"returncode": 0})()

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    counts = launch.launch_runs(str(tmp_path), ["pick-place"], METHODS, [0, 1], 0, parallel=2)
    assert counts == {"done_before": 1, "ok": 3, "failed": 0, "deferred": 0}
    assert sorted(c[:3] for c in calls) == [("pick-place", BASE, 1), ("pick-place", UI, 0), ("pick-place", UI, 1)]
    assert {c[3] for c in calls} <= {5600, 5610}
    assert os.path.exists(launch.log_path(str(tmp_path), "pick-place", UI, 1))


def test_stop_by_defers_the_runs_that_would_not_finish_and_leaves_their_folders(tmp_path, monkeypatch):
    import time

    # Finished: pick-place hil_serl 120 s, hil_serl+uniintervene 400 s (its own estimate wins over
    # the task's); assembly has no finished run (no estimate: starts while time is left).
    _make_run(tmp_path, "pick-place", BASE, 0, 0.5, 0.5)
    slow = _make_run(tmp_path, "pick-place", UI, 0, 0.5, 0.5)
    with open(os.path.join(slow, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(slow, "summary.json"), "w") as f:
        json.dump(dict(summary, wall_clock_s=400.0), f)
    assert launch.expected_run_s(str(tmp_path), "pick-place", UI) == 400.0
    assert launch.expected_run_s(str(tmp_path), "pick-place", "other") == 400.0  # the task's longest
    assert launch.expected_run_s(str(tmp_path), "assembly", BASE) is None
    interrupted = launch.run_dir(str(tmp_path), "pick-place", UI, 1)
    os.makedirs(interrupted)
    open(os.path.join(interrupted, "partial.txt"), "w").close()
    started = []

    def fake_run(cmd, cwd, stdout, stderr, env):
        task, method = cmd[2].split(",")
        seed = int(next(a for a in cmd if a.startswith("--config.seed=")).split("=")[1])
        started.append((task, method, seed))
        _make_run(tmp_path, task, method, seed, 0.5, 0.3)
        return type("P", (), {"returncode": 0})()

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    counts = launch.launch_runs(str(tmp_path), ["pick-place", "assembly"], METHODS, [1], 0,
                                stop_by=time.time() + 300)  # 5 min: fits 120 s, not 400 s
    assert started == [("pick-place", BASE, 1), ("assembly", BASE, 1), ("assembly", UI, 1)]
    assert counts == {"done_before": 0, "ok": 3, "failed": 0, "deferred": 1}
    assert os.path.exists(os.path.join(interrupted, "partial.txt"))  # left for the next invocation
    started.clear()
    counts = launch.launch_runs(str(tmp_path), ["pick-place"], METHODS, [1], 0, stop_by=time.time() - 1)
    assert started == [] and counts["deferred"] == 1 and counts["done_before"] == 1  # past: nothing starts
    counts = launch.launch_runs(str(tmp_path), ["pick-place"], METHODS, [1], 0)  # no deadline
    assert started == [("pick-place", UI, 1)] and counts["ok"] == 1
    assert not os.path.exists(os.path.join(interrupted, "partial.txt"))  # restarted from scratch


def test_parse_stop_by():
    import datetime

    utc = datetime.timezone.utc
    assert launch.parse_stop_by("") is None and launch.parse_stop_by("  ") is None
    assert launch.parse_stop_by("2026-12-02T21:30") == datetime.datetime(2026, 12, 2, 21, 30, tzinfo=utc).timestamp()
    assert launch.parse_stop_by("2026-12-02T22:30+01:00") == launch.parse_stop_by("2026-12-02T21:30")
    for bad in ("21:30 tomorrow", "soon", "2026-13-02T21:30"):
        with pytest.raises(ValueError, match="ISO 8601"):
            launch.parse_stop_by(bad)
    with flagsaver.flagsaver(stop_by="nonsense", report_only=True):
        with pytest.raises(app.UsageError, match="ISO 8601"):
            compare.main(["compare.py"])


def test_method_flags_reach_only_their_method_with_task_and_seed_filled(tmp_path, monkeypatch):
    flags = launch.parse_method_flags([f"{UI}=--config.uniintervene.init_from=/off/{{task}}",
                                       f"{UI}=--config.uniintervene.tag=s{{seed}}"], METHODS)
    assert flags == {UI: ["--config.uniintervene.init_from=/off/{task}", "--config.uniintervene.tag=s{seed}"]}
    assert launch.method_run_flags(flags, "assembly", UI, 2) == [
        "--config.uniintervene.init_from=/off/assembly", "--config.uniintervene.tag=s2"]
    assert launch.method_run_flags(flags, "assembly", BASE, 2) == []
    for bad, match in ((["nonsense"], "METHOD="), ([f"{UI}=x"], "METHOD="),
                       (["rlpd=--config.x=1"], "not among"),
                       ([f"{UI}=--config.actor.max_env_steps=5"], "identical"),
                       ([f"{UI}=--config.operator.enabled=False"], "identical")):
        with pytest.raises(ValueError, match=match):
            launch.parse_method_flags(bad, METHODS)
    seen, finished = {}, []

    def fake_run(cmd, cwd, stdout, stderr, env):
        task, method = cmd[2].split(",")
        seed = int(next(a for a in cmd if a.startswith("--config.seed=")).split("=")[1])
        seen[(method, seed)] = [a for a in cmd if a.startswith("--config.uniintervene")]
        _make_run(tmp_path, task, method, seed, 0.5, 0.3)
        return type("P", (), {"returncode": 0})()

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    launch.launch_runs(str(tmp_path), ["pick-place"], METHODS, [1], 0, method_flags=flags,
                       on_finish=lambda *a: finished.append(a))
    assert seen == {(BASE, 1): [], (UI, 1): ["--config.uniintervene.init_from=/off/pick-place",
                                             "--config.uniintervene.tag=s1"]}
    assert sorted(finished) == sorted([("pick-place", BASE, 1, True), ("pick-place", UI, 1, True)])


def test_plots_on_plain_dicts(tmp_path):
    band = compare_plots.mean_band([[(0, 0.0), (10, 1.0)], [(0, 0.5), (10, 0.5)]])
    assert band["mean"].tolist() == [0.25, 0.75] and band["lo"].tolist() == [0.0, 0.5]
    band = compare_plots.mean_band([[(0, 0.0), (10, 1.0)], [(0, 1.0), (5, 1.0)]], num_points=3)
    assert band["mean"].tolist() == [0.5, 0.75, 1.0] and band["n"].tolist() == [2, 2, 1]
    recs = [_timeline_record(1, 100), _timeline_record(2, 200, 3, False), _timeline_record(3, 50, 2, True)]
    assert [r["episode"] for r in compare_plots.select_timeline_episodes(recs, k=2)] == [3, 2]
    r, squashed = compare_plots.risk_for_plot([None, -2.0, 3.0])
    assert squashed and np.isnan(r[0]) and 0 < r[1] < 0.5 < r[2] < 1
    p = compare_plots.plot_timeline(str(tmp_path / "t.png"), recs, method=UI)
    q = compare_plots.plot_curves(str(tmp_path / "c.png"), {"a": {BASE: {"eval": [[(0, 0.1), (5, 0.4)]], "ir": []}}},
                                  ["a", "b"], METHODS)
    assert _is_png(p) and _is_png(q)


def test_episode_metrics_by_hand():
    # 4 episodes of a 100-step run; the last quarter is env steps > 75: episodes ending at 80, 100.
    rows = [
        {"step": 30, "rollout/length": 30.0, "rollout/success": 1.0, "intervention/steps": 10.0,
         "intervention/segments": 2.0},
        {"step": 60, "rollout/length": 30.0, "rollout/success": 1.0, "intervention/steps": 0.0,
         "intervention/segments": 0.0},
        {"step": 80, "rollout/length": 20.0, "rollout/success": 0.0, "intervention/steps": 0.0,
         "intervention/segments": 0.0},
        {"step": 100, "rollout/length": 20.0, "rollout/success": 1.0, "intervention/steps": 5.0,
         "intervention/segments": 1.0},
        {"step": 100, "eval/success_rate": 0.5},  # an eval row: ignored
    ]
    m = load.episode_metrics(rows, 100)
    assert m["auto_sr"] == pytest.approx(1 / 4)  # only the 2nd: success with no human step
    assert m["ir_last"] == pytest.approx(5 / 40)
    assert m["ir_first"] == pytest.approx(10 / 30)  # no episode ends by step 25: the first one
    assert load.episode_metrics(rows, 240)["ir_first"] == pytest.approx(10 / 60)  # ends by 60: two
    assert m["auto_sr_last"] == pytest.approx(0.0)
    assert m["steps_per_takeover"] == pytest.approx(15 / 3)  # 15 human steps in 3 takeovers
    assert m["auto_length"] == pytest.approx(30.0)  # the one autonomous success
    assert load.episode_metrics(rows[1:3], 100)["steps_per_takeover"] is None  # no takeover
    assert load.episode_metrics([], 100) == {"auto_sr": None, "ir_first": None, "ir_last": None,
                                                "auto_sr_last": None, "steps_per_takeover": None,
                                                "auto_length": None}


def test_system_sr_from_summaries_and_system_eval_file(tmp_path):
    """system SR: summary.json's eval_system_success_rate, else benchmarks/system_eval.py's file;
    a method without a gate reports its own SR."""
    _make_sweep(tmp_path)
    path = os.path.join(launch.run_dir(str(tmp_path), "pick-place", UI, 0), "summary.json")
    summary = json.load(open(path))
    json.dump(dict(summary, eval_system_success_rate=0.95), open(path, "w"))
    rows = [{"task": "pick-place", "algorithm": UI, "seed": 0, "system_success_rate": 0.0},  # summary wins
            {"task": "pick-place", "algorithm": UI, "seed": 1, "system_success_rate": 0.85},
            {"task": "assembly", "algorithm": UI, "seed": 0, "system_success_rate": 1.0},
            {"task": "assembly", "algorithm": UI, "seed": 1, "system_success_rate": 0.6}]
    json.dump({"runs": rows}, open(tmp_path / "system_eval.json", "w"))
    render.report(str(tmp_path), TASKS, METHODS, SEEDS, baseline=BASE)
    md = (tmp_path / "results.md").read_text().splitlines()
    header = next(line for line in md if "system SR (policy + gate, no human)" in line)
    col = [c.strip() for c in header.split("|")].index("system SR (policy + gate, no human)")
    table = md[md.index(header) + 2:]
    cell = {}
    for line in table:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.split("|")]
        cell[(cells[1], cells[2])] = cells[col]
    assert cell[("pick-place", UI)] == "0.90"   # (0.95 + 0.85) / 2
    assert cell[("assembly", UI)] == "0.80"     # (1.0 + 0.6) / 2
    assert cell[("pick-place", BASE)] == "0.70"  # no gate: its SR (0.8, 0.6)
    assert cell[("assembly", BASE)] == "1.00"


def test_timeline_prefers_stagnation_then_trigger_then_recovery_and_one_episode_per_task():
    def rec(episode, env_steps, task, trigger_at, success):
        r = _timeline_record(episode, env_steps, trigger_at, True)
        r["source"][trigger_at] = 1  # the gate's own step: recovery from the trigger step on
        return dict(r, task=task, success=success)

    at_start = rec(1, 900, "pick-place", 0, True)      # fires at step 0: no policy step before it
    after_policy = rec(2, 100, "pick-place", 5, True)  # policy 0..4, trigger at 5, recovery
    failed = rec(3, 800, "pick-place", 5, False)
    other_task = rec(4, 50, "assembly", 6, True)
    assert compare_plots.episode_has_policy_then_trigger(after_policy)
    assert not compare_plots.episode_has_policy_then_trigger(at_start)
    assert compare_plots.episode_has_recovery_after_trigger(at_start)
    got = compare_plots.select_timeline_episodes([at_start, after_policy, failed, other_task], k=2)
    assert [r["episode"] for r in got] == [2, 4]  # the best of each task, not two of one task
    got = compare_plots.select_timeline_episodes([at_start, after_policy, failed, other_task], k=4)
    assert [r["episode"] for r in got] == [2, 4, 3, 1]


def test_takeover_origins_and_shares_by_hand():
    import takeover_context as tc

    P, R, H = 0, 1, 2
    # human at 1 (at start); policy 3..9 then human 10..11 (after policy); recovery 12..19 then human 20.
    source = [P, H, P] + [P] * 7 + [H, H] + [R] * 8 + [H]
    assert tc.takeover_origins(source) == [(1, "at start"), (10, "policy"), (20, "recovery")]
    # a tie between policy and recovery counts as policy (recovery must outnumber)
    assert tc.takeover_origins([R] * 4 + [P] * 4 + [H]) == [(8, "policy")]
    s = tc.summarize([{"source": source, "success": True}, {"source": [R] * 5, "success": False}])
    n = len(source) + 5
    assert s["episodes"] == 2 and s["steps"] == n
    assert s["human_share"] == pytest.approx(4 / n) and s["recovery_share"] == pytest.approx(13 / n)
    assert s["policy_share"] == pytest.approx(9 / n)
    assert (s["after_recovery"], s["after_policy"], s["at_start"]) == (1, 1, 1)
    assert s["takeovers_per_episode"] == 1.5 and s["median_takeover_step"] == 10.0 and s["success_rate"] == 0.5


def _add_selectivity(out, method, seed, summary_extra, episodes, old_rows=False):
    """Adds selectivity keys to a ``_make_run`` folder: ``summary_extra`` to summary.json and one
    episode row per ``(step, length, policy, recovery, human)`` to metrics/actor.jsonl (rows of
    the old format, without ``selectivity/``, when ``old_rows``)."""
    rdir = launch.run_dir(str(out), "pick-place", method, seed)
    path = os.path.join(rdir, "summary.json")
    summary = json.load(open(path))
    json.dump(dict(summary, **summary_extra), open(path, "w"))
    logger = MetricLogger(rdir, "actor", tensorboard=False)
    for step, length, policy, recovery, human in episodes:
        row = {"rollout/length": length, "intervention/steps": human, "intervention/recovery_steps": recovery}
        if not old_rows:
            row.update({"selectivity/policy_steps": policy, "selectivity/recovery_steps": recovery,
                        "selectivity/human_steps": human})
        logger.log(row, step=step)
    logger.close()


def test_selectivity_table_by_hand_with_old_runs_as_dashes(tmp_path):
    for method, seed in [(BASE, 0), (BASE, 1), (UI, 0), (UI, 1)]:
        _make_run(tmp_path, "pick-place", method, seed, 0.5, 0.3)
    # UI seed 0, new format; the last quarter (env steps > 75) holds the episodes ending at 80 and 100.
    _add_selectivity(tmp_path, UI, 0, {"gate_trigger_rate": 0.2, "trigger_onset_precision": 0.5,
                                       "trigger_onset_recall": 0.25, "gate_aborted_chunks": 3,
                                       "recovery_runs_ended_by_human": 4, "gate_recovery_value_gain_mean": 0.1,
                                       "selectivity_window": 10, "env_steps": 100,
                                       "takeovers_noticed_during_recovery": 0.75},
                     [(40, 40, 10, 20, 10), (80, 40, 20, 10, 10), (100, 20, 10, 10, 0)])
    # UI seed 1, a run from before these keys: trigger rate from gate_triggers / gate_decisions,
    # steps by source from intervention/steps and intervention/recovery_steps.
    _add_selectivity(tmp_path, UI, 1, {"gate_triggers": 6, "gate_decisions": 12, "gate_aborted_chunks": 5,
                                       "env_steps": 100},
                     [(50, 50, 10, 30, 10), (100, 50, 10, 40, 0)], old_rows=True)
    # Plain HiL-SERL: seed 0 new format (no recovery: precision None, recall 0), seed 1 nothing new.
    _add_selectivity(tmp_path, BASE, 0, {"trigger_onset_precision": None, "trigger_onset_recall": 0.0,
                                         "recovery_runs_ended_by_human": 0, "selectivity_window": 10,
                                         "env_steps": 100},
                     [(50, 50, 30, 0, 20), (100, 50, 40, 0, 10)])

    run = load.load_run(launch.run_dir(str(tmp_path), "pick-place", UI, 0))
    assert (run["policy_frac"], run["recovery_frac"], run["human_frac"]) == pytest.approx((0.4, 0.4, 0.2))
    assert (run["policy_frac_last"], run["recovery_frac_last"], run["human_frac_last"]) == pytest.approx(
        (30 / 60, 20 / 60, 10 / 60))
    old = load.load_run(launch.run_dir(str(tmp_path), "pick-place", BASE, 1))
    assert all(old[k] is None for k in load.SELECTIVITY_KEYS)  # no episode rows, no new keys

    res = render.report(str(tmp_path), ["pick-place"], METHODS, SEEDS, baseline=BASE)
    ui, base = (res["selectivity"]["per_task"]["pick-place"][m] for m in (UI, BASE))
    assert ui["trigger_rate"] == pytest.approx((0.2 + 6 / 12) / 2)
    assert (ui["onset_precision"], ui["onset_recall"]) == pytest.approx((0.5, 0.25))  # seed 0 only
    assert (ui["policy_frac"], ui["recovery_frac"], ui["human_frac"]) == pytest.approx(
        ((0.4 + 0.2) / 2, (0.4 + 0.7) / 2, (0.2 + 0.1) / 2))
    assert (ui["policy_frac_last"], ui["recovery_frac_last"], ui["human_frac_last"]) == pytest.approx(
        ((0.5 + 0.2) / 2, (1 / 3 + 0.8) / 2, (1 / 6 + 0.0) / 2))
    assert ui["aborted_chunks"] == pytest.approx(4.0) and ui["value_gain"] == pytest.approx(0.1)
    assert base["trigger_rate"] is None and base["onset_precision"] is None and base["onset_recall"] == 0.0
    assert res["selectivity"]["windows"] == [10]
    md = (tmp_path / "results.md").read_text()
    assert "N = 10 env steps" in md
    assert "| pick-place | hil_serl+uniintervene | 2 | 0.350 | 0.50 | 0.25 | 0.30 / 0.55 / 0.15 | " \
           "0.35 / 0.57 / 0.08 | 4.0 | 4.0 | 0.100 | 0.75 |" in md  # seed 1 predates the causes
    assert "| pick-place | hil_serl | 2 | - | - | 0.00 | 0.70 / 0.00 / 0.30 | 0.80 / 0.00 / 0.20 | - | 0.0 | - | - |" in md


def test_recorded_command_drops_the_session_deadline():
    args = ["--methods=a,b", "--stop_by=2026-12-03T07:59:39+00:00", "--method_flags=a=--x={task} y", "--commit"]
    assert compare.recorded_command(args) == compare.recorded_command(["--methods=a,b", "--stop_by", "2030-01-01",
                                                                       "--method_flags=a=--x={task} y", "--commit"])
    assert compare.recorded_command(args) == ("python benchmarks/compare.py --methods=a,b "
                                              "'--method_flags=a=--x={task} y' --commit")


def test_resumed_sweep_collects_demos_only_for_tasks_with_runs_left(tmp_path, monkeypatch):
    _make_sweep(tmp_path)  # every (task, method, seed) of TASKS x METHODS x SEEDS is finished
    assert launch.pending_tasks(str(tmp_path), TASKS, METHODS, SEEDS) == []
    os.remove(os.path.join(launch.run_dir(str(tmp_path), TASKS[-1], METHODS[0], SEEDS[-1]), "summary.json"))
    assert launch.pending_tasks(str(tmp_path), TASKS, METHODS, SEEDS) == [TASKS[-1]]
    assert launch.pending_tasks(str(tmp_path), TASKS, METHODS, [*SEEDS, 7]) == TASKS  # seed 7 never ran
    collected, launched = [], []
    monkeypatch.setattr(compare, "collect_demos", lambda out, tasks, n: collected.append(list(tasks)))
    monkeypatch.setattr(compare, "launch_runs", lambda *a, **k: launched.append(a[1]))
    (tmp_path / "command.txt").write_text("the first command\n")
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(methods=METHODS, tasks=TASKS, seeds=[str(s) for s in SEEDS], out=str(tmp_path),
                             report_only=False, commit=False, machine="test box"):
        compare.main(["compare"])
        assert collected == [[TASKS[-1]]] and (tmp_path / "command.txt").read_text() != "the first command\n"
        _make_run(tmp_path, TASKS[-1], METHODS[0], SEEDS[-1], 0.5, 0.5)  # now all finished
        (tmp_path / "command.txt").write_text("the first command\n")
        compare.main(["compare"])
    assert collected[-1] == [] and (tmp_path / "command.txt").read_text() == "the first command\n"
    assert "Machine: test box" in (tmp_path / "results.md").read_text()


def test_deadline_helpers():
    from benchmarks.comparison.launch import deadline_from_flags, defer_reason, without_schedule_flags

    assert deadline_from_flags("", 0.0) is None
    assert deadline_from_flags("", 10.0, now=1000.0) == 1600.0
    assert deadline_from_flags("2026-12-03T20:00", 0.0) == deadline_from_flags("2026-12-03T20:00+00:00", 0.0)
    for bad in (("2026-12-03T20:00", 5.0), ("", -1.0), ("tonight", 0.0)):
        with pytest.raises(ValueError):
            deadline_from_flags(*bad)
    assert defer_reason(None, 1e9) is None
    assert defer_reason(2000.0, None, now=1000.0) is None  # unknown length: it may start
    assert defer_reason(2000.0, 900.0, now=1000.0) is None
    assert defer_reason(2000.0, 1200.0, now=1000.0) == "expected 20 min, 17 min left before the deadline"
    assert defer_reason(2000.0, None, now=2001.0).startswith("expected ? min, 0 min left")
    assert without_schedule_flags(["--a=1", "--stop_by", "2026-12-03T20:00", "--stop_after_min=5", "--b",
                                   "-unknown_run_min", "30"]) == ["--a=1", "--b"]
