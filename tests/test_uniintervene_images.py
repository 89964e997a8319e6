"""UniIntervene's models on images, online (issue 17): the ``hil_serl_cameras+uniintervene``
preset's proxy value (SmallCNN), intervention model (CNN backbone) and recovery view
(``[state, z]``, uniintervene_jax/views.py) trained by the learner's OnlineUniIntervene on
front + wrist frames, the payload loaded by the actor's NetworkGateModels, the gate deciding on
an image observation, and one short run_task.sh run whose gate decided with these models."""

import numpy as np
import pytest

from configs.train import get_config
from launcher_runs import find_free_ports, read_run, replace_flags, run_task
from serl_ext.loop.config_overrides import apply_overrides
from serl_ext.loop.gate import HUMAN, POLICY, RECOVERY
from test_online import _transitions, shrink_uniintervene

A = 4
S = 16  # frame size of the unit tests
SPEC = {"front": ((S, S, 3), np.dtype(np.uint8)), "wrist": ((S, S, 3), np.dtype(np.uint8)),
        "state": ((4,), np.dtype(np.float32))}
ALGORITHM = "hil_serl_cameras+uniintervene"


def _config(seed=0):
    config = get_config(f"pick-place,{ALGORITHM}")
    apply_overrides(config, [f"env.image_size={S}", f"seed={seed}"])
    u = config.uniintervene
    shrink_uniintervene(u)
    u.value.encoder.widths = (4, 4)
    u.value.encoder.latent_dim = 8
    u.value.encoder.num_spatial_features = 2
    u.intervention.model.cnn_widths = (4, 4)
    u.intervention.model.cnn_latent_dim = 8
    u.intervention.model.num_spatial_features = 2
    u.pretrain_steps = 200  # the demos' value curves must reach the goal value 0.75 (the memory)
    u.refresh_episodes = 2
    u.train_period = 1
    u.recovery_updates = 2
    u.min_episodes = 2
    u.min_updates = 3
    u.memory_demo_delta = 0.05  # tiny pretraining: let the demo fallback fill the memory
    return config


def _episode(rng, T, success, sources=None):
    """Synthetic camera episode: a bright square moves across both frames as the 4-D proprio
    state moves along a line (to the goal when successful, a third of the way when not)."""
    prog = np.linspace(0.0, 1.0 if success else 0.3, T + 1)
    frames = rng.integers(0, 30, (T + 1, S, S, 3)).astype(np.uint8)
    for t, p in enumerate(prog):
        x = int(p * (S - 4))
        frames[t, 4:8, x:x + 4] = 250
    state = (np.tile(prog[:, None], (1, 4)) + rng.normal(0, 0.01, (T + 1, 4))).astype(np.float32)
    rewards, terminals, truncations = np.zeros(T, np.float32), np.zeros(T, bool), np.zeros(T, bool)
    if success:
        rewards[-1], terminals[-1] = 1.0, True
    else:
        truncations[-1] = True
    sources = np.zeros(T, np.int8) if sources is None else np.asarray(sources, np.int8)
    return {"observations": {"front": frames, "wrist": frames[:, ::-1].copy(), "state": state},
            "actions": rng.uniform(-1, 1, (T, A)).astype(np.float32), "rewards": rewards,
            "terminals": terminals, "truncations": truncations, "interventions": sources == HUMAN,
            "action_source": sources, "metadata": {"task": "pick-place", "success": success}}


def test_the_preset_puts_the_models_on_the_cameras():
    config = get_config(f"pick-place,{ALGORITHM}")
    u = config.uniintervene
    assert u.enabled and u.init_from == "" and config.components.gate
    assert tuple(config.env.cameras) == ("front", "wrist") and int(config.env.image_size) == 128
    assert u.value.encoder.type == "small_cnn" and u.intervention.model.backbone == "cnn"
    assert tuple(u.value.encoder.image_keys) == tuple(u.intervention.model.image_keys) == ("front", "wrist")
    assert u.recovery_inputs == "state+value_embedding" and u.target_encoder == "random:16"
    apply_overrides(config, ["env.cameras=('front',)"])  # one field for every image encoder
    assert tuple(config.uniintervene.value.encoder.image_keys) == ("front",)
    assert tuple(config.uniintervene.intervention.model.image_keys) == ("front",)
    assert tuple(config.agent.encoder.image_keys) == ("front",)
    ur = get_config(f"ur5e-sim-lift,{ALGORITHM}")  # the robot's camera rig
    assert tuple(ur.uniintervene.value.encoder.image_keys) == tuple(ur.agent.encoder.image_keys) == ("front", "wrist")
    assert tuple(ur.uniintervene.intervention.model.image_keys) == ("front", "wrist")


def test_the_image_fields_are_checked():
    from uniintervene_jax.online_config import check_online_config

    u = get_config(f"pick-place,{ALGORITHM}").uniintervene
    check_online_config(u)
    for field, value in (("recovery_inputs", "frames"), ("target_encoder", "random:0"),
                         ("target_encoder", "random:x")):
        bad = u.copy_and_resolve_references()
        bad[field] = value
        with pytest.raises(ValueError, match=field):
            check_online_config(bad)
    from uniintervene_jax.message import build_models

    config = _config()
    config.uniintervene.init_from = "/somewhere"  # the offline pipeline has no image view
    with pytest.raises(ValueError, match="fresh models only"):
        build_models(config, SPEC, A)


def test_the_pooled_random_target_encoder():
    from uniintervene_jax.intervention.target_encoders import RandomProjectionEncoder

    example = {"front": np.zeros((128, 128, 3), np.uint8), "state": np.zeros((4,), np.float32)}
    enc = RandomProjectionEncoder(example, 128, seed=0, image_pool=16)
    assert enc.matrix.shape == (16 * 16 * 3 + 4, 128)
    rng = np.random.default_rng(0)
    obs = {"front": rng.integers(0, 256, (3, 128, 128, 3)).astype(np.uint8), "state": np.ones((3, 4), np.float32)}
    z = enc.encode(obs)
    assert z.shape == (3, 128) and z.dtype == np.float32
    # Pooling: frames with the same 8 x 8 block means have the same target.
    blocks = obs["front"].reshape(3, 16, 8, 16, 8, 3).astype(np.float32).mean(axis=(2, 4))
    flat = np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)
    same = dict(obs, front=np.round(flat).astype(np.uint8))
    np.testing.assert_allclose(enc.encode(same), z, atol=0.05)
    plain = RandomProjectionEncoder(example, 128, seed=0)  # "random": unchanged, every pixel
    assert plain.matrix.shape == (128 * 128 * 3 + 4, 128)


@pytest.fixture(scope="module")
def trained():
    """The learner's OnlineUniIntervene of the preset on camera episodes, pretrained on 3 demos
    and fed 2 online episodes (a policy + recovery success, a failure the human took over)."""
    from uniintervene_jax.online import OnlineUniIntervene

    rng = np.random.default_rng(0)
    demos = [dict(_episode(rng, 20, True), metadata={"task": "pick-place", "success": True}) for _ in range(3)]
    ui = OnlineUniIntervene(_config(seed=1), SPEC, A, demos)
    before = {name: [np.array(x) for x in _leaves(getattr(ui, name).state.params)]
              for name in ("value", "intervention", "recovery")}
    ui.pretrain()
    online = [_episode(rng, 20, True, sources=[POLICY] * 6 + [RECOVERY] * 8 + [POLICY] * 6),
              _episode(rng, 20, False, sources=[POLICY] * 8 + [HUMAN] * 12)]
    for ep in online:
        for tr in _transitions(ep):
            ui.insert(tr)
    for step in range(1, 6):
        ui.step(step)
    return ui, before, rng


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_the_online_trainer_trains_the_image_models(trained):
    ui, before, _ = trained
    assert ui.counters["refreshes"] >= 3 and ui.episodes_seen == 2
    assert ui.counters["intervention_updates"] == 5 and ui.ready
    stats = ui.stats()
    for name in ("value_loss", "intervention_loss", "recovery_loss"):
        assert np.isfinite(stats[f"uniintervene/{name}"]), name
    for name, old in before.items():  # every model's parameters moved, the CNNs' too
        new = _leaves(getattr(ui, name).state.params)
        assert any(not np.allclose(a, b) for a, b in zip(old, new)), name
    enc = ui.value.state.params["obs_encoder"]
    assert set(enc) >= {"image_front", "image_wrist"}
    assert "encoder" in ui.intervention.state.params["encoder"]  # CNNBackbone's SmallCNNs
    # The memory and the recovery policy live on the recovery view [state (4), z (D)]: no frames.
    D = int(ui.value.config.latent_dim)
    items = ui.memory_items
    assert items is not None and len(items) > 0
    assert set(items.goal_observations) == {"state"} and items.goal_observations["state"].shape[1:] == (4 + D,)
    np.testing.assert_array_equal(items.key_embedding, items.key_observations["state"][:, 4:])
    assert ui.recovery.obs_spec == (("state", (4 + D,), "float32"),)
    assert ui.intervention.obs_spec == tuple((k, SPEC[k][0], SPEC[k][1].name) for k in sorted(SPEC))


def test_the_gate_decides_on_an_image_observation(trained):
    """The payload goes over the wire into the actor's NetworkGateModels (seed 0, other fresh
    params): value, score and chunk on one camera observation, and a gate step that fires."""
    from serl_ext.transport.codec import decode, encode
    from uniintervene_jax.gate import NetworkGateModels, UniInterveneGate

    ui, _, rng = trained
    models = NetworkGateModels(_config(seed=0), SPEC, A)
    ep = _episode(rng, 12, True)
    obs = {k: v[5] for k, v in ep["observations"].items()}
    payload = decode(encode(ui.payload()))
    assert payload["memory"]["goal_observations"].keys() == {"state"}  # no frames on the wire
    models.load(payload)
    assert models.ready and models.version == ui.version
    v = models.value(obs)
    assert isinstance(v, float) and 0.0 <= v <= 1.0
    assert v == pytest.approx(float(ui.value.values(obs, ui.instr)), abs=1e-5)
    prob, fires = models.score(obs, np.zeros(A, np.float32), np.full((9,), v, np.float32))
    assert isinstance(prob, float) and 0.0 <= prob <= 1.0 and isinstance(fires, bool)
    goal = models.goal(obs, 0.0)
    assert goal is not None and goal["state"].shape == (4 + int(ui.value.config.latent_dim),)
    for g in (goal, obs):  # a memory goal (a view) or the current observation (w/o memory goal)
        chunk = models.chunk(obs, g)
        assert chunk.shape == (8, A) and chunk.dtype == np.float32 and np.all(np.abs(chunk) <= 1.0)
    # The gate fires with tau 0 on the 9th step (K = 8 values) and runs the recovery chunk.
    models.tau = 0.0
    gate = UniInterveneGate(models, history_len=8)
    gate.reset(obs)
    sources = []
    for t in range(10):
        o = {k: v[t] for k, v in ep["observations"].items()}
        action, source = gate.select_action(o, np.zeros(A, np.float32))
        assert action.shape == (A,) and action.dtype == np.float32
        sources.append(source)
        gate.observe(o, action, source, 0.0, {k: v[t + 1] for k, v in ep["observations"].items()}, {})
    assert sources[:8] == [POLICY] * 8 and sources[8:] == [RECOVERY] * 2
    stats = gate.stats()  # the episode's numbers join the run totals
    assert stats["triggers"] == 1.0 and stats["trigger_rate"] == 1.0 and stats["recovery_steps"] == 2.0
    summary = gate.summary()
    assert summary["gate_decisions"] == 1 and summary["gate_triggers"] == 1


@pytest.mark.timeout(600)
def test_run_task_decides_with_the_image_models(tmp_path):
    """run_task.sh pick-place,hil_serl_cameras+uniintervene at 32 px, fresh models: the learner
    pretrains the CNN proxy value on the camera demos, trains the three models online, pushes
    them, and the actor's gate scores the policy's actions with them (summary.json)."""
    from test_presets_run_task import _tiny_image_run_flags

    ports, steps = find_free_ports(2), 200
    # The actor waits for the learner's first message (it comes after the demo pretraining) and
    # keeps within throttle_slack env steps of the learner's updates, so that the models get
    # ready (and the actor's once-per-run wait for them happens) while it still has steps to run.
    tiny = replace_flags(_tiny_image_run_flags(steps), "--config.actor.steps_per_update=1",
                         "--config.actor.throttle_slack=100", "--config.actor.learner_timeout_s=120")
    flags = [
        f"--config.run_root={tmp_path / 'runs'}", f"--config.demos.path={tmp_path / 'demos'}",
        "--config.demos.num_demos=2", f"--config.transport.port={ports[0]}",
        f"--config.transport.broadcast_port={ports[1]}", "--config.env.image_size=32",
        "--config.env.max_episode_steps=40", *tiny, "--config.logging.progress_bar=False",
        # Tiny UniIntervene models and schedule: ready after 2 online episodes and 10 updates.
        "--config.uniintervene.pretrain_steps=200", "--config.uniintervene.min_episodes=2",
        "--config.uniintervene.min_updates=10", "--config.uniintervene.refresh_episodes=2",
        "--config.uniintervene.train_period=1", "--config.uniintervene.recovery_updates=1",
        "--config.uniintervene.publish_period=10", "--config.uniintervene.timeline_every=1",
        "--config.uniintervene.memory_demo_delta=0.1",
        "--config.uniintervene.batch_size=16", "--config.uniintervene.recovery_batch_size=16",
        "--config.uniintervene.value.hidden_dims=(16, 16)", "--config.uniintervene.value.head_hidden_dims=(16,)",
        "--config.uniintervene.value.latent_dim=16", "--config.uniintervene.value.encoder.widths=(8, 8)",
        "--config.uniintervene.value.encoder.latent_dim=16",
        "--config.uniintervene.value.encoder.num_spatial_features=2",
        "--config.uniintervene.intervention.model.hidden_dims=(16, 16)",
        "--config.uniintervene.intervention.model.head_hidden_dims=(16,)",
        "--config.uniintervene.intervention.model.cnn_widths=(8, 8)",
        "--config.uniintervene.intervention.model.cnn_latent_dim=16",
        "--config.uniintervene.intervention.model.num_spatial_features=2",
        "--config.uniintervene.recovery.cond_hidden_dims=(16,)",
        "--config.uniintervene.recovery.chunk_hidden_dims=(16,)",
    ]
    run_task(f"pick-place,{ALGORITHM}", flags, timeout=550)
    run_dir, summary, learner_summary = read_run(tmp_path, f"pick-place,{ALGORITHM}")
    assert summary["algorithm"] == ALGORITHM and summary["env_steps"] == steps
    assert summary["gate_decisions"] > 0, summary  # the pushed image models were ready and scored
    assert summary["gate_latency_ms_p50"] is not None
    assert learner_summary["uniintervene_ready"] == 1.0
    # The models the gate ran are the image ones: the learner's saved models say so.
    import json

    models = run_dir / "uniintervene"
    value = json.loads((models / "value" / "model.json").read_text())["config"]
    assert value["encoder"]["type"] == "small_cnn" and value["encoder"]["image_keys"] == ["front", "wrist"]
    intervention = json.loads((models / "intervention" / "model.json").read_text())["config"]["config"]
    assert intervention["model"]["backbone"] == "cnn"
    assert intervention["model"]["image_keys"] == ["front", "wrist"]
    rows = [json.loads(line) for line in (run_dir / "gate_timeline.jsonl").read_text().splitlines()]
    assert any(p is not None for r in rows for p in r["risk"])  # scored steps on camera frames


def test_the_image_models_save_and_restore(trained, tmp_path):
    """A resumed learner gets the image models and the view memory back (its payload equals
    the saved one's models)."""
    from uniintervene_jax.online import OnlineUniIntervene

    ui, _, rng = trained
    ui.save(str(tmp_path / "uniintervene"))
    fresh = OnlineUniIntervene(_config(seed=1), SPEC, A)
    assert fresh.restore(str(tmp_path / "uniintervene"))
    obs = {k: v[3] for k, v in _episode(rng, 6, True)["observations"].items()}
    assert float(fresh.value.values(obs, fresh.instr)) == pytest.approx(float(ui.value.values(obs, ui.instr)), abs=1e-6)
    assert fresh.recovery.obs_spec == ui.recovery.obs_spec and fresh.intervention.obs_spec == ui.intervention.obs_spec
    np.testing.assert_array_equal(fresh.memory_items.goal_observations["state"], ui.memory_items.goal_observations["state"])
    assert len(fresh.online) == 2 and fresh.episodes_seen == 2
