"""End to end on the simulated UR5e through the real launchers: scripted demos, then
learner.sh and actor.sh as two processes (``ur5e-sim-lift,hil_serl``, the simulated operator
taking over), evaluating on the training env as on a real arm. Skipped without robosuite."""

import json

import pytest

pytest.importorskip("robosuite")

from launcher_runs import collect_demos, find_free_ports, read_run, replace_flags, run_learner_and_actor, tiny_flags  # noqa: E402

SPEC = "ur5e-sim-lift,hil_serl"


@pytest.mark.timeout(600)
def test_hil_serl_on_the_simulated_ur5e_through_the_launchers(tmp_path):
    collect_demos("ur5e-sim-lift", tmp_path / "demos")
    flags = replace_flags(
        tiny_flags(tmp_path, find_free_ports(2), 150, training_starts=50),
        "--config.env.max_episode_steps=40",
        # One arm's path: evaluate on the training env, at the end of the episode in progress.
        "--config.actor.eval_on_training_env=True",
        "--config.actor.eval_period=100",
        "--config.actor.eval_episodes=1",
    )
    run_learner_and_actor(SPEC, flags)
    run_dir, summary, learner_summary = read_run(tmp_path, SPEC)
    assert summary["task"] == "ur5e-sim-lift" and summary["algorithm"] == "hil_serl"
    assert summary["env_steps"] == 150 and summary["action_repeat"] == 1
    assert summary["human_steps"] > 0  # the simulated operator took over the untrained policy
    assert summary["sensor_faults"] == 0 and summary["action_faults"] == 0
    # The evaluation due at step 100 waited for the end of that training episode.
    first, last = summary["eval_history"]
    assert 100 <= first["env_steps"] <= 140 and last["env_steps"] == 150
    assert learner_summary["replay_size"] == 150 and learner_summary["learner_steps"] > 0
    assert learner_summary["demo_size"] - summary["human_steps"] > 0  # the two demos
    robot = json.loads((run_dir / "actor_config.json").read_text())["robot"]
    assert robot["max_episode_steps"] == 80  # the robot config travels in the run's config
