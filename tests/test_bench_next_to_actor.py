"""The steady-window arithmetic of benchmarks/bench_learner_next_to_actor.py on hand-made records."""

import json

import pytest

from benchmarks.bench_learner_next_to_actor import actor_window, read_jsonl, steady_learner_rate


def _row(step, wall, ui=None):
    r = {"step": step, "wall_s": wall, "train/updates_per_s": 1.0}
    if ui is not None:
        r["uniintervene/value_updates"] = ui
        r["uniintervene/intervention_updates"] = ui
    return r


def test_steady_rate_skips_the_start_and_stops_at_the_actors_end():
    # Records every 100 steps; the first one at 10 s. Skip 5 s -> window starts at the record
    # at >= 15 s; end at 40 s.
    rows = [{"step": 0, "wall_s": 1.0}] + [_row(100 * k, 10.0 + 2.5 * k, ui=k) for k in range(1, 20)]
    out = steady_learner_rate(rows, skip_s=5.0, end_wall_s=40.0)
    first = next(r for r in rows[1:] if r["wall_s"] >= 17.5)  # 10 + 2.5 (first training record) + 5
    last = max((r for r in rows[1:] if r["wall_s"] <= 40.0), key=lambda r: r["wall_s"])
    assert out["first_step"] == first["step"] and out["last_step"] == last["step"]
    assert out["updates"] == last["step"] - first["step"]
    assert out["updates_per_s"] == pytest.approx((last["step"] - first["step"]) / (last["wall_s"] - first["wall_s"]))
    assert out["value_updates"] == (last["step"] - first["step"]) // 100


def test_steady_rate_refuses_a_window_too_short():
    rows = [_row(100, 10.0), _row(200, 11.0)]
    with pytest.raises(ValueError, match="steady window"):
        steady_learner_rate(rows, skip_s=5.0)
    with pytest.raises(ValueError, match="no training records"):
        steady_learner_rate([{"step": 0, "wall_s": 0.0}], skip_s=0.0)


def test_actor_window_and_torn_last_line(tmp_path):
    path = tmp_path / "actor.jsonl"
    rows = [{"step": 200, "wall_s": 10.0, "rollout/length": 200}, {"step": 300, "wall_s": 11.0},
            {"step": 600, "wall_s": 20.0, "rollout/length": 200}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 7')
    got = read_jsonl(str(path))
    assert got == rows
    assert actor_window(got) == {"env_steps": 400, "seconds": 10.0, "env_steps_per_s": 40.0}
    with pytest.raises(ValueError):
        actor_window(got[:1])
