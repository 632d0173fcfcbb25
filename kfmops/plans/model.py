"""The plan model: a closed set of actions, changes that carry before and after, and the plan itself."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kfmops.references import Reference, fingerprint


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "no-op"

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "delete": "-", "no-op": " "}[self.value]

    @property
    def mutates(self) -> bool:
        return self is not Action.NOOP


@dataclass(frozen=True)
class Change:
    """One reference moving from `before` to `after`.

    before: the live value seen at plan time, the compare-and-swap precondition of apply. None for
            create (the reference must still be absent), the full live value for delete, so that a
            delete can be undone.
    after:  the value apply writes. None for delete. For no-op, equal to before.
    reason: display only; apply never branches on it.
    version: for a dataset part, the dataset version `after` expresses (policy checks that version).
    """

    reference: Reference
    action: Action
    before: Any
    after: Any
    reason: str
    source: str | None = None
    version: str | None = None

    @property
    def address(self) -> str:
        return self.reference.address

    @property
    def precondition(self) -> str:
        return fingerprint(self.before)

    def reversed(self) -> Change:
        """The change that undoes this one: swap before and after (Alembic's reverse())."""
        action = {Action.CREATE: Action.DELETE, Action.DELETE: Action.CREATE}.get(self.action, self.action)
        return Change(self.reference, action, self.after, self.before, f"undo: {self.reason}", self.source)


@dataclass(frozen=True)
class StateRef:
    """The state a plan was made against; apply refuses the plan when either has moved."""

    lineage: str
    serial: int


@dataclass(frozen=True)
class Plan:
    plan_id: str
    created_at: str
    operation: str
    workspace: str
    state: StateRef
    changes: tuple[Change, ...]
    desired_digest: str | None = None
    git: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=lambda: {"decision": "allow", "findings": []})
    drift: tuple[dict[str, Any], ...] = ()
    origin: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        counts = Counter(change.action.value for change in self.changes)
        return {
            "create": counts["create"],
            "update": counts["update"],
            "delete": counts["delete"],
            "no_op": counts["no-op"],
        }

    @property
    def mutations(self) -> list[Change]:
        return [change for change in self.changes if change.action.mutates]

    def has_changes(self) -> bool:
        return bool(self.mutations)
