"""Several actors into one learner (issue 14 item 5): budgets, folders, seeds, the learner's
end-of-run logic, and two simulated actors through the real launchers counting every transition."""

import json
import os

import pytest

from configs.train import get_config
from launcher_runs import collect_demos, find_free_ports, run_task, tiny_flags
from serl_ext.loop import common
from serl_ext.loop.learner import _Control


def _config(actor_id=0, num_actors=1, steps=7):
    config = get_config("pick-place,hil_serl")
    config.actor.actor_id, config.learner.num_actors = actor_id, num_actors
    config.actor.max_env_steps = steps
    config.run_root = "/runs"
    return config


def test_budget_shares_folders_and_seeds_per_actor():
    assert [common.actor_budget(_config(k, 2, 7)) for k in (0, 1)] == [4, 3]
    assert [common.actor_budget(_config(k, 3, 9)) for k in range(3)] == [3, 3, 3]
    assert common.actor_budget(_config(0, 1, 7)) == 7
    assert common.actor_dir_for(_config(0, 2)) == common.run_dir_for(_config(0, 2))  # the primary actor
    assert common.actor_dir_for(_config(1, 2)) == os.path.join(common.run_dir_for(_config()), "actors", "actor1")
    one = _config(0, 1)
    assert common.episode_seed(one, 5) == 5 + 1_000_003 * one.seed  # a single actor: unchanged
    seeds = [{common.episode_seed(_config(k, 3), e) for e in range(1000)} for k in range(3)]
    assert not (seeds[0] & seeds[1]) and not (seeds[1] & seeds[2]) and not (seeds[0] & seeds[2])
    for k, n in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="num_actors"):
            common.actor_fleet(_config(k, n))


def test_learner_ends_once_every_actor_is_done_and_keeps_each_report():
    control = _Control(num_actors=2)
    assert control("actor_done", {"actor_id": 1, "env_steps": 3}) == {"ok": True}
    assert not control.actor_done.is_set()
    assert control("actor_done", {"actor_id": 1}) == {"ok": True}  # a repeat counts once
    assert not control.actor_done.is_set()
    assert control("actor_done", {"actor_id": 2})["ok"] is False  # outside [0, 2)
    assert control("actor_done", {"actor_id": True})["ok"] is False
    control("actor_done", {"env_steps": 4})  # no id: actor 0 (an actor of an older version)
    assert control.actor_done.is_set() and control.actors_done == {0, 1}
    control("actor_closed", {"actor_id": 1, "unacknowledged": 0, "queued": 3, "note": "x"})
    assert not control.actor_closed.is_set()
    control("actor_closed", {"actor_id": 0, "unacknowledged": 2, "queued": 4})
    assert control.actor_closed.is_set()
    assert control.actor_report == {"unacknowledged": 2, "queued": 4}
    assert control.actor_reports[1] == {"unacknowledged": 0, "queued": 3}
    single = _Control()
    single("actor_done", None)
    assert single.actor_done.is_set()


def test_fleet_totals_pool_the_actors_counts_and_ignore_bad_values():
    from serl_ext.loop.learner import fleet_totals

    control = _Control(num_actors=3)
    control("actor_done", {"actor_id": 0, "env_steps": 100, "episodes": 4, "human_steps": 30, "recovery_steps": 5,
                           "successes": 1})
    control("actor_done", {"actor_id": 1, "env_steps": 300, "episodes": 6, "human_steps": 10, "recovery_steps": 0,
                           "successes": 5, "note": "x"})
    # From the wire: a negative count, a bool, a float and a huge value are left out.
    control("actor_done", {"actor_id": 2, "env_steps": -1, "episodes": True, "human_steps": 2.5,
                           "successes": 2**60})
    assert control.actor_counts[1] == {"env_steps": 300, "episodes": 6, "human_steps": 10, "recovery_steps": 0,
                                       "successes": 5}
    assert 2 not in control.actor_counts  # nothing valid: no entry
    fleet = fleet_totals(control.actor_counts, control.num_actors)
    assert fleet == {"env_steps": 400, "episodes": 10, "human_steps": 40, "recovery_steps": 5, "successes": 6,
                     "actors": 2, "num_actors": 3, "intervention_rate": 0.1, "train_success_rate": 0.6}
    # A resumed actor reports its totals again: they replace, not add to, the earlier ones.
    control("actor_done", {"actor_id": 1, "env_steps": 350, "episodes": 7, "human_steps": 10, "recovery_steps": 0,
                           "successes": 5})
    assert fleet_totals(control.actor_counts, 3)["env_steps"] == 450
    assert fleet_totals({}, 1) is None


@pytest.mark.timeout(600)
def test_two_actors_into_one_learner_through_run_task(tmp_path):
    collect_demos("pick-place", tmp_path / "demos")
    steps = 301  # actor 0 runs 151, actor 1 150
    run_task("pick-place,hil_serl", tiny_flags(tmp_path, find_free_ports(2), steps) + ["--config.learner.num_actors=2"])
    run_dir = tmp_path / "runs" / "pick-place" / "hil_serl" / "seed0"
    first = json.loads((run_dir / "summary.json").read_text())
    second = json.loads((run_dir / "actors" / "actor1" / "summary.json").read_text())
    learner = json.loads((run_dir / "learner_summary.json").read_text())
    assert (first["actor_id"], first["num_actors"], first["env_steps"]) == (0, 2, 151)
    assert (second["actor_id"], second["num_actors"], second["env_steps"]) == (1, 2, 150)
    # Every transition of both actors reached the one learner, once; both said done and closed.
    assert learner["replay_size"] == learner["online_transitions"] == steps
    assert learner["transport_duplicates"] == 0
    assert learner["actors_done"] == [0, 1] and learner["num_actors"] == 2
    for k, summary in (("0", first), ("1", second)):
        report = learner["actor_reports"][k]
        assert report["unacknowledged"] == 0
        assert report["queued"] == summary["transport_items_queued"]
    # The fleet's totals are the two actors' own, the intervention rate pooled over their steps.
    fleet = learner["fleet"]
    assert fleet["actors"] == 2 and fleet["env_steps"] == steps
    assert fleet["human_steps"] == first["human_steps"] + second["human_steps"]
    assert fleet["episodes"] == first["episodes"] + second["episodes"]
    assert fleet["intervention_rate"] == pytest.approx(fleet["human_steps"] / steps)
    # Demos + every human step of both actors in the demo buffer.
    assert learner["demo_size"] - first["human_steps"] - second["human_steps"] > 0
    # Only the primary actor evaluates; each actor's own state and log are in its folder.
    assert first["eval_history"] and not second["eval_history"]
    assert (run_dir / "actors" / "actor1" / "actor_state.json").exists()
    assert (run_dir / "actors" / "actor1" / "logs" / "actor.log").exists()
    assert (run_dir / "logs" / "actor.log").exists()
