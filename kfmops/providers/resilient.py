"""Riding out backend faults: retries with full-jitter backoff and a circuit breaker per backend.

Every provider call goes through `Resilient`: a retryable error (the provider's own classification:
timeouts, resets, refused connections, 429/503, Neo4j transient errors, Redis LOADING/BUSY) is retried
within a budget of `attempts` backend calls and `max_seconds`; a permanent one (authentication,
validation, syntax, a permission problem) is raised at once. Writes are safe to retry because a
provider write sets references to values (idempotent), and its idempotency key with them: a retried
write records the same key again.

The circuit breaker of a backend counts consecutive transient failures across calls. At
`failure_threshold` it opens: no call reaches the backend for `open_seconds`; then one probe call is
let through (half-open) and its success closes the circuit. A call that finds the circuit open waits
for the probe if that fits in its time budget (so an outage shorter than `open_seconds` plus the
backoff is ridden out) and fails at once otherwise, naming the open circuit. Must not: sleep past a
call's `max_seconds`, or count a permanent error against the backend's health (the backend answered).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kfmops.errors import BackendError, Diagnostic, InputError, KfmopsError
from kfmops.providers.base import Provider, Write, WriteKey
from kfmops.references import Reference

if TYPE_CHECKING:  # tenacity is imported by the first backend call, not when kfmops starts
    from tenacity import RetryCallState

T = TypeVar("T")


@dataclass(frozen=True)
class RetrySettings:
    """Budgets of one provider call and of a backend's circuit breaker (kfmops.yaml `retry:`).

    attempts: backend calls at most per provider call (1 = no retry); max_seconds: time budget of one
    call, sleeps included; base_delay, max_delay: the full-jitter backoff, a sleep drawn uniformly from
    [0, min(max_delay, base_delay x 2^(n-1))] after the n-th failure; failure_threshold: consecutive
    transient failures that open the circuit; open_seconds: how long it stays open before a probe.
    """

    attempts: int = 5
    max_seconds: float = 30.0
    base_delay: float = 0.2
    max_delay: float = 5.0
    failure_threshold: int = 5
    open_seconds: float = 30.0

    @classmethod
    def from_config(cls, raw: dict[str, Any], file: str | None = None) -> RetrySettings:
        """Settings from the `retry:` section; an unknown key or a value out of range is an input error."""
        known = {f.name: f.type for f in fields(cls)}
        problems = [
            Diagnostic(f"retry.{key}: unknown setting", f"known settings: {', '.join(known)}", file=file)
            for key in raw
            if key not in known
        ]
        values: dict[str, Any] = {}
        for key in known:
            if key not in raw:
                continue
            value = raw[key]
            whole = key in {"attempts", "failure_threshold"}
            wrong_type = isinstance(value, bool) or not isinstance(value, int if whole else int | float)
            if wrong_type or value < (1 if whole else 0):
                problems.append(
                    Diagnostic(
                        f"retry.{key}: {value!r} is not allowed",
                        "use a whole number of at least 1" if whole else "use a number of seconds, 0 or more",
                        file=file,
                    )
                )
            else:
                values[key] = value
        if problems:
            raise InputError(problems)
        return cls(**values)

    def backoff(self, failures: int) -> float:
        """The full-jitter sleep after the `failures`-th consecutive failure of one call."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (failures - 1)))


class CircuitOpen(BackendError):
    """The backend's circuit is open: the call was not made. `wait` is the time left until a probe."""

    def __init__(self, backend: str, failures: int, wait: float):
        self.failures = failures
        self.wait = wait
        super().__init__(
            backend,
            f"circuit open after {failures} consecutive failures; not calling it for another {wait:.1f}s",
            retryable=True,
        )


class CircuitBreaker:
    """closed -> (threshold consecutive failures) -> open -> (open_seconds) -> half-open -> closed or open."""

    def __init__(self, backend: str, threshold: int, open_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.threshold = threshold
        self.open_seconds = open_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.times_opened = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.open_seconds else "open"

    def remaining(self) -> float:
        """Seconds until the next probe is allowed (0 when closed or half-open)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.open_seconds - (self.clock() - self.opened_at))

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go through now."""
        if self.state == "open":
            raise CircuitOpen(self.backend, self.failures, self.remaining())

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failed(self) -> None:
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.threshold:
            self.opened_at = self.clock()
            self.times_opened += 1


class Resilient:
    """A provider whose every call is retried within budget and guarded by the backend's circuit breaker.

    Everything else (kinds, round_trips, the catalog of a STAC provider) is the inner provider's.
    `on_retry(backend, error_class)` is told about each backend call that failed and is tried again.
    """

    def __init__(
        self,
        inner: Provider,
        settings: RetrySettings,
        on_retry: Callable[[str, str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.inner = inner
        self.name = inner.name
        self.settings = settings
        self.breaker = CircuitBreaker(inner.name, settings.failure_threshold, settings.open_seconds, clock)
        self.on_retry = on_retry
        self.clock = clock
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _call(self, operation: Callable[[], T]) -> T:
        settings, breaker = self.settings, self.breaker
        calls = 0  # attempts that reached the backend (waiting on an open circuit is not one)
        failures = 0  # consecutive transient failures of this call
        last: list[Exception] = []  # the last error the backend itself caused
        started = self.clock()

        def attempt() -> T:
            nonlocal calls, failures
            breaker.before_call()
            calls += 1
            try:
                result = operation()
            except Exception as exc:
                last[:] = [exc]
                if self.inner.is_retryable(exc):
                    failures += 1
                    breaker.failed()
                else:
                    breaker.succeeded()  # the backend answered; the error is about the request
                raise
            breaker.succeeded()
            return result

        from tenacity import Retrying, retry_if_exception

        def retryable(error: BaseException) -> bool:
            return isinstance(error, CircuitOpen) or (isinstance(error, Exception) and self.inner.is_retryable(error))

        def wait(state: RetryCallState) -> float:
            if breaker.state == "open":  # the next call can only be the probe: wait for it, not for a refusal
                return breaker.remaining() + 0.001
            return settings.backoff(failures)

        def stop(state: RetryCallState) -> bool:
            out_of_time = self.clock() - started + state.upcoming_sleep > settings.max_seconds
            return calls >= settings.attempts or out_of_time

        def count(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if not isinstance(error, CircuitOpen):
                self.on_retry(self.name, _error_class(error))

        retrying = Retrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(retryable),
            before_sleep=count,
            sleep=self.sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Exception as exc:
            if not retryable(exc):
                if isinstance(exc, KfmopsError):
                    raise
                raise BackendError(self.name, f"{type(exc).__name__}: {exc}") from exc
            if isinstance(exc, CircuitOpen) and not last:
                raise  # the circuit was open before this call: it failed fast and tried nothing
            cause = last[0] if last else exc
            raise self._gave_up(cause, calls, self.clock() - started) from cause

    def _gave_up(self, error: Exception, calls: int, seconds: float) -> BackendError:
        """The error of a call that ran out of budget: the last failure, what was tried, the circuit's state."""
        prefix = f"backend {self.name!r}: "
        detail = (
            str(error).removeprefix(prefix) if isinstance(error, BackendError) else f"{type(error).__name__}: {error}"
        )
        summary = f"{detail}; gave up after {calls} call{'s' if calls != 1 else ''} in {seconds:.1f}s"
        if self.breaker.state != "closed":
            summary += (
                f"; circuit open after {self.breaker.failures} consecutive failures "
                f"(calls fail fast for {self.settings.open_seconds:g}s, then one probe)"
            )
        return BackendError(self.name, summary, retryable=True)

    def read(self, references: Sequence[Reference]) -> dict[str, Any]:
        return self._call(lambda: self.inner.read(references))

    def write(self, items: Sequence[Write], *, key: WriteKey | None = None) -> None:
        self._call(lambda: self.inner.write(items, key=key))

    def written_by(self, key: WriteKey, references: Sequence[Reference]) -> set[str] | None:
        return self._call(lambda: self.inner.written_by(key, references))

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        return self._call(lambda: self.inner.missing_targets(items))

    def broken_links(self, references: Sequence[Reference]) -> int:
        return self._call(lambda: self.inner.broken_links(references))

    def pointers(self, kind: str, shape: Mapping[str, str]) -> dict[str, Any]:
        return self._call(lambda: self.inner.pointers(kind, shape))

    def version_facts(self, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._call(lambda: self.inner.version_facts(paths))

    def data_file(self, path: str) -> Path | None:
        return self.inner.data_file(path)  # a local path, resolved without a backend call

    def is_retryable(self, error: Exception) -> bool:
        return self.inner.is_retryable(error)

    def close(self) -> None:
        self.inner.close()


def _error_class(error: BaseException | None) -> str:
    if error is None:
        return "unknown"
    if isinstance(error, CircuitOpen):
        return "CircuitOpen"
    cause = error.__cause__ if isinstance(error, BackendError) and error.__cause__ else error
    return type(cause).__name__
