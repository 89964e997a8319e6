"""The shared helpers: atomic writes (serl_ext/files.py), nested config merging
(serl_ext/config_merge.py), and the one-way import between the env and the operator."""

import ast
import json
import os

import numpy as np
import pytest

from serl_ext.config_merge import merge_nested
from serl_ext.files import atomic_write, atomic_write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ atomic writes
def test_atomic_write_bytes_and_writer_replace_the_file(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write(path, b"first")
    assert path.read_bytes() == b"first"
    atomic_write(str(path), lambda f: np.save(f, np.arange(3)), fsync_dir=True)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(np.load(f), np.arange(3))
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]  # no temp file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')  # sorted keys

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    with pytest.raises(TypeError):
        atomic_write_json(path, {"x": object()})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_atomic_write_json_creates_the_folder_and_atomic_write_does_not(tmp_path):
    atomic_write_json(tmp_path / "new" / "deep" / "x.json", [1])
    assert json.loads((tmp_path / "new" / "deep" / "x.json").read_text()) == [1]
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "x.bin", b"")


# ------------------------------------------------------------------ config merging
DEFAULTS = {"lr": 3e-4, "dims": (256, 256), "encoder": {"type": "state", "keys": ()}}


def test_merge_nested_overrides_recursively_without_touching_inputs():
    overrides = {"lr": 1e-3, "encoder": {"keys": ("pixels",)}}
    out = merge_nested(DEFAULTS, overrides)
    assert out == {"lr": 1e-3, "dims": (256, 256), "encoder": {"type": "state", "keys": ("pixels",)}}
    assert DEFAULTS["encoder"]["keys"] == () and overrides == {"lr": 1e-3, "encoder": {"keys": ("pixels",)}}
    # A non-mapping value where the default is a mapping replaces it.
    assert merge_nested(DEFAULTS, {"encoder": None})["encoder"] is None


def test_merge_nested_unknown_fields_error_drop_or_keep():
    with pytest.raises(ValueError, match=r"unknown recovery-policy config field 'encoder.typo'"):
        merge_nested(DEFAULTS, {"encoder": {"typo": 1}}, name="recovery-policy config")
    assert merge_nested(DEFAULTS, {"extra": 1, "encoder": {"x": 2}}, unknown="drop") == DEFAULTS
    kept = merge_nested(DEFAULTS, {"extra": 1}, unknown="keep")
    assert kept["extra"] == 1 and kept["lr"] == 3e-4
    with pytest.raises(ValueError, match="unknown must be one of"):
        merge_nested(DEFAULTS, {}, unknown="ignore")
    with pytest.raises(TypeError):
        merge_nested(DEFAULTS, [("lr", 1)])


def test_the_three_former_copies_use_the_helper():
    from serl_ext.agents.common import merge_config
    from uniintervene_jax.intervention.config import resolve_config
    from uniintervene_jax.recovery.config import get_default_config as recovery_defaults

    import ml_collections

    defaults = ml_collections.ConfigDict({"a": 1, "sub": {"b": 2}})
    merged = merge_config(defaults, ml_collections.ConfigDict({"sub": {"b": 3}, "c": 4}), drop_unknown=True)
    assert merged.to_dict() == {"a": 1, "sub": {"b": 3}}
    with pytest.raises(ValueError, match="unknown intervention config field 'model.typo'"):
        resolve_config({"model": {"typo": 1}})
    from uniintervene_jax.recovery.config import resolve_config as resolve_recovery_config

    with pytest.raises(ValueError, match="unknown recovery-policy config field 'typo'"):
        resolve_recovery_config({"typo": 1})
    assert (resolve_recovery_config({"horizon": 4}).horizon == 4
            and resolve_recovery_config(None).to_dict() == recovery_defaults().to_dict())


# ------------------------------------------------------------------ env <-> operator
def _imports(path):
    tree = ast.parse(open(os.path.join(REPO, path)).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_env_does_not_import_the_operator():
    assert "serl_ext.envs.metaworld_env" in _imports("serl_ext/envs/operator.py")
    assert not any("operator" in name for name in _imports("serl_ext/envs/metaworld_env.py"))


def test_make_env_takes_the_operator_wrapper_from_the_registry_or_the_argument():
    from serl_ext.envs import make_env
    from serl_ext.envs import metaworld_env
    from serl_ext.envs.operator import SimulatedOperator

    assert metaworld_env._OPERATOR_WRAPPER is SimulatedOperator  # registered by serl_ext/envs/__init__.py
    calls = []

    def wrapper(env, config):
        calls.append(config)
        return SimulatedOperator(env, config)

    env = make_env("pick-place", 0, operator={"enabled": True}, operator_wrapper=wrapper)
    try:
        assert calls == [{"enabled": True}]
        node, found = env, False
        while hasattr(node, "env"):
            found = found or isinstance(node, SimulatedOperator)
            node = node.env
        assert found
    finally:
        env.close()
    saved = metaworld_env._OPERATOR_WRAPPER
    try:
        metaworld_env.register_operator_wrapper(None)
        with pytest.raises(ValueError, match="no operator wrapper"):
            make_env("pick-place", 0, operator={"enabled": True})
    finally:
        metaworld_env.register_operator_wrapper(saved)


# ------------------------------------------------------------------ model folders
def test_model_folder_spec_and_params_helpers():
    from uniintervene_jax import io

    spec = (("pixels", (8, 8, 3), np.uint8), ("state", (39,), "float32"))
    js = io.obs_spec_to_json(spec)
    assert js == [["pixels", [8, 8, 3], "uint8"], ["state", [39], "float32"]]
    back = io.obs_spec_from_json(json.loads(json.dumps(js)))
    assert back == (("pixels", (8, 8, 3), "uint8"), ("state", (39,), "float32"))
    example = io.example_from_spec(back)
    assert example["pixels"].dtype == np.uint8 and example["state"].shape == (39,)
    with pytest.raises(ValueError, match="malformed obs_spec"):
        io.obs_spec_from_json([["state", ["x"], "float32"]])
    ref = {"dense": {"kernel": np.zeros((2, 3), np.float32)}}
    out = io.params_like({"dense": {"kernel": np.ones((2, 3), np.float32)}}, ref, "p")
    np.testing.assert_array_equal(np.asarray(out["dense"]["kernel"]), np.ones((2, 3)))
    with pytest.raises(ValueError, match="p/dense/kernel"):
        io.params_like({"dense": {"kernel": np.ones((3, 2), np.float32)}}, ref, "p")
