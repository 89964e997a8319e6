"""benchmarks/hil_serl.py: the budget flag parser and one run truncated at its budget, against
values worked out by hand."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.hil_serl import parse_budgets, row_at_budget  # noqa: E402


def test_parse_budgets_and_its_errors():
    assert parse_budgets("pick-place:60000,assembly:90000") == {"pick-place": 60000,
                                                                "assembly": 90000}
    assert parse_budgets("") == {}
    for bad in ("pick-place", "pick-place:", "pick-place:0", "pick-place:6e4", "a:-5"):
        with pytest.raises(ValueError, match="TASK:ENV_STEPS"):
            parse_budgets(bad)


def test_row_at_budget_truncates_history_and_episodes():
    history = [{"env_steps": 5000 * (i + 1), "success_rate": sr, "wall_clock_s": 120.0 * (i + 1)}
               for i, sr in enumerate([0.2, 0.85, 0.9, 0.1])]
    episodes = [  # (end step, length, operator steps, takeovers, success)
        dict(step=4000, length=100, human=50, segments=2, success=False),
        dict(step=8000, length=100, human=10, segments=1, success=True),
        dict(step=12000, length=50, human=0, segments=0, success=True),
        dict(step=14000, length=50, human=20, segments=1, success=True),
        dict(step=19000, length=100, human=100, segments=5, success=False),  # after the budget
    ]
    row = {"task": "pick-place", "seed": 1, "eval_history": history, "episodes": episodes}
    r = row_at_budget(row, 15000, target_sr=0.8)
    assert r["eval_sr"] == 0.9 and r["eval_step"] == 15000 and r["minutes"] == 6.0
    assert r["ir"] == pytest.approx((50 + 10 + 0 + 20) / 300)
    # Last quarter: episodes ending after 11250 env steps (the 12000 and 14000 ones).
    assert r["ir_last_quarter"] == pytest.approx(20 / 100)
    assert r["takeovers_per_episode"] == pytest.approx(4 / 4)
    assert r["takeovers_per_episode_last_quarter"] == pytest.approx(0.5)
    assert r["train_sr"] == pytest.approx(0.75)
    assert r["autonomous_sr_last_quarter"] == pytest.approx(0.5)  # 12000 without a human step
    assert r["env_steps_to_target"] == 10000 and r["minutes_to_target"] == 4.0
    assert row_at_budget(row, 15000, target_sr=0.95)["env_steps_to_target"] is None
