"""Settle a finished transaction: state (when committed), history, WAL archive, then the observers.

COMMIT is the point of no return. Settling is idempotent and is redone from the WAL by the next
command when a process dies after COMMIT or ABORTED but before its bookkeeping finished.
"""

from __future__ import annotations

from dataclasses import replace

from kfmops.engine.session import Session
from kfmops.events import TransactionAborted, TransactionCommitted
from kfmops.io.clock import now
from kfmops.plans.model import Operation
from kfmops.plans.transaction import Outcome, Transaction
from kfmops.stores.base import WalEntry
from kfmops.stores.state import State
from kfmops.stores.wal import Replay, WalStep, is_finished


def settle(
    session: Session,
    transaction: Transaction,
    outcome: Outcome,
    wal_records: int,
    *,
    compensated: list[str] | tuple[str, ...] = (),
    error: str | None = None,
    recovered: str | None = None,
) -> Transaction:
    """Record `transaction` as finished with `outcome`; returns it settled, as history keeps it.

    `recovered`: the reason when `recover` finished it (history then lists it as a recover).
    Must be called under the lock: the state is written only while this process holds the newest fence.
    Never raises: the outcome already happened. When recording fails, the WAL stays open and the next
    command records it again (`settle_finished`); the failure is a warning.
    """
    stores = session.stores
    state = stores.state.load() or State.new(transaction.state.lineage)
    first = transaction.plan_id not in state.applied_plans  # a redo after a crash may find it recorded
    if outcome is Outcome.COMMITTED and first:
        state.commit(transaction)
    elif recovered is not None:
        state.serial += 1  # a recovery is a change of state even when it restores every value
    settled = transaction.settle(outcome, now(), state.serial, compensated=compensated, error=error)
    if recovered is not None:
        # the interrupted operation is kept: its lineage run ends under its own job name
        origin = {**settled.origin, "recovers": str(transaction.origin.get("recovers") or transaction.operation)}
        settled = replace(settled, operation=Operation.RECOVER, reason=recovered, origin=origin)
    try:
        if (outcome is Outcome.COMMITTED and first) or recovered is not None:
            session.lock.check_fence()
            stores.state.save(state)
        stores.history.append(settled)
        if outcome is Outcome.COMMITTED:
            session.bus.emit(TransactionCommitted(settled, wal_records, _broken_links(session, settled)))
        else:
            session.bus.emit(TransactionAborted(settled, wal_records))
        stores.wal.archive(transaction.id)
    except Exception as exc:
        session.warnings.append(
            f"{settled.operation} {settled.id} {settled.outcome}, but recording it failed "
            f"({type(exc).__name__}: {exc}); the next kfmops command records it from its WAL"
        )
    return settled


def _broken_links(session: Session, transaction: Transaction) -> int:
    """Broken links in the documents the transaction wrote (kfm.ops_broken_links); never fails the apply."""
    try:
        return session.providers.broken_links(c.reference for c in transaction.mutations)
    except Exception as exc:
        session.warnings.append(f"counting broken links failed ({type(exc).__name__}: {exc})")
        return 0


def settle_finished(session: Session) -> None:
    """Finish the bookkeeping of WALs that reached COMMIT or ABORTED but whose process died before it."""
    for entry in session.stores.wal.open_entries():
        if is_finished(entry.records):
            _resettle(session, entry)


def _resettle(session: Session, entry: WalEntry) -> None:
    replay = Replay.of(entry.records, entry.location)
    outcome = Outcome.COMMITTED if replay.last is WalStep.COMMIT else Outcome.ABORTED
    settle(session, replay.transaction, outcome, len(entry.records), compensated=replay.restored)
