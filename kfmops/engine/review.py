"""What apply trusts: the desired state of the plan's commit, not what the plan file says about itself.

A plan file's digest proves only that the file is whole; anyone who can write the file can recompute
it. So apply re-derives the expected changes from the commit the plan names (or the work tree, for a
plan of uncommitted desired state applied with --allow-dirty) and refuses any change, dataset record
or change of exposure that the commit does not give. Policy then judges records that git holds. The commit's
desired files are read from the work tree when they are the same bytes (load_desired: by git blob id).
A signed plan made at the current state is checked by its desired digest alone (see `_vouched`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfmops.desired import DesiredState
from kfmops.engine.plan import cached_digest, exposure_of, load_desired
from kfmops.engine.session import Session
from kfmops.errors import StalePlan
from kfmops.plans import planfile
from kfmops.plans.model import Action, Change, Operation, Plan
from kfmops.plans.transaction import Transaction
from kfmops.stores.state import State


def check_against_desired(session: Session, plan: Plan, state: State) -> None:
    """Refuse `plan` unless every change and dataset record is what its commit's desired state gives (for a
    rollback: what the inverse of the apply it undoes gives; for a repair: the last applied values)."""
    if plan.operation is Operation.ROLLBACK:
        _check_rollback(session, plan)
    if plan.operation is Operation.REPAIR:
        _check_repair(plan, state)
    if plan.operation not in {Operation.APPLY, Operation.REFRESH}:
        return  # hotfix and recovery plans are made by kfmops itself, under the lock
    commit = plan.git.get("commit")
    git_ref = None if plan.git.get("dirty") or not commit else commit
    if _vouched(plan, state) and plan.desired_digest == cached_digest(session.workspace, git_ref, review=True):
        return
    desired = load_desired(session.workspace, git_ref, review=True)
    where = f"commit {commit[:12]}" if commit and not plan.git.get("dirty") else "the work tree"
    problems = _differences(plan, desired, state)
    if problems:
        raise StalePlan(
            f"plan {plan.plan_id} does not match the desired state of {where} (edited or forged?): "
            + "; ".join(problems[:5])
            + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            + ". Make a new plan from the reviewed commit"
        )


def _vouched(plan: Plan, state: State) -> bool:
    """Whether kfmops made `plan` at this very state: it is signed (planfile read it only once its signature
    verified) and the state has not moved since. Its changes, records and changes of exposure are then what
    the desired state its digest names gives against this state: when that digest is the commit's, deriving
    them again finds them equal, so the check costs a look at the sealed desired-state cache, not the
    workspace. The cache's entries for a review are sealed with a key derived from the same KFMOPS_PLAN_KEY,
    so this trusts no one the full check does not."""
    return planfile.signed() and plan.desired_digest is not None and plan.state.serial == state.serial


def _check_rollback(session: Session, plan: Plan) -> None:
    undone = str(plan.origin.get("rolls_back", ""))
    transaction = session.stores.history.load(undone)
    expected = {c.address: (c.action, c.after) for c in transaction.inverse()}
    given = {c.address: (c.action, c.after) for c in plan.changes}
    if not undone or given != expected:
        raise StalePlan(
            f"rollback plan {plan.plan_id} does not undo apply {undone or '(none named)'} as its history records "
            "(edited or forged?); make it again with 'kfmops rollback'"
        )
    if plan.datasets != rollback_records(session, transaction, plan.changes):
        raise StalePlan(
            f"rollback plan {plan.plan_id} judges datasets by records the desired state no longer gives "
            "(edited since, or forged); make it again with 'kfmops rollback'"
        )


def rollback_records(session: Session, undone: Transaction, changes: tuple[Change, ...]) -> dict[str, Any]:
    """The records a rollback of `undone` is judged by: today's, as the desired state gives them now (CARE,
    the versions' declared masking), not the ones stored when it ran; a dataset no longer desired keeps
    the record it was last applied with. Each is retargeted at the version the rollback restores."""
    current = load_desired(session.workspace).datasets
    state = session.state()
    applied = state.datasets if state else {}
    records = {name: current.get(name, applied.get(name, record)) for name, record in undone.datasets.items()}
    return retarget(records, changes)


def retarget(datasets: Mapping[str, Any], changes: tuple[Change, ...]) -> dict[str, Any]:
    """Dataset records as of the version the changes point each dataset at (a rollback moves it back).

    Policy judges the version a pointer moves to, with the facts gathered from its data when it judges;
    a version missing from the record is judged with no metadata at all, so it cannot pass by accident.
    """
    records = {}
    for name, record in datasets.items():
        versions = {c.version for c in changes if c.reference.dataset == name and c.version}
        if len(versions) == 1:
            version = versions.pop()
            target = next((v for v in record.get("versions", []) if v.get("id") == version), {"id": version})
            record = {**record, "version": version, "target": target}
        records[name] = record
    return records


def _check_repair(plan: Plan, state: State) -> None:
    """A repair plan may set nothing but the last applied values recorded in `state`."""
    wrong = [
        c.address
        for c in plan.changes
        if (managed := state.resources.get(c.address)) is None
        or (c.after, c.version) != (managed.value, managed.version)
    ]
    wrong += [f"dataset {name}" for name, record in plan.datasets.items() if state.datasets.get(name) != record]
    if wrong:
        raise StalePlan(
            f"repair plan {plan.plan_id} does not restore the last applied values of {', '.join(wrong[:5])} "
            "(edited or forged, or the state moved since); make it again with 'kfmops repair'"
        )


def _differences(plan: Plan, desired: DesiredState, state: State) -> list[str]:
    problems = []
    imported = desired.imported(plan.origin.get("imports") or [])
    for change in plan.changes:
        wanted = desired.references.get(change.address)
        if plan.operation is Operation.REFRESH:
            continue  # a refresh-only plan records live values; its changes write nothing
        if change.action is Action.IMPORT:
            if change.address not in imported:
                problems.append(f"{change.address} is imported, but no Import document names it")
            elif wanted is not None and change.after != wanted.value and not plan.origin.get("accept_live"):
                problems.append(f"{change.address} is imported with a value the desired state does not give")
            continue
        if wanted is None:
            if change.after is not None:
                problems.append(f"{change.address} is not in the desired state, but the plan sets it")
        elif (change.after, change.version) != (wanted.value, wanted.version):
            problems.append(f"{change.address}: the plan sets {change.after!r}, the desired state {wanted.value!r}")
    for name, record in plan.datasets.items():
        expected = desired.datasets.get(name, state.datasets.get(name))
        if expected is None or _without_source(record) != _without_source(expected):
            problems.append(f"the plan's record of dataset {name} is not the desired one")
    given = {entry["dataset"]: entry for entry in plan.exposure}
    for entry in exposure_of(desired, state):
        # every change of exposure of a dataset the plan carries is judged, and as the commit gives it
        if entry["dataset"] in plan.datasets and given.get(entry["dataset"]) != entry:
            problems.append(f"the plan's change of exposure of dataset {entry['dataset']} is not the desired one")
    return problems


def _without_source(record: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset record without where it was read from (a work-tree path, or `commit:path` from git)."""
    return {key: value for key, value in record.items() if key != "source"}
