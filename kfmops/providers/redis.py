"""Redis: pointer keys read with MGET, written in one MULTI/EXEC per batch, caches invalidated by SCAN.

Only keys under the configured prefixes are ever read, written or deleted; KEYS is never used.
A keyed write also records its idempotency key in the same MULTI/EXEC: a hash
`<first prefix>txn:<transaction>:<batch>` of {written key: the value written, as JSON (null: deleted)},
expiring after `idempotency_ttl`. That namespace is kfmops' own: no reference may name a key in it, and
discovery and invalidation never see it.
Settings: url_env (e.g. redis://127.0.0.1:6379/0), password_env, prefixes, timeout, tls,
idempotency_ttl (a duration such as 7d, the default, or seconds).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kfmops.desired.identifiers import cache_key_problem
from kfmops.errors import BackendError
from kfmops.io.clock import parse_duration
from kfmops.providers.base import Provider, Write, WriteKey, chunks, from_environment
from kfmops.references import Reference, ReferenceKind
from kfmops.workspace import BackendConfig, Workspace

DEFAULT_PREFIXES = ("kfm:",)
SCAN_COUNT = 10_000  # keys SCAN walks per call: about a millisecond of the server's time, one round trip
IDEMPOTENCY_TTL = "7d"  # long enough to recover an apply interrupted over a long weekend


def connect(config: BackendConfig) -> redis.Redis:
    """A client for a `redis` backend from its settings; credentials come from the environment only."""
    settings = config.settings
    url = from_environment(config.name, settings, "url")
    assert url is not None  # required: from_environment raises instead
    password = from_environment(config.name, settings, "password", required=False)
    tls = settings.get("tls") or {}
    options: dict[str, Any] = {
        "socket_timeout": settings.get("timeout", 5.0),
        "socket_connect_timeout": settings.get("timeout", 5.0),
        "decode_responses": True,
    }
    if password is not None:
        options["password"] = password
    if tls:
        options.update(ssl_ca_certs=tls.get("ca_file"), ssl_cert_reqs="required" if tls.get("verify", True) else "none")
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise BackendError(config.name, f"invalid Redis URL in {settings.get('url_env')}: {exc}") from None


class RedisProvider(Provider):
    kinds = frozenset({ReferenceKind.CACHE})

    def __init__(self, config: BackendConfig, workspace: Workspace, *, read_only: bool = False):
        super().__init__(config.name)
        self.client = connect(config)
        # Resilient (providers/resilient.py) is the one retry layer: redis-py's own default (10 retries with backoff)
        # would spend the budget unseen by the circuit breaker and kfm.ops_retry_count.
        self.client.set_retry(Retry(NoBackoff(), 0))
        self.prefixes = tuple(config.settings.get("prefixes", DEFAULT_PREFIXES))
        self.batch = int(config.settings.get("batch_size", 1000))
        self.keys_at = f"{self.prefixes[0]}txn:"  # kfmops' own namespace: the idempotency keys
        self.ttl = _seconds(config.name, config.settings.get("idempotency_ttl", IDEMPOTENCY_TTL))

    def _guard(self, key: str, *, pattern: bool = False) -> str:
        if problem := cache_key_problem(key, pattern=pattern):
            raise BackendError(self.name, problem)
        if problem := self._unmanaged(key, pattern=pattern):
            raise BackendError(self.name, problem)
        return key

    def _unmanaged(self, key: str, *, pattern: bool = False) -> str | None:
        """Why a reference may not name `key` (outside the prefixes, or one of the idempotency keys), or None."""
        if not key.startswith(self.prefixes):
            return f"key {key!r} is outside the configured prefixes {list(self.prefixes)}"
        if not pattern and key.startswith(self.keys_at):
            return f"key {key!r} is in {self.keys_at}*, where kfmops keeps its idempotency keys"
        return None

    def _managed(self, key: str) -> bool:
        return self._unmanaged(key) is None

    def _record(self, key: WriteKey) -> str:
        return f"{self.keys_at}{key.transaction}:{key.batch}"

    def read(self, references: Sequence[Reference]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for batch in chunks(references, self.batch):
            keys = [self._guard(r.locator["key"]) for r in batch]
            self.round_trips += 1
            found = self._call(lambda keys=keys: self.client.mget(keys))
            values.update({r.address: v for r, v in zip(batch, found, strict=True)})
        return values

    def write(self, items: Sequence[Write], *, key: WriteKey | None = None) -> None:
        for batch in chunks(items, self.batch):
            patterns: set[str] = set()
            values: dict[str, Any] = {}
            for reference, value in batch:
                values[self._guard(reference.locator["key"])] = value
                patterns.update(self._guard(p, pattern=True) for p in reference.locator.get("invalidate", []))
            # One MULTI/EXEC: one MSET of the values and one DEL of the deleted keys, not a command per key
            # (what SET and DEL would do key by key, and a few replies to parse instead of one per key).
            pipeline = self.client.pipeline(transaction=True)
            if written := {name: value for name, value in values.items() if value is not None}:
                pipeline.mset(written)
            if deleted := [name for name, value in values.items() if value is None]:
                pipeline.delete(*deleted)
            if key is not None:
                pipeline.hset(self._record(key), mapping={name: json.dumps(value) for name, value in values.items()})
                pipeline.expire(self._record(key), self.ttl)
            self.round_trips += 1
            self._call(pipeline.execute)
            if patterns:
                self._invalidate(patterns)

    def _invalidate(self, patterns: set[str]) -> None:
        """Delete keys matching any of `patterns` in one SCAN pass (never KEYS), one UNLINK per page.

        Each pattern is a key or a key prefix and '*' (checked by _guard). SCAN walks the whole keyspace
        whatever it matches, so one pass over the patterns' common prefix costs what one pattern would,
        where a pass per pattern would make a batch's round trips grow with its references.
        """
        exact = {p for p in patterns if not p.endswith("*")}
        starts = tuple(p[:-1] for p in patterns if p.endswith("*"))
        match = os.path.commonprefix([p.rstrip("*") for p in patterns]) + "*"  # noqa: RUF071 - keys, not paths
        cursor = 0
        while True:
            self.round_trips += 1
            cursor, keys = self._call(lambda c=cursor: self.client.scan(c, match=match, count=SCAN_COUNT))
            keys = [k for k in keys if self._managed(k) and (k in exact or k.startswith(starts))]
            if keys:
                self.round_trips += 1
                self._call(lambda k=keys: self.client.unlink(*k))
            if cursor == 0:
                return

    def pointers(self, kind: str, shape: Mapping[str, str]) -> dict[str, Any]:
        """{key: value} of the string keys matching `shape["pattern"]` (SCAN, never KEYS), under the prefixes."""
        pattern = self._guard(shape["pattern"], pattern=True) if kind == ReferenceKind.CACHE else ""
        if not pattern:
            return super().pointers(kind, shape)
        keys: list[str] = []
        cursor = 0
        while True:
            self.round_trips += 1
            cursor, page = self._call(lambda c=cursor: self.client.scan(c, match=pattern, count=SCAN_COUNT))
            keys.extend(k for k in page if self._managed(k))
            if cursor == 0:
                break
        found: dict[str, Any] = {}
        for batch in chunks(sorted(set(keys)), self.batch):
            self.round_trips += 1
            values = self._call(lambda b=batch: self.client.mget(b))
            found.update({k: v for k, v in zip(batch, values, strict=True) if v is not None})
        return found

    def written_by(self, key: WriteKey, references: Sequence[Reference]) -> set[str] | None:
        """The addresses whose live value is the one recorded under `key` (HMGET and MGET in one round trip each
        batch). Redis keeps no writer with a value: someone who set the very value recorded after the write is
        not told apart; someone who set it while the write had not happened is (the record lacks the key)."""
        written: set[str] = set()
        for batch in chunks(references, self.batch):
            keys = [self._guard(r.locator["key"]) for r in batch]
            pipeline = self.client.pipeline(transaction=True)
            pipeline.hmget(self._record(key), keys)
            pipeline.mget(keys)
            self.round_trips += 1
            recorded, live = self._call(pipeline.execute)
            written.update(
                r.address
                for r, mark, value in zip(batch, recorded, live, strict=True)
                if mark is not None and json.loads(mark) == value
            )
        return written

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        return [(r.address, problem) for r, _ in items if (problem := self._unmanaged(r.locator["key"]))]

    def is_retryable(self, error: Exception) -> bool:
        if isinstance(error, BackendError):
            return error.retryable
        if isinstance(error, redis.exceptions.ResponseError):
            message = str(error)
            return message.startswith(("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN"))
        if isinstance(error, redis.exceptions.AuthenticationError):  # a ConnectionError subclass, but permanent
            return False
        return isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | TimeoutError)

    def _call(self, operation: Any) -> Any:
        try:
            return operation()
        except redis.exceptions.AuthenticationError as exc:
            raise BackendError(self.name, f"authentication failed: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise BackendError(self.name, f"{type(exc).__name__}: {exc}", retryable=self.is_retryable(exc)) from exc

    def close(self) -> None:
        self.client.close()


def _seconds(backend: str, setting: Any) -> int:
    """`idempotency_ttl` in whole seconds: a duration (`7d`) or a number of seconds, at least one."""
    try:
        seconds = setting if isinstance(setting, int) and not isinstance(setting, bool) else parse_duration(setting)
    except ValueError as exc:
        raise BackendError(backend, f"idempotency_ttl: {exc}") from None
    whole = seconds if isinstance(seconds, int) else int(seconds.total_seconds())
    if whole < 1:
        raise BackendError(backend, f"idempotency_ttl: {setting!r} is shorter than a second")
    return whole
