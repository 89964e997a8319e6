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


def test_gate_sees_human_steps_and_recovery_share(config):
    from benchmarks.gate_with_operator import run_with_operator

    gate = AlwaysRecovery()
    got = run_with_operator(ZeroAgent(), config, 1, gate)
    assert gate.resets == 1 and len(gate.sources) == got["steps"]
    human = sum(s == HUMAN for s in gate.sources)
    assert human / got["steps"] == pytest.approx(got["ir"]) and human > 0
    assert got["recovery_share"] == pytest.approx(sum(s == RECOVERY for s in gate.sources) / got["steps"])
    assert got["recovery_share"] + got["ir"] == pytest.approx(1.0)  # every non-human step was the gate's
