"""Rollback: the inverse of a committed transaction, as a plan to review and apply through the same path.

The inverse comes from the before values observed while the transaction ran (its WAL), not from its
plan. If live values moved since, the compare-and-swap refuses (exit 5). A rollback is itself a
transaction, so it can be rolled back too. A rollback plan saved to a file is checked at apply against
the history it came from, like any plan against its commit.
"""

from __future__ import annotations

from dataclasses import replace

from kfmops.engine.review import rollback_records
from kfmops.engine.session import Session
from kfmops.errors import KfmopsError
from kfmops.io.clock import new_id, now
from kfmops.plans.model import Operation, Plan, StateRef
from kfmops.plans.transaction import Outcome, Transaction
from kfmops.stores.state import State


def rollback_plan(session: Session, apply_id: str | None) -> tuple[Plan, Transaction]:
    """The plan that undoes `apply_id` (None: the last committed one that moved something), and that apply."""
    history = session.stores.history
    undone = history.load(apply_id) if apply_id else history.last_committed()
    if undone.outcome is not Outcome.COMMITTED:
        raise KfmopsError(f"{undone.id} did not commit ({undone.outcome}); there is nothing to roll back")
    state = session.state() or State.new()
    changes = tuple(replace(c, reason=f"rollback of {undone.id}") for c in undone.inverse())
    plan = Plan(
        plan_id=new_id("rollback"),
        created_at=now(),
        operation=Operation.ROLLBACK,
        workspace=str(session.workspace.root),
        state=StateRef(state.lineage, state.serial),
        changes=changes,
        datasets=rollback_records(session, undone, changes),
        origin={"rolls_back": undone.id},
    )
    return plan, undone


def judged_rollback_plan(session: Session, apply_id: str | None) -> tuple[Plan, Transaction]:
    """The rollback plan with today's policy verdict over it (shown before anything moves), and the apply
    it undoes. Applying it (`engine.apply.apply`) takes the usual safe path and judges it again."""
    plan, undone = rollback_plan(session, apply_id)
    return session.with_verdict(plan, "rollback"), undone
