"""The human view: rich text for a terminal (or plain lines when stdout is not one), and its Markdown
variant for plans (PR comments)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Column, Table

from kfmops.engine.init import Initialized
from kfmops.engine.recover import Recovery
from kfmops.engine.timetravel import Moved, PointInTime
from kfmops.governance.slo import SloReport
from kfmops.plans.model import Operation, Plan
from kfmops.plans.transaction import Outcome, Transaction
from kfmops.providers.stac_check import CatalogReport
from kfmops.render import markdown, text
from kfmops.render.values import field_changes, show
from kfmops.render.view import entry_of
from kfmops.stores.base import Freeze
from kfmops.stores.lock import LockStatus
from kfmops.stores.state import ManagedReference, State
from kfmops.stores.transfer import Copied

VERBS = {Operation.ROLLBACK: "Rollback", Operation.HOTFIX: "Hotfix", Operation.REPAIR: "Repair"}


class HumanView:
    def __init__(self, out: Console, err: Console, *, detail: str = "auto"):
        self.out = out
        self.err = err
        self.detail = detail  # Markdown plans: full, summary or auto
        self.here = Path.cwd()  # hints name it with -C, so that they work from any folder

    def plan(self, plan: Plan, saved: Path | None = None, *, verbose: bool = False) -> None:
        text.render_plan(plan, self.out, verbose=verbose)
        if saved is None:
            return
        self.err.print(f"Saved the plan to {saved}.")
        if not plan.has_changes() or plan.policy.get("decision") != "allow":
            return  # nothing to apply, or apply would refuse it: no hint
        if plan.git.get("dirty"):
            self.err.print(
                "It was made from uncommitted desired state: commit, then plan again (or apply --allow-dirty)."
            )
            return
        self.err.print(f"Apply it with: kfmops -C {self.here} apply {saved}")

    def rollback_plan(self, plan: Plan, undone: Transaction, *, audit: bool = False) -> None:
        """The inverse plan of `undone`; with `audit`, the report of a dry run for auditors."""
        self.out.print(
            f"Rollback of {undone.id}: the {undone.operation} of plan {undone.plan_id} by {undone.operator}, "
            f"finished {undone.finished}."
        )
        text.render_plan(plan, self.out)
        if not audit:
            return
        moves = {
            name: f"{change.before_version or '?'} -> {change.version or '(none)'}"
            for change in plan.mutations
            if (name := change.reference.dataset)
        }
        findings = plan.policy.get("findings", [])
        self.out.print("\nAudit report (dry run: nothing was changed)")
        self.out.print(f"  undoes:      {undone.id} (plan {undone.plan_id}, {undone.operator}, {undone.finished})")
        self.out.print(
            f"  would move:  {text.plural(len(plan.mutations), 'reference')} of {text.plural(len(moves), 'dataset')}"
        )
        for name, move in sorted(moves.items()):
            self.out.print(f"    dataset {name}: version {move}")
        self.out.print(f"  policy:      {plan.policy.get('decision')} ({text.plural(len(findings), 'finding')})")
        self.out.print(f"  made against state serial {plan.state.serial}, lineage {plan.state.lineage}")

    def applied(self, transaction: Transaction, seconds: float) -> None:
        if transaction.outcome is Outcome.NOTHING:
            self.out.print("No changes. Nothing was applied.")
            return
        s = transaction.summary()
        verb = VERBS.get(transaction.operation, "Apply")
        self.out.print(
            f"[bold green]{verb} complete![/] "
            + "".join(f"{s[a]} {a}ed, " for a in ("import", "forget") if s.get(a)).replace("forgeted", "forgotten")
            + f"{s['create']} created, {s['update']} updated, "
            f"{s['delete']} deleted ({seconds:.2f}s, state serial {transaction.serial})."
        )
        undo = "Re-apply what it undid with" if transaction.operation is Operation.ROLLBACK else "Undo it with"
        self.out.print(f"Apply id: {transaction.id}. {undo}: kfmops -C {self.here} rollback {transaction.id}")

    def recovered(self, recovery: Recovery) -> None:
        self.out.print(recovery.message)
        for address, what in sorted(recovery.written.items()):
            self.out.print(f"  {address}: {what} when the apply stopped")
        if recovery.restored:
            self.out.print(
                f"Restored {text.plural(len(recovery.restored), 'reference')} to their values before the apply."
            )
        if recovery.completed:
            self.out.print(f"Completed {text.plural(len(recovery.completed), 'reference')} as planned.")
        if recovery.left:
            self.out.print(
                f"Left {text.plural(len(recovery.left), 'reference')} as found: someone else moved them "
                "('kfmops drift' shows them)."
            )

    def history(self, entries: list[dict[str, Any]]) -> None:
        table = Table(
            Column("apply id", no_wrap=True, overflow="ignore", min_width=29),  # never cut: rollback needs it whole
            "finished",
            "operation",
            "operator",
            Column("plan", overflow="fold"),
            "changes",
            "outcome",
        )
        for e in entries:
            s = e["summary"]
            table.add_row(
                e["apply_id"],
                e["finished"],
                e["operation"],
                e["operator"],
                e["plan_id"],
                f"+{s['create']} ~{s['update']} -{s['delete']}"
                + "".join(f" {symbol}{s[a]}" for a, symbol in (("import", "<="), ("forget", "=>")) if s.get(a)),
                e["outcome"],
            )
        self.out.print(table)

    def state_list(self, state: State | None) -> None:
        for address in sorted(state.resources if state else {}):
            self.out.print(address)

    def state_at(self, apply_id: str, state: State) -> None:
        self.out.print(f"State right after {apply_id}: {text.plural(len(state.resources), 'managed reference')}")
        for address, managed in sorted(state.resources.items()):
            version = f"  (version {managed.version})" if managed.version else ""
            self.out.print(f"  {address}: {managed.reference.describe(managed.value)}{version}", markup=False)

    def state_diff(self, first: str, second: str, moved: list[Moved]) -> None:
        if not moved:
            self.out.print(f"No references moved between {first} and {second}.")
            return
        self.out.print(f"{text.plural(len(moved), 'reference')} moved from {first} to {second}:")
        symbols = {"added": "+", "removed": "-", "changed": "~"}
        for m in moved:
            versions = f"  version {m.before_version or '(none)'} -> {m.after_version or '(none)'}"
            self.out.print(
                f"  {symbols[m.what]} {m.address}{versions if m.before_version or m.after_version else ''}",
                markup=False,
            )
            for path, before, after in field_changes(m.before, m.after):
                self.out.print(f"      {path}: {show(before)} -> {show(after)}", markup=False)

    def point_in_time(self, plan: Plan, where: PointInTime) -> None:
        self.out.print(f"Rollback to {where.describe()}.")
        text.render_plan(plan, self.out)

    def state_entry(self, address: str, managed: ManagedReference) -> None:
        for key, value in entry_of(address, managed).items():
            self.out.print(f"{key}: {json.dumps(value) if isinstance(value, dict | list) else value}")

    def lock(self, status: LockStatus, freeze: Freeze | None = None) -> None:
        if status.held and status.info:
            self.out.print(f"Locked: {status.info.describe()}")
        elif status.stale and status.info:
            self.out.print(f"Free, with a stale lock record {status.info.id}: {status.note}")
        else:
            self.out.print("Free.")
        if freeze is not None:
            self.frozen(freeze)

    def slo(self, reports: list[SloReport]) -> None:
        if not reports:
            self.out.print("No service level objectives declared (kfmops.yaml 'slo:').")
            return
        table = Table("objective", "target", "measured", "window", "events", "budget left", "burn rate", "gate")
        for r in reports:
            table.add_row(*_slo_cells(r))
        self.out.print(table)

    def frozen(self, freeze: Freeze) -> None:
        until = f" until {freeze.until}" if freeze.until else " until 'kfmops resume'"
        self.out.print(f"Frozen{until}: by {freeze.who} since {freeze.since} ({freeze.reason}).")

    def resumed(self, lifted: Freeze) -> None:
        self.out.print(f"Resumed: the freeze by {lifted.who} since {lifted.since} ({lifted.reason}) is lifted.")

    def ledger(self, entries: list[dict[str, Any]]) -> None:
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
        self.out.print(table)

    def catalog(self, report: CatalogReport, root: Path) -> None:
        for path, problem in report.invalid:
            self.out.print(f"invalid  {path}: {problem}")
        for path, href in report.broken_links:
            self.out.print(f"broken   {path}: link {href}")
        for path, why in report.orphans:
            self.out.print(f"orphan   {path}: {why}")
        if report.unchecked_extensions:
            self.out.print(f"not checked (no local schema): {', '.join(sorted(report.unchecked_extensions))}")
        self.out.print(
            f"{report.documents} STAC documents under {root}: {len(report.invalid)} schema problems, "
            f"{len(report.broken_links)} broken links, {len(report.orphans)} orphans."
        )

    def migrated(self, copied: Copied) -> None:
        self.out.print(f"Migrated state lineage {copied.lineage} (serial {copied.serial}) to {copied.target}:")
        self.out.print(
            f"  {copied.resources} managed references, {copied.history} history records, {copied.wals} WALs, "
            f"{copied.ledger} ledger entries (head {copied.ledger_head or 'none'}); the copy verifies."
        )
        self.out.print(f"Point kfmops.yaml's 'state:' at the new store; {copied.source} is left as it was.")

    def initialized(self, done: Initialized) -> None:
        for created in done.created:
            self.err.print(f"created {created}")
        self.err.print(
            f"Workspace ready at {done.root}: state lineage {done.state.lineage}, serial {done.state.serial}; "
            f"backends {', '.join(done.backends)}. Next: kfmops plan"
        )


def _slo_cells(r: SloReport) -> tuple[str, ...]:
    gate = "exhausted: apply refused" if r.exhausted else "open"
    return (r.name, f"{r.objective:g}", f"{r.measured:g} {r.unit}", r.window, str(r.events),
            f"{r.remaining_budget:.0%}", f"{r.burn_rate:.2f}", gate)  # fmt: skip


class MarkdownView(HumanView):
    """Plans and SLO reports as Markdown (a PR comment, an issue body); everything else as the human view shows it."""

    def slo(self, reports: list[SloReport]) -> None:
        lines = ["### kfmops service level objectives", ""]
        if not reports:
            lines.append("_No service level objectives declared (kfmops.yaml `slo:`)._")
        else:
            lines += [
                "| objective | target | measured | window | events | budget left | burn rate | gate |",
                "|---|---:|---:|---|---:|---:|---:|---|",
                *("| " + " | ".join(_slo_cells(r)) + " |" for r in reports),
            ]
        sys.stdout.write("\n".join(lines) + "\n")

    def plan(self, plan: Plan, saved: Path | None = None, *, verbose: bool = False) -> None:
        detail = "full" if verbose else self.detail
        sys.stdout.write(markdown.render_plan(plan, detail, saved.name if saved else None))
