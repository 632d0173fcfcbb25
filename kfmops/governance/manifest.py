"""Rollback manifests for auditors: one JSON document per committed rollback, beside the ledger.

`<ledger folder>/rollbacks/<rollback id>.json` (schemas/rollback-manifest.schema.json): which apply it
undid, every inverse change with its before and after values and dataset versions, the policy findings
it was judged with, and the ids of its ledger entry and lineage records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfmops.events import Event, PolicyEvaluated, TransactionCommitted
from kfmops.governance.ledger import Ledger
from kfmops.governance.lineage import run_id_for
from kfmops.io.files import write_atomic
from kfmops.plans.model import Operation
from kfmops.plans.transaction import Transaction
from kfmops.schemas import record_problems


class RollbackManifests:
    """An observer: writes the manifest of each committed rollback (after the ledger has its entry)."""

    def __init__(self, folder: Path, ledger: Callable[[], Ledger], prov_folder: Path):
        self.folder = folder
        self.ledger = ledger
        self.prov_folder = prov_folder
        self.findings: list[dict[str, Any]] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, PolicyEvaluated):
            self.findings = list(event.findings)
        elif isinstance(event, TransactionCommitted) and event.transaction.operation is Operation.ROLLBACK:
            self.write(event.transaction)

    def write(self, rollback: Transaction) -> Path:
        entry = next((e for e in reversed(self.ledger().entries()) if e.get("apply_id") == rollback.id), None)
        manifest = {
            "format_version": 1,
            "rollback_id": rollback.id,
            # one apply, or (a point-in-time rollback) every apply after the point, newest first
            "undoes": rollback.rolls_back or ", ".join(rollback.origin.get("undoes", [])),
            "plan_id": rollback.plan_id,
            "operator": rollback.operator,
            "reason": rollback.reason,
            "started": rollback.started,
            "finished": rollback.finished,
            "serial": rollback.serial,
            "changes": [
                {
                    "address": c.address,
                    "action": str(c.action),
                    "before": c.before,
                    "after": c.after,
                    "version_before": c.before_version,
                    "version_after": c.version,
                }
                for c in rollback.outputs()
            ],
            "policy_findings": self.findings,
            "ledger": {"seq": entry["seq"], "hash": entry["hash"]} if entry else None,
            "lineage": {
                "openlineage_run_id": run_id_for(rollback.id),
                "prov_document": str(self.prov_folder / f"{rollback.id}.json"),
            },
        }
        problems = list(record_problems(manifest, "rollback-manifest"))
        if problems:
            raise ValueError("rollback manifest does not match its schema: " + "; ".join(problems[:3]))
        path = self.folder / f"{rollback.id}.json"
        write_atomic(path, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
        return path
