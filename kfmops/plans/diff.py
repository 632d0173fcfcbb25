"""Compare desired references with live values and kfmops' state: the pure heart of `plan`.

Rules: a desired reference is created, updated or left alone; a reference kfmops manages (recorded in
state) that is no longer desired is deleted, unless a desired reference now owns the same live pointer
(it moved to another address), in which case kfmops only forgets the old address; a live reference
kfmops never managed is never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfmops.desired.collector import DesiredReference
from kfmops.plans.model import Action, Change
from kfmops.references import Reference


def diff(
    desired: Mapping[str, DesiredReference],
    live: Mapping[str, Any],
    managed: Mapping[str, tuple[Reference, Any]],
    order: tuple[str, ...],
) -> list[Change]:
    """Changes for every address in `desired` or `managed`, ordered by apply order then address.

    `live` holds the value read for each of those addresses (None = absent); `managed` maps each
    address recorded in state to its reference and last applied value.
    """
    changes = []
    owners = {identity: address for address, wanted in desired.items() for identity in wanted.reference.identities()}
    for address, wanted in desired.items():
        current = live.get(address)
        last = managed.get(address)
        changes.append(_desired_change(wanted, current, None if last is None else last[1]))
    for address, (reference, last_applied) in managed.items():
        if address in desired:
            continue
        current = live.get(address)
        successor = next((owners[i] for i in reference.identities() if i in owners), None)
        if successor is not None:
            # Deleting it would delete what `successor` wants to exist; before/after are None as for a forget.
            reason = f"moved to {successor}, which manages the same live reference; kfmops stops managing it here"
            changes.append(Change(reference, Action.NOOP, None, None, reason))
        elif current is None:
            reason = "removed from desired state; already absent, kfmops stops managing it"
            changes.append(Change(reference, Action.NOOP, None, None, reason))
        else:
            reason = "removed from desired state"
            if current != last_applied:
                reason += "; live value had drifted from the last applied value"
            changes.append(Change(reference, Action.DELETE, current, None, reason))
    return sort_changes(changes, order)


def sort_changes(changes: list[Change], order: tuple[str, ...]) -> list[Change]:
    """Changes in apply order of their kind, then by address; changes of one address keep their order."""
    rank = {kind: i for i, kind in enumerate(order)}
    return sorted(changes, key=lambda c: (rank[c.reference.kind], c.address))


def _desired_change(wanted: DesiredReference, current: Any, last_applied: Any) -> Change:
    reference, after, source, version = wanted.reference, wanted.value, wanted.source, wanted.version
    if current == after:
        return Change(reference, Action.NOOP, current, after, "up to date", source, version)
    if current is None:
        reason = "absent; desired state adds it"
        if last_applied is not None:
            reason = "deleted outside kfmops since the last apply; desired state restores it"
        return Change(reference, Action.CREATE, None, after, reason, source, version)
    if last_applied is None:
        reason = "exists but is not managed yet; kfmops adopts it with the desired value"
    elif last_applied == current:
        reason = "desired value changed"
    else:
        reason = "live value drifted from the last applied value"
    return Change(reference, Action.UPDATE, current, after, reason, source, version)


def drift(
    live: Mapping[str, Any],
    managed: Mapping[str, tuple[Reference, Any]],
    desired: Mapping[str, DesiredReference],
    hotfixes: Mapping[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """References whose live value differs from what kfmops last applied, and hotfixes git lacks.

    kfmops cannot know who changed a drifted reference, and says so. A hotfixed reference is drift
    until the desired state holds the hotfix value.
    """
    found = []
    for address, (_, last_applied) in sorted(managed.items()):
        if address not in live:
            continue
        hotfix = hotfixes.get(address)
        wanted = desired.get(address)
        if hotfix is not None and (wanted is None or wanted.value != hotfix["value"]):
            found.append(
                {
                    "address": address,
                    "type": "hotfix",
                    "last_applied": last_applied,
                    "live": live[address],
                    "message": f"hotfixed by {hotfix['apply_id']} ({hotfix['reason']}); git does not hold the hotfix "
                    f"value yet: apply the patch {hotfix.get('patch') or 'written by kfmops hotfix'}",
                }
            )
        elif live[address] != last_applied:
            found.append(
                {
                    "address": address,
                    "type": "drift",
                    "last_applied": last_applied,
                    "live": live[address],
                    "message": "live value differs from the last applied value; changed outside kfmops "
                    "(who changed it is unknown)",
                }
            )
    return found
