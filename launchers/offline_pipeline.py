"""Runs the offline UniIntervene pipeline on one task (every stage, or some of them).

  python launchers/offline_pipeline.py --task=pick-place --run_dir=runs/offline/pick-place
  python launchers/offline_pipeline.py --task=pick-place --run_dir=... --stages=intervention,report
  python launchers/offline_pipeline.py ... --config.intervention.head_type=binary   # the other head mode (= w/o TVR)

Stages: data, value, labels, intervention, memory, recovery, report (see
``uniintervene_jax/pipeline.py``). Outputs: models under ``models/``, the memory under
``memory/``, plots and JSON under ``report/``, ``metrics.json`` and ``report.md``.

The per-task flow in the paper's order (issue 13 item 1), one command per step:

  # 1. offline data: scripted demos, rollouts of the SFT base policy (BC on the demos) that fail
  #    or stall, and rollouts with the operator's intervention segments (stage "data"; or
  #    launchers/collect_offline.py --out=DIR and --config.data.dir=DIR);
  # 2. proxy value, labels, intervention model (threshold: best F1 on the held-out episodes,
  #    stored in models/intervention/model.json), memory, recovery policy; 3. the offline report:
  python launchers/offline_pipeline.py --task=pick-place --run_dir=runs/offline/pick-place
  # 4. the online run started from these models (the learner keeps refining them and pushes
  #    them with a version; uniintervene_jax/online_config.py documents the schedule):
  bash launchers/run_task.sh pick-place,hil_serl+uniintervene \
      --config.uniintervene.init_from=runs/offline/pick-place

The online run needs the folder's value and intervention models to match its observations
(same task and observation mode) and ``intervention.history_len``; the offline recovery policy
is reused only with ``--config.recovery.head=continuous`` (the online head).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_TASK = flags.DEFINE_string("task", "pick-place", "Stand-in task name.")
_RUN_DIR = flags.DEFINE_string("run_dir", "", "Run folder (default runs/offline/TASK).")
_STAGES = flags.DEFINE_list("stages", ["all"], "Stages to run, or 'all'.")
_CONFIG = config_flags.DEFINE_config_dict(
    "config", __import__("uniintervene_jax.pipeline", fromlist=["x"]).get_pipeline_config(),
    "Pipeline config (uniintervene_jax/pipeline.py: get_pipeline_config).")


def main(argv):
    del argv
    from uniintervene_jax.pipeline import STAGES, Pipeline

    config = _CONFIG.value
    config.task = _TASK.value
    run_dir = _RUN_DIR.value or os.path.join("runs", "offline", _TASK.value)
    stages = STAGES if _STAGES.value == ["all"] else _STAGES.value
    pipeline = Pipeline(config, run_dir)
    metrics = pipeline.run(stages)
    print(json.dumps({"metrics": metrics, "stage_seconds": pipeline.timings}, indent=2, default=str))


if __name__ == "__main__":
    app.run(main)
