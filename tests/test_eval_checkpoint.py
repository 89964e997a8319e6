"""launchers/eval.sh in process (serl_ext.loop.checkpoint_eval.evaluate_checkpoint): any kept checkpoint
step, deterministic or stochastic, K episodes on fixed seeds, intervals; an unknown step lists
the kept ones; learner.checkpoints_to_keep."""

import json

import jax
import pytest

from configs.train import get_config
from serl_ext.loop import common
from serl_ext.loop.checkpoint import Checkpointer
from serl_ext.loop.checkpoint_eval import evaluate_checkpoint


def _config(tmp_path):
    config = get_config("pick-place,hil_serl")
    config.run_root = str(tmp_path / "runs")
    config.agent.hidden_dims = (16, 16)  # as tests/test_loop.py: shares its compiled functions
    config.env.max_episode_steps = 5
    return config


def _shift(agent, amount):
    params = jax.tree.map(lambda x: x + amount, agent.policy_params())
    return agent.load_policy_params(params)


def _save_steps(config, steps, keep=0):
    agent, spec, action_dim = common.agent_for_task(config)
    ckpt = Checkpointer(f"{common.run_dir_for(config)}/checkpoints", max_to_keep=keep)
    buffers = {"replay": common.make_buffer(spec, action_dim, 4, seed=0, with_extras=True).state_dict()}
    for i, step in enumerate(steps):
        ckpt.save(step, _shift(agent, 0.1 * i), buffers, {"learner_step": step * 10, "version": i})
    ckpt.close()
    return agent


def test_evaluates_any_kept_step_with_intervals(tmp_path, capsys):
    config = _config(tmp_path)
    _save_steps(config, [1, 2, 3])
    first = evaluate_checkpoint(config, checkpoint_step=1, episodes=2)
    assert first["checkpoint_step"] == 1 and first["learner_step"] == 10
    assert first["mode"] == "deterministic" and first["with_gate"] is False
    assert first["eval_seeds"] == [common.eval_seed(config, 0), common.eval_seed(config, 1)]
    lo, hi = first["eval_success_rate_ci95"]
    assert 0.0 <= lo <= first["eval_success_rate"] <= hi <= 1.0
    assert len(first["episode_records"]) == 2 and first["eval_return_ci95"] is not None
    run_dir = tmp_path / "runs" / "pick-place" / "hil_serl" / "seed0"
    assert json.loads((run_dir / "eval" / "step1_deterministic_policy.json").read_text())["checkpoint_step"] == 1
    assert json.loads((run_dir / "eval.json").read_text())["checkpoint_step"] == 1
    assert "SR (95% CI)" in capsys.readouterr().out

    # The newest step by default; fixed seeds: the same stochastic evaluation twice gives the
    # same episodes.
    a = evaluate_checkpoint(config, episodes=1, stochastic=True)
    b = evaluate_checkpoint(config, episodes=1, stochastic=True)
    assert a["checkpoint_step"] == 3 and a["learner_step"] == 30
    assert a["mode"] == "stochastic" and a["episode_records"] == b["episode_records"]
    assert (run_dir / "eval" / "step3_stochastic_policy.json").exists()


def test_unknown_step_lists_the_kept_ones_and_gate_on_needs_a_gate(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(SystemExit, match="no checkpoint"):
        evaluate_checkpoint(config, episodes=1)
    _save_steps(config, [4, 8])
    with pytest.raises(SystemExit, match="kept steps: 4, 8"):
        evaluate_checkpoint(config, checkpoint_step=5, episodes=1)
    with pytest.raises(SystemExit, match="has no gate"):
        evaluate_checkpoint(config, checkpoint_step=4, episodes=1, gate_mode="on")


def test_checkpoints_to_keep(tmp_path):
    config = _config(tmp_path)
    assert config.learner.checkpoints_to_keep == 2
    _save_steps(config, [1, 2, 3, 4], keep=3)
    ckpt = Checkpointer(f"{common.run_dir_for(config)}/checkpoints", max_to_keep=None)
    assert ckpt.all_steps() == [2, 3, 4]
    ckpt.close()
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(str(tmp_path / "x"), max_to_keep=-1)


class _PartGate:
    """A method's gate in miniature: takes its models as a parameter-message part, recovers every
    other step once it has them, and reports step_info()."""

    part_name = "toy"
    eval_with_gate = True

    def __init__(self, models=None):
        self.models, self.t = models, 0

    @property
    def ready(self):
        return self.models is not None

    def reset(self, observation):
        self.t = 0

    def select_action(self, observation, policy_action):
        from serl_ext.loop.gate import POLICY, RECOVERY

        self.t += 1
        return policy_action, (RECOVERY if self.ready and self.t % 2 else POLICY)

    def observe(self, *args):
        pass

    def load_params(self, part):
        self.models = dict(part)

    def for_evaluation(self):
        return _PartGate(self.models)

    def step_info(self):
        return {"value": 0.5, "triggered": self.t % 2 == 1}


class _ToyExtension:
    name = "toy"

    def __init__(self, run_dir, resumed):
        self.resumed = resumed

    def message_part(self, learner_step, force):
        return {"version": 3, "resumed": self.resumed}


def test_gate_on_loads_the_method_models_from_the_run_folder(tmp_path):
    from serl_ext.loop import components

    components.register("toy_gate", lambda config, spec, a, run_dir: _PartGate())
    components.register("toy_ext", lambda config, spec, a, run_dir, resumed: _ToyExtension(run_dir, resumed))
    config = _config(tmp_path)
    config.components.gate, config.components.learner_extension = "toy_gate", "toy_ext"
    _save_steps(config, [2])
    result = evaluate_checkpoint(config, episodes=1, gate_mode="auto")  # the method evaluates with its gate
    assert result["with_gate"] is True and result["recovery_fraction"] == pytest.approx(0.6)  # 3 of 5 steps
    assert evaluate_checkpoint(config, episodes=1, gate_mode="off")["with_gate"] is False
