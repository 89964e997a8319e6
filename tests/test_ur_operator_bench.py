"""benchmarks/ur_operator.py: the operator ladder on the simulated UR5e (robosuite extra)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import ur_operator  # noqa: E402


def test_the_expert_needs_no_help_and_an_idle_robot_is_handed_back_on_the_grasp(tmp_path):
    pytest.importorskip("robosuite")
    assert ur_operator.main(["--robots=expert,idle", "--seeds=1", f"--out={tmp_path}"]) == 0
    rows = json.load(open(tmp_path / "results.json"))["rows"]
    expert, idle = rows
    assert expert["robot"] == "expert" and expert["ir"] == 0.0 and expert["takeovers_per_episode"] == 0
    assert expert["success_with_operator"] == expert["autonomous_success"] == 1.0
    # Lift's operator (configs/tasks.py) never hands back on progress alone.
    assert idle["operator"] == {"handback_on_progress": False}
    assert idle["ir"] > 0.3 and idle["autonomous_success"] == 0.0
    assert idle["handbacks"].get("subgoal", 0) >= 1 and "progress" not in idle["handbacks"]
    assert "| ur5e-sim-lift | idle | 1 |" in open(tmp_path / "results.md").read()


def test_an_unknown_robot_is_refused():
    with pytest.raises(ValueError, match="unknown robot"):
        ur_operator._policy("teleporter", None)
