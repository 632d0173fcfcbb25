"""One lock per workspace state: `file` (flock, default) or `redis` (shared lease with fencing tokens).

Lock info (id, operation, who, pid, created, expires, plan id, CI run URL) is kept beside the lock
so that `lock status` can say who holds it. A waiting command backs off exponentially up to
`--lock-timeout`, then exits 4 naming the holder.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from kfmops.engine.files import write_atomic
from kfmops.errors import KfmopsError, LockHeld


def operator() -> str:
    """Who runs kfmops: KFMOPS_OPERATOR, else user@host."""
    return os.environ.get("KFMOPS_OPERATOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def ci_run_url() -> str | None:
    server, repo, run = (os.environ.get(v) for v in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else os.environ.get("KFMOPS_CI_RUN_URL")


@dataclass(frozen=True)
class LockInfo:
    id: str
    operation: str
    who: str
    host: str
    pid: int
    created: str
    expires: str | None
    plan_id: str | None
    ci_run_url: str | None
    fencing_token: int | None = None

    @classmethod
    def new(cls, operation: str, plan_id: str | None, lease_seconds: float | None = None) -> LockInfo:
        created = datetime.now(UTC)
        expires = (created + timedelta(seconds=lease_seconds)).isoformat(timespec="seconds") if lease_seconds else None
        return cls(
            str(uuid.uuid4()),
            operation,
            operator(),
            socket.gethostname(),
            os.getpid(),
            created.isoformat(timespec="seconds"),
            expires,
            plan_id,
            ci_run_url(),
        )

    def describe(self) -> str:
        where = f" ({self.ci_run_url})" if self.ci_run_url else ""
        return f"lock {self.id} held by {self.who} (pid {self.pid}) for {self.operation} since {self.created}{where}"


@dataclass(frozen=True)
class LockStatus:
    held: bool
    info: LockInfo | None
    stale: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "held": self.held,
            "stale": self.stale,
            "note": self.note,
            "info": asdict(self.info) if self.info else None,
        }


class Lock(ABC):
    """A workspace lock. `acquire` returns the held LockInfo (with its fencing token)."""

    @abstractmethod
    def try_acquire(self, info: LockInfo) -> LockInfo | None:
        """Take the lock now, or return None when another holder has it."""

    @abstractmethod
    def release(self, info: LockInfo) -> None: ...

    @abstractmethod
    def status(self) -> LockStatus: ...

    @abstractmethod
    def force_unlock(self, lock_id: str) -> LockInfo: ...

    def check(self) -> None:  # noqa: B027 - only leases can be lost; other locks have nothing to check
        """Raise LockHeld if the lock was lost while held."""

    def acquire(self, info: LockInfo, timeout: float) -> LockInfo:
        """Take the lock, waiting up to `timeout` seconds with exponential backoff and jitter."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            held = self.try_acquire(info)
            if held is not None:
                return held
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                current = self.status()
                holder = current.info.describe() if current.info else "another process"
                raise LockHeld(
                    f"workspace is locked: {holder}; wait, use --lock-timeout, or if the holder is gone "
                    "'kfmops lock force-unlock ID'"
                )
            time.sleep(min(remaining, random.uniform(0, delay)))
            delay = min(delay * 2, 2.0)

    @contextmanager
    def held(self, operation: str, plan_id: str | None, timeout: float) -> Iterator[LockInfo]:
        """The lock for the duration of a block; released on every exit path, Ctrl-C included."""
        info = self.acquire(LockInfo.new(operation, plan_id, getattr(self, "lease_seconds", None)), timeout)
        try:
            yield info
        finally:
            self.release(info)


class FileLockBackend(Lock):
    """flock on `state/.lock` (the kernel frees it when the holder dies) plus `state/lock.json` info."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.flock = FileLock(folder / ".lock")
        self.info_path = folder / "lock.json"
        self.counter_path = folder / "lock.counter"
        self.stale_note = ""

    def _read_info(self) -> LockInfo | None:
        try:
            return LockInfo(**json.loads(self.info_path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def try_acquire(self, info: LockInfo) -> LockInfo | None:
        try:
            self.flock.acquire(timeout=0)
        except Timeout:
            return None
        left = self._read_info()
        self.stale_note = f"cleared stale lock {left.id} left by pid {left.pid} on {left.host}" if left else ""
        token = int(self.counter_path.read_text() or 0) + 1 if self.counter_path.exists() else 1
        write_atomic(self.counter_path, str(token).encode())
        held = LockInfo(**{**asdict(info), "fencing_token": token})
        write_atomic(self.info_path, json.dumps(asdict(held), indent=1).encode())
        return held

    def release(self, info: LockInfo) -> None:
        self.info_path.unlink(missing_ok=True)
        self.flock.release(force=True)

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
        info = self._read_info()
        try:
            self.flock.acquire(timeout=0)
        except Timeout:
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
            self.flock.release()

    def force_unlock(self, lock_id: str) -> LockInfo:
        current = self.status()
        if current.info is None or current.info.id != lock_id:
            raise KfmopsError(f"no lock with id {lock_id!r} (current: {current.info.id if current.info else 'none'})")
        if current.held:
            raise LockHeld(
                f"{current.info.describe()}: the process still holds its file lock; stop it first "
                "(a file lock is freed by the kernel when its holder exits)"
            )
        self.info_path.unlink(missing_ok=True)
        return current.info


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_STAMP = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) end"


class RedisLockBackend(Lock):
    """A shared lease: SET NX PX, renewed by a heartbeat thread, released by compare-and-delete.

    Every successful acquisition gets a fencing token from INCR, strictly increasing across holders;
    it is written to the WAL so that a holder that lost its lease can be told apart. The token is drawn
    only after SET NX succeeded, while the lease is held, so tokens increase in the order holders got it.
    """

    def __init__(self, client: Any, name: str, lease_seconds: float = 30.0):
        self.client = client
        self.key = f"kfmops:lock:{name}"
        self.fence_key = f"{self.key}:fence"
        self.lease_seconds = lease_seconds
        self._value: str | None = None
        self._stop: threading.Event | None = None
        self.lost = False

    def try_acquire(self, info: LockInfo) -> LockInfo | None:
        lease = int(self.lease_seconds * 1000)
        claim = json.dumps(asdict(info), sort_keys=True)
        if not self.client.set(self.key, claim, nx=True, px=lease):
            return None
        token = int(self.client.incr(self.fence_key))
        held = LockInfo(**{**asdict(info), "fencing_token": token})
        value = json.dumps(asdict(held), sort_keys=True)
        if not self.client.eval(_STAMP, 1, self.key, claim, value, lease):
            return None
        self._value = value
        self.lost = False
        self._stop = threading.Event()
        threading.Thread(target=self._heartbeat, args=(value, self._stop), daemon=True).start()
        return held

    def _heartbeat(self, value: str, stop: threading.Event) -> None:
        interval = self.lease_seconds / 3
        while not stop.wait(interval):
            try:
                renewed = self.client.eval(_RENEW, 1, self.key, value, int(self.lease_seconds * 1000))
            except Exception:
                continue
            if not renewed:
                self.lost = True
                return

    def check(self) -> None:
        if self.lost:
            raise LockHeld("the Redis lock lease was lost (expired while this process was paused); stopping")

    def release(self, info: LockInfo) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._value is not None:
            self.client.eval(_RELEASE, 1, self.key, self._value)
        self._value = None

    def status(self) -> LockStatus:
        raw = self.client.get(self.key)
        if raw is None:
            return LockStatus(False, None)
        ttl = self.client.pttl(self.key)
        return LockStatus(True, LockInfo(**json.loads(raw)), note=f"lease expires in {max(ttl, 0) / 1000:.1f}s")

    def force_unlock(self, lock_id: str) -> LockInfo:
        raw = self.client.get(self.key)
        info = LockInfo(**json.loads(raw)) if raw else None
        if info is None or info.id != lock_id:
            raise KfmopsError(f"no lock with id {lock_id!r} (current: {info.id if info else 'none'})")
        self.client.eval(_RELEASE, 1, self.key, raw)
        return info
