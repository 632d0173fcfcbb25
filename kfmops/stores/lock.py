"""The workspace lock (Terraform's Locker): one per workspace state, whatever store keeps it.

Lock info (id, operation, who, pid, created, expires, plan id, CI run URL, fencing token) is kept
with the lock so that `lock status` can say who holds it. A waiting command backs off exponentially
up to `--lock-timeout`, then exits 4 naming the holder.
"""

from __future__ import annotations

import getpass
import os
import random
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

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


class Locker(ABC):
    """A workspace lock. `acquire` returns the held LockInfo (with its fencing token)."""

    holding: LockInfo | None = None

    @abstractmethod
    def try_acquire(self, info: LockInfo) -> LockInfo | None:
        """Take the lock now, or return None when another holder has it."""

    @abstractmethod
    def release(self, info: LockInfo) -> None: ...

    @abstractmethod
    def status(self) -> LockStatus: ...

    @abstractmethod
    def force_unlock(self, lock_id: str) -> LockInfo: ...

    def unlockable(self, lock_id: str, still_held: str) -> LockInfo:
        """The record of lock `lock_id`, once sure that it is the current one and that its holder is gone;
        `still_held` says why a live holder cannot be unlocked (and what to do)."""
        current = self.status()
        if current.info is None or current.info.id != lock_id:
            raise KfmopsError(f"no lock with id {lock_id!r} (current: {current.info.id if current.info else 'none'})")
        if current.held:
            raise LockHeld(f"{current.info.describe()}: {still_held}")
        return current.info

    def check(self) -> None:  # noqa: B027 - only leases can be lost; other locks have nothing to check
        """Raise LockHeld if the lock was lost while held."""

    @abstractmethod
    def newest_fence(self) -> int:
        """The fencing token of the newest holder (0 before any)."""

    def check_fence(self) -> None:
        """Raise LockHeld unless this process holds the lock with the newest fencing token: a holder that
        lost its lock must write nothing more."""
        self.check()
        token = self.holding.fencing_token if self.holding else None
        newest = self.newest_fence()
        if token is None or newest != token:
            raise LockHeld(
                f"the workspace lock was taken over (fencing token {newest} is not this process's {token}); "
                "nothing more is written by this process"
            )

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
        """The lock for the duration of a block; released on every exit path, Ctrl-C included.

        Re-entrant: inside a block that already holds it, the same lock is yielded again (plan and apply of
        `apply --auto-approve` run under one lock)."""
        if self.holding is not None:
            yield self.holding
            return
        info = self.acquire(LockInfo.new(operation, plan_id, getattr(self, "lease_seconds", None)), timeout)
        self.holding = info
        try:
            yield info
        finally:
            self.holding = None
            self.release(info)
