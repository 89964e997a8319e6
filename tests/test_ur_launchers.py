"""End to end on the simulated UR5e through the real launchers: scripted demos, then
learner.sh and actor.sh as two processes (``ur5e-sim-lift,hil_serl``, the simulated operator
taking over), evaluating on the training env as on a real arm. Skipped without robosuite."""

import json
import os
import socket
import subprocess
import sys

import pytest

pytest.importorskip("robosuite")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "ur5e-sim-lift,hil_serl"


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.timeout(600)
def test_hil_serl_on_the_simulated_ur5e_through_the_launchers(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    demos = subprocess.run(
        [sys.executable, "launchers/collect_demos.py", "--task=ur5e-sim-lift", "--num_demos=2",
         f"--out={tmp_path / 'demos'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert demos.returncode == 0, demos.stderr[-3000:]
    assert len(list((tmp_path / "demos").glob("*.npz"))) == 2

    ports = _free_ports(2)
    flags = [
        f"--config.run_root={tmp_path / 'runs'}",
        f"--config.demos.path={tmp_path / 'demos'}",
        "--config.demos.num_demos=2",
        f"--config.transport.port={ports[0]}",
        f"--config.transport.broadcast_port={ports[1]}",
        "--config.agent.hidden_dims=(32, 32)",
        "--config.learner.batch_size=32",
        "--config.learner.training_starts=50",
        "--config.learner.publish_period=10",
        "--config.learner.checkpoint_period=0",
        "--config.actor.max_env_steps=150",
        "--config.actor.steps_per_update=0",
        "--config.env.max_episode_steps=40",
        # One arm's path: evaluate on the training env, at the end of the episode in progress.
        "--config.actor.eval_on_training_env=True",
        "--config.actor.eval_period=100",
        "--config.actor.eval_episodes=1",
        "--config.logging.progress_bar=False",
    ]
    learner = subprocess.Popen(["bash", "launchers/learner.sh", SPEC, *flags], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        actor = subprocess.run(["bash", "launchers/actor.sh", SPEC, *flags], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=400)
        assert actor.returncode == 0, actor.stdout[-3000:] + actor.stderr[-3000:]
        out, _ = learner.communicate(timeout=120)
        assert learner.returncode == 0, out[-3000:]
    finally:
        if learner.poll() is None:
            learner.kill()
    run_dir = tmp_path / "runs" / "ur5e-sim-lift" / "hil_serl" / "seed0"
    summary = json.loads((run_dir / "summary.json").read_text())
    learner_summary = json.loads((run_dir / "learner_summary.json").read_text())
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
