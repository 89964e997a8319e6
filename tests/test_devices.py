"""Device selection (serl_ext/devices.py) on fake device lists and environments, no GPU."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import pytest

from serl_ext import devices


@dataclass(frozen=True)
class FakeDevice:
    platform: str
    id: int = 0
    device_kind: str = ""


CPU = FakeDevice("cpu", 0, "cpu")
GPU0 = FakeDevice("gpu", 0, "NVIDIA H200")
GPU1 = FakeDevice("gpu", 1, "NVIDIA H200")
TPU = FakeDevice("tpu", 0, "TPU v5")


def test_role_defaults_learner_auto_actor_and_eval_cpu():
    assert devices.requested_device("learner", environ={}) == "auto"
    assert devices.requested_device("actor", environ={}) == "cpu"
    assert devices.requested_device("eval", environ={}) == "cpu"


def test_flag_beats_role_variable_beats_default():
    env = {"LEARNER_DEVICE": "CPU", "ACTOR_DEVICE": "gpu"}
    assert devices.requested_device("learner", environ=env) == "cpu"
    assert devices.requested_device("learner", "gpu", environ=env) == "gpu"
    assert devices.requested_device("actor", environ=env) == "gpu"
    assert devices.requested_device("eval", environ=env) == "cpu"  # EVAL_DEVICE unset
    assert devices.requested_device("learner", environ={"LEARNER_DEVICE": ""}) == "auto"


def test_unknown_choice_or_role_raises_naming_the_source():
    with pytest.raises(ValueError, match="LEARNER_DEVICE='tpu0'"):
        devices.requested_device("learner", environ={"LEARNER_DEVICE": "tpu0"})
    with pytest.raises(ValueError, match="--device='cuda'"):
        devices.requested_device("actor", "cuda", environ={})
    with pytest.raises(ValueError, match="unknown role"):
        devices.requested_device("trainer", environ={})


def test_auto_picks_an_accelerator_when_present_else_cpu():
    assert devices.select_device("auto", [GPU0, GPU1, CPU]) == GPU0
    assert devices.select_device("auto", [CPU, GPU1]) == GPU1
    assert devices.select_device("auto", [TPU]) == TPU
    assert devices.select_device("auto", [CPU]) == CPU


def test_cpu_choice_takes_the_cpu_even_beside_a_gpu():
    assert devices.select_device("cpu", [GPU0, CPU]) == CPU


def test_cpu_choice_asks_jax_for_its_cpu_when_the_list_has_none(monkeypatch):
    monkeypatch.setattr(jax, "devices", lambda backend=None: [CPU] if backend == "cpu" else [GPU0])
    assert devices.select_device("cpu", [GPU0]) == CPU


def test_gpu_choice_without_a_gpu_raises_with_the_install_hint(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert devices.select_device("gpu", [CPU, GPU1]) == GPU1
    with pytest.raises(RuntimeError, match=r"jax sees only cpu \(JAX_PLATFORMS='cpu'.*\[cuda\]"):
        devices.select_device("gpu", [CPU])
    with pytest.raises(ValueError):
        devices.select_device("fast", [CPU])


def test_default_device_list_comes_from_jax(monkeypatch):
    monkeypatch.setattr(jax, "devices", lambda backend=None: [GPU0, GPU1])
    assert devices.select_device("auto") == GPU0


def test_configure_platforms_sets_cpu_only_when_free_to(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.config, "update", lambda name, value: calls.append((name, value)))
    monkeypatch.setattr(devices, "_backends_started", lambda: False)
    assert devices.configure_platforms("cpu", environ={}) == "cpu"
    assert calls == [("jax_platforms", "cpu")]
    assert devices.configure_platforms("auto", environ={}) is None
    assert devices.configure_platforms("gpu", environ={}) is None
    # An explicit JAX_PLATFORMS wins; so do backends that have already started.
    assert devices.configure_platforms("cpu", environ={"JAX_PLATFORMS": "cuda"}) is None
    monkeypatch.setattr(devices, "_backends_started", lambda: True)
    assert devices.configure_platforms("cpu", environ={}) is None
    assert calls == [("jax_platforms", "cpu")]
    with pytest.raises(ValueError):
        devices.configure_platforms("npu", environ={})


def test_describe_device_counts_its_platform():
    assert devices.describe_device(GPU1, [CPU, GPU0, GPU1]) == "gpu:1 (NVIDIA H200; 2 gpu devices visible)"
    assert devices.describe_device(CPU, [CPU]) == "cpu:0 (cpu; 1 cpu device visible)"


def test_setup_device_on_this_machine_prints_one_line(monkeypatch, capsys):
    # JAX_PLATFORMS set: jax's options are left alone (no side effect on the other tests).
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("ACTOR_DEVICE", raising=False)
    monkeypatch.setattr(jax.config, "update", lambda name, value: None)  # a GPU test box keeps its default
    device = devices.setup_device("actor")
    assert device.platform == "cpu"
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("[actor] device: cpu:0 (") and "asked for 'cpu'" in out[0]


def test_setup_device_learner_auto_makes_the_chosen_device_the_default(monkeypatch, capsys):
    monkeypatch.setattr(jax, "devices", lambda backend=None: [CPU] if backend == "cpu" else [CPU, GPU0])
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    updates = []
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.append((name, value)))
    monkeypatch.delenv("LEARNER_DEVICE", raising=False)
    assert devices.setup_device("learner") == GPU0
    assert updates == [("jax_default_device", GPU0)]
    assert "[learner] device: gpu:0 (NVIDIA H200;" in capsys.readouterr().out


def _load_gpu_benchmark():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                        "bench_gpu_learner.py")
    spec = importlib.util.spec_from_file_location("bench_gpu_learner", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_refuses_a_cpu_without_allow_cpu(tmp_path):
    if jax.devices()[0].platform != "cpu":
        pytest.skip("an accelerator is the default device here")
    bench = _load_gpu_benchmark()
    with pytest.raises(SystemExit, match="--allow_cpu"):
        bench.main(["--out_dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_gpu_benchmark_markdown_has_one_row_per_setting():
    bench = _load_gpu_benchmark()
    row = dict(num_qs=10, num_min_qs=2, batch_per_minibatch=1024, update_calls_per_s=812.5, ms_per_call=1.2308,
               critic_updates_per_s=812.5, flops_per_call=2.5e9, achieved_tflops=2.031, first_call_s_incl_compile=3.2)
    report = dict(device_kind="NVIDIA H200", backend="gpu", jax="0.10.2", obs_dim=39, action_dim=4,
                  hidden_dims=[256, 256], utd_ratio=1, donate=False,
                  results=[row, dict(row, num_qs=2, num_min_qs=None, flops_per_call=None, achieved_tflops=None)])
    md = bench.markdown(report)
    assert "| 10 (min of 2) | 1024 | 812.5 | 1.231 | 812.5 | 2.500 | 2.031 | 3.2 |" in md
    assert "| 2 | 1024 | 812.5 | 1.231 | 812.5 | n/a | n/a | 3.2 |" in md
