"""Checkpoint integrity (issue 15 item 4): a sha256 manifest per step, verified on restore, with
fallback to the newest intact step and a message naming the bad file."""

import json
import os
import shutil

import numpy as np
import pytest

from configs.train import get_config
from serl_ext.loop import common
from serl_ext.loop.checkpoint import MANIFEST_NAME, CheckpointError, Checkpointer

SPEC = {"state": ((39,), np.dtype(np.float32))}
A = 4


def _buffers(n):
    out = {}
    for name in ("replay", "demo"):
        buf = common.make_buffer(SPEC, A, 8, seed=0, with_extras=True)
        for i in range(n):
            buf.insert({"observations": {"state": np.full(39, i, np.float32)},
                        "next_observations": {"state": np.full(39, i + 1, np.float32)},
                        "actions": np.zeros(A, np.float32), "rewards": float(i), "masks": 1.0,
                        "dones": False, "interventions": False, "action_source": 0,
                        "grasp_penalty": 0.0})
        out[name] = buf.state_dict()
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two checkpoints (steps 5 and 10) of a tiny agent, saved once for the module."""
    config = get_config("pick-place,hil_serl")
    config.agent.hidden_dims = (16, 16)
    agent = common.create_agent(config, SPEC, A)
    root = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    ckpt = Checkpointer(str(root), max_to_keep=3)
    for step in (5, 10):
        ckpt.save(step, agent, _buffers(step % 7), {"learner_step": step, "version": step // 5})
    ckpt.close()
    return root, agent


@pytest.fixture
def ckdir(saved, tmp_path):
    root, agent = saved
    dst = tmp_path / "checkpoints"
    shutil.copytree(root, dst)
    return dst, agent


def _restore(ckdir):
    root, agent = ckdir
    logs = []
    ckpt = Checkpointer(str(root), max_to_keep=3, log_fn=logs.append)
    try:
        _, buffers, counters = ckpt.restore(agent)
    finally:
        ckpt.close()
    return ckpt, counters, buffers, logs


def _largest_file(folder):
    files = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs]
    return max(files, key=os.path.getsize)


def test_manifest_written_and_intact_restore(ckdir):
    root, _ = ckdir
    manifest = json.loads((root / "10" / MANIFEST_NAME).read_text())
    assert manifest["step"] == 10 and manifest["files"]
    assert all(len(e["sha256"]) == 64 for e in manifest["files"].values())
    ckpt, counters, buffers, logs = _restore(ckdir)
    assert ckpt.restored_step == 10 and counters["learner_step"] == 10
    assert ckpt.restore_report == [] and logs == []
    assert int(buffers["replay"]["size"]) == 3


def test_flipped_byte_in_agent_data_falls_back(ckdir):
    root, _ = ckdir
    path = _largest_file(root / "10" / "agent")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    ckpt, counters, _, logs = _restore(ckdir)
    assert ckpt.restored_step == 5 and counters["learner_step"] == 5
    assert any(path in line and "sha256 mismatch" in line for line in logs), logs
    assert any("older intact checkpoint 5" in line for line in logs)


def test_flipped_counter_falls_back(ckdir):
    root, _ = ckdir
    counters_files = [os.path.join(r, f) for r, _, fs in os.walk(root / "10" / "counters") for f in fs]
    path = next(p for p in counters_files if b"learner_step" in open(p, "rb").read())
    text = open(path, "rb").read()
    open(path, "wb").write(text.replace(b'"learner_step": 10', b'"learner_step": 90')
                           .replace(b'"learner_step":10', b'"learner_step":90'))
    assert open(path, "rb").read() != text
    ckpt, counters, _, logs = _restore(ckdir)
    assert ckpt.restored_step == 5 and counters["learner_step"] == 5
    assert any(path in line for line in logs), logs


def test_truncated_file_falls_back(ckdir):
    root, _ = ckdir
    path = _largest_file(root / "10")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    ckpt, counters, _, logs = _restore(ckdir)
    assert ckpt.restored_step == 5
    assert any(path in line and "truncated" in line for line in logs), logs


def test_all_checkpoints_corrupt_is_a_clear_error(ckdir):
    root, agent = ckdir
    for step in ("5", "10"):
        path = _largest_file(root / step / "buffers")
        with open(path, "r+b") as f:
            f.truncate(1)
    ckpt = Checkpointer(str(root), max_to_keep=3, log_fn=lambda m: None)
    with pytest.raises(CheckpointError) as err:
        ckpt.restore(agent)
    ckpt.close()
    text = str(err.value)
    assert "no intact checkpoint" in text and "step 10" in text and "step 5" in text
    assert str(root / "10") in text and str(root / "5") in text


def test_non_finite_buffer_with_valid_manifest_is_skipped(ckdir):
    root, agent = ckdir
    buffers = _buffers(3)
    buffers["replay"]["rewards"][1] = np.nan  # e.g. saved after a fault; manifest still matches
    logs = []
    ckpt = Checkpointer(str(root), max_to_keep=3, log_fn=logs.append)
    ckpt.save(15, agent, buffers, {"learner_step": 15, "version": 3})
    _, _, counters = ckpt.restore(agent)
    ckpt.close()
    assert counters["learner_step"] == 10
    assert any("step 15" in line and "non-finite" in line and "rewards" in line for line in logs), logs


def test_step_without_manifest_restores_with_a_warning(ckdir):
    root, _ = ckdir
    os.remove(root / "10" / MANIFEST_NAME)
    ckpt, counters, _, logs = _restore(ckdir)
    assert ckpt.restored_step == 10
    assert any("unverified" in line for line in logs)


def test_validate_hook_failure_falls_back(ckdir):
    root, agent = ckdir
    logs, seen = [], []

    def validate(agent, buffers, counters):
        seen.append(counters["learner_step"])
        if counters["learner_step"] == 10:
            raise ValueError("state dict 'rewards' contains NaN or inf")

    ckpt = Checkpointer(str(root), max_to_keep=3, log_fn=logs.append)
    _, _, counters = ckpt.restore(agent, validate=validate)
    ckpt.close()
    assert seen == [10, 5] and counters["learner_step"] == 5
    assert any("step 10" in line and "rewards" in line for line in logs)


def test_load_agent_falls_back_to_the_intact_step(tmp_path):
    from serl_ext.loop.checkpoint import load_agent, make_policy_spec

    config = get_config("pick-place,hil_serl")
    config.agent.hidden_dims = (16, 16)
    agent = common.create_agent(config, SPEC, A)
    run_dir = tmp_path / "run"
    ckpt = Checkpointer(str(run_dir / "checkpoints"), max_to_keep=3)
    for step in (3, 6):
        ckpt.save(step, agent, _buffers(1), {"learner_step": step, "version": 1},
                  policy_spec=make_policy_spec(config, SPEC, A))
    ckpt.close()
    path = _largest_file(run_dir / "checkpoints" / "6" / "agent")
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0x01
    open(path, "wb").write(bytes(data))
    _, info = load_agent(str(run_dir))
    assert info["learner_step"] == 3
