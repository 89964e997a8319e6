"""Tests for serl_ext.data.replay_buffer (frame store, ring, mixing, state dict)."""

import threading

import numpy as np
import pytest

from serl_ext.data.replay_buffer import (
    ReplayBuffer,
    observation_spec_from_example,
    sample_mixed,
    sample_mixed_many,
)

IMG = (4, 4, 3)
SPEC = {"state": ((3,), np.float32), "pixels": (IMG, np.uint8)}


def make_obs(ep, step):
    """Observation uniquely determined by (episode, step)."""
    pixels = np.zeros(IMG, np.uint8)
    pixels[..., 0] = ep % 256
    pixels[..., 1] = step % 256
    pixels[..., 2] = (ep * 7 + step * 13) % 256
    return {"state": np.array([ep, step, 0.25 * step], np.float32), "pixels": pixels}


def make_tr(ep, step, *, terminal=False, truncated=False, intervention=False, source=0):
    """Transition (ep, step) -> (ep, step + 1); actions encode (ep, step) to identify rows."""
    return {
        "observations": make_obs(ep, step),
        "actions": np.array([ep, step], np.float32),
        "rewards": np.float32(ep + 0.01 * step),
        "masks": np.float32(0.0 if terminal else 1.0),
        "dones": bool(terminal or truncated),
        "next_observations": make_obs(ep, step + 1),
        "interventions": intervention,
        "action_source": source,
    }


def check_rows(batch):
    """Every row's observations/next_observations equal exactly what was inserted for its id."""
    for i in range(batch["actions"].shape[0]):
        ep, step = (int(x) for x in batch["actions"][i])
        for key in ("state", "pixels"):
            np.testing.assert_array_equal(batch["observations"][key][i], make_obs(ep, step)[key])
            np.testing.assert_array_equal(batch["next_observations"][key][i], make_obs(ep, step + 1)[key])
        assert batch["rewards"][i] == np.float32(ep + 0.01 * step)


def live_ids(buf):
    return [tuple(int(x) for x in a) for a in buf.live_transitions()["actions"]]


def test_contiguous_episode_one_frame_per_step_and_uint8_storage():
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=100)
    for t in range(20):
        buf.insert(make_tr(0, t))
    assert len(buf) == 20
    assert buf.frame_store["pixels"].dtype == np.uint8
    assert buf.frame_store["state"].dtype == np.float32
    assert buf.frame_store["pixels"].shape == (2 * 100 + 2, *IMG)
    # T steps of a contiguous episode cost T + 1 frames, not 2T.
    assert buf.frames_written == 21
    assert buf.num_live_frames() == 21
    batch = buf.live_transitions()
    assert batch["observations"]["pixels"].dtype == np.uint8
    assert live_ids(buf) == [(0, t) for t in range(20)]
    check_rows(batch)
    check_rows(buf.sample(64))


def test_episode_boundary_never_leaks_next_episode_first_obs():
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=200, seed=3)
    lengths = [7, 5, 9]
    for ep, T in enumerate(lengths):
        for t in range(T):
            buf.insert(make_tr(ep, t, terminal=(t == T - 1 and ep != 1), truncated=(t == T - 1 and ep == 1)))
    assert buf.num_live_frames() == sum(T + 1 for T in lengths)
    batch = buf.sample(2000)
    check_rows(batch)
    for ep, T in enumerate(lengths):
        rows = np.flatnonzero((batch["actions"][:, 0] == ep) & (batch["actions"][:, 1] == T - 1))
        assert rows.size > 0
        for i in rows:
            assert batch["next_observations"]["state"][i][1] == T  # final obs of episode ep
            assert batch["next_observations"]["state"][i][0] == ep  # not episode ep + 1's reset obs
            assert batch["dones"][i]
            # termination zeroes the mask, truncation keeps it.
            assert batch["masks"][i] == (1.0 if ep == 1 else 0.0)
    mid = batch["actions"][:, 1] < np.array(lengths)[batch["actions"][:, 0].astype(int)] - 1
    assert np.all(batch["masks"][mid] == 1.0) and not np.any(batch["dones"][mid])


def test_noncontiguous_intervention_segments_no_stale_first_image():
    # HiL-SERL's memory-efficient buffer returned a stale first image for a
    # later, non-contiguous intervention segment.
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=50, seed=1)
    for t in range(0, 5):  # segment A
        buf.insert(make_tr(0, t, intervention=True, source=2))
    for t in range(10, 15):  # segment B, later in the same episode
        buf.insert(make_tr(0, t, intervention=True, source=2))
    assert buf.num_live_frames() == 6 + 6
    batch = buf.sample(1000)
    check_rows(batch)
    first_b = np.flatnonzero(batch["actions"][:, 1] == 10)
    assert first_b.size > 0
    for i in first_b:
        np.testing.assert_array_equal(batch["observations"]["pixels"][i], make_obs(0, 10)["pixels"])
        assert not np.array_equal(batch["observations"]["pixels"][i], make_obs(0, 5)["pixels"])
    assert batch["interventions"].all() and (batch["action_source"] == 2).all()
    assert batch["action_source"].dtype == np.int8


def test_reuse_is_decided_by_equality_not_order():
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=10)
    buf.insert(make_tr(0, 0))
    assert buf.frames_written == 2
    # A new segment that happens to start where the last one ended reuses it.
    buf.insert(make_tr(5, 1) | {"observations": make_obs(0, 1)})
    assert buf.frames_written == 3
    # One that starts elsewhere writes a new frame.
    buf.insert(make_tr(0, 7))
    assert buf.frames_written == 5
    b = buf.live_transitions()
    np.testing.assert_array_equal(b["observations"]["state"][1], make_obs(0, 1)["state"])
    np.testing.assert_array_equal(b["next_observations"]["state"][1], make_obs(5, 2)["state"])
    np.testing.assert_array_equal(b["observations"]["state"][2], make_obs(0, 7)["state"])


@pytest.mark.parametrize("mode", ["mixed", "all_gaps"])
def test_ring_wraparound_capacity5_never_references_overwritten_frame(mode):
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=5, seed=2)
    inserted = []
    ep, step = 0, 0
    for n in range(50):
        jump = mode == "all_gaps" or rng.random() < 0.4
        if jump:  # new episode or a non-contiguous segment
            if rng.random() < 0.5:
                ep, step = ep + 1, 0
            else:
                step += int(rng.integers(2, 6))
        buf.insert(make_tr(ep, step))
        inserted.append((ep, step))
        step += 1
        assert len(buf) == min(n + 1, 5)
        assert live_ids(buf) == inserted[-5:]
        check_rows(buf.live_transitions())
        check_rows(buf.sample(16))
    assert buf.frames_written > 2 * 5 + 2  # the frame ring wrapped several times


@pytest.mark.parametrize("frame_capacity", [2, 4, 7])
def test_small_frame_capacity_evicts_instead_of_corrupting(frame_capacity):
    rng = np.random.default_rng(1)
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=5, frame_capacity=frame_capacity)
    inserted = []
    ep, step = 0, 0
    for _ in range(50):
        if rng.random() < 0.4:
            ep, step = ep + 1, 0
        buf.insert(make_tr(ep, step))
        inserted.append((ep, step))
        step += 1
        ids = live_ids(buf)
        assert 1 <= len(ids) <= 5
        assert ids == inserted[-len(ids):]  # a suffix of what was inserted
        check_rows(buf.live_transitions())
        check_rows(buf.sample(8))
    # contiguous data fits capacity + 1 frames without eviction
    buf2 = ReplayBuffer(SPEC, action_dim=2, capacity=5, frame_capacity=6)
    for t in range(30):
        buf2.insert(make_tr(0, t))
        assert len(buf2) == min(t + 1, 5)
    check_rows(buf2.live_transitions())


def test_state_dict_round_trip_and_continued_sampling():
    extra = {"grasp_penalty": ((), np.float32)}
    a = ReplayBuffer(SPEC, action_dim=2, capacity=7, extra_keys=extra, seed=11)
    for t in range(10):
        a.insert(make_tr(t // 4, t) | {"grasp_penalty": np.float32(-0.02 * t)})
    a.sample(5)  # advance the RNG
    sd = a.state_dict()
    assert isinstance(sd["size"], int) and isinstance(sd["insert_index"], int)
    assert sd["rng_state"].dtype == np.uint8
    b = ReplayBuffer(SPEC, action_dim=2, capacity=7, extra_keys=extra, seed=999)
    b.load_state_dict(sd)
    assert len(b) == len(a) == 7
    for _ in range(3):
        ba, bb = a.sample(9), b.sample(9)
        for k in ("actions", "rewards", "masks", "dones", "interventions", "action_source", "grasp_penalty"):
            np.testing.assert_array_equal(ba[k], bb[k])
        for k in ("state", "pixels"):
            np.testing.assert_array_equal(ba["observations"][k], bb["observations"][k])
            np.testing.assert_array_equal(ba["next_observations"][k], bb["next_observations"][k])
    # inserting after the restore continues identically (insert position and frame pointers)
    for t in range(10, 14):
        tr = make_tr(2, t) | {"grasp_penalty": np.float32(-0.02 * t)}
        a.insert(tr)
        b.insert(tr)
    assert a.frames_written == b.frames_written
    np.testing.assert_array_equal(a.sample(20)["actions"], b.sample(20)["actions"])
    assert live_ids(a) == live_ids(b)
    check_rows(b.live_transitions())
    # the snapshot is a copy: later inserts did not change it
    c = ReplayBuffer(SPEC, action_dim=2, capacity=7, extra_keys=extra)
    c.load_state_dict(sd)
    assert live_ids(c) == [(t // 4, t) for t in range(3, 10)]


def test_load_state_dict_rejects_mismatch():
    a = ReplayBuffer(SPEC, action_dim=2, capacity=4)
    a.insert(make_tr(0, 0))
    sd = a.state_dict()
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(SPEC, action_dim=2, capacity=5).load_state_dict(sd)
    with pytest.raises(ValueError, match="frames"):
        ReplayBuffer({"state": ((3,), np.float32)}, action_dim=2, capacity=4).load_state_dict(sd)
    bad = dict(sd, actions=sd["actions"].astype(np.float64))
    target = ReplayBuffer(SPEC, action_dim=2, capacity=4)
    with pytest.raises(ValueError, match="actions"):
        target.load_state_dict(bad)
    assert len(target) == 0  # unchanged on error


def test_invalid_inserts_are_rejected_and_store_nothing():
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=4)
    buf.insert(make_tr(0, 0))
    good = make_tr(0, 1)

    def bad(**changes):
        tr = dict(good)
        tr.update(changes)
        return tr

    nan_state = make_obs(0, 2)
    nan_state["state"] = nan_state["state"].copy()
    nan_state["state"][1] = np.nan
    cases = [
        (ValueError, bad(actions=np.array([0.0, np.nan], np.float32))),
        (ValueError, bad(rewards=np.inf)),
        (ValueError, bad(masks=-np.inf)),
        (ValueError, bad(next_observations=nan_state)),
        (ValueError, bad(rewards=np.float64(1e300))),  # overflows float32
        (ValueError, bad(masks=2.0)),
        (ValueError, bad(action_source=3)),
        (ValueError, bad(actions=np.zeros(3, np.float32))),
        (ValueError, {k: v for k, v in good.items() if k != "interventions"}),
        (ValueError, bad(extra_field=1.0)),
        (ValueError, bad(observations={"state": make_obs(0, 1)["state"]})),
        (TypeError, bad(observations=make_obs(0, 1) | {"pixels": make_obs(0, 1)["pixels"].astype(np.float32)})),
        (ValueError, bad(observations=make_obs(0, 1) | {"pixels": np.full(IMG, 300, np.int32)})),
        (TypeError, bad(dones=0.5)),
        (TypeError, bad(action_source=1.0)),
    ]
    for exc, tr in cases:
        with pytest.raises(exc):
            buf.insert(tr)
        assert len(buf) == 1 and buf.frames_written == 2
    # lossless / allowed casts
    widened = {"state": make_obs(0, 1)["state"].astype(np.float64), "pixels": make_obs(0, 1)["pixels"].astype(np.int64)}
    buf.insert(bad(observations=widened))
    assert len(buf) == 2 and buf.frames_written == 3  # float64 copy compared equal, frame reused
    assert buf.live_transitions()["observations"]["state"].dtype == np.float32


def test_sample_empty_and_extras():
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=4, extra_keys={"grasp_penalty": ((), np.float32)})
    with pytest.raises(ValueError, match="empty"):
        buf.sample(1)
    with pytest.raises(ValueError, match="missing"):
        buf.insert(make_tr(0, 0))
    buf.insert(make_tr(0, 0) | {"grasp_penalty": -0.02})
    b = buf.sample(3)
    assert b["grasp_penalty"].shape == (3,) and b["grasp_penalty"].dtype == np.float32
    np.testing.assert_allclose(b["grasp_penalty"], -0.02)
    assert b["actions"].shape == (3, 2) and b["observations"]["pixels"].shape == (3, *IMG)
    with pytest.raises(ValueError, match="collide"):
        ReplayBuffer(SPEC, action_dim=2, capacity=4, extra_keys={"rewards": ((), np.float32)})


def test_grasp_penalty_extra_validation_and_default_for_old_state_dicts():
    extra, default = {"grasp_penalty": ((), np.float32)}, {"grasp_penalty": 0.0}
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=4, extra_keys=extra, extra_defaults=default)
    # The default is for old data only: a live transition must still carry the key.
    with pytest.raises(ValueError, match=r"missing \['grasp_penalty'\]"):
        buf.insert(make_tr(0, 0))
    for bad, exc in ((np.zeros(2, np.float32), ValueError), (np.nan, ValueError), (-np.inf, ValueError),
                     (np.float64(1e300), ValueError), ("x", TypeError)):
        with pytest.raises(exc, match="grasp_penalty"):
            buf.insert(make_tr(0, 0) | {"grasp_penalty": bad})
    assert len(buf) == 0 and buf.frames_written == 0

    # A checkpoint written before the key existed: every slot gets the default, the rest is exact.
    old = ReplayBuffer(SPEC, action_dim=2, capacity=4, seed=3)
    for t in range(6):
        old.insert(make_tr(1, t))
    sd = old.state_dict()
    assert "extras" not in sd
    buf.load_state_dict(sd)
    assert live_ids(buf) == live_ids(old) == [(1, t) for t in range(2, 6)]
    live = buf.live_transitions()
    assert live["grasp_penalty"].dtype == np.float32 and live["grasp_penalty"].shape == (4,)
    np.testing.assert_array_equal(live["grasp_penalty"], 0.0)
    check_rows(live)
    buf.insert(make_tr(1, 6) | {"grasp_penalty": np.float32(-0.02)})
    np.testing.assert_allclose(buf.live_transitions()["grasp_penalty"], [0.0, 0.0, 0.0, -0.02])
    # Without a default the same state dict is refused; unknown or ill-fitting defaults too.
    with pytest.raises(ValueError, match="extras"):
        ReplayBuffer(SPEC, action_dim=2, capacity=4, extra_keys=extra).load_state_dict(sd)
    with pytest.raises(ValueError, match="not in extra_keys"):
        ReplayBuffer(SPEC, action_dim=2, capacity=4, extra_defaults=default)
    for bad in (np.nan, np.zeros(2)):
        with pytest.raises(ValueError, match="grasp_penalty"):
            ReplayBuffer(SPEC, action_dim=2, capacity=4, extra_keys=extra, extra_defaults={"grasp_penalty": bad})


def _filled(seed, marker_ep, n, **kw):
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=64, seed=seed)
    for t in range(n):
        buf.insert(make_tr(marker_ep, t, **kw))
    return buf


def test_sample_mixed_exact_counts_and_empty_fallback():
    online = _filled(0, 0, 10)
    demo = _filled(1, 1, 6, intervention=True, source=2)
    for bsz, fr, expected in [(256, (0.5, 0.5), (128, 128)), (7, (0.5, 0.5), (4, 3)), (256, (0.25, 0.75), (64, 192))]:
        batch = sample_mixed([online, demo], bsz, fr)
        eps = batch["actions"][:, 0]
        assert batch["actions"].shape == (bsz, 2)
        assert (np.sum(eps == 0), np.sum(eps == 1)) == expected
        # rows are concatenated in buffer order
        assert np.all(eps[: expected[0]] == 0) and np.all(eps[expected[0]:] == 1)
        assert np.array_equal(batch["interventions"], eps == 1)
        check_rows(batch)
    empty = ReplayBuffer(SPEC, action_dim=2, capacity=8)
    batch = sample_mixed([empty, demo], 32)
    assert np.all(batch["actions"][:, 0] == 1) and batch["actions"].shape[0] == 32
    with pytest.raises(ValueError, match="empty"):
        sample_mixed([empty, ReplayBuffer(SPEC, action_dim=2, capacity=8)], 4)
    with pytest.raises(ValueError, match="sum to 1"):
        sample_mixed([online, demo], 4, (0.5, 0.6))
    with pytest.raises(ValueError, match="fractions"):
        sample_mixed([online, demo], 4, (1.0,))
    state_only = ReplayBuffer({"state": ((3,), np.float32)}, action_dim=2, capacity=4)
    state_only.insert({**make_tr(0, 0), "observations": {"state": make_obs(0, 0)["state"]},
                       "next_observations": {"state": make_obs(0, 1)["state"]}})
    with pytest.raises(ValueError, match="different"):
        sample_mixed([online, state_only], 4)


def test_sample_mixed_many_minibatch_order():
    online = _filled(0, 0, 10)
    demo = _filled(1, 1, 10)
    n, bsz = 3, 8
    batch = sample_mixed_many([online, demo], bsz, n)
    assert batch["actions"].shape == (n * bsz, 2)
    assert batch["observations"]["pixels"].shape == (n * bsz, *IMG)
    for i in range(n):
        eps = batch["actions"][i * bsz:(i + 1) * bsz, 0]
        assert np.sum(eps == 0) == 4 and np.sum(eps == 1) == 4
    check_rows(batch)
    with pytest.raises(ValueError):
        sample_mixed_many([online, demo], bsz, 0)


def test_concurrent_insert_and_sample_stay_consistent():
    buf = ReplayBuffer(SPEC, action_dim=2, capacity=50, seed=5)
    buf.insert(make_tr(0, 0))
    errors = []

    def writer():
        try:
            rng = np.random.default_rng(0)
            ep, step = 0, 1
            for _ in range(1500):
                if rng.random() < 0.2:
                    ep, step = ep + 1, 0
                buf.insert(make_tr(ep, step))
                step += 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    th = threading.Thread(target=writer)
    th.start()
    while th.is_alive():
        check_rows(buf.sample(32))
    th.join()
    assert not errors
    assert len(buf) == 50


def test_observation_spec_from_example():
    spec = observation_spec_from_example({"state": np.zeros(3), "pixels": np.zeros(IMG, np.uint8)})
    assert spec == {"state": ((3,), np.dtype(np.float32)), "pixels": (IMG, np.dtype(np.uint8))}
    with pytest.raises(TypeError):
        observation_spec_from_example({"s": np.array(["a"])})
