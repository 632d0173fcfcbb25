"""Terminal view of a plan: Terraform-like `+ ~ -` lines with colour, and a summary line."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from kfmops.plans.model import Action, Plan
from kfmops.render.values import field_changes, headline, show

STYLE = {Action.CREATE: "green", Action.UPDATE: "yellow", Action.DELETE: "red", Action.NOOP: "dim"}


def summary_line(plan: Plan) -> str:
    s = plan.summary()
    if plan.operation == "refresh":
        if not plan.drift:
            return "No drift: every managed reference holds its last applied value."
        return f"Drift: {len(plan.drift)} references differ from what kfmops last applied or from git."
    if not plan.has_changes():
        return f"No changes. {s['no_op']} references up to date."
    return f"Plan: {s['create']} to create, {s['update']} to update, {s['delete']} to delete, {s['no_op']} unchanged."


def render_plan(plan: Plan, console: Console, *, show_unchanged: bool = False) -> None:
    header = f"Plan {plan.plan_id} ({plan.operation})"
    if plan.git.get("commit"):
        dirty = ", dirty" if plan.git.get("dirty") else ""
        header += f" at {plan.git.get('ref') or plan.git.get('branch') or ''}@{plan.git['commit'][:12]}{dirty}"
    console.print(Text(header, style="bold"))
    mutations = plan.mutations
    if mutations:
        console.print("kfmops will perform the following actions:\n")
    changed_files = set(plan.git.get("changed_documents", []))
    if plan.git.get("base"):
        console.print(f"Documents changed since {plan.git['base']}: {', '.join(sorted(changed_files)) or 'none'}\n")
    for change in plan.changes:
        if not change.action.mutates and not show_unchanged:
            continue
        style = STYLE[change.action]
        where = f"  [{change.source}]" if change.source else ""
        if change.source and change.source.rsplit(":", 1)[0] in changed_files:
            where += " (changed in this branch)"
        console.print(Text(f"  # {headline(change.action.value, change.address, change.reason)}{where}", style="dim"))
        console.print(Text(f"  {change.action.symbol} {change.address}", style=f"bold {style}"))
        for path, before, after in field_changes(change.before, change.after):
            console.print(Text(f"      {path}: {show(before)} -> {show(after)}", style=style))
        console.print()
    for drift in plan.drift:
        console.print(Text(f"  ! {drift['address']}: {drift['message']}", style="magenta"))
    for finding in plan.policy.get("findings", []):
        style = "red" if finding.get("severity", "deny") == "deny" else "yellow"
        console.print(
            Text(
                f"  policy {finding.get('severity', 'deny')} {finding.get('rule')}: "
                f"{finding.get('address') or '-'}: {finding.get('message')}",
                style=style,
            )
        )
        if finding.get("fix"):
            console.print(Text(f"      fix: {finding['fix']}", style=style))
    console.print(Text(summary_line(plan), style="bold"))
