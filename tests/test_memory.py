"""Tests for uniintervene_jax.memory (mining, RecoveryMemory retrieval/persistence, audit)."""

import json
import os

import numpy as np
import pytest

from uniintervene_jax.memory import (
    FOLD_TOWEL_MINING,
    Candidate,
    MemoryConfig,
    MemoryFormatError,
    MiningConfig,
    RecoveryItems,
    RecoveryMemory,
    candidate_windows,
    memory_audit,
    mine_recovery_items,
    mining_preset,
    select_windows,
)


# ---------------------------------------------------------------- mining
def test_presets():
    d = mining_preset("default")
    assert (d.max_items, d.num_bins, d.span, d.delta, d.goal_min_value, d.per_episode_cap, d.horizon) == (
        120, 10, 8, 0.5, 0.75, 2, 8)
    f = mining_preset("fold_towel")
    assert f is FOLD_TOWEL_MINING
    assert (f.max_items, f.num_bins, f.span, f.delta) == (240, 20, 32, 0.40)
    assert d.quota == 12 and f.quota == 12
    with pytest.raises(KeyError):
        mining_preset("nope")
    with pytest.raises(ValueError):
        MiningConfig(span=0)


def test_candidate_windows_hand_curve():
    v = [0, 0, 0, 0.1, 0.3, 0.6, 0.8, 0.9, 0.9, 0.9, 0.9, 0.95, 1.0]
    got = candidate_windows(v, span=4, delta=0.5, goal_min_value=0.75)
    assert [s for s, _ in got] == [2, 3, 4]
    np.testing.assert_allclose([r for _, r in got], [0.8, 0.8, 0.6])
    # Rise exactly delta counts; goal just below 0.75 does not.
    assert candidate_windows([0.25, 0.75], span=1, delta=0.5) == [(0, 0.5)]
    assert candidate_windows([0.2, 0.74], span=1, delta=0.5) == []


def test_candidate_windows_against_plain_loop():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = np.clip(np.cumsum(rng.uniform(-0.1, 0.25, size=30)), 0, 1)
        span, delta = int(rng.integers(1, 8)), float(rng.uniform(0.2, 0.6))
        ref = []
        for s in range(len(v)):
            e = s + span
            if e < len(v) and v[e] - v[s] >= delta and v[e] >= 0.75:
                ref.append(s)
        assert [s for s, _ in candidate_windows(v, span, delta)] == ref


def test_curve_validation():
    with pytest.raises(ValueError, match="normalised"):
        candidate_windows([0.0, 1.5], 1, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        candidate_windows([0.0, np.nan], 1, 0.5)
    with pytest.raises(ValueError):
        candidate_windows([0.5], 1, 0.5)


def test_select_windows_quota_cap_and_leftover():
    C = Candidate
    cands = [
        C(0, 0, 0.9, 0.0, 0), C(0, 1, 0.9, 0.0, 0), C(0, 2, 0.8, 0.1, 0), C(1, 0, 0.7, 0.0, 0),
        C(2, 1, 0.7, 0.1, 0), C(0, 10, 0.95, 0.9, 2), C(3, 11, 0.6, 0.9, 2), C(3, 12, 0.6, 0.9, 2),
    ]
    cfg = MiningConfig(max_items=6, num_bins=3, span=1, per_episode_cap=2)
    got = [(c.episode, c.start) for c in select_windows(cands[::-1], cfg)]
    # Pass 1: bin 0 takes ep0/s0, ep0/s1 (ep0 capped); bin 2 skips ep0/s10 and takes ep3 x2.
    # Pass 2 (2 leftover slots from empty bin 1): bin 0 takes ep1/s0, then ep2/s1.
    assert got == [(0, 0), (0, 1), (1, 0), (2, 1), (3, 11), (3, 12)]
    # Cap 1: bin 0 takes ep0/s0 and ep1/s0, bin 2 ep0/s10 is capped -> ep3/s11; leftover
    # round-robin: bin 0 ep2/s1, bin 2 nothing eligible (ep3 capped): 4 of 6 items.
    got = [(c.episode, c.start) for c in select_windows(cands, MiningConfig(max_items=6, num_bins=3, span=1,
                                                                           per_episode_cap=1))]
    assert got == [(0, 0), (1, 0), (2, 1), (3, 11)]


def test_select_windows_small_budget_exact():
    C = Candidate
    cands = [C(0, 0, 0.9, 0.0, 0), C(1, 0, 0.8, 0.0, 0), C(2, 5, 0.7, 0.5, 1), C(3, 9, 0.6, 0.9, 2),
             C(4, 9, 0.65, 0.9, 2)]
    # quota = 4 // 3 = 1; pass 1: ep0 (bin0), ep2 (bin1), ep4 (bin2, larger rise); leftover 1 -> bin0 ep1.
    got = [(c.episode, c.start) for c in select_windows(cands, MiningConfig(max_items=4, num_bins=3, span=1))]
    assert got == [(0, 0), (1, 0), (2, 5), (4, 9)]


def ramp_episode(ep_id, T, ramp_start, ramp_len, success=True, task="pick-place-v3", A=2):
    """State obs [ep, t]; actions [ep, t] / 100; value 0 then a linear ramp to 1."""
    t = np.arange(T + 1, dtype=np.float32)
    v = np.clip((t - ramp_start) / ramp_len, 0, 1)
    ep = {
        "observations": {"state": np.stack([np.full(T + 1, ep_id, np.float32), t], -1)},
        "actions": np.stack([np.full(T, ep_id, np.float32), t[:T]], -1)[:, :A] / 100.0,
        "metadata": {"task": task, "success": success, "episode_id": 100 + ep_id},
    }
    return ep, v


def embed_state(obs):
    s = np.asarray(obs["state"], np.float32)
    return np.concatenate([s, np.ones((s.shape[0], 1), np.float32)], -1)


def test_mine_recovery_items_end_to_end():
    eps, curves = [], []
    for i in range(6):
        ep, v = ramp_episode(i, T=40, ramp_start=5 + 4 * i, ramp_len=6, success=i != 5)
        eps.append(ep)
        curves.append(v)
    cfg = MiningConfig(max_items=8, num_bins=4, span=8, delta=0.5, per_episode_cap=2, horizon=8)
    items = mine_recovery_items(eps, curves, embed_state, cfg)
    assert 0 < len(items) <= 8
    ids, counts = np.unique(items.episode_id, return_counts=True)
    assert counts.max() <= 2
    assert 105 not in ids  # failed episode never mined
    for i in range(len(items)):
        e, s = int(items.episode_id[i]) - 100, int(items.start[i])
        v = curves[e]
        assert items.end[i] == s + 8
        assert v[s + 8] - v[s] >= 0.5 - 1e-9 and v[s + 8] >= 0.75
        np.testing.assert_allclose(items.goal_value[i], v[s + 8])
        np.testing.assert_allclose(items.start_value[i], v[s])
        np.testing.assert_array_equal(items.key_observations["state"][i], [e, s])
        np.testing.assert_array_equal(items.goal_observations["state"][i], [e, s + 8])
        np.testing.assert_array_equal(items.goal_state[i], [e, s + 8])
        np.testing.assert_array_equal(items.key_embedding[i], [e, s, 1])
        np.testing.assert_array_equal(items.goal_embedding[i], [e, s + 8, 1])
        np.testing.assert_allclose(items.actions[i], eps[e]["actions"][s:s + 8])
        assert items.bin[i] == min(int(s / 40 * 4), 3)
        assert items.tasks[i] == "pick-place"
    # By hand: rise-1.0 windows are ep0 s3-5, ep1 s7-9 (bin 0), ep2 s11-13, ep3 s15-17, ep4 s19
    # (bin 1), ep4 s20-21 (bin 2); bin 3 has none. Pass 1 (quota 2): ep0 s3, s4 | ep2 s11, s12 |
    # ep4 s20, s21. Leftover 2, round-robin: bin 0 -> ep1 s7 (ep0 capped), bin 1 -> ep3 s15.
    got = sorted(zip(items.episode_id.tolist(), items.start.tolist()))
    assert got == [(100, 3), (100, 4), (101, 7), (102, 11), (102, 12), (103, 15), (104, 20), (104, 21)]
    # No qualifying window at all -> None.
    flat = [np.zeros(41) for _ in eps]
    assert mine_recovery_items(eps, flat, embed_state, cfg) is None


def test_mined_actions_padded_when_span_shorter_than_horizon():
    ep, v = ramp_episode(0, T=10, ramp_start=2, ramp_len=3)
    items = mine_recovery_items([ep], [v], embed_state, MiningConfig(max_items=1, num_bins=1, span=3, delta=0.5, horizon=5))
    s = int(items.start[0])
    acts = ep["actions"]
    np.testing.assert_allclose(items.actions[0], np.concatenate([acts[s:s + 3], acts[s + 2:s + 3], acts[s + 2:s + 3]]))


def test_mine_bad_inputs():
    ep, v = ramp_episode(0, T=10, ramp_start=2, ramp_len=3)
    with pytest.raises(ValueError, match="length"):
        mine_recovery_items([ep], [v[:-1]], embed_state)
    with pytest.raises(ValueError):
        mine_recovery_items([ep], [v, v], embed_state)
    with pytest.raises(ValueError):
        mine_recovery_items([], [], embed_state)
    cfg = MiningConfig(max_items=1, num_bins=1, span=3, delta=0.5)
    with pytest.raises(ValueError, match="embed_fn"):
        mine_recovery_items([ep], [v], lambda o: np.zeros((7, 3)), cfg)


# ---------------------------------------------------------------- memory
def make_items(n, d=6, seed=0, tasks=("a", "b"), num_eps=5, obs_dim=3):
    rng = np.random.default_rng(seed)
    key = rng.normal(size=(n, d)).astype(np.float32)
    return RecoveryItems(
        tasks=[tasks[i % len(tasks)] for i in range(n)],
        episode_id=(np.arange(n) % num_eps).astype(np.int64),
        start=np.arange(n, dtype=np.int64),
        end=np.arange(n, dtype=np.int64) + 8,
        start_progress=rng.uniform(size=n).astype(np.float32),
        bin=(np.arange(n) % 10).astype(np.int32),
        key_observations={"state": rng.normal(size=(n, obs_dim)).astype(np.float32)},
        goal_observations={"state": rng.normal(size=(n, obs_dim)).astype(np.float32)},
        key_embedding=key,
        goal_embedding=rng.normal(size=(n, d)).astype(np.float32),
        goal_state=rng.normal(size=(n, obs_dim)).astype(np.float32),
        start_value=rng.uniform(0, 0.3, size=n).astype(np.float32),
        goal_value=rng.uniform(0.5, 1.0, size=n).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 8, 2)).astype(np.float32),
    )


def plain_retrieve(items, q, task, cur, excl, top_k):
    """Independent reference: cosine over the task's items, top_k, filters, first survivor."""
    cand = []
    for i in range(len(items)):
        if items.tasks[i] != task:
            continue
        k = items.key_embedding[i]
        cos = float(np.dot(q, k) / (np.linalg.norm(q) * np.linalg.norm(k)))
        cand.append((cos, i))
    cand.sort(key=lambda x: -x[0])
    if top_k is not None:
        cand = cand[:top_k]
    for cos, i in cand:
        if excl is not None and items.episode_id[i] == excl:
            continue
        if not items.goal_value[i] > cur:
            continue
        return i, cos
    return None


@pytest.mark.parametrize("top_k", [None, 5])
def test_retrieval_matches_plain_loop(top_k):
    items = make_items(60)
    mem = RecoveryMemory(items=items)
    assert len(mem) == 60 and mem.tasks == ["a", "b"]
    rng = np.random.default_rng(1)
    n_none = 0
    for _ in range(60):
        q = rng.normal(size=6)
        task = str(rng.choice(["a", "b"]))
        cur = float(rng.uniform(0.4, 1.0))
        excl = int(rng.integers(0, 5))
        ref = plain_retrieve(items, q, task, cur, excl, top_k)
        got = mem.retrieve(q, task, cur, exclude_episode=excl, top_k=top_k)
        if ref is None:
            assert got is None
            n_none += 1
            continue
        assert got.index == ref[0]
        assert got.similarity == pytest.approx(ref[1], abs=1e-5)
        assert got.task == task and got.episode_id != excl and got.goal_value > cur
        np.testing.assert_array_equal(got.goal_observations["state"], items.goal_observations["state"][ref[0]])
        np.testing.assert_array_equal(got.actions, items.actions[ref[0]])
    assert 0 < n_none < 60  # both branches exercised


def test_retrieval_filters_individually():
    items = make_items(4, d=3, tasks=("a",), num_eps=4)
    items.key_embedding[:] = [[1, 0, 0], [0.9, 0.1, 0], [0.5, 0.5, 0], [0, 1, 0]]
    items.goal_value[:] = [0.6, 0.9, 0.95, 0.99]
    mem = RecoveryMemory(items=items)
    q = np.array([1.0, 0.0, 0.0])
    assert mem.retrieve(q, "a", 0.0).index == 0
    assert mem.retrieve(q, "a", 0.0, exclude_episode=0).index == 1  # other episode only
    assert mem.retrieve(q, "a", 0.6).index == 1  # value must be strictly above current
    assert mem.retrieve(q, "a", 0.9).index == 2
    assert mem.retrieve(q, "a", 0.99) is None  # nothing survives
    assert mem.retrieve(q, "b", 0.0) is None  # other task only
    assert mem.retrieve(q, "a", 0.9, top_k=2) is None  # survivors outside the top-k are not used
    assert mem.retrieve(q, "a-v3", 0.0).index == 0  # -v3 suffix normalised
    batch = mem.retrieve(np.stack([q, q]), "a", [0.0, 0.9])
    assert [r.index for r in batch] == [0, 2]
    with pytest.raises(ValueError):
        mem.retrieve(np.zeros(3), "a", 0.0)
    with pytest.raises(ValueError):
        mem.retrieve(np.ones(4), "a", 0.0)
    with pytest.raises(ValueError):
        mem.retrieve(np.array([np.nan, 0, 0]), "a", 0.0)
    assert RecoveryMemory().retrieve(q, "a", 0.0) is None


def test_hnsw_same_top1_as_flat_on_easy_case():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(200, 16)).astype(np.float32)
    items = make_items(200, d=16, tasks=("a",), num_eps=200)
    items.key_embedding[:] = centers
    items.goal_value[:] = 1.0
    flat = RecoveryMemory(MemoryConfig("flat"), items)
    hnsw = RecoveryMemory(MemoryConfig("hnsw", hnsw_m=16), items)
    queries = centers[:50] + 0.01 * rng.normal(size=(50, 16)).astype(np.float32)
    rf = flat.retrieve_batch(queries, "a", np.zeros(50))
    rh = hnsw.retrieve_batch(queries, "a", np.zeros(50))
    assert [r.index for r in rf] == list(range(50))
    assert [r.index for r in rh] == [r.index for r in rf]


def test_add_incrementally_and_mismatch():
    a, b = make_items(10, seed=0), make_items(10, seed=1)
    mem = RecoveryMemory()
    mem.add(a)
    mem.add(b)
    both = RecoveryMemory(items=RecoveryItems.concatenate([a, b]))
    q = np.random.default_rng(0).normal(size=(8, 6))
    assert [r and r.index for r in mem.retrieve_batch(q, "a", 0.0)] == [
        r and r.index for r in both.retrieve_batch(q, "a", 0.0)]
    with pytest.raises(ValueError, match="embedding dim"):
        mem.add(make_items(3, d=4))


def test_save_load_roundtrip(tmp_path):
    items = make_items(30)
    mem = RecoveryMemory(items=items)
    mem.save(str(tmp_path))
    loaded = RecoveryMemory.load(str(tmp_path))
    assert len(loaded) == 30 and loaded.tasks == mem.tasks
    q = np.random.default_rng(5).normal(size=(20, 6))
    tasks = ["a", "b"] * 10
    vals = np.linspace(0.3, 0.95, 20)
    r1 = mem.retrieve_batch(q, tasks, vals)
    r2 = loaded.retrieve_batch(q, tasks, vals)
    assert [r and (r.index, r.similarity) for r in r1] == [r and (r.index, r.similarity) for r in r2]
    for f in RecoveryItems.ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(loaded.items, f), getattr(items, f))
    np.testing.assert_array_equal(loaded.items.goal_observations["state"], items.goal_observations["state"])
    assert loaded.items.tasks == items.tasks
    assert RecoveryMemory.load(str(tmp_path), MemoryConfig("hnsw")).config.index_type == "hnsw"


def test_load_refuses_bad_files(tmp_path):
    mem = RecoveryMemory(items=make_items(5))
    d = str(tmp_path / "m")
    mem.save(d)
    header = os.path.join(d, "memory.json")
    h = json.load(open(header))
    h["format_version"] = 2
    json.dump(h, open(header, "w"))
    with pytest.raises(MemoryFormatError, match="format_version"):
        RecoveryMemory.load(d)
    mem.save(d)
    with open(os.path.join(d, "memory.npz"), "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage\xff" * 20)
    with pytest.raises(MemoryFormatError):
        RecoveryMemory.load(d)
    mem.save(d)
    with np.load(os.path.join(d, "memory.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["goal_value"] = arrays["goal_value"] + 0.01
    np.savez(os.path.join(d, "memory.npz"), **arrays)
    with pytest.raises(MemoryFormatError, match="checksum"):
        RecoveryMemory.load(d)
    open(header, "w").write("{not json")
    with pytest.raises(MemoryFormatError):
        RecoveryMemory.load(d)
    with pytest.raises(FileNotFoundError):
        RecoveryMemory.load(str(tmp_path / "none"))
    with pytest.raises(ValueError):
        RecoveryMemory().save(str(tmp_path / "empty"))


# ---------------------------------------------------------------- audit
def test_memory_audit_hand_values(tmp_path):
    items = make_items(3, d=2, tasks=("a",), num_eps=3)
    items.key_embedding[:] = [[1, 0], [0, 1], [1, 1]]
    items.goal_value[:] = [0.9, 0.8, 0.7]
    items.bin[:] = [0, 2, 2]
    mem = RecoveryMemory(items=items)
    queries = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, 0.0]])
    values = np.array([0.5, 0.6, 0.2, 0.95])  # last query: no goal above 0.95
    rep = memory_audit(mem, queries, values, "a", out_dir=str(tmp_path), num_bins=4)
    sims = np.array([1.0, 1.0, 1.0])
    lifts = np.array([0.9 - 0.5, 0.8 - 0.6, 0.7 - 0.2])
    assert rep["num_queries"] == 4 and rep["memory_size"] == 3
    assert rep["hit_rate"] == pytest.approx(0.75)
    assert rep["top1_similarity"]["mean"] == pytest.approx(sims.mean(), abs=1e-6)
    assert rep["value_lift"]["mean"] == pytest.approx(lifts.mean(), abs=1e-6)
    assert rep["value_lift"]["median"] == pytest.approx(0.4, abs=1e-6)
    assert rep["items_per_bin"] == [1, 0, 2, 0]
    assert rep["items_per_task"] == {"a": 3}
    assert os.path.exists(tmp_path / "memory_audit.png")
    assert json.load(open(tmp_path / "memory_audit.json"))["hit_rate"] == pytest.approx(0.75)
    # Similarity percentiles on a spread of cosines.
    q2 = np.array([[1.0, 0.0], [1.0, 0.2], [1.0, 0.5], [1.0, 1.0]])
    rep2 = memory_audit(mem, q2, np.zeros(4), "a", top_k=1)
    cos = [1.0]
    for q in q2[1:]:
        keys = items.key_embedding
        c = [float(q @ k / np.linalg.norm(q) / np.linalg.norm(k)) for k in keys]
        cos.append(max(c))
    assert rep2["top1_similarity"]["median"] == pytest.approx(np.median(cos), abs=1e-5)
    assert rep2["top1_similarity"]["p10"] == pytest.approx(np.percentile(cos, 10), abs=1e-5)
    rep3 = memory_audit(mem, queries, np.ones(4), "a")
    assert rep3["hit_rate"] == 0 and rep3["top1_similarity"]["mean"] is None
    with pytest.raises(ValueError):
        memory_audit(mem, np.zeros((0, 2)), np.zeros(0), "a")


def test_online_memory_mines_stores_and_retrieves_on_the_raw_value_scale():
    """One value scale (the raw proxy value) for mining, the stored goal values and the gate's
    retrieval filter, as the official code. Before issue 13 the curves were min-max normalised
    per episode before mining: the low ramp below (0.1 -> 0.65) was mined as a 0 -> 1 window and
    its goal stored as 1.0, then compared with a raw V(o_t) at retrieval."""
    import ml_collections

    from uniintervene_jax.memory.mining import mine_online_memory

    c = ml_collections.ConfigDict({"memory_preset": "default", "memory_demo_delta": 0.0})
    low, v_low = ramp_episode(0, T=40, ramp_start=10, ramp_len=6, task="pick-place")
    high, v_high = ramp_episode(1, T=40, ramp_start=10, ramp_len=6, task="pick-place")
    v_low = (0.1 + 0.55 * v_low).astype(np.float32)  # rises 0.55 >= delta but ends at 0.65 < 0.75
    v_high = (0.2 + 0.6 * v_high).astype(np.float32)  # 0.2 -> 0.8
    for e in (low, high):
        e["metadata"]["source"] = "demo"
    items, fallback = mine_online_memory([low, high], [v_low, v_high], embed_state, c, "pick-place")
    assert not fallback and len(items) > 0
    assert set(items.episode_id.tolist()) == {1}  # the low ramp's goal is not high enough on the raw scale
    for i in range(len(items)):
        np.testing.assert_allclose(items.goal_value[i], v_high[items.end[i]])  # raw, not normalised
        np.testing.assert_allclose(items.start_value[i], v_high[items.start[i]])
    assert items.goal_value.max() == pytest.approx(0.8)
    memory = RecoveryMemory(MemoryConfig(), items)
    query = embed_state({"state": np.array([[1.0, 12.0]], np.float32)})[0]
    assert memory.retrieve(query, "pick-place", 0.79) is not None  # goal 0.8 above V = 0.79
    assert memory.retrieve(query, "pick-place", 0.81) is None  # no goal above V = 0.81 on the same scale
