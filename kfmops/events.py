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
    plan: Plan


@dataclass(frozen=True)
class PolicyEvaluated:
    """Policy judged a plan (at plan, apply, rollback, hotfix or recover time)."""

    operation: str
    decision: str
    findings: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class RefreshProgress:
    """Live values of `done` of `total` references were read."""

    done: int
    total: int


@dataclass(frozen=True)
class TransactionStarted:
    transaction: Transaction


@dataclass(frozen=True)
class BatchStarted:
    transaction: Transaction
    batch: Batch
    total_batches: int


@dataclass(frozen=True)
class BatchFinished:
    transaction: Transaction
    batch: Batch
    done: int  # mutations written so far, this batch included
    total: int  # mutations in the transaction


@dataclass(frozen=True)
class BatchCompensated:
    transaction: Transaction
    batch: Batch


@dataclass(frozen=True)
class TransactionCommitted:
    """Settled as committed: state, history and WAL archive are written."""

    transaction: Transaction
    wal_records: int
    broken_links: int = 0


@dataclass(frozen=True)
class TransactionAborted:
    """Settled as aborted: every written batch was compensated (or nothing was written)."""

    transaction: Transaction
    wal_records: int


@dataclass(frozen=True)
class RetryHappened:
    backend: str
    error_class: str


Event = (
    PlanMade
    | PolicyEvaluated
    | RefreshProgress
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
