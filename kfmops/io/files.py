"""Durable file writes: whole files replaced atomically, and lines appended unbuffered and fsynced."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new bytes, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def append_line(fd: int, line: bytes, *, durable: bool = True) -> None:
    """Write one whole line to an open append-only descriptor, then fsync it.

    Unbuffered `os.write`: a failed write raises here, before the caller acts on the line, and never
    leaves bytes in a user-space buffer to be flushed later out of order.
    """
    view = memoryview(line)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    if durable:
        os.fsync(fd)


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
