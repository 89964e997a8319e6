"""A small end-to-end run of the offline UniIntervene pipeline, then single-stage reruns and a
reload of every model from its folder alone."""

import json
import os

import numpy as np
import pytest

from uniintervene_jax.pipeline import Pipeline, get_pipeline_config


def _tiny_config():
    c = get_pipeline_config("pick-place")
    c.progress_bar = False
    c.holdout_every = 2
    c.data.num_demos = 4
    c.data.num_rollouts = 2
    c.data.num_assisted = 4
    c.data.bc_steps = 5
    c.value.hidden_dims = (32, 32)
    c.value.latent_dim = 16
    c.value_steps = 60
    c.intervention.model.hidden_dims = (32, 32)
    c.intervention_steps = 40
    c.memory.preset = "default"
    c.recovery.embed_dim = 32
    c.recovery.num_layers = 1
    c.recovery.num_heads = 2
    c.recovery.cond_hidden_dims = (32,)
    c.recovery.fast.vocab_size = 300
    c.recovery_steps = 30
    c.recovery_batch_size = 16
    c.closed_loop.episodes = 2
    c.closed_loop.max_chunks = 1
    return c


@pytest.mark.timeout(900)
def test_pipeline_end_to_end(tmp_path, monkeypatch):
    config = _tiny_config()
    run_dir = str(tmp_path / "run")
    pipeline = Pipeline(config, run_dir)
    metrics = pipeline.run()
    for key in ("task", "value_auroc", "value_monotonic_fraction", "trigger_precision", "trigger_recall",
                "trigger_f1", "trigger_lead_steps", "false_trigger_rate_success", "memory_size",
                "memory_top1_similarity_mean", "recovery_chunk_mae", "closed_loop_recovery_rate"):
        assert key in metrics, key
    assert metrics["task"] == "pick-place"
    assert json.load(open(os.path.join(run_dir, "metrics.json")))["task"] == "pick-place"
    assert os.path.exists(os.path.join(run_dir, "report.md"))
    report_md = open(os.path.join(run_dir, "report.md")).read()
    assert "| plot | report/value_curves.png |" in report_md and os.path.abspath(run_dir) not in report_md
    assert os.path.exists(os.path.join(run_dir, "report", "value_curves.png"))
    assert metrics["memory_size"] >= 1
    assert 0.0 <= metrics["trigger_f1"] <= 1.0
    if metrics["closed_loop_recovery_rate"] is not None:
        assert 0.0 <= metrics["closed_loop_recovery_rate"] <= 1.0

    # Every model reloads from its folder alone.
    from uniintervene_jax.intervention.model import InterventionModel
    from uniintervene_jax.memory.memory import RecoveryMemory
    from uniintervene_jax.recovery.model import RecoveryPolicy
    from uniintervene_jax.value.model import ProxyValue

    value = ProxyValue.load(os.path.join(run_dir, "models", "value"))
    InterventionModel.load(os.path.join(run_dir, "models", "intervention"))
    # The trigger threshold is calibrated on the held-out episodes (best F1 of the sweep) and
    # stored in the model folder; the report uses the same tau.
    tau = InterventionModel.saved_trigger_threshold(os.path.join(run_dir, "models", "intervention"))
    sweep = json.load(open(os.path.join(run_dir, "report", "intervention_report.json")))
    assert tau is not None and metrics["trigger_threshold"] == tau == sweep["tau"]
    if sweep["best_threshold"] is not None and any(p["f1"] > 0 for p in sweep["threshold_sweep"]):
        assert tau == sweep["best_threshold"]
    assert metrics["head_type"] == "tvr_history" and metrics["ablations"]["use_tvr"] is True
    RecoveryPolicy.load(os.path.join(run_dir, "models", "recovery"))
    # Trained on the goals the gate retrieves (the online trainer's default), not hindsight goals.
    recovery = json.load(open(os.path.join(run_dir, "report", "recovery.json")))
    assert recovery["recovery_goals"] == "retrieved" and 0.0 < recovery["train_goals_retrieved"] <= 1.0
    memory = RecoveryMemory.load(os.path.join(run_dir, "memory"))
    assert len(memory) == metrics["memory_size"]

    # A stage reruns alone from what is on disk: labels are recomputed identically.
    before = dict(np.load(os.path.join(run_dir, "labels.npz")))
    Pipeline(config, run_dir).run(["labels"])
    after = dict(np.load(os.path.join(run_dir, "labels.npz")))
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    del value

    # Memory: when the preset's rise mines no item (here a rise above 1, which no [0, 1] curve
    # has), the stage mines again with memory.fallback_delta and says so; without a fallback it
    # raises, naming the rise.
    import dataclasses

    from uniintervene_jax.memory import mining

    impossible = dataclasses.replace(mining.mining_preset("default"), delta=1.01)
    monkeypatch.setattr(mining, "mining_preset", lambda name: impossible)
    Pipeline(config, run_dir).run(["memory"])
    summary = json.load(open(os.path.join(run_dir, "report", "memory_summary.json")))
    assert summary["mining_delta"] == config.memory.fallback_delta == 0.2 and summary["memory_size"] >= 1
    config.memory.fallback_delta = 0.0
    with pytest.raises(RuntimeError, match="rises by 1.01"):
        Pipeline(config, run_dir).run(["memory"])
