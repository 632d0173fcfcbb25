"""Hotfix: change one document's value now, outside git, through the same safe path as apply.

The change is planned like any other (one address, its dataset parts included) and applied with
operation `hotfix`; the patch that makes git match is written beside the plans. Until the desired
state holds the hotfix value, `plan` reports the address as hotfix drift.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kfmops.desired import patch
from kfmops.engine import gates
from kfmops.engine.apply import ApplyOptions, apply, refuse_if_unfinished
from kfmops.engine.freeze import refuse_if_frozen
from kfmops.engine.plan import PlanRequest, make_plan
from kfmops.engine.session import Session
from kfmops.errors import KfmopsError
from kfmops.plans.model import Operation
from kfmops.plans.transaction import Transaction


def hotfix(
    session: Session, address: str, assignment: str, reason: str, *, lock_timeout: float = 0
) -> tuple[Transaction, Path]:
    """Apply one document change outside git; returns the settled transaction and the git patch."""
    gates.refuse_if_red(session.workspace.section("apply"), "hotfix")
    refuse_if_frozen(session, "hotfix")
    refuse_if_unfinished(session)
    if not reason.strip():
        raise KfmopsError("a hotfix needs --reason: it is recorded in history and the ledger")
    workspace = session.workspace
    documents, fix = patch.prepare(workspace, address, assignment)
    plan = make_plan(session, PlanRequest(targets=[address]), patch.desired_with(workspace, documents))
    if not plan.has_changes():
        raise KfmopsError(f"hotfix changes nothing: {address} already holds {assignment}")
    path = workspace.plans_dir / f"hotfix-{plan.plan_id}.patch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fix.patch, encoding="utf-8")
    plan = replace(
        plan,
        operation=Operation.HOTFIX,
        origin={**plan.origin, "patch": workspace.relative(path), "set": assignment},
    )
    return apply(session, plan, ApplyOptions(lock_timeout=lock_timeout, reason=reason)), path
