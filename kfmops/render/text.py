"""Terminal view of a plan: changes grouped by dataset (its references together, in apply order), each with
only the fields that change, a symbol legend, drift with live and expected values, checkpoint results, policy
findings, and a summary line. Above `LARGE` changes only the summary and per-dataset counts are printed."""

from __future__ import annotations

import os
from collections import Counter, defaultdict

from rich.console import Console
from rich.text import Text

from kfmops.plans.model import Action, Change, Operation, Plan
from kfmops.render.values import field_changes, headline, show

STYLE = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.DELETE: "red",
    Action.NOOP: "dim",
    Action.IMPORT: "cyan",
    Action.FORGET: "magenta",
}
LARGE = 2000
"""Plans with more changes than this print a summary and per-dataset counts (`--verbose` prints all)."""


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary_line(plan: Plan) -> str:
    s = plan.summary()
    if plan.operation == Operation.REFRESH:
        if not plan.drift:
            return "No drift: every managed reference holds its last applied value."
        return f"Drift: {plural(len(plan.drift), 'reference')} differ from what kfmops last applied or from git."
    if not plan.has_changes():
        return f"No changes. {plural(s['no_op'], 'reference')} up to date."
    adopted = "".join(f"{s[a]} to {a}, " for a in ("import", "forget") if s.get(a))
    line = f"Plan: {adopted}{s['create']} to create, {s['update']} to update, {s['delete']} to delete, "
    line += f"{s['no_op']} unchanged"
    if plan.exposure:
        line += f"; {plural(len(plan.exposure), 'change')} of exposure"
    return line + "."


def exposure_lines(plan: Plan) -> list[str]:
    """Each change of exposure: the dataset and every CARE key that changed, before -> after."""
    lines = []
    for entry in plan.exposure:
        lines.append(f"~ {entry['address']}: change of exposure (CARE metadata; no reference moves for it)")
        for key in entry["fields"]:
            lines.append(f"    care.{key}: {show(entry['before'].get(key))} -> {show(entry['after'].get(key))}")
    return lines


def checkpoint_lines(plan: Plan) -> list[tuple[str, bool]]:
    """Each checkpoint result as one line, and whether it passed."""
    return [
        (
            f"checkpoint {c['check']} {'passed' if c['passed'] else 'FAILED'}: "
            f"dataset.{c['dataset']}@{c['version']}: {c['detail']}",
            bool(c["passed"]),
        )
        for c in plan.checks
    ]


def render_plan(plan: Plan, console: Console, *, verbose: bool = False, large: int = LARGE) -> None:
    header = f"Plan {plan.plan_id} ({plan.operation})"
    if plan.git.get("commit"):
        dirty = ", dirty" if plan.git.get("dirty") else ""
        header += f" at {plan.git.get('ref') or plan.git.get('branch') or ''}@{plan.git['commit'][:12]}{dirty}"
    console.print(Text(header, style="bold"))
    mutations = plan.moves
    if plan.git.get("base"):
        changed = sorted(plan.git.get("changed_documents", []))
        console.print(f"Documents changed since {plan.git['base']}: {', '.join(changed) or 'none'}\n")
    if mutations:
        symbols = "+ create, ~ update, - delete"
        summary = plan.summary()
        symbols += "".join(f", {a.symbol} {a.value}" for a in (Action.IMPORT, Action.FORGET) if summary.get(a.value))
        console.print(f"Symbols: {symbols}. kfmops will perform the following actions:\n")
        if len(mutations) > large and not verbose:
            _counts(console, mutations)
        else:
            _changes(console, plan, mutations)
    for line in exposure_lines(plan):
        console.print(Text(f"  {line}", style="yellow"))
    if plan.exposure:
        console.print()
    for drift in plan.drift:
        console.print(Text(f"  ! {drift['address']}: {drift['message']}", style="magenta"))
        console.print(
            Text(f"      live: {show(drift.get('live'))}; kfmops last applied: {show(drift.get('last_applied'))}")
        )
    for line, passed in checkpoint_lines(plan):
        console.print(Text(f"  {line}", style="green" if passed else "red"))
    for finding in plan.policy.get("findings", []):
        severity = finding.get("severity", "deny")
        style = "red" if severity == "deny" else "yellow"
        console.print(
            Text(
                f"  policy {severity} {finding.get('rule')}: {finding.get('address') or '-'}: {finding.get('message')}",
                style=style,
            )
        )
        if finding.get("fix"):
            console.print(Text(f"      fix: {finding['fix']}", style=style))
    console.print(Text(summary_line(plan), style="bold"))


def _groups(changes: list[Change]) -> dict[str, list[Change]]:
    """Changes by owner (a dataset's references together, raw references alone), in a stable order."""
    groups: dict[str, list[Change]] = defaultdict(list)
    for change in changes:
        groups[f"dataset.{change.reference.dataset}" if change.reference.dataset else change.address].append(change)
    return dict(sorted(groups.items()))


def _changes(console: Console, plan: Plan, mutations: list[Change]) -> None:
    changed_files = set(plan.git.get("changed_documents", []))
    for owner, changes in _groups(mutations).items():
        if changes[0].reference.dataset:
            versions = {(c.before_version, c.version) for c in changes if c.version}
            moves = ", ".join(f"{b or '(none)'} -> {a}" for b, a in sorted(versions, key=str)) if versions else ""
            console.print(Text(f"{owner}" + (f"  version {moves}" if moves else ""), style="bold"))
        for change in changes:
            style = STYLE[change.action]
            source = _source(change.source)
            where = f"  [{source}]" if source else ""
            if source and source.rsplit(":", 1)[0] in changed_files:
                where += " (changed in this branch)"
            console.print(
                Text(f"  # {headline(change.action.value, change.address, change.reason)}{where}", style="dim")
            )
            console.print(Text(f"  {change.action.symbol} {change.address}", style=f"bold {style}"))
            if change.action in (Action.IMPORT, Action.FORGET):
                console.print(Text(f"      live: {change.reference.describe(change.before)}", style=style))
                continue
            fields = field_changes(change.before, change.after)
            for path, before, after in fields:
                if before is after or (show(before) == show(after)):
                    continue  # (absent) -> (absent): nothing to show
                console.print(Text(f"      {path}: {show(before)} -> {show(after)}", style=style))
            hidden = _unchanged_fields(change) - len(fields)
            if hidden > 0:
                console.print(Text(f"      # ({plural(hidden, 'unchanged attribute')} hidden)", style="dim"))
        console.print()


def _counts(console: Console, mutations: list[Change]) -> None:
    console.print(f"{plural(len(mutations), 'change')}: showing counts per dataset (--verbose prints every change)")
    for owner, changes in _groups(mutations).items():
        actions = Counter(change.action for change in changes)
        shown = ", ".join(
            f"{actions[a]} {a.value}"
            for a in (Action.IMPORT, Action.FORGET, Action.CREATE, Action.UPDATE, Action.DELETE)
            if actions[a]
        )
        console.print(f"  {owner}: {shown}")
    console.print()


def _unchanged_fields(change: Change) -> int:
    """How many leaf fields the reference's value has in all (before and after together)."""
    return len(field_changes(change.before, None)) if isinstance(change.before, dict) else 0


def _source(source: str | None) -> str | None:
    """`file:line` with the path normalized (sources are relative to the workspace root)."""
    if not source:
        return None
    file, _, line = source.rpartition(":")
    return f"{os.path.normpath(file)}:{line}" if file else source
