"""Typed events the engine emits while it plans and runs transactions, and the bus observers listen on.

Governance (ledger, lineage, PROV), telemetry, the progress display and the `--json` stream are
observers: the engine never calls them. An observer that raises is reported as a warning and never
changes an outcome: a transaction that reached COMMIT stays committed whatever its observers do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kfmops.plans.model import Plan
from kfmops.plans.transaction import Batch, Transaction


@dataclass(frozen=True)
class PlanMade:
    """A plan was made and judged by policy."""

    plan: Plan


@dataclass(frozen=True)
class PolicyEvaluated:
    """Policy judged a plan (at plan, apply, rollback, hotfix or recover time)."""

    operation: str
    decision: str
    findings: tuple[dict[str, Any], ...]
    decisions: tuple[dict[str, Any], ...] = ()
    """Access decisions: per judged dataset, its access, rationale and obligations."""


@dataclass(frozen=True)
class AttemptDenied:
    """Policy denied an attempt to change references (apply, rollback, hotfix, recover --forward): nothing
    was written, and the attempt is ledgered.

    origin: where the attempt came from (`git_commit`, `ci_run_url`, `approved_by`), as a transaction's."""

    operation: str
    plan: Plan
    findings: tuple[dict[str, Any], ...]
    operator: str
    reason: str | None = None
    origin: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TransactionEvent:
    """Something happened to `transaction` (as it stood at that moment)."""

    transaction: Transaction


@dataclass(frozen=True)
class TransactionStarted(TransactionEvent):
    """BEGIN is durable in the WAL; batches follow."""


@dataclass(frozen=True)
class BatchStarted(TransactionEvent):
    """The batch is about to be read, compared and written."""

    batch: Batch
    total_batches: int


@dataclass(frozen=True)
class BatchFinished(TransactionEvent):
    """The batch is written, read back and DONE; `done` of `total` mutations are written so far."""

    batch: Batch
    done: int
    total: int


@dataclass(frozen=True)
class BatchCompensated(TransactionEvent):
    """The batch is back at its observed before values (COMPENSATED)."""

    batch: Batch


@dataclass(frozen=True)
class TransactionCommitted(TransactionEvent):
    """Settled as committed: state, history and WAL archive are written."""

    wal_records: int
    broken_links: int = 0


@dataclass(frozen=True)
class TransactionAborted(TransactionEvent):
    """Settled as aborted: every written batch was compensated (or nothing was written)."""

    wal_records: int


@dataclass(frozen=True)
class RetryHappened:
    """A backend call failed with a transient error and is tried again."""

    backend: str
    error_class: str


Event = (
    PlanMade
    | PolicyEvaluated
    | AttemptDenied
    | TransactionStarted
    | BatchStarted
    | BatchFinished
    | BatchCompensated
    | TransactionCommitted
    | TransactionAborted
    | RetryHappened
)
Observer = Callable[[Event], None]


class ObserverFailed(Exception):
    """A required observer (the ledger) could not record an event; the caller must keep what it needs to retry."""


@dataclass
class EventBus:
    """Delivers each event to every observer, in subscription order; collects observers' failures.

    An observer's failure never changes an outcome. A *required* observer's failure is also raised, as
    ObserverFailed, once every observer has had the event: settling then keeps the WAL so that the next
    command records the transaction again.
    """

    observers: list[tuple[Observer, bool]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def subscribe(self, observer: Observer, *, required: bool = False) -> None:
        self.observers.append((observer, required))

    def emit(self, event: Event) -> None:
        failed: list[str] = []
        for observer, required in self.observers:
            try:
                observer(event)
            except Exception as exc:
                problem = f"{_name(observer)} failed on {type(event).__name__} ({type(exc).__name__}: {exc})"
                if required:
                    failed.append(problem)
                else:
                    self.warnings.append(f"{problem}; the references are as reported")
        if failed:
            raise ObserverFailed("; ".join(failed))


def _name(observer: Observer) -> str:
    owner = getattr(observer, "__self__", None)
    return type(owner).__name__ if owner is not None else getattr(observer, "__name__", "an observer")
