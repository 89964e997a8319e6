"""No acknowledged transition lost (issue 15 item 2/7): learner.sh and actor.sh as two processes;
the learner is SIGKILLed twice mid-run (the first time while it writes a checkpoint) and
restarted with the same command each time; every transition is counted end to end."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from launcher_runs import cpu_env
from serl_ext.transport import find_free_ports

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_ENV_STEPS = 300


def _flags(tmp_path, ports):
    return [
        f"--config.run_root={tmp_path / 'runs'}",
        "--config.demos.num_demos=0",
        f"--config.transport.port={ports[0]}",
        f"--config.transport.broadcast_port={ports[1]}",
        "--config.agent.hidden_dims=(32, 32)",
        "--config.learner.batch_size=32",
        "--config.learner.training_starts=50",
        "--config.learner.publish_period=5",
        "--config.learner.log_period=20",
        "--config.learner.checkpoint_period=20",
        f"--config.actor.max_env_steps={MAX_ENV_STEPS}",
        "--config.actor.eval_period=0",
        "--config.actor.eval_episodes=1",
        # The actor keeps within 1 env step per learner step (+ 20) of the learner and, while the
        # learner is down, waits for it (learner_timeout_s) instead of running ahead alone.
        "--config.actor.steps_per_update=1",
        "--config.actor.throttle_slack=20",
        "--config.actor.learner_timeout_s=300",
        "--config.env.max_episode_steps=40",
        "--config.logging.progress_bar=False",
        "--config.logging.tensorboard=False",
    ]


def _complete_steps(ckpt_dir):
    """Checkpoint steps whose save finished (orbax renamed the folder, the manifest is written)."""
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(s) for s in os.listdir(ckpt_dir)
                  if s.isdigit() and os.path.exists(os.path.join(ckpt_dir, s, "integrity_manifest.json")))


def _saving(ckpt_dir):
    """True while a checkpoint is being written (orbax's temporary folder, or a step folder
    without its manifest yet)."""
    try:
        names = os.listdir(ckpt_dir)
    except FileNotFoundError:
        return False
    return any("tmp" in n or (n.isdigit() and not os.path.exists(os.path.join(ckpt_dir, n, "integrity_manifest.json")))
               for n in names)


def _wait(predicate, timeout_s, what, procs):
    deadline = time.time() + timeout_s
    while not predicate():
        for name, p in procs.items():
            assert p.poll() is None, f"{name} exited early ({p.returncode}) while waiting for {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


@pytest.mark.timeout(600)
def test_sigkilled_learner_loses_and_duplicates_no_transition(tmp_path):
    ports = find_free_ports(2)
    flags = _flags(tmp_path, ports)
    env = cpu_env()  # JAX on the CPU; the restarted learners load the first one's compiled programs
    run_dir = tmp_path / "runs" / "pick-place" / "hil_serl" / "seed0"
    ckpt_dir = str(run_dir / "checkpoints")
    logs = []

    def start_learner():
        log = open(tmp_path / f"learner{len(logs)}.log", "w")
        logs.append(log.name)
        return subprocess.Popen(["bash", "launchers/learner.sh", "pick-place,hil_serl", *flags], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)

    learner = start_learner()
    actor_log = open(tmp_path / "actor.log", "w")
    actor = subprocess.Popen(["bash", "launchers/actor.sh", "pick-place,hil_serl", *flags], cwd=REPO, env=env,
                             stdout=actor_log, stderr=subprocess.STDOUT, text=True)
    try:
        # 1. Kill the learner while it writes a checkpoint (one is already complete, so the
        #    restart restores something).
        _wait(lambda: len(_complete_steps(ckpt_dir)) >= 1, 300, "a first checkpoint", {"learner": learner})
        _wait(lambda: _saving(ckpt_dir), 120, "a checkpoint save", {"learner": learner, "actor": actor})
        learner.send_signal(signal.SIGKILL)
        learner.wait(timeout=30)
        first_kill = max(_complete_steps(ckpt_dir))

        # 2. Restart with the same command; once it saved a newer checkpoint, kill it again.
        learner = start_learner()
        _wait(lambda: max(_complete_steps(ckpt_dir) or [0]) > first_kill + 20, 300, "a checkpoint after the restart",
              {"learner": learner, "actor": actor})
        time.sleep(0.2)
        learner.send_signal(signal.SIGKILL)
        learner.wait(timeout=30)

        # 3. Restart once more and let the run finish.
        learner = start_learner()
        assert actor.wait(timeout=400) == 0, open(actor_log.name).read()[-3000:]
        assert learner.wait(timeout=120) == 0, open(logs[-1]).read()[-3000:]
    finally:
        for p in (learner, actor):
            if p.poll() is None:
                p.kill()

    actor_summary = json.loads((run_dir / "summary.json").read_text())
    learner_summary = json.loads((run_dir / "learner_summary.json").read_text())
    # Both restarts resumed from a checkpoint (the killed saves were skipped or completed).
    for path in logs[1:]:
        assert "resumed from checkpoint" in open(path).read(), open(path).read()[-2000:]
    assert learner_summary["restored_step"] is not None and learner_summary["durable_ack"] is True

    # The actor: everything it queued was acknowledged as checkpointed; nothing dropped or pending.
    queued = actor_summary["transport_items_queued"]
    assert actor_summary["env_steps"] == MAX_ENV_STEPS
    assert queued == MAX_ENV_STEPS + actor_summary["human_steps"]  # human steps go to both stores
    assert actor_summary["transport_items_acknowledged"] == queued
    assert actor_summary["transport_items_unacknowledged"] == 0 and actor_summary["transport_items_dropped"] == 0
    assert actor_summary["delivered_to_learner"] is True
    # ... resending what a killed learner had received after its last checkpoint (sent counts
    # resends; how many depends on the timing of the kills).
    assert actor_summary["transport_items_sent"] >= queued

    # The learner: what it stored over the three processes is exactly what was acknowledged.
    assert learner_summary["transport_items_stored_total"] == queued
    assert learner_summary["transport_insert_errors_total"] == 0
    assert learner_summary["transport_items_restored"] > 0
    assert learner_summary["replay_size"] == MAX_ENV_STEPS
    assert learner_summary["demo_size"] == actor_summary["human_steps"]  # no demo files: interventions only
    assert learner_summary["actor_status"] == "done"
    assert learner_summary["actor_report"]["unacknowledged"] == 0

    # No duplicate: the final checkpoint's online buffer holds MAX_ENV_STEPS distinct transitions.
    from configs.train import get_config
    from serl_ext.loop import common
    from serl_ext.loop.checkpoint import Checkpointer

    config = get_config("pick-place,hil_serl")
    config.agent.hidden_dims = (32, 32)
    spec, action_dim, bounds = common.task_spaces(config)
    replay = common.make_buffer(spec, action_dim, int(config.learner.replay_capacity), seed=0, with_extras=True,
                                value_bounds=bounds)
    checkpointer = Checkpointer(ckpt_dir)
    _, buffers, counters = checkpointer.restore(common.create_agent(config, spec, action_dim))
    checkpointer.close()
    replay.load_state_dict(buffers["replay"])
    live = replay.live_transitions()
    rows = np.concatenate([live["observations"]["state"], live["actions"], live["next_observations"]["state"]], axis=1)
    assert len(replay) == MAX_ENV_STEPS and len(np.unique(rows, axis=0)) == MAX_ENV_STEPS
    assert counters["transport_totals"]["stored"] == queued
