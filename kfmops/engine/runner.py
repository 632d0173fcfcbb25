"""Write a transaction's batches through the providers, each step announced in its WAL first.

Per batch: re-read the live values, compare-and-swap against the plan's before values, INTENT (with
the observed values), write, read back, DONE. Compensation writes started batches back to their
observed values, newest first, between COMPENSATE and COMPENSATED records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kfmops.engine.session import Session
from kfmops.errors import BackendError, RecoveryRequired, StalePlan
from kfmops.events import BatchCompensated, BatchFinished, BatchStarted
from kfmops.io import crash
from kfmops.plans.model import Change
from kfmops.plans.transaction import Batch, Transaction
from kfmops.stores.wal import WalLog, WalStep


def conflicts(changes: Sequence[Change], live: Mapping[str, Any]) -> list[str]:
    """One line per change whose live value is not the plan's before value."""
    return [
        f"{c.address}: plan expected {c.before!r}, live is {live.get(c.address)!r}"
        for c in changes
        if live.get(c.address) != c.before
    ]


def stale(intro: str, found: list[str]) -> StalePlan:
    more = f"\n  ... and {len(found) - 20} more" if len(found) > 20 else ""
    return StalePlan(f"{intro}:\n  " + "\n  ".join(found[:20]) + more)


def append_durably(log: WalLog, transaction: Transaction, step: WalStep, **fields: Any) -> None:
    """Append a record that must be durable before going on; when it cannot be, stop and leave the WAL
    for `recover`, which learns from the live values what the announced batches did."""
    try:
        log.append(step, **fields)
    except OSError as exc:
        log.close()
        raise RecoveryRequired(
            f"{transaction.operation} {transaction.id} stopped: its WAL could not be written "
            f"({exc.strerror or exc}); nothing more was written. Free the space or fix the folder, then run "
            "'kfmops recover'"
        ) from exc


class BatchRunner:
    """Runs batches of one transaction; `transaction` and `started` say how far it got when it raises."""

    def __init__(self, session: Session, log: WalLog, transaction: Transaction, guard: Callable[[], None]):
        self.session = session
        self.log = log
        self.transaction = transaction
        self.guard = guard
        self.started: list[Batch] = []

    def run(self, batches: Sequence[Batch], total: int) -> Transaction:
        """Write every batch; returns the transaction with the values observed before each write."""
        done = 0
        for batch in batches:
            self.guard()
            self.session.bus.emit(BatchStarted(self.transaction, batch, len(batches)))
            live = self.session.providers.get(batch.backend).read(batch.references)
            found = conflicts(batch.changes, live)
            if found:
                raise stale("live values moved since the plan was made", found)
            observed = {c.address: live.get(c.address) for c in batch.changes}
            self.append(
                WalStep.INTENT, batch=batch.number, backend=batch.backend, addresses=batch.addresses, observed=observed
            )
            self.transaction = self.transaction.observe(observed)
            self.started.append(batch)
            self.write(batch, {c.address: c.after for c in batch.changes})
            self.append(WalStep.DONE, batch=batch.number)
            done += len(batch.changes)
            self.session.bus.emit(BatchFinished(self.transaction, batch, done, total))
        return self.transaction

    def append(self, step: WalStep, **fields: Any) -> None:
        """A WAL record that cannot be written stops the run before the step it announces (RecoveryRequired)."""
        append_durably(self.log, self.transaction, step, **fields)

    def write(self, batch: Batch, values: Mapping[str, Any]) -> None:
        """Set the batch's references to `values` and read them back; a difference is a BackendError."""
        provider = self.session.providers.get(batch.backend)
        provider.write([(c.reference, values[c.address]) for c in batch.changes])
        crash.reached(f"write:{batch.number}")
        readback = provider.read(batch.references)
        wrong = [c.address for c in batch.changes if readback.get(c.address) != values[c.address]]
        if wrong:
            raise BackendError(batch.backend, f"read-back after write differs for {', '.join(wrong[:5])}")

    def compensate(self, batches: Sequence[Batch], observed: Mapping[str, Any]) -> list[str]:
        """Restore `batches`, newest first, to their `observed` before values; the addresses restored."""
        restored: list[str] = []
        for batch in sorted(batches, key=lambda b: -b.number):
            self.append(WalStep.COMPENSATE, batch=batch.number, addresses=batch.addresses)
            self.write(batch, {address: observed[address] for address in batch.addresses})
            self.append(WalStep.COMPENSATED, batch=batch.number)
            restored.extend(batch.addresses)
            self.session.bus.emit(BatchCompensated(self.transaction, batch))
        return restored
