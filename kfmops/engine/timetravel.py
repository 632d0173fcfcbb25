"""Time travel: roll back to a point (`rollback --to`, `--to-time`), and read the state of the past
(`state show --at`, `diff`), all from history.

A point-in-time rollback undoes every committed transaction after the point as one plan: their inverses,
newest first, collapsed per address (`plans.compose`). It is judged by policy and applied through the same
safe path as any plan (a ROLLBACK transaction: undoable with `rollback --last`). An address changed
outside kfmops since kfmops last applied it stops the plan, named, unless `force_live`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kfmops.engine.session import Session
from kfmops.errors import KfmopsError, StalePlan
from kfmops.io.clock import new_id, now
from kfmops.plans.compose import compose, tracks
from kfmops.plans.model import Operation, Plan, StateRef
from kfmops.stores.state import State
from kfmops.stores.timeline import committed_since, last_before, require_committed, state_after


@dataclass(frozen=True)
class PointInTime:
    """Where a point-in-time rollback goes: after apply `target` (None: before the first apply)."""

    target: str | None
    undone: tuple[str, ...]  # the committed applies it undoes, newest first

    def describe(self) -> str:
        point = f"the point right after {self.target}" if self.target else "the point before the first apply"
        return f"{point}, undoing {len(self.undone)} committed apply(s): {', '.join(self.undone)}"


def point(session: Session, apply_id: str | None, at_time: str | None) -> str | None:
    """The apply a `--to APPLY_ID` or `--to-time TIME` names (None: before the first apply)."""
    if (apply_id is None) == (at_time is None):
        raise KfmopsError("give exactly one of --to APPLY_ID or --to-time TIME")
    if at_time is not None:
        return last_before(session.stores.history, at_time)
    require_committed(session.stores.history, str(apply_id))
    return apply_id


def rollback_to_plan(session: Session, target: str | None, *, force_live: bool = False) -> tuple[Plan, PointInTime]:
    """The judged plan that brings every reference moved after `target` back to its value then."""
    history = session.stores.history
    later = committed_since(history, target)
    moving = [t for t in later if t.moves]
    if not moving:
        raise KfmopsError(f"nothing to roll back: no committed apply after {target} changed anything")
    state = session.state() or State.new()
    then = state_after(history, target, state.lineage)
    found = tracks(later)
    live = session.providers.read_live(track.reference for track in found.values())
    records = {address: (managed.reference, managed.version) for address, managed in then.resources.items()}
    changes, moved = compose(found, records, state.resources, live, force_live=force_live)
    where = PointInTime(target, tuple(t.id for t in later))
    if moved and not force_live:
        raise StalePlan(
            f"cannot roll back to {where.describe()}: {len(moved)} reference(s) changed outside kfmops since "
            "kfmops last applied them:\n  " + "\n  ".join(moved[:20]) + "\nPut them back, or pass --force-live "
            "to overwrite the live values; nothing was changed"
        )
    touched = {c.reference.dataset for c in changes if c.reference.dataset}
    datasets = {
        name: record for name in sorted(touched) if (record := then.datasets.get(name, state.datasets.get(name)))
    }
    plan = Plan(
        plan_id=new_id("rollback"),
        created_at=now(),
        operation=Operation.ROLLBACK,
        workspace=str(session.workspace.root),
        state=StateRef(state.lineage, state.serial),
        changes=tuple(changes),
        datasets=datasets,
        origin={"rolls_back_to": target, "undoes": list(where.undone), "force_live": force_live},
    )
    return session.with_verdict(plan, "rollback"), where


def state_at(session: Session, apply_id: str) -> State:
    """The state as it was right after `apply_id` committed."""
    lineage = (session.state() or State.new()).lineage
    return state_after(session.stores.history, apply_id, lineage)


@dataclass(frozen=True)
class Moved:
    """One address whose managed value differs between two points: added, removed or changed."""

    address: str
    what: str
    before: Any
    after: Any
    before_version: str | None
    after_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "change": self.what,
            "before": self.before,
            "after": self.after,
            "before_version": self.before_version,
            "after_version": self.after_version,
        }


def applies_diff(session: Session, first: str, second: str) -> list[Moved]:
    """What moved between the state after `first` and the state after `second`, by address."""
    old, new = state_at(session, first), state_at(session, second)
    moved = []
    for address in sorted(set(old.resources) | set(new.resources)):
        a, b = old.resources.get(address), new.resources.get(address)
        if a is not None and b is not None and (a.value, a.version) == (b.value, b.version):
            continue
        what = "added" if a is None else "removed" if b is None else "changed"
        moved.append(
            Moved(
                address,
                what,
                a.value if a else None,
                b.value if b else None,
                a.version if a else None,
                b.version if b else None,
            )
        )
    return moved
