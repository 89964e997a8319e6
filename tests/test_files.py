"""serl_ext.files.atomic_write: file modes (a plain open's mode, or the replaced file's)."""

import os
import stat

from serl_ext.files import _UMASK, atomic_write


def test_new_file_gets_the_umask_mode_not_0600(tmp_path):
    path = tmp_path / "results.md"
    atomic_write(path, b"x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_UMASK
    with open(tmp_path / "plain.md", "wb") as f:  # what a plain open gives, for reference
        f.write(b"x")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain.md").st_mode)


def test_replacing_keeps_the_existing_mode(tmp_path):
    path = tmp_path / "key.json"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o640)
    atomic_write(path, lambda f: f.write(b"newer"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
