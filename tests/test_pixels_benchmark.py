"""benchmarks/pixels.py (issue 17 item 5): the report on hand-made run folders against
hand-computed numbers, the dry-run commands, and the reward-classifier launcher's --image_key."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import pixels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = "hil_serl_cameras"


def _write_run(out, variant, task, seed, history, episodes, updates_per_s, env_steps=1500, preset=PRESET,
               **summary_extra):
    """A finished run folder: ``history`` = [(env_steps, SR, wall_clock_s)], ``episodes`` =
    [(end step, length, true success, return)]."""
    d = pixels.run_dir(out, variant, task, preset, seed)
    os.makedirs(os.path.join(d, "metrics"))
    json.dump({"seed": seed, "env_steps": env_steps, "wall_clock_s": history[-1][2] + 10.0,
               "eval_history": [{"env_steps": s, "success_rate": sr, "wall_clock_s": w, "learner_step": s}
                                for s, sr, w in history], **summary_extra}, open(os.path.join(d, "summary.json"), "w"))
    json.dump({"updates_per_s": updates_per_s, "learner_steps": env_steps - 100},
              open(os.path.join(d, "learner_summary.json"), "w"))
    with open(os.path.join(d, "metrics", "actor.jsonl"), "w") as f:
        for step, length, success, ret in episodes:
            f.write(json.dumps({"step": step, "rollout/length": float(length), "rollout/success": float(success),
                                "rollout/return": float(ret), "intervention/steps": 0.0}) + "\n")
        f.write(json.dumps({"step": env_steps, "eval/success_rate": 0.5}) + "\n")  # not an episode
        f.write('{"step": 99, "rollout/len')  # torn last line


def _args(out, *more):
    args, extra = pixels.parse_args([f"--out={out}", "--tasks=pick-place", "--seeds=0,1,2",
                                     "--budgets=pick-place:1500", *more])
    return args, extra


def test_replay_bytes_hand_values():
    # Two 64 px cameras + 4-D state: 2 * 64 * 64 * 3 + 16 = 24,592 bytes (docs: "a quarter").
    m = pixels.replay_bytes([(64, 64, 3), (64, 64, 3)], 4, 100.0)
    assert m["frame_set_bytes"] == 24_592
    assert m["transition_bytes"] == pytest.approx(24_592 * 1.01 + 47)
    assert m["per_frame_set"] == pytest.approx((24_592 * 1.01 + 47) / 24_592)
    # 128 px x 2: the docs' 98,320 bytes.
    assert pixels.replay_bytes([(128, 128, 3)] * 2, 4, None) == {
        "frame_set_bytes": 98_320, "transition_bytes": None, "per_frame_set": None, "feature_bytes_per_frame": 0}
    # Cached ResNet-10 maps at 64 px: 2 cameras x 2 x 2 x 512 float32 + the 8-byte frame number.
    c = pixels.replay_bytes([(64, 64, 3)] * 2, 4, 100.0, feature_bytes_per_frame=2 * 2 * 2 * 512 * 4 + 8)
    assert c["transition_bytes"] == pytest.approx((24_592 + 16_392) * 1.01 + 47)


def test_report_on_synthetic_runs(tmp_path):
    out = str(tmp_path)
    # frozen: seeds reach 0.8 at 1000 / 500 / never.
    _write_run(out, "frozen", "pick-place", 0, [(500, 0.2, 60.0), (1000, 0.8, 120.0), (1500, 0.9, 180.0)],
               [(100, 100, 1, 1), (200, 100, 0, 0)], 2.0)
    _write_run(out, "frozen", "pick-place", 1, [(500, 0.8, 30.0), (1000, 0.6, 90.0), (1500, 1.0, 150.0)],
               [(100, 100, 0, 0)], 4.0)
    _write_run(out, "frozen", "pick-place", 2, [(500, 0.0, 30.0), (1000, 0.1, 60.0), (1500, 0.3, 90.0)],
               [(50, 50, 0, 0)], 3.0)
    # scratch: one seed only, never reaches 0.8.
    _write_run(out, "scratch", "pick-place", 0, [(500, 0.0, 40.0), (1000, 0.5, 80.0)],
               [(125, 125, 0, 0)], 5.0, env_steps=1000)
    # classifier run: 4 episodes, classifier (return > 0) vs true success: TT, TF, FT, FF.
    _write_run(out, "classifier_reward", "pick-place", 0, [(500, 0.1, 50.0), (1000, 0.85, 100.0)],
               [(50, 50, 1, 1), (100, 50, 0, 1), (150, 50, 1, 0), (200, 50, 0, 0)], 1.5, env_steps=1000)
    args, _ = _args(out)
    result = pixels.report(args, out)
    per = result["per_task"]["pick-place"]

    f = per["frozen"]
    assert f["n"] == 3 and f["seeds"] == [0, 1, 2]
    assert f["sr_at"]["500"] == {"median": 0.2, "mean": pytest.approx(1.0 / 3)}
    assert f["sr_at"]["1500"]["median"] == 0.9 and f["sr_at"]["1500"]["mean"] == pytest.approx(2.2 / 3)
    # steps to 0.8: 1000, 500, never -> median over (500, 1000, inf) = 1000; mean over the two = 750.
    assert f["env_steps_to_target_median"] == 1000 and f["env_steps_to_target_mean"] == 750
    assert f["reached"] == 2
    assert f["minutes_to_target_median"] == pytest.approx(2.0)  # 120 s (30 s, 120 s, inf)
    assert f["minutes_to_target_mean"] == pytest.approx(75.0 / 60)
    assert f["updates_per_s_median"] == 3.0
    assert f["final_sr_median"] == 0.9 and f["final_sr_mean"] == pytest.approx(2.2 / 3)
    # Replay bytes: mean episode lengths 100, 100, 50 -> median of per-run transition bytes.
    frame = 2 * 64 * 64 * 3 + 16
    assert f["frame_set_bytes"] == frame
    assert f["transition_bytes_median"] == pytest.approx(frame * 1.01 + 47)

    s = per["scratch"]
    assert s["n"] == 1 and s["env_steps_to_target_median"] is None and s["reached"] == 0
    assert set(s["sr_at"]) == {"500", "1000"}

    c = per["classifier_reward"]
    assert c["train_true_sr_median"] == 0.5 and c["train_classifier_sr_median"] == 0.5
    assert c["classifier_agreement_median"] == 0.5
    assert c["classifier_false_positive_median"] == 0.25 and c["classifier_false_negative_median"] == 0.25
    assert c["env_steps_to_target_median"] == 1000

    assert result["budgets"]["pick-place"] == {"budget": 1500, "scratch_budget": 1500, "state_row_budget": 50_000,
                                               "cut": True}
    md = open(os.path.join(out, "results.md")).read()
    assert "**Budgets cut**" in md and "| pick-place | frozen | 3 | 0.90 / 0.73 | 1000 / 750 (2/3) |" in md
    assert "classifier success 0.50 against true success 0.50" in md
    assert os.path.getsize(os.path.join(out, "curves.png")) > 1000
    assert json.load(open(os.path.join(out, "results.json")))["per_task"]["pick-place"]["frozen"]["n"] == 3


def test_dry_run_commands(tmp_path, capsys):
    out = str(tmp_path / "px")
    pixels.main([f"--out={out}", "--tasks=pick-place,ur5e-sim-lift", "--seeds=0,1",
                 "--budgets=pick-place:200,ur5e-sim-lift:100", "--dry_run", "--", "--config.learner.training_starts=50"])
    lines = [ln[len("[pixels] "):] for ln in capsys.readouterr().out.splitlines() if ln.startswith("[pixels] ")]
    # 1 pre-training (the UR task reuses pick-place's weights), 1 classifier,
    # 2 seeds x 2 tasks x (frozen, scratch) + 1 classifier run + 1 UniIntervene-on-images run.
    assert len(lines) == 1 + 1 + 8 + 1 + 1
    ui = lines[-1].split()
    assert ui[2] == "pick-place,hil_serl_cameras+uniintervene" and "--config.seed=0" in ui
    assert f"--config.run_root={os.path.join(out, 'runs', 'uniintervene')}" in ui
    assert "--config.actor.max_env_steps=200" in ui and "--config.agent.encoder.type=small_cnn" in ui
    lines = lines[:-1]
    w = os.path.join(out, "weights", "pick-place-resnet10-64")
    assert lines[0].split()[1:] == ["launchers/pretrain_encoder.py", "--task=pick-place", f"--out={w}",
                                    "--encoder=resnet10", "--size=64", "--image_keys=front,wrist", "--frames=20000",
                                    "--steps=3000"]
    clf = os.path.join(out, "classifier", "pick-place-64-front")
    assert f"--out={clf}" in lines[1] and "--image_key=front" in lines[1] and f"--encoder_weights={w}" in lines[1]
    runs = lines[2:]
    first = runs[0].split()
    assert first[:3] == ["bash", "launchers/run_task.sh", "pick-place,hil_serl_cameras"]
    for flag in ("--config.seed=0", f"--config.run_root={os.path.join(out, 'runs', 'frozen')}",
                 "--config.actor.max_env_steps=200", "--config.actor.eval_period=2000",
                 "--config.actor.eval_episodes=10", "--config.learner.batch_size=32", "--config.env.image_size=64",
                 "--config.agent.encoder.type=resnet10", f"--config.agent.encoder.pretrained_path={w}",
                 "--config.agent.encoder.freeze=True", "--config.agent.encoder.augmentation=none",
                 "--config.learner.cache_frame_features=True"):
        assert flag in first, flag
    assert first[-1] == "--config.learner.training_starts=50"
    scratch = runs[1].split()
    assert "--config.agent.encoder.type=small_cnn" in scratch and not any("pretrained_path" in a for a in scratch)
    assert not any("cache_frame_features" in a or "augmentation" in a for a in scratch)
    assert f"--config.env.reward_classifier={clf}" in runs[2]
    ur = [r for r in runs if "ur5e-sim-lift,hil_serl_cameras" in r]
    assert len(ur) == 4 and not any("reward_classifier" in r for r in ur)
    assert "--config.robot.cameras.front.width=64" in ur[0] and "--config.robot.cameras.wrist.size=(64," in ur[0]
    assert f"--config.agent.encoder.pretrained_path={w}" in ur[0]  # the pick-place weights
    assert sum("seed=1" in r for r in runs) == 4  # no classifier run for seed 1
    assert not os.path.exists(out)  # nothing written


def test_resume_skips_finished_stages(tmp_path, capsys):
    out = str(tmp_path)
    w = pixels.weights_dir(out, "pick-place", "resnet10", 64)
    os.makedirs(w)
    open(os.path.join(w, "encoder.json"), "w").write("{}")
    _write_run(out, "frozen", "pick-place", 0, [(500, 0.2, 60.0)], [(100, 100, 0, 0)], 1.0)
    pixels.main([f"--out={out}", "--tasks=pick-place", "--seeds=0", "--variants=frozen,scratch",
                 "--budgets=pick-place:500", "--dry_run"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[pixels] ")]
    assert len(lines) == 1 and "--config.agent.encoder.type=small_cnn" in lines[0]


def test_scratch_budgets_and_frozen_feature_modes(tmp_path, capsys):
    out = str(tmp_path / "px")
    pixels.main([f"--out={out}", "--tasks=pick-place", "--seeds=0", "--variants=frozen,scratch",
                 "--budgets=pick-place:3000", "--scratch_budgets=pick-place:1000", "--frozen_features=per_update",
                 "--dry_run"])
    runs = [ln for ln in capsys.readouterr().out.splitlines() if "run_task.sh" in ln]
    frozen, scratch = runs
    assert "--config.actor.max_env_steps=3000" in frozen and "--config.actor.max_env_steps=1000" in scratch
    assert "cache_frame_features" not in frozen and "augmentation" not in frozen  # HiL-SERL's recipe
    args, _ = pixels.parse_args(["--tasks=pick-place", "--budgets=pick-place:500"])
    assert pixels.budget_of(args, "scratch", "pick-place") == 500  # capped at --budgets
    assert pixels.budget_of(args, "frozen", "pick-place") == 500
    args, _ = pixels.parse_args(["--tasks=pick-place", "--budgets=pick-place:500", "--scratch_budgets="])
    assert pixels.budget_of(args, "scratch", "pick-place") == 500


def test_parse_args_errors():
    with pytest.raises(SystemExit):
        pixels.parse_args(["--tasks=pick-place", "--budgets=assembly:100"])  # no budget for the task
    with pytest.raises(SystemExit):
        pixels.parse_args(["--variants=frozen,bogus", "--tasks=pick-place", "--budgets=pick-place:10"])
    with pytest.raises(ValueError, match="no 'pixels' camera"):
        pixels.parse_args(["--preset=hil_serl_pixels", "--tasks=ur5e-sim-lift", "--budgets=ur5e-sim-lift:10"])


def test_classifier_launcher_reads_a_camera_key(tmp_path):
    """--image_key=front: the classifier reads hil_serl_cameras' front camera (tiny: 2 steps)."""
    from serl_ext.envs import check_rendering, make_env
    from serl_ext.envs.reward_classifier import RewardClassifier, RewardClassifierWrapper

    reason = check_rendering()
    if reason is not None:
        pytest.skip(f"headless rendering unavailable: {reason}")
    out = str(tmp_path / "clf")
    run = subprocess.run(
        [sys.executable, "launchers/train_reward_classifier.py", "--task=pick-place", f"--out={out}", "--episodes=6",
         "--episode_steps=20", "--size=16", "--widths=4,8", "--latent_dim=8", "--hidden_dims=16", "--steps=2",
         "--batch_size=8", "--expert_fraction=1.0", "--expert_noise=0.0,0.0", "--image_key=front"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert json.load(open(os.path.join(out, "metrics.json")))["image_key"] == "front"
    clf = RewardClassifier.load(out)
    assert clf.image_keys == ("front",)
    env = RewardClassifierWrapper(make_env("pick-place", 0, image_obs=True, image_size=16, cameras=("front", "wrist"),
                                           state_obs="proprio", terminate_on_success=False), clf)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(4, np.float32))
    assert reward in (0.0, 1.0) and 0.0 <= info["classifier_prob"] <= 1.0
    env.close()


def test_runs_that_cannot_finish_by_the_deadline_are_deferred(tmp_path, capsys, monkeypatch):
    """--stop_after_min: a 60-minute frozen run on record defers frozen seed 1 (its own
    estimate) and scratch seed 0 (no scratch run yet: the task's longest), nothing starts."""
    out = str(tmp_path)
    w = pixels.weights_dir(out, "pick-place", "resnet10", 64)
    os.makedirs(w)
    open(os.path.join(w, "encoder.json"), "w").write("{}")
    _write_run(out, "frozen", "pick-place", 0, [(500, 0.2, 3590.0)], [(100, 100, 0, 0)], 1.0)
    monkeypatch.setattr(pixels, "_run_logged", lambda *a, **k: pytest.fail("a run was started"))
    pixels.main([f"--out={out}", "--tasks=pick-place", "--seeds=0,1", "--variants=frozen,scratch",
                 "--budgets=pick-place:500", "--stop_after_min=30"])
    text = capsys.readouterr().out
    for run in ("scratch pick-place seed 0", "frozen pick-place seed 1", "scratch pick-place seed 1"):
        assert f"[pixels] deferred {run}: expected 60 min, 30 min left" in text, run
    assert pixels.expected_run_s(out, "frozen", "pick-place", PRESET) == pytest.approx(3600.0)
    assert pixels.expected_run_s(out, "frozen", "ur5e-sim-lift", PRESET) is None


def test_report_of_the_uniintervene_run(tmp_path):
    """The uniintervene variant's run lives under its own preset and its gate numbers reach the
    report."""
    out = str(tmp_path)
    _write_run(out, "uniintervene", "pick-place", 0, [(500, 0.4, 60.0)], [(100, 100, 1, 1)], 2.0,
               preset="hil_serl_cameras+uniintervene", gate_trigger_rate=0.25, intervention_rate=0.125,
               eval_system_success_rate=0.5)
    args, _ = pixels.parse_args([f"--out={out}", "--tasks=pick-place", "--seeds=0", "--budgets=pick-place:500"])
    assert args.variants == list(pixels.VARIANTS)
    md = pixels.results_markdown(pixels.build_result(args, out))
    assert "## UniIntervene on images" in md
    assert ("trigger rate per gate decision 0.25, IR 0.12, final SR 0.40 (policy alone) / 0.50 (policy + gate)"
            in md), md
    args, _ = pixels.parse_args(["--tasks=pick-place", "--budgets=pick-place:5", "--preset=hil_serl_pixels"])
    assert "uniintervene" not in args.variants  # no hil_serl_pixels+uniintervene preset
    with pytest.raises(SystemExit):
        pixels.parse_args(["--tasks=pick-place", "--budgets=pick-place:5", "--preset=hil_serl_pixels",
                           "--variants=uniintervene"])
