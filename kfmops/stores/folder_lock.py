"""The folder store's lock: an flock on the `state/` folder itself, plus the holder's record in
`state/lock.json` and a fencing-token counter in `state/lock.counter`.

The kernel frees the flock when its holder dies. It is taken on the folder, not on a file in it, so it
cannot be bypassed by deleting a file: a second runner cannot lock the folder while the first holds it.
Every state write checks the writer's fencing token against the counter (`Locker.check_fence`), so a holder
that lost its lock can never write after another took over."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path

from kfmops.errors import KfmopsError
from kfmops.io.files import write_atomic
from kfmops.stores.lock import Locker, LockInfo, LockStatus


class FolderLock(Locker):
    """flock on `state/.lock` (the kernel frees it when the holder dies) plus `state/lock.json` info."""

    def __init__(self, folder: Path):
        self.folder = folder  # created by the first acquire: looking at a lock creates nothing
        self.fd: int | None = None
        self.info_path = folder / "lock.json"
        self.counter_path = folder / "lock.counter"
        self.stale_note = ""

    def _read_info(self) -> LockInfo | None:
        try:
            return LockInfo(**json.loads(self.info_path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def try_acquire(self, info: LockInfo) -> LockInfo | None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = _lock_folder(self.folder)
        if fd is None:
            return None
        self.fd = fd
        left = self._read_info()
        self.stale_note = f"cleared stale lock {left.id} left by pid {left.pid} on {left.host}" if left else ""
        token = int(self.counter_path.read_text() or 0) + 1 if self.counter_path.exists() else 1
        held = LockInfo(**{**asdict(info), "fencing_token": token})
        try:
            write_atomic(self.counter_path, str(token).encode())
            write_atomic(self.info_path, json.dumps(asdict(held), indent=1).encode())
        except OSError as exc:  # a full disk or an I/O error: not taken, and nothing was changed
            self.release(held)
            raise KfmopsError(
                f"cannot take the workspace lock: {exc.filename or self.folder} could not be written "
                f"({exc.strerror or exc}); nothing was changed"
            ) from exc
        return held

    def newest_fence(self) -> int:
        try:
            return int(self.counter_path.read_text() or 0)
        except FileNotFoundError:
            return 0

    def release(self, info: LockInfo) -> None:
        self.info_path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor frees the flock
            self.fd = None

    def _holder(self) -> LockInfo | None:
        """The record of the process that holds the flock. One that took it an instant ago gets a moment to
        write its record: until then the file is missing, or still the one a dead holder left."""
        deadline = time.monotonic() + 1.0
        while True:
            info = self._read_info()
            written = info is not None and (info.host != socket.gethostname() or _pid_alive(info.pid))
            if written or time.monotonic() > deadline:
                return info
            time.sleep(0.01)

    def status(self) -> LockStatus:
        if not self.folder.is_dir():
            return LockStatus(False, None)
        info = self._read_info()
        probe = _lock_folder(self.folder)
        if probe is None:
            return LockStatus(True, self._holder())
        try:
            if info is None:
                return LockStatus(False, None)
            alive = info.host == socket.gethostname() and _pid_alive(info.pid)
            note = f"left by pid {info.pid} on {info.host}, " + (
                "which is alive but no longer holds it" if alive else "which is no longer running"
            )
            return LockStatus(False, info, stale=True, note=note)
        finally:
            os.close(probe)

    def force_unlock(self, lock_id: str) -> LockInfo:
        info = self.unlockable(
            lock_id,
            "the process still holds its file lock; stop it first (a file lock is freed by the kernel when its "
            "holder exits)",
        )
        self.info_path.unlink(missing_ok=True)
        return info


def _lock_folder(folder: Path) -> int | None:
    """A descriptor of `folder` holding an exclusive flock on it, or None when another holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
