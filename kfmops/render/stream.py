"""The `--json` event stream of apply and rollback, as `terraform apply -json` does: one JSON object per
line on stdout, each with `type` and `time` (schemas/event.schema.json). Types: `planned_change` (one per
change the plan will make), `batch_start`, `batch_finish`, `batch_compensated`, `apply_complete`."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from kfmops.events import BatchCompensated, BatchFinished, BatchStarted, Event
from kfmops.io.clock import now
from kfmops.plans import codec
from kfmops.plans.model import Plan
from kfmops.plans.transaction import Transaction


class JsonStream:
    def __init__(self, out: Console):
        self.out = out

    def emit(self, kind: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"type": kind, "time": now(), **fields}, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def planned(self, plan: Plan) -> None:
        for change in plan.moves:
            self.emit("planned_change", plan_id=plan.plan_id, change=codec.change_to_dict(change))

    def __call__(self, event: Event) -> None:
        if not isinstance(event, BatchStarted | BatchFinished | BatchCompensated):
            return
        batch = event.batch
        fields: dict[str, Any] = {"apply_id": event.transaction.id, "batch": batch.number}
        if isinstance(event, BatchStarted):
            kind = "batch_start"
            fields |= {"backend": batch.backend, "addresses": batch.addresses, "batches": event.total_batches}
        elif isinstance(event, BatchFinished):
            kind = "batch_finish"
            fields |= {"done": event.done, "total": event.total}
        else:
            kind = "batch_compensated"
            fields["addresses"] = batch.addresses
        self.emit(kind, **fields)

    def finished(self, transaction: Transaction) -> None:
        self.emit("apply_complete", **codec.history_entry(transaction))
