"""Views, as Terraform's command/views: one class per output format, one method per thing a command shows.

The human view (and its Markdown variant) is in `render.human`; this module holds the JSON view.

A command picks a view once (`render.formats.view_for`) and calls it; no command branches on the format. Views write
to the consoles they are given: results to `out` (stdout), hints and progress to `err` (stderr), so
that `--format json` output stays parseable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from kfmops.engine.recover import Recovery
from kfmops.engine.timetravel import Moved
from kfmops.governance.slo import SloReport
from kfmops.plans import codec, planfile
from kfmops.plans.model import Plan
from kfmops.plans.transaction import Transaction
from kfmops.stores.base import Freeze
from kfmops.stores.lock import LockStatus
from kfmops.stores.state import ManagedReference, State


class JsonView:
    """Machine output on stdout: the plan file's JSON, and JSON documents for everything else."""

    def __init__(self, out: Console, err: Console, *, detail: str = "auto"):
        self.out = out
        self.err = err

    def _print(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def plan(self, plan: Plan, saved: Path | None = None, *, verbose: bool = False) -> None:
        self._print(planfile.to_dict(plan))

    def applied(self, transaction: Transaction, seconds: float) -> None:
        self._print({**codec.history_entry(transaction), "seconds": seconds})

    def recovered(self, recovery: Recovery) -> None:
        self._print(
            {
                "mode": recovery.mode,
                "outcome": recovery.outcome,
                "message": recovery.message,
                "apply_id": recovery.transaction.id if recovery.transaction else None,
                "written": recovery.written,
                "restored": recovery.restored,
                "completed": recovery.completed,
                "left": recovery.left,
            }
        )

    def history(self, entries: list[dict[str, Any]]) -> None:
        self._print(entries)

    def state_list(self, state: State | None) -> None:
        rows = (
            [
                {"address": a, "kind": str(m.reference.kind), "backend": m.reference.backend, "value": m.value}
                for a, m in sorted(state.resources.items())
            ]
            if state
            else []
        )
        self._print(
            {"lineage": state.lineage if state else None, "serial": state.serial if state else 0, "resources": rows}
        )

    def state_entry(self, address: str, managed: ManagedReference) -> None:
        self._print(entry_of(address, managed))

    def state_at(self, apply_id: str, state: State) -> None:
        rows = [{**entry_of(a, m), "version": m.version} for a, m in sorted(state.resources.items())]
        self._print({"at": apply_id, "lineage": state.lineage, "resources": rows})

    def state_diff(self, first: str, second: str, moved: list[Moved]) -> None:
        self._print({"from": first, "to": second, "moved": [m.to_dict() for m in moved]})

    def lock(self, status: LockStatus, freeze: Freeze | None = None) -> None:
        self._print(status.to_dict() | ({"freeze": freeze.to_dict()} if freeze else {}))  # "freeze" only while frozen

    def slo(self, reports: list[SloReport]) -> None:
        self._print([report.to_dict() for report in reports])

    def frozen(self, freeze: Freeze) -> None:
        self._print({"frozen": True, **freeze.to_dict()})

    def resumed(self, lifted: Freeze) -> None:
        self._print({"frozen": False, "lifted": lifted.to_dict()})

    def ledger(self, entries: list[dict[str, Any]]) -> None:
        sys.stdout.write("".join(json.dumps(entry) + "\n" for entry in entries))


def entry_of(address: str, managed: ManagedReference) -> dict[str, Any]:
    """One managed reference as `state show` prints it."""
    reference = managed.reference
    return {
        "address": address,
        "kind": str(reference.kind),
        "backend": reference.backend,
        "dataset": reference.dataset,
        "locator": reference.locator,
        "value": managed.value,
        "apply_id": managed.apply_id,
    }
