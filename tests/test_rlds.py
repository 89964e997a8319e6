"""RLDS export / import (serl_ext/data/rlds.py) round trip through tensorflow-datasets, without
TensorFlow (array_record), and clear errors on bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="RLDS export/import needs tensorflow-datasets: "
                    "pip install -e '.[rlds]'")

from serl_ext.data import rlds  # noqa: E402
from serl_ext.data.episodes import EpisodeWriter, list_episodes, load_episode  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _episode(T, seed, terminal=False, truncated=False):
    rng = np.random.default_rng(seed)
    interventions = rng.random(T) < 0.4
    terminals = np.zeros(T, bool)
    truncations = np.zeros(T, bool)
    terminals[-1], truncations[-1] = terminal, truncated
    return {
        "observations": {"state": rng.normal(size=(T + 1, 5)).astype(np.float32),
                         "pixels": rng.integers(0, 256, (T + 1, 8, 8, 3), dtype=np.uint8)},
        "actions": rng.uniform(-1, 1, (T, 4)).astype(np.float32),
        "rewards": rng.normal(size=T).astype(np.float32),
        "terminals": terminals,
        "truncations": truncations,
        "interventions": interventions,
        "action_source": np.where(interventions, 2, rng.integers(0, 2, T)).astype(np.int8),
        "success": np.arange(T) == T - 1,
        "grasp_penalty": np.where(rng.random(T) < 0.3, -0.02, 0.0).astype(np.float32),
        "metadata": {"task": "pick-place", "seed": seed, "source": "rollout", "note": "é"},
    }


def _assert_same(a, b):
    assert set(a) == set(b)
    assert set(a["observations"]) == set(b["observations"])
    for k in a["observations"]:
        assert a["observations"][k].dtype == b["observations"][k].dtype
        np.testing.assert_array_equal(a["observations"][k], b["observations"][k])
    for k in set(a) - {"observations", "metadata"}:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a["metadata"] == b["metadata"]


def test_round_trip_in_memory_and_the_rlds_step_fields(tmp_path):
    episodes = [_episode(6, 0, terminal=True), _episode(3, 1, truncated=True), _episode(1, 2)]
    folder = rlds.export_rlds(episodes, tmp_path / "out", name="my_episodes")
    assert folder == str(tmp_path / "out" / "my_episodes" / rlds.VERSION)
    back = list(rlds.import_rlds(tmp_path / "out"))  # found below the data dir
    assert len(back) == 3
    for a, b in zip(episodes, back):
        _assert_same(rlds.validate_episode(a), b)
    # the RLDS view as another reader sees it: T+1 steps, flags and discounts
    import tensorflow_datasets as tfds

    source = tfds.builder_from_directory(folder).as_data_source(split="train")
    steps = source[0]["steps"]
    steps = [steps[i] for i in range(len(steps))]
    assert len(steps) == 7
    assert [bool(s["is_first"]) for s in steps] == [True] + [False] * 6
    assert [bool(s["is_last"]) for s in steps] == [False] * 6 + [True]
    assert [bool(s["is_terminal"]) for s in steps] == [False] * 6 + [True]
    assert [float(s["discount"]) for s in steps] == [1.0] * 5 + [0.0, 0.0]
    np.testing.assert_array_equal(steps[2]["action"], episodes[0]["actions"][2])
    np.testing.assert_array_equal(steps[6]["observation"]["state"], episodes[0]["observations"]["state"][6])
    assert [bool(s["intervention"]) for s in steps[:6]] == episodes[0]["interventions"].tolist()
    assert int(steps[3]["action_source"]) == int(episodes[0]["action_source"][3])
    assert float(steps[1]["extras"]["grasp_penalty"]) == float(episodes[0]["grasp_penalty"][1])
    assert "tensorflow" not in sys.modules  # array_record: written and read without TensorFlow


def test_episode_files_round_trip_through_the_launchers(tmp_path):
    writer = EpisodeWriter(tmp_path / "eps", prefix="rollout")
    originals = [writer.write(_episode(T, s, terminal=s == 0)) for s, T in enumerate((4, 2))]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "launchers/export_rlds.py", f"--episodes={tmp_path / 'eps'}",
                          f"--out={tmp_path / 'rlds'}"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    back = subprocess.run([sys.executable, "launchers/import_rlds.py", f"--dataset={tmp_path / 'rlds'}",
                           f"--out={tmp_path / 'demos'}", "--source=demo"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert back.returncode == 0, back.stdout[-2000:] + back.stderr[-2000:]
    imported = list_episodes(tmp_path / "demos")
    assert [os.path.basename(p) for p in imported] == ["episode_000000.npz", "episode_000001.npz"]
    for original, path in zip(originals, imported):
        a, b = load_episode(original), load_episode(path)
        assert b["metadata"].pop("source") == "demo" and a["metadata"].pop("source") == "rollout"
        a["metadata"].pop("episode_id"), b["metadata"].pop("episode_id")
        _assert_same(a, b)
    # exporting again over the dataset is refused with a clear message
    again = subprocess.run([sys.executable, "launchers/export_rlds.py", f"--episodes={tmp_path / 'eps'}",
                            f"--out={tmp_path / 'rlds'}"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="lower snake case"):
        rlds.export_rlds([_episode(2, 0)], tmp_path, name="Bad-Name")
    with pytest.raises(ValueError, match="no episodes"):
        rlds.export_rlds([], tmp_path)
    with pytest.raises(ValueError, match="episode 1 does not match"):
        other = _episode(2, 1)
        other["observations"]["state"] = other["observations"]["state"][:, :3]
        rlds.export_rlds([_episode(2, 0), other], tmp_path / "mismatch")
    with pytest.raises(FileNotFoundError):
        list(rlds.import_rlds(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(rlds.RLDSFormatError, match="not an RLDS / tfds dataset folder"):
        list(rlds.import_rlds(tmp_path / "empty"))
    folder = rlds.export_rlds([_episode(3, 0), _episode(2, 1)], tmp_path / "good")
    # a corrupt dataset_info.json
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(folder, broken)
    (broken / "dataset_info.json").write_text("{not json")
    with pytest.raises(rlds.RLDSFormatError, match="unreadable tfds dataset metadata"):
        list(rlds.import_rlds(broken))
    # a truncated data shard
    shard = tmp_path / "shard"
    shutil.copytree(folder, shard)
    data = [p for p in os.listdir(shard) if "array_record" in p]
    assert data
    for name in data:
        (shard / name).write_bytes((shard / name).read_bytes()[:40])
    with pytest.raises(rlds.RLDSFormatError, match="shard"):
        list(rlds.import_rlds(shard))
    # a folder with two datasets must be named more precisely
    rlds.export_rlds([_episode(2, 0)], tmp_path / "good", name="second")
    with pytest.raises(rlds.RLDSFormatError, match="several datasets"):
        list(rlds.import_rlds(tmp_path / "good"))
    info = json.loads((tmp_path / "good" / "second" / rlds.VERSION / "dataset_info.json").read_text())
    assert info["name"] == "second"


def test_tfrecord_round_trip_with_tensorflow(tmp_path):
    """tfrecord, the format TF-based RLDS readers (rlds, Open X-Embodiment loaders) use."""
    pytest.importorskip("tensorflow", reason="the tfrecord format needs TensorFlow: pip install tensorflow-cpu")
    episodes = [_episode(4, 0, terminal=True), _episode(2, 1)]
    folder = rlds.export_rlds(episodes, tmp_path, name="tfr", file_format="tfrecord")
    assert any(".tfrecord" in n for n in os.listdir(folder))
    for a, b in zip(episodes, rlds.import_rlds(folder)):
        _assert_same(rlds.validate_episode(a), b)


def test_import_reads_a_plain_rlds_dataset_written_elsewhere(tmp_path):
    """An RLDS dataset with only the standard step fields and a non-dict observation (as
    other tools write them): defaults for what it lacks."""
    import tensorflow_datasets as tfds

    F = tfds.features

    class PlainRlds(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("0.1.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, disable_shuffling=True, features=F.FeaturesDict({
                "steps": F.Dataset({
                    "observation": F.Tensor(shape=(3,), dtype=np.float32),
                    "action": F.Tensor(shape=(2,), dtype=np.float32),
                    "reward": F.Scalar(dtype=np.float32), "discount": F.Scalar(dtype=np.float32),
                    "is_first": F.Scalar(dtype=np.bool_), "is_last": F.Scalar(dtype=np.bool_),
                    "is_terminal": F.Scalar(dtype=np.bool_)})}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, (T, terminal) in enumerate(((3, True), (2, False))):
                yield i, {"steps": [{
                    "observation": np.full(3, t, np.float32), "action": np.full(2, t, np.float32),
                    "reward": np.float32(t), "discount": np.float32(1.0), "is_first": t == 0,
                    "is_last": t == T, "is_terminal": terminal and t == T} for t in range(T + 1)]}

    builder = PlainRlds(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    first, second = rlds.import_rlds(builder.data_dir)
    np.testing.assert_array_equal(first["observations"]["state"][:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(first["actions"][:, 0], [0, 1, 2])  # the last step's action is dropped
    np.testing.assert_array_equal(first["rewards"], [0, 1, 2])
    assert first["terminals"].tolist() == [False, False, True] and not first["truncations"].any()
    assert second["truncations"].tolist() == [False, True] and not second["terminals"].any()
    assert not first["interventions"].any() and (first["action_source"] == 0).all()
    assert first["metadata"] == {}
