"""The one serializer: Change, Plan and Transaction to and from plain JSON data.

Plan files, WAL records, history and the policy input all use these functions, so a change has one
JSON form everywhere, but for one compaction: a plan file holds each no-op as a short row (`unchanged_row`),
since most of a plan of a large workspace is no-ops and a row is read and checked in a fraction of the
time. Decoding checks the data against the shipped JSON Schema first and names the
first problem; a KeyError or TypeError never escapes. Digests and signatures are `planfile`'s business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kfmops import __version__
from kfmops.errors import Diagnostic, InputError
from kfmops.plans.model import Action, Change, Operation, Plan, StateRef
from kfmops.plans.transaction import Outcome, Transaction
from kfmops.references import Reference, ReferenceKind
from kfmops.schemas import record_problems

PLAN_FORMAT = 2


def change_to_dict(change: Change) -> dict[str, Any]:
    reference = change.reference
    return {
        "address": change.address,
        "kind": str(reference.kind),
        "backend": reference.backend,
        "dataset": reference.dataset,
        "locator": reference.locator,
        "action": str(change.action),
        "before": change.before,
        "after": change.after,
        "reason": change.reason,
        "source": change.source,
        "version": change.version,
        "before_version": change.before_version,
        "precondition": change.precondition,
    }


def change_from_dict(data: Mapping[str, Any]) -> Change:
    """A Change from data already checked against its schema."""
    reference = Reference(
        data["address"], ReferenceKind(data["kind"]), data["backend"], data["locator"], data.get("dataset")
    )
    return Change(
        reference,
        Action(data["action"]),
        data["before"],
        data["after"],
        data.get("reason") or "",
        data.get("source"),
        data.get("version"),
        data.get("before_version"),
    )


def unchanged_row(change: Change) -> list[Any]:
    """A no-op as a plan file holds it (plan.schema.json#/$defs/unchanged): its before and after are one value."""
    reference = change.reference
    return [
        change.address,
        str(reference.kind),
        reference.backend,
        reference.dataset,
        reference.locator,
        change.after,
        change.reason,
        change.source,
        change.version,
        change.before_version,
    ]


def change_from_row(row: list[Any]) -> Change:
    """A no-op Change from a row already checked against its schema."""
    address, kind, backend, dataset, locator, value, reason, source, version, before_version = row
    reference = Reference(address, ReferenceKind(kind), backend, locator, dataset)
    return Change(reference, Action.NOOP, value, value, reason, source, version, before_version)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as the JSON document of schemas/plan.schema.json, without digest and signature."""
    return {
        "format_version": PLAN_FORMAT,
        "kfmops_version": __version__,
        "plan_id": plan.plan_id,
        "created_at": plan.created_at,
        "operation": str(plan.operation),
        "workspace": plan.workspace,
        "git": plan.git,
        "desired_digest": plan.desired_digest,
        "state": {"lineage": plan.state.lineage, "serial": plan.state.serial},
        "origin": plan.origin,
        "changes": [
            unchanged_row(change) if change.action is Action.NOOP else change_to_dict(change) for change in plan.changes
        ],
        "datasets": plan.datasets,
        "exposure": list(plan.exposure),
        "facts": plan.facts,
        "checks": list(plan.checks),
        "drift": list(plan.drift),
        "policy": plan.policy,
        "summary": plan.summary(),
    }


def plan_from_dict(data: Any, name: str) -> Plan:
    """A Plan from its JSON document; InputError naming `name` and the first problem when it does not fit."""
    _check(data, "plan", name)
    return Plan(
        **_shared(data, lambda c: change_from_row(c) if type(c) is list else change_from_dict(c)),
        created_at=data["created_at"],
        workspace=data["workspace"],
        desired_digest=data.get("desired_digest"),
        git=data.get("git") or {},
        datasets=data.get("datasets") or {},
        policy=data["policy"],
        drift=tuple(data.get("drift") or ()),
        origin=data.get("origin") or {},
        exposure=tuple(data.get("exposure") or ()),
        facts=data.get("facts") or {},
        checks=tuple(data.get("checks") or ()),
    )


def transaction_to_dict(transaction: Transaction, *, header_only: bool = False) -> dict[str, Any]:
    """The transaction as JSON data; `header_only` gives what is fixed at BEGIN (the WAL's first record)."""
    data: dict[str, Any] = {
        "format_version": Transaction.FORMAT_VERSION,
        "apply_id": transaction.id,
        "plan_id": transaction.plan_id,
        "operation": str(transaction.operation),
        "operator": transaction.operator,
        "started": transaction.started,
        "state": {"lineage": transaction.state.lineage, "serial": transaction.state.serial},
        "reason": transaction.reason,
        "rolls_back": transaction.rolls_back,
        "lock_id": transaction.lock_id,
        "fencing_token": transaction.fencing_token,
        "origin": transaction.origin,
        "datasets": transaction.datasets,
        "changes": [change_to_dict(change) for change in transaction.changes],
        "unchanged": transaction.unchanged,
    }
    if not header_only:
        data |= {
            "observed": transaction.observed,
            "outcome": str(transaction.outcome),
            "finished": transaction.finished,
            "serial": transaction.serial,
            "compensated": list(transaction.compensated),
            "error": transaction.error,
        }
    return data


def transaction_from_dict(data: Any, name: str) -> Transaction:
    """A Transaction from its JSON data (a history record, or a WAL BEGIN record's fields)."""
    _check(data, "transaction", name)
    return Transaction(
        **_shared(data),
        id=data["apply_id"],
        operator=data["operator"],
        started=data["started"],
        datasets=data.get("datasets") or {},
        unchanged=data.get("unchanged", 0),
        origin=data.get("origin") or {},
        reason=data.get("reason"),
        rolls_back=data.get("rolls_back"),
        lock_id=data.get("lock_id"),
        fencing_token=data.get("fencing_token"),
        observed=data.get("observed") or {},
        outcome=Outcome(data.get("outcome", Outcome.PENDING)),
        finished=data.get("finished"),
        serial=data.get("serial"),
        compensated=tuple(data.get("compensated") or ()),
        error=data.get("error"),
    )


def history_entry(transaction: Transaction) -> dict[str, Any]:
    """One line of the history index: what `kfmops history` lists."""
    return {
        "apply_id": transaction.id,
        "plan_id": transaction.plan_id,
        "operation": str(transaction.operation),
        "operator": transaction.operator,
        "started": transaction.started,
        "finished": transaction.finished,
        "outcome": str(transaction.outcome),
        "summary": transaction.summary(),
        "wal": f"{transaction.id}.jsonl",
        "serial": transaction.serial,
        "reason": transaction.reason,
        "rolls_back": transaction.rolls_back,
    }


def _shared(data: dict[str, Any], change: Callable[[Any], Change] = change_from_dict) -> dict[str, Any]:
    """The fields a plan and a transaction share, decoded (each change with `change`)."""
    return {
        "plan_id": data["plan_id"],
        "operation": Operation(data["operation"]),
        "state": StateRef(data["state"]["lineage"], data["state"]["serial"]),
        "changes": tuple(change(c) for c in data["changes"]),
    }


def _check(data: Any, schema: str, name: str) -> None:
    if not isinstance(data, dict):
        raise _refused(name, schema, "it is not a JSON object")
    problem = next(record_problems(data, schema), None)
    if problem is not None:
        raise _refused(name, schema, problem[:300])


def _refused(name: str, schema: str, why: str) -> InputError:
    what = "plan refused" if schema == "plan" else f"{schema} record refused"
    return InputError([Diagnostic(f"{what}: {why}", f"see schemas/{schema}.schema.json", file=name)])
