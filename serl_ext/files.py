"""Atomic file writes: the one helper every writer of run folders, episodes, model folders and
the recovery memory uses.

A write goes to a hidden temp file in the target's folder (``.{name}.{random}.tmp``, which
``serl_ext.data.episodes.list_episodes`` and globs of ``*.json`` / ``*.npz`` skip), is flushed
and fsync'ed, then ``os.replace``d over the target: a reader sees the old file or the new one,
never a partial one, and a failed write leaves the old file and no temp file behind.
"""

import json
import os
import tempfile
from typing import IO, Any, Callable, Union


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import (os.umask can only be read by setting it, which is not thread-safe later).
_UMASK = _read_umask()


def atomic_write(path: Union[str, os.PathLike], data: Union[bytes, Callable[[IO[bytes]], None]],
                 fsync_dir: bool = False) -> None:
    """Writes ``data`` to ``path`` atomically.

    Args:
      path: target file; its folder must exist.
      data: the bytes, or ``write(f)`` that writes into the open binary temp file (e.g.
        ``lambda f: np.savez(f, **arrays)``).
      fsync_dir: also fsync the folder so that the rename itself survives a power cut.
    Raises:
      FileNotFoundError: the folder does not exist.
      OSError (and whatever ``write`` raises): the target is then untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            try:
                mode = os.stat(path).st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o666 & ~_UMASK
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if fsync_dir:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        except OSError:  # some file systems refuse fsync on a folder; the rename is done anyway
            pass
        finally:
            os.close(dir_fd)


def atomic_write_json(path: Union[str, os.PathLike], obj: Any) -> None:
    """Writes ``obj`` as indented, key-sorted JSON to ``path`` atomically, creating the folder.

    Raises:
      TypeError: ``obj`` is not JSON-serialisable (nothing is written).
    """
    text = json.dumps(obj, indent=2, sort_keys=True)
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    atomic_write(path, text.encode())
