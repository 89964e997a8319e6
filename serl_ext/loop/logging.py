"""Metric logging: tensorboard event files plus a JSON-lines copy that scripts can read."""

import json
import math
import os
import time
from typing import Dict, Mapping, Optional


class MetricLogger:
    """Writes namespaced scalars (``train/``, ``rollout/``, ``eval/``, ``intervention/``).

    Files: ``{run_dir}/tb/{name}/events.*`` (tensorboard, when enabled) and
    ``{run_dir}/metrics/{name}.jsonl`` (one JSON object per call: ``step``, ``wall_s`` and the
    scalars). Non-finite values are written to the JSONL as ``null``.
    """

    def __init__(self, run_dir: str, name: str, tensorboard: bool = True):
        self._start = time.time()
        metrics_dir = os.path.join(run_dir, "metrics")
        os.makedirs(metrics_dir, exist_ok=True)
        self._jsonl = open(os.path.join(metrics_dir, f"{name}.jsonl"), "a", buffering=1)
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(run_dir, "tb", name), flush_secs=10)

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        """Logs ``scalars`` (name -> number) at integer ``step``."""
        record: Dict[str, Optional[float]] = {"step": int(step), "wall_s": time.time() - self._start}
        for key, value in scalars.items():
            value = float(value)
            record[key] = value if math.isfinite(value) else None
            if self._tb is not None:
                self._tb.add_scalar(key, value, int(step))
        self._jsonl.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str):
    """Reads a metrics JSONL file into a list of dicts (skips a torn last line)."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
