"""benchmarks/uniintervene_protocol.py: which pipeline calls are left, what an ablation folder
reuses, and the comparison commands (no training here)."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import uniintervene_protocol as protocol  # noqa: E402
from uniintervene_jax.pipeline import STAGES  # noqa: E402

ALL_OUTPUTS = ["data/manifest.json", "models/value/model.json", "report/value_report.json", "labels.npz",
               "report/labels.json", "models/intervention/model.json", "report/intervention_summary.json",
               "memory/memory.json", "report/memory_summary.json", "models/recovery/model.json",
               "report/recovery.json", "metrics.json", "report.md"]


def _touch(root, rel, text="x"):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _args(call):
    return {a.split("=", 1)[0]: a.split("=", 1)[1] for a in call[1] if a.startswith("--") and "=" in a}


def test_offline_calls_resume_from_the_first_missing_stage(tmp_path):
    out = str(tmp_path)
    calls = protocol.offline_commands(out, ["pick-place"], [])
    assert len(calls) == 1 and _args(calls[0])["--stages"] == ",".join(STAGES)
    assert "--config.recovery.head=continuous" in calls[0][1]
    base = os.path.join(out, "offline", "pick-place")
    for rel in ALL_OUTPUTS:
        _touch(base, rel)
    assert protocol.offline_commands(out, ["pick-place"], []) == []
    os.remove(os.path.join(base, "memory", "memory.json"))  # memory lost: memory and what follows
    (call,) = protocol.offline_commands(out, ["pick-place"], [])
    assert _args(call)["--stages"] == "memory,recovery,report"


def test_ablation_folders_reuse_the_task_folder_and_retrain_what_they_change(tmp_path):
    out = str(tmp_path)
    base = os.path.join(out, "offline", "assembly")
    for rel in ALL_OUTPUTS:
        _touch(base, rel, text=f"base {rel}")
    calls = protocol.offline_commands(out, [], ["assembly"])
    by_dir = {os.path.basename(c[0]): c for c in calls}
    assert sorted(by_dir) == sorted(f"assembly-{n}" for n in protocol.ABLATIONS)
    tvr = by_dir["assembly-no_tvr"]
    assert _args(tvr)["--stages"] == "intervention,report"
    assert _args(tvr)["--config.intervention.head_type"] == "binary"
    assert _args(tvr)["--config.data.dir"] == os.path.join(base, "data")
    assert _args(by_dir["assembly-no_memory"])["--config.use_memory_goal"] == "False"
    assert _args(by_dir["assembly-no_memory"])["--stages"] == "recovery,report"
    rdir, _, prepare = tvr
    _touch(rdir, "models/intervention/model.json", "stale")  # a stale retrained output goes
    protocol.prepare_ablation(*prepare)
    for rel in ("models/value/model.json", "labels.npz", "memory/memory.json", "models/recovery/model.json",
                "report/value_report.json"):
        assert open(os.path.join(rdir, rel)).read() == f"base {rel}"
    for rel in ("models/intervention/model.json", "report/intervention_summary.json", "metrics.json", "data"):
        assert not os.path.exists(os.path.join(rdir, rel)), rel
    memory_dir, _, prepare = by_dir["assembly-no_memory"]
    protocol.prepare_ablation(*prepare)
    assert os.path.exists(os.path.join(memory_dir, "models/intervention/model.json"))
    assert not os.path.exists(os.path.join(memory_dir, "models/recovery"))


def test_comparison_commands_hold_the_protocol_and_start_each_method_from_its_folder(tmp_path):
    out = str(tmp_path)
    cmd = protocol.compare_command(out, ["pick-place", "assembly"], "0,1,2", True, False)
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in cmd if a.startswith("--") and "=" in a}
    assert args["--methods"] == "hil_serl,hil_serl+uniintervene" and args["--baseline"] == "hil_serl"
    assert args["--eval_episodes"] == "20" and args["--eval_period"] == "5000" and "--commit" in cmd
    assert args["--method_flags"] == ("hil_serl+uniintervene=--config.uniintervene.init_from="
                                      + os.path.join(out, "offline", "{task}"))
    assert not any(a.startswith("--stop_by") for a in cmd)
    cmd = protocol.ablation_command(out, ["pick-place"], "0", False, True, "2026-12-02T21:30")
    assert "--stop_by=2026-12-02T21:30" in cmd
    flags = [a for a in cmd if a.startswith("--method_flags=")]
    assert len(flags) == 4 and "--report_only" in cmd
    assert f"--method_flags=hil_serl+uniintervene-no_tvr=--config.uniintervene.init_from=" \
           f"{os.path.join(out, 'offline', '{task}-no_tvr')}" in flags
    # The ablation table reuses the main comparison's full-method runs through links.
    assert protocol.missing_full_runs(out, ["pick-place"], "0,1") == ["pick-place/seed0", "pick-place/seed1"]
    full = os.path.join(out, "compare", "runs", "pick-place", protocol.FULL, "seed0")
    _touch(full, "summary.json", "{}")
    assert protocol.missing_full_runs(out, ["pick-place"], "0") == []
    protocol.link_full_runs(out, ["pick-place"])
    assert os.path.exists(os.path.join(out, "ablations", "runs", "pick-place", protocol.FULL, "seed0", "summary.json"))


def test_stop_after_minutes_becomes_one_absolute_deadline():
    from benchmarks.comparison.launch import parse_stop_by

    now = 1_800_000_000.0
    when = protocol.stop_by_time("", 90, now=now)
    assert parse_stop_by(when) == now + 90 * 60  # the same instant for both compare parts
    assert protocol.stop_by_time("", 0) == "" and protocol.stop_by_time("2026-12-02T21:30", 0) == "2026-12-02T21:30"
    for args, match in ((("2026-12-02T21:30", 5), "not both"), (("", -1), "negative"), (("later", 0), "ISO 8601")):
        with pytest.raises(SystemExit, match=match):
            protocol.stop_by_time(*args)
