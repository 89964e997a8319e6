"""Recovery-memory audit: how similar and how useful the retrieved goals are.

The guide's checklist asks to "build recovery memory and audit top-1 retrieval similarity";
this runs the memory's retrieval rule (:meth:`RecoveryMemory.retrieve_batch`) on a set of query
states and summarises it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from uniintervene_jax.memory.memory import RecoveryMemory


def _stat(x: np.ndarray, fn) -> Optional[float]:
    return float(fn(x)) if x.size else None


def memory_audit(
    memory: RecoveryMemory,
    queries: np.ndarray,
    query_values: Any,
    tasks: Union[str, Sequence[str]],
    out_dir: Optional[str] = None,
    exclude_episodes: Optional[Sequence[Optional[int]]] = None,
    top_k: Optional[int] = 5,
    num_bins: Optional[int] = None,
) -> Dict[str, Any]:
    """Audit retrieval on ``queries``.

    Args:
      memory: the :class:`RecoveryMemory`.
      queries: float ``(N, D)`` query embeddings (e.g. embeddings of stagnating states).
      query_values: float ``(N,)`` proxy values of the query states.
      tasks: one task or N task names.
      out_dir: when given, writes ``memory_audit.json`` and ``memory_audit.png`` (histograms of the
        top-1 similarity and the value lift) there.
      exclude_episodes: N episode ids to exclude (the queries' own episodes) or None.
      top_k: as in :meth:`RecoveryMemory.retrieve_batch`.
      num_bins: number of progress bins for ``items_per_bin`` (default ``max(bin) + 1``).
    Returns:
      dict with ``num_queries``, ``memory_size``, ``hit_rate`` (fraction of queries with a
      surviving goal), ``top1_similarity`` (``mean``, ``median``, ``p10``, ``p90`` of the cosine
      of the retrieved goals' keys, over hits), ``value_lift`` (``mean``, ``median`` of goal value
      - current value over hits), ``items_per_bin`` (list of counts) and ``items_per_task``.
      Statistics over zero hits are None.
    Raises:
      ValueError: N = 0, or as :meth:`RecoveryMemory.retrieve_batch`.
    """
    q = np.asarray(queries)
    if q.ndim != 2 or q.shape[0] == 0:
        raise ValueError(f"queries must be a non-empty (N, D) array, got shape {q.shape}")
    values = np.asarray(query_values, np.float64).reshape(-1)
    if values.shape[0] != q.shape[0]:
        raise ValueError(f"query_values must be (N,) = ({q.shape[0]},), got {np.shape(query_values)}")
    results = memory.retrieve_batch(q, tasks, values, exclude_episodes, top_k)
    hits = [(r, v) for r, v in zip(results, values) if r is not None]
    sims = np.array([r.similarity for r, _ in hits], np.float64)
    lifts = np.array([r.goal_value - v for r, v in hits], np.float64)
    if len(memory):
        bins = np.asarray(memory.items.bin, np.int64)
        nb = int(num_bins) if num_bins is not None else int(bins.max()) + 1
        per_bin = np.bincount(bins, minlength=nb).tolist()
        per_task: Dict[str, int] = {}
        for t in memory.items.tasks:
            per_task[t] = per_task.get(t, 0) + 1
    else:
        per_bin, per_task = [0] * int(num_bins or 0), {}
    report = {
        "num_queries": int(q.shape[0]),
        "memory_size": len(memory),
        "hit_rate": len(hits) / q.shape[0],
        "top1_similarity": {
            "mean": _stat(sims, np.mean),
            "median": _stat(sims, np.median),
            "p10": _stat(sims, lambda x: np.percentile(x, 10)),
            "p90": _stat(sims, lambda x: np.percentile(x, 90)),
        },
        "value_lift": {"mean": _stat(lifts, np.mean), "median": _stat(lifts, np.median)},
        "items_per_bin": per_bin,
        "items_per_task": per_task,
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "memory_audit.json"), "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        _plot(sims, lifts, per_bin, os.path.join(out_dir, "memory_audit.png"))
    return report


def _plot(sims: np.ndarray, lifts: np.ndarray, per_bin, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].hist(sims, bins=20, range=(-1, 1) if sims.size == 0 else None, color="tab:blue")
    axes[0].set_xlabel("top-1 cosine similarity")
    axes[0].set_ylabel("queries")
    axes[1].hist(lifts, bins=20, range=(0, 1) if lifts.size == 0 else None, color="tab:green")
    axes[1].set_xlabel("value lift (goal - current)")
    axes[2].bar(np.arange(len(per_bin)), per_bin, color="tab:gray")
    axes[2].set_xlabel("start-progress bin")
    axes[2].set_ylabel("items")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
