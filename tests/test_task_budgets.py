"""The task configs' budgets are the ones the committed HiL-SERL row selected
(benchmarks/results/hil_serl_row/results.json, benchmarks/run_metrics.select_budget)."""

import json
import os

from configs.tasks import TASK_OVERRIDES

ROW = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "benchmarks", "results", "hil_serl_row", "results.json")


def test_every_stand_in_task_runs_with_the_hil_serl_row_budget():
    with open(ROW) as f:
        per_task = json.load(f)["per_task"]
    assert set(per_task) == set(TASK_OVERRIDES)
    for task, row in per_task.items():
        assert row["budget_met"], f"{task}: the row selected no budget"
        assert TASK_OVERRIDES[task]["max_env_steps"] == row["budget"], task
        assert row["budget"] % 10_000 == 0 and row["budget"] >= 1.5 * row["converged_step"]
