"""Riding out backend faults: retries with full-jitter backoff, a circuit breaker per backend, a kill switch.

Every provider call goes through `Resilient`: a retryable error (the provider's own classification:
timeouts, resets, 429/503, Neo4j transient errors, Redis LOADING/BUSY) is retried within a budget of
attempts and seconds; a permanent one (authentication, validation, syntax) is raised at once. Writes
are safe to retry because a provider write sets references to values (idempotent). After
`failure_threshold` consecutive failed calls the backend's circuit opens: calls fail fast until
`open_seconds` pass, then one probe call is let through (half-open) and its success closes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from kfmops.errors import BackendError, KfmopsError
from kfmops.providers.base import Provider, Write
from kfmops.references import Reference

T = TypeVar("T")
KILL_SWITCH_VARIABLE = "KFMOPS_KILL_SWITCH"


@dataclass(frozen=True)
class RetrySettings:
    """Budgets of one provider call (kfmops.yaml `retry:`)."""

    attempts: int = 5
    max_seconds: float = 30.0
    base_delay: float = 0.2
    max_delay: float = 5.0
    failure_threshold: int = 5
    open_seconds: float = 30.0

    @classmethod
    def from_config(cls, raw: dict[str, Any]) -> RetrySettings:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


class CircuitBreaker:
    """closed -> (threshold consecutive failures) -> open -> (open_seconds) -> half-open -> closed or open."""

    def __init__(self, backend: str, threshold: int, open_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.threshold = threshold
        self.open_seconds = open_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.open_seconds else "open"

    def before_call(self) -> None:
        if self.state == "open":
            remaining = self.open_seconds - (self.clock() - self.opened_at)
            raise BackendError(
                self.backend,
                f"circuit open after {self.failures} consecutive failures; not calling it for another {remaining:.0f}s",
            )

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failed(self) -> None:
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.threshold:
            self.opened_at = self.clock()


class Resilient:
    """A provider whose every call is retried within budget and guarded by the backend's circuit breaker.

    Everything else (kinds, round_trips, the catalog of a STAC provider) is the inner provider's.
    """

    def __init__(self, inner: Provider, settings: RetrySettings, on_retry: Callable[[str, str], None]):
        self.inner = inner
        self.name = inner.name
        self.settings = settings
        self.breaker = CircuitBreaker(inner.name, settings.failure_threshold, settings.open_seconds)
        self.on_retry = on_retry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _call(self, operation: Callable[[], T]) -> T:
        settings = self.settings

        def retryable(error: BaseException) -> bool:
            return isinstance(error, Exception) and self.inner.is_retryable(error)

        def count(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self.on_retry(self.name, _error_class(error))

        def attempt() -> T:
            self.breaker.before_call()
            try:
                result = operation()
            except Exception:
                self.breaker.failed()
                raise
            self.breaker.succeeded()
            return result

        retrying = Retrying(
            stop=stop_after_attempt(settings.attempts) | stop_after_delay(settings.max_seconds),
            wait=wait_random_exponential(multiplier=settings.base_delay, max=settings.max_delay),
            retry=retry_if_exception(retryable),
            before_sleep=count,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except BackendError:
            raise
        except KfmopsError:
            raise
        except Exception as exc:
            raise BackendError(
                self.name, f"{type(exc).__name__}: {exc}", retryable=self.inner.is_retryable(exc)
            ) from exc

    def read(self, references: Sequence[Reference]) -> dict[str, Any]:
        return self._call(lambda: self.inner.read(references))

    def write(self, items: Sequence[Write]) -> None:
        self._call(lambda: self.inner.write(items))

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        return self._call(lambda: self.inner.missing_targets(items))

    def is_retryable(self, error: Exception) -> bool:
        return self.inner.is_retryable(error)

    def close(self) -> None:
        self.inner.close()


def _error_class(error: BaseException | None) -> str:
    if error is None:
        return "unknown"
    cause = error.__cause__ if isinstance(error, BackendError) and error.__cause__ else error
    return type(cause).__name__


def kill_switch(config: dict[str, Any]) -> str | None:
    """Why mutations are refused ("red state"), or None. Set by KFMOPS_KILL_SWITCH or `apply.kill_switch`."""
    reason = os.environ.get(KILL_SWITCH_VARIABLE)
    if reason and reason not in {"0", "false", "off"}:
        return f"{KILL_SWITCH_VARIABLE} is set ({reason})"
    if config.get("kill_switch"):
        return f"kfmops.yaml apply.kill_switch is on ({config['kill_switch']})"
    return None
