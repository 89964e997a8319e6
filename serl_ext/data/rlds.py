"""Episodes to and from RLDS datasets on disk, through tensorflow-datasets (``pip install -e .[rlds]``).

`RLDS <https://github.com/google-research/rlds>`_ stores an episode as a sequence of steps; step
``t`` holds the observation ``o_t``, the action ``a_t`` taken there, the reward ``r_t`` and
discount ``d_t`` that followed, and ``is_first`` / ``is_last`` / ``is_terminal``. An episode of
this project (``serl_ext/data/episodes.py``: T actions, T+1 observations) becomes T+1 RLDS
steps; the last one holds the final observation and zeros (action, reward, extras):

==================  ==========================  ============================================
RLDS step field     tfds feature                from the episode
==================  ==========================  ============================================
``observation``     FeaturesDict, a Tensor per  ``observations[key][t]`` (its shape, dtype)
                    observation key
``action``          Tensor (A,) float32         ``actions[t]`` (zeros at t = T)
``reward``          Scalar float32              ``rewards[t]`` (0 at t = T)
``discount``        Scalar float32              0 after a terminal step, else 1 (1 - terminal)
``is_first``        bool                        t == 0
``is_last``         bool                        t == T
``is_terminal``     bool                        t == T and the episode terminated
``intervention``    bool                        ``interventions[t]`` (False at t = T)
``action_source``   int8                        ``action_source[t]`` (0 policy, 1 recovery,
                                                2 human; 0 at t = T)
``extras``          FeaturesDict (only when     every other per-step array (``success``,
                    the episodes have extras)   ``grasp_penalty``, ...; zeros at t = T)
==================  ==========================  ============================================

Episode fields: ``steps`` and ``episode_metadata`` = {``metadata``: Text (the episode's JSON
metadata), ``truncated``: bool (the time limit ended it)}. The dataset lives in
``{out_dir}/{name}/{version}`` (tfds' layout; ``dataset_info.json``, ``features.json`` and the
data shards), split ``train``, episodes in the order given (shuffling off).

File formats: ``array_record`` (default) is written and read by tensorflow-datasets *without*
TensorFlow (``tfds.builder_from_directory(folder).as_data_source("train")``; tfds'
``as_dataset`` does not read it, even with TensorFlow); ``tfrecord`` (the format of most
published RLDS datasets, e.g. Open X-Embodiment, read by the ``rlds`` package and
``as_dataset``) needs TensorFlow to write or read (``pip install tensorflow-cpu``). Import also reads RLDS datasets written elsewhere: a missing
``intervention`` / ``action_source`` is False / 0 (2 where ``intervention``), a non-dict
observation becomes ``{"state": ...}``, the last step's action and reward are dropped (RLDS
keeps T+1 steps with the final observation last), ``truncated`` is ``is_last and not
is_terminal`` when the episode metadata does not say.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from serl_ext.data.episodes import (STEP_KEYS, EpisodeWriter, list_episodes, load_episode,
                                    validate_episode)

#: Version written into every exported dataset.
VERSION = "1.0.0"
DEFAULT_NAME = "serl_episodes"
FILE_FORMATS = ("array_record", "tfrecord")
SPLIT = "train"
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
_REQUIRED_STEP_FIELDS = ("observation", "action", "is_first", "is_last")


class RLDSFormatError(ValueError):
    """A folder is not a readable RLDS dataset, or its episodes do not fit the episode format."""


def _tfds():
    """``tensorflow_datasets``, or an ImportError saying how to install it."""
    try:
        import importlib_resources  # noqa: F401  (tfds builders need it; not a tfds dependency on 3.9+)
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("RLDS export/import needs tensorflow-datasets and importlib_resources: "
                          f"pip install -e '.[rlds]' ({e})") from e
    return tfds


def _extra_names(episode: Mapping[str, Any]) -> List[str]:
    return sorted(k for k in episode if k not in ("observations", "metadata", *STEP_KEYS))


def _structure(episode: Mapping[str, Any]) -> Dict[str, Any]:
    """Shapes and dtypes that all episodes of one dataset must share."""
    return {
        "observations": {k: (tuple(np.shape(v)[1:]), np.asarray(v).dtype.str)
                         for k, v in sorted(episode["observations"].items())},
        "action_dim": int(np.shape(episode["actions"])[1]),
        "extras": {k: (tuple(np.shape(episode[k])[1:]), np.asarray(episode[k]).dtype.str)
                   for k in _extra_names(episode)},
    }


def _features(structure: Mapping[str, Any]):
    tfds = _tfds()
    F = tfds.features
    step = {
        "observation": F.FeaturesDict({k: F.Tensor(shape=shape, dtype=np.dtype(dt))
                                       for k, (shape, dt) in structure["observations"].items()}),
        "action": F.Tensor(shape=(structure["action_dim"],), dtype=np.float32),
        "reward": F.Scalar(dtype=np.float32),
        "discount": F.Scalar(dtype=np.float32),
        "is_first": F.Scalar(dtype=np.bool_),
        "is_last": F.Scalar(dtype=np.bool_),
        "is_terminal": F.Scalar(dtype=np.bool_),
        "intervention": F.Scalar(dtype=np.bool_),
        "action_source": F.Scalar(dtype=np.int8),
    }
    if structure["extras"]:
        step["extras"] = F.FeaturesDict({k: F.Tensor(shape=shape, dtype=np.dtype(dt))
                                         for k, (shape, dt) in structure["extras"].items()})
    return F.FeaturesDict({
        "steps": F.Dataset(step),
        "episode_metadata": F.FeaturesDict({"metadata": F.Text(), "truncated": F.Scalar(dtype=np.bool_)}),
    })


def episode_to_rlds(episode: Mapping[str, Any]) -> Dict[str, Any]:
    """One episode as an RLDS example (module table): ``{"steps": [T+1 step dicts],
    "episode_metadata": {...}}`` of numpy values.

    Raises:
      ValueError/TypeError: the episode fails ``validate_episode``.
    """
    ep = validate_episode(episode)
    T = int(ep["actions"].shape[0])
    terminal = bool(ep["terminals"][-1])
    extras = _extra_names(ep)
    steps = []
    for t in range(T + 1):
        last = t == T
        step = {
            "observation": {k: v[t] for k, v in ep["observations"].items()},
            "action": np.zeros_like(ep["actions"][0]) if last else ep["actions"][t],
            "reward": np.float32(0.0 if last else ep["rewards"][t]),
            "discount": np.float32(0.0 if (terminal and t >= T - 1) else 1.0),
            "is_first": t == 0,
            "is_last": last,
            "is_terminal": last and terminal,
            "intervention": False if last else bool(ep["interventions"][t]),
            "action_source": np.int8(0 if last else ep["action_source"][t]),
        }
        if extras:
            step["extras"] = {k: np.zeros_like(ep[k][0]) if last else ep[k][t] for k in extras}
        steps.append(step)
    return {"steps": steps, "episode_metadata": {
        "metadata": json.dumps(ep["metadata"], sort_keys=True),
        "truncated": bool(ep["truncations"][-1])}}


def _builder_class(name: str, features, description: str):
    tfds = _tfds()

    class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(globals()["VERSION"])

        def __init__(self, examples=None, **kwargs):
            self._examples = examples
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, description=description, features=features,
                                         disable_shuffling=True)

        def _split_generators(self, dl_manager):
            return {SPLIT: self._generate_examples()}

        def _generate_examples(self):
            if self._examples is None:
                raise RuntimeError("this builder only writes the episodes it was given")
            yield from self._examples

    _Builder.name = name
    return _Builder


def export_rlds(episodes: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike, *,
                name: str = DEFAULT_NAME, file_format: str = "array_record",
                overwrite: bool = False, description: str = "") -> str:
    """Writes ``episodes`` as one RLDS dataset (module docstring) and returns its folder.

    Args:
      episodes: in-memory episodes (``serl_ext/data/episodes.py``), all with the same
        observation keys / shapes / dtypes, action size and extras. Consumed once, one at a time.
      out_dir: tfds data dir; the dataset goes to ``{out_dir}/{name}/{VERSION}``.
      name: dataset name (lower snake case).
      file_format: ``"array_record"`` (no TensorFlow needed) or ``"tfrecord"`` (needs TensorFlow).
      overwrite: replace an existing dataset of that name and version (else refused).
    Returns:
      the dataset folder (holds ``dataset_info.json``; :func:`import_rlds` reads it).
    Raises:
      ImportError: tensorflow-datasets missing (or TensorFlow for ``tfrecord``).
      ValueError: a bad name or format, no episodes, an invalid episode, or one whose structure
        differs from the first (the message says which episode and how).
      FileExistsError: the dataset exists and ``overwrite`` is False.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"dataset name must be lower snake case ([a-z][a-z0-9_]*), got {name!r}")
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}")
    tfds = _tfds()
    iterator = iter(episodes)
    try:
        first = validate_episode(next(iterator))
    except StopIteration:
        raise ValueError("no episodes to export") from None
    structure = _structure(first)
    target = os.path.join(os.fspath(out_dir), name, VERSION)
    if os.path.exists(target):
        if not overwrite:
            raise FileExistsError(f"{target} exists; remove it or pass overwrite=True (--overwrite)")
        shutil.rmtree(target)

    def examples():
        for index, episode in enumerate(_chain(first, iterator)):
            ep = validate_episode(episode)
            got = _structure(ep)
            if got != structure:
                raise ValueError(f"episode {index} does not match episode 0 of the dataset: {got} != "
                                 f"{structure}")
            yield index, episode_to_rlds(ep)

    builder = _builder_class(name, _features(structure), description)(
        examples=examples(), data_dir=os.fspath(out_dir), file_format=file_format)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    return os.fspath(builder.data_dir)


def _chain(first, rest):
    yield first
    yield from rest


def export_episode_files(paths_or_dir: str | os.PathLike | Sequence[str], out_dir: str | os.PathLike,
                         **kwargs) -> str:
    """:func:`export_rlds` of episode files (a folder's ``*.npz`` in name order, or a list of
    paths); each file is read and verified (``load_episode``) when it is written.

    Raises:
      FileNotFoundError: no such folder, or it has no episode files.
      EpisodeFormatError: a corrupt episode file (names it); the rest as :func:`export_rlds`.
    """
    if isinstance(paths_or_dir, (str, os.PathLike)):
        paths = list_episodes(paths_or_dir)
        if not paths:
            raise FileNotFoundError(f"no episode files (*.npz) in {os.fspath(paths_or_dir)!r}")
    else:
        paths = [os.fspath(p) for p in paths_or_dir]
    return export_rlds((load_episode(p) for p in paths), out_dir, **kwargs)


def find_dataset_dir(path: str | os.PathLike) -> str:
    """The dataset folder at or below ``path`` (the one holding ``dataset_info.json``; searched
    two levels down, tfds' ``{name}/{version}`` layout).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      RLDSFormatError: no dataset, or more than one, at or below ``path`` (the message lists them).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"RLDS dataset folder {path!r} does not exist")
    if os.path.isfile(os.path.join(path, "dataset_info.json")):
        return path
    found = []
    if os.path.isdir(path):
        for a in sorted(os.listdir(path)):
            for sub in ([os.path.join(path, a)] + [os.path.join(path, a, b) for b in sorted(os.listdir(
                    os.path.join(path, a)))] if os.path.isdir(os.path.join(path, a)) else []):
                if os.path.isfile(os.path.join(sub, "dataset_info.json")):
                    found.append(sub)
    if len(found) == 1:
        return found[0]
    if not found:
        raise RLDSFormatError(f"{path}: not an RLDS / tfds dataset folder (no dataset_info.json here "
                              "or in {name}/{version} below)")
    raise RLDSFormatError(f"{path} holds several datasets, name one: {found}")


def _steps_list(steps: Any) -> List[Mapping[str, Any]]:
    if hasattr(steps, "__len__") and hasattr(steps, "__getitem__") and not isinstance(steps, Mapping):
        return [steps[i] for i in range(len(steps))]
    if isinstance(steps, Mapping):  # a batched dict of arrays (a tfds decoder may give these)
        n = len(np.asarray(steps["is_last"]))
        return [{k: _index(v, i) for k, v in steps.items()} for i in range(n)]
    return list(steps)


def _index(value: Any, i: int) -> Any:
    if isinstance(value, Mapping):
        return {k: _index(v, i) for k, v in value.items()}
    return np.asarray(value)[i]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def rlds_to_episode(example: Mapping[str, Any], where: str = "episode") -> Dict[str, Any]:
    """One RLDS example (``{"steps": ..., "episode_metadata": ...}`` of numpy values) as an
    episode dict (module docstring; validated).

    Raises:
      RLDSFormatError: fewer than 2 steps, missing step fields, or an episode that fails
        ``validate_episode`` (the message starts with ``where``).
    """
    try:
        steps = _steps_list(example["steps"])
    except (KeyError, TypeError) as e:
        raise RLDSFormatError(f"{where}: no readable 'steps' ({e})") from None
    if len(steps) < 2:
        raise RLDSFormatError(f"{where}: {len(steps)} step(s); an episode needs T+1 >= 2 RLDS steps")
    missing = [f for f in _REQUIRED_STEP_FIELDS if f not in steps[0]]
    if missing:
        raise RLDSFormatError(f"{where}: steps lack {missing} (fields: {sorted(steps[0])})")
    T = len(steps) - 1
    body = steps[:T]

    def obs_of(step):
        o = step["observation"]
        return dict(o) if isinstance(o, Mapping) else {"state": o}

    obs = [obs_of(s) for s in steps]
    observations = {k: np.stack([np.asarray(o[k]) for o in obs]) for k in obs[0]}
    interventions = np.array([bool(s.get("intervention", False)) for s in body])
    if "action_source" in steps[0]:
        sources = np.array([int(s["action_source"]) for s in body], np.int8)
    else:
        sources = np.where(interventions, 2, 0).astype(np.int8)
    meta = example.get("episode_metadata", {}) or {}
    metadata: Dict[str, Any] = {}
    if "metadata" in meta:
        try:
            metadata = json.loads(_text(meta["metadata"]))
        except json.JSONDecodeError as e:
            raise RLDSFormatError(f"{where}: episode_metadata.metadata is not JSON ({e})") from None
    terminal = bool(steps[-1].get("is_terminal", False))
    truncated = bool(meta["truncated"]) if "truncated" in meta else (bool(steps[-1]["is_last"]) and not terminal)
    terminals = np.zeros(T, bool)
    truncations = np.zeros(T, bool)
    terminals[-1], truncations[-1] = terminal, truncated and not terminal
    episode: Dict[str, Any] = {
        "observations": observations,
        "actions": np.stack([np.asarray(s["action"], np.float32).reshape(-1) for s in body]),
        "rewards": np.array([float(s.get("reward", 0.0)) for s in body], np.float32),
        "terminals": terminals,
        "truncations": truncations,
        "interventions": interventions,
        "action_source": sources,
        "metadata": metadata,
    }
    if "extras" in steps[0]:
        for k in steps[0]["extras"]:
            episode[k] = np.stack([np.asarray(s["extras"][k]) for s in body])
    try:
        return validate_episode(episode)
    except (ValueError, TypeError) as e:
        raise RLDSFormatError(f"{where}: not a valid episode: {e}") from e


def import_rlds(path: str | os.PathLike, *, split: str = SPLIT) -> Iterator[Dict[str, Any]]:
    """Reads an RLDS dataset (ours or another's) as episode dicts, in the dataset's order.

    Args:
      path: the dataset folder or a folder above it (:func:`find_dataset_dir`).
      split: tfds split name.
    Yields:
      validated episode dicts (``serl_ext/data/episodes.py``).
    Raises:
      ImportError: tensorflow-datasets missing, or TensorFlow for a ``tfrecord`` dataset.
      FileNotFoundError: no such folder.
      RLDSFormatError: not a dataset folder, unreadable metadata or shards (corrupt or missing
        files), no such split, or an episode that does not convert (the message says which).
    """
    tfds = _tfds()
    directory = find_dataset_dir(path)
    try:
        builder = tfds.builder_from_directory(directory)
        info = builder.info
        features = info.features
    except Exception as e:  # json errors, missing features.json, ... (tfds raises many kinds)
        raise RLDSFormatError(f"{directory}: unreadable tfds dataset metadata ({type(e).__name__}: {e})") from e
    if "steps" not in features:
        raise RLDSFormatError(f"{directory}: not an RLDS dataset (no 'steps' feature; features: {list(features)})")
    if split not in info.splits:
        raise RLDSFormatError(f"{directory}: no split {split!r} (splits: {list(info.splits)})")
    file_format = str(getattr(info.file_format, "value", info.file_format))
    if "array_record" in file_format:
        try:
            source = builder.as_data_source(split=split)
            count = len(source)
        except Exception as e:
            raise RLDSFormatError(f"{directory}: cannot open the {split!r} shards ({type(e).__name__}: {e})") from e
        for i in range(count):
            try:
                example = source[i]
            except Exception as e:
                raise RLDSFormatError(f"{directory}: episode {i} is unreadable (corrupt shard?) "
                                      f"({type(e).__name__}: {e})") from e
            yield rlds_to_episode(example, where=f"{directory} episode {i}")
        return
    try:
        import tensorflow  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{directory} is stored as {file_format}; reading it needs TensorFlow "
                          "(pip install tensorflow-cpu)") from e
    try:
        examples = tfds.as_numpy(builder.as_dataset(split=split))
        for i, example in enumerate(examples):
            yield rlds_to_episode(example, where=f"{directory} episode {i}")
    except RLDSFormatError:
        raise
    except Exception as e:
        raise RLDSFormatError(f"{directory}: cannot read the {split!r} shards ({type(e).__name__}: {e})") from e


def import_to_episode_files(path: str | os.PathLike, out_dir: str | os.PathLike, *,
                            prefix: str = "episode", split: str = SPLIT,
                            metadata: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Writes every episode of an RLDS dataset as an episode file ``{out_dir}/{prefix}_NNNNNN.npz``
    (``EpisodeWriter``: numbering continues after existing files); returns the paths.

    Args:
      metadata: merged into each episode's metadata (e.g. ``{"source": "demo", "task": ...}``).
    Raises:
      what :func:`import_rlds` raises; ValueError for a bad prefix.
    """
    writer = EpisodeWriter(out_dir, prefix=prefix)
    paths = []
    for episode in import_rlds(path, split=split):
        if metadata:
            episode["metadata"] = {**episode["metadata"], **dict(metadata)}
        paths.append(writer.write(episode))
    return paths
