"""Point-in-time rollback, composed: undo every committed transaction after a point as one set of changes.

Pure. The inverse of each transaction, newest first, collapsed per address: the value kfmops last left
live (what the newest one wrote) moves back to the value live right after the point (what the oldest one
observed before writing), and kfmops manages the reference again or forgets it as it did at the point.
A reference whose live value is not what kfmops last left was changed outside kfmops; it is reported,
and only with `force_live` is the live value taken as the starting point (and overwritten).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kfmops.plans.model import Action, Change
from kfmops.plans.transaction import Transaction
from kfmops.references import Reference


@dataclass
class Track:
    """One address across the undone transactions: what kfmops last left live, and what to restore."""

    reference: Reference
    left: Any  # the value the newest transaction left live
    left_version: str | None
    restore: Any = None  # the value live before the oldest one
    restore_version: str | None = None


def tracks(later: Sequence[Transaction]) -> dict[str, Track]:
    """Every address the transactions (newest first) moved, imported or forgot, collapsed."""
    found: dict[str, Track] = {}
    for transaction in later:
        for change in reversed(transaction.moves):
            before = transaction.observed.get(change.address, change.before) if change.action.mutates else change.before
            left = change.before if change.action is Action.FORGET else change.after
            track = found.setdefault(change.address, Track(change.reference, left, change.version))
            track.restore, track.restore_version = before, change.before_version
    return found


def compose(
    found: Mapping[str, Track],
    then: Mapping[str, tuple[Reference, str | None]],
    managed_now: Collection[str],
    live: Mapping[str, Any],
    *,
    force_live: bool = False,
) -> tuple[list[Change], list[str]]:
    """The changes that bring every tracked address back to the point, and one line per address changed
    outside kfmops since (the changes are only made from the live values with `force_live`).

    `then`: the addresses managed at the point, each with its reference and dataset version.
    """
    changes: list[Change] = []
    moved: list[str] = []
    for address, track in sorted(found.items()):
        current = live.get(address)
        if current != track.left:
            moved.append(f"{address}: kfmops last left {_short(track.left)}, live is {_short(current)}")
            if not force_live:
                continue
        recorded = then.get(address)
        reference = recorded[0] if recorded else track.reference
        version = recorded[1] if recorded else track.restore_version
        reason = "point-in-time rollback"
        restore = track.restore
        if restore != current:
            action = Action.CREATE if current is None else Action.DELETE if restore is None else Action.UPDATE
            changes.append(Change(reference, action, current, restore, reason, None, version, track.left_version))
            if restore is not None and recorded is None:  # it was live but not managed at the point
                changes.append(Change(reference, Action.FORGET, restore, None, f"{reason}: not managed then"))
        elif restore is not None and recorded is not None and address not in managed_now:
            changes.append(Change(reference, Action.IMPORT, restore, restore, f"{reason}: managed then", None, version))
        elif restore is not None and recorded is None and address in managed_now:
            changes.append(Change(reference, Action.FORGET, restore, None, f"{reason}: not managed then"))
    return changes, moved


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:159] + "…"
