"""kfmops' own record: lineage, serial, the managed references with their last applied values.

The state changes in one way only: a committed transaction is settled into it (`commit`). Stores
persist it; this module knows no file or table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from kfmops.plans.model import Change, Operation
from kfmops.plans.transaction import Transaction
from kfmops.references import Reference


@dataclass(frozen=True)
class ManagedReference:
    reference: Reference
    value: Any
    apply_id: str | None = None
    version: str | None = None


@dataclass
class State:
    lineage: str
    serial: int = 0
    resources: dict[str, ManagedReference] = field(default_factory=dict)
    applied_plans: list[str] = field(default_factory=list)
    hotfixes: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # last applied desired record of each

    @classmethod
    def new(cls, lineage: str | None = None) -> State:
        """A state never applied: serial 0, a fresh lineage unless one is given."""
        return cls(lineage=lineage or str(uuid.uuid4()))

    def copy(self) -> State:
        """A copy to change apart from this one: `commit` replaces records in its dicts, never edits one."""
        return replace(
            self,
            resources=dict(self.resources),
            applied_plans=list(self.applied_plans),
            hotfixes=dict(self.hotfixes),
            datasets=dict(self.datasets),
        )

    def managed(self) -> dict[str, tuple[Reference, Any]]:
        return {address: (m.reference, m.value) for address, m in self.resources.items()}

    def versions(self) -> dict[str, str | None]:
        """The dataset version each managed dataset part was last applied at."""
        return {address: managed.version for address, managed in self.resources.items()}

    def commit(self, transaction: Transaction) -> None:
        """Record a committed transaction: every change's after value (no-ops adopt, deletes forget),
        the plan id consumed, the datasets' records, the serial advanced, hotfix marks set or settled.

        A no-op on a reference already recorded with that value keeps its record (and the apply that wrote it),
        so that a store keeping one row per reference rewrites only what the transaction changed."""
        for change in transaction.changes:
            if change.after is None:
                self.resources.pop(change.address, None)
                continue
            kept = self.resources.get(change.address)
            managed = ManagedReference(change.reference, change.after, transaction.id, change.version)
            if change.action.mutates or kept is None or _recorded(kept) != _recorded(managed):
                self.resources[change.address] = managed
            self._track_hotfix(transaction, change.address, change.after, change.action.mutates)
        self.applied_plans.append(transaction.plan_id)
        self.datasets.update(transaction.datasets)
        self.serial += 1

    def keeps(self, change: Change) -> bool:
        """Whether committing `change`, a no-op, would leave this state as it is: the reference is recorded with
        that value and version, and no hotfix mark waits for git to hold it."""
        kept = self.resources.get(change.address)
        return (
            kept is not None
            and change.after is not None
            and change.address not in self.hotfixes
            and _recorded(kept) == (change.reference, change.after, change.version)
        )

    def _track_hotfix(self, transaction: Transaction, address: str, value: Any, mutates: bool) -> None:
        """A hotfix marks its addresses until git holds the value; any other apply of them settles it (a repair,
        which restores the hotfix value, does not)."""
        if transaction.operation is Operation.REPAIR:
            return
        if transaction.operation is not Operation.HOTFIX:
            self.hotfixes.pop(address, None)
        elif mutates:
            self.hotfixes[address] = {
                "apply_id": transaction.id,
                "value": value,
                "reason": transaction.reason,
                "patch": transaction.origin.get("patch"),
            }


def _recorded(managed: ManagedReference) -> tuple[Reference, Any, str | None]:
    return (managed.reference, managed.value, managed.version)
