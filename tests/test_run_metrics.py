"""benchmarks/run_metrics.py: IR windows, convergence and the HiL-SERL row's budget rule,
against values worked out by hand."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_metrics import (  # noqa: E402
    converged_step, episode_rows, ir_between, select_budget, steps_to, truncate_history)


def _history(srs, period=5000):
    return [{"env_steps": period * (i + 1), "success_rate": x, "wall_clock_s": 60.0 * (i + 1)}
            for i, x in enumerate(srs)]


def test_episode_rows_and_pooled_ir_windows():
    metrics = [
        {"step": 100, "rollout/length": 100, "intervention/steps": 50, "intervention/segments": 2,
         "rollout/success": 1.0},
        {"step": 120, "eval/success_rate": 0.5},  # not an episode row
        {"step": 140, "rollout/length": 40, "intervention/steps": 0, "intervention/segments": 0,
         "rollout/success": 1.0},
        {"step": 240, "rollout/length": 100, "intervention/steps": 10,
         "intervention/segments": 1, "rollout/success": 0.0},
    ]
    rows = episode_rows(metrics)
    assert [r["step"] for r in rows] == [100, 140, 240]
    assert rows[2] == {"step": 240, "length": 100, "human": 10, "segments": 1, "success": False}
    assert ir_between(rows, 0, 240) == pytest.approx(60 / 240)  # pooled, not per-episode mean
    assert ir_between(rows, 100, 240) == pytest.approx(10 / 140)  # (100, 240]: episodes 2, 3
    assert ir_between(rows, 240, 500) is None


def test_convergence_and_budget_rule():
    seeds = [_history([0, .9, .5, .9, .9, .9]), _history([0, .8, .9, .8, 1, 1]),
             _history([0, 0, .9, 1, .7, .8])]
    # medians: 0, .8, .9, .9, .9, .9 -> stays >= 0.8 from 10k on
    assert converged_step(seeds, 0.8, 30000) == 10000
    assert select_budget(seeds, 0.8, 30000) == 20000  # 1.5 x 10k = 15k -> rounded up to 20k
    assert select_budget(seeds, 0.8, 30000, factor=3.0) == 30000
    assert select_budget(seeds, 0.8, 18000) == 18000  # capped at the runs' length
    # A dip of the median at the end resets convergence: never "stays" above.
    dip = [_history([0, .9, .9, .5]), _history([0, .9, .9, .5]), _history([0, .9, .9, .9])]
    assert converged_step(dip, 0.8, 20000) is None and select_budget(dip, 0.8, 20000) is None
    # Evaluation steps missing in one history do not count.
    short = [_history([0, .9, .9]), _history([0, .9])]
    assert converged_step(short, 0.8, 15000) == 10000


def test_truncate_and_steps_to():
    h = _history([0.2, 0.85, 0.7, 0.95])
    assert [x["env_steps"] for x in truncate_history(h, 12000)] == [5000, 10000]
    assert steps_to(h, "env_steps", 0.8) == 10000
    assert steps_to(h, "wall_clock_s", 0.9) == 240.0
    assert steps_to(h, "env_steps", 0.99) is None
