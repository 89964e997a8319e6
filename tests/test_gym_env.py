"""The ``gym:`` task kind (serl_ext/envs/gym_env.py): any registered gymnasium env with Box
actions, from gymnasium itself or from a user's package (tests/gym_user_env.py), in the
project's conventions, with the env's own intervention signal stored as interventions, and
trained through learner.sh / actor.sh with no code change."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gym_user_env
from configs.train import get_config
from launcher_runs import cpu_env, find_free_ports, read_run, run_learner_and_actor, tiny_flags
from serl_ext.envs import make_env
from serl_ext.envs.gym_env import GymTask, parse_gym_task
from serl_ext.loop import common
from serl_ext.loop.actor import DATA_STORE, INTERVENTION_STORE, run_actor
from serl_ext.loop.gate import HUMAN, POLICY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
REACH = "gym:gym_user_env:SerlTestReach-v0"
REACH_INTERVENE = "gym:gym_user_env:SerlTestReachIntervene-v0"


def test_task_names_parse_and_bad_ones_are_refused_clearly():
    assert parse_gym_task("gym:Pendulum-v1") == GymTask("gym:Pendulum-v1", None, "Pendulum-v1")
    assert parse_gym_task("gym:a.b:ns/Env-v0") == GymTask("gym:a.b:ns/Env-v0", "a.b", "ns/Env-v0")
    for bad in ("gym:", "gym:a:b:c", "gym::Env-v0", "Pendulum-v1"):
        with pytest.raises(ValueError):
            parse_gym_task(bad)
    with pytest.raises(KeyError, match="close registered ids.*Pendulum-v1"):
        get_config("gym:Pendulum-v9,sac")
    with pytest.raises(KeyError, match="cannot import module 'no_such_pkg'"):
        get_config("gym:no_such_pkg:Env-v0,sac")
    with pytest.raises(KeyError, match="did not register it"):
        get_config("gym:gym_user_env:Nope-v0,sac")
    with pytest.raises(ValueError, match="Discrete action space"):
        make_env("gym:gym_user_env:SerlTestDiscrete-v0")
    with pytest.raises(ValueError, match="without max_episode_steps"):
        make_env("gym:gym_user_env:SerlTestNoLimit-v0")
    env = make_env("gym:gym_user_env:SerlTestNoLimit-v0", max_episode_steps=3)
    env.reset(seed=0)
    assert [env.step(np.zeros(2))[3] for _ in range(3)] == [False, False, True]
    with pytest.raises(ValueError, match="simulated operator needs a Meta-World task"):
        make_env(REACH, operator={"enabled": True})
    with pytest.raises(ValueError, match="image_obs"):
        make_env(REACH, image_obs=True)


def test_config_of_a_gym_task():
    config = get_config("gym:Pendulum-v1,hil_serl")
    assert config.task == "gym:Pendulum-v1"
    assert config.operator.enabled is False and config.demos.num_demos == 0
    assert config.env.action_repeat == 1 and config.env.reward_type == "env"
    assert config.agent.critic_target_clip is None and config.agent.discount == 0.99
    # Meta-World tasks keep theirs
    mw = get_config("pick-place,hil_serl")
    assert mw.operator.enabled is True and mw.demos.num_demos == 20 and mw.env.action_repeat == 4


def test_pendulum_spaces_action_rescaling_and_time_limit():
    env = make_env("gym:Pendulum-v1")
    assert set(env.observation_space.spaces) == {"state"}
    assert env.observation_space["state"].shape == (3,) and env.action_space.shape == (1,)
    assert env.action_space.low[0] == -1.0 and env.action_space.high[0] == 1.0
    base = env.env  # EpisodeStatistics(GymTaskEnv)
    np.testing.assert_allclose(base.to_env_action([1.0]), [2.0])
    np.testing.assert_allclose(base.to_env_action([-0.5]), [-1.0])
    np.testing.assert_allclose(base.to_env_action([7.0]), [2.0])  # clipped first
    obs, info = env.reset(seed=3)
    assert obs["state"].dtype == np.float32 and info["success"] is False
    steps, truncated = 0, False
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(np.array([0.3], np.float32))
        steps += 1
        assert not terminated and reward <= 0.0
    assert steps == 200 and info["episode"]["length"] == 200
    # the same seed gives the same start
    again, _ = make_env("gym:Pendulum-v1").reset(seed=3)
    first, _ = make_env("gym:Pendulum-v1").reset(seed=3)
    np.testing.assert_array_equal(again["state"], first["state"])


def test_user_env_dict_observation_success_and_sparse_reward():
    env = make_env(REACH)
    obs, _ = env.reset(seed=0)
    inner = env.unwrapped
    # Dict(goal, pos) flattened in the space's (sorted) key order
    np.testing.assert_allclose(obs["state"], np.concatenate([inner._goal, inner._pos]))
    direction = inner._goal - inner._pos
    for _ in range(gym_user_env.EPISODE_STEPS):
        step = np.clip(direction / 0.05, -2, 2) / 2.0  # [-1, 1] -> env units [-2, 2]
        obs, reward, terminated, truncated, info = env.step(step)
        direction = inner._goal - inner._pos
        if info["success"]:
            break
    assert info["success"] is True and reward > -0.1
    sparse = make_env(REACH, reward_type="sparse")
    sparse.reset(seed=0)
    inner = sparse.unwrapped
    rewards = []
    terminated = truncated = False
    while not (terminated or truncated):
        step = np.clip((inner._goal - inner._pos) / 0.05, -2, 2) / 2.0
        _, reward, terminated, truncated, info = sparse.step(step)
        rewards.append(reward)
    assert terminated and rewards[-1] == 1.0 and sum(rewards) == 1.0


def test_images_pass_through_under_their_keys_and_the_encoder_must_name_them():
    env = make_env("gym:gym_user_env:SerlTestImages-v0")
    assert set(env.observation_space.spaces) == {"state", "pixels_front", "pixels_wrist"}
    assert env.observation_space["pixels_front"].dtype == np.uint8
    obs, _ = env.reset(seed=0)
    assert obs["pixels_front"][0, 0, 0] == 10 and obs["pixels_wrist"][0, 0, 0] == 245
    np.testing.assert_allclose(obs["state"], np.full(3, 10 / 255.0), rtol=1e-6)
    config = get_config("gym:gym_user_env:SerlTestImages-v0,sac")
    with pytest.raises(ValueError, match="pixels_front"):
        common.create_agent(config, common.observation_spec(env), 3)


def test_lerobot_style_intervention_keys_are_read():
    env = make_env(REACH)
    base = env.env
    info = base._info({"is_intervention": True, "action_intervention": np.array([2.0, 0.0])})
    np.testing.assert_allclose(info["intervene_action"], [1.0, 0.0])
    assert "intervene_action" not in base._info({"is_intervention": False, "action_intervention": [0, 0]})
    np.testing.assert_allclose(base._info({"intervene_action": [-2.0, 5.0]})["intervene_action"], [-1.0, 1.0])


class _FakeClient:
    """Stands in for TrainerClient: drains the actor's data stores into lists."""

    def __init__(self, stores):
        self.stores = stores
        self.received = {name: [] for name in stores}

    def recv_network_callback(self, fn):
        pass

    def update(self):
        for name, store in self.stores.items():
            items = store.pending_items()
            self.received[name].extend(item for _, item in items)
            if items:
                store.acknowledge(items[-1][0])
        return True

    def request(self, request_type, payload):
        return {"ok": True}

    def stop(self):
        pass


def test_env_interventions_from_info_are_stored_as_human_steps(tmp_path):
    config = get_config(f"{REACH_INTERVENE},hil_serl")
    config.run_root = str(tmp_path)
    config.agent.hidden_dims = (16, 16)
    config.actor.max_env_steps = 3 * gym_user_env.EPISODE_STEPS
    config.actor.eval_period = 0
    config.actor.eval_episodes = 1
    config.actor.steps_per_update = 0.0
    config.actor.send_period = 10
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    clients = []

    def make_client(stores):
        clients.append(_FakeClient(stores))
        return clients[-1]

    run_actor(config, make_client=make_client)
    online = clients[0].received[DATA_STORE]
    assert len(online) == config.actor.max_env_steps
    t = np.arange(len(online)) % gym_user_env.EPISODE_STEPS + 1
    expected = t % gym_user_env.INTERVENE_EVERY == 0
    flags = np.array([tr["interventions"] for tr in online])
    np.testing.assert_array_equal(flags, expected)
    np.testing.assert_array_equal([tr["action_source"] for tr in online], np.where(expected, HUMAN, POLICY))
    for tr in np.array(online)[expected]:
        np.testing.assert_allclose(tr["actions"], [1.0, -0.5])  # INTERVENE_ACTION mapped to [-1, 1]
    assert len(clients[0].received[INTERVENTION_STORE]) == int(expected.sum())
    run_dir = common.run_dir_for(config)
    summary = json.loads(open(os.path.join(run_dir, "summary.json")).read())
    assert summary["human_steps"] == int(expected.sum()) and summary["task"] == REACH_INTERVENE
    assert summary["intervention_rate"] == pytest.approx(expected.mean())


def _run_launchers(tmp_path, spec, max_env_steps, training_starts, steps_per_update=0):
    """learner.sh + actor.sh as two processes with tiny budgets; only PYTHONPATH names the user
    package (tests/). Returns (summary.json, learner_summary.json)."""
    flags = tiny_flags(tmp_path, find_free_ports(2), max_env_steps, demos=False, hidden_dims="(16, 16)",
                       batch_size=16, training_starts=training_starts, steps_per_update=steps_per_update)
    # learner_timeout_s: on a loaded machine the learner's first compiles can keep its messages
    # away for more than the default 10 s, and the actor would then run unthrottled ("learner away").
    flags += ["--config.actor.throttle_slack=20", "--config.actor.learner_timeout_s=120",
              "--config.logging.tensorboard=False"]
    env = cpu_env(PYTHONPATH=os.pathsep.join(
        [TESTS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    run_learner_and_actor(spec, flags, env=env, actor_timeout=240)
    _, summary, learner_summary = read_run(tmp_path, spec)
    return summary, learner_summary


@pytest.mark.timeout(300)
def test_user_package_env_trains_through_learner_and_actor_launchers(tmp_path):
    """A user's package env (gym:MODULE:ENV_ID), hil_serl with no demos and the env's own
    interventions, through learner.sh + actor.sh: the interventions fill the demo buffer."""
    summary, learner_summary = _run_launchers(tmp_path, f"{REACH_INTERVENE},hil_serl", 160, 60)
    assert summary["env_steps"] == 160 and summary["delivered_to_learner"] is True
    assert summary["human_steps"] == 40 and summary["eval_success_rate"] is not None
    assert learner_summary["learner_steps"] > 0
    assert learner_summary["demo_size"] == 40  # the env's interventions, no demos


@pytest.mark.timeout(300)
def test_pendulum_worked_example_trains_through_learner_and_actor_launchers(tmp_path):
    """The README's worked example with tiny budgets: gym:Pendulum-v1,sac (one 200-step episode),
    the actor kept within one env step per learner step (+ 20) of the learner, so it trains."""
    summary, learner_summary = _run_launchers(tmp_path, "gym:Pendulum-v1,sac", 200, 100, steps_per_update=1)
    assert summary["env_steps"] == 200 and summary["episodes"] == 1 and summary["human_steps"] == 0
    assert summary["eval_history"][-1]["return"] < 0.0  # Pendulum's own reward, not clipped to [0, 1]
    assert learner_summary["learner_steps"] >= 60 and learner_summary["demo_size"] == 0


def test_collect_demos_refuses_a_gym_task_with_the_way_to_bring_own_demos(tmp_path):
    proc = subprocess.run(
        [sys.executable, "launchers/collect_demos.py", "--task=gym:Pendulum-v1",
         f"--out={tmp_path}/demos"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no scripted expert" in proc.stderr and "--config.demos.path" in proc.stderr
    assert not os.path.exists(tmp_path / "demos")
