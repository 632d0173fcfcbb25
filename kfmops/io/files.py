"""Durable file writes: whole files replaced atomically, and lines appended unbuffered and fsynced."""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from kfmops.io import faults

_TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]{8}")  # what tempfile.mkstemp(prefix=f".{name}.") creates


def write_atomic(path: Path, *data: bytes | memoryview, durable: bool = True, keep_metadata: bool = False) -> None:
    """Replace `path` with the bytes of `data` (one or more parts, written in order, never joined in memory)
    so that a crash leaves either the old or the new bytes, never a mix.

    The new file is 0600 (kfmops' own files), unless `keep_metadata` asks to keep the mode, and the
    owner and group where permitted (as root), of the file it replaces (files kfmops edits for others).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = os.stat(path) if keep_metadata else None
    except FileNotFoundError:
        existing = None
    faults.check(path, "write")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if existing is not None:
                _copy_metadata(handle.fileno(), existing)
            for part in data:
                handle.write(part)
            handle.flush()
            if durable:
                faults.check(path, "fsync")
                os.fsync(handle.fileno())
        faults.check(path, "rename")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def _copy_metadata(fd: int, existing: os.stat_result) -> None:
    """Give the open file `fd` the owner, group and mode of `existing` (owner and group only where allowed)."""
    current = os.fstat(fd)
    if (current.st_uid, current.st_gid) != (existing.st_uid, existing.st_gid):
        for uid in (existing.st_uid, -1):  # another owner needs root; a group of one's own does not
            try:
                os.fchown(fd, uid, existing.st_gid)
                break
            except PermissionError:
                continue
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))  # after fchown, which may clear set-id bits


def remove_stale_temporaries(paths: Iterable[Path]) -> list[Path]:
    """Remove the temporary files that interrupted `write_atomic` calls for `paths` left behind; nothing else.

    Only regular files named exactly as `write_atomic` names its temporary files for one of `paths`
    (`.<name>.` and eight characters of tempfile's alphabet) are removed. Returns them.
    """
    wanted: dict[Path, set[str]] = {}
    for path in paths:
        wanted.setdefault(path.parent, set()).add(path.name)
    removed = []
    for folder, names in wanted.items():
        try:
            entries = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry)
            candidate = folder / entry
            if match and match.group(1) in names and candidate.is_file() and not candidate.is_symlink():
                candidate.unlink(missing_ok=True)
                removed.append(candidate)
    return removed


def append_line(fd: int, line: bytes, path: Path, *, durable: bool = True) -> None:
    """Write one whole line to an open append-only descriptor (of `path`), then fsync it.

    Unbuffered `os.write`: a failed write raises here, before the caller acts on the line, and never
    leaves bytes in a user-space buffer to be flushed later out of order.
    """
    if faults.check(path, "write") == "SHORT":
        os.write(fd, line[: len(line) // 2])
        raise OSError(errno.ENOSPC, "No space left on device (a short write, injected)", str(path))
    view = memoryview(line)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    if durable:
        faults.check(path, "fsync")
        os.fsync(fd)


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
