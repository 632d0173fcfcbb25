"""Markdown view of a plan for PR comments: summary first, a row per dataset, details collapsed."""

from __future__ import annotations

from collections import defaultdict

from kfmops.plans.model import Change, Plan
from kfmops.render.text import summary_line
from kfmops.render.values import field_changes, show


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_section(plan: Plan) -> list[str]:
    s = plan.summary()
    decision = plan.policy.get("decision", "allow")
    commit = plan.git.get("commit")
    lines = [
        f"### kfmops plan `{plan.plan_id}`",
        "",
        f"**{summary_line(plan)}**",
        "",
        "| create | update | delete | unchanged | policy | drift | commit |",
        "|---:|---:|---:|---:|:---|---:|:---|",
        f"| {s['create']} | {s['update']} | {s['delete']} | {s['no_op']} | {decision} | {len(plan.drift)} | "
        f"{('`' + commit[:12] + '`' + (' (dirty)' if plan.git.get('dirty') else '')) if commit else 'n/a'} |",
        "",
    ]
    findings = plan.policy.get("findings", [])
    if findings:
        lines += ["**Policy findings**", "", "| rule | address | finding | fix |", "|:---|:---|:---|:---|"]
        lines += [
            f"| {_cell(str(f.get('rule')))} | `{f.get('address')}` | {_cell(str(f.get('message')))} | "
            f"{_cell(str(f.get('fix', '')))} |"
            for f in findings
        ]
        lines.append("")
    return lines


def dataset_rows(plan: Plan) -> list[str]:
    groups: dict[str, list[Change]] = defaultdict(list)
    for change in plan.mutations:
        groups[change.reference.dataset or change.address].append(change)
    if not groups:
        return []
    lines = ["| dataset / reference | version | changes |", "|:---|:---|:---|"]
    for name, changes in sorted(groups.items()):
        record = plan.datasets.get(name, {})
        version = record.get("version", "")
        moved = ", ".join(
            f"{c.action.symbol} {c.address.rsplit('.', 1)[-1] if c.reference.dataset else c.action.value}"
            for c in changes
        )
        lines.append(f"| `{name}` | {_cell(version)} | {_cell(moved)} |")
    return [*lines, ""]


def change_details(change: Change) -> list[str]:
    lines = [
        f"<details><summary>{change.action.symbol} <code>{change.address}</code> — {change.reason}</summary>",
        "",
        "```diff",
    ]
    for path, before, after in field_changes(change.before, change.after):
        if before is not None:
            lines.append(f"- {path}: {show(before)}")
        if after is not None:
            lines.append(f"+ {path}: {show(after)}")
    lines += ["```", "", "</details>", ""]
    return lines


def render_plan(plan: Plan) -> str:
    lines = summary_section(plan) + dataset_rows(plan)
    for change in plan.mutations:
        lines += change_details(change)
    return "\n".join(lines).rstrip() + "\n"
