"""Reliability of the actor and learner loops (issue 15, docs/reliability.md): sensor and action
faults in the actor, the parameter slot's refusal of a bad message, the learner's divergence
guard, checkpoint fallback and liveness, and an actor that never reached a learner. The
two-process SIGKILL test is in test_loop_sigkill.py."""

import json
import os

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.train import get_config
from serl_ext.loop import common
from serl_ext.loop.actor import DATA_STORE, ParameterSlot, run_actor
from serl_ext.loop.gate import POLICY
from serl_ext.loop.param_message import build_message, check_message
from serl_ext.transport import find_free_ports
from test_loop import FakeClient, small_actor_settings

SPEC = {"state": ((39,), np.dtype(np.float32))}
A = 4


def _rows(run_dir, name):
    with open(os.path.join(run_dir, "metrics", f"{name}.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------- actor faults
class GlitchingSensor(gym.Wrapper):
    """Returns a NaN observation at step call 7, a 3e38 one at step call 23 and a NaN one at
    reset call 3 (counted over the whole run, as a glitching sensor would)."""

    def __init__(self, env):
        super().__init__(env)
        self.steps = self.resets = 0

    @staticmethod
    def _glitch(obs, index, value):
        obs = {k: np.array(v) for k, v in obs.items()}
        obs["state"][index] = value
        return obs

    def reset(self, **kwargs):
        self.resets += 1
        obs, info = self.env.reset(**kwargs)
        return (self._glitch(obs, 5, np.nan) if self.resets == 3 else obs), info

    def step(self, action):
        self.steps += 1
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.steps == 7:
            obs = self._glitch(obs, 3, np.nan)
        elif self.steps == 23:
            obs = self._glitch(obs, 0, 3e38)
        return obs, reward, terminated, truncated, info


class NaNActionOnce:
    """A pass-through gate whose 15th action is NaN (a broken policy or gate output)."""

    def __init__(self):
        self.calls = 0

    def reset(self, observation):
        pass

    def select_action(self, observation, policy_action):
        self.calls += 1
        if self.calls == 15:
            return np.full_like(policy_action, np.nan), POLICY
        return policy_action, POLICY

    def observe(self, *args):
        pass

    def stats(self):
        return {}


def test_sensor_glitches_and_a_nan_action_are_faults_the_actor_survives(tmp_path, monkeypatch):
    config = small_actor_settings(get_config("pick-place,hil_serl"), tmp_path, 60)
    config.env.max_episode_steps = 20
    make_env = common.make_env
    envs = []

    def glitching_make_env(config, seed, *, with_operator):
        env = make_env(config, seed, with_operator=with_operator)
        if with_operator:  # the actor's env; evaluation envs stay clean
            envs.append(GlitchingSensor(env))
            return envs[-1]
        return env

    monkeypatch.setattr(common, "make_env", glitching_make_env)
    clients = []
    summary = run_actor(config, gate=NaNActionOnce(),
                        make_client=lambda stores: clients.append(FakeClient(stores)) or clients[0])

    # The actor kept running: every counted step was sent, the faulty ones were not counted.
    assert summary["env_steps"] == 60
    assert summary["sensor_faults"] == 3 and summary["action_faults"] == 1
    online = clients[0].received[DATA_STORE]
    assert len(online) == 60
    # The bad observations never left the actor ...
    for t in online:
        for key in ("observations", "next_observations"):
            state = np.asarray(t[key]["state"])
            assert np.all(np.isfinite(state)) and np.all(np.abs(state) <= 1e6)
    # ... and what was sent goes into a learner buffer with the task's bounds without a refusal.
    env = make_env(config, 0, with_operator=False)
    buffer = common.make_buffer(common.observation_spec(env), A, 100, seed=0, with_extras=True,
                                value_bounds=common.value_bounds(env))
    env.close()
    for t in online:
        buffer.insert(t)
    assert len(buffer) == 60 and buffer.num_out_of_bounds == 0
    # A fault ends the episode: the transition before it is marked done (truncated, mask kept),
    # so each counted episode ends with one done and the stream chains everywhere else.
    assert sum(bool(t["dones"]) for t in online) == summary["episodes"]
    for a, b in zip(online[:-1], online[1:]):
        if not a["dones"]:
            np.testing.assert_array_equal(a["next_observations"]["state"], b["observations"]["state"])
    rows = _rows(common.run_dir_for(config), "actor")
    assert sum("rollout/sensor_fault" in r for r in rows) == 3
    assert sum("rollout/action_fault" in r for r in rows) == 1
    assert envs[0].steps == 60 + 2  # the two glitching steps ran in the env but were not counted


def test_an_actor_that_never_reached_a_learner_exits_non_zero_and_says_so(tmp_path):
    config = small_actor_settings(get_config("pick-place,hil_serl"), tmp_path, 20)
    config.transport.port, config.transport.broadcast_port = find_free_ports(2)  # nobody listens
    config.actor.final_ack_timeout_s = 1.0
    with pytest.raises(SystemExit, match="reached a learner"):
        run_actor(config)
    with open(os.path.join(common.run_dir_for(config), "summary.json")) as f:
        summary = json.load(f)
    assert summary["env_steps"] == 20 and summary["delivered_to_learner"] is False
    assert summary["transport_items_delivered"] == 0 and summary["transport_items_acknowledged"] == 0
    assert summary["transport_items_unacknowledged"] == summary["transport_items_queued"] >= 20


# --------------------------------------------------------------------------- parameter slot
def _policy_params():
    config = get_config("pick-place,hil_serl")
    config.agent.hidden_dims = (8, 8)
    return common.to_numpy_tree(common.create_agent(config, SPEC, A).policy_params())


def test_parameter_slot_refuses_a_bad_message_whole(caplog):
    params = _policy_params()
    slot = ParameterSlot(params, accepted_parts=("method",))
    slot.put(build_message(3, 10, params, {"method": {"version": 1}}))
    received_at = slot.last_receive_time
    assert (slot.learner_step, slot.version, slot.num_refused) == (10, 3, 0) and received_at > 0

    nan = jax.tree.map(np.copy, params)
    first = jax.tree_util.tree_leaves(nan)[0]
    first.flat[0] = np.nan
    wrong_shape = jax.tree.map(lambda x: np.zeros((2, *x.shape), x.dtype), params)
    bad = [
        build_message(4, 99, nan),                                  # NaN in the policy
        build_message(5, 99, params, {"method": {"version": 2, "w": np.array([np.inf])}}),  # NaN part
        build_message(6, 99, params, {"other": {"version": 1}}),    # a part nobody takes
        build_message(7, 99, wrong_shape),                          # another network
        {"learner_step": 99},                                       # not a message
    ]
    with caplog.at_level("WARNING"):
        for message in bad:
            slot.put(message)
    # Nothing of a refused message was stored: not its learner_step, version or arrival time.
    assert (slot.learner_step, slot.version, slot.last_receive_time) == (10, 3, received_at)
    assert slot.num_refused == len(bad) and "misses" in slot.last_refusal
    assert sum("refused parameter message" in r.getMessage() for r in caplog.records) == len(bad)
    pending = slot.take()
    assert pending.version == 3 and pending.learner_step == 10 and slot.take() is None


# ------------------------------------------------------------------------------ the learner
class FakeServer:
    """Stands in for TrainerServer: on start() inserts ``n`` transitions into the online store
    (``late`` of them only once the learner published a step after its first, i.e. after the
    first update compiled, so an idle clock starts after it); records what is published;
    ``last_contact_time`` as given."""

    def __init__(self, n, last_contact_time=None, late=0):
        self.n, self.stores, self.published = n, {}, []
        self.num_rejected = 0
        self.last_contact_time = last_contact_time
        self.late, self.first_step = late, None

    def register_data_store(self, name, store):
        self.stores[name] = store

    def start(self, threaded=True):
        self._insert(self.n - self.late, seed=0)

    def _insert(self, n, seed):
        rng = np.random.default_rng(seed)
        obs = {"state": rng.normal(size=39).astype(np.float32)}
        for t in range(n):
            nxt = {"state": rng.normal(size=39).astype(np.float32)}
            self.stores[DATA_STORE].insert({
                "observations": obs, "next_observations": nxt, "actions": rng.uniform(-1, 1, A).astype(np.float32),
                "rewards": np.float32(0.0), "masks": np.float32(1.0), "dones": t % 10 == 9, "interventions": False,
                "action_source": np.int8(0), "grasp_penalty": np.float32(0.0)})
            obs = nxt

    def publish_network(self, message):
        self.published.append(message)
        self.first_step = message["learner_step"] if self.first_step is None else self.first_step
        if self.late and message["learner_step"] > self.first_step:  # an update has run
            late, self.late = self.late, 0
            self._insert(late, seed=1)

    def stop(self):
        pass


def _learner_config(tmp_path, max_steps, checkpoint_period):
    config = get_config("pick-place,hil_serl")
    config.run_root = str(tmp_path)
    config.demos.num_demos = 0
    config.agent.hidden_dims = (16, 16)
    config.learner.batch_size = 16
    config.learner.training_starts = 20
    config.learner.max_steps = max_steps
    config.learner.publish_period = 1
    config.learner.log_period = 1
    config.learner.checkpoint_period = checkpoint_period
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    return config


def _poison_updates(monkeypatch, calls):
    """Makes SACAgent.update return NaN parameters (``calls[n] == "params"``) or a NaN loss
    (``"loss"``) at its n-th call (from 1)."""
    from serl_ext.agents.sac import SACAgent

    original = SACAgent.update
    count = [0]

    def nan_floats(tree):
        return jax.tree.map(lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    def update(self, batch, utd_ratio=1, donate=False):
        new, info = original(self, batch, utd_ratio, donate)
        count[0] += 1
        what = calls.get(count[0])
        if what == "params":
            new = nan_floats(new)
        elif what == "loss":
            info = dict(info, critic_loss=info["critic_loss"] * jnp.nan)
        return new, info

    monkeypatch.setattr(SACAgent, "update", update)
    return count


def test_divergence_guard_skips_bad_updates_and_restores_the_agent_from_a_checkpoint(tmp_path, monkeypatch, capsys):
    import time

    from serl_ext.loop.checkpoint import Checkpointer
    from serl_ext.loop.learner import run_learner

    config = _learner_config(tmp_path, max_steps=12, checkpoint_period=4)
    config.learner.divergence_restore_after = 3
    config.learner.actor_timeout_s = 1.0
    # Update 3 returns NaN parameters (finite loss); updates 8-10 a NaN loss, three in a row.
    count = _poison_updates(monkeypatch, {3: "params", 8: "loss", 9: "loss", 10: "loss"})
    server = FakeServer(40, last_contact_time=time.time() - 1000.0)  # the actor went silent long ago
    summary = run_learner(config, server=server)
    out = capsys.readouterr().out

    assert summary["learner_steps"] == 12 and count[0] == 16
    assert summary["divergence_recoveries"] == 4 and summary["divergence_restores"] == 1
    assert "agent restored from checkpoint 4" in out and "non-finite update" in out
    # Nothing non-finite was ever published or saved.
    messages = [check_message(m) for m in server.published]
    assert [m.learner_step for m in messages][-1] == 12
    run_dir = common.run_dir_for(config)
    agent = common.create_agent(config, SPEC, A)
    checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
    restored, counters = checkpointer.restore_agent(agent)
    checkpointer.close()
    assert counters["learner_step"] == 12
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(restored) if np.asarray(x).dtype.kind == "f")
    rows = _rows(run_dir, "learner")
    assert rows[-1]["train/divergence_recoveries"] == 4.0 and rows[-1]["train/divergence_restores"] == 1.0
    assert all(v is not None for r in rows for k, v in r.items() if k.startswith("train/"))
    # Liveness: the silent actor was noticed once, logged and reported.
    assert summary["actor_status"] == "silent" and summary["actor_silences"] == 1
    assert "no message from the actor" in out
    on_disk = json.loads(open(os.path.join(run_dir, "learner_summary.json")).read())
    for key in ("divergence_recoveries", "divergence_restores", "actor_status", "replay_out_of_bounds",
                "transport_duplicates", "transport_insert_errors", "transport_unauthenticated",
                "transport_replayed", "restored_step", "restore_report"):
        assert key in on_disk, key


def test_divergence_without_a_checkpoint_stops_with_a_clear_error(tmp_path, monkeypatch):
    from serl_ext.loop.learner import run_learner

    config = _learner_config(tmp_path, max_steps=10, checkpoint_period=0)
    config.learner.divergence_restore_after = 3
    _poison_updates(monkeypatch, {2: "loss", 3: "loss", 4: "loss"})
    with pytest.raises(FloatingPointError, match="no checkpoint to restore"):
        run_learner(config, server=FakeServer(30))
    summary = json.loads(open(os.path.join(common.run_dir_for(config), "learner_summary.json")).read())
    assert summary["learner_steps"] == 1 and summary["divergence_recoveries"] == 3
    assert summary["actor_status"] == "never connected"


def test_hold_limit_by_hand():
    from serl_ext.loop.learner import hold_limit

    # (online - training_starts) / steps_per_update + slack
    assert hold_limit(60, 20, 1.0, 5) == 45.0
    assert hold_limit(60, 20, 2.0, 5) == 25.0
    assert hold_limit(10, 20, 1.0, 5) == -5.0  # before training_starts: never ahead of it


def test_learner_waits_for_the_actor_when_held_and_runs_on_when_not(tmp_path):
    """60 transitions arrive once. Not held, the learner runs to max_steps on them; held, it
    stops at (60 - 20) / 1 + 5 = 45 steps and waits (the idle timeout then ends it: time spent
    waiting counts as idle; the last transition arrives after the first update compiled, so
    the idle clock measures the wait only)."""
    from serl_ext.loop.learner import run_learner

    config = _learner_config(tmp_path / "free", max_steps=60, checkpoint_period=0)
    config.learner.hold_to_actor = False
    free = run_learner(config, server=FakeServer(60))
    assert free["learner_steps"] == 60 and free["hold_waits"] == 0 and free["online_transitions"] == 60

    config = _learner_config(tmp_path / "held", max_steps=60, checkpoint_period=0)
    config.learner.hold_to_actor = True
    config.learner.hold_slack = 5
    config.learner.idle_timeout_s = 3.0
    config.actor.steps_per_update = 1.0
    held = run_learner(config, server=FakeServer(60, late=1))
    assert held["learner_steps"] == 45 and held["online_transitions"] == 60
    assert held["hold_waits"] == 1 and held["hold_wait_s"] > 0.5
    assert held["updates_per_env_step"] == pytest.approx(45 / 40)


def test_learner_hold_counts_online_transitions_across_a_resume(tmp_path):
    """The count of online transitions is checkpointed: a resumed learner holds against the
    whole run's count, not only what reached this process."""
    from serl_ext.loop.learner import run_learner

    config = _learner_config(tmp_path, max_steps=10, checkpoint_period=0)
    config.learner.hold_slack = 5
    first = run_learner(config, server=FakeServer(40))  # ends at max_steps, below the hold (25)
    assert first["learner_steps"] == 10 and first["online_transitions"] == 40
    config.learner.max_steps = 100
    config.learner.idle_timeout_s = 3.0
    second = run_learner(config, server=FakeServer(30, late=1))
    # 40 + 30 online transitions: (70 - 20) + 5 = 55 learner steps, then the wait.
    assert second["restored_step"] == 10 and second["online_transitions"] == 70
    assert second["learner_steps"] == 55


def _flip_byte(step_dir):
    """Flips one byte in the largest file of a checkpoint step folder."""
    files = [os.path.join(root, f) for root, _, names in os.walk(step_dir) for f in names
             if not f.endswith(".json")]
    path = max(files, key=os.path.getsize)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_learner_falls_back_to_an_intact_checkpoint_and_reports_it(tmp_path, capsys):
    from serl_ext.loop.learner import run_learner

    config = _learner_config(tmp_path, max_steps=4, checkpoint_period=2)
    first = run_learner(config, server=FakeServer(30))
    assert first["restored_step"] is None and first["restore_report"] == []
    ckpt_dir = os.path.join(common.run_dir_for(config), "checkpoints")
    # Periodic saves at 2 and 4; the final save at learner step 4 holds more data than the
    # periodic one and is written as step 5 (never silently dropped); two are kept.
    assert sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) == [4, 5]
    _flip_byte(os.path.join(ckpt_dir, "5"))

    config.learner.max_steps = 6
    second = run_learner(config, server=FakeServer(30, late=1))
    out = capsys.readouterr().out
    assert second["restored_step"] == 4 and len(second["restore_report"]) == 1
    assert "step 5" in second["restore_report"][0] and "resumed from checkpoint 4" in out
    assert second["learner_steps"] == 6

    for step in os.listdir(ckpt_dir):
        if step.isdigit():
            _flip_byte(os.path.join(ckpt_dir, step))
    config.learner.max_steps = 8
    with pytest.raises(SystemExit, match="cannot resume"):
        run_learner(config, server=FakeServer(30))
    summary = json.loads(open(os.path.join(common.run_dir_for(config), "learner_summary.json")).read())
    assert "error" in summary and len(summary["restore_report"]) == 2
