"""Tests of the intervention model: losses, heads, ablations, training, persistence, report."""

import math
import os

import jax
import numpy as np
import pytest

from uniintervene_jax.gate import trigger_rule
from uniintervene_jax.instructions import instruction_for, tokenize_instruction
from uniintervene_jax.intervention import (
    HFVisionTargetEncoder,
    InterventionDataset,
    InterventionModel,
    ProxyValueTargetEncoder,
    RandomProjectionEncoder,
    TargetEncoder,
    build_dataset,
    false_trigger_rate,
    history_windows,
    intervention_loss,
    intervention_report,
    lead_times,
    normalized_mse,
    sigmoid_focal_loss,
    smooth_l1,
    train_intervention_model,
    trigger_metrics,
)

K = 8
TINY = dict(model=dict(hidden_dims=(32, 32), head_hidden_dims=(32,), history_hidden_dims=(32,)),
            batch_size=64, log_every=50, learning_rate=1e-3)


def tvr_loop(h, eps=0.005, gamma=0.9):
    """TVR of one history row [V_{t-K}..V_t] (DESIGN section 4, code form, no clipping)."""
    k = len(h) - 1
    return (1 - h[k]) * sum(gamma ** i * (eps - (h[k - i] - h[k - i - 1])) for i in range(k))


def synth(n, seed, state_dim=4, action_dim=2, dim=8):
    """Rows whose label is 'the value history falls' (slope < 0); rising rows are negatives."""
    r = np.random.default_rng(seed)
    state = r.normal(size=(n, state_dim)).astype(np.float32)
    act = r.uniform(-1, 1, (n, action_dim)).astype(np.float32)
    fall = r.random(n) < 0.5
    s = np.where(fall, r.uniform(-0.05, -0.01, n), r.uniform(0.01, 0.05, n))
    v0 = r.uniform(0.3, 0.7, n)
    vh = np.clip(v0[:, None] + s[:, None] * np.arange(K + 1) + r.normal(0, 0.003, (n, K + 1)), 0, 1)
    vh = vh.astype(np.float32)
    tvr = np.array([tvr_loop(h) for h in vh], np.float32)
    enc = RandomProjectionEncoder({"state": (state_dim,)}, dim, 0)
    return InterventionDataset(
        observations={"state": state}, instr_ids=np.ones((n, 16), np.int32), actions=act,
        values_now=vh[:, -1], values_next=np.clip(vh[:, -1] + s, 0, 1), value_history=vh, tvr=tvr,
        labels=fall, target_latents_next=enc.encode({"state": state}), episode_index=np.arange(n) // 20,
        t=np.arange(n) % 20)


@pytest.fixture(scope="module")
def data():
    return synth(2000, 0), synth(400, 1)


@pytest.fixture(scope="module")
def trained(data):
    model, history = train_intervention_model(data[0], TINY, steps=250, progress_bar=False)
    return model, history


# ------------------------------------------------------------------ losses
def test_normalized_mse_hand_values_and_scale_invariance():
    pred = np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)
    target = np.array([[1.0, 0.0], [0.0, 5.0]], np.float32)
    # row 0: unit (0.6, 0.8) vs (1, 0): 0.16 + 0.64 = 0.8; row 1: identical directions: 0.
    assert float(normalized_mse(pred, target)) == pytest.approx(0.4, abs=1e-6)
    assert float(normalized_mse(7.0 * pred, 0.1 * target)) == pytest.approx(0.4, abs=1e-6)
    r = np.random.default_rng(0)
    a, b = r.normal(size=(5, 6)), r.normal(size=(5, 6))
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert float(normalized_mse(a, b)) == pytest.approx(np.mean(2 - 2 * cos), rel=1e-5)
    with pytest.raises(ValueError):
        normalized_mse(np.zeros((2, 3)), np.zeros((2, 4)))


def test_smooth_l1_both_branches():
    pred = np.array([0.5, 3.0, -2.0], np.float32)
    zero = np.zeros(3, np.float32)
    assert float(smooth_l1(pred, zero)) == pytest.approx((0.125 + 2.5 + 1.5) / 3, rel=1e-6)
    # beta = 2: 0.5*0.25/2, 3-1, |-2| is not < 2 -> 2-1.
    assert float(smooth_l1(pred, zero, beta=2.0)) == pytest.approx((0.0625 + 2.0 + 1.0) / 3, rel=1e-6)
    assert float(smooth_l1(pred, zero, beta=0.0)) == pytest.approx(5.5 / 3, rel=1e-6)
    with pytest.raises(ValueError):
        smooth_l1(pred, zero, beta=-1.0)


def focal_loop(logits, labels, alpha, gamma):
    total = 0.0
    for x, y in zip(logits, labels):
        p = 1.0 / (1.0 + math.exp(-x))
        ce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
        p_t = p * y + (1 - p) * (1 - y)
        loss = ce * (1 - p_t) ** gamma
        if alpha >= 0:
            loss *= alpha * y + (1 - alpha) * (1 - y)
        total += loss
    return total / len(logits)


def test_focal_loss_matches_torchvision_formula_loop():
    logits = [-3.0, -0.5, 0.0, 0.7, 4.0, 1.5]
    labels = [1, 0, 1, 1, 0, 0]
    for alpha, gamma in ((0.75, 2.0), (0.25, 1.0), (-1.0, 0.0)):
        got = float(sigmoid_focal_loss(np.array(logits, np.float32), np.array(labels, bool), alpha, gamma))
        assert got == pytest.approx(focal_loop(logits, labels, alpha, gamma), rel=1e-5)
    # gamma 0, no alpha: plain binary cross-entropy.
    bce = np.mean([math.log1p(math.exp(-x)) if y else math.log1p(math.exp(x)) for x, y in zip(logits, labels)])
    assert float(sigmoid_focal_loss(np.array(logits), np.array(labels, float), -1.0, 0.0)) == pytest.approx(bce, rel=1e-5)
    # stable for huge logits
    assert np.isfinite(float(sigmoid_focal_loss(np.array([200.0, -200.0]), np.array([0.0, 1.0]))))


def test_intervention_loss_is_weighted_sum_of_terms():
    r = np.random.default_rng(3)
    b, d = 6, 5
    out = {"z_pred": r.normal(size=(b, d)), "q1": r.random(b), "q2": r.random(b), "v_now": r.random(b),
           "risk": r.normal(size=b)}
    out["q"] = np.minimum(out["q1"], out["q2"])
    batch = {"target_latents_next": r.normal(size=(b, d)), "values_next": r.random(b), "values_now": r.random(b),
             "tvr": r.normal(0, 0.2, b), "labels": r.random(b) < 0.5}
    terms = {
        "future_loss": float(normalized_mse(out["z_pred"], batch["target_latents_next"])),
        "q_loss": float(smooth_l1(out["q1"], batch["values_next"])) + float(smooth_l1(out["q2"], batch["values_next"])),
        "value_loss": float(smooth_l1(out["v_now"], batch["values_now"])),
        "risk_tvr_loss": float(smooth_l1(out["risk"], batch["tvr"])),
        "focal_loss": focal_loop(out["risk"], batch["labels"].astype(float), 0.75, 2.0),
    }
    loss, info = intervention_loss(out, batch, {})
    assert float(loss) == pytest.approx(sum(terms.values()), rel=1e-5)
    for k, v in terms.items():
        assert float(info[k]) == pytest.approx(v, rel=1e-5), k
    w = {"future_weight": 2.0, "q_weight": 0.5, "value_weight": 0.0, "tvr_weight": 3.0, "focal_weight": 1.5}
    loss_w, _ = intervention_loss(out, batch, w)
    expect = (2 * terms["future_loss"] + 0.5 * terms["q_loss"] + 3 * terms["risk_tvr_loss"]
              + 1.5 * terms["focal_loss"])
    assert float(loss_w) == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ValueError, match="target_latents_next"):
        intervention_loss(out, {k: v for k, v in batch.items() if k != "target_latents_next"}, {})


# ------------------------------------------------------------------ heads and ablations
def _model(config, obs=None, seed=0):
    obs = obs if obs is not None else {"state": np.zeros(4, np.float32)}
    cfg = dict(TINY)
    cfg.update(config)
    return InterventionModel.create(jax.random.PRNGKey(seed), obs, 2, 8, cfg)


def test_head_shapes_mlp_and_cnn(data):
    ds = data[1]
    m = _model({})
    out = m.predict({"state": ds.observations["state"][:64]}, ds.instr_ids[:64], ds.actions[:64], ds.value_history[:64])
    assert out["z_pred"].shape == (64, 8) and out["h"].shape == (64, 32)
    for k in ("q1", "q2", "q", "v_now", "risk", "trigger_prob"):
        assert out[k].shape == (64,) and out[k].dtype == np.float32, k
    np.testing.assert_allclose(out["q"], np.minimum(out["q1"], out["q2"]))
    assert not np.allclose(out["q1"], out["q2"])  # two independent heads
    np.testing.assert_allclose(out["trigger_prob"], 1 / (1 + np.exp(-out["risk"].astype(np.float64))), rtol=1e-6)
    fires = trigger_rule(out, 0.5)  # the gate's rule
    assert fires.dtype == bool and np.array_equal(fires, out["trigger_prob"] >= 0.5)

    obs = {"pixels": np.zeros((16, 16, 3), np.uint8), "state": np.zeros(3, np.float32)}
    cnn = _model({"model": dict(TINY["model"], backbone="cnn", image_keys=("pixels",), cnn_widths=(4, 8),
                                cnn_latent_dim=8)}, obs)
    assert "encoder" in cnn.params["encoder"]
    r = np.random.default_rng(0)
    imgs = {"pixels": r.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8), "state": np.zeros((3, 3), np.float32)}
    out = cnn.predict(imgs, np.ones(16, np.int32), np.zeros((3, 2), np.float32), np.zeros((3, K + 1), np.float32))
    assert out["z_pred"].shape == (3, 8) and out["risk"].shape == (3,)
    with pytest.raises(ValueError, match="image_keys"):
        _model({"model": dict(backbone="cnn")}, obs)


def _fixed_batch_loss_drop(model, batch, steps=40):
    first = None
    for _ in range(steps):
        model, info = model.update(batch)
        first = float(info["loss"]) if first is None else first
    _, last = model.update(batch)
    return first, float(last["loss"]), info


def _risk_input_width(params, head):
    """Input width of the trigger head ``head`` (the first kernel of its MLP)."""
    return int(params[head]["MLP_0"]["Dense_0"]["kernel"].shape[0])


def test_no_future_ablation_has_no_future_head_and_trains(data):
    """w/o future prediction (official variant no_future): no future head, no future loss; the Q
    and trigger heads read h_t (H = 32) instead of z (D = 8)."""
    batch = data[0].batch(np.arange(64))
    full, abl = _model({}), _model({"use_future": False})
    _, info_full = full.update(batch)
    _, info_abl = abl.update(batch)
    assert "future_loss" in info_full and "future_loss" not in info_abl
    assert "future_head" in full.params and "future_head" not in abl.params
    out = abl.predict(batch["observations"], batch["instr_ids"], batch["actions"], batch["value_history"])
    assert "z_pred" not in out and out["q"].shape == (64,)
    # risk head input: [z or h, history embedding (32), Q_min (1)]
    assert _risk_input_width(full.params, "risk_head") == 8 + 32 + 1
    assert _risk_input_width(abl.params, "risk_head") == 32 + 32 + 1
    first, last, _ = _fixed_batch_loss_drop(abl, batch)
    assert last < 0.7 * first


def test_no_value_cond_ablation_drops_only_the_q_input(data):
    """w/o value prediction (official no_value_cond): the trigger head gets no stop_grad(Q_min);
    the Q head and its loss stay, and the trigger output no longer depends on Q."""
    batch = data[0].batch(np.arange(64))
    full, abl = _model({}), _model({"use_value_cond": False})
    assert _risk_input_width(full.params, "risk_head") - _risk_input_width(abl.params, "risk_head") == 1
    _, info = abl.update(batch)
    assert "q_loss" in info and "risk_tvr_loss" in info
    # perturbing the Q head changes the full model's risk but not the ablation's
    def shifted(m):
        p = jax.tree_util.tree_map(lambda x: x, m.params)
        p["q_head"] = jax.tree_util.tree_map(lambda x: x + 0.5, p["q_head"])
        return m.replace(state=m.state.replace(params=p))
    args = (batch["observations"], batch["instr_ids"], batch["actions"], batch["value_history"])
    assert not np.allclose(full.predict(*args)["risk"], shifted(full).predict(*args)["risk"])
    np.testing.assert_array_equal(abl.predict(*args)["risk"], shifted(abl).predict(*args)["risk"])
    first, last, _ = _fixed_batch_loss_drop(abl, batch)
    assert last < 0.7 * first


def test_binary_head_is_the_no_tvr_trigger(data):
    """head_type="binary" (official InterventionHead; the w/o-TVR ablation): a separate focal
    head in -> 4 in -> 1 over [z, stop_grad(Q_min)]; no value history, no TVR target, no
    current-value head; the value history does not change its output."""
    batch = data[0].batch(np.arange(64))
    full, binary = _model({}), _model({"head_type": "binary"})
    for p in ("history_encoder", "risk_head", "value_head"):
        assert p in full.params and p not in binary.params
    assert "trigger_head" in binary.params and _risk_input_width(binary.params, "trigger_head") == 8 + 1
    assert binary.params["trigger_head"]["MLP_0"]["Dense_0"]["kernel"].shape == (9, 4 * 8)  # official: Linear(in + 1, 4 in)
    _, info_full = full.update(batch)
    _, info_bin = binary.update(batch)
    for term in ("risk_tvr_loss", "value_loss"):
        assert term in info_full and term not in info_bin
    assert "focal_loss" in info_bin and "q_loss" in info_bin
    no_tvr = {k: v for k, v in batch.items() if k not in ("tvr", "values_now")}
    binary.update(no_tvr)  # the binary head needs neither the TVR target nor V_t
    args = (batch["observations"], batch["instr_ids"], batch["actions"])
    out = binary.predict(*args, batch["value_history"])
    assert "v_now" not in out
    np.testing.assert_array_equal(out["risk"], binary.predict(*args, np.zeros_like(batch["value_history"]))["risk"])
    np.testing.assert_array_equal(trigger_rule(out, 0.5), out["trigger_prob"] >= 0.5)
    first, last, _ = _fixed_batch_loss_drop(binary, batch)
    assert last < 0.7 * first
    with pytest.raises(ValueError, match="head_type"):
        _model({"head_type": "current_value"})


def test_training_separates_falling_from_rising_histories(data, trained):
    model, history = trained
    assert history[-1]["loss"] < history[0]["loss"]
    te = data[1]
    out = model.predict(te.observations, te.instr_ids, te.actions, te.value_history)
    _, _, f1 = trigger_metrics(trigger_rule(out, 0.5), te.labels)
    assert f1 > 0.8
    # the regressed risk tracks the TVR target
    assert np.corrcoef(out["risk"], te.tvr)[0, 1] > 0.8


def test_save_load_round_trip_identical_predictions(tmp_path, data, trained):
    model, _ = trained
    te = data[1]
    args = (te.observations, te.instr_ids, te.actions, te.value_history)
    model.save(str(tmp_path / "iv"))
    loaded = InterventionModel.load(str(tmp_path / "iv"))
    a, b = model.predict(*args), loaded.predict(*args)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert loaded.config.to_dict() == model.config.to_dict()
    assert int(loaded.state.step) == int(model.state.step) == 250
    loaded.update(te.batch(np.arange(64)))  # trainable after reload (same batch shape: no recompile)
    with pytest.raises(FileNotFoundError):
        InterventionModel.load(str(tmp_path / "nothing"))


def test_bad_inputs_raise(data):
    m = _model({})
    b = data[0].batch(np.arange(4))
    with pytest.raises(ValueError, match="value_history"):
        m.predict(b["observations"], b["instr_ids"], b["actions"], b["value_history"][:, :5])
    with pytest.raises(ValueError, match="actions"):
        m.predict(b["observations"], b["instr_ids"], b["actions"][:, :1], b["value_history"])
    bad = dict(b, tvr=np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="NaN"):
        m.update(bad)
    with pytest.raises(ValueError, match="tvr"):
        m.update({k: v for k, v in b.items() if k != "tvr"})
    with pytest.raises(ValueError, match="unknown"):
        _model({"use_futur": False})
    with pytest.raises(ValueError):
        InterventionDataset(observations={"state": np.zeros((0, 2))}, instr_ids=np.zeros((0, 16)),
                            actions=np.zeros((0, 2)), values_now=[], values_next=[],
                            value_history=np.zeros((0, 9)), tvr=[], labels=[],
                            target_latents_next=np.zeros((0, 4)), episode_index=[], t=[])


def test_natural_frequency_sampling_over_decision_rows(data):
    """Batches are drawn at the natural class frequency (official code; no 50/50 balancing on
    top of the focal alpha) and only from decision rows t >= K (full real value history)."""
    ds = data[0]
    rare = ds.subset(np.concatenate([np.nonzero(ds.labels)[0][:20], np.nonzero(~ds.labels)[0][:380]]))
    decide = rare.decision_mask
    assert np.array_equal(decide, rare.t >= K) and 0 < decide.sum() < len(rare)
    natural = rare.labels[decide].mean()
    rng = np.random.default_rng(0)
    idx = rare.sample_indices(rng, 20000)
    assert np.all(rare.t[idx] >= K)
    assert rare.labels[idx].mean() == pytest.approx(natural, abs=0.01)  # was 0.5 with balancing
    assert natural < 0.1
    batch = rare.sample(rng, 64)
    assert batch["labels"].shape == (64,)


# ------------------------------------------------------------------ dataset building
def _episode(T, seed, task="pick-place", success=True, takeover=None):
    r = np.random.default_rng(seed)
    interventions = np.zeros(T, bool)
    if takeover is not None:
        interventions[takeover:] = True
    return {"observations": {"state": r.normal(size=(T + 1, 4)).astype(np.float32)},
            "actions": r.uniform(-1, 1, (T, 2)).astype(np.float32), "rewards": np.zeros(T, np.float32),
            "terminals": np.zeros(T, bool), "truncations": np.zeros(T, bool), "interventions": interventions,
            "action_source": (2 * interventions).astype(np.int8),
            "metadata": {"task": task, "success": success}}


def test_history_windows_against_loop():
    v = np.array([0.1, 0.2, 0.15, 0.4, 0.3], np.float32)
    got = history_windows(v, 3)
    for t in range(5):
        expect = [v[max(0, t - 3 + j)] for j in range(4)]
        np.testing.assert_array_equal(got[t], expect)
    with pytest.raises(ValueError):
        history_windows(np.array([]), 3)


def test_build_dataset_from_episodes():
    eps = [_episode(12, 0), _episode(7, 1, success=False, takeover=3)]
    values = [np.linspace(0, 1, 13), np.full(8, 0.2)]
    labels = [np.zeros(12, bool), np.arange(7) >= 2]
    tvr = [np.full(12, -0.1), np.full(7, 0.1)]
    enc = RandomProjectionEncoder({"state": (4,)}, 6, seed=1)
    assert isinstance(enc, TargetEncoder)
    ds = build_dataset(eps, values, labels, tvr, enc)
    assert len(ds) == 19 and ds.num_episodes == 2 and ds.history_len == K
    np.testing.assert_array_equal(ds.instr_ids[0], tokenize_instruction(instruction_for("pick-place")))
    np.testing.assert_allclose(ds.target_latents_next[:12], enc.encode({"state": eps[0]["observations"]["state"][1:]}))
    np.testing.assert_array_equal(ds.next_observations["state"][12:], eps[1]["observations"]["state"][1:])
    np.testing.assert_allclose(ds.values_next[:12], values[0][1:], rtol=1e-6)
    # t = 5, K = 8: [V_{-3}, ..., V_5], indices < 0 padded with V_0 = 0
    np.testing.assert_allclose(ds.value_history[5], [0, 0, 0, 0, 1 / 12, 2 / 12, 3 / 12, 4 / 12, 5 / 12], atol=1e-6)
    np.testing.assert_array_equal(ds.interventions[12:], np.arange(7) >= 3)
    np.testing.assert_array_equal(ds.episode_success, [True] * 12 + [False] * 7)
    with pytest.raises(ValueError, match="values"):
        build_dataset(eps, [values[0], np.full(7, 0.2)], labels, tvr, enc)
    with pytest.raises(ValueError, match="NaN"):
        build_dataset(eps, [values[0], np.full(8, np.nan)], labels, tvr, enc)
    with pytest.raises(ValueError, match="no episodes"):
        build_dataset([], [], [], [], enc)


def test_target_encoders():
    enc = RandomProjectionEncoder({"state": (4,), "pixels": np.zeros((2, 2, 3), np.uint8)}, 5, seed=3)
    r = np.random.default_rng(0)
    obs = {"state": r.normal(size=(3, 4)).astype(np.float32), "pixels": r.integers(0, 255, (3, 2, 2, 3), dtype=np.uint8)}
    z = enc.encode(obs)
    assert z.shape == (3, 5) and z.dtype == np.float32
    x = np.concatenate([obs["pixels"].reshape(3, -1) / 255.0, obs["state"]], 1)  # sorted keys
    np.testing.assert_allclose(z, x @ enc.matrix, rtol=1e-5)
    np.testing.assert_array_equal(z, RandomProjectionEncoder({"state": (4,), "pixels": (2, 2, 3)}, 5, 3).encode(obs))

    class FakeValue:
        latent_dim = 3
        calls = 0

        def encode(self, o, ids):
            FakeValue.calls += 1
            return np.asarray(o["state"])[:, :3] * 2 + ids[:, :1]

    pv = ProxyValueTargetEncoder(FakeValue(), batch_size=2)
    assert pv.dim == 3
    z = pv.encode({"state": obs["state"]}, np.ones((3, 16), np.int32))
    np.testing.assert_allclose(z, obs["state"][:, :3] * 2 + 1)
    assert FakeValue.calls == 2
    with pytest.raises(TypeError):
        ProxyValueTargetEncoder(object())


# ------------------------------------------------------------------ report
def test_trigger_metrics_hand_built():
    p, r, f = trigger_metrics(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 0, 1], bool))
    assert (p, r, f) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    p, r, f = trigger_metrics(np.array([1, 0, 0, 0]), np.array([1, 1, 0, 0]))
    assert (p, r, f) == pytest.approx((1.0, 0.5, 2 / 3))
    assert trigger_metrics(np.zeros(4, bool), np.zeros(4, bool)) == (1.0, 1.0, 1.0)
    assert trigger_metrics(np.zeros(4, bool), np.ones(4, bool)) == (0.0, 0.0, 0.0)
    assert trigger_metrics(np.ones(4, bool), np.zeros(4, bool)) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        trigger_metrics(np.zeros(3, bool), np.zeros(4, bool))
    with pytest.raises(TypeError):
        trigger_metrics(np.array([0.5, 1.0]), np.array([True, False]))


def test_lead_times_and_false_triggers_hand_built():
    trig = [np.array([0, 0, 1, 1, 0, 0, 0, 0], bool),   # takeover at 6: first trigger at 2 -> 4
            np.array([0, 0, 1, 1, 0, 0, 0, 0], bool),   # window 3 -> looks at [3, 6]: fires at 3 -> 3
            np.array([0, 0, 0, 0, 0, 1, 1, 0], bool),   # takeover 3, fires later -> None
            np.array([0, 0, 0, 1, 0], bool),            # fires exactly at takeover -> 0
            np.array([1, 0, 0], bool)]                  # no takeover -> None
    assert lead_times(trig[:1] + trig[2:], [6, 3, 3, None]) == [4, None, 0, None]
    assert lead_times(trig[1:2], [6], window=3) == [3]
    assert lead_times(trig[1:2], [6], window=1) == [None]
    with pytest.raises(ValueError):
        lead_times(trig[:1], [8])
    assert false_trigger_rate([np.array([0, 0, 1, 0], bool), np.zeros(4, bool)]) == (0.5, 1 / 8)
    with pytest.raises(ValueError):
        false_trigger_rate([])


def test_intervention_report(tmp_path, trained):
    model, _ = trained
    eps = [_episode(30, i, success=(i % 2 == 0), takeover=None if i % 2 == 0 else 20) for i in range(4)]
    values = [np.clip(np.concatenate([np.linspace(0, 0.6, 16), np.linspace(0.6, 0.3, 15)]), 0, 1) for _ in eps]
    labels = [np.arange(30) >= 15 for _ in eps]
    tvr = [np.array([tvr_loop(h) for h in history_windows(v[:-1], K)], np.float32) for v in values]
    ds = build_dataset(eps, values, labels, tvr, RandomProjectionEncoder({"state": (4,)}, 8, 0),
                       instr_ids=np.ones(16, np.int32))
    rep = intervention_report(model, ds, out_dir=str(tmp_path / "rep"), lead_window=20)
    for k in ("q_loss", "trigger_precision", "trigger_recall", "trigger_f1", "trigger_lead_steps",
              "false_trigger_rate_success"):
        assert k in rep
    out = model.predict(ds.observations, ds.instr_ids, ds.actions, ds.value_history)
    decide = ds.t >= K  # no decision before K real history steps
    pred = trigger_rule(out, 0.5) & decide
    assert (rep["trigger_precision"], rep["trigger_recall"], rep["trigger_f1"]) == pytest.approx(
        trigger_metrics(pred[decide], ds.labels[decide]))
    assert rep["num_decisions"] == int(decide.sum()) and rep["tau"] == 0.5
    assert rep["best_threshold"] in [round(0.05 * i, 2) for i in range(1, 20)]
    assert 0.0 <= rep["auprc"] <= 1.0 and len(rep["threshold_sweep"]) == 19
    trig_eps = [pred[ds.episode_index == e] for e in range(4)]
    leads = [x for x in lead_times([trig_eps[1], trig_eps[3]], [20, 20], 20) if x is not None]
    assert rep["trigger_lead_steps"] == (float(np.median(leads)) if leads else None)
    assert rep["false_trigger_rate_success"] == pytest.approx(false_trigger_rate([trig_eps[0], trig_eps[2]])[0])
    assert rep["takeover_episodes"] == 2 and rep["q_loss"] > 0
    assert os.path.getsize(rep["timeline_plot"]) > 1000 and rep["timeline_plot"].endswith("timeline_episode1.png")
    assert os.path.exists(tmp_path / "rep" / "intervention_report.json")


# ------------------------------------------------------------------ transformers adapter
def test_hf_encoder_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        HFVisionTargetEncoder(str(tmp_path / "no_such_model"))
    with pytest.raises(FileNotFoundError):
        HFVisionTargetEncoder("google/siglip-base-patch16-224")  # a hub id is never resolved


def test_hf_encoder_tiny_siglip(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.SiglipVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                          image_size=32, patch_size=8, intermediate_size=37)
    transformers.SiglipVisionModel(cfg).save_pretrained(str(tmp_path / "tiny"))
    r = np.random.default_rng(0)
    obs = {"pixels": r.integers(0, 255, (5, 24, 24, 3), dtype=np.uint8)}
    for pooling in ("mean", "cls", "pooler"):
        enc = HFVisionTargetEncoder(str(tmp_path / "tiny"), pooling=pooling, batch_size=2)
        z = enc.encode(obs)
        assert enc.dim == 32 and z.shape == (5, 32) and z.dtype == np.float32 and np.all(np.isfinite(z))
        np.testing.assert_allclose(z[:1], enc.encode({"pixels": obs["pixels"][:1]}), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        enc.encode({"pixels": np.zeros((2, 8, 8), np.uint8)})
