"""The Transaction: one plan run against the backends (an apply, rollback, hotfix or recovery).

A transaction is what the WAL records, the state store commits, history keeps and governance reports.
It holds the plan's changes (each with the dataset version it restores on undo), the before values
observed under the lock just before each batch was written, and an outcome. Its inverse is built from
those observed values, not from the plan's copy of them: a plan made at 9:00 and applied at 9:05 undoes
to what was live at 9:05.

Must not: be read or written as a dict outside `plans.codec`; be mutated (every step returns a copy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from kfmops.plans.model import Change, Operation, StateRef, summarize
from kfmops.references import Reference, ReferenceKind


class Outcome(StrEnum):
    """PENDING until the WAL says COMMIT or ABORTED; NOTHING when there was nothing to write."""

    PENDING = "pending"
    COMMITTED = "committed"
    ABORTED = "aborted"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Batch:
    """Changes of one kind on one backend, written together under one INTENT/DONE pair of the WAL."""

    number: int
    backend: str
    changes: tuple[Change, ...]

    @property
    def references(self) -> list[Reference]:
        return [change.reference for change in self.changes]

    @property
    def addresses(self) -> list[str]:
        return [change.address for change in self.changes]


def cut_batches(changes: Sequence[Change], order: Sequence[ReferenceKind], size: int, first: int = 0) -> list[Batch]:
    """Mutations grouped by kind (in apply order) and backend, cut into batches of `size`, numbered from `first`."""
    groups: dict[tuple[int, str, str], list[Change]] = {}
    rank = {kind: i for i, kind in enumerate(order)}
    for change in changes:
        if change.action.mutates:
            reference = change.reference
            groups.setdefault((rank[reference.kind], reference.kind, reference.backend), []).append(change)
    batches: list[Batch] = []
    for (_, _, backend), group in sorted(groups.items()):
        for start in range(0, len(group), size):
            batches.append(Batch(first + len(batches), backend, tuple(group[start : start + size])))
    return batches


@dataclass(frozen=True)
class Transaction:
    """One run of a plan. Fields up to `changes` are fixed at BEGIN; the rest fill in as it runs.

    observed: address -> the live value read under the lock just before its batch was written.
    serial:   the state serial after the transaction settled (committed: one more than before).
    """

    FORMAT_VERSION = 1

    id: str
    plan_id: str
    operation: Operation
    operator: str
    started: str
    state: StateRef
    changes: tuple[Change, ...]
    datasets: Mapping[str, Any] = field(default_factory=dict)
    unchanged: int = 0
    """The plan's no-op changes left out of `changes`: state records each of them already, as the plan found it,
    so committing them would change nothing; counted so that history and the ledger still say how many."""
    origin: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None
    rolls_back: str | None = None
    lock_id: str | None = None
    fencing_token: int | None = None
    observed: Mapping[str, Any] = field(default_factory=dict)
    outcome: Outcome = Outcome.PENDING
    finished: str | None = None
    serial: int | None = None
    compensated: tuple[str, ...] = ()
    error: str | None = None

    @property
    def mutations(self) -> list[Change]:
        return [change for change in self.changes if change.action.mutates]

    @property
    def moves(self) -> list[Change]:
        """The mutations, imports and forgets: what an undo has to reverse."""
        return [change for change in self.changes if change.action.moves]

    @property
    def applied(self) -> list[str]:
        """Addresses this transaction moved or imported or forgot (none unless it committed)."""
        return [c.address for c in self.moves] if self.outcome is Outcome.COMMITTED else []

    def summary(self) -> dict[str, int]:
        counts = summarize(self.changes)
        return counts | {"no_op": counts["no_op"] + self.unchanged}

    def batches(self, order: Sequence[ReferenceKind], size: int) -> list[Batch]:
        return cut_batches(self.changes, order, size)

    def observe(self, values: Mapping[str, Any]) -> Transaction:
        """With more observed before values (a batch's, just logged in its INTENT record)."""
        return replace(self, observed={**self.observed, **values})

    def settle(
        self,
        outcome: Outcome,
        finished: str,
        serial: int,
        *,
        compensated: Sequence[str] = (),
        error: str | None = None,
    ) -> Transaction:
        """The finished transaction, as history keeps it."""
        return replace(
            self, outcome=outcome, finished=finished, serial=serial, compensated=tuple(compensated), error=error
        )

    def inverse(self) -> tuple[Change, ...]:
        """The changes that restore exactly what this transaction replaced, newest first.

        Each mutation reversed back to the value observed under the lock (the plan's before when the
        batch never reached its INTENT record, which only happens to transactions that did not commit);
        each import forgotten, each forget imported again.
        """
        if self.outcome is not Outcome.COMMITTED:
            return ()
        return tuple(
            change.reversed(self.observed.get(change.address, change.before), observed=True)
            for change in reversed(self.moves)
        )

    def outputs(self) -> list[Change]:
        """The references this transaction moved, each from its observed before value to its after value."""
        return [replace(c, before=self.observed.get(c.address, c.before)) for c in self.mutations]
