"""Proxy value: labels, loss arithmetic, dataset, AUROC, report, a tiny training run and
save/load (DESIGN.md section 4)."""

import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uniintervene_jax.instructions import instruction_for, tokenize_instruction
from uniintervene_jax.value import (
    ProxyValue,
    ValueDataset,
    auroc,
    episode_success,
    monte_carlo_returns,
    nttg_progress,
    proxy_value_loss,
    train_proxy_value,
    value_curves,
    value_report,
)

TINY = dict(hidden_dims=(32, 32), latent_dim=16, head_hidden_dims=(32,), batch_size=64, lr=3e-3)


def make_episode(rng, success, T, task="pick-place"):
    """state = [t / T, drift]: drift rises for successful episodes, falls for failed ones."""
    t = np.arange(T + 1) / T
    drift = (t if success else -t) + 0.05 * rng.standard_normal(T + 1)
    terminals = np.zeros(T, bool)
    terminals[-1] = success
    rewards = np.zeros(T, np.float32)
    rewards[-1] = float(success)
    return {
        "observations": {"state": np.stack([t, drift], -1).astype(np.float32)},
        "actions": np.zeros((T, 2), np.float32),
        "rewards": rewards,
        "terminals": terminals,
        "truncations": ~terminals,
        "interventions": np.zeros(T, bool),
        "action_source": np.zeros(T, np.int8),
        "metadata": {"task": task, "success": bool(success)},
    }


# ------------------------------------------------------------------ labels
def test_nttg_progress_by_hand():
    np.testing.assert_allclose(nttg_progress(5, True), [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(nttg_progress(1, True), [1.0])
    np.testing.assert_array_equal(nttg_progress(4, False), np.zeros(4))
    assert nttg_progress(3, True).dtype == np.float32
    with pytest.raises(ValueError):
        nttg_progress(0, True)
    with pytest.raises(TypeError):
        nttg_progress(2.0, True)


def test_monte_carlo_returns_by_hand():
    np.testing.assert_allclose(monte_carlo_returns([0, 0, 1], [False, False, True], 0.5), [0.25, 0.5, 1.0])
    # A terminal cuts the sum: G_2 = 1, G_1 = 1 (terminal), G_0 = 1 + 0.5 * 1.
    np.testing.assert_allclose(monte_carlo_returns([1, 1, 1], [False, True, False], 0.5), [1.5, 1.0, 1.0])
    with pytest.raises(ValueError):
        monte_carlo_returns([0.0, np.nan], [False, True], 0.9)
    with pytest.raises(ValueError):
        monte_carlo_returns([], [], 0.9)
    with pytest.raises(ValueError):
        monte_carlo_returns([0.0], [True], 1.5)


def test_episode_success_precedence():
    base = {"rewards": np.array([0.0, 1.0]), "terminals": np.array([False, True])}
    assert episode_success(dict(base, metadata={"success": False})) is False  # metadata wins
    assert episode_success(dict(base, metadata={}, success=np.array([False, False]))) is False
    assert episode_success(dict(base, metadata={}, success=np.array([False, True]))) is True
    assert episode_success(dict(base, metadata={})) is True  # positive terminal reward
    assert episode_success({"rewards": np.array([1.0, 0.0]), "terminals": np.array([False, True])}) is False


# -------------------------------------------------------------------- loss
def test_loss_on_three_samples_by_hand():
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    args = dict(
        v1=f([0.5, 0.2, 0.9]), v2=f([0.4, 0.3, 0.8]), v_next=f([0.6, 0.1, 0.0]),
        rewards=f([0, 0, 1]), dones=f([0, 0, 1]), progress=f([0.5, 0.0, 1.0]),
        mc_returns=f([0.3, 0.0, 1.0]), success=f([1, 0, 1]), weights=f([1, 2, 1]),
    )
    loss, info = proxy_value_loss(**args, gamma=0.5)
    # Official train_vf_stitched.compute_value_losses_from_preds: each term is
    # 0.5 * (head 1 + head 2) of a weighted mean sum(w x) / sum(w); here sum(w) = 4.
    # TD targets y = [0.3, 0.05, 1.0]
    td = 0.5 * ((0.04 + 2 * 0.0225 + 0.01) / 4 + (0.01 + 2 * 0.0625 + 0.04) / 4)
    assert float(info["td_loss"]) == pytest.approx(td, abs=1e-6) and td == pytest.approx(0.03375)
    # label target G_MC + progress * success = [0.8, 0.0, 2.0], on all samples
    label = 0.5 * ((0.09 + 2 * 0.04 + 1.21) / 4 + (0.16 + 2 * 0.09 + 1.44) / 4)
    assert float(info["label_loss"]) == pytest.approx(label, abs=1e-6) and label == pytest.approx(0.395)
    # progress term on successful samples only: weights w * success = [1, 0, 1], sum 2
    prog = 0.5 * ((0.0 + 0.01) / 2 + (0.01 + 0.04) / 2)
    assert float(info["progress_loss"]) == pytest.approx(prog, abs=1e-6) and prog == pytest.approx(0.015)
    cons = 0.5 * ((0.2 + 2 * 0.2) / 4 + (0.1 + 2 * 0.3) / 4)
    assert float(info["conservative_loss"]) == pytest.approx(cons, abs=1e-6)
    total = td + 0.3 * label + 1.0 * prog + 0.05 * cons
    assert float(loss) == pytest.approx(total, abs=1e-6) and total == pytest.approx(0.175375)
    # The label term is no longer a copy of the progress term (it was before issue 13).
    assert float(info["label_loss"]) != pytest.approx(float(info["progress_loss"]), rel=0.1)
    # The TD target is stopped: no gradient reaches v_next.
    g = jax.grad(lambda vn: proxy_value_loss(**dict(args, v_next=vn), gamma=0.5)[0])(args["v_next"])
    np.testing.assert_array_equal(np.asarray(g), 0.0)


# ----------------------------------------------------------------- dataset
def test_dataset_flattening_and_sampling():
    rng = np.random.default_rng(0)
    eps = [make_episode(rng, True, 3), make_episode(rng, False, 2)]
    data = ValueDataset.from_episodes(eps, gamma=0.99)
    assert len(data) == 5
    np.testing.assert_allclose(data.progress, [0, 0.5, 1, 0, 0])
    np.testing.assert_array_equal(data.rewards, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(data.dones, [0, 0, 1, 0, 0])  # failed one truncated: bootstrap
    np.testing.assert_allclose(data.mc_returns, [0.99 ** 2, 0.99, 1, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(data.weights, [1, 1, 1, 2, 2])
    np.testing.assert_array_equal(data.episode, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(data.t, [0, 1, 2, 0, 1])
    b = data.batch([2, 4])
    np.testing.assert_array_equal(b["observations"]["state"], [eps[0]["observations"]["state"][2],
                                                               eps[1]["observations"]["state"][1]])
    np.testing.assert_array_equal(b["next_observations"]["state"], [eps[0]["observations"]["state"][3],
                                                                    eps[1]["observations"]["state"][2]])
    np.testing.assert_array_equal(b["instructions"][0], tokenize_instruction(instruction_for("pick-place")))
    s = data.sample(np.random.default_rng(1), 10, failure_fraction=0.3)
    assert int((s["success"] == 0).sum()) == 3 and s["rewards"].shape == (10,)
    # Fallback: only successful episodes -> uniform over all samples.
    only = ValueDataset.from_episodes([eps[0]])
    assert only.sample(np.random.default_rng(2), 8)["success"].min() == 1.0


def test_dataset_rejects_bad_episodes():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        ValueDataset.from_episodes([])
    ep = make_episode(rng, True, 3)
    ep["metadata"] = {"success": True}
    with pytest.raises(ValueError, match="task"):
        ValueDataset.from_episodes([ep])
    bad = make_episode(rng, True, 3)
    bad["observations"]["state"][1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ValueDataset.from_episodes([bad])
    with pytest.raises(ValueError):
        ValueDataset.from_episodes([make_episode(rng, True, 3), make_episode(rng, True, 3, task="assembly") | {
            "observations": {"state": np.zeros((4, 3), np.float32)}}])


# ------------------------------------------------------------ AUROC/report
def _pairwise_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


def test_auroc_matches_pairwise_loop_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 4, size=15).astype(float)  # many ties
        labels = rng.integers(0, 2, size=15).astype(bool)
        if labels.all() or not labels.any():
            continue
        assert auroc(scores, labels) == pytest.approx(_pairwise_auroc(scores, labels))
    assert auroc([0.1, 0.9], [0, 1]) == 1.0 and auroc([0.5, 0.5], [0, 1]) == 0.5
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        auroc([0.1, np.nan], [0, 1])


class _CurveModel:
    """Stub: the value is the first state coordinate."""

    def values(self, obs, ids):
        return np.asarray(obs["state"])[:, 0]


def _stub_episode(curve, success):
    T = len(curve) - 1
    return {"observations": {"state": np.asarray(curve, np.float32)[:, None]}, "actions": np.zeros((T, 1)),
            "metadata": {"task": "pick-place", "success": success}}


def test_value_report_arithmetic(tmp_path):
    eps = [_stub_episode([0.0, 0.2, 0.1, 0.6, 0.9], True),   # 3 of 4 steps non-decreasing
           _stub_episode([0.0, 0.3, 0.5, 0.7, 0.8], True),   # 4 of 4
           _stub_episode([0.0, 0.1, 0.1, 0.0, 0.05], False)]
    r = value_report(_CurveModel(), eps, fraction=0.5, out_dir=str(tmp_path))
    assert r["value_monotonic_fraction"] == pytest.approx((0.75 + 1.0) / 2)
    # Values at index round(0.5 * 4) = 2: successes 0.1, 0.5 vs failure 0.1 -> pairs tie (1/2)
    # and win (1): AUROC (0.5 + 1) / 2.
    assert r["value_auroc"] == pytest.approx(0.75)
    assert r["final_value_success"] == pytest.approx(0.85) and r["final_value_failure"] == pytest.approx(0.05)
    assert os.path.getsize(tmp_path / "value_curves.png") > 1000
    assert [len(c) for c in value_curves(_CurveModel(), eps)] == [5, 5, 5]


# --------------------------------------------------------------- training
def test_tiny_training_separates_success_from_failure(tmp_path):
    rng = np.random.default_rng(0)
    train = [make_episode(rng, i % 2 == 0, int(rng.integers(10, 21))) for i in range(24)]
    held = [make_episode(rng, i % 2 == 0, int(rng.integers(10, 21))) for i in range(10)]
    model = train_proxy_value(train, TINY, steps=200, progress_bar=False)
    r = value_report(model, held, fraction=0.5, out_dir=str(tmp_path))
    assert r["value_auroc"] > 0.8
    assert r["final_value_success"] > r["final_value_failure"] + 0.3
    curves = value_curves(model, held)
    for c, ep in zip(curves, held):
        assert c.shape == (len(ep["actions"]) + 1,) and np.all((c >= 0) & (c <= 1))
        if ep["metadata"]["success"]:
            assert c[-1] > c[0]
    # Save/load round trip from the folder alone gives identical values and latents.
    model.save(str(tmp_path / "pv"))
    loaded = ProxyValue.load(str(tmp_path / "pv"))
    obs, ids = held[0]["observations"], tokenize_instruction(instruction_for("pick-place"))
    np.testing.assert_array_equal(model.values(obs, ids), loaded.values(obs, ids))
    z = loaded.encode(obs, ids)
    assert z.shape == (len(held[0]["actions"]) + 1, 16)
    np.testing.assert_array_equal(model.encode(obs, ids), z)
    one = {"state": obs["state"][3]}
    assert model.values(one, ids).shape == () and model.values(one, ids) == pytest.approx(
        model.values(obs, ids)[3], abs=1e-6)


def test_update_decreases_loss_on_a_fixed_batch():
    rng = np.random.default_rng(3)
    data = ValueDataset.from_episodes([make_episode(rng, i % 2 == 0, 12) for i in range(6)])
    model = ProxyValue.create(0, {"state": data.frames["state"][0]}, TINY)
    batch = data.batch(np.arange(len(data)))
    _, first = model.update(batch)
    for _ in range(40):
        model, info = model.update(batch)
    assert float(info["loss"]) < 0.5 * float(first["loss"])
    with pytest.raises(ValueError, match="missing"):
        model.update({k: v for k, v in batch.items() if k != "progress"})
    with pytest.raises(ValueError):
        model.update(dict(batch, rewards=batch["rewards"][:-1]))
    with pytest.raises(ValueError, match="unknown"):
        ProxyValue.create(0, {"state": data.frames["state"][0]}, dict(TINY, hiden_dims=(8,)))


def test_small_cnn_images_build_and_train():
    rng = np.random.default_rng(0)
    eps = []
    for i in range(2):
        ep = make_episode(rng, i == 0, 4)
        ep["observations"]["pixels"] = rng.integers(0, 255, size=(5, 16, 16, 3), dtype=np.uint8)
        eps.append(ep)
    cfg = dict(TINY, encoder=dict(type="small_cnn", image_keys=("pixels",), widths=(4,), latent_dim=8))
    model = train_proxy_value(eps, cfg, steps=2, progress_bar=False)
    v = model.values(eps[0]["observations"], tokenize_instruction(instruction_for("pick-place")))
    assert v.shape == (5,) and np.all(np.isfinite(v))


def test_instruction_for_stand_ins_and_any_other_task():
    assert instruction_for("pick-place") == instruction_for("pick-place-v3") == "pick up the object and place it at the goal"
    assert instruction_for("drawer-open-v3") == instruction_for("drawer-open") == "drawer open"
    assert instruction_for("gym:Pendulum-v1") == "pendulum"
    assert instruction_for("gym:my_pkg.envs:ReachTarget-v0") == "reach target"
    with pytest.raises(ValueError, match="no words"):
        instruction_for("---")


class _CountingModel:
    """Stub: value = state[:, 0] + 10 x (instruction is pick-place's); records each call's batch size."""

    def __init__(self):
        self.calls = []
        self.pick = tokenize_instruction(instruction_for("pick-place"))

    def values(self, obs, ids):
        x = np.asarray(obs["state"])
        self.calls.append(len(x))
        return x[:, 0] + 10.0 * float(np.array_equal(np.asarray(ids), self.pick))


def test_value_curves_batches_episodes_of_a_task_and_splits_them_back(monkeypatch):
    """Against a plain loop over episodes: the batched calls give every episode its own curve, per
    task (each with its instruction), in order, and keep each call under VALUE_CURVE_BYTES."""
    import uniintervene_jax.value.model as value_model

    rng = np.random.default_rng(0)
    eps = [make_episode(rng, i % 2 == 0, int(rng.integers(3, 9)), task=("pick-place", "assembly")[i % 3 == 0])
           for i in range(9)]
    expected = [np.asarray(e["observations"]["state"])[:, 0] + 10.0 * (e["metadata"]["task"] == "pick-place")
                for e in eps]
    model = _CountingModel()
    got = value_curves(model, eps)
    assert len(model.calls) == 2  # one call per task
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    row_bytes = eps[0]["observations"]["state"][0].nbytes
    monkeypatch.setattr(value_model, "VALUE_CURVE_BYTES", 12 * row_bytes)
    model = _CountingModel()
    got = value_curves(model, eps)
    assert len(model.calls) > 2
    # a call never exceeds the budget unless it holds a single (longer) episode
    assert all(n <= 12 or n in [len(e["observations"]["state"]) for e in eps] for n in model.calls)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    assert value_curves(model, []) == []


def test_host_observations_match_device_ones():
    from serl_ext.agents.common import policy_observations

    spec = (("state", (3,), "float32"),)
    one = {"state": np.arange(3, dtype=np.float64)}
    dev, squeeze = policy_observations(one, spec)
    host, squeeze_h = policy_observations(one, spec, host=True)
    assert squeeze and squeeze_h and isinstance(host["state"], np.ndarray)
    assert host["state"].dtype == np.float32 and host["state"].shape == (1, 3)
    np.testing.assert_array_equal(host["state"], np.asarray(dev["state"]))
    with pytest.raises(ValueError, match="expected shape"):
        policy_observations({"state": np.zeros((2, 4))}, spec, host=True)
    with pytest.raises(ValueError, match="dtype"):
        policy_observations({"state": np.zeros(3, np.complex64)}, spec, host=True)


def test_value_curves_names_the_episode_whose_observations_do_not_stack():
    rng = np.random.default_rng(1)
    eps = [make_episode(rng, True, 4), make_episode(rng, False, 5)]
    eps[1]["observations"] = {"state": np.zeros((6, 3), np.float32)}  # 3 features instead of 2
    with pytest.raises(ValueError, match="episode 1: observation keys/shapes"):
        value_curves(_CountingModel(), eps)
    eps[1]["observations"] = {"pixels": np.zeros((6, 2), np.float32)}
    with pytest.raises(ValueError, match="episode 1"):
        value_curves(_CountingModel(), eps)
