"""Freeze and resume: the workspace's red state, kept in the state store so that everyone sharing it sees it.

While frozen, apply, hotfix and rollback refuse (exit 3) with the reason, who froze it and since when; plan,
drift and recover still work. A freeze with `until` lifts itself at that time. Both are ledgered. The local
KFMOPS_KILL_SWITCH (`engine.gates`) stays on top of it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kfmops.engine.session import Session
from kfmops.errors import GateClosed, KfmopsError
from kfmops.io.clock import new_id, now, parse_time, stamp
from kfmops.io.redact import Redactor
from kfmops.stores.base import Freeze
from kfmops.stores.lock import operator


def frozen(session: Session) -> Freeze | None:
    """The freeze in force now (one past its `until` is not), or None."""
    found = session.stores.controls.freeze()
    if found is None or (found.until and datetime.fromisoformat(found.until) <= datetime.now(UTC)):
        return None
    return found


def freeze(session: Session, reason: str, until: str | None = None) -> Freeze:
    """Freeze the workspace for everyone who shares its state; a new freeze replaces the one in force."""
    said = _reason(session, reason, "freeze")
    try:
        ends = stamp(parse_time(until)) if until else None
    except ValueError as exc:
        raise KfmopsError(f"--until: {exc}") from None
    if ends and ends <= now():
        raise KfmopsError(f"--until {until} is already past; give a later time")
    record = Freeze(said, operator(), now(), ends)
    _record(session, record, "freeze", "frozen", record)
    return record


def resume(session: Session, reason: str) -> Freeze:
    """Lift the freeze; returns the freeze lifted. Refuses when nothing is frozen."""
    said = _reason(session, reason, "resume")
    lifted = frozen(session)
    if lifted is None:
        raise KfmopsError("the workspace is not frozen; nothing to resume")
    _record(session, None, "resume", "resumed", Freeze(said, operator(), now(), None), lifted)
    return lifted


def refuse_if_frozen(session: Session, operation: str) -> None:
    """GateClosed (exit 3) while the workspace is frozen."""
    found = frozen(session)
    if found is not None:
        until = f" until {found.until}" if found.until else ""
        raise GateClosed(
            f"freeze gate: the workspace is frozen{until} by {found.who} since {found.since} ({found.reason}); "
            f"{operation} did nothing. Plan and recover still work; lift it with "
            "'kfmops resume --reason TEXT'"
        )


def history(session: Session) -> list[dict[str, Any]]:
    """The history index with each freeze and resume in its place, oldest first."""
    rows = [*session.stores.history.entries(), *session.stores.controls.events()]
    return sorted(rows, key=lambda row: str(row.get("finished") or row.get("started") or ""))


def _reason(session: Session, reason: str, command: str) -> str:
    if not reason.strip():
        raise KfmopsError(f"{command} needs --reason: it is shown to everyone refused and kept in the ledger")
    return Redactor(session.workspace.secret_values()).text(reason)


def _record(
    session: Session, kept: Freeze | None, op_type: str, outcome: str, record: Freeze, lifted: Freeze | None = None
) -> None:
    """Keep the freeze (or its lifting) in the state store, with its history row; then ledger it."""
    event_id = new_id(op_type)
    session.stores.controls.set_freeze(
        kept,
        {
            "apply_id": event_id,
            "plan_id": None,
            "operation": op_type,
            "operator": record.who,
            "started": record.since,
            "finished": record.since,
            "outcome": outcome,
            "summary": {"create": 0, "update": 0, "delete": 0, "no_op": 0},
            "reason": record.reason,
            "freeze": (lifted or record).to_dict(),
        },
    )
    session.ledger.append(
        {
            "op_type": op_type,
            "apply_id": event_id,
            "outcome": outcome,
            "operator": record.who,
            "reason": record.reason,
            "freeze": (lifted or record).to_dict(),
        }
    )
