"""The one way glan-local replaces a file: a crash, a full disk or a power cut leaves the old
file or the whole new one, never half of one. A leaf module, so that every writer (the run
directory, export, merge, the quality step, the sweep summary) can use it."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems (CIFS, some FUSE mounts) refuse fsync on a directory: the rename is
        # then as durable as they make it, and the file itself was synced before it.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def commit(tmp: Path | str, path: Path | str) -> None:
    """Make a finished temporary file `path`: its bytes reach the disk before the rename, and the
    rename reaches it before this returns (the directory's fsync), so a power cut leaves the
    old file or the whole new one."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


@contextlib.contextmanager
def atomic_path(path: Path, shared: bool = False) -> Iterator[Path]:
    """A temporary path next to `path` for a writer to fill, committed when the block ends. On
    any failure (a full disk, a signal) the old file stays and no temporary is left. shared:
    several processes may write this file at once (a sweep's summary), so the temporary gets a
    name of its own."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp" if shared else path.name + ".tmp")
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, shared: bool = False) -> None:
    with atomic_path(path, shared) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")
