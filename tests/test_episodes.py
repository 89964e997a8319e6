"""Tests for serl_ext.data.episodes (file format, writer, transitions, recorder)."""

import json
import os

import numpy as np
import pytest

from serl_ext.data import episodes as E
from serl_ext.data.episodes import (
    EpisodeFormatError,
    EpisodeRecorder,
    EpisodeWriter,
    episode_from_transitions,
    episode_to_transitions,
    list_episodes,
    load_episode,
    load_episodes_into_buffer,
    save_episode,
)
from serl_ext.data.replay_buffer import ReplayBuffer

IMG = (4, 4, 3)


def obs_at(ep, t):
    pixels = np.zeros(IMG, np.uint8)
    pixels[..., 0], pixels[..., 1] = ep % 256, t % 256
    return {"state": np.array([ep, t, 0.5 * t], np.float32), "pixels": pixels}


def make_episode(ep=0, T=6, *, terminal=True, truncated=False, success=True, interventions=None):
    obs = [obs_at(ep, t) for t in range(T + 1)]
    iv = np.zeros(T, bool) if interventions is None else np.asarray(interventions, bool)
    return {
        "observations": {k: np.stack([o[k] for o in obs]) for k in ("state", "pixels")},
        "actions": np.stack([np.array([ep, t], np.float32) for t in range(T)]),
        "rewards": np.array([float(t == T - 1 and success) for t in range(T)], np.float32),
        "terminals": np.array([terminal and t == T - 1 for t in range(T)]),
        "truncations": np.array([truncated and t == T - 1 for t in range(T)]),
        "interventions": iv,
        "action_source": np.where(iv, 2, 0).astype(np.int8),
        "success": np.array([success and t == T - 1 for t in range(T)]),
        "dense_rewards": np.linspace(0, 1, T).astype(np.float32),
        "metadata": {"task": "pick-place-v3", "seed": ep, "success": success, "source": "demo"},
    }


def assert_episode_equal(a, b):
    assert set(a) == set(b)
    assert set(a["observations"]) == set(b["observations"])
    for k in a["observations"]:
        assert a["observations"][k].dtype == b["observations"][k].dtype
        np.testing.assert_array_equal(a["observations"][k], b["observations"][k])
    for k in a:
        if k not in ("observations", "metadata"):
            assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype, k
            np.testing.assert_array_equal(a[k], b[k])
    assert a["metadata"] == b["metadata"]


def test_save_load_round_trip_and_plain_npz_readable(tmp_path):
    ep = make_episode(T=5)
    ep["metadata"]["np_scalar"] = np.float32(0.5)  # numpy scalars become plain JSON values
    path = save_episode(tmp_path / "episode_000000.npz", ep)
    loaded = load_episode(path)
    expected = dict(ep, metadata={**ep["metadata"], "np_scalar": 0.5})
    assert_episode_equal(loaded, expected)
    assert loaded["observations"]["pixels"].dtype == np.uint8
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(z["header"].tobytes().decode())
        assert header["format_version"] == E.FORMAT_VERSION
        assert len(header["sha256"]) == 64
        assert "observations/pixels" in z.files and "extras/success" in z.files
        np.testing.assert_array_equal(z["actions"], ep["actions"])


def _rewrite(path, arrays):
    """Write an npz by hand (bypassing save_episode)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _raw(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _header(arrays, **overrides):
    body = {k: v for k, v in arrays.items() if k != "header"}
    h = {"format_version": 1, "sha256": E.array_checksum(body), "metadata": {}}
    h.update(overrides)
    return np.frombuffer(json.dumps(h).encode(), np.uint8)


def test_corrupt_files_are_refused(tmp_path):
    path = str(tmp_path / "ep.npz")
    save_episode(path, make_episode(T=8))
    good = open(path, "rb").read()

    # truncated files
    for n in (len(good) // 2, len(good) - 1, 10, 0):
        open(path, "wb").write(good[:n])
        with pytest.raises(EpisodeFormatError, match="ep.npz"):
            load_episode(path)
    # a flipped byte inside the array data (zip CRC or our SHA-256 catches it)
    offset = good.find(make_episode(T=8)["actions"].tobytes())
    assert offset > 0
    for pos in (offset, offset + 5):
        bad = bytearray(good)
        bad[pos] ^= 0xFF
        open(path, "wb").write(bytes(bad))
        with pytest.raises(EpisodeFormatError, match="ep.npz"):
            load_episode(path)
    # a well-formed zip whose arrays were edited: only the checksum notices
    open(path, "wb").write(good)
    arrays = _raw(path)
    arrays["rewards"] = arrays["rewards"] + 1.0
    _rewrite(path, arrays)
    with pytest.raises(EpisodeFormatError, match="checksum"):
        load_episode(path)
    # not a zip at all (a pickled-looking blob)
    open(path, "wb").write(b"\x80\x04garbage")
    with pytest.raises(EpisodeFormatError):
        load_episode(path)


def test_version_missing_keys_and_lengths(tmp_path):
    path = str(tmp_path / "ep.npz")
    save_episode(path, make_episode(T=4))
    arrays = _raw(path)

    v2 = dict(arrays, header=_header(arrays, format_version=2))
    _rewrite(path, v2)
    with pytest.raises(EpisodeFormatError, match="version"):
        load_episode(path)

    missing = {k: v for k, v in arrays.items() if k != "rewards"}
    missing["header"] = _header(missing)
    _rewrite(path, missing)
    with pytest.raises(EpisodeFormatError, match="rewards"):
        load_episode(path)

    short = dict(arrays)
    short["observations/state"] = arrays["observations/state"][:-1]
    short["header"] = _header(short)
    _rewrite(path, short)
    with pytest.raises(EpisodeFormatError, match="T\\+1"):
        load_episode(path)

    no_header = {k: v for k, v in arrays.items() if k != "header"}
    _rewrite(path, no_header)
    with pytest.raises(EpisodeFormatError, match="header"):
        load_episode(path)

    with pytest.raises(FileNotFoundError):
        load_episode(tmp_path / "nope.npz")


def test_invalid_episodes_are_not_saved(tmp_path):
    ep = make_episode(T=4)
    for change, exc in [
        ({"rewards": np.array([0, np.nan, 0, 0], np.float32)}, ValueError),
        ({"terminals": np.array([False, True, False, True])}, ValueError),  # done before the end
        ({"actions": np.zeros((3, 2), np.float32)}, ValueError),
        ({"action_source": np.array([0, 1, 2, 5], np.int8)}, ValueError),
        ({"metadata": {"x": object()}}, ValueError),
        # float pixels are allowed in episode files (only buffers insist on uint8)
        ({"observations": {"pixels": np.zeros((5, *IMG), np.float32) + 0.5}}, None),
    ]:
        bad = dict(ep, **change)
        target = tmp_path / "x.npz"
        if exc is None:
            save_episode(target, bad)
            assert load_episode(target)["observations"]["pixels"].dtype == np.float32
            os.unlink(target)
            continue
        with pytest.raises(exc):
            save_episode(target, bad)
        assert not target.exists()
    with pytest.raises(ValueError, match="npz"):
        save_episode(tmp_path / "x.bin", ep)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "episode_000000.npz"
    old = make_episode(ep=1, T=3)
    save_episode(path, old)
    real_savez = np.savez

    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial bytes")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(E.np, "savez", failing_savez)
    with pytest.raises(OSError, match="simulated"):
        save_episode(path, make_episode(ep=2, T=5))
    with pytest.raises(OSError, match="simulated"):
        save_episode(tmp_path / "episode_000001.npz", make_episode(ep=2, T=5))
    monkeypatch.setattr(E.np, "savez", real_savez)
    assert sorted(os.listdir(tmp_path)) == ["episode_000000.npz"]  # no temp file, no new file
    assert_episode_equal(load_episode(path), old)  # old content intact

    def failing_replace(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(E.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename"):
        save_episode(tmp_path / "episode_000002.npz", old)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["episode_000000.npz"]


def test_writer_ids_resume_and_listing(tmp_path):
    d = tmp_path / "demos"
    w = EpisodeWriter(d, prefix="episode")
    paths = [w.write(make_episode(ep=i, T=2)) for i in range(3)]
    assert [os.path.basename(p) for p in paths] == [f"episode_{i:06d}.npz" for i in range(3)]
    assert [load_episode(p)["metadata"]["episode_id"] for p in paths] == [0, 1, 2]
    # unrelated and temp files are ignored; numbering resumes after the largest id
    (d / ".episode_000009.npz.abc.tmp").write_bytes(b"x")
    (d / "other_000050.npz").write_bytes(b"x")
    (d / "episode_000012.npz").write_bytes(b"x")
    (d / "notes.txt").write_bytes(b"x")
    w2 = EpisodeWriter(d, prefix="episode")
    assert w2.next_id == 13
    assert os.path.basename(w2.write(make_episode(T=2))) == "episode_000013.npz"
    assert [os.path.basename(p) for p in list_episodes(d)] == [
        "episode_000000.npz", "episode_000001.npz", "episode_000002.npz",
        "episode_000012.npz", "episode_000013.npz", "other_000050.npz",
    ]
    assert len(list_episodes(d, prefix="episode")) == 5
    assert EpisodeWriter(d, prefix="other").next_id == 51
    assert EpisodeWriter(tmp_path / "fresh").next_id == 0
    with pytest.raises(FileNotFoundError):
        list_episodes(tmp_path / "missing")
    with pytest.raises(ValueError):
        EpisodeWriter(d, prefix="../x")


def test_episode_to_transitions_masks_and_round_trip():
    term = make_episode(ep=0, T=4, terminal=True)
    trunc = make_episode(ep=1, T=4, terminal=False, truncated=True)
    trs = list(episode_to_transitions(term))
    assert len(trs) == 4
    for t, tr in enumerate(trs):
        np.testing.assert_array_equal(tr["observations"]["pixels"], obs_at(0, t)["pixels"])
        np.testing.assert_array_equal(tr["next_observations"]["state"], obs_at(0, t + 1)["state"])
        assert tr["success"] == (t == 3) and tr["dense_rewards"].dtype == np.float32
    assert [float(tr["masks"]) for tr in trs] == [1, 1, 1, 0]
    assert [bool(tr["dones"]) for tr in trs] == [False, False, False, True]
    trs_trunc = list(episode_to_transitions(trunc))
    assert [float(tr["masks"]) for tr in trs_trunc] == [1, 1, 1, 1]  # truncation keeps the mask
    assert [bool(tr["dones"]) for tr in trs_trunc] == [False, False, False, True]
    for ep, trl in ((term, trs), (trunc, trs_trunc)):
        assert_episode_equal(episode_from_transitions(trl, metadata=ep["metadata"]), ep)
    # continuity check
    broken = [dict(tr) for tr in trs]
    broken[2] = dict(broken[2], observations=obs_at(0, 7))
    with pytest.raises(ValueError, match="continuity"):
        episode_from_transitions(broken)
    with pytest.raises(ValueError):
        episode_from_transitions([])


class _FakeEnv:
    """Tiny env that reuses (mutates) its observation arrays, like some real envs."""

    def __init__(self, T):
        self.T, self.t = T, 0
        self.obs = obs_at(3, 0)

    def reset(self):
        self.t = 0
        self.obs["state"][:] = obs_at(3, 0)["state"]
        self.obs["pixels"][:] = obs_at(3, 0)["pixels"]
        return self.obs

    def step(self, action):
        self.t += 1
        self.obs["state"][:] = obs_at(3, self.t)["state"]
        self.obs["pixels"][:] = obs_at(3, self.t)["pixels"]
        done = self.t == self.T
        return self.obs, float(done), done, False, {"success": done}


def test_recorder_collects_env_episode():
    env, rec = _FakeEnv(5), EpisodeRecorder(metadata={"task": "fake", "source": "rollout"})
    with pytest.raises(RuntimeError):
        rec.step(np.zeros(2), 0.0, env.obs, False, False)
    rec.reset(env.reset())
    t = 0
    while True:
        obs, r, term, trunc, info = env.step(None)
        rec.step(np.array([3, t], np.float32), r, obs, term, trunc, intervention=t in (1, 2), success=info["success"])
        t += 1
        if term or trunc:
            break
    with pytest.raises(RuntimeError, match="finish"):
        rec.step(np.zeros(2), 0.0, obs, False, False)
    ep = rec.finish({"success": True})
    assert not rec.active
    expected = make_episode(ep=3, T=5, interventions=[0, 1, 1, 0, 0])
    expected.pop("dense_rewards")
    expected["metadata"] = {"task": "fake", "source": "rollout", "success": True}
    assert_episode_equal(ep, expected)
    # add_transition is the inverse of episode_to_transitions
    rec2 = EpisodeRecorder()
    for tr in episode_to_transitions(ep):
        rec2.add_transition(tr)
    assert_episode_equal(rec2.finish(ep["metadata"]), ep)


def test_load_episodes_into_buffer_boundaries_and_filters(tmp_path):
    w = EpisodeWriter(tmp_path)
    lengths = [5, 3, 6]
    for i, T in enumerate(lengths):
        w.write(make_episode(ep=i, T=T, success=(i != 1), interventions=[t in (1, 2, 4) for t in range(T)]))
    spec = {"state": ((3,), np.float32), "pixels": (IMG, np.uint8)}

    buf = ReplayBuffer(spec, action_dim=2, capacity=100)
    assert load_episodes_into_buffer(tmp_path, buf) == sum(lengths)
    live = buf.live_transitions()
    assert buf.num_live_frames() == sum(T + 1 for T in lengths)
    for i in range(live["actions"].shape[0]):
        ep, t = (int(x) for x in live["actions"][i])
        np.testing.assert_array_equal(live["observations"]["pixels"][i], obs_at(ep, t)["pixels"])
        # the last step's next observation is its own final frame, not the next episode's first
        np.testing.assert_array_equal(live["next_observations"]["pixels"][i], obs_at(ep, t + 1)["pixels"])
    assert live["dones"].sum() == 3 and live["masks"].sum() == sum(lengths) - 3

    # only successful episodes, only intervention steps (non-contiguous segments)
    iv = ReplayBuffer(spec, action_dim=2, capacity=100, extra_keys={"dense_rewards": ((), np.float32)})
    n = load_episodes_into_buffer(
        list_episodes(tmp_path), iv,
        filter=lambda e: e["metadata"]["success"],
        transition_filter=lambda tr: bool(tr["interventions"]),
    )
    assert n == 3 + 3
    batch = iv.sample(300)
    assert batch["interventions"].all() and (batch["action_source"] == 2).all()
    assert set(int(e) for e in batch["actions"][:, 0]) == {0, 2}
    for i in range(300):
        ep, t = (int(x) for x in batch["actions"][i])
        np.testing.assert_array_equal(batch["observations"]["pixels"][i], obs_at(ep, t)["pixels"])
        np.testing.assert_array_equal(batch["next_observations"]["state"][i], obs_at(ep, t + 1)["state"])
        np.testing.assert_allclose(batch["dense_rewards"][i], np.linspace(0, 1, lengths[ep])[t], rtol=1e-6)

    # An extra the files lack and the buffer has no default for is an error.
    needs = ReplayBuffer(spec, action_dim=2, capacity=10, extra_keys={"grasp_penalty": ((), np.float32)})
    with pytest.raises(ValueError, match="grasp_penalty"):
        load_episodes_into_buffer(tmp_path, needs)


def test_grasp_penalty_loaded_from_new_files_and_defaulted_for_old_ones(tmp_path):
    spec = {"state": ((3,), np.float32), "pixels": (IMG, np.uint8)}
    extra = {"grasp_penalty": ((), np.float32)}
    penalties = np.array([0.0, -0.02, 0.0, -0.02], np.float32)
    old = save_episode(str(tmp_path / "old.npz"), make_episode(ep=0, T=4))  # written before the key
    new = save_episode(str(tmp_path / "new.npz"), make_episode(ep=1, T=4) | {"grasp_penalty": penalties})
    bad = save_episode(str(tmp_path / "bad.npz"),
                       make_episode(ep=2, T=4) | {"grasp_penalty": np.zeros((4, 2), np.float32)})

    buf = ReplayBuffer(spec, action_dim=2, capacity=20, extra_keys=extra, extra_defaults={"grasp_penalty": 0.0})
    assert load_episodes_into_buffer([old, new], buf) == 8
    live = buf.live_transitions()
    assert live["grasp_penalty"].dtype == np.float32
    np.testing.assert_array_equal(live["actions"][:, 0], [0] * 4 + [1] * 4)
    np.testing.assert_array_equal(live["grasp_penalty"], np.concatenate([np.zeros(4, np.float32), penalties]))
    # A stored value of the wrong shape is refused (naming the file), not defaulted.
    with pytest.raises(ValueError, match="bad.npz.*grasp_penalty"):
        load_episodes_into_buffer(bad, buf)
    assert len(buf) == 8


def test_every_single_byte_flip_is_refused_or_harmless(tmp_path):
    # Flips in zip bookkeeping (timestamps, attributes) do not change the
    # data; every flip that would change it must be refused.
    path = str(tmp_path / "ep.npz")
    ref_ep = make_episode(T=2)
    save_episode(path, ref_ep)
    good = open(path, "rb").read()
    ref = load_episode(path)
    refused = 0
    for pos in range(len(good)):
        bad = bytearray(good)
        bad[pos] ^= 0xFF
        open(path, "wb").write(bytes(bad))
        try:
            loaded = load_episode(path)
        except EpisodeFormatError:
            refused += 1
            continue
        assert_episode_equal(loaded, ref)
    assert refused > len(good) // 2
