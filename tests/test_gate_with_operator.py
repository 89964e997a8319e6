"""benchmarks/gate_with_operator.py: its episode loop against the rollout recorder's counts."""

import numpy as np
import pytest

from serl_ext.loop.gate import HUMAN, RECOVERY


class ZeroAgent:
    def eval_actions(self, obs):
        return np.zeros(4, np.float32)


class AlwaysRecovery:
    """A gate whose every action is a 'recovery' zero action; records what it observed."""

    def __init__(self):
        self.sources = []
        self.resets = 0

    def reset(self, obs):
        self.resets += 1

    def select_action(self, obs, action):
        return np.zeros(4, np.float32), RECOVERY

    def observe(self, obs, action, source, reward, next_obs, info):
        self.sources.append(source)


@pytest.fixture(scope="module")
def config():
    from configs.train import get_config

    return get_config("pick-place,hil_serl")


def test_ir_matches_the_rollout_recorder(config):
    from benchmarks.gate_with_operator import run_with_operator
    from serl_ext.loop import common
    from serl_ext.loop.rollouts import run_episode

    episodes = 1
    got = run_with_operator(ZeroAgent(), config, episodes)
    human = steps = segments = 0
    for i in range(episodes):  # the same episodes through the recorder's independent counting
        seed = common.eval_seed(config, i)
        env = common.make_env(config, seed, with_operator=True)
        try:
            _, stats = run_episode(env, lambda obs, env: np.zeros(4, np.float32), seed)
        finally:
            env.close()
        human += stats["intervention_steps"]
        steps += stats["length"]
        segments += stats["intervention_segments"]
    assert human > 0  # an idle robot gets taken over
    assert got["steps"] == steps
    assert got["ir"] == pytest.approx(human / steps)
    assert got["takeovers_per_episode"] == pytest.approx(segments / episodes)
    assert got["recovery_share"] is None
    # an idle robot is taken over for stalling, each takeover counted once, while the policy acted
    assert sum(got["takeover_causes"].values()) == segments
    assert set(got["takeover_causes"]) == {"stall/policy"}


def test_gate_sees_human_steps_and_recovery_share(config):
    from benchmarks.gate_with_operator import run_with_operator

    gate = AlwaysRecovery()
    got = run_with_operator(ZeroAgent(), config, 1, gate)
    assert gate.resets == 1 and len(gate.sources) == got["steps"]
    human = sum(s == HUMAN for s in gate.sources)
    assert human / got["steps"] == pytest.approx(got["ir"]) and human > 0
    assert got["recovery_share"] == pytest.approx(sum(s == RECOVERY for s in gate.sources) / got["steps"])
    assert got["recovery_share"] + got["ir"] == pytest.approx(1.0)  # every non-human step was the gate's
    causes = got["takeover_causes"]
    assert causes and all(k.endswith("/recovery") for k in causes)  # the gate acted whenever the robot did
    assert sum(causes.values()) == round(got["takeovers_per_episode"])


class FiringModels:
    """GateModels that fire at every decision (sigmoid 0.9 >= tau 0.5) and propose a zero chunk."""

    ready, tau = True, 0.5

    def __init__(self):
        self.chunks = 0

    def value(self, obs):
        return 0.0

    def score(self, obs, action, history):
        return 0.9, True

    def goal(self, obs, value):
        return obs

    def chunk(self, obs, goal):
        self.chunks += 1
        return np.zeros((8, 4), np.float32)


def test_traces_mark_every_step_and_the_gate_decisions(config):
    """No gate: '.' policy and 'H' operator steps, one per step, counted like the IR; with a gate
    that always fires: K = 8 warm-up steps without a decision, then a trigger ('R')."""
    from benchmarks.gate_with_operator import run_with_operator
    from uniintervene_jax.gate import UniInterveneGate

    got = run_with_operator(ZeroAgent(), config, 1, traces=1)
    (trace,) = got["traces"]
    body = trace[:-1] if trace.endswith("*") else trace  # the trace stops at the success step
    assert set(body) <= {".", "H"} and "H" in body
    assert trace.endswith("*") == (got["success_rate"] == 1.0) and len(body) <= got["steps"]
    if len(body) == got["steps"]:  # the whole episode traced: its 'H' are the IR's operator steps
        assert body.count("H") == pytest.approx(got["ir"] * got["steps"])

    gated = run_with_operator(ZeroAgent(), config, 1, UniInterveneGate(FiringModels(), history_len=8), traces=1)
    (trace,) = gated["traces"]
    assert trace.startswith("." * 8 + "R")
    assert set(trace) <= {".", "p", "R", "r", "H", "*"}
    assert "traces" not in run_with_operator(ZeroAgent(), config, 1)


def test_oracle_gate_recovers_with_the_expert_action(config):
    """The oracle copy keeps the trigger and re-decides every recovery step with the scripted
    expert's action for the env's privileged state; the wrapped models stay untouched."""
    from benchmarks.gate_with_operator import ExpertRecoveryModels, oracle_gate
    from serl_ext.envs.metaworld_env import get_privileged_state
    from serl_ext.envs.tasks import get_expert
    from serl_ext.loop import common
    from uniintervene_jax.gate import UniInterveneGate

    models = FiringModels()
    gate = UniInterveneGate(models, history_len=8)
    oracle = oracle_gate(gate, horizon=8)
    assert isinstance(oracle.models, ExpertRecoveryModels) and gate.models is models
    assert oracle.replan_every == 1 and gate.replan_every == 0
    assert oracle.models.tau == 0.5 and oracle.models.score(None, None, None) == (0.9, True)  # delegated
    with pytest.raises(RuntimeError, match="env is not set"):
        oracle.models.chunk(None, None)
    env = common.make_env(config, 0, with_operator=True)
    try:
        obs, _ = env.reset(seed=0)
        oracle.models.env = env
        expert = get_expert("pick-place")(get_privileged_state(env))
        for _ in range(3):  # the chunk follows the state, not the observation it is given
            chunk = oracle.models.chunk(obs, obs)
            assert chunk.shape == (8, 4) and np.allclose(chunk, expert[None])
            obs, *_ = env.step(chunk[0])
            expert = get_expert("pick-place")(get_privileged_state(env))
        assert not np.allclose(chunk[0], expert)  # the hand moved: the next chunk differs
    finally:
        env.close()
    assert models.chunks == 0


def test_totals_and_rebuilding_the_report_from_json(tmp_path):
    """way_totals sums IR x steps and averages IR by hand; --from_json rewrites the same-named
    report with the totals table, the json itself unchanged; a file without rows is refused."""
    import json

    from benchmarks.gate_with_operator import main, way_totals

    def way(ir, steps):
        return {"ir": ir, "steps": steps, "takeovers_per_episode": 1.0, "success_rate": 1.0,
                "autonomous_rate": 0.0, "recovery_share": None}

    rows = [{"task": "pick-place", "seed": 0, "bc_steps": 300, "episodes": 2,
             "policy": way(0.5, 100), "policy_gate": way(0.25, 80)},
            {"task": "assembly", "seed": 0, "bc_steps": 300, "episodes": 2,
             "policy": way(0.3, 200), "policy_gate": way(0.2, 150)}]
    assert way_totals(rows, "policy") == {"operator_steps": 110.0, "mean_ir": pytest.approx(0.4), "rows": 2}
    assert way_totals(rows, "policy_gate")["operator_steps"] == pytest.approx(50.0)
    assert way_totals(rows, "policy_gate_oracle") is None
    path = tmp_path / "gate_with_operator_bc_x.json"
    path.write_text(json.dumps({"command": "python benchmarks/gate_with_operator.py --base=bc", "rows": rows}))
    before = path.read_text()
    main([f"--from_json={path}"])
    md = (tmp_path / "gate_with_operator_bc_x.md").read_text()
    assert "| BC policy + operator | 110 | 0.400 |" in md
    assert "| same policy + offline gate + operator | 50 (-55%) | 0.225 (-44%) |" in md
    assert json.loads(path.read_text()) == json.loads(before)
    (tmp_path / "empty.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="holds no rows"):
        main([f"--from_json={tmp_path / 'empty.json'}"])


def test_missing_pipeline_demos_are_recorded_again_the_same(tmp_path):
    import json

    from benchmarks.gate_with_operator import record_pipeline_demos

    (tmp_path / "metrics.json").write_text(json.dumps({"data": {"demos": {"episodes": 2}}}))
    first = record_pipeline_demos("pick-place", str(tmp_path))
    again = record_pipeline_demos("pick-place", str(tmp_path))
    assert len(first) == 2 and not list(tmp_path.glob("data"))  # the count of metrics.json; nothing written here
    for a, b in zip(first, again):  # the pipeline's demo seeds: the same episodes each time
        assert a["metadata"]["source"] == "demo"
        np.testing.assert_array_equal(a["actions"], b["actions"])
