"""In-process tests of the actor loop (gate slot, human precedence, stats) and of the image
pipeline (rendered observations -> buffer -> CNN agent update)."""

import json

import numpy as np
import pytest

from configs.train import get_config
from serl_ext.loop import common
from serl_ext.loop.actor import DATA_STORE, INTERVENTION_STORE, run_actor
from serl_ext.loop.gate import HUMAN, POLICY, RECOVERY


class FakeClient:
    """Stands in for TrainerClient: drains the actor's data stores into lists."""

    def __init__(self, stores):
        self.stores = stores
        self.received = {name: [] for name in stores}
        self.requests = []

    def recv_network_callback(self, fn):
        self.callback = fn

    def update(self):
        for name, store in self.stores.items():
            items = store.pending_items()
            self.received[name].extend(item for _, item in items)
            if items:
                store.acknowledge(items[-1][0])
        return True

    def request(self, request_type, payload):
        self.requests.append((request_type, payload))
        return {"ok": True}

    def stop(self):
        pass


class EveryOtherStepRecovery:
    """A scripted gate: replaces the policy's action by a fixed 'recovery' action on odd steps."""

    def __init__(self):
        self.t = 0
        self.observed = []
        self.resets = 0

    def reset(self, observation):
        self.resets += 1

    def select_action(self, observation, policy_action):
        self.t += 1
        if self.t % 2:
            return np.array([0.0, 0.0, 0.5, -1.0], np.float32), RECOVERY
        return policy_action, POLICY

    def observe(self, observation, action, source, reward, next_observation, info):
        self.observed.append((np.array(action), source, "intervene_action" in info))

    def stats(self):
        return {"recoveries": float(self.t)}


def small_actor_settings(config, tmp_path, max_env_steps=150):
    """Tiny in-process actor settings (also used by test_online's actor tests)."""
    config.run_root = str(tmp_path)
    config.agent.hidden_dims = (16, 16)
    config.actor.max_env_steps = max_env_steps
    config.actor.eval_period = 0
    config.actor.eval_episodes = 1
    config.actor.steps_per_update = 0.0
    config.actor.send_period = 10
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    return config


def _small_config(tmp_path, algorithm="hil_serl"):
    config = small_actor_settings(get_config(f"pick-place,{algorithm}"), tmp_path)
    config.actor.save_episodes = True
    return config


def test_actor_gate_slot_sources_and_human_precedence(tmp_path):
    config = _small_config(tmp_path)
    gate = EveryOtherStepRecovery()
    clients = []

    def make_client(stores):
        clients.append(FakeClient(stores))
        return clients[0]

    summary = run_actor(config, gate=gate, make_client=make_client)
    client = clients[0]
    online = client.received[DATA_STORE]
    interventions = client.received[INTERVENTION_STORE]

    assert len(online) == 150 == summary["env_steps"]
    sources = np.array([int(t["action_source"]) for t in online])
    # The gate's recovery steps are stored as such unless the human took over that step.
    for (action, source, human), t in zip(gate.observed, online):
        assert int(t["action_source"]) == source
        assert bool(t["interventions"]) == human == (source == HUMAN)
        np.testing.assert_array_equal(t["actions"], action)
    assert summary["recovery_steps"] == int(np.sum(sources == RECOVERY)) > 0
    assert summary["human_steps"] == int(np.sum(sources == HUMAN)) == len(interventions)
    assert all(bool(t["interventions"]) for t in interventions)
    assert summary["intervention_rate"] == pytest.approx(summary["human_steps"] / 150)
    # Consecutive transitions chain: next observation of step t is the observation of t+1
    # unless an episode ended at t.
    for a, b in zip(online[:-1], online[1:]):
        if not a["dones"]:
            np.testing.assert_array_equal(a["next_observations"]["state"], b["observations"]["state"])
    assert client.requests and client.requests[-1][0] == "actor_done"

    run_dir = common.run_dir_for(config)
    on_disk = json.loads(open(f"{run_dir}/summary.json").read())
    for key in ("task", "algorithm", "seed", "env_steps", "episodes", "eval_success_rate",
                "intervention_rate", "wall_clock_s"):
        assert key in on_disk
    # Saved rollouts carry the same per-step sources.
    from serl_ext.data.episodes import list_episodes, load_episode

    episodes = [load_episode(p) for p in list_episodes(f"{run_dir}/episodes")]
    assert len(episodes) == summary["episodes"]
    stored = np.concatenate([e["action_source"] for e in episodes])
    np.testing.assert_array_equal(stored, sources[: len(stored)])


def test_image_observations_through_buffer_and_cnn_update(tmp_path):
    from serl_ext.data.replay_buffer import sample_mixed_many
    from serl_ext.envs import check_rendering

    reason = check_rendering()
    if reason is not None:
        pytest.skip(f"headless rendering unavailable: {reason}")
    config = _small_config(tmp_path, "hil_serl_pixels")
    config.env.image_size = 32
    config.agent.encoder.widths = (8, 8)
    config.agent.encoder.latent_dim = 16
    env = common.make_env(config, 0, with_operator=False)
    spec = common.observation_spec(env)
    assert spec["pixels"] == ((32, 32, 3), np.dtype(np.uint8))
    agent = common.create_agent(config, spec, 4)
    buffer = common.make_buffer(spec, 4, 100, seed=0)
    obs, _ = env.reset(seed=0)
    key = __import__("jax").random.PRNGKey(0)
    for _ in range(20):
        action = np.asarray(agent.sample_actions(obs, key), np.float32)
        assert action.shape == (4,) and np.all(np.abs(action) <= 1)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.insert({
            "observations": obs, "actions": action, "next_observations": next_obs,
            "rewards": np.float32(reward), "masks": np.float32(1 - terminated),
            "dones": bool(terminated or truncated), "interventions": False, "action_source": np.int8(0),
        })
        obs = next_obs
    env.close()
    batch = sample_mixed_many([buffer], 8, 2, fractions=(1.0,))
    assert batch["observations"]["pixels"].dtype == np.uint8
    new_agent, info = agent.update(batch, 2)
    assert np.isfinite(float(info["critic_loss"]))


def test_state_agent_refuses_image_env(tmp_path):
    config = _small_config(tmp_path)
    spec = {"state": ((4,), np.dtype(np.float32)), "pixels": ((32, 32, 3), np.dtype(np.uint8))}
    with pytest.raises(ValueError, match="image_keys"):
        common.create_agent(config, spec, 4)


# ------------------------------------------------------------------ evaluation with a gate
class _ZeroAgent:
    def eval_actions(self, obs):
        return np.zeros((4,), np.float32)


class _ExpertRecoveryGate:
    """Scripted gate for evaluation: every step it replaces the policy's action by the scripted
    expert's action on the env being evaluated (captured via common.make_env) as RECOVERY."""

    def __init__(self, envs, task):
        from serl_ext.loop.rollouts import expert_policy

        self.envs, self.expert = envs, expert_policy(task)
        self.resets, self.observed = 0, []

    def reset(self, observation):
        self.resets += 1

    def select_action(self, observation, policy_action):
        return self.expert(observation, self.envs[-1]), RECOVERY

    def observe(self, observation, action, source, reward, next_observation, info):
        self.observed.append(source)


def test_evaluate_with_a_gate_runs_the_whole_system(tmp_path, monkeypatch):
    from serl_ext.loop.evaluation import evaluate

    config = _small_config(tmp_path)
    envs = []
    make_env = common.make_env

    def capture(*args, **kwargs):
        envs.append(make_env(*args, **kwargs))
        assert kwargs.get("with_operator") is False  # evaluation never has a human
        return envs[-1]

    monkeypatch.setattr(common, "make_env", capture)
    alone = evaluate(_ZeroAgent(), config, 2)
    assert alone["eval/success_rate"] == 0.0 and "eval/recovery_fraction" not in alone
    gate = _ExpertRecoveryGate(envs, config.task)
    system = evaluate(_ZeroAgent(), config, 2, gate=gate, prefix="eval_system")
    # The expert (as the gate's recovery) solves pick-place; every step was the gate's.
    assert system["eval_system/success_rate"] == 1.0
    assert system["eval_system/recovery_fraction"] == 1.0
    assert gate.resets == 2 and len(gate.observed) == round(2 * system["eval_system/length"])
    assert system["eval_system/length"] < 60  # it succeeded and ended the episodes early


class _ReadyEveryOtherStep(EveryOtherStepRecovery):
    """EveryOtherStepRecovery with the gate options ``ready``, ``eval_with_gate`` and
    ``for_evaluation`` (serl_ext.loop.gate.Gate)."""

    ready = True
    eval_with_gate = True

    def __init__(self):
        super().__init__()
        self.copies = []

    def for_evaluation(self):
        self.copies.append(EveryOtherStepRecovery())
        return self.copies[-1]


def test_actor_evaluates_policy_alone_and_with_a_copy_of_the_gate(tmp_path):
    config = small_actor_settings(get_config("pick-place,hil_serl"), tmp_path, max_env_steps=60)
    config.actor.eval_period = 30
    gate = _ReadyEveryOtherStep()
    summary = run_actor(config, gate=gate, make_client=lambda stores: FakeClient(stores))
    assert len(gate.observed) == 60  # evaluation steps never reach the training gate
    history = summary["eval_history"]
    assert [h["env_steps"] for h in history] == [30, 60] and len(gate.copies) == 2
    for h, copy_ in zip(history, gate.copies):
        sources = np.array([s for _, s, _ in copy_.observed])
        assert copy_.resets == config.actor.eval_episodes
        assert h["system_recovery_fraction"] == pytest.approx(np.mean(sources == RECOVERY))
        assert 0.0 <= h["system_success_rate"] <= 1.0
    assert summary["eval_system_success_rate"] == history[-1]["system_success_rate"]
    # Switched off (the gate's eval_with_gate; plain HiL-SERL's gate has it off): the policy
    # alone, no system keys.
    config.run_root = str(tmp_path / "off")
    off_gate = _ReadyEveryOtherStep()
    off_gate.eval_with_gate = False
    off = run_actor(config, gate=off_gate, make_client=lambda stores: FakeClient(stores))
    assert off["eval_system_success_rate"] is None
    assert all("system_success_rate" not in h for h in off["eval_history"])


# ------------------------------------------------------------------ grasp penalty end to end
class _GripperScheduleGate:
    """A scripted gate that keeps the policy's arm action and sets the gripper command from a
    fixed schedule (close, close, stay, open, open, stay, ...), so the gripper state changes."""

    SCHEDULE = (1.0, 1.0, 0.0, -1.0, -1.0, 0.0)

    def __init__(self):
        self.t = 0

    def reset(self, observation):
        pass

    def select_action(self, observation, policy_action):
        action = np.array(policy_action, np.float32)
        action[-1] = self.SCHEDULE[self.t % len(self.SCHEDULE)]
        self.t += 1
        return action, POLICY

    def observe(self, observation, action, source, reward, next_observation, info):
        pass

    def stats(self):
        return {}


def _expected_grasp_penalties(transitions, penalty=-0.02, threshold=0.5):
    """GripperPenalty recomputed from the stored (executed) actions: the gripper starts open at
    every episode start; a command above +threshold closes it, below -threshold opens it."""
    out, closed = [], False
    for t in transitions:
        grip = float(t["actions"][-1])
        new = True if grip > threshold else False if grip < -threshold else closed
        out.append(penalty if new != closed else 0.0)
        closed = False if t["dones"] else new
    return np.array(out, np.float32)


def test_grasp_penalty_survives_actor_transport_buffer_and_reaches_the_hybrid_target(tmp_path):
    from serl_ext.data.episodes import list_episodes, load_episode
    from serl_ext.transport import codec

    config = _small_config(tmp_path, "hil_serl_hybrid")
    clients = []

    def make_client(stores):
        clients.append(FakeClient(stores))
        return clients[-1]

    summary = run_actor(config, gate=_GripperScheduleGate(), make_client=make_client)
    online = clients[0].received[DATA_STORE]
    assert len(online) == 150 == summary["env_steps"] and summary["episodes"] >= 1
    # The actor's transitions carry the wrapper's penalty of the executed gripper command.
    penalties = np.array([t["grasp_penalty"] for t in online])
    assert all(isinstance(t["grasp_penalty"], np.float32) for t in online)
    np.testing.assert_array_equal(penalties, _expected_grasp_penalties(online))
    assert np.sum(penalties != 0) >= 10 and np.sum(penalties == 0) >= 10
    # Saved rollouts record it per step.
    run_dir = common.run_dir_for(config)
    episodes = [load_episode(p) for p in list_episodes(f"{run_dir}/episodes")]
    stored = np.concatenate([e["grasp_penalty"] for e in episodes])
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, penalties[: len(stored)])

    # Over the wire (the transport's codec) into the learner's buffer, then sampled.
    env = common.make_env(config, 0, with_operator=False)
    spec = common.observation_spec(env)
    env.close()
    buffer = common.make_buffer(spec, 4, 1000, seed=0, with_extras=True)
    for t in online:
        buffer.insert(codec.decode(codec.encode(t)))
    np.testing.assert_array_equal(buffer.live_transitions()["grasp_penalty"], penalties)
    batch = buffer.sample(64)
    assert batch["grasp_penalty"].shape == (64,) and batch["grasp_penalty"].dtype == np.float32
    assert set(np.unique(batch["grasp_penalty"])) <= {np.float32(0.0), np.float32(-0.02)}
    assert np.any(batch["grasp_penalty"] != 0)

    # The hybrid agent's gripper target moves by exactly the sampled penalties.
    agent = common.create_agent(config, spec, 4)
    _, with_penalty = agent.update_critic(batch)
    _, without = agent.update_critic(dict(batch, grasp_penalty=np.zeros(64, np.float32)))
    shift = float(with_penalty["grasp_target_mean"]) - float(without["grasp_target_mean"])
    assert shift == pytest.approx(float(batch["grasp_penalty"].mean()), abs=1e-6)
    assert float(with_penalty["target_q_mean"]) == pytest.approx(float(without["target_q_mean"]), abs=1e-6)


def test_learner_demo_loading_defaults_grasp_penalty_for_old_files(tmp_path):
    from serl_ext.data.episodes import save_episode
    from serl_ext.loop.learner import load_demos

    T = 5
    spec = {"state": ((3,), np.dtype(np.float32))}
    states = np.arange((T + 1) * 3, dtype=np.float32).reshape(T + 1, 3)
    episode = {
        "observations": {"state": states},
        "actions": np.zeros((T, 4), np.float32),
        "rewards": np.zeros(T, np.float32),
        "terminals": np.eye(T, dtype=bool)[-1],
        "truncations": np.zeros(T, bool),
        "interventions": np.ones(T, bool),
        "action_source": np.full(T, HUMAN, np.int8),
        "success": np.zeros(T, bool),
    }
    (tmp_path / "demos").mkdir()
    save_episode(str(tmp_path / "demos" / "episode_000000.npz"), episode)  # no grasp_penalty (old file)
    penalties = np.array([0.0, -0.02, 0.0, 0.0, -0.02], np.float32)
    save_episode(str(tmp_path / "demos" / "episode_000001.npz"), dict(episode, grasp_penalty=penalties))
    config = _small_config(tmp_path, "hil_serl_hybrid")
    config.demos.path = str(tmp_path / "demos")
    config.demos.num_demos = 2
    buffer = common.make_buffer(spec, 4, 100, seed=0, with_extras=True)
    assert load_demos(config, buffer) == 2 * T
    live = buffer.live_transitions()
    np.testing.assert_array_equal(live["grasp_penalty"], np.concatenate([np.zeros(T, np.float32), penalties]))
    assert "success" not in live  # extras the buffer does not store are dropped


def test_time_limit_masks_follow_bootstrap_at_time_limit(tmp_path):
    """Truncated last steps keep mask 1 by default and get mask 0 (HiL-SERL's robot envs)
    with ``actor.bootstrap_at_time_limit=False``; every other step keeps mask 1 here (the
    operator is off and an idle robot never succeeds)."""
    for bootstrap, last_mask in ((True, 1.0), (False, 0.0)):
        config = small_actor_settings(get_config("pick-place,hil_serl"), tmp_path / str(bootstrap),
                                      max_env_steps=60)
        config.env.max_episode_steps = 20
        config.operator.enabled = False
        config.actor.bootstrap_at_time_limit = bootstrap
        clients = []

        def make_client(stores):
            clients.append(FakeClient(stores))
            return clients[0]

        run_actor(config, gate=_ZeroGate(), make_client=make_client)
        online = clients[0].received[DATA_STORE]
        assert len(online) == 60
        for i, transition in enumerate(online):
            end = (i + 1) % 20 == 0
            assert bool(transition["dones"]) == end
            assert float(transition["masks"]) == (last_mask if end else 1.0)


class _ZeroGate(EveryOtherStepRecovery):
    """Executes the zero action on every step (source: recovery, so no policy noise)."""

    def select_action(self, observation, policy_action):
        return np.zeros(4, np.float32), RECOVERY
