"""The plan model: a closed set of actions, changes that carry before and after, and the plan itself."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kfmops.io.canonical import fingerprint
from kfmops.references import Reference


class Action(StrEnum):
    """CREATE, UPDATE and DELETE write to a backend. IMPORT and FORGET only change kfmops' state: an import
    records a live value kfmops did not manage yet, a forget stops managing a reference and leaves it live."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "no-op"
    IMPORT = "import"
    FORGET = "forget"

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "delete": "-", "no-op": " ", "import": "<=", "forget": "=>"}[self.value]

    @property
    def mutates(self) -> bool:
        """Whether apply writes this change to a backend."""
        return self in (Action.CREATE, Action.UPDATE, Action.DELETE)

    @property
    def moves(self) -> bool:
        """Whether applying this change changes anything: a backend, or which references kfmops manages."""
        return self is not Action.NOOP


class Operation(StrEnum):
    """Why a plan is run; every operation takes the same safe path."""

    APPLY = "apply"
    REFRESH = "refresh"
    ROLLBACK = "rollback"
    HOTFIX = "hotfix"
    RECOVER = "recover"
    REPAIR = "repair"


@dataclass(frozen=True)
class Change:
    """One reference moving from `before` to `after`.

    before: the live value seen at plan time, the compare-and-swap precondition of apply. None for
            create (the reference must still be absent), the full live value for delete, so that a
            delete can be undone. For import and forget, the live value kfmops records or lets go.
    after:  the value apply writes. None for delete. For no-op, equal to before. For import, equal to
            before (recorded in state, never written); None for forget (kfmops stops managing it).
    reason: display only; apply never branches on it.
    version: for a dataset part, the dataset version `after` expresses (policy checks that version).
    before_version: the dataset version `before` expressed when kfmops last applied it (the version an
            undo restores); None when unknown.
    """

    reference: Reference
    action: Action
    before: Any
    after: Any
    reason: str
    source: str | None = None
    version: str | None = None
    before_version: str | None = None

    @property
    def address(self) -> str:
        return self.reference.address

    @property
    def precondition(self) -> str:
        return fingerprint(self.before)

    def reversed(self, restore: Any = None, *, observed: bool = False) -> Change:
        """The change that undoes this one (Alembic's reverse()): from `after` back to `before`.

        With `observed=True`, back to `restore` instead: the value seen under the lock just before the
        write, which is what an apply really replaced (the plan's `before` may be older).
        """
        target = restore if observed else self.before
        if self.action in (Action.IMPORT, Action.FORGET):
            # Undoing an import forgets the reference; undoing a forget imports it again. Neither writes.
            imported = self.action is Action.FORGET
            value = self.before if imported else self.after
            action = Action.IMPORT if imported else Action.FORGET
            return Change(
                self.reference,
                action,
                value,
                value if imported else None,
                f"undo: {self.reason}",
                self.source,
                self.before_version,
                self.version,
            )
        if target is None:
            action = Action.DELETE if self.after is not None else Action.NOOP
        elif self.after is None:
            action = Action.CREATE
        else:
            action = Action.UPDATE if target != self.after else Action.NOOP
        return Change(
            self.reference,
            action,
            self.after,
            target,
            f"undo: {self.reason}",
            self.source,
            self.before_version,
            self.version,
        )


def summarize(changes: Iterable[Change]) -> dict[str, int]:
    """How many changes of each action: {"create", "update", "delete", "no_op"}, and "import" and "forget"
    when there are any (the summary of a plan without them reads as it always did)."""
    counts = Counter(change.action for change in changes)
    return {
        "create": counts[Action.CREATE],
        "update": counts[Action.UPDATE],
        "delete": counts[Action.DELETE],
        "no_op": counts[Action.NOOP],
    } | {action.value: counts[action] for action in (Action.IMPORT, Action.FORGET) if counts[action]}


@dataclass(frozen=True)
class StateRef:
    """The state a plan was made against; apply refuses the plan when either has moved."""

    lineage: str
    serial: int


@dataclass(frozen=True)
class Plan:
    plan_id: str
    created_at: str
    operation: Operation
    workspace: str
    state: StateRef
    changes: tuple[Change, ...]
    desired_digest: str | None = None
    git: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=lambda: {"decision": "allow", "findings": []})
    drift: tuple[dict[str, Any], ...] = ()
    origin: dict[str, Any] = field(default_factory=dict)
    exposure: tuple[dict[str, Any], ...] = ()
    """Datasets whose CARE metadata (label, sovereignty, heritage, sensitivity, visibility, consent, review)
    differs from what was last applied: a change of exposure, judged by policy even when no reference moves."""
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Facts read from the data of each dataset's target version when the plan was judged (display and
    audit only: policy always judges facts gathered anew)."""
    checks: tuple[dict[str, Any], ...] = ()
    """Checkpoint results ({dataset, version, check, passed, detail, blocks}) of the versions the plan moves
    pointers to, as found when it was judged (display and audit only: apply runs the checks again)."""

    def summary(self) -> dict[str, int]:
        return summarize(self.changes)

    @property
    def mutations(self) -> list[Change]:
        """The changes apply writes to a backend."""
        return [change for change in self.changes if change.action.mutates]

    @property
    def moves(self) -> list[Change]:
        """The changes that change something: the mutations, imports and forgets."""
        return [change for change in self.changes if change.action.moves]

    def has_changes(self) -> bool:
        return bool(self.moves) or bool(self.exposure)
