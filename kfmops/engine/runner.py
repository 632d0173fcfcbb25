"""Write a transaction's batches through the providers, each step announced in its WAL first.

Per batch: re-read the live values, compare-and-swap against the plan's before values, INTENT (with
the observed values), write, read back, DONE. Every write carries the idempotency key
WriteKey(transaction id, batch number) where its backend can hold one.

Compensation writes started batches back to their observed values, newest first, between COMPENSATE
and COMPENSATED records, under the same key as the batch's own write: a backend keeps the key with the
last value written under it (Redis records the value, Neo4j marks the new relationship), so the key of
a batch always speaks for what kfmops last put there, and a second key per batch would only add a
lookup. Compensation never overwrites someone else's write: a reference `found` moved (a value neither
before nor after, or the after value that this transaction's key does not vouch for) is left as found,
named in the COMPENSATE record and in the session's warnings; restoring it is a decision for a person.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from kfmops.engine.session import Session
from kfmops.errors import BackendError, RecoveryRequired, StalePlan
from kfmops.events import BatchCompensated, BatchFinished, BatchStarted
from kfmops.io import crash
from kfmops.plans.model import Change
from kfmops.plans.transaction import Batch, Transaction
from kfmops.providers.base import WriteKey
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
        provider.write([(c.reference, values[c.address]) for c in batch.changes], key=self.key(batch))
        crash.reached(f"write:{batch.number}")
        readback = provider.read(batch.references)
        wrong = [c.address for c in batch.changes if readback.get(c.address) != values[c.address]]
        if wrong:
            raise BackendError(batch.backend, f"read-back after write differs for {', '.join(wrong[:5])}")

    def key(self, batch: Batch) -> WriteKey:
        return WriteKey(self.transaction.id, batch.number)

    def found(self, batch: Batch, observed: Mapping[str, Any]) -> dict[str, str]:
        """What the batch's write did to each reference, from its live value and, where the backend holds
        them, its idempotency key: 'written' (the after value, put there under this transaction's key, or on
        a backend without keys), 'not written' (the before value), 'partly written' (each part the before or
        the after value: a write that stopped half way through a reference of several documents), or
        'moved' (anything else, including the after value written by someone else)."""
        provider = self.session.providers.get(batch.backend)
        live = provider.read(batch.references)
        ours = provider.written_by(self.key(batch), batch.references)
        outcome: dict[str, str] = {}
        for change in batch.changes:
            value, before = live.get(change.address), observed[change.address]
            if value == change.after and (ours is None or change.address in ours):
                outcome[change.address] = "written"
            elif value == before:
                outcome[change.address] = "not written"
            elif value != change.after and change.reference.mixes(value, before, change.after):
                outcome[change.address] = "partly written"
            else:
                outcome[change.address] = "moved"
        return outcome

    def compensate(self, batches: Sequence[Batch], observed: Mapping[str, Any]) -> list[str]:
        """Restore `batches`, newest first, to their `observed` before values; the addresses restored.

        A reference someone else moved since the batch was announced is left as found (see the module)."""
        restored: list[str] = []
        for batch in sorted(batches, key=lambda b: -b.number):
            found = self.found(batch, observed)
            left = [address for address in batch.addresses if found[address] == "moved"]
            undo = replace(batch, changes=tuple(c for c in batch.changes if c.address not in left))
            self.append(WalStep.COMPENSATE, batch=batch.number, addresses=undo.addresses, left=left)
            if undo.changes:
                self.write(undo, {address: observed[address] for address in undo.addresses})
            self.append(WalStep.COMPENSATED, batch=batch.number)
            restored.extend(undo.addresses)
            self.session.warnings.extend(
                f"{address} was left as found: someone else moved it while "
                f"{self.transaction.operation} {self.transaction.id} ran; restore it by hand or by a new plan"
                for address in left
            )
            self.session.bus.emit(BatchCompensated(self.transaction, batch))
        return restored
