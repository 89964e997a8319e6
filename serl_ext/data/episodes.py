"""Episodes in memory and on disk (one `.npz` file per episode).

In-memory episode (a dict), T >= 1 steps:

=====================  ==================  =========================================
key                    shape               dtype / meaning
=====================  ==================  =========================================
``observations``       dict key -> (T+1,   per key (state float32, pixels uint8, ...);
                       ...)                entry T is the final next observation
``actions``            (T, A)              float32, the executed action
``rewards``            (T,)                float32
``terminals``          (T,)                bool, env terminated after step t
``truncations``        (T,)                bool, time limit hit after step t
``interventions``      (T,)                bool, the human acted at step t
``action_source``      (T,)                int8, 0 policy, 1 recovery, 2 human
any other key          (T, ...)            bool/int/float extra per-step array
                                           (e.g. ``success``, ``dense_rewards``,
                                           ``grasp_penalty`` float32 (T,))
``metadata``           dict                JSON-serialisable (task, seed, success,
                                           episode_id, source "demo"/"rollout", ...)
=====================  ==================  =========================================

Only the last step may be terminal or truncated. Float arrays must be
finite.

File format, version 1 (`FORMAT_VERSION`): an uncompressed `np.savez`
archive, readable with `np.load(path, allow_pickle=False)`, members

* ``observations/<key>``: the observation arrays;
* ``actions``, ``rewards``, ``terminals``, ``truncations``,
  ``interventions``, ``action_source``: as above;
* ``extras/<name>``: extra per-step arrays;
* ``header``: uint8 (N,) array of UTF-8 JSON
  ``{"format_version": 1, "sha256": <hex>, "metadata": {...}}``.

``sha256`` covers every other member in sorted member-name order: for
each, the bytes ``name \\0 dtype.str \\0 repr(shape) \\0`` followed by the
C-order array bytes (`array_checksum`). Writes are atomic: a temp file in
the target directory (``.<name>.<random>.tmp``, ignored by
`list_episodes`), flushed and fsync'ed, then `os.replace`d over the target.
Files are named ``<prefix>_<id:06d>.npz`` by `EpisodeWriter`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from serl_ext.data._validation import check_action_source, coerce_array
from serl_ext.data.replay_buffer import TRANSITION_KEYS
from serl_ext.files import atomic_write

FORMAT_VERSION = 1
STEP_KEYS = ("actions", "rewards", "terminals", "truncations", "interventions", "action_source")
_STEP_DTYPES = {
    "actions": np.dtype(np.float32),
    "rewards": np.dtype(np.float32),
    "terminals": np.dtype(bool),
    "truncations": np.dtype(bool),
    "interventions": np.dtype(bool),
    "action_source": np.dtype(np.int8),
}
_HOUSE_TRANSITION_KEYS = TRANSITION_KEYS
_OBS_PREFIX = "observations/"
_EXTRA_PREFIX = "extras/"
_HEADER = "header"


class EpisodeFormatError(ValueError):
    """An episode file is unreadable, corrupt, of another version, or inconsistent."""


class ObservationMismatchError(ValueError):
    """Episodes whose observations (keys, per-step shapes, image vs. state arrays) or action
    size differ from what a replay buffer stores (see `check_episode_fits`)."""


# ------------------------------------------------------------- validation
def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{what} names must be non-empty str without '/', got {name!r}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON serialisable")


def _normalize_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        text = json.dumps(dict(metadata), default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata is not JSON serialisable: {e}") from e
    return json.loads(text)


def validate_episode(episode: Mapping[str, Any]) -> dict[str, Any]:
    """Check an in-memory episode and return a normalised copy.

    Normalisation: step arrays cast (losslessly, see `_validation`) to the
    dtypes of the module table, float observations kept in their float
    dtype, metadata round-tripped through JSON (numpy scalars become
    Python values). Arrays are copied.

    Raises:
      ValueError: missing keys, T < 1, inconsistent lengths, NaN/inf, a
        terminal/truncation before the last step, bad action_source values,
        metadata not JSON serialisable.
      TypeError: wrong container or dtype kinds.
    """
    if not isinstance(episode, Mapping):
        raise TypeError(f"episode must be a dict, got {type(episode).__name__}")
    missing = [k for k in ("observations", *STEP_KEYS) if k not in episode]
    if missing:
        raise ValueError(f"episode is missing keys {missing}")
    actions = np.asarray(episode["actions"])
    if actions.ndim != 2 or actions.shape[0] < 1:
        raise ValueError(f"actions must have shape (T, A) with T >= 1, got {actions.shape}")
    T, A = actions.shape
    out: dict[str, Any] = {}
    obs = episode["observations"]
    if not isinstance(obs, Mapping) or not obs:
        raise ValueError("observations must be a non-empty dict key -> (T+1, ...) array")
    out["observations"] = {}
    for k, v in obs.items():
        _check_name(k, "observation key")
        arr = np.asarray(v)
        if arr.ndim < 1 or arr.shape[0] != T + 1:
            raise ValueError(f"observations[{k!r}] must have leading dim T+1={T + 1}, got shape {arr.shape}")
        dtype = arr.dtype if arr.dtype.kind in "biuf" else np.dtype(np.float32)
        out["observations"][k] = np.array(coerce_array(arr, None, dtype, f"observations[{k!r}]"))
    for k in STEP_KEYS:
        shape = (T, A) if k == "actions" else (T,)
        out[k] = np.array(coerce_array(episode[k], shape, _STEP_DTYPES[k], k))
    check_action_source(out["action_source"])
    dones = out["terminals"] | out["truncations"]
    if np.any(dones[:-1]):
        first = int(np.flatnonzero(dones[:-1])[0])
        raise ValueError(f"episode has a terminal/truncation at step {first} before its last step {T - 1}")
    for k, v in episode.items():
        if k in ("observations", "metadata", *STEP_KEYS):
            continue
        _check_name(k, "extra per-step array")
        if k in _HOUSE_TRANSITION_KEYS:
            raise ValueError(f"extra key {k!r} collides with a transition key")
        arr = np.asarray(v)
        if arr.ndim < 1 or arr.shape[0] != T:
            raise ValueError(f"extra {k!r} must have leading dim T={T}, got shape {arr.shape}")
        dtype = arr.dtype if arr.dtype.kind in "biuf" else np.dtype(np.float32)
        out[k] = np.array(coerce_array(arr, None, dtype, k))
    out["metadata"] = _normalize_metadata(episode.get("metadata"))
    return out


def episode_length(episode: Mapping[str, Any]) -> int:
    """T, the number of steps (len of `actions`)."""
    return int(np.shape(episode["actions"])[0])


def _extra_keys(episode: Mapping[str, Any]) -> list[str]:
    return [k for k in episode if k not in ("observations", "metadata", *STEP_KEYS)]


# -------------------------------------------------------------- file I/O
def array_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 hex digest over named arrays (format in the module docstring)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{arr.dtype.str}\0{arr.shape!r}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _episode_to_arrays(ep: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays = {_OBS_PREFIX + k: v for k, v in ep["observations"].items()}
    arrays.update({k: ep[k] for k in STEP_KEYS})
    arrays.update({_EXTRA_PREFIX + k: ep[k] for k in _extra_keys(ep)})
    return arrays


def _fsync_dir(directory: str) -> None:
    # Make the rename durable; not supported on every OS/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_episode(path: str | os.PathLike, episode: Mapping[str, Any]) -> str:
    """Validate `episode` and write it atomically to `path` (must end in .npz).

    Returns:
      the path written, as str.

    Raises:
      ValueError / TypeError: invalid episode (see `validate_episode`) or a
        path not ending in ".npz".
      FileNotFoundError: the parent directory does not exist.
      OSError: write failures; the target is then untouched (an older file
        stays intact) and no temp file is left behind.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"episode path must end with '.npz', got {path!r}")
    ep = validate_episode(episode)
    arrays = _episode_to_arrays(ep)
    header = {"format_version": FORMAT_VERSION, "sha256": array_checksum(arrays), "metadata": ep["metadata"]}
    arrays[_HEADER] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory {directory!r} for episode {path!r} does not exist")
    atomic_write(path, lambda f: np.savez(f, **arrays))
    _fsync_dir(directory)
    return path


def load_episode(path: str | os.PathLike) -> dict[str, Any]:
    """Read and verify an episode written by `save_episode`.

    Returns:
      the episode dict (module table); `metadata` is the user metadata
      (without the format version and checksum).

    Raises:
      FileNotFoundError: no such file.
      EpisodeFormatError: (names the file) not a readable npz (truncated or
        corrupt zip, CRC errors, pickled content), missing header or keys,
        unknown members, wrong format version, checksum mismatch, or an
        episode that fails `validate_episode`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"episode file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise EpisodeFormatError(f"{path}: not an npz archive")
            arrays = {name: npz[name] for name in npz.files}
    except EpisodeFormatError:
        raise
    except (PermissionError, IsADirectoryError):
        raise
    except Exception as e:  # zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, ...
        raise EpisodeFormatError(f"{path}: unreadable or corrupt episode file ({type(e).__name__}: {e})") from e
    if _HEADER not in arrays:
        raise EpisodeFormatError(f"{path}: missing '{_HEADER}' member (not an episode file?)")
    raw = arrays.pop(_HEADER)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise EpisodeFormatError(f"{path}: header must be a uint8 vector, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EpisodeFormatError(f"{path}: header is not valid JSON ({e})") from e
    if not isinstance(header, dict) or not {"format_version", "sha256", "metadata"} <= set(header):
        raise EpisodeFormatError(f"{path}: header must hold format_version, sha256 and metadata")
    if header["format_version"] != FORMAT_VERSION:
        raise EpisodeFormatError(
            f"{path}: unsupported format version {header['format_version']!r} (this code reads {FORMAT_VERSION})"
        )
    if array_checksum(arrays) != header["sha256"]:
        raise EpisodeFormatError(f"{path}: SHA-256 checksum mismatch (file corrupted or edited)")
    episode: dict[str, Any] = {"observations": {}}
    for name, arr in arrays.items():
        if name.startswith(_OBS_PREFIX):
            episode["observations"][name[len(_OBS_PREFIX):]] = arr
        elif name.startswith(_EXTRA_PREFIX):
            episode[name[len(_EXTRA_PREFIX):]] = arr
        elif name in STEP_KEYS:
            if arr.dtype != _STEP_DTYPES[name]:
                raise EpisodeFormatError(f"{path}: {name} has dtype {arr.dtype}, expected {_STEP_DTYPES[name]}")
            episode[name] = arr
        else:
            raise EpisodeFormatError(f"{path}: unknown member {name!r}")
    episode["metadata"] = header["metadata"]
    try:
        return validate_episode(episode)
    except (ValueError, TypeError) as e:
        raise EpisodeFormatError(f"{path}: invalid episode: {e}") from e


def list_episodes(directory: str | os.PathLike, prefix: str | None = None) -> list[str]:
    """Episode files (`*.npz`, not hidden) in `directory`, sorted by file name.

    Args:
      directory: folder to list (not recursive).
      prefix: only names starting with `prefix + "_"` when given.

    Raises:
      FileNotFoundError / NotADirectoryError: `directory` missing or a file.
    """
    directory = os.fspath(directory)
    if not os.path.exists(directory):
        raise FileNotFoundError(f"episode directory {directory!r} does not exist")
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"{directory!r} is not a directory")
    names = [
        n
        for n in os.listdir(directory)
        if n.endswith(".npz") and not n.startswith(".") and (prefix is None or n.startswith(prefix + "_"))
    ]
    return [os.path.join(directory, n) for n in sorted(names)]


class EpisodeWriter:
    """Writes episodes as `<directory>/<prefix>_<id:06d>.npz` with increasing ids.

    On creation the directory is made if needed and numbering resumes after
    the largest id among existing `<prefix>_<digits>.npz` files (parsed by a
    regular expression, never by slicing names). `write` sets
    `metadata["episode_id"]` to the assigned id. Thread-safe.

    Args:
      directory: target folder.
      prefix: file name prefix (letters, digits, '-', '_', '.').
    """

    def __init__(self, directory: str | os.PathLike, prefix: str = "episode"):
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", prefix):
            raise ValueError(f"prefix must be a simple file-name stem, got {prefix!r}")
        self._directory = os.fspath(directory)
        self._prefix = prefix
        os.makedirs(self._directory, exist_ok=True)
        pattern = re.compile(re.escape(prefix) + r"_(\d+)\.npz")
        ids = [int(m.group(1)) for n in os.listdir(self._directory) if (m := pattern.fullmatch(n))]
        self._next_id = max(ids) + 1 if ids else 0
        self._lock = threading.Lock()

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def next_id(self) -> int:
        """Id the next `write` will use."""
        return self._next_id

    def path_for(self, episode_id: int) -> str:
        """File path of episode `episode_id`."""
        return os.path.join(self._directory, f"{self._prefix}_{int(episode_id):06d}.npz")

    def write(self, episode: Mapping[str, Any]) -> str:
        """Save `episode` under the next id; returns its path.

        Raises: whatever `save_episode` raises; the id is only consumed on
        success.
        """
        with self._lock:
            episode_id = self._next_id
            ep = dict(episode)
            ep["metadata"] = {**dict(episode.get("metadata") or {}), "episode_id": episode_id}
            path = save_episode(self.path_for(episode_id), ep)
            self._next_id = episode_id + 1
            return path


# ------------------------------------------------- episodes <-> transitions
def episode_to_transitions(episode: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield the T transitions of an episode with the house keys.

    `masks = 1 - terminals` (float32; truncation keeps mask 1),
    `dones = terminals | truncations`, `next_observations =
    observations[t + 1]`; extras are yielded under their own names. Arrays
    are copies.

    Raises:
      ValueError / TypeError: invalid episode (`validate_episode`).
    """
    ep = validate_episode(episode)
    T = episode_length(ep)
    extras = _extra_keys(ep)
    for t in range(T):
        tr = {
            "observations": {k: v[t].copy() for k, v in ep["observations"].items()},
            "actions": ep["actions"][t].copy(),
            "rewards": np.float32(ep["rewards"][t]),
            "masks": np.float32(1.0 - float(ep["terminals"][t])),
            "dones": np.bool_(ep["terminals"][t] or ep["truncations"][t]),
            "next_observations": {k: v[t + 1].copy() for k, v in ep["observations"].items()},
            "interventions": np.bool_(ep["interventions"][t]),
            "action_source": np.int8(ep["action_source"][t]),
        }
        for k in extras:
            tr[k] = np.array(ep[k][t])
        yield tr


def episode_from_transitions(
    transitions: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Inverse of `episode_to_transitions`.

    Args:
      transitions: house-key transitions of one episode, in order; extra
        keys must be the same in every transition.
      metadata: episode metadata.

    Returns:
      a validated episode. `terminals = (masks == 0)`, `truncations = dones
      & ~terminals`.

    Raises:
      ValueError: empty list, broken continuity (observations[t + 1] !=
        next_observations[t] for some key), masks not in {0, 1}, mask 0
        without done, inconsistent keys, and everything of `validate_episode`.
    """
    transitions = list(transitions)
    if not transitions:
        raise ValueError("episode_from_transitions needs at least one transition")
    first = transitions[0]
    missing = [k for k in _HOUSE_TRANSITION_KEYS if k not in first]
    if missing:
        raise ValueError(f"transition 0 is missing keys {missing}")
    extras = sorted(set(first) - set(_HOUSE_TRANSITION_KEYS))
    obs_keys = set(first["observations"])
    for t, tr in enumerate(transitions):
        if set(tr) != set(first):
            raise ValueError(f"transition {t} keys {sorted(tr)} differ from transition 0 keys {sorted(first)}")
        if set(tr["observations"]) != obs_keys or set(tr["next_observations"]) != obs_keys:
            raise ValueError(f"transition {t}: observation keys differ from transition 0")
        if t > 0:
            prev = transitions[t - 1]["next_observations"]
            for k in obs_keys:
                if not np.array_equal(np.asarray(prev[k]), np.asarray(tr["observations"][k])):
                    raise ValueError(
                        f"continuity broken at step {t}: observations[{k!r}] != "
                        f"next_observations[{k!r}] of step {t - 1}"
                    )
    masks = np.asarray([tr["masks"] for tr in transitions], np.float64)
    if not np.all((masks == 0.0) | (masks == 1.0)):
        raise ValueError("masks must be exactly 0 or 1 to recover terminals")
    dones = coerce_array([tr["dones"] for tr in transitions], None, bool, "dones")
    terminals = masks == 0.0
    if np.any(terminals & ~dones):
        raise ValueError("a transition with mask 0 (terminal) must have done=True")
    episode: dict[str, Any] = {
        "observations": {
            k: np.stack(
                [np.asarray(tr["observations"][k]) for tr in transitions]
                + [np.asarray(transitions[-1]["next_observations"][k])]
            )
            for k in obs_keys
        },
        "actions": np.stack([np.asarray(tr["actions"]) for tr in transitions]),
        "rewards": np.asarray([tr["rewards"] for tr in transitions]),
        "terminals": terminals,
        "truncations": dones & ~terminals,
        "interventions": np.asarray([tr["interventions"] for tr in transitions]),
        "action_source": np.asarray([tr["action_source"] for tr in transitions]),
        "metadata": dict(metadata or {}),
    }
    for k in extras:
        episode[k] = np.stack([np.asarray(tr[k]) for tr in transitions])
    return validate_episode(episode)


class EpisodeRecorder:
    """Collects an episode step by step from a running env.

    Usage::

        rec = EpisodeRecorder(metadata={"task": "pick-place-v3", "source": "rollout"})
        obs, _ = env.reset(seed=0)
        rec.reset(obs)
        while True:
            next_obs, r, term, trunc, info = env.step(a)
            rec.step(a, r, next_obs, term, trunc, intervention=..., success=info["success"])
            if term or trunc:
                episode = rec.finish({"success": ...})
                break
            obs = next_obs

    Observations are copied on record (envs may reuse their arrays). Extra
    keyword arguments of `step` become extra per-step arrays and must be the
    same at every step.

    Args:
      metadata: default metadata merged into each finished episode.
    """

    def __init__(self, metadata: Mapping[str, Any] | None = None):
        self._default_metadata = dict(metadata or {})
        self._obs: list[dict[str, np.ndarray]] | None = None
        self._steps: list[dict[str, Any]] = []

    @property
    def active(self) -> bool:
        """True between `reset` and `finish`."""
        return self._obs is not None

    def __len__(self) -> int:
        return len(self._steps)

    @staticmethod
    def _copy_obs(observation: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(observation, Mapping):
            raise TypeError(f"observations must be dicts, got {type(observation).__name__}")
        return {k: np.array(v) for k, v in observation.items()}

    def reset(self, observation: Mapping[str, Any]) -> None:
        """Start a new episode at `observation`, discarding any unfinished one."""
        self._obs = [self._copy_obs(observation)]
        self._steps = []

    def step(
        self,
        action: Any,
        reward: Any,
        next_observation: Mapping[str, Any],
        terminated: bool,
        truncated: bool,
        *,
        intervention: bool = False,
        action_source: int | None = None,
        **extras: Any,
    ) -> None:
        """Record one env step.

        Args:
          action: the executed action (A,).
          reward: scalar reward.
          next_observation: observation after the step.
          terminated, truncated: gymnasium flags.
          intervention: the human acted at this step.
          action_source: 0 policy, 1 recovery, 2 human; defaults to 2 if
            `intervention` else 0.
          **extras: extra per-step values (e.g. success=info["success"]).

        Raises:
          RuntimeError: `reset` not called, or the episode already ended.
          ValueError: extras keys differ from the first step's.
        """
        if self._obs is None:
            raise RuntimeError("EpisodeRecorder.step called before reset")
        if self._steps and (self._steps[-1]["terminals"] or self._steps[-1]["truncations"]):
            raise RuntimeError("episode already terminated/truncated; call finish() then reset()")
        if self._steps and set(extras) != set(self._steps[0]["extras"]):
            first = sorted(self._steps[0]["extras"])
            raise ValueError(f"extras {sorted(extras)} differ from the first step's {first}")
        if action_source is None:
            action_source = 2 if intervention else 0
        self._obs.append(self._copy_obs(next_observation))
        self._steps.append(
            {
                "actions": np.array(action),
                "rewards": reward,
                "terminals": bool(terminated),
                "truncations": bool(truncated),
                "interventions": bool(intervention),
                "action_source": int(action_source),
                "extras": {k: np.array(v) for k, v in extras.items()},
            }
        )

    def add_transition(self, transition: Mapping[str, Any]) -> None:
        """Record a house-key transition (starts the episode on the first one).

        Raises:
          ValueError: `observations` differ from the last recorded next
            observation (continuity), or masks not 0/1.
        """
        obs = self._copy_obs(transition["observations"])
        if self._obs is None:
            self.reset(obs)
        else:
            last = self._obs[-1]
            if set(last) != set(obs) or not all(np.array_equal(last[k], obs[k]) for k in obs):
                raise ValueError("transition observations differ from the previous next_observations")
        mask = float(np.asarray(transition["masks"]))
        if mask not in (0.0, 1.0):
            raise ValueError(f"masks must be 0 or 1, got {mask}")
        terminated = mask == 0.0
        done = bool(np.asarray(transition["dones"]))
        extras = {k: v for k, v in transition.items() if k not in _HOUSE_TRANSITION_KEYS}
        self.step(
            transition["actions"],
            transition["rewards"],
            transition["next_observations"],
            terminated,
            done and not terminated,
            intervention=bool(np.asarray(transition["interventions"])),
            action_source=int(np.asarray(transition["action_source"])),
            **extras,
        )

    def finish(self, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """End the episode and return it (validated); the recorder becomes idle.

        Args:
          metadata: merged over the constructor's default metadata.

        Raises:
          RuntimeError: not started or no steps recorded.
          ValueError / TypeError: the recorded data fails `validate_episode`.
        """
        if self._obs is None or not self._steps:
            raise RuntimeError("EpisodeRecorder.finish needs reset() and at least one step()")
        steps, obs = self._steps, self._obs
        if set().union(*(o.keys() for o in obs)) != set(obs[0]):
            raise ValueError("observation keys changed during the episode")
        episode: dict[str, Any] = {
            "observations": {k: np.stack([o[k] for o in obs]) for k in obs[0]},
            "actions": np.stack([s["actions"] for s in steps]),
            "rewards": np.asarray([s["rewards"] for s in steps]),
            "terminals": np.asarray([s["terminals"] for s in steps]),
            "truncations": np.asarray([s["truncations"] for s in steps]),
            "interventions": np.asarray([s["interventions"] for s in steps]),
            "action_source": np.asarray([s["action_source"] for s in steps]),
            "metadata": {**self._default_metadata, **dict(metadata or {})},
        }
        for k in steps[0]["extras"]:
            episode[k] = np.stack([s["extras"][k] for s in steps])
        episode = validate_episode(episode)
        self._obs, self._steps = None, []
        return episode


# ------------------------------------------------------------ into buffers
def _describe_spec(spec: Mapping[str, tuple]) -> str:
    return "{" + ", ".join(f"{k!r}: {tuple(shape)} {np.dtype(dtype).name}"
                           for k, (shape, dtype) in sorted(spec.items())) + "}"


def check_episode_fits(
    episode: Mapping[str, Any],
    observation_spec: Mapping[str, tuple],
    action_dim: int | None = None,
    source: str = "episode",
    target: str = "buffer",
) -> None:
    """Check that `episode`'s observations and actions fit a buffer's specs.

    Args:
      episode: an episode dict (module table).
      observation_spec: key -> (per-step shape, dtype), e.g. a `ReplayBuffer`'s
        `observation_spec`.
      action_dim: A of the buffer (None: not checked).
      source: what the message names (a file path).
      target: what the specs belong to, in the message ("buffer", "env").

    Raises:
      ObservationMismatchError: the observation keys differ, a key's per-step shape differs,
        a key is an image (uint8) on one side only, or the action size differs. The message
        names `source`, both layouts, every difference, and what to do (demos recorded with
        other observation settings, e.g. state-only demos for an image config).
    """
    obs = episode["observations"]
    got = {k: (tuple(np.shape(v)[1:]), np.asarray(v).dtype) for k, v in obs.items()}
    want = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in observation_spec.items()}
    problems = []
    missing, unknown = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing:
        problems.append(f"missing keys {missing}")
    if unknown:
        problems.append(f"keys the {target} does not have {unknown}")
    for k in sorted(set(got) & set(want)):
        if got[k][0] != want[k][0]:
            problems.append(f"{k!r} has shape {got[k][0]}, the {target} {want[k][0]}")
        elif (got[k][1] == np.uint8) != (want[k][1] == np.uint8):
            problems.append(f"{k!r} is {got[k][1].name}, the {target} {want[k][1].name}")
    if action_dim is not None and np.shape(episode["actions"])[1] != int(action_dim):
        problems.append(f"actions have size {np.shape(episode['actions'])[1]}, the {target} {int(action_dim)}")
    if problems:
        raise ObservationMismatchError(
            f"{source}: episode observations {_describe_spec(got)} do not fit the {target}'s "
            f"{_describe_spec(want)} ({'; '.join(problems)}). The episodes were recorded with other "
            "observation settings (e.g. state-only demos for an image config): record demos with "
            "this run's config (launchers/collect_demos.py --task=TASK --algorithm=ALGORITHM and the "
            "run's --config.env.* flags; each observation mode has its own folder, "
            "serl_ext/loop/demo_folders.py) or point --config.demos.path at a folder that matches"
        )


def _resolve_paths(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    if isinstance(paths_or_dir, (str, os.PathLike)):
        p = os.fspath(paths_or_dir)
        return list_episodes(p) if os.path.isdir(p) else [p]
    return [os.fspath(p) for p in paths_or_dir]


def load_episodes_into_buffer(
    paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike],
    buffer: Any,
    filter: Callable[[dict[str, Any]], bool] | None = None,  # noqa: A002 (name from the spec)
    transition_filter: Callable[[dict[str, Any]], bool] | None = None,
) -> int:
    """Insert the transitions of episode files into a `ReplayBuffer`.

    Args:
      paths_or_dir: a directory (all `list_episodes` files, name order), one
        file, or an iterable of files (kept in the given order).
      buffer: a `serl_ext.data.replay_buffer.ReplayBuffer`. Episode extras
        named in `buffer.extra_spec` are inserted; other extras are dropped.
        An extra the buffer needs but the episode lacks (a file written
        before the extra existed, e.g. `grasp_penalty`) gets the buffer's
        `extra_defaults` value at every step, if it has one.
      filter: keep only episodes with `filter(episode)` true, e.g.
        `lambda ep: ep["metadata"].get("success", False)`.
      transition_filter: keep only transitions with
        `transition_filter(transition)` true, e.g.
        `lambda tr: bool(tr["interventions"])`.

    Returns:
      number of transitions inserted.

    Raises:
      FileNotFoundError, EpisodeFormatError: from `load_episode`.
      ObservationMismatchError: (a ValueError) an episode's observation keys,
        per-step shapes or action size differ from the buffer's
        (`check_episode_fits`; the message names the file and both layouts).
      ValueError: an episode lacks an extra key the buffer requires and has
        no default for, or a transition does not fit the buffer's specs
        (wrong shape, NaN/inf; the message names the file).
    """
    wanted = set(getattr(buffer, "extra_spec", {}))
    defaults = dict(getattr(buffer, "extra_defaults", {}))
    obs_spec = getattr(buffer, "observation_spec", None)
    inserted = 0
    for path in _resolve_paths(paths_or_dir):
        episode = load_episode(path)
        if filter is not None and not filter(episode):
            continue
        if obs_spec is not None:
            check_episode_fits(episode, obs_spec, getattr(buffer, "action_dim", None), source=path)
        absent = wanted - set(_extra_keys(episode))
        missing = absent - set(defaults)
        if missing:
            raise ValueError(f"{path}: episode lacks extra keys {sorted(missing)} required by the buffer")
        for tr in episode_to_transitions(episode):
            if transition_filter is not None and not transition_filter(tr):
                continue
            for k in [k for k in tr if k not in _HOUSE_TRANSITION_KEYS and k not in wanted]:
                del tr[k]
            for k in absent:
                tr[k] = defaults[k].copy()
            try:
                buffer.insert(tr)
            except (ValueError, TypeError) as e:
                raise type(e)(f"{path}: {e}") from e
            inserted += 1
    return inserted


class EpisodeAssembler:
    """Cuts a stream of transitions (one actor, in order) into episode dicts (this module's
    format plus ``metadata``: task, success, source "online", episode_id,
    first_intervention_step, recovered).

    A transition whose observation does not continue the open episode (an actor restarted
    mid-episode) drops the partial episode (counted in ``num_dropped_partial``); an episode
    counts as successful when its last transition is terminal or has a positive reward.

    Args:
      task: stored in each episode's ``metadata["task"]``.
    Thread safety: :meth:`insert` (transport thread) and :meth:`pop_finished` (learner thread)
    take a lock.
    """

    def __init__(self, task: str):
        self.task = task
        self._lock = threading.Lock()
        self._open: Optional[Dict[str, list]] = None
        self._finished: List[Dict[str, Any]] = []
        self.num_finished = 0
        self.num_dropped_partial = 0

    def insert(self, transition: Dict[str, Any]) -> None:
        """Adds one transition (the replay buffer's keys plus ``action_source``)."""
        with self._lock:
            obs = transition["observations"]
            if self._open is not None:
                last = self._open["next_obs"][-1]
                if not all(np.array_equal(np.asarray(obs[k]), np.asarray(last[k])) for k in obs):
                    self._open = None  # Not a continuation (actor restarted mid-episode).
                    self.num_dropped_partial += 1
            if self._open is None:
                self._open = {"obs": [], "next_obs": [], "actions": [], "rewards": [], "terminals": [],
                              "truncations": [], "interventions": [], "action_source": []}
            ep = self._open
            ep["obs"].append({k: np.asarray(v) for k, v in obs.items()})
            ep["next_obs"].append({k: np.asarray(v) for k, v in transition["next_observations"].items()})
            ep["actions"].append(np.asarray(transition["actions"], np.float32))
            ep["rewards"].append(float(transition["rewards"]))
            terminal = float(transition["masks"]) == 0.0
            done = bool(transition["dones"])
            ep["terminals"].append(terminal)
            ep["truncations"].append(done and not terminal)
            ep["interventions"].append(bool(transition.get("interventions", False)))
            ep["action_source"].append(int(transition.get("action_source", 0)))
            if done:
                self._finished.append(self._close(ep))
                self._open = None

    def _close(self, ep: Dict[str, list]) -> Dict[str, Any]:
        keys = ep["obs"][0].keys()
        observations = {k: np.stack([o[k] for o in ep["obs"]] + [ep["next_obs"][-1][k]]) for k in keys}
        rewards = np.asarray(ep["rewards"], np.float32)
        terminals = np.asarray(ep["terminals"], bool)
        success = bool(terminals[-1] or rewards[-1] > 0)
        interventions = np.asarray(ep["interventions"], bool)
        source = np.asarray(ep["action_source"], np.int8)
        human = np.flatnonzero(interventions)
        self.num_finished += 1
        return {
            "observations": observations,
            "actions": np.stack(ep["actions"]),
            "rewards": rewards,
            "terminals": terminals,
            "truncations": np.asarray(ep["truncations"], bool),
            "interventions": interventions,
            "action_source": source,
            "metadata": {
                "task": self.task, "success": success, "source": "online", "episode_id": self.num_finished,
                "first_intervention_step": int(human[0]) if human.size else None,
                "recovered": bool(np.any(source != 0)),
            },
        }

    def pop_finished(self) -> List[Dict[str, Any]]:
        with self._lock:
            out, self._finished = self._finished, []
            return out
