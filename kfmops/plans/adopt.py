"""Import (adoption): the changes that bring live references kfmops does not manage yet under management.

Pure, like `diff`: an import records the live value in state and writes nothing. It is refused (a problem,
not a change) when nothing is live there, when the live pointer is already managed under another address
that this plan keeps, or when the live value is not what the desired document gives; with `accept_live`
the last case imports the live value and updates it to the desired one in the same plan.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from kfmops.desired.collector import DesiredReference
from kfmops.errors import Diagnostic
from kfmops.io.canonical import canonical_json
from kfmops.plans.model import Action, Change
from kfmops.references import Reference

COMMAND_LINE = "the command line"


def import_changes(
    imported: Mapping[str, str],
    wanted: Mapping[str, DesiredReference],
    live: Mapping[str, Any],
    managed: Mapping[str, tuple[Reference, Any]],
    kept: Collection[str],
    *,
    accept_live: bool = False,
) -> tuple[list[Change], list[Diagnostic]]:
    """Import changes for each address of `imported` (address -> `file:line` of the Import document, or
    COMMAND_LINE) that kfmops does not manage yet, and a problem for each that cannot be imported.

    `managed`: every address recorded in state; `kept`: those of them this plan keeps managing (an owner that
    the plan forgets, because its document moved to the imported address, is no conflict).
    """
    owners = {identity: address for address in kept for identity in managed[address][0].identities()}
    changes: list[Change] = []
    problems: list[Diagnostic] = []
    for address, asked in sorted(imported.items()):
        desired = wanted[address]
        reference = desired.reference
        file, line = _where(asked, desired.source)
        if address in managed:
            if asked == COMMAND_LINE:
                problems.append(
                    Diagnostic(
                        f"{address} is already managed (kfmops recorded it in state); there is nothing to import",
                        f"'kfmops state show {address}' shows the recorded value",
                    )
                )
            continue  # an Import document kept after its import changes nothing
        current = live.get(address)
        owner = next((owners[i] for i in reference.identities() if i in owners and owners[i] != address), None)
        if current is None:
            problems.append(
                Diagnostic(
                    f"cannot import {address}: nothing is live at {', '.join(reference.identities())} "
                    f"on backend {reference.backend!r}",
                    "create it through a plan instead (remove the import), or check the name",
                    file,
                    line,
                )
            )
        elif owner is not None:
            problems.append(
                Diagnostic(
                    f"cannot import {address}: its live value is already managed by {owner} (recorded in state)",
                    f"one live reference has one owner: import it as {owner}, or remove {owner}'s document and apply",
                    file,
                    line,
                )
            )
        elif current != desired.value and not accept_live:
            problems.append(
                Diagnostic(
                    f"cannot import {address}: the live value {_shown(current)} is not what {desired.source} "
                    f"gives ({_shown(desired.value)})",
                    "change the document to the live value, or pass --accept-live to import the live value "
                    "and update it to the desired one in the same plan",
                    file,
                    line,
                )
            )
        else:
            matches = current == desired.value
            reason = f"asked by {asked}"
            version = desired.version if matches else None
            changes.append(Change(reference, Action.IMPORT, current, current, reason, desired.source, version))
            if not matches:
                changes.append(
                    Change(
                        reference,
                        Action.UPDATE,
                        current,
                        desired.value,
                        "imported with --accept-live; desired state updates the live value",
                        desired.source,
                        desired.version,
                    )
                )
    return changes, problems


def _where(asked: str, source: str) -> tuple[str | None, int | None]:
    """The file and line a problem is reported at: the Import document, else the declaring document."""
    file, _, line = (source if asked == COMMAND_LINE else asked).rpartition(":")
    return (file or None), (int(line) if line.isdigit() else None)


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= 200 else text[:199] + "…"
