"""Tests for uniintervene_jax.recovery (training pairs, recovery policy heads, persistence)."""

import numpy as np
import pytest

from uniintervene_jax.instructions import instruction_for, tokenize_instruction
from uniintervene_jax.recovery import (
    FASTTokenizer,
    RecoveryPolicy,
    get_default_config,
    recovery_training_pairs,
    roundtrip_error_bound,
    train_recovery_policy,
)

H, A = 8, 2


# ---------------------------------------------------------------- training pairs
def make_episode(ep_id, T, success, interventions=(), task="pick-place"):
    t = np.arange(T + 1, dtype=np.float32)
    iv = np.zeros(T, bool)
    iv[list(interventions)] = True
    return {
        "observations": {"state": np.stack([np.full(T + 1, ep_id, np.float32), t], -1)},
        "actions": np.stack([np.full(T, ep_id / 10, np.float32), t[:T] / 100], -1),
        "interventions": iv,
        "metadata": {"task": task, "success": success},
    }


def test_training_pairs_by_hand():
    ok = make_episode(1, T=10, success=True)
    v_ok = np.linspace(0, 1, 11)
    bad = make_episode(2, T=10, success=False, interventions=(2, 3, 8))
    v_bad = np.array([0.5, 0.4, 0.3, 0.35, 0.4, 0.6, 0.7, 0.7, 0.7, 0.7, 0.2])
    pairs = recovery_training_pairs([ok, bad], [v_ok, v_bad], horizon=H, goal_offset=3, stride=4)
    # Successful episode: anchors 0, 4, 8 (stride 4), goals min(t+3, 10), value always rises.
    # Failed episode: intervention anchors 2, 3 (goals 5, 6: value rises); 8 -> goal 10 drops: dropped.
    got = list(zip(pairs["episode_index"].tolist(), pairs["t"].tolist(), pairs["goal_t"].tolist()))
    assert got == [(0, 0, 3), (0, 4, 7), (0, 8, 10), (1, 2, 5), (1, 3, 6)]
    assert pairs["source"].tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_allclose(pairs["value_gain"], [0.3, 0.3, 0.2, 0.3, 0.35], atol=1e-6)
    for j, (e, t, g) in enumerate(got):
        ep = [ok, bad][e]
        np.testing.assert_array_equal(pairs["observations"]["state"][j], ep["observations"]["state"][t])
        np.testing.assert_array_equal(pairs["goal_observations"]["state"][j], ep["observations"]["state"][g])
        idx = [min(i, 9) for i in range(t, t + H)]  # padded with the last action
        np.testing.assert_array_equal(pairs["actions"][j], ep["actions"][idx])
    np.testing.assert_array_equal(pairs["instructions"][0], tokenize_instruction(instruction_for("pick-place")))
    assert pairs["actions"].shape == (5, H, A) and pairs["instructions"].shape == (5, 16)
    # Several offsets; a minimum gain.
    p2 = recovery_training_pairs([ok], [v_ok], goal_offset=(1, 5), stride=5, min_value_gain=0.15)
    assert list(zip(p2["t"].tolist(), p2["goal_t"].tolist())) == [(0, 5), (5, 10)]
    # Nothing qualifies -> empty arrays with the right trailing shapes.
    p3 = recovery_training_pairs([bad], [v_bad], use_interventions=False)
    assert p3["actions"].shape == (0, 8, A) and p3["observations"]["state"].shape == (0, 2)
    with pytest.raises(ValueError):
        recovery_training_pairs([ok], [v_ok[:-1]])
    with pytest.raises(ValueError):
        recovery_training_pairs([ok], [v_ok], goal_offset=0)
    with pytest.raises(ValueError):
        recovery_training_pairs([], [])


# ---------------------------------------------------------------- policy
def tiny_pairs():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, H)[:, None]
    chunks = np.stack([
        0.5 * np.sin(2 * np.pi * f * t + p) * np.array([[1.0, -0.5]]) + o
        for f, p, o in [(0.5, 0.0, 0.1), (1.0, 1.0, -0.2), (0.3, 2.0, 0.0)]
    ]).astype(np.float32)
    ins = np.stack([tokenize_instruction(instruction_for(x)) for x in ("pick-place", "assembly", "pick-place")])
    return {
        "observations": {"state": rng.normal(size=(3, 5)).astype(np.float32)},
        "goal_observations": {"state": rng.normal(size=(3, 5)).astype(np.float32)},
        "instructions": ins,
        "actions": chunks,
    }


TINY = dict(cond_hidden_dims=(64, 64), embed_dim=32, num_layers=2, num_heads=2, mlp_ratio=2,
            num_prefix_tokens=2, max_tokens=20, chunk_hidden_dims=(64,), learning_rate=3e-3,
            fast=dict(vocab_size=270, scale=10.0, min_frequency=1))


@pytest.fixture(scope="module")
def trained():
    pairs = tiny_pairs()
    out = {}
    for head, steps in (("continuous", 150), ("token", 100)):
        policy, hist = train_recovery_policy(pairs, dict(TINY, head=head), num_steps=steps, batch_size=3,
                                             log_every=10, seed=0)
        out[head] = (policy, hist)
    return pairs, out


def test_default_config():
    c = get_default_config()
    assert (c.head, c.horizon, c.num_layers, c.embed_dim) == ("token", 8, 4, 256)
    assert c.fast.scale == 10.0 and 1024 <= c.fast.vocab_size <= 2048


def test_continuous_head_overfits(trained):
    pairs, out = trained
    policy, hist = out["continuous"]
    assert hist[-1]["train/mse"] < 1e-2 and hist[-1]["train/mse"] < hist[0]["train/mse"] / 10
    pred = policy.predict_chunk(pairs["observations"], pairs["goal_observations"], pairs["instructions"])
    assert pred.shape == (3, H, A) and pred.dtype == np.float32
    assert np.all(np.abs(pred) <= 1.0)
    assert np.mean((pred - pairs["actions"]) ** 2) < 1e-2
    # Unbatched input -> batch of one, same value.
    one = policy.predict_chunk({"state": pairs["observations"]["state"][1]},
                               {"state": pairs["goal_observations"]["state"][1]}, pairs["instructions"][1])
    np.testing.assert_allclose(one[0], pred[1], atol=1e-5)


def test_token_head_overfits_within_fast_bound(trained):
    pairs, out = trained
    policy, hist = out["token"]
    assert hist[-1]["train/loss"] < hist[0]["train/loss"]
    assert hist[-1]["train/token_accuracy"] == 1.0
    pred, info = policy.predict_chunk(pairs["observations"], pairs["goal_observations"], pairs["instructions"],
                                      return_info=True)
    assert pred.shape == (3, H, A) and not info["decode_failed"].any()
    bound = roundtrip_error_bound(10.0, H, A)
    for x, y in zip(pairs["actions"], pred):
        assert policy.tokenizer.in_range(x)
        assert np.linalg.norm(y - x) <= bound + 1e-5
    # Special ids sit above the BPE vocabulary.
    n = policy.tokenizer.actual_vocab_size
    assert (policy.pad_id, policy.eos_id, policy.bos_id) == (n, n + 1, n + 2)
    targets = policy.encode_chunks(pairs["actions"])
    for row, x in zip(targets, pairs["actions"]):
        toks = policy.tokenizer.encode(x)
        assert row[: len(toks)].tolist() == toks and row[len(toks)] == policy.eos_id
        assert np.all(row[len(toks) + 1:] == policy.pad_id)


def test_token_decode_failure_falls_back_to_zero(trained):
    pairs, out = trained
    policy, _ = out["token"]
    good = policy.encode_chunks(pairs["actions"][:1])[0]
    chunk, failed = policy._decode_row(good)
    assert not failed and chunk.shape == (H, A)
    no_eos = np.where(good == policy.eos_id, policy.pad_id, good)
    chunk, failed = policy._decode_row(no_eos)
    assert failed and np.all(chunk == 0)
    n_tok = int(np.flatnonzero(good == policy.eos_id)[0])
    corrupted = good.copy()
    corrupted[n_tok - 1] = policy.eos_id  # drops the last token -> wrong length
    chunk, failed = policy._decode_row(corrupted)
    assert failed and np.all(chunk == 0)


def test_save_load_roundtrip(trained, tmp_path):
    pairs, out = trained
    for head in ("continuous", "token"):
        policy, _ = out[head]
        d = str(tmp_path / head)
        policy.save(d)
        loaded = RecoveryPolicy.load(d)
        assert loaded.config.head == head and loaded.action_dim == A
        a = policy.predict_chunk(pairs["observations"], pairs["goal_observations"], pairs["instructions"])
        b = loaded.predict_chunk(pairs["observations"], pairs["goal_observations"], pairs["instructions"])
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="kind"):
        from uniintervene_jax import io
        io.save_model(str(tmp_path / "other"), "proxy_value", {}, {})
        RecoveryPolicy.load(str(tmp_path / "other"))


def test_bad_inputs(trained):
    pairs, out = trained
    policy, _ = out["continuous"]
    batch = dict(pairs)
    with pytest.raises(ValueError, match="\\[-1, 1\\]"):
        policy.update(dict(batch, actions=batch["actions"] * 5))
    with pytest.raises(ValueError, match="actions"):
        policy.update(dict(batch, actions=batch["actions"][:, :4]))
    with pytest.raises(ValueError, match="goal_observations"):
        policy.update({k: v for k, v in batch.items() if k != "goal_observations"})
    with pytest.raises(ValueError):
        policy.predict_chunk({"state": np.zeros((2, 4))}, {"state": np.zeros((2, 4))}, pairs["instructions"][:2])
    obs = {"state": np.zeros(5, np.float32)}
    with pytest.raises(ValueError, match="FASTTokenizer"):
        RecoveryPolicy.create(__import__("jax").random.PRNGKey(0), obs, A, dict(TINY, head="token"))
    tok = FASTTokenizer(vocab_size=270).fit(pairs["actions"][:, :4])
    with pytest.raises(ValueError, match="fitted on"):
        RecoveryPolicy.create(__import__("jax").random.PRNGKey(0), obs, A, dict(TINY, head="token"), tok)
    with pytest.raises(ValueError, match="unknown"):
        RecoveryPolicy.create(__import__("jax").random.PRNGKey(0), obs, A, {"nope": 1})
    with pytest.raises(ValueError, match="head"):
        RecoveryPolicy.create(__import__("jax").random.PRNGKey(0), obs, A, {"head": "diffusion"})
