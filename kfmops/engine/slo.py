"""The SLO gate: an exhausted error budget refuses ordinary applies (exit 3) until the budget recovers or an
operator overrides it with a reason; rollbacks, hotfixes and recovery, which restore service, stay allowed.

Measured from the state store's history (shared by every runner on a shared store) and, for `broken_links`,
from the managed STAC documents as they are now; every measurement is also exported as OTel gauges.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kfmops.engine.session import Session
from kfmops.errors import GateClosed, KfmopsError
from kfmops.governance.slo import SloReport, measure, objectives


def report(session: Session) -> list[SloReport]:
    """Every objective of `slo:` measured now (none declared: an empty list)."""
    settings = session.workspace.section("slo")
    if not settings:
        return []
    broken = 0
    if "broken_links" in objectives(settings):
        state = session.state()
        managed = [m.reference for m in state.resources.values()] if state else []
        broken = session.providers.broken_links(managed)
    reports = measure(settings, session.stores.history.entries(), broken, datetime.now(UTC))
    session.telemetry.record_slo(reports)
    return reports


def gate(session: Session, operation: str, override: str | None) -> list[dict[str, Any]]:
    """GateClosed (exit 3) when a budget is exhausted, unless `override` gives the reason to go on; returns the
    overrides to record with the transaction (empty when nothing was overridden)."""
    exhausted = [r for r in report(session) if r.exhausted]
    if not exhausted:
        return []
    if override is None:
        raise GateClosed(
            f"SLO gate: the error budget is exhausted, so {operation} is refused (rollback and recover are "
            "allowed):\n  "
            + "\n  ".join(r.describe() for r in exhausted)
            + "\nWait for the budget to recover, or pass --override-slo --reason TEXT (recorded in the ledger)"
        )
    if not override.strip():
        raise KfmopsError("--override-slo needs --reason: the override is recorded in the ledger")
    return [{"gate": "slo", "reason": override, "detail": [r.describe() for r in exhausted]}]
