"""Issue 13 on the learner side: the frozen future-target encoder, the w/o-memory-goal training
input, natural-frequency batches and the held-out threshold recalibration."""

import numpy as np
import pytest

from serl_ext.loop.gate import HUMAN, POLICY
from test_online import SPEC, A, _config, _episode, _transitions
from uniintervene_jax.online import OnlineUniIntervene


@pytest.fixture(scope="module")
def demos():
    rng = np.random.default_rng(5)
    return [_episode(rng, 30, True) for _ in range(3)]


def _feed(ui, episodes, step):
    for ep in episodes:
        for tr in _transitions(ep):
            ui.insert(tr)
    return ui.step(step)


def test_future_target_is_frozen_across_rebuilds_and_is_not_the_value_encoder(demos):
    """Before issue 13 the target was ProxyValueTargetEncoder(self.value), rebuilt at every
    refresh from the proxy value being trained: its latents drifted and were V's own input."""
    config = _config()
    config.uniintervene.pretrain_steps = 20
    ui = OnlineUniIntervene(config, SPEC, A, demos)
    encoder = ui.target_encoder
    probe = {"state": demos[0]["observations"]["state"][:12]}
    ids = np.broadcast_to(ui.instr, (12, ui.instr.shape[0]))
    z0 = encoder.encode(probe, ids).copy()
    ui.pretrain()
    rows0 = ui._intervention_data.target_latents_next.copy()
    v_before = np.asarray(ui.value.encode(probe, ids))
    for _ in range(20):
        ui._update_value()
    assert not np.allclose(np.asarray(ui.value.encode(probe, ids)), v_before)  # V did change
    ui._rebuild()
    assert ui.target_encoder is encoder  # the same object, never rebuilt
    np.testing.assert_array_equal(encoder.encode(probe, ids), z0)
    np.testing.assert_array_equal(ui._intervention_data.target_latents_next, rows0)  # same demos, same targets
    assert z0.shape[1] != np.asarray(ui.value.encode(probe, ids)).shape[1] or not np.allclose(
        z0, np.asarray(ui.value.encode(probe, ids)))


def test_no_memory_ablation_trains_on_the_current_observation_goal(demos):
    config = _config("hil_serl+uniintervene-no_memory")
    assert config.uniintervene.use_memory_goal is False
    ui = OnlineUniIntervene(config, SPEC, A, demos)
    ui._rebuild()
    pairs = ui._recovery_pairs
    assert pairs is not None and len(pairs["actions"]) > 0
    # the gate's run-time goal with use_memory_goal=False is the current observation: same here
    np.testing.assert_array_equal(pairs["goal_observations"]["state"], pairs["observations"]["state"])
    full = OnlineUniIntervene(_config(), SPEC, A, demos)
    full._rebuild()
    assert not np.array_equal(full._recovery_pairs["goal_observations"]["state"],
                              full._recovery_pairs["observations"]["state"])


def test_intervention_batches_follow_the_natural_label_frequency(demos):
    ui = OnlineUniIntervene(_config(), SPEC, A, demos)
    ui._rebuild()
    data = ui._intervention_data
    rows = data.decision_mask
    natural = data.labels[rows].mean()
    idx = data.sample_indices(np.random.default_rng(0), 20000)
    assert data.labels[idx].mean() == pytest.approx(natural, abs=0.02)


def test_tau_fixed_by_default_and_recalibrated_on_held_out_online_episodes(demos):
    rng = np.random.default_rng(3)
    episodes = [_episode(rng, 30, i % 2 == 0, sources=[POLICY] * 15 + [HUMAN] * 15 if i % 2 else None)
                for i in range(4)]
    fixed = OnlineUniIntervene(_config(), SPEC, A, demos)
    for j, ep in enumerate(episodes):
        _feed(fixed, [ep], j + 1)
    assert fixed.counters["refreshes"] >= 1 and fixed.tau == 0.5 and not fixed.counters["tau_recalibrations"]

    config = _config()
    config.uniintervene.tau_recalibrate = True
    config.uniintervene.tau_holdout_every = 2
    config.uniintervene.refresh_episodes = 3  # rebuilt after episode 0 and after episodes 1-3
    ui = OnlineUniIntervene(config, SPEC, A, demos)
    _feed(ui, episodes[:1], 1)  # the first episode triggers the first rebuild
    _feed(ui, episodes[1:], 2)
    assert ui.counters["refreshes"] == 2
    held = ui._held_out(ui._episodes())
    assert [ui._episodes()[i]["metadata"]["online_index"] for i in held] == [1, 3]
    # the held-out episodes are not in the intervention model's training data
    n_train_rows = sum(len(e["actions"]) for e in ui._episodes()) - sum(len(ui._episodes()[i]["actions"]) for i in held)
    assert len(ui._intervention_data) == n_train_rows
    assert ui.counters["tau_recalibrations"] == 1  # at the second refresh (the first had no held-out episode)
    assert ui.tau in [round(0.05 * i, 2) for i in range(1, 20)]
    assert "uniintervene/tau_best_f1" in ui.last_info
    assert ui.payload()["tau"] == ui.tau


def test_online_run_starts_from_an_offline_pipeline_folder(demos, tmp_path):
    """uniintervene.init_from: the learner and the actor's gate build the models of the folder,
    start from its held-out threshold and its memory, and use its frozen target encoder."""
    from uniintervene_jax.gate import NetworkGateModels
    from uniintervene_jax.intervention.target_encoders import RandomProjectionEncoder
    from uniintervene_jax.memory.memory import RecoveryMemory
    from uniintervene_jax.online_config import check_online_config

    base = OnlineUniIntervene(_config(), SPEC, A, demos)
    base.pretrain()
    folder = tmp_path / "offline"
    base.value.save(str(folder / "models" / "value"))
    base.intervention.save(str(folder / "models" / "intervention"), extra={
        "trigger_threshold": 0.35, "target_encoder": {"name": "random", "dim": 8, "seed": 3}})
    RecoveryMemory(items=base.memory_items).save(str(folder / "memory"))

    config = _config()
    config.uniintervene.init_from = str(folder)
    check_online_config(config.uniintervene)
    ui = OnlineUniIntervene(config, SPEC, A, demos)
    assert ui.tau == 0.35 and len(ui.memory_items) == len(base.memory_items)
    probe = {"state": demos[0]["observations"]["state"][:5]}
    ids = np.broadcast_to(ui.instr, (5, ui.instr.shape[0]))
    np.testing.assert_allclose(ui.value.values(probe, ids), base.value.values(probe, ids), rtol=1e-6)
    expected = RandomProjectionEncoder({"state": (39,)}, 8, seed=3).encode(probe)
    np.testing.assert_array_equal(ui.target_encoder.encode(probe, ids), expected)
    models = NetworkGateModels(config, SPEC, A)
    assert models.tau == 0.35  # before any message, the folder's calibrated threshold
    models.load(ui.payload())  # same structures on both sides
    assert models.tau == 0.35 and models.version == ui.version

    config.uniintervene.init_from = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="init_from"):
        check_online_config(config.uniintervene)

    # An ablation run refuses a folder trained for another configuration of the trigger head.
    from uniintervene_jax.message import build_models

    for field, value in (("use_future", False), ("use_value_cond", False), ("head_type", "binary")):
        ablation = _config()
        ablation.uniintervene.init_from = str(folder)
        ablation.uniintervene.intervention[field] = value
        with pytest.raises(ValueError, match=f"trained with {field}="):
            build_models(ablation, SPEC, A)


@pytest.mark.parametrize("init_from", ["", "/some/offline/folder"])
def test_learner_extension_pretrains_on_demos_only_without_an_offline_folder(tmp_path, monkeypatch, init_from):
    """Started from an offline folder the models are not pretrained again on the demos alone."""
    from uniintervene_jax import extension

    calls = []

    class Fake:
        def __init__(self, config, obs_spec, action_dim, demos):
            self.version = 0

        def pretrain(self, steps=None, progress_bar=False):
            calls.append(steps)
            return {}

    monkeypatch.setattr(extension, "OnlineUniIntervene", Fake)
    config = _config()
    config.uniintervene.init_from = init_from
    config.demos.path = str(tmp_path / "no_demos")
    ext = extension.make_learner_extension(config, SPEC, A, str(tmp_path / "run"), resumed=False)
    assert ext is not None and calls == ([0] if init_from else [None])
