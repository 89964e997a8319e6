"""benchmarks/fidelity.py: the report on synthetic run folders, against values computed by hand,
and the hil_serl.py commands of the variants."""

import json
import os

import pytest

from benchmarks import fidelity

# Eval SR at 5k, 10k, ..., 40k env steps (wall clock = env steps / 100 s).
PRESET_SR = {0: [0, 0, .2, .5, .7, .9, 1, 1], 1: [0, 0, 0, .4, .6, .8, .9, .9], 2: [0, .1, .3, .6, .85, .7, .9, 1]}
TANH_SR = {0: [0, 0, 0, .1, .2, .3, .5, .6], 1: [0, 0, 0, 0, 0, .2, .4, .85], 2: [0, 0, 0, .2, .3, .5, .6, .7]}
# 40 training episodes of 1000 env steps: operator steps in each of the first 30, of the last 10.
PRESET_HUMAN = {0: (500, 100), 1: (400, 100), 2: (600, 200)}
TANH_HUMAN = {0: (600, 300), 1: (700, 300), 2: (650, 250)}


def write_run(out, folder, seed, srs, human, eval_episodes=20, extra_after_budget=False):
    run = os.path.join(out, folder, "runs", "pick-place", "hil_serl", f"seed{seed}")
    os.makedirs(os.path.join(run, "metrics"))
    hist = [{"env_steps": 5000 * (i + 1), "success_rate": sr, "wall_clock_s": 50.0 * (i + 1), "learner_step": 0,
             "return": sr} for i, sr in enumerate(srs)]
    rows = [{"step": 1000 * (i + 1), "rollout/length": 1000, "rollout/success": 1.0,
             "intervention/steps": human[0] if i < 30 else human[1], "intervention/segments": 1}
            for i in range(40)]
    if extra_after_budget:  # past the 40k budget: must not count
        hist.append({"env_steps": 45000, "success_rate": 0.0, "wall_clock_s": 450.0, "learner_step": 0, "return": 0})
        rows.append({"step": 41000, "rollout/length": 1000, "rollout/success": 0.0, "intervention/steps": 1000})
    rows.insert(3, {"step": 3000, "eval/success_rate": 0.0})  # not an episode row
    summary = {"seed": seed, "env_steps": 40000, "eval_history": hist, "eval_episodes": eval_episodes,
               "eval_success_rate": srs[-1], "intervention_rate": 0.0}
    with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump(summary, f)
    with open(os.path.join(run, "actor_config.json"), "w") as f:
        json.dump({"actor": {"eval_episodes": eval_episodes}}, f)
    with open(os.path.join(run, "metrics", "actor.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.fixture
def out(tmp_path):
    for seed in (0, 1, 2):
        write_run(str(tmp_path), "preset_relu", seed, PRESET_SR[seed], PRESET_HUMAN[seed],
                  eval_episodes=10 if seed == 0 else 20, extra_after_budget=seed == 0)
        write_run(str(tmp_path), "tanh", seed, TANH_SR[seed], TANH_HUMAN[seed])
    return str(tmp_path)


def test_run_metrics_by_hand(out):
    (r0, r1, r2) = fidelity.load_variant(out, "preset", [0, 1, 2])
    assert (r0["sr_20k"], r0["sr_30k"], r0["sr_40k"]) == (.5, .9, 1.0)  # not the 0.0 at 45k
    assert r0["env_steps_to_target"] == 30000 and r0["minutes_to_target"] == pytest.approx(5.0)
    assert r1["env_steps_to_target"] == 30000  # 0.8 counts as reached
    assert r2["env_steps_to_target"] == 25000 and r2["minutes_to_target"] == pytest.approx(250 / 60)
    # IR = (30 * h1 + 10 * h2) / 40000; last quarter = the episodes ending in (30k, 40k]: h2 / 1000
    assert r0["ir"] == pytest.approx(16000 / 40000) and r0["ir_last_quarter"] == pytest.approx(0.1)
    assert r2["ir"] == pytest.approx(20000 / 40000) and r2["ir_last_quarter"] == pytest.approx(0.2)
    assert (r0["eval_episodes"], r1["eval_episodes"]) == (10, 20)
    assert fidelity.load_variant(out, "no_td_clip", [0, 1, 2]) == []  # not run yet


def test_summary_rows_by_hand(out):
    result = fidelity.build_result(out, ["preset", "tanh"], [0, 1, 2])
    p, t = result["per_variant"]["preset"], result["per_variant"]["tanh"]
    assert p["n"] == t["n"] == 3 and p["seeds"] == [0, 1, 2]
    assert p["sr_20k_median"] == pytest.approx(.5) and p["sr_20k_mean"] == pytest.approx(.5)
    assert p["sr_30k_median"] == pytest.approx(.8) and p["sr_30k_mean"] == pytest.approx(.8)
    assert p["sr_40k_median"] == pytest.approx(1.0) and p["sr_40k_mean"] == pytest.approx(2.9 / 3)
    assert p["env_steps_to_target_median"] == 30000 and p["env_steps_to_target_mean"] == pytest.approx(85000 / 3)
    assert p["minutes_to_target_median"] == pytest.approx(5.0)
    assert p["ir_median"] == pytest.approx(.4) and p["ir_mean"] == pytest.approx((.4 + .325 + .5) / 3)
    assert p["ir_last_quarter_median"] == pytest.approx(.1)
    assert p["reached"] == 3
    # tanh: two of three seeds never reach 0.8 -> the median is "never"; the mean is the one that did
    assert t["sr_20k_median"] == pytest.approx(.1) and t["sr_40k_median"] == pytest.approx(.7)
    assert t["env_steps_to_target_median"] is None and t["env_steps_to_target_mean"] == 40000
    assert t["reached"] == 1
    assert t["ir_median"] == pytest.approx(.55) and t["ir_mean"] == pytest.approx((.525 + .6 + .55) / 3)
    # separations: SR 40k .6-.85 vs .9-1 (lower); steps: never/40k vs <= 30k (higher); IR .525-.6 vs .325-.5
    assert t["differs"] == {"sr_40k": "lower", "env_steps_to_target": "higher", "ir": "higher"}
    assert p["differs"] == {"sr_40k": "overlap", "env_steps_to_target": "overlap", "ir": "overlap"}
    assert t["min_p"] == pytest.approx(0.1)
    assert [r["variant"] for r in result["runs"]] == ["preset"] * 3 + ["tanh"] * 3


def test_statistics_helpers():
    assert fidelity.separated([1, 2, 3], [3, 4, 5], False) == "overlap"  # a tie overlaps
    assert fidelity.separated([1, 2], [2.5, None], False) == "lower"
    assert fidelity.separated([None, None], [1], False) is None
    assert fidelity.separated([None], [10], True) == "higher"  # never > any step count
    assert fidelity.median_to_target([None, 1, 2]) == 2 and fidelity.median_to_target([None, None, 1]) is None
    assert fidelity.median_to_target([]) is None
    assert fidelity.mann_whitney_min_p(3, 3) == pytest.approx(0.1)
    assert fidelity.mann_whitney_min_p(1, 1) == 1.0 and fidelity.mann_whitney_min_p(0, 3) is None


def test_report_files_and_table(out):
    fidelity.main(["--report_only", f"--out={out}", "--variants=tanh"])
    for name in ("results.md", "results.json", "curves.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    md = open(os.path.join(out, "results.md")).read()
    assert "| preset | 3 | 0.50 / 0.50 | 0.80 / 0.80 | 1.00 / 0.97 | 30000 / 28333 (3/3) | 5.0 / 4.7 |" in md
    assert "| tanh | 3 | 0.10 / 0.10 |" in md and "- / 40000 (1/3)" in md
    assert "SR 40k: **yes**, lower (worse); steps to 0.8: **yes**, higher (worse); IR: **yes**, higher (worse)" in md
    assert "(p = 0.10)" in md and "| preset | 0 | 10 |" in md
    data = json.load(open(os.path.join(out, "results.json")))
    assert list(data["per_variant"]) == ["preset", "tanh"] and data["command"].endswith("--variants=tanh")
    fidelity.main(["--report_only", f"--out={out}", "--variants=tanh", "--seeds=0,1"])  # 2 vs 2: p = 1/3
    assert "too few seeds to test (2 vs 2)" in open(os.path.join(out, "results.md")).read()


def test_variant_commands():
    cmd = fidelity.hil_serl_command("OUT", "upstream_values", [1], commit=True)
    assert cmd[1:] == ["benchmarks/hil_serl.py", "--out=OUT/tanh_ts100", "--tasks=pick-place", "--seeds=1",
                       "--budgets=pick-place:40000", "--eval_episodes=20", "--eval_period=5000", "--commit", "--",
                       "--config.agent.activation=tanh", "--config.learner.training_starts=100"]
    assert fidelity.hil_serl_command("OUT", "preset", [0, 1, 2], commit=False)[-1] == "--eval_period=5000"
    assert fidelity.VARIANTS["preset"][0] == "preset_relu"
    assert fidelity.VARIANTS["no_td_clip"][1] == ["--config.agent.critic_target_clip=()"]
    with pytest.raises(SystemExit):
        fidelity.parse_args(["--variants=relu"])
