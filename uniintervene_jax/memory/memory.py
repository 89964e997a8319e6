"""Recovery memory: mined items as arrays plus a faiss index over their key embeddings.

DESIGN section 4 "Recovery memory", retrieval rule: cosine top-5 on L2-normalised embeddings,
filtered to the same task, excluding the same episode, dropping goals whose value is not above
the current value; use the top-1 survivor.

Implementation: one faiss index per task over the L2-normalised key embeddings, so inner
product = cosine and the task filter is exact (a query only ever searches its own task's
index). The ``top_k`` nearest keys of that task are then filtered (other episode, goal value
strictly above the current value) and the most similar survivor is returned. As in the paper a
goal outside the ``top_k`` nearest keys is never used even if it would pass the filters;
``top_k=None`` searches all items of the task.

Index types (``MemoryConfig.index_type``):

* ``"flat"`` (default): ``faiss.IndexFlatIP``, exact.
* ``"hnsw"``: ``faiss.IndexHNSWFlat(D, hnsw_m, METRIC_INNER_PRODUCT)`` with ``efSearch =
  hnsw_ef_search``: approximate, for memories of many thousands of items.

Persistence (``save(dir)`` / ``load(dir)``): ``memory.npz`` (plain arrays, loaded with
``allow_pickle=False``) and ``memory.json`` (format version, config, task names, item count,
SHA-256 of the arrays). The faiss index is not saved: it is derived data and is rebuilt on load
from the stored key embeddings (milliseconds for hundreds of items; flat retrieval is then
identical, HNSW is rebuilt by inserting the same vectors in the same order).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from serl_ext.data.episodes import array_checksum
from serl_ext.files import atomic_write
from uniintervene_jax.memory.mining import RecoveryItems, normalize_task

FORMAT_VERSION = 1
ARRAYS_FILE = "memory.npz"
HEADER_FILE = "memory.json"
INDEX_TYPES = ("flat", "hnsw")


class MemoryFormatError(ValueError):
    """A saved memory is unreadable, corrupt, or of another format version."""


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """Index options.

    Attributes:
      index_type: ``"flat"`` (exact inner product) or ``"hnsw"`` (approximate).
      hnsw_m: HNSW graph degree (neighbours per node).
      hnsw_ef_search: HNSW search breadth (higher = more exact, slower).
      hnsw_ef_construction: HNSW construction breadth.
    """

    index_type: str = "flat"
    hnsw_m: int = 32
    hnsw_ef_search: int = 64
    hnsw_ef_construction: int = 80

    def __post_init__(self):
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {self.index_type!r}")
        for name in ("hnsw_m", "hnsw_ef_search", "hnsw_ef_construction"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"MemoryConfig.{name} must be >= 1")


@dataclasses.dataclass(frozen=True)
class RetrievedGoal:
    """One retrieval result (the top-1 survivor).

    Attributes:
      index: row of the item in the memory; similarity: cosine of query and key (float).
      task, episode_id, start, end: the item's source.
      goal_observations: dict key -> unbatched goal observation; goal_state float32 ``(S,)``;
      goal_embedding float32 ``(D,)``; goal_value float; actions float32 ``(H, A)``.
    """

    index: int
    similarity: float
    task: str
    episode_id: int
    start: int
    end: int
    goal_observations: Dict[str, np.ndarray]
    goal_state: np.ndarray
    goal_embedding: np.ndarray
    goal_value: float
    actions: np.ndarray


def l2_normalize(x: np.ndarray, name: str = "embedding") -> np.ndarray:
    """Row-wise L2 normalisation of float ``(N, D)`` -> float32. Raises ValueError on NaN/inf or a
    zero row (its cosine is undefined)."""
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norms < 1e-12):
        raise ValueError(f"{name} has a zero-norm row; cosine similarity is undefined")
    return (x / norms).astype(np.float32)


class RecoveryMemory:
    """Recovery memory with cosine retrieval (module docstring).

    Args:
      config: :class:`MemoryConfig`.
      items: optional :class:`RecoveryItems` added at once.
    """

    def __init__(self, config: MemoryConfig = MemoryConfig(), items: Optional[RecoveryItems] = None):
        if not isinstance(config, MemoryConfig):
            raise TypeError(f"config must be a MemoryConfig, got {type(config).__name__}")
        self.config = config
        self.items: Optional[RecoveryItems] = None
        self._keys: Optional[np.ndarray] = None  # (N, D) normalised key embeddings
        self._indices: Dict[str, Any] = {}  # task -> faiss index
        self._rows: Dict[str, List[int]] = {}  # task -> memory rows, in index order
        if items is not None:
            self.add(items)

    # ------------------------------------------------------------ building
    def __len__(self) -> int:
        return 0 if self.items is None else len(self.items)

    @property
    def embedding_dim(self) -> Optional[int]:
        """D of the key embeddings (None while empty)."""
        return None if self.items is None else self.items.embedding_dim

    @property
    def tasks(self) -> List[str]:
        """Tasks with at least one item."""
        return sorted(self._rows)

    def _new_index(self, dim: int):
        import faiss

        if self.config.index_type == "flat":
            return faiss.IndexFlatIP(dim)
        index = faiss.IndexHNSWFlat(dim, int(self.config.hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(self.config.hnsw_ef_construction)
        index.hnsw.efSearch = int(self.config.hnsw_ef_search)
        return index

    def add(self, items: Optional[RecoveryItems]) -> None:
        """Append items (None or empty is a no-op).

        Raises TypeError for a non-:class:`RecoveryItems`, ValueError for an embedding dimension
        or observation keys/shapes that differ from the items already held, or a zero key.
        """
        if items is None or len(items) == 0:
            return
        if not isinstance(items, RecoveryItems):
            raise TypeError(f"items must be RecoveryItems, got {type(items).__name__}")
        keys = l2_normalize(items.key_embedding, "key_embedding")
        if self.items is not None:
            if items.embedding_dim != self.embedding_dim:
                raise ValueError(f"embedding dim {items.embedding_dim} != memory's {self.embedding_dim}")
            for k, v in items.key_observations.items():
                if k not in self.items.key_observations or np.shape(v)[1:] != np.shape(self.items.key_observations[k])[1:]:
                    raise ValueError(f"observation {k!r} does not match the memory's observations")
            if np.shape(items.actions)[1:] != np.shape(self.items.actions)[1:]:
                raise ValueError("action chunk shape does not match the memory's")
        offset = len(self)
        tasks = [normalize_task(t) for t in items.tasks]
        items = dataclasses.replace(items, tasks=tasks)
        self.items = items if self.items is None else RecoveryItems.concatenate([self.items, items])
        self._keys = keys if self._keys is None else np.concatenate([self._keys, keys])
        for task in sorted(set(tasks)):
            rows = [offset + i for i, t in enumerate(tasks) if t == task]
            if task not in self._indices:
                self._indices[task] = self._new_index(keys.shape[1])
                self._rows[task] = []
            self._indices[task].add(np.ascontiguousarray(self._keys[rows]))
            self._rows[task].extend(rows)

    # ------------------------------------------------------------ retrieval
    def item(self, index: int, similarity: float = float("nan")) -> RetrievedGoal:
        """The item at memory row ``index`` as a :class:`RetrievedGoal`."""
        if not 0 <= index < len(self):
            raise IndexError(f"item index {index} out of range for a memory of {len(self)}")
        it = self.items
        return RetrievedGoal(
            index=int(index),
            similarity=float(similarity),
            task=it.tasks[index],
            episode_id=int(it.episode_id[index]),
            start=int(it.start[index]),
            end=int(it.end[index]),
            goal_observations={k: np.asarray(v[index]) for k, v in it.goal_observations.items()},
            goal_state=np.asarray(it.goal_state[index], np.float32),
            goal_embedding=np.asarray(it.goal_embedding[index], np.float32),
            goal_value=float(it.goal_value[index]),
            actions=np.asarray(it.actions[index], np.float32),
        )

    def retrieve_batch(
        self,
        query_embeddings: np.ndarray,
        tasks: Union[str, Sequence[str]],
        current_values: Any,
        exclude_episodes: Optional[Sequence[Optional[int]]] = None,
        top_k: Optional[int] = 5,
    ) -> List[Optional[RetrievedGoal]]:
        """Retrieval for B queries; returns one :class:`RetrievedGoal` or None per query.

        Args:
          query_embeddings: float ``(B, D)`` (normalised here).
          tasks: one task for all queries or B task names.
          current_values: float ``(B,)`` (or a scalar): the proxy value of each query state; a goal
            survives only if its value is strictly above it (compared in float32, the dtype the
            goal values are stored in).
          exclude_episodes: B episode ids (None entries = no exclusion) or None.
          top_k: nearest keys of the task considered before filtering (paper 5); None = all.
        Raises:
          ValueError: wrong shapes, NaN, zero query, D different from the memory's, top_k < 1.
        """
        q = np.asarray(query_embeddings)
        if q.ndim != 2:
            raise ValueError(f"query_embeddings must be (B, D), got {q.shape}")
        B = q.shape[0]
        if top_k is not None and int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        values = np.asarray(current_values, np.float64)
        if values.ndim == 0:
            values = np.full((B,), float(values))
        if values.shape != (B,):
            raise ValueError(f"current_values must be (B,) = ({B},), got {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError("current_values contains NaN or inf")
        task_list = [tasks] * B if isinstance(tasks, str) else list(tasks)
        if len(task_list) != B:
            raise ValueError(f"{len(task_list)} tasks for {B} queries")
        excl = [None] * B if exclude_episodes is None else list(exclude_episodes)
        if len(excl) != B:
            raise ValueError(f"{len(excl)} exclude_episodes for {B} queries")
        if len(self) == 0 or B == 0:
            if B and q.shape[1] < 1:
                raise ValueError("query_embeddings have D = 0")
            return [None] * B
        if q.shape[1] != self.embedding_dim:
            raise ValueError(f"query dim {q.shape[1]} != memory embedding dim {self.embedding_dim}")
        qn = l2_normalize(q, "query_embeddings")
        out: List[Optional[RetrievedGoal]] = [None] * B
        task_names = [normalize_task(t) for t in task_list]
        for task in sorted(set(task_names)):
            if task not in self._indices:
                continue
            qi = [i for i, t in enumerate(task_names) if t == task]
            rows = self._rows[task]
            k = len(rows) if top_k is None else min(int(top_k), len(rows))
            sims, idx = self._indices[task].search(np.ascontiguousarray(qn[qi]), k)
            for row_q, i in enumerate(qi):
                for sim, j in zip(sims[row_q], idx[row_q]):  # sorted by decreasing similarity
                    if j < 0:
                        continue
                    m = rows[int(j)]
                    if excl[i] is not None and int(self.items.episode_id[m]) == int(excl[i]):
                        continue
                    if not np.float32(self.items.goal_value[m]) > np.float32(values[i]):
                        continue
                    out[i] = self.item(m, float(sim))
                    break
        return out

    def retrieve(
        self,
        query_embedding: np.ndarray,
        task: str,
        current_value: float,
        exclude_episode: Optional[int] = None,
        top_k: Optional[int] = 5,
    ) -> Union[Optional[RetrievedGoal], List[Optional[RetrievedGoal]]]:
        """Best goal for one query ``(D,)`` (returns a RetrievedGoal or None), or for a batch
        ``(B, D)`` (returns a list; ``current_value`` then a scalar or ``(B,)``).
        See :meth:`retrieve_batch` for the rule and the errors."""
        q = np.asarray(query_embedding)
        if q.ndim == 1:
            return self.retrieve_batch(q[None], [task], [current_value], [exclude_episode], top_k)[0]
        excl = None if exclude_episode is None else [exclude_episode] * q.shape[0]
        return self.retrieve_batch(q, task, current_value, excl, top_k)

    # ------------------------------------------------------------ persistence
    def _arrays(self) -> Dict[str, np.ndarray]:
        it = self.items
        task_names = sorted(set(it.tasks))
        arrays = {f: np.ascontiguousarray(getattr(it, f)) for f in RecoveryItems.ARRAY_FIELDS}
        arrays["task_index"] = np.array([task_names.index(t) for t in it.tasks], np.int32)
        for k, v in it.key_observations.items():
            arrays[f"key_observations/{k}"] = np.ascontiguousarray(v)
        for k, v in it.goal_observations.items():
            arrays[f"goal_observations/{k}"] = np.ascontiguousarray(v)
        return arrays

    def save(self, directory: str) -> str:
        """Writes ``memory.npz`` and ``memory.json`` into ``directory`` (atomic per file).

        Raises ValueError for an empty memory.
        """
        if len(self) == 0:
            raise ValueError("cannot save an empty RecoveryMemory")
        os.makedirs(directory, exist_ok=True)
        arrays = self._arrays()
        header = {
            "format_version": FORMAT_VERSION,
            "kind": "recovery_memory",
            "config": dataclasses.asdict(self.config),
            "tasks": sorted(set(self.items.tasks)),
            "num_items": len(self),
            "embedding_dim": self.embedding_dim,
            "sha256": array_checksum(arrays),
        }
        atomic_write(os.path.join(directory, ARRAYS_FILE), lambda f: np.savez(f, **arrays))
        atomic_write(os.path.join(directory, HEADER_FILE),
                      lambda f: f.write(json.dumps(header, indent=2, sort_keys=True).encode()))
        return directory

    @classmethod
    def load(cls, directory: str, config: Optional[MemoryConfig] = None) -> "RecoveryMemory":
        """Reads a folder written by :meth:`save` and rebuilds the faiss index.

        Args:
          config: overrides the saved index config (e.g. switch to ``"hnsw"``).
        Raises:
          FileNotFoundError: a file is missing.
          MemoryFormatError (ValueError): other format version, unreadable/corrupt files, checksum
            mismatch, missing arrays.
        """
        header_path = os.path.join(directory, HEADER_FILE)
        arrays_path = os.path.join(directory, ARRAYS_FILE)
        for path in (header_path, arrays_path):
            if not os.path.exists(path):
                raise FileNotFoundError(f"recovery memory file missing: {path}")
        try:
            with open(header_path) as f:
                header = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MemoryFormatError(f"{header_path}: corrupt header ({e})") from e
        if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION:
            version = header.get("format_version") if isinstance(header, dict) else None
            raise MemoryFormatError(f"{header_path}: format_version {version} != {FORMAT_VERSION}")
        try:
            with np.load(arrays_path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except Exception as e:  # zipfile / numpy raise several types on corrupt input
            raise MemoryFormatError(f"{arrays_path}: unreadable ({e})") from e
        if array_checksum(arrays) != header.get("sha256"):
            raise MemoryFormatError(f"{arrays_path}: checksum mismatch (corrupt or edited file)")
        try:
            task_names = list(header["tasks"])
            items = RecoveryItems(
                tasks=[task_names[i] for i in arrays["task_index"]],
                key_observations={n.split("/", 1)[1]: a for n, a in arrays.items() if n.startswith("key_observations/")},
                goal_observations={n.split("/", 1)[1]: a for n, a in arrays.items() if n.startswith("goal_observations/")},
                **{f: arrays[f] for f in RecoveryItems.ARRAY_FIELDS},
            )
            cfg = config if config is not None else MemoryConfig(**header["config"])
        except (KeyError, IndexError, TypeError) as e:
            raise MemoryFormatError(f"{directory}: incomplete recovery memory ({e!r})") from e
        return cls(cfg, items)
