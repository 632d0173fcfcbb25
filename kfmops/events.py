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
    | TransactionStarted
    | BatchStarted
    | BatchFinished
    | BatchCompensated
    | TransactionCommitted
    | TransactionAborted
    | RetryHappened
)
Observer = Callable[[Event], None]


@dataclass
class EventBus:
    """Delivers each event to every observer, in subscription order; collects observers' failures."""

    observers: list[Observer] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def subscribe(self, observer: Observer) -> None:
        self.observers.append(observer)

    def emit(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception as exc:
                self.warnings.append(
                    f"{_name(observer)} failed on {type(event).__name__} ({type(exc).__name__}: {exc}); "
                    "the references are as reported"
                )


def _name(observer: Observer) -> str:
    owner = getattr(observer, "__self__", None)
    return type(owner).__name__ if owner is not None else getattr(observer, "__name__", "an observer")
