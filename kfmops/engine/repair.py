"""Repair: plan the moves that bring drifted references back to the values kfmops last applied.

The opposite of `apply --refresh-only`, which accepts drift into state. A repair plan writes, for every managed
reference whose live value differs from its last applied one (within --target), that last applied value; it
takes the plan, approval and apply path of any plan, and apply checks it against the state it came from (a
repair plan file that sets anything else is refused). Hotfix marks are not drift to repair: git must catch up.
"""

from __future__ import annotations

from kfmops.addresses import select
from kfmops.engine.plan import check_selectors
from kfmops.engine.session import Session
from kfmops.events import PlanMade
from kfmops.io.clock import new_id, now
from kfmops.plans.model import Action, Change, Operation, Plan, StateRef
from kfmops.stores.state import State

REASON = "repair: drifted from the last applied value, which it gets back"


def repair_plan(session: Session, targets: list[str]) -> Plan:
    """The judged plan restoring every drifted managed reference (of `targets`, or all)."""
    state = session.state() or State.new()
    check_selectors(targets, list(state.resources))
    chosen = select(sorted(state.resources), targets, [])
    live = session.providers.read_live(state.resources[address].reference for address in chosen)
    changes = []
    for address in chosen:
        managed = state.resources[address]
        current = live.get(address)
        if current != managed.value:
            action = Action.CREATE if current is None else Action.UPDATE
            changes.append(Change(managed.reference, action, current, managed.value, REASON, None, managed.version))
    rank = {kind: i for i, kind in enumerate(session.workspace.apply_order)}
    changes.sort(key=lambda c: (rank[c.reference.kind], c.address))
    touched = {c.reference.dataset for c in changes if c.reference.dataset}
    made = Plan(
        plan_id=new_id("repair"),
        created_at=now(),
        operation=Operation.REPAIR,
        workspace=str(session.workspace.root),
        state=StateRef(state.lineage, state.serial),
        changes=tuple(changes),
        datasets={name: state.datasets[name] for name in sorted(touched) if name in state.datasets},
        origin={"targets": targets},
    )
    judged = session.with_verdict(made, "repair")
    session.bus.emit(PlanMade(judged))
    return judged
