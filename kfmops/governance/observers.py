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
from typing import Any

from kfmops import __version__
from kfmops.events import (
    BatchFinished,
    BatchStarted,
    Event,
    PolicyEvaluated,
    RetryHappened,
    TransactionAborted,
    TransactionCommitted,
    TransactionStarted,
)
from kfmops.governance.ledger import OP_TYPES, Ledger, entry_for
from kfmops.governance.lineage import emit_openlineage, run_id_for, write_prov
from kfmops.governance.telemetry import Telemetry
from kfmops.io.redact import Redactor
from kfmops.plans import codec
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
        self.namespace = f"kfmops://{workspace.root.name}"
        self.findings: list[dict[str, Any]] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, PolicyEvaluated):
            self.findings = list(event.findings)
        elif isinstance(event, TransactionStarted):
            self._lineage(event.transaction, "START")
        elif isinstance(event, TransactionCommitted | TransactionAborted):
            self._settled(event.transaction)

    def _lineage(self, transaction: Transaction, event_type: str) -> None:
        failed = event_type == "FAIL"
        emit_openlineage(
            run_id_for(transaction.id),
            event_type,
            f"kfmops.{transaction.operation}",
            self.namespace,
            [
                {"name": c.address, "namespace": self.namespace, "before": c.before, "after": c.after}
                for c in transaction.mutations
            ],
            self.transport,
            PRODUCER,
            error=self.redact.text(transaction.error or "apply aborted and compensated") if failed else None,
        )

    def _settled(self, transaction: Transaction) -> None:
        if self.ledger().recorded(transaction.id, OP_TYPES[transaction.operation]):
            return  # recorded before a crash cut the rest of settling short
        committed = transaction.outcome is Outcome.COMMITTED
        self._lineage(transaction, "COMPLETE" if committed else "FAIL")
        prov = write_prov(
            self.prov_dir / f"{transaction.id}.json",
            {
                "apply_id": transaction.id,
                "op_type": OP_TYPES[transaction.operation],
                "plan_id": transaction.plan_id,
                "outcome": str(transaction.outcome),
                "started": transaction.started,
                "finished": transaction.finished,
            },
            transaction.operator,
            [codec.change_to_dict(c) for c in transaction.outputs()] if committed else [],
            provo=self.provo,
        )
        lineage_refs = {
            "openlineage_run_id": run_id_for(transaction.id),
            "prov_document": self.workspace.relative(prov),
        }
        entry = entry_for(transaction, findings=self.findings, lineage_refs=lineage_refs, redact=self.redact)
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
        self.batch_span = ExitStack()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RetryHappened):
            key = f"{event.backend}:{event.error_class}"
            self.retries[key] = self.retries.get(key, 0) + 1
        elif isinstance(event, PolicyEvaluated):
            rules = [str(f.get("rule", "")) for f in event.findings]
            self.counts["care_flags"] = sum(rule.startswith("care.") for rule in rules)
            self.counts["sovereignty_escalations"] = sum(rule.startswith("sovereignty.") for rule in rules)
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
            self.counts["wal_entries"] += event.wal_records
            if isinstance(event, TransactionCommitted):
                self.counts["broken_links"] += event.broken_links

    def close(self) -> None:
        wall, cpu = self.started
        self.batch_span.close()
        self.telemetry.record_operation(
            command=self.command,
            latency_ms=(time.monotonic() - wall) * 1000,
            retries=self.retries,
            cpu_seconds=time.process_time() - cpu,
            **self.counts,
        )
        self.telemetry.shutdown()
