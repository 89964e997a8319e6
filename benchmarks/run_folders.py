"""Finding run folders of a comparison (``RUNS/TASK/METHOD/seedS``, benchmarks/compare.py layout).

Flag-free on purpose: the benchmark scripts that read finished runs (system_eval.py,
takeover_context.py) import it without pulling in another script's absl flags.
"""

import os
from typing import Dict, List, Sequence, Tuple


def seed_run_dirs(runs_root: str, methods: Sequence[str]) -> Dict[Tuple[str, str], List[str]]:
    """``{(task, method): [seed folder paths, sorted]}`` for every task folder of ``runs_root``
    (sorted) and every method of ``methods`` (in that order) that has a folder there.

    Raises:
      FileNotFoundError: ``runs_root`` is not a folder.
    """
    if not os.path.isdir(runs_root):
        raise FileNotFoundError(f"{runs_root} is not a folder of run folders (run benchmarks/compare.py first)")
    out: Dict[Tuple[str, str], List[str]] = {}
    for task in sorted(os.listdir(runs_root)):
        for method in methods:
            mdir = os.path.join(runs_root, task, method)
            if os.path.isdir(mdir):
                out[(task, method)] = [os.path.join(mdir, s) for s in sorted(os.listdir(mdir)) if s.startswith("seed")]
    return out
