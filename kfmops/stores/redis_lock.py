"""The shared lock on Redis: a lease (SET NX PX) renewed by a heartbeat, released by compare-and-delete,
with a fencing token from INCR that strictly increases across holders."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from typing import Any

from kfmops.errors import KfmopsError, LockHeld
from kfmops.stores.lock import Locker, LockInfo, LockStatus

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_STAMP = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) end"


class RedisLock(Locker):
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

    def newest_fence(self) -> int:
        return int(self.client.get(self.fence_key) or 0)

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
