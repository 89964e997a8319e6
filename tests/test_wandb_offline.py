"""wandb beside tensorboard (serl_ext/loop/logging.py): offline mode, no network use, the same
keys as the JSONL / tensorboard log, run name / group / tags from the config."""

import glob
import os
import socket
import time

import pytest

from configs.train import get_config
from serl_ext.loop.logging import MetricLogger, make_logger, read_jsonl, wandb_settings

wandb = pytest.importorskip("wandb")

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def test_settings_come_from_the_config():
    config = get_config("pick-place,hil_serl")
    config.seed = 3
    config.logging.wandb_tags = ("sweep1",)
    s = wandb_settings(config, "learner")
    assert s["name"] == "pick-place/hil_serl/seed3/learner" and s["group"] == "pick-place/hil_serl/seed3"
    assert s["tags"] == ["pick-place", "hil_serl", "learner", "sweep1"] and s["project"] == "serl_ext"
    assert "mode" not in s and s["config"]["seed"] == 3  # "" leaves the mode to $WANDB_MODE
    config.logging.wandb_group, config.logging.wandb_name, config.logging.wandb_mode = "g", "n", "offline"
    s = wandb_settings(config, "actor")
    assert (s["name"], s["group"], s["mode"]) == ("n/actor", "g", "offline")


@pytest.mark.timeout(120)
def test_offline_run_logs_the_same_keys_without_network(tmp_path, monkeypatch):
    # Any connection attempt off this machine fails loudly (in this process: socket.connect;
    # in wandb's service process: the API and proxy addresses point at a closed local port).
    connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:
            raise AssertionError(f"network use: connect to {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    for var in ("WANDB_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)

    config = get_config("pick-place,hil_serl")
    config.logging.wandb = True
    config.logging.tensorboard = True
    run_dir = str(tmp_path / "run")
    logger = make_logger(config, run_dir, "actor")
    assert isinstance(logger, MetricLogger) and logger.wandb_run is not None
    run = logger.wandb_run
    assert run.name == "pick-place/hil_serl/seed0/actor" and run.group == "pick-place/hil_serl/seed0"
    logger.log({"rollout/return": 1.0, "eval/success_rate": 0.5}, 10)
    logger.log({"rollout/return": 2.0, "intervention/rate": 0.25}, 20)
    run_id = run.id
    logger.close()

    rows = read_jsonl(os.path.join(run_dir, "metrics", "actor.jsonl"))
    keys = {k for row in rows for k in row} - {"step", "wall_s"}
    assert keys == {"rollout/return", "eval/success_rate", "intervention/rate"}
    [offline] = glob.glob(os.path.join(run_dir, "wandb", f"offline-run-*-{run_id}"))
    path = os.path.join(offline, f"run-{run_id}.wandb")
    deadline = time.time() + 30  # wandb's service process finishes writing after finish() returns
    while True:
        with open(path, "rb") as f:
            data = f.read()
        missing = [k for k in keys if k.encode() not in data]
        if not missing or time.time() > deadline:
            break
        time.sleep(0.2)
    assert not missing, f"keys not in the wandb run's history: {missing}"  # the same keys as JSONL / tensorboard
    assert open(os.path.join(run_dir, "wandb", "actor_run_id")).read() == run_id  # a resume continues it
    assert glob.glob(os.path.join(run_dir, "tb", "actor", "events.*"))


def test_missing_wandb_package_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[wandb\]'"):
        MetricLogger(str(tmp_path), "actor", tensorboard=False, wandb={"mode": "offline"})
