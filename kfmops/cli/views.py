"""Rich views for the CLI: plans, apply and recover results, history, state, lock; progress and prompts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kfmops.cli.errors import stderr
from kfmops.desired import DesiredState
from kfmops.engine.apply import ApplyResult
from kfmops.engine.engine import Engine, Progress, RecoverResult
from kfmops.engine.lock import LockStatus
from kfmops.engine.state import State
from kfmops.errors import ExitCode, KfmopsError
from kfmops.plans import planfile
from kfmops.plans.model import Plan
from kfmops.providers.stac_check import CatalogReport
from kfmops.render import graph, markdown, text
from kfmops.workspace import load_workspace, scaffold

FORMATS = ("text", "json", "markdown")


def print_plan(plan: Plan, output_format: str, console: Console) -> None:
    if output_format not in FORMATS:
        raise KfmopsError(f"unknown format {output_format!r}; use one of {', '.join(FORMATS)}")
    if output_format == "json":
        sys.stdout.write(json.dumps(planfile.to_dict(plan), indent=2, ensure_ascii=False) + "\n")
    elif output_format == "markdown":
        sys.stdout.write(markdown.render_plan(plan))
    else:
        text.render_plan(plan, console)


def init_workspace(directory: Path) -> None:
    for created in scaffold(directory):
        stderr.print(f"created {created}")
    workspace = load_workspace(directory)
    with Engine(workspace) as engine:
        state, backends = engine.prepare()
    stderr.print(
        f"Workspace ready at {workspace.root}: state lineage {state.lineage}, serial {state.serial}; "
        f"backends {', '.join(backends)}. Next: kfmops plan"
    )


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise KfmopsError("not a terminal, so apply cannot ask for approval: pass --auto-approve or a plan file")
    return input(f"{question} Only 'yes' is accepted: ").strip() == "yes"


def progress_printer() -> Progress:
    """Plain progress lines on stderr (one per batch), so logs of CI runs stay readable."""
    totals: dict[str, int] = {}

    def report(stage: str, count: int) -> None:
        totals[stage] = totals.get(stage, 0) + count
        stderr.print(f"  {stage} {totals[stage]} references", style="dim")

    return report


def print_apply(result: ApplyResult, console: Console) -> None:
    if result.outcome == "nothing":
        console.print("No changes. Nothing was applied.")
        return
    s = result.summary
    verb = {"rollback": "Rollback", "hotfix": "Hotfix"}.get(result.operation, "Apply")
    console.print(
        f"[bold green]{verb} complete![/] {s['create']} created, {s['update']} updated, "
        f"{s['delete']} deleted ({result.seconds:.2f}s, state serial {result.serial})."
    )
    console.print(f"Apply id: {result.apply_id}. Undo with: kfmops rollback {result.apply_id}")


def print_recover(result: RecoverResult, console: Console) -> None:
    console.print(result.message)
    for address, what in sorted(result.written.items()):
        console.print(f"  {address}: {what} when the apply stopped")
    if result.restored:
        console.print(f"Restored {len(result.restored)} references to their values before the apply.")
    if result.completed:
        console.print(f"Completed {len(result.completed)} references as planned.")


def print_history(entries: list[dict[str, Any]], as_json: bool, console: Console) -> None:
    if as_json:
        sys.stdout.write(json.dumps(entries, indent=2) + "\n")
        return
    table = Table("apply id", "finished", "operation", "operator", "plan", "changes", "outcome")
    for e in entries:
        s = e["summary"]
        table.add_row(
            e["apply_id"],
            e["finished"],
            e["operation"],
            e["operator"],
            e["plan_id"],
            f"+{s['create']} ~{s['update']} -{s['delete']}",
            e["outcome"],
        )
    console.print(table)


def print_state_list(state: State, as_json: bool, console: Console) -> None:
    if as_json:
        rows = [
            {"address": a, "kind": m.reference.kind, "backend": m.reference.backend, "value": m.value}
            for a, m in sorted(state.resources.items())
        ]
        sys.stdout.write(
            json.dumps({"lineage": state.lineage, "serial": state.serial, "resources": rows}, indent=2) + "\n"
        )
        return
    for address in sorted(state.resources):
        console.print(address)


def print_state_entry(state: State, address: str, as_json: bool, console: Console) -> None:
    managed = state.resources.get(address)
    if managed is None:
        raise KfmopsError(f"{address} is not managed; see 'kfmops state list'")
    entry = {
        "address": address,
        "kind": managed.reference.kind,
        "backend": managed.reference.backend,
        "dataset": managed.reference.dataset,
        "locator": managed.reference.locator,
        "value": managed.value,
        "apply_id": managed.apply_id,
    }
    if as_json:
        sys.stdout.write(json.dumps(entry, indent=2) + "\n")
    else:
        for key, value in entry.items():
            console.print(f"{key}: {json.dumps(value) if isinstance(value, dict | list) else value}")


def print_lock(status: LockStatus, console: Console) -> None:
    if status.held and status.info:
        console.print(f"Locked: {status.info.describe()}")
    elif status.stale and status.info:
        console.print(f"Free, with a stale lock record {status.info.id}: {status.note}")
    else:
        console.print("Free.")


def print_catalog_report(report: CatalogReport, root: Path, console: Console) -> int:
    for path, problem in report.invalid:
        console.print(f"invalid  {path}: {problem}")
    for path, href in report.broken_links:
        console.print(f"broken   {path}: link {href}")
    if report.unchecked_extensions:
        console.print(f"not checked (no local schema): {', '.join(sorted(report.unchecked_extensions))}")
    console.print(
        f"{report.documents} STAC documents under {root}: {len(report.invalid)} schema problems, "
        f"{len(report.broken_links)} broken links."
    )
    return 0 if report.ok else int(ExitCode.ERROR)


def reference_graph(desired: DesiredState, graph_format: str) -> str:
    if graph_format not in {"mermaid", "dot"}:
        raise KfmopsError(f"unknown graph format {graph_format!r}; use mermaid or dot")
    return graph.mermaid(desired) if graph_format == "mermaid" else graph.dot(desired)


def print_ledger(entries: list[dict[str, Any]], as_json: bool, console: Console) -> None:
    if as_json:
        sys.stdout.write("".join(json.dumps(entry) + "\n" for entry in entries))
        return
    table = Table("seq", "time", "op", "apply id", "outcome", "operator", "changes", "reason")
    for e in entries:
        changes = e.get("changes", {})
        counts = " ".join(f"{k}:{len(v) if isinstance(v, list) else v}" for k, v in changes.items())
        table.add_row(
            str(e["seq"]),
            e["time"],
            e["op_type"],
            e["apply_id"],
            e["outcome"],
            e["operator"],
            counts,
            e.get("reason") or "",
        )
    console.print(table)
