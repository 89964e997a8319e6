"""Replay buffer with a shared frame store (each observation stored once).

Layout
------
Observations live in a *frame store*: one ring of `frame_capacity` frames
per observation key (uint8 images stay uint8). A transition holds the
global numbers of its observation frame and its next-observation frame,
so `next_observations` is never copied separately. On insert, when the new
`observations` equal (``np.array_equal`` per key) the `next_observations`
of the transition inserted just before, that frame is reused; otherwise a
new frame is written. The next observation always gets a fresh frame.

Consequences, by construction:

* a contiguous episode of T steps costs T + 1 frames;
* episode boundaries and non-contiguous segments (e.g. a later intervention
  segment, stored in the intervention buffer with a gap) write their first
  observation as a new frame. HiL-SERL's `MemoryEfficientReplayBuffer`
  assumed contiguity and returned a stale first image for such segments;
  here the equality test decides, never the insertion order.

Sizing (why `2 * capacity + 2` frames is enough)
------------------------------------------------
Frame numbers grow monotonically with insertion order, and each transition
references frames no older than those of the transitions inserted before
it, so the oldest frame referenced by a live transition is the observation
frame `g0` of the oldest live transition. That frame was written at the
latest as the last frame of the insert just before it (reuse) or during
its own insert. After `g0`, at most 1 frame (its next observation) plus 2
per later live transition (capacity - 1 of them) were written: at most
2 * capacity frames in `[g0, g0 + 2 * capacity)`. An insert writes at most
2 more frames, numbered at most `g0 + 2 * capacity + 1`, and frame `g` only
overwrites frame `g - frame_capacity`. With `frame_capacity = 2 * capacity
+ 2`, `g - frame_capacity <= g0 - 1 < g0`: no live frame is ever
overwritten.

A smaller `frame_capacity` (e.g. `capacity + 64` for contiguous image
rollouts, about half the memory) is allowed: before a frame would overwrite
one still referenced, the oldest transitions are evicted, so `len()` may
then stay below `capacity` when data is non-contiguous. Reconstruction is
exact in both cases.

Batches follow the house keys (see `ReplayBuffer.sample`). Sampling is
uniform with replacement from an own `np.random.Generator(seed)`.
`sample_mixed` builds RLPD / HiL-SERL batches (Ball et al. 2023, "Efficient
Online RL with Offline Data"; Luo et al. 2024, HiL-SERL): half online, half
demos + interventions.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from serl_ext.data._validation import (
    DEFAULT_MAX_ABS,
    OutOfBoundsError,
    check_abs_bound,
    check_action_source,
    coerce_array,
    normalize_spec,
    space_bound,
)

ACTION_SOURCE_POLICY = 0
ACTION_SOURCE_RECOVERY = 1
ACTION_SOURCE_HUMAN = 2

TRANSITION_KEYS = (
    "observations",
    "actions",
    "rewards",
    "masks",
    "dones",
    "next_observations",
    "interventions",
    "action_source",
)

_STATE_DICT_VERSION = 1
_INDEX_DTYPE = np.int64


def observation_spec_from_example(observation: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Build an `observation_spec` from one example observation dict.

    Args:
      observation: dict key -> array-like (e.g. `{"state": (D,) float32,
        "pixels": (H, W, 3) uint8}`). float64 entries become float32.

    Returns:
      dict key -> (shape, dtype).

    Raises:
      TypeError: not a dict, or a non-numeric entry.
    """
    if not isinstance(observation, Mapping):
        raise TypeError(f"observation must be a dict, got {type(observation).__name__}")
    spec = {}
    for key, value in observation.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"observation[{key!r}]: non-numeric dtype {arr.dtype}")
        dtype = np.dtype(np.float32) if arr.dtype.kind == "f" else arr.dtype
        spec[key] = (arr.shape, dtype)
    return normalize_spec(spec, "observation_spec")


class ReplayBuffer:
    """Ring replay buffer of transitions over a shared observation frame store.

    Args:
      observation_spec: dict key -> (shape, numpy dtype), e.g.
        `{"state": ((39,), np.float32), "pixels": ((128, 128, 3), np.uint8)}`.
        uint8 keys are images and are stored as uint8.
      action_dim: A, actions are (A,) float32.
      capacity: maximum number of transitions; the oldest is overwritten
        when full.
      extra_keys: optional dict name -> (shape, dtype) of extra
        per-transition fields (e.g. `{"grasp_penalty": ((), np.float32)}`),
        required on every insert and returned at the top level of batches.
      seed: seed of the buffer's own `np.random.Generator`.
      frame_capacity: frames in the store; default `2 * capacity + 2`, which
        never evicts (see module docstring). Smaller values (>= 2) save
        memory; the oldest transitions are then evicted early when needed.
      extra_defaults: optional dict name -> value for some `extra_keys`
        (e.g. `{"grasp_penalty": 0.0}`): the value of that field in data
        recorded before the field existed. `load_state_dict` fills it in
        for a state dict without that extra, and
        `episodes.load_episodes_into_buffer` for episode files without it.
        `insert` still requires every extra key (a live transition without
        it is a bug, not old data).
      value_bounds: optional bounds on |value| (keyword-only):
        `{"observations": {key: bound}, "actions": bound, "rewards": bound,
        extra_name: bound}`, each bound a positive scalar or an array
        broadcastable to the field's shape (per element), e.g. from
        :func:`value_bounds_from_spaces`. Applied to observations and
        next_observations alike.
      default_max_abs: bound for every float field without an entry in
        `value_bounds` (default 1e6, see `_validation.DEFAULT_MAX_ABS`);
        None: no bound for those fields.

    Value bounds are checked by `insert` (a finite but absurd value such as
    3e38 raises ValueError, nothing is stored, `num_out_of_bounds` counts
    it) and by `load_state_dict` (which also checks finiteness, masks and
    action sources like `insert`).

    Thread safety: insert, sample, len, state_dict and load_state_dict take
    one `threading.Lock` (the learner samples while the transport thread
    inserts).

    Raises:
      ValueError / TypeError: bad specs, capacity < 1, action_dim < 1,
        extra key names that collide with the house keys, extra_defaults
        for names not in extra_keys or values that do not fit their spec
        (wrong shape, NaN/inf).
    """

    def __init__(
        self,
        observation_spec: Mapping[str, Any],
        action_dim: int,
        capacity: int,
        extra_keys: Mapping[str, Any] | None = None,
        seed: int = 0,
        frame_capacity: int | None = None,
        extra_defaults: Mapping[str, Any] | None = None,
        *,
        value_bounds: Mapping[str, Any] | None = None,
        default_max_abs: float | None = DEFAULT_MAX_ABS,
    ):
        self._obs_spec = normalize_spec(observation_spec, "observation_spec")
        if not self._obs_spec:
            raise ValueError("observation_spec must have at least one key")
        self._extra_spec = normalize_spec(extra_keys or {}, "extra_keys")
        clash = set(self._extra_spec) & set(TRANSITION_KEYS)
        if clash:
            raise ValueError(f"extra_keys collide with house transition keys: {sorted(clash)}")
        extra_defaults = dict(extra_defaults or {})
        unknown = sorted(set(extra_defaults) - set(self._extra_spec))
        if unknown:
            raise ValueError(f"extra_defaults for names not in extra_keys: {unknown}")
        self._extra_defaults = {}
        for k, value in extra_defaults.items():
            shape, dtype = self._extra_spec[k]
            value = np.broadcast_to(value, shape) if np.ndim(value) == 0 else value  # a scalar fills the shape
            self._extra_defaults[k] = np.array(coerce_array(value, shape, dtype, f"extra_defaults[{k!r}]"))
        if not isinstance(action_dim, (int, np.integer)) or action_dim < 1:
            raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
        if not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self._action_dim = int(action_dim)
        self._capacity = int(capacity)
        if frame_capacity is None:
            frame_capacity = 2 * self._capacity + 2
        if not isinstance(frame_capacity, (int, np.integer)) or frame_capacity < 2:
            raise ValueError(f"frame_capacity must be an int >= 2, got {frame_capacity!r}")
        self._frame_capacity = int(frame_capacity)
        self._set_bounds(dict(value_bounds or {}), default_max_abs)
        self.num_out_of_bounds = 0
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)

        # np.zeros is calloc-backed: pages are only resident once written.
        self._frames = {
            k: np.zeros((self._frame_capacity, *shape), dtype) for k, (shape, dtype) in self._obs_spec.items()
        }
        cap = self._capacity
        self._obs_frame = np.zeros((cap,), _INDEX_DTYPE)  # global frame numbers
        self._next_obs_frame = np.zeros((cap,), _INDEX_DTYPE)
        self._actions = np.zeros((cap, self._action_dim), np.float32)
        self._rewards = np.zeros((cap,), np.float32)
        self._masks = np.zeros((cap,), np.float32)
        self._dones = np.zeros((cap,), bool)
        self._interventions = np.zeros((cap,), bool)
        self._action_source = np.zeros((cap,), np.int8)
        self._extras = {k: np.zeros((cap, *shape), dtype) for k, (shape, dtype) in self._extra_spec.items()}

        self._size = 0
        self._insert_index = 0  # slot the next transition goes to
        self._frames_written = 0  # global number of the next frame
        self._last_next_frame = -1  # global number of the last next_obs frame
        self._feature_cache: "_FrameFeatureCache | None" = None

    def _set_bounds(self, vb: dict, default: float | None) -> None:
        allowed = {"observations", "actions", "rewards", *self._extra_spec}
        unknown = sorted(set(vb) - allowed)
        if unknown:
            raise ValueError(f"value_bounds has unknown fields {unknown}; allowed: {sorted(allowed)}")
        obs_b = dict(vb.get("observations") or {})
        unknown = sorted(set(obs_b) - set(self._obs_spec))
        if unknown:
            raise ValueError(f"value_bounds['observations'] has keys {unknown} not in observation_spec")

        def make(value, shape, dtype, name):
            if np.dtype(dtype).kind != "f":
                return None  # integer / bool fields are bounded by their dtype
            if value is None:
                value = default
                if value is None:
                    return None
            arr = np.asarray(value, np.float64)
            try:
                arr = np.broadcast_to(arr, shape).copy()
            except ValueError:
                raise ValueError(f"value_bounds {name}: shape {arr.shape} does not broadcast to {shape}") from None
            if not np.all(np.isfinite(arr) & (arr > 0)):
                raise ValueError(f"value_bounds {name}: bounds must be finite and > 0")
            return arr

        self._obs_bounds = {k: make(obs_b.get(k), shape, dtype, f"observations[{k!r}]")
                            for k, (shape, dtype) in self._obs_spec.items()}
        self._action_bound = make(vb.get("actions"), (self._action_dim,), np.float32, "actions")
        self._reward_bound = make(vb.get("rewards"), (), np.float32, "rewards")
        self._extra_bounds = {k: make(vb.get(k), shape, dtype, k) for k, (shape, dtype) in self._extra_spec.items()}

    @property
    def value_bounds(self) -> dict[str, Any]:
        """The bounds in force: `{"observations": {key: array or None}, "actions", "rewards",
        extras...}` (None: unchecked)."""
        return {"observations": dict(self._obs_bounds), "actions": self._action_bound,
                "rewards": self._reward_bound, **self._extra_bounds}

    def _check_bounds(self, fields: Mapping[str, Any], prefix: str = "") -> None:
        """Raises OutOfBoundsError for the first field outside its bound (arrays may carry a
        leading batch axis)."""
        for obs_key in ("observations", "next_observations"):
            for k, b in self._obs_bounds.items():
                if b is not None and obs_key in fields:
                    check_abs_bound(fields[obs_key][k], b, f"{prefix}{obs_key}[{k!r}]")
        if self._action_bound is not None and "actions" in fields:
            check_abs_bound(fields["actions"], self._action_bound, f"{prefix}actions")
        if self._reward_bound is not None and "rewards" in fields:
            check_abs_bound(fields["rewards"], self._reward_bound, f"{prefix}rewards")
        for k, b in self._extra_bounds.items():
            if b is not None and k in fields:
                check_abs_bound(fields[k], b, f"{prefix}{k}")

    # ------------------------------------------------------------------ info
    @property
    def capacity(self) -> int:
        """Maximum number of transitions."""
        return self._capacity

    @property
    def frame_capacity(self) -> int:
        """Number of frames in the observation store."""
        return self._frame_capacity

    @property
    def action_dim(self) -> int:
        """A, the action size."""
        return self._action_dim

    @property
    def observation_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """dict key -> (shape, dtype) of observations."""
        return dict(self._obs_spec)

    @property
    def extra_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """dict name -> (shape, dtype) of extra per-transition fields."""
        return dict(self._extra_spec)

    @property
    def extra_defaults(self) -> dict[str, np.ndarray]:
        """dict name -> value (array of the extra's shape and dtype) for old data without it."""
        return {k: v.copy() for k, v in self._extra_defaults.items()}

    @property
    def frame_store(self) -> dict[str, np.ndarray]:
        """Read-only views of the frame store, key -> (frame_capacity, *shape)."""
        out = {}
        for k, arr in self._frames.items():
            view = arr.view()
            view.flags.writeable = False
            out[k] = view
        return out

    @property
    def frames_written(self) -> int:
        """Total number of frames ever written to the store."""
        return self._frames_written

    def num_live_frames(self) -> int:
        """Number of distinct frames referenced by the live transitions."""
        with self._lock:
            idx = self._live_indices()
            return int(np.unique(np.concatenate([self._obs_frame[idx], self._next_obs_frame[idx]])).size)

    def __len__(self) -> int:
        with self._lock:
            return self._size

    # ---------------------------------------------------------------- insert
    def _validate(self, transition: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(transition, Mapping):
            raise TypeError(f"transition must be a dict, got {type(transition).__name__}")
        expected = set(TRANSITION_KEYS) | set(self._extra_spec)
        got = set(transition)
        if got != expected:
            missing, unknown = sorted(expected - got), sorted(got - expected)
            raise ValueError(f"transition keys mismatch: missing {missing}, unknown {unknown}")
        out: dict[str, Any] = {}
        for obs_key in ("observations", "next_observations"):
            obs = transition[obs_key]
            if not isinstance(obs, Mapping):
                raise TypeError(f"{obs_key} must be a dict, got {type(obs).__name__}")
            if set(obs) != set(self._obs_spec):
                raise ValueError(
                    f"{obs_key} keys {sorted(obs)} do not match observation_spec keys {sorted(self._obs_spec)}"
                )
            out[obs_key] = {
                k: coerce_array(obs[k], shape, dtype, f"{obs_key}[{k!r}]")
                for k, (shape, dtype) in self._obs_spec.items()
            }
        out["actions"] = coerce_array(transition["actions"], (self._action_dim,), np.float32, "actions")
        out["rewards"] = coerce_array(transition["rewards"], (), np.float32, "rewards")
        masks = coerce_array(transition["masks"], (), np.float32, "masks")
        if not 0.0 <= masks <= 1.0:
            raise ValueError(f"masks must be in [0, 1] (1 - terminated), got {masks}")
        out["masks"] = masks
        out["dones"] = coerce_array(transition["dones"], (), bool, "dones")
        out["interventions"] = coerce_array(transition["interventions"], (), bool, "interventions")
        source = coerce_array(transition["action_source"], (), np.int8, "action_source")
        check_action_source(source)
        out["action_source"] = source
        for k, (shape, dtype) in self._extra_spec.items():
            out[k] = coerce_array(transition[k], shape, dtype, k)
        self._check_bounds(out)
        return out

    def _oldest_index(self) -> int:
        return (self._insert_index - self._size) % self._capacity

    def _live_indices(self) -> np.ndarray:
        return (self._oldest_index() + np.arange(self._size)) % self._capacity

    def _write_frame(self, obs: Mapping[str, np.ndarray]) -> int:
        g = self._frames_written
        # Frame g overwrites frame g - frame_capacity. Frame numbers are
        # monotone in insertion order, so the oldest live transition holds
        # the oldest referenced frame; evict while it would be overwritten.
        # With the default frame_capacity this never triggers (module doc).
        while self._size > 0 and self._obs_frame[self._oldest_index()] <= g - self._frame_capacity:
            self._size -= 1
        slot = g % self._frame_capacity
        for k, arr in obs.items():
            self._frames[k][slot] = arr
        self._frames_written = g + 1
        return g

    def insert(self, transition: Mapping[str, Any]) -> None:
        """Validate and store one transition.

        Args:
          transition: dict with the house keys: `observations` (dict per
            observation_spec), `actions` (A,) float, `rewards` () float,
            `masks` () float in [0, 1] (1 - terminated), `dones` () bool,
            `next_observations` (dict), `interventions` () bool,
            `action_source` () int in {0 policy, 1 recovery, 2 human}, plus
            every key of `extra_keys`. Lossless casts are applied (float64 ->
            float32 accepted; float data into uint8 refused).

        Raises:
          ValueError: missing/unknown keys, wrong shapes, NaN/inf in float
            fields, out-of-range values, values outside the value bounds
            (`OutOfBoundsError`, counted in `num_out_of_bounds`). Nothing
            is stored on error.
          TypeError: wrong dtype kinds or non-dict containers.
        """
        try:
            tr = self._validate(transition)
        except OutOfBoundsError:
            self.num_out_of_bounds += 1
            raise
        with self._lock:
            obs = tr["observations"]
            reuse = self._last_next_frame >= 0 and all(
                np.array_equal(self._frames[k][self._last_next_frame % self._frame_capacity], obs[k]) for k in obs
            )
            obs_g = self._last_next_frame if reuse else self._write_frame(obs)
            next_g = self._write_frame(tr["next_observations"])
            i = self._insert_index
            self._obs_frame[i] = obs_g
            self._next_obs_frame[i] = next_g
            self._actions[i] = tr["actions"]
            self._rewards[i] = tr["rewards"]
            self._masks[i] = tr["masks"]
            self._dones[i] = tr["dones"]
            self._interventions[i] = tr["interventions"]
            self._action_source[i] = tr["action_source"]
            for k in self._extra_spec:
                self._extras[k][i] = tr[k]
            self._insert_index = (i + 1) % self._capacity
            self._size = min(self._size + 1, self._capacity)
            self._last_next_frame = next_g

    # ---------------------------------------------------------------- sample
    def _gather(self, idx: np.ndarray, frame_features: bool = False) -> dict[str, Any]:
        obs_slots = self._obs_frame[idx] % self._frame_capacity
        next_slots = self._next_obs_frame[idx] % self._frame_capacity
        if frame_features:
            if self._feature_cache is None:
                raise ValueError("sample(frame_features=True) needs attach_frame_features() first")
            obs, next_obs = self._feature_cache.gather(self._frames, self._obs_frame[idx], self._next_obs_frame[idx])
        else:
            obs = {k: arr[obs_slots] for k, arr in self._frames.items()}
            next_obs = {k: arr[next_slots] for k, arr in self._frames.items()}
        batch = {
            "observations": obs,
            "next_observations": next_obs,
            "actions": self._actions[idx],
            "rewards": self._rewards[idx],
            "masks": self._masks[idx],
            "dones": self._dones[idx],
            "interventions": self._interventions[idx],
            "action_source": self._action_source[idx],
        }
        for k, arr in self._extras.items():
            batch[k] = arr[idx]
        return batch

    def attach_frame_features(self, fn: Callable[[dict[str, np.ndarray]], Mapping[str, Any]],
                              keys: Sequence[str], chunk: int = 64) -> None:
        """Cache a fixed function of the stored frames, for `sample(frame_features=True)`.

        Meant for a frozen image backbone (its parameters never change): each stored frame's
        features are computed once, the first time a sample needs them, instead of once per
        sampled use. A frame slot that is overwritten by a new frame (its global frame number
        changes) is recomputed; `load_state_dict` clears the cache.

        Args:
          fn: `{key: (chunk, *shape) frames in the spec dtype} -> {key: (chunk, *feature_shape)
            array}` for every key of `keys`; called with exactly `chunk` rows each time (the
            last chunk of a batch is padded by repeating its first frame), so a jitted `fn`
            compiles once. Its outputs are stored as float32.
          keys: observation keys whose frames `fn` maps (other keys are sampled as stored).
          chunk: rows per `fn` call (>= 1).

        Raises:
          ValueError: a key not in the observation spec, no keys, chunk < 1.
        """
        keys = tuple(str(k) for k in keys)
        if not keys:
            raise ValueError("attach_frame_features needs at least one observation key")
        missing = [k for k in keys if k not in self._obs_spec]
        if missing:
            raise ValueError(f"attach_frame_features: keys {missing} not in the observation spec {sorted(self._obs_spec)}")
        if not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(f"chunk must be a positive int, got {chunk!r}")
        with self._lock:
            self._feature_cache = _FrameFeatureCache(fn, keys, int(chunk), self._frame_capacity)

    @property
    def feature_bytes_per_frame(self) -> int:
        """Bytes the attached feature cache keeps per computed frame (float32 maps of every key
        plus the 8-byte frame number); 0 without a cache or before its first computation."""
        if self._feature_cache is None or not self._feature_cache.features:
            return 0
        return 8 + sum(int(a[0].nbytes) for a in self._feature_cache.features.values())

    @property
    def feature_calls(self) -> int:
        """Number of frames the attached feature function was computed for (0 without one;
        padding rows not counted)."""
        return 0 if self._feature_cache is None else self._feature_cache.frames_computed

    def sample(self, batch_size: int, frame_features: bool = False) -> dict[str, Any]:
        """Sample `batch_size` transitions uniformly with replacement.

        Returns:
          dict of fresh numpy arrays (B = batch_size): `observations` and
          `next_observations` dicts key -> (B, *shape) in the spec dtype,
          `actions` (B, A) float32, `rewards` (B,) float32, `masks` (B,)
          float32, `dones` (B,) bool, `interventions` (B,) bool,
          `action_source` (B,) int8, and each extra key (B, *shape). With
          `frame_features`, the keys given to `attach_frame_features` hold
          their cached features (B, *feature_shape) float32 instead of frames.

        Raises:
          ValueError: buffer empty, batch_size < 0, or `frame_features` without
            `attach_frame_features`, or its function returned a missing key, another
            shape or a non-finite value (nothing of that chunk is cached).
        """
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 0:
            raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
        with self._lock:
            if self._size == 0:
                raise ValueError("cannot sample from an empty ReplayBuffer")
            offsets = self._rng.integers(0, self._size, size=int(batch_size))
            idx = (self._oldest_index() + offsets) % self._capacity
            return self._gather(idx, frame_features=frame_features)

    def live_transitions(self) -> dict[str, Any]:
        """All live transitions, oldest first, as one batch (same keys as `sample`).

        Meant for tests, export and debugging; does not touch the RNG.
        """
        with self._lock:
            return self._gather(self._live_indices())

    # ------------------------------------------------------------ state dict
    def state_dict(self, copy: bool = True) -> dict[str, Any]:
        """Snapshot of the full state for checkpoints (orbax) and resume.

        Args:
          copy: copy the arrays (default) so that later inserts do not change
            the snapshot; False returns views (only safe with no concurrent
            inserts).

        Returns:
          dict of numpy arrays and Python ints: `version`, `capacity`,
          `frame_capacity`, `action_dim`, `size`, `insert_index`,
          `frames_written`, `last_next_frame`, `frames` (dict key ->
          (frame_capacity, *shape)), `obs_frame`, `next_obs_frame` (capacity,)
          int64, the transition arrays, `extras` (dict; omitted when there
          are no extra keys, as some checkpointers drop empty dicts) and
          `rng_state` (uint8 array of the JSON of the bit generator state).
        """
        cp = np.array if copy else (lambda a: a)
        with self._lock:
            d: dict[str, Any] = {
                "version": _STATE_DICT_VERSION,
                "capacity": self._capacity,
                "frame_capacity": self._frame_capacity,
                "action_dim": self._action_dim,
                "size": self._size,
                "insert_index": self._insert_index,
                "frames_written": self._frames_written,
                "last_next_frame": self._last_next_frame,
                "frames": {k: cp(v) for k, v in self._frames.items()},
                "obs_frame": cp(self._obs_frame),
                "next_obs_frame": cp(self._next_obs_frame),
                "actions": cp(self._actions),
                "rewards": cp(self._rewards),
                "masks": cp(self._masks),
                "dones": cp(self._dones),
                "interventions": cp(self._interventions),
                "action_source": cp(self._action_source),
                "rng_state": np.frombuffer(json.dumps(self._rng.bit_generator.state).encode(), np.uint8).copy(),
            }
            if self._extras:
                d["extras"] = {k: cp(v) for k, v in self._extras.items()}
            return d

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore a `state_dict()` exactly (contents, pointers and RNG state).

        The buffer must have been built with the same specs, capacity,
        frame_capacity and action_dim. Arrays may come back from a
        checkpointer as numpy or jax arrays; ints as 0-d arrays. An extra
        key with an `extra_defaults` entry may be absent from the state dict
        (saved before the key existed): every slot then holds the default.

        The stored values pass the checks `insert` applies: floats finite,
        masks in [0, 1], action sources in {0, 1, 2}, and the value bounds
        (a refusal by the bounds is counted in `num_out_of_bounds`).

        Raises:
          ValueError: missing keys, version/spec/shape mismatch,
            inconsistent pointers, non-finite or out-of-range values (the
            message names the field). The buffer is unchanged on error.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"state dict must be a dict, got {type(d).__name__}")

        def scalar(name):
            if name not in d:
                raise ValueError(f"state dict is missing {name!r}")
            v = np.asarray(d[name])
            if v.shape != () or v.dtype.kind not in "iu":
                raise ValueError(f"state dict {name!r} must be an int, got {d[name]!r}")
            return int(v)

        def array(value, shape, dtype, name):
            arr = np.asarray(value)
            if arr.shape != tuple(shape):
                raise ValueError(f"state dict {name!r}: expected shape {tuple(shape)}, got {arr.shape}")
            if dtype == _INDEX_DTYPE and arr.dtype.kind in "iu":
                # frame numbers may come back as int32 from a checkpointer without x64
                return arr.astype(dtype)
            if arr.dtype != dtype:
                raise ValueError(f"state dict {name!r}: expected dtype {dtype}, got {arr.dtype}")
            return np.array(arr)

        if scalar("version") != _STATE_DICT_VERSION:
            raise ValueError(f"state dict version {scalar('version')} != {_STATE_DICT_VERSION}")
        for name, mine in (
            ("capacity", self._capacity),
            ("frame_capacity", self._frame_capacity),
            ("action_dim", self._action_dim),
        ):
            if scalar(name) != mine:
                raise ValueError(f"state dict {name}={scalar(name)} but this buffer has {name}={mine}")
        cap, fcap = self._capacity, self._frame_capacity
        size, insert_index = scalar("size"), scalar("insert_index")
        frames_written, last_next = scalar("frames_written"), scalar("last_next_frame")
        if not (0 <= size <= cap and 0 <= insert_index < cap and frames_written >= 0):
            raise ValueError(f"state dict pointers out of range: size={size}, insert_index={insert_index}")
        if not -1 <= last_next < frames_written:
            raise ValueError(f"state dict last_next_frame={last_next} inconsistent with frames_written")

        frames_in = d.get("frames")
        if not isinstance(frames_in, Mapping) or set(frames_in) != set(self._obs_spec):
            got = sorted(frames_in) if isinstance(frames_in, Mapping) else frames_in
            raise ValueError(f"state dict frames keys {got} != observation_spec keys {sorted(self._obs_spec)}")
        frames = {
            k: array(frames_in[k], (fcap, *shape), dtype, f"frames/{k}")
            for k, (shape, dtype) in self._obs_spec.items()
        }
        extras_in = d.get("extras", {})
        if not isinstance(extras_in, Mapping):
            raise ValueError(f"state dict extras must be a dict, got {type(extras_in).__name__}")
        # An extra with a default may be absent (state dict saved before it existed).
        absent = set(self._extra_spec) - set(extras_in)
        if set(extras_in) - set(self._extra_spec) or absent - set(self._extra_defaults):
            raise ValueError(
                f"state dict extras keys {sorted(extras_in)} do not match extra_keys {sorted(self._extra_spec)} "
                f"(only {sorted(self._extra_defaults)} have a default for older state dicts)"
            )
        extras = {
            k: (
                np.broadcast_to(self._extra_defaults[k], (cap, *shape)).astype(dtype)
                if k in absent
                else array(extras_in[k], (cap, *shape), dtype, f"extras/{k}")
            )
            for k, (shape, dtype) in self._extra_spec.items()
        }
        fields = {}
        for name, shape, dtype in (
            ("obs_frame", (cap,), np.dtype(_INDEX_DTYPE)),
            ("next_obs_frame", (cap,), np.dtype(_INDEX_DTYPE)),
            ("actions", (cap, self._action_dim), np.dtype(np.float32)),
            ("rewards", (cap,), np.dtype(np.float32)),
            ("masks", (cap,), np.dtype(np.float32)),
            ("dones", (cap,), np.dtype(bool)),
            ("interventions", (cap,), np.dtype(bool)),
            ("action_source", (cap,), np.dtype(np.int8)),
        ):
            if name not in d:
                raise ValueError(f"state dict is missing {name!r}")
            fields[name] = array(d[name], shape, dtype, name)
        if "rng_state" not in d:
            raise ValueError("state dict is missing 'rng_state'")
        try:
            rng_state = json.loads(np.asarray(d["rng_state"], np.uint8).tobytes().decode())
            rng = np.random.default_rng()
            if rng_state.get("bit_generator") != type(rng.bit_generator).__name__:
                raise ValueError(f"unsupported bit generator {rng_state.get('bit_generator')!r}")
            rng.bit_generator.state = rng_state
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as e:
            raise ValueError(f"state dict rng_state is invalid: {e}") from e
        for name, arr in [*((f"frames/{k}", v) for k, v in frames.items()),
                          *((f"extras/{k}", v) for k, v in extras.items()),
                          ("actions", fields["actions"]), ("rewards", fields["rewards"]),
                          ("masks", fields["masks"])]:
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise ValueError(f"state dict {name!r} contains NaN or inf")
        if not np.all((fields["masks"] >= 0) & (fields["masks"] <= 1)):
            raise ValueError("state dict 'masks' has values outside [0, 1]")
        check_action_source(fields["action_source"], "state dict 'action_source'")
        try:
            self._check_bounds({"observations": frames, "actions": fields["actions"],
                                "rewards": fields["rewards"], **extras}, prefix="state dict ")
        except OutOfBoundsError:
            self.num_out_of_bounds += 1
            raise
        live = (insert_index - size + np.arange(size)) % cap
        if size and (
            fields["next_obs_frame"][live].max() >= frames_written
            or fields["obs_frame"][live].min() < frames_written - fcap
        ):
            raise ValueError("state dict frame pointers reference frames outside the store")

        with self._lock:
            self._frames = frames
            self._extras = extras
            self._obs_frame = fields["obs_frame"]
            self._next_obs_frame = fields["next_obs_frame"]
            self._actions = fields["actions"]
            self._rewards = fields["rewards"]
            self._masks = fields["masks"]
            self._dones = fields["dones"]
            self._interventions = fields["interventions"]
            self._action_source = fields["action_source"]
            self._size = size
            self._insert_index = insert_index
            self._frames_written = frames_written
            self._last_next_frame = last_next
            self._rng = rng
            if self._feature_cache is not None:
                self._feature_cache.clear()



class _FrameFeatureCache:
    """Features of stored frames under a fixed function (`ReplayBuffer.attach_frame_features`),
    keyed by frame slot and validated by the global frame number computed for (-1: none)."""

    def __init__(self, fn, keys: tuple, chunk: int, frame_capacity: int):
        self.fn, self.keys, self.chunk = fn, keys, chunk
        self.features: dict[str, np.ndarray] = {}  # allocated on first use (calloc-backed)
        self.frame_number = np.full((frame_capacity,), -1, np.int64)
        self.frames_computed = 0

    def clear(self) -> None:
        self.frame_number[:] = -1

    def _compute(self, frames: Mapping[str, np.ndarray], slots: np.ndarray) -> None:
        for start in range(0, slots.size, self.chunk):
            part = slots[start:start + self.chunk]
            padded = np.concatenate([part, np.full((self.chunk - part.size,), part[0], part.dtype)])
            out = self.fn({k: frames[k][padded] for k in self.keys})
            for k in self.keys:
                if k not in out:
                    raise ValueError(f"frame feature function returned no {k!r} (got {sorted(out)})")
                value = np.asarray(out[k], np.float32)
                if value.ndim < 1 or value.shape[0] != self.chunk:
                    raise ValueError(f"frame feature function returned {k!r} of shape {value.shape}, "
                                     f"expected ({self.chunk}, ...)")
                if not np.all(np.isfinite(value)):  # never cached: it would be sampled again and again
                    raise ValueError(f"frame feature function returned NaN or inf for {k!r}")
                if k not in self.features:
                    self.features[k] = np.zeros((self.frame_number.size, *value.shape[1:]), np.float32)
                elif self.features[k].shape[1:] != value.shape[1:]:
                    raise ValueError(f"frame feature function changed the shape of {k!r}: "
                                     f"{self.features[k].shape[1:]} -> {value.shape[1:]}")
                self.features[k][part] = value[: part.size]
            self.frames_computed += int(part.size)

    def gather(self, frames, obs_numbers: np.ndarray, next_numbers: np.ndarray):
        frame_capacity = self.frame_number.size
        numbers = np.unique(np.concatenate([obs_numbers, next_numbers]))
        slots = numbers % frame_capacity
        stale = self.frame_number[slots] != numbers
        if np.any(stale):
            self._compute(frames, slots[stale])
            self.frame_number[slots[stale]] = numbers[stale]
        out = []
        for g in (obs_numbers, next_numbers):
            s = g % frame_capacity
            out.append({k: (self.features[k][s] if k in self.features else arr[s])
                        for k, arr in frames.items()})
        return out


def value_bounds_from_spaces(observation_space: Any, action_space: Any = None, *, margin: float = 0.1,
                             reward_bound: float | None = None,
                             unbounded: float = DEFAULT_MAX_ABS) -> dict[str, Any]:
    """`ReplayBuffer(value_bounds=...)` from a task's gymnasium spaces, with a margin.

    Args:
      observation_space: a `gymnasium.spaces.Dict` of `Box` spaces (integer
        boxes, e.g. uint8 images, are skipped: their dtype bounds them).
      action_space: the action `Box` (optional).
      margin: relative margin, see `_validation.space_bound` (0.1: 10 %).
      reward_bound: bound on |reward| (None: the buffer's default_max_abs).
      unbounded: bound for dimensions whose space bound is infinite.
    Returns:
      `{"observations": {key: (shape) float64 bounds}, "actions": (A,) bounds,
      "rewards": reward_bound}` (entries left out when not given).
    Raises:
      TypeError: observation_space without `.spaces`.
    """
    spaces = getattr(observation_space, "spaces", None)
    if not isinstance(spaces, Mapping):
        raise TypeError(f"observation_space must be a Dict space, got {type(observation_space).__name__}")
    out: dict[str, Any] = {"observations": {}}
    for k, sp in spaces.items():
        if np.dtype(sp.dtype).kind == "f":
            out["observations"][k] = space_bound(sp.low, sp.high, tuple(sp.shape), margin, unbounded)
    if action_space is not None:
        out["actions"] = space_bound(action_space.low, action_space.high, tuple(action_space.shape), margin, unbounded)
    if reward_bound is not None:
        out["rewards"] = float(reward_bound)
    return out


# ------------------------------------------------------------------ mixing
def _allocate(batch_size: int, fractions: Sequence[float]) -> list[int]:
    """Split batch_size into integer counts proportional to fractions.

    Largest-remainder rounding; ties go to the earlier buffer. Counts sum to
    batch_size exactly.
    """
    total = float(sum(fractions))
    exact = [batch_size * f / total for f in fractions]
    counts = [int(np.floor(e)) for e in exact]
    remainder = batch_size - sum(counts)
    order = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:remainder]:
        counts[i] += 1
    return counts


def _concat_batches(batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in batches[0].items():
        if isinstance(value, Mapping):
            out[key] = {k: np.concatenate([b[key][k] for b in batches], axis=0) for k in value}
        else:
            out[key] = np.concatenate([b[key] for b in batches], axis=0)
    return out


def _check_compatible(buffers: Sequence[ReplayBuffer]) -> None:
    if not buffers:
        raise ValueError("need at least one buffer")
    for b in buffers:
        if not isinstance(b, ReplayBuffer):
            raise TypeError(f"expected ReplayBuffer, got {type(b).__name__}")
    ref = buffers[0]
    for i, b in enumerate(buffers[1:], start=1):
        if (
            b.observation_spec != ref.observation_spec
            or b.action_dim != ref.action_dim
            or b.extra_spec != ref.extra_spec
        ):
            raise ValueError(f"buffer {i} has a different observation_spec / action_dim / extra_keys than buffer 0")


def sample_mixed(
    buffers: Sequence[ReplayBuffer],
    batch_size: int,
    fractions: Sequence[float] = (0.5, 0.5),
    frame_features: bool = False,
) -> dict[str, Any]:
    """Sample one batch drawn from several buffers in fixed proportions.

    RLPD (Ball et al. 2023) / HiL-SERL: with the default fractions, half of
    the batch from `buffers[0]` (online) and half from `buffers[1]` (demos +
    interventions). Counts use largest-remainder rounding (ties to the
    earlier buffer) and sum to `batch_size` exactly; rows are concatenated
    in buffer order.

    Empty buffers: their share is redistributed over the non-empty buffers
    in proportion to those buffers' fractions (equally if all those
    fractions are 0), so early in training, before the first online
    transition, the whole batch comes from the demo buffer.

    Args:
      buffers: buffers with identical specs.
      batch_size: B >= 0.
      fractions: one non-negative weight per buffer, summing to 1.
      frame_features: passed to each buffer's `sample` (their cached frame features).

    Returns:
      a batch like `ReplayBuffer.sample` with B rows.

    Raises:
      ValueError: all buffers empty, len(fractions) != len(buffers),
        negative fractions or fractions not summing to 1, specs differ.
    """
    buffers = list(buffers)
    _check_compatible(buffers)
    fractions = [float(f) for f in fractions]
    if len(fractions) != len(buffers):
        raise ValueError(f"got {len(fractions)} fractions for {len(buffers)} buffers")
    if any(not np.isfinite(f) or f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
    nonempty = [i for i, b in enumerate(buffers) if len(b) > 0]
    if not nonempty:
        raise ValueError("cannot sample: all buffers are empty")
    weights = [fractions[i] if i in nonempty else 0.0 for i in range(len(buffers))]
    if sum(weights) == 0.0:
        weights = [1.0 if i in nonempty else 0.0 for i in range(len(buffers))]
    counts = _allocate(int(batch_size), weights)
    parts = [b.sample(c, frame_features=frame_features) for b, c in zip(buffers, counts) if c > 0]
    if not parts:  # batch_size == 0
        parts = [buffers[nonempty[0]].sample(0, frame_features=frame_features)]
    return _concat_batches(parts)


def sample_mixed_many(
    buffers: Sequence[ReplayBuffer],
    batch_size: int,
    n: int,
    fractions: Sequence[float] = (0.5, 0.5),
    frame_features: bool = False,
) -> dict[str, Any]:
    """n mixed minibatches stacked as one batch of n * batch_size rows.

    Rows `[i * batch_size:(i + 1) * batch_size]` are minibatch i, each drawn
    by `sample_mixed` with the same fractions, for an agent's
    `update(batch, utd_ratio=n)` that splits the leading axis into n chunks.

    Raises:
      ValueError: n < 1, and everything `sample_mixed` raises.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return _concat_batches([sample_mixed(buffers, batch_size, fractions, frame_features=frame_features)
                            for _ in range(int(n))])
