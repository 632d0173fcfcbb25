"""What every operation leaves behind: a policy decision, a ledger entry, lineage events, PROV, metrics.

One Governance per command run. Policy fails closed: a deny (or an evaluation error, which is a deny)
stops the operation before anything is written. Record keeping never decides an outcome: it runs
after the references moved, and its own failures are reported, not turned into a false rollback.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

from kfmops import __version__
from kfmops.engine.history import ApplyRecord
from kfmops.errors import PolicyDenied
from kfmops.governance.ledger import Ledger, digest_values, ledger_path
from kfmops.governance.lineage import emit_openlineage, run_id_for, write_prov
from kfmops.governance.policy import DEFAULT_POLICY_DIR, PolicyResult, evaluate, load_policies
from kfmops.governance.telemetry import Telemetry
from kfmops.plans import planfile
from kfmops.plans.model import Plan
from kfmops.workspace import Workspace

PRODUCER = f"https://kfmops.dev/kfmops/{__version__}"
OP_TYPES = {"apply": "apply", "refresh": "apply", "rollback": "rollback", "hotfix": "hotfix", "recover": "recover"}


class Governance(AbstractContextManager):
    def __init__(self, workspace: Workspace, command: str):
        self.workspace = workspace
        self.command = command
        state = workspace.state_dir
        policy = workspace.section("policy")
        self.policy_settings = {k: v for k, v in policy.items() if k not in {"paths", "defaults"}}
        extra = [workspace.root / path for path in policy.get("paths", [])]
        self.policies = (
            load_policies(DEFAULT_POLICY_DIR, extra)
            if policy.get("defaults", True)
            else (load_policies(extra[0], extra[1:]) if extra else [])
        )
        self.ledger = Ledger(ledger_path(workspace.root, workspace.section("ledger")))
        lineage = workspace.section("lineage")
        self.transport = lineage.get("transport") or {
            "type": "file",
            "path": str(state / "lineage" / "openlineage.jsonl"),
        }
        self.prov_dir = state / "lineage" / "prov"
        self.provo = bool(lineage.get("provo", False))
        telemetry = workspace.section("telemetry")
        self.telemetry = Telemetry(telemetry.get("exporter", "file"), state / "telemetry", telemetry)
        self.started = (time.monotonic(), time.process_time())
        self.counts = {"wal_entries": 0, "care_flags": 0, "sovereignty_escalations": 0, "broken_links": 0}
        self.retries: dict[str, int] = {}
        self.span = self.telemetry.span

    # policy ----------------------------------------------------------------------------------------

    def check(self, plan: Plan) -> PolicyResult:
        """The policy decision over `plan` (one query); counts CARE flags and sovereignty escalations."""
        result = evaluate(policy_input(plan), self.policies, self.policy_settings)
        self.counts["care_flags"] = sum(f.rule.startswith("care.") for f in result.findings)
        self.counts["sovereignty_escalations"] = sum(f.rule.startswith("sovereignty.") for f in result.findings)
        return result

    def require_allowed(self, plan: Plan, operation: str) -> PolicyResult:
        result = self.check(plan)
        if result.decision != "allow":
            lines = [
                f"{f.rule}: {f.address or '-'}: {f.message}" + (f" (fix: {f.fix})" if f.fix else "")
                for f in result.findings
                if f.severity == "deny"
            ]
            raise PolicyDenied(f"policy denies this {operation}; nothing was changed:\n  " + "\n  ".join(lines))
        return result

    # record keeping ----------------------------------------------------------------------------------

    def _outputs(self, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        namespace = f"kfmops://{self.workspace.root.name}"
        return [
            {"name": c["address"], "namespace": namespace, "before": c["before"], "after": c["after"]}
            for c in changes
            if c["action"] != "no-op"
        ]

    def run_started(self, apply_id: str, operation: str, changes: list[dict[str, Any]]) -> None:
        emit_openlineage(
            run_id_for(apply_id),
            "START",
            f"kfmops.{operation}",
            f"kfmops://{self.workspace.root.name}",
            self._outputs(changes),
            self.transport,
            PRODUCER,
        )

    def run_finished(
        self,
        record: ApplyRecord,
        changes: list[dict[str, Any]],
        policy: PolicyResult | None,
        wal_records: int,
        error: str | None = None,
    ) -> dict[str, Any]:
        """COMPLETE or FAIL event, the PROV document and the ledger entry of one finished operation."""
        self.counts["wal_entries"] += wal_records
        mutated = [c for c in changes if c["action"] != "no-op"]
        failed = record.outcome not in {"committed", "completed"}
        emit_openlineage(
            run_id_for(record.apply_id),
            "FAIL" if failed else "COMPLETE",
            f"kfmops.{record.operation}",
            f"kfmops://{self.workspace.root.name}",
            self._outputs(changes),
            self.transport,
            PRODUCER,
            error=(error or "apply aborted and compensated") if failed else None,
        )
        references = [{k: c[k] for k in ("address", "kind", "backend", "before", "after")} for c in mutated]
        prov = write_prov(
            self.prov_dir / f"{record.apply_id}.json",
            {**record.__dict__, "op_type": OP_TYPES.get(record.operation, "apply")},
            record.operator,
            references if not failed else [],
            provo=self.provo,
        )
        findings = policy.findings if policy else ()
        entry = {
            "op_type": OP_TYPES.get(record.operation, "apply"),
            "apply_id": record.apply_id,
            "plan_id": record.plan_id,
            "wal_ids": [record.wal],
            "outcome": record.outcome,
            "operator": record.operator,
            "reason": record.reason or error,
            "lineage_refs": {
                "openlineage_run_id": run_id_for(record.apply_id),
                "prov_document": self.workspace.relative(prov),
            },
            "sovereignty_findings": [f.to_dict() for f in findings if f.rule.startswith("sovereignty.")],
            "care_review_status": {
                name: str(d.get("care", {}).get("review", "unreviewed")) for name, d in record.datasets.items()
            },
            "before_digest": digest_values({c["address"]: c["before"] for c in mutated}),
            "after_digest": digest_values({c["address"]: c["after"] for c in mutated}),
            "changes": {
                action: [c["address"] for c in mutated if c["action"] == action]
                for action in ("create", "update", "delete")
            }
            | {"no_op": len(changes) - len(mutated)},
            "compensated": record.compensated,
        }
        return self.ledger.append(entry)

    def count_broken_links(self, count: int) -> None:
        self.counts["broken_links"] += count

    def close(self) -> None:
        wall, cpu = self.started
        self.telemetry.record_operation(
            command=self.command,
            latency_ms=(time.monotonic() - wall) * 1000,
            retries=self.retries,
            cpu_seconds=time.process_time() - cpu,
            **self.counts,
        )
        self.telemetry.shutdown()

    def __exit__(self, *exc: object) -> None:
        self.close()


def policy_input(plan: Plan) -> dict[str, Any]:
    """The plan JSON without its no-op changes: they move nothing, and a plan of 10,000 references
    that are up to date would otherwise cost seconds to hand to the interpreter. Findings are the same
    as `opa`/`conftest` give on the full `kfmops show --format json` (the summary still counts no-ops)."""
    document = planfile.to_dict(plan)
    document["changes"] = [change for change in document["changes"] if change["action"] != "no-op"]
    return document
