"""The state as it was: replayed from history, committed transaction by committed transaction.

History keeps every settled transaction with the changes it committed, so the state after any apply is
the replay of the committed ones up to it (`State.commit`, the one way state changes). Nothing is read
from a backend; a serial is the count of the transactions replayed, not necessarily the one recorded then.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kfmops.errors import KfmopsError
from kfmops.plans.transaction import Outcome, Transaction
from kfmops.stores.base import HistoryStore
from kfmops.stores.state import State


def committed(history: HistoryStore) -> list[dict[str, Any]]:
    """The index entries of committed transactions, oldest first."""
    return [entry for entry in history.entries() if entry["outcome"] == str(Outcome.COMMITTED)]


def require_committed(history: HistoryStore, apply_id: str) -> dict[str, Any]:
    """The index entry of `apply_id`; an error naming it when it does not exist or did not commit."""
    entry = next((e for e in history.entries() if e["apply_id"] == apply_id), None)
    if entry is None:
        raise KfmopsError(f"no apply with id {apply_id!r}; see 'kfmops history'")
    if entry["outcome"] != str(Outcome.COMMITTED):
        raise KfmopsError(f"{apply_id} did not commit ({entry['outcome']}); choose a committed apply")
    return entry


def state_after(history: HistoryStore, apply_id: str | None, lineage: str) -> State:
    """The state right after `apply_id` committed (None: before the first apply)."""
    state = State.new(lineage)
    if apply_id is None:
        return state
    require_committed(history, apply_id)
    for entry in committed(history):
        state.commit(history.load(entry["apply_id"]))
        if entry["apply_id"] == apply_id:
            break
    return state


def committed_since(history: HistoryStore, apply_id: str | None) -> list[Transaction]:
    """The committed transactions after `apply_id` (None: all of them), newest first."""
    entries = committed(history)
    if apply_id is not None:
        require_committed(history, apply_id)
        entries = entries[[e["apply_id"] for e in entries].index(apply_id) + 1 :]
    return [history.load(entry["apply_id"]) for entry in reversed(entries)]


def last_before(history: HistoryStore, moment: str) -> str | None:
    """The newest committed apply that finished at or before `moment` (ISO 8601), or None when none did."""
    when = parse_time(moment)
    found = None
    for entry in committed(history):
        if entry.get("finished") and parse_time(entry["finished"]) <= when:
            found = entry["apply_id"]
    return found


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone), e.g. 2026-11-26T09:00:00Z or 2026-11-26."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise KfmopsError(f"{text!r} is not an ISO 8601 time; e.g. 2026-11-26T09:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
