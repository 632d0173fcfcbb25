"""Import from the command line: plan the import of declared addresses that kfmops does not manage yet.

`kfmops import ADDRESS...` is an Import document given on the command line: the addresses must be declared
by a desired document, and the plan (only those addresses) records their live values in state without
writing to a backend. Applying it takes the usual safe path: lock, WAL, policy, ledger, serial + 1.
"""

from __future__ import annotations

from kfmops.addresses import Address
from kfmops.engine.plan import PlanRequest, load_desired, plan
from kfmops.engine.session import Session
from kfmops.errors import Diagnostic, InputError
from kfmops.plans.model import Plan


def import_plan(session: Session, addresses: list[str], *, accept_live: bool = False) -> Plan:
    """The judged plan that imports `addresses` (dataset parts, whole datasets or raw references)."""
    desired = load_desired(session.workspace)
    declared = [Address.parse(address) for address in desired.references]
    problems = []
    for text in addresses:
        try:
            address = Address.parse(text)
        except ValueError as exc:
            problems.append(Diagnostic(str(exc)))
            continue
        if not any(address.covers(other) for other in declared):
            problems.append(
                Diagnostic(
                    f"cannot import {text}: no desired document declares it",
                    "declare it first (a Dataset or raw document), or let 'kfmops import --discover' write one",
                )
            )
    if problems:
        raise InputError(problems)
    request = PlanRequest(targets=list(addresses), imports=list(addresses), accept_live=accept_live)
    return plan(session, request, desired)
