"""Governance as observers of the engine's events: what every transaction leaves behind.

- `Recorder`: an OpenLineage START event when a transaction begins; when it settles, COMPLETE or FAIL,
  a W3C PROV document and a ledger entry (with the policy findings it was judged by).
- `Metrics`: OpenTelemetry spans per batch and the command's metrics (retries, WAL records, CARE
  flags, sovereignty escalations, broken links, energy and carbon estimates).

Record keeping never decides an outcome: it runs after the references moved, and the event bus turns
its failures into warnings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from functools import cached_property
from typing import Any

from kfmops import __version__
from kfmops.events import (
    AttemptDenied,
    BatchFinished,
    BatchStarted,
    Event,
    PolicyEvaluated,
    RetryHappened,
    TransactionAborted,
    TransactionCommitted,
    TransactionStarted,
)
from kfmops.gitops import repo
from kfmops.governance.ledger import OP_TYPES, Ledger, denial_entry, entry_for
from kfmops.governance.lineage import emit_openlineage, namespace_for, run_id_for
from kfmops.governance.provenance import write_prov
from kfmops.governance.telemetry import Telemetry
from kfmops.io.clock import new_id
from kfmops.io.redact import Redactor
from kfmops.plans import codec
from kfmops.plans.model import Operation
from kfmops.plans.transaction import Outcome, Transaction
from kfmops.workspace import Workspace

PRODUCER = f"https://kfmops.dev/kfmops/{__version__}"


class Recorder:
    def __init__(self, workspace: Workspace, ledger: Callable[[], Ledger], redact: Redactor):
        self.workspace = workspace
        self.redact = redact
        self.ledger = ledger  # opened at the first entry: a plan never touches the ledger
        settings = workspace.section("lineage")
        lineage_dir = workspace.state_dir / "lineage"
        self.transport = settings.get("transport") or {"type": "file", "path": str(lineage_dir / "openlineage.jsonl")}
        self.prov_dir = lineage_dir / "prov"
        self.provo = bool(settings.get("provo", False))
        self.configured_namespace = settings.get("namespace")
        self.decision: dict[str, Any] = {}
        self.decisions: list[dict[str, Any]] = []

    @cached_property
    def namespace(self) -> str:
        """Asked only when an operation records its lineage: a plan never reads the git remote."""
        return namespace_for(self.configured_namespace, repo.remote_url(self.workspace.root), self.workspace.root.name)

    def __call__(self, event: Event) -> None:
        if isinstance(event, PolicyEvaluated):
            self.decision = {"decision": event.decision, "findings": list(event.findings)}
            self.decisions = list(event.decisions)
        elif isinstance(event, AttemptDenied):
            self._denied(event)
        elif isinstance(event, TransactionStarted):
            self._lineage(event.transaction, "START")
        elif isinstance(event, TransactionCommitted | TransactionAborted):
            self._settled(event.transaction)

    def _lineage(self, transaction: Transaction, event_type: str, *, recovers: str | None = None) -> str:
        """Send one RunEvent of `transaction`'s run and return its runId.

        A recovery is a run of its own (job `kfmops.recover`) whose parent is the interrupted run; that run
        keeps its own job name (`recovers`, the operation it was running) when its last event is sent."""
        job = str(transaction.operation)
        run_id, parent = run_id_for(transaction.id), None
        if recovers is not None:
            parent = (run_id, f"kfmops.{recovers}")
            run_id = run_id_for(f"{transaction.id}/recover")
        failed = event_type == "FAIL"
        mutations = transaction.outputs() if transaction.outcome is Outcome.COMMITTED else transaction.mutations
        emit_openlineage(
            run_id,
            event_type,
            f"kfmops.{job}",
            self.namespace,
            [
                {
                    "name": c.address,
                    "namespace": self.namespace,
                    "before": c.before,
                    "after": c.after,
                    "version": c.version if c.after is not None else None,
                }
                for c in mutations
            ],
            self.transport,
            PRODUCER,
            error=self.redact.text(transaction.error or "apply aborted and compensated") if failed else None,
            inputs=[
                {"name": c.address, "namespace": self.namespace, "version": c.before_version}
                for c in mutations
                if c.before is not None
            ],
            job_type=job.upper(),
            parent=parent,
        )
        return run_id

    def _settled(self, transaction: Transaction) -> None:
        if self.ledger().recorded(transaction.id, OP_TYPES[transaction.operation]):
            return  # recorded before a crash cut the rest of settling short
        committed = transaction.outcome is Outcome.COMMITTED
        recovers = transaction.origin.get("recovers") if transaction.operation is Operation.RECOVER else None
        if recovers:  # the interrupted run ends under its own job name; the recovery is a run of its own
            interrupted = replace(transaction, operation=Operation(recovers), error="interrupted; resolved by recover")
            self._lineage(interrupted, "COMPLETE" if committed else "FAIL")
            self._lineage(transaction, "START", recovers=recovers)
            run_id = self._lineage(transaction, "COMPLETE", recovers=recovers)
        else:
            run_id = self._lineage(transaction, "COMPLETE" if committed else "FAIL")
        origin = transaction.origin
        prov = write_prov(
            self.prov_dir / f"{transaction.id}.json",
            {
                "apply_id": transaction.id,
                "op_type": OP_TYPES[transaction.operation],
                "plan_id": transaction.plan_id,
                "outcome": str(transaction.outcome),
                "started": transaction.started,
                "finished": transaction.finished,
                "openlineage_run_id": run_id,
                "rolls_back": transaction.rolls_back,
                "ci_run_url": origin.get("ci_run_url"),
                "approved_by": origin.get("approved_by"),
                "decision": self.decision,
            },
            transaction.operator,
            [codec.change_to_dict(c) for c in transaction.outputs()] if committed else [],
            provo=self.provo,
        )
        lineage_refs = {"openlineage_run_id": run_id, "prov_document": self.workspace.relative(prov)}
        findings = list(self.decision.get("findings", []))
        entry = entry_for(
            transaction, findings=findings, decisions=self.decisions, lineage_refs=lineage_refs, redact=self.redact
        )
        self.ledger().append(entry)

    def _denied(self, event: AttemptDenied) -> None:
        """Ledger an attempt policy refused: nothing moved, so there is no run, WAL or PROV document."""
        operation = event.plan.operation
        if event.operation.startswith("recover"):
            operation = Operation.RECOVER
        entry = denial_entry(
            operation,
            event.plan,
            attempt_id=new_id("denied"),
            operator=event.operator,
            reason=event.reason,
            origin=event.origin,
            findings=event.findings,
            lineage_refs={},
            redact=self.redact,
        )
        self.ledger().append(entry)


class Metrics:
    """Counts what one command did and exports it once, at `close`."""

    def __init__(self, telemetry: Telemetry, command: str):
        self.telemetry = telemetry
        self.command = command
        self.started = (time.monotonic(), time.process_time())
        self.counts: dict[str, Any] = {
            "wal_entries": 0,
            "care_flags": 0,
            "sovereignty_escalations": 0,
            "broken_links": 0,
        }
        self.retries: dict[str, int] = {}
        self.denials: dict[str, int] = {}  # rule family (heritage, care, ...) -> denying findings
        self.outcome = "ok"  # then denied, committed, aborted or nothing; `error` when the command failed
        self.batch_span = ExitStack()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RetryHappened):
            key = f"{event.backend}:{event.error_class}"
            self.retries[key] = self.retries.get(key, 0) + 1
        elif isinstance(event, PolicyEvaluated):
            rules = [str(f.get("rule", "")) for f in event.findings]
            self.counts["care_flags"] = sum(rule.startswith("care.") for rule in rules)
            self.counts["sovereignty_escalations"] = sum(rule.startswith("sovereignty.") for rule in rules)
            # the last judgement of the command counts (plan, then apply, judge the same plan twice)
            self.denials = {}
            for finding in event.findings:
                if finding.get("severity") == "deny":
                    family = str(finding.get("rule") or "policy").split(".")[0]
                    self.denials[family] = self.denials.get(family, 0) + 1
            self.outcome = "ok" if event.decision == "allow" else "denied"
        elif isinstance(event, BatchStarted):
            batch = event.batch
            self.batch_span.enter_context(
                self.telemetry.span(
                    "kfmops.batch", batch=batch.number, backend=batch.backend, references=len(batch.changes)
                )
            )
        elif isinstance(event, BatchFinished):
            self.batch_span.close()
        elif isinstance(event, TransactionCommitted | TransactionAborted):
            self.batch_span.close()
            self.outcome = str(event.transaction.outcome)
            self.counts["wal_entries"] += event.wal_records
            if isinstance(event, TransactionCommitted):
                self.counts["broken_links"] += event.broken_links

    def close(self, failed: bool = False) -> None:
        """Export the command's metrics; `failed`: it ended with an error (its outcome is then `error`
        unless a transaction settled or policy denied it first)."""
        wall, cpu = self.started
        self.batch_span.close()
        self.telemetry.record_operation(
            command=self.command,
            outcome="error" if failed and self.outcome == "ok" else self.outcome,
            latency_ms=(time.monotonic() - wall) * 1000,
            retries=self.retries,
            denials=self.denials,
            cpu_seconds=time.process_time() - cpu,
            **self.counts,
        )
        self.telemetry.shutdown()
