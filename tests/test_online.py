"""The UniIntervene learner side (uniintervene_jax/online.py) and its wiring into the actor:
episode assembly, the memory on the wire, the online training schedule and readiness,
save/restore, the versioned learner -> actor push through ``run_actor``, and the
``hil_serl+uniintervene`` configs."""

import copy
import json
import os
import time

import numpy as np
import pytest

from configs.algorithms import ALGORITHMS
from configs.train import get_config
from serl_ext.data.episodes import EpisodeAssembler
from serl_ext.loop.gate import HUMAN, POLICY, RECOVERY
from serl_ext.loop.param_message import build_message
from test_loop import FakeClient, small_actor_settings  # the actor tests' TrainerClient stand-in, tiny actor
from uniintervene_jax.message import memory_from_payload, memory_to_payload
from uniintervene_jax.online import OnlineUniIntervene
from uniintervene_jax.online_config import check_online_config, get_online_config
from uniintervene_jax.recovery.dataset import recovery_batch_indices, retrieved_goals

A = 4
SPEC = {"state": ((39,), np.dtype(np.float32))}


def shrink_uniintervene(u):
    """Tiny UniIntervene networks (test speed)."""
    u.value.hidden_dims = (16, 16)
    u.value.latent_dim = 8
    u.value.head_hidden_dims = (16,)
    u.value.encoder.latent_dim = 16
    u.value.instruction_dim = 8
    u.intervention.model.hidden_dims = (16, 16)
    u.intervention.model.head_hidden_dims = (16,)
    u.intervention.model.history_hidden_dims = (8,)
    u.intervention.model.history_dim = 8
    u.intervention.model.instr_dim = 8
    u.recovery.cond_hidden_dims = (16,)
    u.recovery.chunk_hidden_dims = (16,)
    u.recovery.instruction_dim = 8
    u.recovery.encoder.latent_dim = 16
    u.batch_size = 16
    u.recovery_batch_size = 8


def _config(algorithm="hil_serl+uniintervene"):
    config = get_config(f"pick-place,{algorithm}")
    if "uniintervene" not in config:  # plain algorithms carry no method section
        return config
    shrink_uniintervene(config.uniintervene)
    u = config.uniintervene
    # 300 (not 3): the memory is mined on the raw proxy value (issue 13), so the demos' value
    # curves must really reach the goal value 0.75; the cost is the compile, not the steps.
    u.pretrain_steps = 300
    u.refresh_episodes = 2
    u.train_period = 2
    u.recovery_updates = 3
    u.min_episodes = 2
    u.min_updates = 3
    return config


def _episode(rng, T, success, sources=None, start=0.0):
    """Synthetic episode: the 39-D state moves along a line (progress 0 -> 1 when successful,
    0 -> 0.3 when not); success = terminal with reward 1, failure = truncated."""
    prog = np.linspace(start, 1.0 if success else 0.3, T + 1)
    state = (np.tile(prog[:, None], (1, 39)) + rng.normal(0, 0.01, (T + 1, 39))).astype(np.float32)
    rewards = np.zeros(T, np.float32)
    terminals = np.zeros(T, bool)
    truncations = np.zeros(T, bool)
    if success:
        rewards[-1] = 1.0
        terminals[-1] = True
    else:
        truncations[-1] = True
    sources = np.zeros(T, np.int8) if sources is None else np.asarray(sources, np.int8)
    return {"observations": {"state": state}, "actions": rng.uniform(-1, 1, (T, A)).astype(np.float32),
            "rewards": rewards, "terminals": terminals, "truncations": truncations,
            "interventions": sources == HUMAN, "action_source": sources,
            "metadata": {"task": "pick-place", "success": success}}


def _transitions(ep):
    """The actor's transitions for an episode (serl_ext/loop/actor.py format)."""
    out = []
    T = len(ep["actions"])
    for t in range(T):
        out.append({
            "observations": {k: v[t] for k, v in ep["observations"].items()},
            "actions": ep["actions"][t],
            "next_observations": {k: v[t + 1] for k, v in ep["observations"].items()},
            "rewards": np.float32(ep["rewards"][t]),
            "masks": np.float32(0.0 if ep["terminals"][t] else 1.0),
            "dones": bool(ep["terminals"][t] or ep["truncations"][t]),
            "interventions": bool(ep["action_source"][t] == HUMAN),
            "action_source": np.int8(ep["action_source"][t]),
        })
    return out


# ------------------------------------------------------------------ episode assembly
def test_episode_assembler_cuts_the_stream_into_episodes():
    rng = np.random.default_rng(0)
    ep_a = _episode(rng, 3, True, sources=[POLICY, HUMAN, RECOVERY])
    ep_b = _episode(rng, 2, False)
    ep_c = _episode(rng, 2, False, sources=[RECOVERY, POLICY])
    ep_c["rewards"][-1] = 1.0  # truncated but rewarded: counts as a success
    asm = EpisodeAssembler("pick-place")
    for tr in _transitions(ep_a) + _transitions(ep_b) + _transitions(ep_c)[:1]:
        asm.insert(tr)
    got = asm.pop_finished()
    assert len(got) == 2 and asm.num_finished == 2
    a, b = got
    for ep, src in ((a, ep_a), (b, ep_b)):
        T = len(src["actions"])
        assert ep["observations"]["state"].shape == (T + 1, 39)
        np.testing.assert_array_equal(ep["observations"]["state"], src["observations"]["state"])
        np.testing.assert_array_equal(ep["actions"], src["actions"])
        np.testing.assert_array_equal(ep["rewards"], src["rewards"])
        np.testing.assert_array_equal(ep["action_source"], src["action_source"])
        assert ep["action_source"].dtype == np.int8
    np.testing.assert_array_equal(a["terminals"], [False, False, True])
    np.testing.assert_array_equal(a["truncations"], [False, False, False])
    np.testing.assert_array_equal(a["interventions"], [False, True, False])
    assert a["metadata"] == {"task": "pick-place", "success": True, "source": "online", "episode_id": 1,
                             "first_intervention_step": 1, "recovered": True}
    np.testing.assert_array_equal(b["terminals"], [False, False])
    np.testing.assert_array_equal(b["truncations"], [False, True])
    assert b["metadata"]["success"] is False and b["metadata"]["first_intervention_step"] is None
    assert b["metadata"]["recovered"] is False and b["metadata"]["episode_id"] == 2
    assert asm.pop_finished() == []
    # The open episode (ep_c) finishes with its second transition.
    asm.insert(_transitions(ep_c)[1])
    (c,) = asm.pop_finished()
    assert c["metadata"]["success"] is True and c["metadata"]["recovered"] is True
    assert c["metadata"]["first_intervention_step"] is None
    assert asm.num_dropped_partial == 0


def test_episode_assembler_drops_a_partial_episode():
    rng = np.random.default_rng(1)
    ep_c = _episode(rng, 4, True)
    ep_d = _episode(rng, 2, False, start=0.5)  # its first observation does not continue ep_c
    asm = EpisodeAssembler("pick-place")
    for tr in _transitions(ep_c)[:2] + _transitions(ep_d):
        asm.insert(tr)
    (d,) = asm.pop_finished()
    assert asm.num_dropped_partial == 1 and asm.num_finished == 1
    assert d["observations"]["state"].shape == (3, 39)
    np.testing.assert_array_equal(d["observations"]["state"], ep_d["observations"]["state"])


# ------------------------------------------------------------------ memory on the wire
def _items(rng, n=8, D=6):
    from uniintervene_jax.memory.mining import RecoveryItems

    return RecoveryItems(
        tasks=["pick-place"] * (n - 2) + ["assembly"] * 2, episode_id=np.arange(n, dtype=np.int64) % 3,
        start=np.arange(n, dtype=np.int64), end=np.arange(n, dtype=np.int64) + 8,
        start_progress=np.linspace(0, 1, n).astype(np.float32), bin=np.arange(n, dtype=np.int32) % 4,
        key_observations={"state": rng.normal(size=(n, 39)).astype(np.float32)},
        goal_observations={"state": rng.normal(size=(n, 39)).astype(np.float32)},
        key_embedding=rng.normal(size=(n, D)).astype(np.float32),
        goal_embedding=rng.normal(size=(n, D)).astype(np.float32),
        goal_state=rng.normal(size=(n, 39)).astype(np.float32),
        start_value=np.full(n, 0.2, np.float32), goal_value=np.linspace(0.3, 1.0, n).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, 8, A)).astype(np.float32))


def test_memory_payload_round_trip_through_the_codec():
    from serl_ext.transport.codec import decode, encode
    from uniintervene_jax.memory.memory import RecoveryMemory

    rng = np.random.default_rng(2)
    items = _items(rng)
    original = RecoveryMemory(items=items)
    restored = memory_from_payload(decode(encode(memory_to_payload(items))))
    assert isinstance(restored, RecoveryMemory) and len(restored) == len(original) == 8
    queries = [(items.key_embedding[0], "pick-place", 0.1, None),
               (items.key_embedding[3] + 0.05, "pick-place", 0.5, None),
               (rng.normal(size=6), "pick-place", 0.0, 0),
               (items.key_embedding[7], "assembly", 0.2, None),
               (rng.normal(size=6), "pick-place", 0.99, None),  # nothing above 0.99 among pick-place goals
               (rng.normal(size=6), "peg-insert-side", 0.0, None)]  # unknown task
    found_any = 0
    for q, task, value, excl in queries:
        a = original.retrieve(q, task, value, exclude_episode=excl)
        b = restored.retrieve(q, task, value, exclude_episode=excl)
        assert (a is None) == (b is None)
        if a is None:
            continue
        found_any += 1
        assert (a.index, a.task, a.episode_id, a.start, a.end) == (b.index, b.task, b.episode_id, b.start, b.end)
        assert a.similarity == pytest.approx(b.similarity, abs=1e-6)
        np.testing.assert_array_equal(a.goal_observations["state"], b.goal_observations["state"])
        np.testing.assert_array_equal(a.actions, b.actions)
    assert found_any >= 3
    assert original.retrieve(rng.normal(size=6), "pick-place", 0.99) is None
    assert memory_to_payload(None) is None and memory_from_payload(None) is None


def test_memory_from_payload_rejects_missing_fields():
    payload = memory_to_payload(_items(np.random.default_rng(3)))
    with pytest.raises(TypeError):
        memory_from_payload([payload])
    for field in ("tasks", "key_embedding", "goal_observations"):
        bad = dict(payload)
        del bad[field]
        with pytest.raises(ValueError):
            memory_from_payload(bad)
    bad = dict(payload, goal_value=payload["goal_value"][:-1])  # wrong length
    with pytest.raises(ValueError):
        memory_from_payload(bad)


@pytest.mark.parametrize("field,value", [("key_observations", [1, 2]), ("goal_observations", "state"),
                                         ("key_observations", {"state": 1.0})])
def test_memory_from_payload_rejects_malformed_containers(field, value):
    # The actor catches ValueError/TypeError/KeyError from a parameter message; anything else
    # (AttributeError, IndexError) would end the actor loop.
    payload = dict(memory_to_payload(_items(np.random.default_rng(4))), **{field: value})
    with pytest.raises((ValueError, TypeError)):
        memory_from_payload(payload)


# ------------------------------------------------------------------ the learner side
@pytest.fixture(scope="module")
def demos():
    rng = np.random.default_rng(5)
    return [_episode(rng, 30, True) for _ in range(3)]


@pytest.fixture(scope="module")
def learner(demos):
    """An OnlineUniIntervene; test_learner_schedule_and_readiness takes it through pretraining
    and a few learner steps, the later tests reuse it (and train it themselves if run alone)."""
    return OnlineUniIntervene(_config(), SPEC, A, demos)


def test_learner_schedule_and_readiness(learner):
    ui = learner
    rng = np.random.default_rng(6)
    c = ui.c
    assert (c.pretrain_steps, c.train_period, c.refresh_episodes, c.min_episodes, c.min_updates) == (300, 2, 2, 2, 3)
    assert ui.version == 0 and not ui.ready and ui.memory_items is None
    ui.pretrain()
    # 300 value + 300 recovery updates on the demos, datasets built before and after.
    assert dict(ui.counters) == {"value_updates": 300, "recovery_updates": 300, "refreshes": 2}
    assert ui.version == 1
    assert ui.memory_items is not None and len(ui.memory_items) > 0  # mined from the demos
    assert not ui.ready  # no online episode yet

    def counts():
        return (ui.counters["value_updates"], ui.counters["intervention_updates"],
                ui.counters["recovery_updates"], ui.counters["refreshes"], ui.episodes_seen, ui.version)

    ui.step(1)  # odd step: no update
    assert counts() == (300, 0, 300, 2, 0, 1)
    ui.step(2)  # train_period 2: one update of the value and intervention models, 3 recovery updates
    assert counts() == (301, 1, 303, 2, 0, 1)
    for tr in _transitions(_episode(rng, 20, True, sources=[POLICY] * 5 + [RECOVERY] * 8 + [POLICY] * 7)):
        ui.insert(tr)
    ui.step(3)  # one finished episode: below refresh_episodes, no refresh yet
    assert counts() == (301, 1, 303, 2, 1, 1)
    assert not ui.ready
    for tr in _transitions(_episode(rng, 20, False, sources=[POLICY] * 10 + [HUMAN] * 10)):
        ui.insert(tr)
    ui.step(4)  # second episode: refresh (relabel + rebuild, version bump), then updates
    assert counts() == (302, 2, 306, 3, 2, 2)
    assert ui.counters["online_successes"] == 1 and len(ui.online) == 2
    assert not ui.ready  # 2 episodes but only 2 < min_updates intervention updates
    ui.step(5)
    assert not ui.ready
    ui.step(6)
    assert ui.counters["intervention_updates"] == 3 and ui.ready  # flips exactly at min_updates
    payload = ui.payload()
    assert payload["version"] == 2 and payload["ready"] is True and payload["tau"] == c.trigger.tau_int == 0.5
    assert payload["memory"] is not None and len(payload["memory"]["tasks"]) == len(ui.memory_items)

    # min_episodes is a condition on its own.
    c.min_episodes = 3
    assert not ui.ready
    for tr in _transitions(_episode(rng, 10, False)):
        ui.insert(tr)
    ui.step(7)
    assert ui.episodes_seen == 3 and ui.ready and ui.version == 2  # no refresh (1 < 2 new episodes)
    for tr in _transitions(_episode(rng, 10, True)):
        ui.insert(tr)
    ui.step(8)
    assert ui.version == 3 and ui.counters["refreshes"] == 4
    c.min_episodes = 2

    # The memory is a condition too, unless the recovery goal is not retrieved from it.
    items, ui.memory_items = ui.memory_items, None
    try:
        assert not ui.ready
        c.use_memory_goal = False
        assert ui.ready
    finally:
        ui.memory_items = items
        c.use_memory_goal = True
    assert ui.ready
    stats = ui.stats()
    assert stats["uniintervene/ready"] == 1.0 and stats["uniintervene/version"] == 3.0
    assert stats["uniintervene/intervention_updates"] == 4.0
    assert np.isfinite(stats["uniintervene/intervention_loss"])


def test_learner_save_and_restore(learner, tmp_path):
    ui = learner
    if not ui.counters["intervention_updates"]:  # run alone: bring it to a trained state first
        ui.pretrain()
        rng = np.random.default_rng(9)
        for ep in (_episode(rng, 20, True, sources=[POLICY] * 5 + [HUMAN] * 15), _episode(rng, 20, False)):
            for tr in _transitions(ep):
                ui.insert(tr)
        for step in range(1, 7):
            ui.step(step)
    assert ui.counters["intervention_updates"] > 0 and ui.memory_items is not None
    ui.save(str(tmp_path / "uniintervene"))
    state = json.loads((tmp_path / "uniintervene" / "state.json").read_text())
    assert state["version"] == ui.version and state["episodes_seen"] == ui.episodes_seen

    fresh = OnlineUniIntervene(_config(), SPEC, A)
    assert fresh.restore(str(tmp_path / "nothing_here")) is False
    assert fresh.restore(str(tmp_path / "uniintervene")) is True
    assert fresh.version == ui.version + 1  # a restored model is announced as new
    assert dict(fresh.counters) == dict(ui.counters)
    assert fresh.episodes_seen == ui.episodes_seen and fresh.tau == ui.tau
    assert len(fresh.memory_items) == len(ui.memory_items)
    np.testing.assert_array_equal(fresh.memory_items.key_embedding, ui.memory_items.key_embedding)
    assert fresh.ready == ui.ready is True
    obs = {"state": np.random.default_rng(7).normal(size=(5, 39)).astype(np.float32)}
    np.testing.assert_array_equal(fresh.value.values(obs, fresh.instr), ui.value.values(obs, ui.instr))
    hist = np.tile(np.linspace(0.1, 0.9, 9, dtype=np.float32), (5, 1))
    actions = np.zeros((5, A), np.float32)
    np.testing.assert_array_equal(fresh.intervention.predict(obs, fresh.instr, actions, hist)["trigger_prob"],
                                  ui.intervention.predict(obs, ui.instr, actions, hist)["trigger_prob"])
    one = {"state": obs["state"][0]}
    np.testing.assert_array_equal(fresh.recovery.predict_chunk(one, one, fresh.instr),
                                  ui.recovery.predict_chunk(one, one, ui.instr))
    # The kept online episodes come back (in order) and the datasets are rebuilt from them.
    assert len(ui.online) >= 2 and len(fresh.online) == len(ui.online)
    for a, b in zip(fresh.online, ui.online):
        np.testing.assert_array_equal(a["observations"]["state"], b["observations"]["state"])
        np.testing.assert_array_equal(a["action_source"], b["action_source"])
        assert a["metadata"]["online_index"] == b["metadata"]["online_index"]
        assert a["metadata"]["success"] == b["metadata"]["success"]
    assert fresh._intervention_data is None
    refreshes = fresh.counters["refreshes"]
    fresh.step(1)
    assert fresh.counters["refreshes"] == refreshes + 1 and fresh._intervention_data is not None
    # Saving again writes only what changed: an episode that left the kept window is removed.
    ep_dir = tmp_path / "uniintervene" / "episodes"
    names = sorted(os.listdir(ep_dir))
    assert len(names) == len(ui.online)
    dropped = ui.online.popleft()
    try:
        ui.save(str(tmp_path / "uniintervene"))
        assert sorted(os.listdir(ep_dir)) == names[1:]
        assert names[0] == f"online_{dropped['metadata']['online_index']:07d}.npz"
    finally:
        ui.online.appendleft(dropped)


def test_no_demos_no_pretraining_and_first_episode_builds_datasets():
    config = _config()
    config.uniintervene.refresh_episodes = 5
    config.uniintervene.train_period = 1
    ui = OnlineUniIntervene(config, SPEC, A)
    assert ui.pretrain() == {} and ui.version == 0
    ui.step(1)  # nothing to train on yet
    assert ui.counters["value_updates"] == ui.counters["intervention_updates"] == 0
    for tr in _transitions(_episode(np.random.default_rng(8), 12, False)):
        ui.insert(tr)
    ui.step(2)  # the first episode builds the datasets at once (not after refresh_episodes)
    assert ui.version == 1 and ui.counters["refreshes"] == 1
    assert ui.counters["value_updates"] == ui.counters["intervention_updates"] == 1
    assert ui.memory_items is None  # no successful episode to mine
    assert not ui.ready


def test_warmup_step_trains_every_call_and_folds_in_episodes():
    """While the agent waits for training_starts, warmup_step() trains all three models on every
    call (step() only every train_period-th learner step) and folds in finished episodes, so
    the gate can get ready on the first online episodes."""
    config = _config()
    assert config.uniintervene.train_during_warmup is True  # the default
    config.uniintervene.train_period = 4
    config.uniintervene.recovery_updates = 2
    rng = np.random.default_rng(11)
    ui = OnlineUniIntervene(config, SPEC, A, [_episode(rng, 30, True)])
    ui.pretrain()
    base = (ui.counters["value_updates"], ui.counters["recovery_updates"])
    ui.step(1)  # not a multiple of train_period: nothing trains
    assert (ui.counters["value_updates"], ui.counters["recovery_updates"]) == base
    ui.warmup_step()  # no online episode yet: value and recovery train on the demos
    assert ui.counters["value_updates"] == base[0] + 1 and ui.counters["recovery_updates"] == base[1] + 2
    assert ui.counters["intervention_updates"] == 1  # its dataset holds the demo's windows
    assert not ui.ready  # no online episode seen
    for ep in (_episode(rng, 20, False, sources=[POLICY] * 8 + [HUMAN] * 12), _episode(rng, 20, True)):
        for tr in _transitions(ep):
            ui.insert(tr)
    for _ in range(config.uniintervene.min_updates):
        ui.warmup_step()
    assert ui.episodes_seen == 2 and ui.counters["intervention_updates"] == 1 + config.uniintervene.min_updates
    assert ui.counters["value_updates"] == base[0] + 1 + config.uniintervene.min_updates
    assert ui.ready  # min_episodes 2, min_updates 3, memory mined from the demo


# ------------------------------------------------------------------ learner -> actor push
class PushingClient(FakeClient):
    """test_loop's FakeClient (drains the actor's stores) that also, at its n-th ``update()``
    call, delivers ``messages[n]`` on the parameter broadcast."""

    def __init__(self, stores, messages):
        super().__init__(stores)
        self.messages = messages
        self.calls = 0

    def update(self):
        self.calls += 1
        if self.calls in self.messages:
            self.callback(self.messages[self.calls])
        return super().update()


def _nan_first_leaf(tree):
    node = tree
    while True:
        key = sorted(node)[0]
        if isinstance(node[key], dict):
            node = node[key]
            continue
        leaf = np.array(node[key])
        leaf.flat[0] = np.nan
        node[key] = leaf
        return


def test_actor_loads_versioned_uniintervene_payload_and_rejects_a_corrupted_one(learner, tmp_path):
    from serl_ext.loop import common
    from serl_ext.loop.actor import DATA_STORE, INTERVENTION_STORE, run_actor

    config = small_actor_settings(_config(), tmp_path, 150)
    # Make the gate fire whenever it evaluates (tau 0) and condition the recovery policy on the
    # current observation, so recovery steps happen with untrained networks; recovery
    # transitions also go to the intervention store.
    config.uniintervene.use_memory_goal = False
    config.uniintervene.recovery_buffer = "both"
    config.uniintervene.timeline_every = 1

    agent = common.create_agent(config, SPEC, A)
    params = common.to_numpy_tree(agent.policy_params())
    good = learner.payload()
    good.update(version=5, ready=True, tau=0.0)
    bad = copy.deepcopy(good)
    bad["version"] = 6
    _nan_first_leaf(bad["value"])
    messages = {
        1: build_message(1, 0, params, {"uniintervene": good}),  # at env step 10
        2: build_message(2, 0, params, {"uniintervene": bad}),  # at env step 20
    }
    clients = []

    def make_client(stores):
        clients.append(PushingClient(stores, messages))
        return clients[0]

    summary = run_actor(config, make_client=make_client)
    run_dir = common.run_dir_for(config)
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics", "actor.jsonl"))]
    episode_rows = [r for r in rows if "rollout/param_errors" in r]
    assert episode_rows and episode_rows[-1]["step"] > 20
    last = episode_rows[-1]
    assert last["rollout/param_errors"] == 1.0  # the NaN payload was rejected ...
    assert last["rollout/param_version"] == 1.0  # ... with its whole message
    assert last["gate/version"] == 5.0 and last["gate/ready"] == 1.0 and last["gate/tau"] == 0.0

    # The gate was live from step 11 on: it scored, triggered and ran recovery chunks.
    for key in ("gate_triggers", "gate_recovery_steps", "gate_aborted_chunks", "gate_no_goal", "gate_decisions",
                "gate_latency_ms_p50", "gate_latency_ms_p99"):
        assert key in summary, key
    assert summary["gate_decisions"] > 0 and summary["gate_triggers"] > 0
    assert summary["recovery_steps"] > 0
    online = clients[0].received[DATA_STORE]
    intervention = clients[0].received[INTERVENTION_STORE]
    sources = [int(t["action_source"]) for t in online]
    assert len(online) == 150
    assert RECOVERY not in sources[:10]  # not ready before the first payload
    assert sources.count(RECOVERY) == summary["recovery_steps"]
    # recovery_buffer "both": human and recovery transitions (and only those) also go to the
    # intervention store.
    assert len(intervention) == sources.count(RECOVERY) + sources.count(HUMAN)
    assert all(int(t["action_source"]) in (RECOVERY, HUMAN) for t in intervention)

    timeline = [json.loads(line) for line in open(os.path.join(run_dir, "gate_timeline.jsonl"))]
    assert len(timeline) >= 1
    first = timeline[0]
    assert first["episode"] == 0 and len(first["value"]) == len(first["risk"]) == len(first["source"])
    assert first["source"] == sources[:len(first["source"])]
    assert first["value"][:10] == [None] * 10 and all(v is not None for v in first["value"][10:])
    # Ready from step 10: no decision (risk None, no trigger) before K = 8 real history steps.
    K = config.uniintervene.intervention.history_len
    assert first["risk"][10:10 + K] == [None] * K and sum(first["trigger"][:10 + K]) == 0
    assert sum(sum(r["trigger"]) for r in timeline) >= 1


@pytest.mark.parametrize("ready_at_call", [6, None])
def test_actor_waits_once_for_a_ready_gate(learner, tmp_path, ready_at_call):
    """After min_episodes episodes the actor waits at the episode boundary for a ready payload
    (ready_at_call: the client delivers it at its 6th update() call, i.e. during the wait) or,
    if none comes, for wait_for_ready_s, then goes on without the gate; it never waits twice."""
    from serl_ext.loop import common
    from serl_ext.loop.actor import DATA_STORE, run_actor

    config = small_actor_settings(_config(), tmp_path, 60)
    config.operator.enabled = False
    config.env.max_episode_steps = 15
    config.uniintervene.min_episodes = 1
    config.uniintervene.use_memory_goal = False
    config.uniintervene.wait_for_ready_s = 30.0 if ready_at_call else 0.5
    params = common.to_numpy_tree(common.create_agent(config, SPEC, A).policy_params())
    not_ready = learner.payload()
    not_ready.update(version=3, ready=False, tau=0.0)
    ready = dict(not_ready, version=4, ready=True)
    messages = {1: build_message(1, 0, params, {"uniintervene": not_ready})}  # env step 10
    if ready_at_call:
        messages[ready_at_call] = build_message(2, 0, params, {"uniintervene": ready})
    clients = []

    def make_client(stores):
        clients.append(PushingClient(stores, messages))
        return clients[0]

    t0 = time.time()
    summary = run_actor(config, make_client=make_client)
    state = json.loads(open(os.path.join(common.run_dir_for(config), "actor_state.json")).read())
    sources = [int(t["action_source"]) for t in clients[0].received[DATA_STORE]]
    assert len(sources) == 60 and RECOVERY not in sources[:15]  # first episode: gate not ready
    if ready_at_call:
        # calls 2-5 during the wait, the 6th delivers the ready payload: the second episode
        # starts with a live gate; tau 0 fires at its first decision, after K = 8 real steps.
        K = config.uniintervene.intervention.history_len
        assert state["gate_ready_wait_s"] < 10.0
        assert RECOVERY not in sources[15:15 + K]
        assert sources[15 + K] == RECOVERY and summary["recovery_steps"] > 0
    else:
        assert 0.5 <= state["gate_ready_wait_s"] < 5.0 and summary["recovery_steps"] == 0
        assert time.time() - t0 < 60.0  # waited once (0.5 s), not at every later episode


class _AlwaysTrigger:
    """GateModels that trigger at every evaluation and return a constant 3-step chunk."""

    ready, tau, version = True, 0.5, 1

    def value(self, observation):
        return 0.5

    def score(self, observation, policy_action, value_history):
        return 0.9, True

    def goal(self, observation, value):
        return observation

    def chunk(self, observation, goal):
        return np.full((3, A), 0.25, np.float32)


def test_actor_summary_gate_counts_cover_the_whole_run(tmp_path):
    # No human (operator off), 15-step episodes, 40 env steps: the run ends 10 steps into the
    # third episode. summary.json's gate_* totals should count every step of the run, like its
    # recovery_steps does.
    from serl_ext.loop.actor import DATA_STORE, run_actor
    from uniintervene_jax.gate import UniInterveneGate

    config = small_actor_settings(_config("hil_serl"), tmp_path, 40)
    config.operator.enabled = False
    config.env.max_episode_steps = 15
    gate = UniInterveneGate(_AlwaysTrigger(), history_len=2, cooldown_steps=1, max_chunks=1,
                            timeline_path=str(tmp_path / "tl.jsonl"), timeline_every=1)
    clients = []

    def make_client(stores):
        clients.append(PushingClient(stores, {}))
        return clients[0]

    summary = run_actor(config, gate=gate, make_client=make_client)
    sources = [int(t["action_source"]) for t in clients[0].received[DATA_STORE]]
    assert len(sources) == 40 and summary["episodes"] == 2
    # Per episode (fresh gate state): no decision at steps 0, 1 (K = 2 real history steps
    # first), chunk at steps 2-4, forced stop at 5, cooldown 6, chunk at 7-9, ... -> recovery at
    # t >= 2 with (t - 2) % 5 < 3.
    expected = [RECOVERY if t >= 2 and (t - 2) % 5 < 3 else POLICY for t in range(15)]
    assert sources == expected + expected + expected[:10]
    timeline = [json.loads(line) for line in open(tmp_path / "tl.jsonl")]
    assert [len(r["source"]) for r in timeline] == [15, 15, 10]  # the open episode is flushed at close
    assert summary["recovery_steps"] == sources.count(RECOVERY) == 9 + 9 + 6
    assert summary["gate_recovery_steps"] == summary["recovery_steps"]
    assert summary["gate_triggers"] == 3 + 3 + 2


# ------------------------------------------------------------------ configs
def test_uniintervene_algorithms_compose():
    names = sorted(n for n in ALGORITHMS if "uniintervene" in n)
    assert names == ["hil_serl+uniintervene", "hil_serl+uniintervene-no_future", "hil_serl+uniintervene-no_memory",
                     "hil_serl+uniintervene-no_tvr", "hil_serl+uniintervene-no_value", "hil_serl+uniintervene-replan1",
                     "hil_serl_cameras+uniintervene"]
    tvr = "tvr_history"
    expected = {  # (use_future, use_value_cond, head_type, use_memory_goal)
        "hil_serl+uniintervene": (True, True, tvr, True),
        "hil_serl+uniintervene-no_future": (False, True, tvr, True),
        "hil_serl+uniintervene-no_value": (True, False, tvr, True),
        "hil_serl+uniintervene-no_tvr": (True, True, "binary", True),
        "hil_serl+uniintervene-no_memory": (True, True, tvr, False),
        "hil_serl+uniintervene-replan1": (True, True, tvr, True),
        "hil_serl_cameras+uniintervene": (True, True, tvr, True),  # image models: test_uniintervene_images.py
    }
    for name in names:
        config = get_config(f"pick-place,{name}")
        u = config.uniintervene
        assert config.algorithm == name and u.enabled is True
        assert config.operator.enabled is True and config.agent.num_qs == 2  # on top of hil_serl
        check_online_config(u)
        i = u.intervention
        assert (i.use_future, i.use_value_cond, i.head_type, u.use_memory_goal) == expected[name], name
        assert u.replan_every == (1 if name.endswith("replan1") else 0)
        assert u.trigger.tau_int == 0.5 and u.tau_recalibrate is False  # fixed unless recalibrated
        assert config.components.gate == "uniintervene_jax.gate:make_gate", name
        assert config.components.learner_extension == "uniintervene_jax.extension:make_learner_extension", name
    # Plain HiL-SERL carries no method section and no method components.
    plain = get_config("pick-place,hil_serl")
    assert "uniintervene" not in plain
    assert plain.components.gate == "" and plain.components.learner_extension == ""


def test_ablations_reach_the_gate():
    from uniintervene_jax.gate import make_gate

    for name, head_type, use_memory_goal in (("hil_serl+uniintervene-no_tvr", "binary", True),
                                             ("hil_serl+uniintervene-no_memory", "tvr_history", False)):
        config = get_config(f"pick-place,{name}")
        shrink_uniintervene(config.uniintervene)
        gate = make_gate(config, SPEC, A)
        params = gate.models._intervention.params
        assert gate.models._intervention.config.head_type == head_type and gate.use_memory_goal is use_memory_goal
        assert ("trigger_head" in params) == (head_type == "binary") and ("history_encoder" in params) != (
            head_type == "binary"), name
        assert gate.timeline_path is None


@pytest.mark.parametrize("field,value", [
    ("recovery_buffer", "human"), ("train_period", 0), ("max_chunks", 0),
    ("publish_period", 0), ("cooldown_steps", -1), ("min_updates", -1), ("timeline_every", -1),
    ("tau_holdout_every", 0), ("target_encoder", "proxy_value"), ("recovery_goals", "nearest"),
    ("recovery_min_gain", -0.1), ("recovery_min_gain", 1.0), ("recovery_demo_fraction", 1.5),
    ("memory_demo_delta", -0.1), ("memory_demo_delta", 1.5),
])
def test_check_online_config_rejects_bad_values(field, value):
    c = get_online_config()
    check_online_config(c)
    c[field] = value
    with pytest.raises(ValueError, match=field):
        check_online_config(c)


def test_check_online_config_rejects_inconsistent_model_configs():
    c = get_online_config()
    c.intervention.history_len = 0  # K has one home, the intervention model's config
    with pytest.raises(ValueError, match="history_len"):
        check_online_config(c)
    c = get_online_config()
    c.recovery.horizon = 0  # H has one home, the recovery policy's config
    with pytest.raises(ValueError, match="horizon"):
        check_online_config(c)
    c = get_online_config()
    c.recovery.head = "token"
    with pytest.raises(ValueError, match="continuous"):
        check_online_config(c)
    # An OnlineUniIntervene refuses the same.
    config = _config()
    config.uniintervene.recovery_buffer = "all"
    with pytest.raises(ValueError):
        OnlineUniIntervene(config, SPEC, A)


# ------------------------------------------------------------------ recovery training goals
class _LinearValue:
    """Stands in for ProxyValue: embedding = the first 3 state dims (the anchors' values are
    given separately: state[0])."""

    def encode(self, obs, instr):
        return np.asarray(obs["state"][:, :3], np.float32)


def _memory_items(keys, goal_values, episode_ids):
    from uniintervene_jax.memory.mining import RecoveryItems

    n = len(keys)
    keys = np.asarray(keys, np.float32)
    goals = np.stack([np.full(39, 10.0 + i, np.float32) for i in range(n)])  # item i's goal: all 10 + i
    return RecoveryItems(
        tasks=["pick-place"] * n, episode_id=np.asarray(episode_ids, np.int64),
        start=np.zeros(n, np.int64), end=np.full(n, 8, np.int64), start_progress=np.zeros(n, np.float32),
        bin=np.zeros(n, np.int32), key_observations={"state": np.zeros((n, 39), np.float32)},
        goal_observations={"state": goals}, key_embedding=keys, goal_embedding=keys,
        goal_state=goals, start_value=np.zeros(n, np.float32), goal_value=np.asarray(goal_values, np.float32),
        actions=np.zeros((n, 8, A), np.float32))


def test_retrieved_goals_follow_the_gate_rule():
    """Each anchor gets the goal of the most similar item of another episode whose goal value is
    above V(anchor); anchors with no such item keep their hindsight goal."""
    # items: 0 (episode 0, key along x), 1 (episode 1, key along x, value 0.9),
    #        2 (episode 1, key along y, value 0.9), 3 (episode 2, key along x, value 0.2)
    items = _memory_items([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [1, 0, 0.05]], [0.9, 0.9, 0.9, 0.2], [0, 1, 1, 2])
    state = np.zeros((4, 39), np.float32)
    state[:, :3] = [[0.5, 0, 0],     # ep 0, V 0.5: item 0 is its own episode -> item 3 (0.2) too low -> item 1
                    [0.5, 0, 0],     # ep 1, V 0.5: item 0 (episode 0) is the nearest of another episode
                    [0.1, 1.0, 0],   # ep 0, V 0.1: along y -> item 2
                    [0.95, 0, 0]]    # ep 2, V 0.95: no goal value above -> keeps its hindsight goal
    hindsight = np.full((4, 39), -1.0, np.float32)
    pairs = {"observations": {"state": state}, "goal_observations": {"state": hindsight.copy()},
             "episode_index": np.array([0, 1, 0, 2], np.int32), "actions": np.zeros((4, 8, A), np.float32)}
    out, frac = retrieved_goals(pairs, state[:, 0], _LinearValue(), np.zeros(16, np.int32), "pick-place", items)
    np.testing.assert_array_equal(out["goal_observations"]["state"][:, 0], [11.0, 10.0, 12.0, -1.0])
    assert frac == pytest.approx(0.75)
    np.testing.assert_array_equal(pairs["goal_observations"]["state"], hindsight)  # input untouched
    same, frac = retrieved_goals(pairs, state[:, 0], _LinearValue(), np.zeros(16, np.int32), "pick-place", None)
    assert same is pairs and frac == 0.0


def test_recovery_pairs_keep_demo_anchors_and_filter_operator_anchors_by_gain():
    from uniintervene_jax.recovery.dataset import online_recovery_pairs

    rng = np.random.default_rng(0)
    c = _config().uniintervene
    c.recovery_min_gain = 0.25
    demo = dict(_episode(rng, 12, True), metadata={"task": "pick-place", "success": True, "source": "demo"})
    sources = np.array([0] * 4 + [HUMAN] * 8, np.int8)
    online = dict(_episode(rng, 12, False, sources=sources), metadata={"task": "pick-place", "success": False,
                                                                        "source": "online"})
    flat = np.full(13, 0.5, np.float32)
    demo_curve = np.linspace(0.0, 1.0, 13).astype(np.float32)  # +1/12 per step: every demo anchor gains
    online_curve = flat.copy()
    online_curve[8:] = 0.9                                   # steps 4..7 reach the jump 8 steps ahead (+0.4)
    pairs = online_recovery_pairs([demo, online], [demo_curve, online_curve], c)
    demo_rows = pairs["episode_index"] == 0
    online_rows = pairs["episode_index"] == 1
    assert demo_rows.sum() == 12  # every demo step (gain > 0)
    # operator anchors 4..11; with goal offset 8 only 4..7 jump from 0.5 to 0.9 (gain 0.4 > 0.25)
    np.testing.assert_array_equal(np.sort(pairs["t"][online_rows]), [4, 5, 6, 7])
    c.recovery_min_gain = 0.5
    pairs = online_recovery_pairs([demo, online], [demo_curve, online_curve], c)
    assert (pairs["episode_index"] == 1).sum() == 0 and (pairs["episode_index"] == 0).sum() == 12


def test_recovery_anchors_all_adds_every_step_of_successful_online_episodes():
    """recovery_anchors "all" anchors every step of a successful online episode,
    whatever acted (value-gain filter still applied); "interventions" only the operator's steps;
    a failed episode contributes only its operator steps either way."""
    from uniintervene_jax.recovery.dataset import online_recovery_pairs

    rng = np.random.default_rng(1)
    c = _config().uniintervene
    assert c.recovery_anchors == "interventions"  # the default
    c.recovery_anchors = "all"
    c.recovery_min_gain = 0.25
    meta = {"task": "pick-place", "source": "online"}
    # Successful: policy 0-3, recovery 4-9, human 10-13, policy 14-19 (20 steps).
    sources = np.array([POLICY] * 4 + [RECOVERY] * 6 + [HUMAN] * 4 + [POLICY] * 6, np.int8)
    good = dict(_episode(rng, 20, True, sources=sources), metadata=dict(meta, success=True))
    bad = dict(_episode(rng, 20, False, sources=sources), metadata=dict(meta, success=False))
    rising = np.linspace(0.0, 1.0, 21).astype(np.float32)  # +0.05 per step: +0.4 over 8 steps
    flat_then_jump = np.full(21, 0.2, np.float32)
    flat_then_jump[14:] = 0.9  # only anchors 6..13 reach the jump 8 steps ahead

    def anchors(curves):
        pairs = online_recovery_pairs([good, bad], curves, c)
        return ([int(t) for t in np.sort(pairs["t"][pairs["episode_index"] == 0])],
                [int(t) for t in np.sort(pairs["t"][pairs["episode_index"] == 1])])

    # Goal index min(t + 8, 20); on the linear curve the gain (min(t + 8, 20) - t) / 20 > 0.25 for t <= 14.
    good_all, bad_all = anchors([rising, rising])
    assert good_all == list(range(15))  # every step of the success, policy, recovery and human
    assert bad_all == [10, 11, 12, 13]  # failed episode: operator steps only
    good_f, _ = anchors([flat_then_jump, flat_then_jump])
    assert good_f == list(range(6, 14))  # the gain filter still applies
    c.recovery_anchors = "interventions"
    good_i, bad_i = anchors([rising, rising])
    assert good_i == bad_i == bad_all  # operator steps only, success or not


def test_online_memory_falls_back_to_demo_windows_only_while_the_preset_finds_none():
    """Slow demos (8-step rise 8/30 < delta 0.5) give no item with the preset; the fallback mines
    them with memory_demo_delta (0.2); a mined online recovery replaces the fallback items."""
    from uniintervene_jax.memory.mining import mine_online_memory

    rng = np.random.default_rng(5)
    c = _config().uniintervene
    assert c.memory_preset == "default" and c.memory_demo_delta == pytest.approx(0.2)
    demos = [dict(_episode(rng, 30, True), metadata={"task": "pick-place", "success": True, "source": "demo"})
             for _ in range(2)]
    ramp = np.linspace(0.0, 1.0, 31).astype(np.float32)  # +1/30 per step: +0.267 over 8 steps

    def embed(obs):
        return np.asarray(obs["state"][:, :3], np.float32)

    items, fallback = mine_online_memory(demos, [ramp, ramp], embed, c, "pick-place")
    assert fallback and items is not None
    # windows [s, s + 8] ending at value >= 0.75: s + 8 >= 22.5, i.e. s in 15..22; 2 per episode
    assert len(items) == 4 and set(items.episode_id.tolist()) == {0, 1}
    assert np.all((items.start >= 15) & (items.start <= 22)) and np.all(items.end == items.start + 8)
    np.testing.assert_allclose(items.goal_value - items.start_value, 8 / 30, atol=1e-5)
    for i in range(len(items)):  # keys and goals are the demo's own states
        ep = demos[int(items.episode_id[i])]["observations"]["state"]
        np.testing.assert_array_equal(items.key_observations["state"][i], ep[items.start[i]])
        np.testing.assert_array_equal(items.goal_observations["state"][i], ep[items.end[i]])

    # A successful online episode with a recovery and a steep rise: the preset mines it, and
    # only it (the demos still have no window with a rise of 0.5), so no fallback.
    online = dict(_episode(rng, 20, True, sources=[RECOVERY] * 20),
                  metadata={"task": "pick-place", "success": True, "source": "online", "recovered": True})
    steep = np.concatenate([np.zeros(10), np.linspace(0.0, 1.0, 11)]).astype(np.float32)
    items, fallback = mine_online_memory(demos + [online], [ramp, ramp, steep], embed, c, "pick-place")
    assert not fallback and set(items.episode_id.tolist()) == {2}
    assert np.all(items.goal_value - items.start_value >= 0.5 - 1e-6)

    c.memory_demo_delta = 0.0  # fallback off: the memory stays empty
    assert mine_online_memory(demos, [ramp, ramp], embed, c, "pick-place") == (None, False)
    c.memory_demo_delta = 0.3  # above every demo window's rise: nothing either
    assert mine_online_memory(demos, [ramp, ramp], embed, c, "pick-place") == (None, False)


def test_recovery_batches_keep_the_demo_share():
    rng = np.random.default_rng(0)
    is_demo = np.array([True] * 3 + [False] * 97)
    idx = recovery_batch_indices(is_demo, 64, 0.5, rng)
    assert idx.shape == (64,) and is_demo[idx].sum() == 32
    idx = recovery_batch_indices(is_demo, 64, 0.25, rng)
    assert is_demo[idx].sum() == 16
    # one side empty: everything from the other
    assert recovery_batch_indices(np.ones(5, bool), 16, 0.5, rng).max() < 5
    assert is_demo[recovery_batch_indices(is_demo, 16, 1.0, rng)].all()
    assert not np.zeros(7, bool)[recovery_batch_indices(np.zeros(7, bool), 16, 0.5, rng)].any()
    # None: uniform over all rows (the demo share follows the data: 3 %)
    idx = recovery_batch_indices(is_demo, 20000, None, rng)
    assert abs(is_demo[idx].mean() - 0.03) < 0.01
    with pytest.raises(ValueError, match="no recovery pairs"):
        recovery_batch_indices(np.zeros(0, bool), 8, 0.5, rng)
