"""What an algorithm adds to the loop (serl_ext/loop/components.py, gate.py, extension.py): the
registry in configs/ names the pieces, the loop builds them without importing the method, and
the infrastructure package does not mention the method at all."""

import os
import subprocess
import sys

import numpy as np
import pytest

from configs.algorithms import ALGORITHMS, algorithm_components
from configs.train import get_config
from serl_ext.loop import components
from serl_ext.loop.extension import TeeStore
from serl_ext.loop.gate import POLICY, BaseGate, PassThroughGate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_infrastructure_never_names_the_method():
    # No import, config field or identifier of the method in the infrastructure (and no mention
    # in the loop's docs either; the simulated operator's docstrings cite the paper).
    hits = subprocess.run(["grep", "-rnI", "uniintervene", "serl_ext", "configs/base.py"], cwd=REPO,
                          capture_output=True, text=True).stdout
    assert hits == "", hits
    hits = subprocess.run(["grep", "-rniI", "uniintervene", "serl_ext/loop", "serl_ext/transport"], cwd=REPO,
                          capture_output=True, text=True).stdout
    assert hits == "", hits


def test_loop_modules_import_without_the_method_package():
    # serl_ext's loop and the plain configs load with uniintervene_jax made unimportable.
    code = ("import sys; sys.modules['uniintervene_jax'] = None\n"
            "import serl_ext.loop.actor, serl_ext.loop.learner, serl_ext.loop.main\n"
            "from configs.train import get_config\n"
            "c = get_config('pick-place,hil_serl'); assert 'uniintervene' not in c\n"
            "from serl_ext.loop import components\n"
            "assert type(components.make_gate(c, {}, 4, None)).__name__ == 'PassThroughGate'\n"
            "assert components.make_learner_extension(c, {}, 4, '/tmp', False) is None\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]


def test_registry_names_agent_gate_and_learner_extension_of_every_algorithm():
    for name in ALGORITHMS:
        spec = algorithm_components(name)
        assert set(spec) == {"agent", "gate", "learner_extension"}
        config = get_config(f"pick-place,{name}")
        assert spec["agent"] == config.agent_name
        for field in ("gate", "learner_extension"):
            assert spec[field] == config.components[field]
            if spec[field]:
                assert callable(components.resolve(spec[field])), (name, field)
    assert algorithm_components("hil_serl_hybrid")["agent"] == "sac_hybrid"
    assert algorithm_components("hil_serl") == {"agent": "sac", "gate": "", "learner_extension": ""}
    assert algorithm_components("hil_serl+uniintervene")["gate"] == "uniintervene_jax.gate:make_gate"


class _CountingGate(BaseGate):
    part_name = "counting"

    def __init__(self, config=None):
        self.config = config
        self.loaded = []

    def load_params(self, part):
        self.loaded.append(part["version"])


def test_resolve_and_register_and_their_errors():
    assert components.resolve("") is None
    assert components.resolve("serl_ext.loop.gate:PassThroughGate") is PassThroughGate
    components.register("test_counting_gate", lambda config, spec, action_dim, run_dir: _CountingGate(config))
    config = get_config("pick-place,hil_serl")
    config.components.gate = "test_counting_gate"
    gate = components.make_gate(config, {}, 4, None)
    assert isinstance(gate, _CountingGate) and gate.config is config
    for bad, match in (("no_colon_unregistered", "neither registered"), ("serl_ext.nope:x", "cannot import"),
                       ("serl_ext.loop.gate:Nope", "has no 'Nope'"), ("serl_ext.loop.gate:", "neither")):
        with pytest.raises(ValueError, match=match):
            components.resolve(bad)
    with pytest.raises(ValueError):
        components.register("a:b", lambda: None)


def test_a_gate_factory_returning_none_means_pass_through():
    components.register("test_none_gate", lambda config, spec, action_dim, run_dir: None)
    config = get_config("pick-place,hil_serl")
    config.components.gate = "test_none_gate"
    gate = components.make_gate(config, {}, 4, None)
    action = np.ones(4, np.float32)
    out, source = gate.select_action({}, action)
    assert isinstance(gate, PassThroughGate) and source == POLICY and out is action
    with pytest.raises(TypeError):
        gate.load_params({"version": 1})  # takes no message part


def test_tee_store_feeds_the_extension_and_never_loses_a_transition():
    class Store(list):
        def insert(self, t):
            self.append(t)

    seen = []
    store = Store()
    tee = TeeStore(store, seen.append)
    tee.insert({"a": 1})
    assert store == [{"a": 1}] and seen == [{"a": 1}] and len(tee) == 1

    def fail(t):
        raise RuntimeError("extension broke")

    tee = TeeStore(store, fail)
    tee.insert({"a": 2})
    assert len(tee) == 2 and store[-1] == {"a": 2}


def test_uniintervene_extension_schedule_and_message_part(tmp_path):
    """The method's learner extension: every transition reaches its assembler, its message part
    goes out every publish_period learner steps (or when forced) with the trainer's payload,
    and it saves / restores under the directory the learner gives it."""
    from test_online import _config
    from uniintervene_jax.extension import UniInterveneLearnerExtension
    from uniintervene_jax.online import OnlineUniIntervene

    config = _config()
    spec = {"state": ((39,), np.dtype(np.float32))}
    ui = OnlineUniIntervene(config, spec, 4)
    ext = UniInterveneLearnerExtension(ui, publish_period=5, train_during_warmup=False)
    assert ext.name == "uniintervene" and ext.warmup_step() is False
    first = ext.message_part(0, force=False)
    assert first is not None and first["version"] == ui.version and "memory" in first
    assert ext.message_part(3, force=False) is None  # within publish_period
    assert ext.message_part(3, force=True) is not None  # forced (heartbeat / end of run)
    assert ext.message_part(7, force=False) is None and ext.message_part(8, force=False) is not None
    obs = {"state": np.zeros(39, np.float32)}
    nxt = {"state": np.ones(39, np.float32)}
    ext.on_transition({"observations": obs, "next_observations": nxt, "actions": np.zeros(4, np.float32),
                       "rewards": 0.0, "masks": 1.0, "dones": True, "interventions": False, "action_source": 0})
    assert len(ui.assembler.pop_finished()) == 1
    ext.save(str(tmp_path / ext.name))
    fresh = UniInterveneLearnerExtension(OnlineUniIntervene(config, spec, 4), 5, True)
    assert fresh.restore(str(tmp_path / ext.name)) is True and fresh.ui.version == ui.version + 1
    assert fresh.warmup_step() is True
    assert set(ext.stats()) >= {"uniintervene/ready", "uniintervene/version"}


class _FakeServer:
    """Stands in for TrainerServer: on start() it inserts ``n`` transitions into the online
    store (as the actor's would arrive); records what is published."""

    def __init__(self, n, spec):
        self.n, self.spec = n, spec
        self.stores, self.published = {}, []
        self.num_rejected = 0

    def register_data_store(self, name, store):
        self.stores[name] = store

    def start(self, threaded=True):
        from serl_ext.loop.common import DATA_STORE

        rng = np.random.default_rng(0)
        obs = {k: rng.normal(size=shape).astype(dtype) for k, (shape, dtype) in self.spec.items()}
        for t in range(self.n):
            nxt = {k: rng.normal(size=shape).astype(dtype) for k, (shape, dtype) in self.spec.items()}
            done = t % 10 == 9
            self.stores[DATA_STORE].insert({
                "observations": obs, "next_observations": nxt, "actions": rng.uniform(-1, 1, 4).astype(np.float32),
                "rewards": np.float32(0.0), "masks": np.float32(1.0), "dones": done, "interventions": False,
                "action_source": np.int8(0), "grasp_penalty": np.float32(0.0)})
            obs = nxt

    def publish_network(self, message):
        self.published.append(message)

    def stop(self):
        pass


class _CountingExtension:
    name = "counting"

    def __init__(self):
        self.transitions, self.train_steps, self.warmups, self.saved, self.version = 0, [], 0, [], 0

    def on_transition(self, transition):
        self.transitions += 1

    def warmup_step(self):
        self.warmups += 1
        return False

    def train_step(self, learner_step):
        self.train_steps.append(learner_step)
        self.version += 1

    def message_part(self, learner_step, force):
        return {"version": self.version, "w": np.full((2,), float(learner_step), np.float32)}

    def stats(self):
        return {"counting/steps": float(len(self.train_steps))}

    def save(self, directory):
        os.makedirs(directory, exist_ok=True)
        self.saved.append(directory)

    def restore(self, directory):
        return False


def test_learner_runs_a_registered_extension_in_process(tmp_path):
    """run_learner in one process with a fake server: the extension sees every transition,
    trains after each update, its versioned part rides on the checked parameter messages,
    it is saved beside the checkpoint and its stats reach learner_summary.json."""
    import json

    from serl_ext.loop.learner import run_learner
    from serl_ext.loop.param_message import check_message

    made = []

    def factory(config, spec, action_dim, run_dir, resumed):
        made.append((spec, action_dim, resumed))
        made.append(_CountingExtension())
        return made[-1]

    components.register("test_counting_extension", factory)
    config = get_config("pick-place,hil_serl")
    config.run_root = str(tmp_path)
    config.demos.num_demos = 0
    config.learner.demo_fraction = 0.0
    config.agent.hidden_dims = (16, 16)
    config.learner.batch_size = 16
    config.learner.training_starts = 50
    config.learner.max_steps = 6
    config.learner.publish_period = 2
    config.learner.log_period = 3
    config.learner.checkpoint_period = 0
    config.logging.progress_bar = False
    config.logging.tensorboard = False
    config.components.learner_extension = "test_counting_extension"
    spec = {"state": ((39,), np.dtype(np.float32))}
    server = _FakeServer(60, spec)
    summary = run_learner(config, server=server)
    (obs_spec, action_dim, resumed), ext = made
    assert action_dim == 4 and resumed is False and set(obs_spec) == {"state"}
    assert ext.transitions == 60 and ext.train_steps == [1, 2, 3, 4, 5, 6]
    assert summary["learner_steps"] == 6 and summary["counting_steps"] == 6.0
    messages = [check_message(m, accepted_parts=("counting",)) for m in server.published]
    assert [m.version for m in messages] == list(range(1, len(messages) + 1))
    assert all(m.parts["counting"]["version"] == ext.train_steps[m.learner_step - 1] if m.learner_step else True
               for m in messages)
    assert messages[-1].learner_step == 6 and messages[-1].parts["counting"]["w"][0] == 6.0
    run_dir = tmp_path / "pick-place" / "hil_serl" / "seed0"
    assert ext.saved == [str(run_dir / "counting")]
    assert json.loads((run_dir / "learner_summary.json").read_text())["counting_steps"] == 6.0
    # The learner's checkpoint describes itself: the policy comes back from the folder alone.
    from serl_ext.loop.checkpoint import load_agent

    agent, info = load_agent(str(run_dir))
    assert info["learner_step"] == 6 and info["config"].components.learner_extension == "test_counting_extension"
    assert np.asarray(agent.eval_actions({"state": np.zeros(39, np.float32)})).shape == (4,)
