"""Markdown view of a plan for PR comments: summary first, then a row per dataset, raw references, a
diagram of what moves, and each change's diff collapsed in a <details> element.

`render_blocks` returns self-contained blocks: every code fence, <details> element and table opens and
closes inside one block, so `kfmops.render.comment` can pack blocks into comments of bounded size.
Values that come from desired state or from backends are escaped for where they land: table cells
(pipes, HTML, Markdown punctuation), HTML (<summary>), Mermaid labels (entity codes). Inside a code
fence a value is shown as-is on one line; no fence line ever starts with a backtick.
"""

from __future__ import annotations

import html
import posixpath
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from kfmops.plans.model import Action, Change, Plan
from kfmops.references import ReferenceKind
from kfmops.render.markup import cell_text, code, one_line
from kfmops.render.mermaid import diagram
from kfmops.render.text import exposure_lines, summary_line
from kfmops.render.values import MISSING, field_changes, short, show
from kfmops.render.versions import dataset_versions, version_move

PARTS = tuple(ReferenceKind)
CHANGED_MARK = "✎"
"""Marks changes whose desired-state document changed in git (plan.git["changed_documents"])."""


SUMMARY_ABOVE = 200
"""`detail: auto` renders a summary (no per-change diffs) for plans moving more datasets than this."""
SUMMARY_ROWS = 300


def render_plan(plan: Plan, detail: str = "full", artifact: str | None = None) -> str:
    return "\n\n".join(render_blocks(plan, detail, artifact)) + "\n"


def render_blocks(plan: Plan, detail: str = "full", artifact: str | None = None) -> list[str]:
    """The comment as self-contained Markdown blocks, in reading order; the summary is always first.

    `detail`: full (every change, collapsed), summary (counts per dataset; the full plan is the artifact
    named by `artifact`), or auto (summary above SUMMARY_ABOVE datasets)."""
    datasets, raw = _groups(plan)
    if detail == "summary" or (detail == "auto" and len(datasets) > SUMMARY_ABOVE):
        return _summary_blocks(plan, datasets, raw, artifact)
    blocks = [summary_section(plan)]
    blocks += changed_documents(plan)
    blocks += checkpoints_section(plan)
    blocks += policy_findings(plan)
    blocks += exposure_section(plan)
    blocks += drift_section(plan)
    blocks += dataset_rows(plan, datasets)
    blocks += raw_rows(plan, raw)
    blocks += diagram(plan, datasets, raw)
    ordered = [c for changes in datasets.values() for c in changes if c.action.mutates] + raw
    blocks += [change_details(change, plan) for change in ordered]
    return blocks


def _summary_blocks(
    plan: Plan, datasets: dict[str, list[Change]], raw: list[Change], artifact: str | None
) -> list[str]:
    rows = [
        "#### Changes per dataset",
        "",
        "| dataset | version | create | update | delete |",
        "|:---|:---|---:|---:|---:|",
    ]
    for name, changes in list(datasets.items())[:SUMMARY_ROWS]:
        before, after = dataset_versions(plan, name, changes)
        counts = [sum(c.action is a for c in changes) for a in (Action.CREATE, Action.UPDATE, Action.DELETE)]
        rows.append(f"| {code(name)} | {version_move(before, after)} | " + " | ".join(map(str, counts)) + " |")
    more = len(datasets) - SUMMARY_ROWS
    note = (f"… and {more} more datasets. " if more > 0 else "") + (
        f"The full plan is attached as the artifact {code(artifact, table=False)}."
        if artifact
        else "The full plan is the plan file: `kfmops show PLAN_FILE --format markdown --detail full`."
    )
    return [
        summary_section(plan),
        *changed_documents(plan),
        *checkpoints_section(plan),
        *policy_findings(plan),
        *exposure_section(plan),
        *drift_section(plan),
        "\n".join(rows),
        *raw_rows(plan, raw),
        note,
    ]


# sections ------------------------------------------------------------------------------------------


def summary_section(plan: Plan) -> str:
    s = plan.summary()
    title = f"### kfmops plan {code(plan.plan_id, table=False)}"
    if plan.operation != "apply":
        title += f" ({cell_text(plan.operation)})"
    header = "| create | update | delete | unchanged | policy | drift | commit | branch |"
    row = (
        f"| {s['create']} | {s['update']} | {s['delete']} | {s['no_op']} | {_decision(plan.policy)} "
        f"| {len(plan.drift)} | {_commit(plan.git)} | {_branch(plan.git)} |"
    )
    return "\n".join(
        [title, "", f"**{summary_line(plan)}**", "", header, "|---:|---:|---:|---:|:---|---:|:---|:---|", row]
    )


def changed_documents(plan: Plan) -> list[str]:
    """The desired-state files git says changed, each with how many changes come from it."""
    changed = _changed(plan)
    if not changed:
        return []
    counts = dict.fromkeys(changed, 0)
    for change in plan.moves:
        path = _changed_file(change.source, changed)
        if path is not None:
            counts[path] += 1
    base = plan.git.get("base") or plan.git.get("base_ref")
    since = f" since {code(str(base), table=False)}" if base else ""
    lines = [f"**Desired-state documents changed{since}** ({CHANGED_MARK} marks changes that come from them)", ""]
    for path, count in counts.items():
        moved = f"{count} change{'s' if count != 1 else ''}" if count else "no reference changes"
        lines.append(f"- {CHANGED_MARK} {code(_relative(path, plan.workspace), table=False)}: {moved}")
    return ["\n".join(lines)]


def checkpoints_section(plan: Plan) -> list[str]:
    """The checkpoint results of the versions the plan moves pointers to; a failed one blocks its dataset."""
    if not plan.checks:
        return []
    lines = ["**Checkpoints**", "", "| result | dataset | version | check | detail |", "|:---|:---|:---|:---|:---|"]
    lines += [
        f"| {'passed' if c['passed'] else '**failed**'} | {code(str(c['dataset']))} | {code(str(c['version']))} "
        f"| {cell_text(str(c['check']))} | {cell_text(str(c['detail']))} |"
        for c in plan.checks
    ]
    return ["\n".join(lines)]


def policy_findings(plan: Plan) -> list[str]:
    findings = plan.policy.get("findings") or []
    if not findings:
        return []
    lines = ["**Policy findings**", "", "| severity | rule | address | finding | fix |", "|:---|:---|:---|:---|:---|"]
    lines += [
        f"| {cell_text(str(f.get('severity', 'deny')))} | {cell_text(str(f.get('rule', '')))} "
        f"| {code(str(f['address'])) if f.get('address') else ''} | {cell_text(str(f.get('message', '')))} "
        f"| {cell_text(str(f.get('fix') or ''))} |"
        for f in findings
    ]
    return ["\n".join(lines)]


def exposure_section(plan: Plan) -> list[str]:
    """Changes of exposure (CARE metadata edits), as a fenced block: they move no reference."""
    if not plan.exposure:
        return []
    return ["#### Changes of exposure\n\n```\n" + "\n".join(exposure_lines(plan)) + "\n```"]


def drift_section(plan: Plan) -> list[str]:
    if not plan.drift:
        return []
    lines = [
        "**Drift** (live values that differ from what kfmops last applied)",
        "",
        "| address | type | last applied → live | why |",
        "|:---|:---|:---|:---|",
    ]
    for d in plan.drift:
        values = " → ".join(
            "(absent)" if d.get(key) is None else code(short(d[key])) for key in ("last_applied", "live")
        )
        lines.append(
            f"| {code(str(d.get('address', '')))} | {cell_text(str(d.get('type', 'drift')))} | {values} "
            f"| {cell_text(str(d.get('message', '')))} |"
        )
    return ["\n".join(lines)]


def dataset_rows(plan: Plan, datasets: dict[str, list[Change]] | None = None) -> list[str]:
    """One row per dataset with a changed reference: version before -> after, the parts that move, source.

    `datasets`: every change (no-ops too) of each dataset that has a changed reference, as `_groups` makes."""
    if datasets is None:
        datasets = _groups(plan)[0]
    if not datasets:
        return []
    changed = _changed(plan)
    lines = ["#### Datasets", "", "| dataset | version | changes | source |", "|:---|:---|:---|:---|"]
    for name, changes in datasets.items():
        before, after = dataset_versions(plan, name, changes)
        moved = _parts_moved([c for c in changes if c.action.mutates])
        source = next((c.source for c in changes if c.source), None) or plan.datasets.get(name, {}).get("source")
        where = _source(source, changed, removed=after is None)
        lines.append(f"| {code(name)} | {version_move(before, after)} | {moved} | {where} |")
    return ["\n".join(lines)]


def raw_rows(plan: Plan, raw: list[Change]) -> list[str]:
    """Raw references (StacLink, GraphRelationship, SearchAlias, CacheKey) in their own table."""
    if not raw:
        return []
    changed = _changed(plan)
    lines = [
        "#### Raw references",
        "",
        "| reference | backend | action | value | source |",
        "|:---|:---|:---|:---|:---|",
    ]
    for c in raw:
        value = " → ".join("(absent)" if v is None else code(short(v)) for v in (c.before, c.after))
        lines.append(
            f"| {code(c.address)} | {c.reference.kind} ({cell_text(c.reference.backend)}) | {c.action.symbol} "
            f"{c.action.value} | {value} | {_source(c.source, changed, removed=c.action is Action.DELETE)} |"
        )
    return ["\n".join(lines)]


def change_details(change: Change, plan: Plan | None = None) -> str:
    """One change, collapsed: its address and reason as summary, where it comes from, and a diff fence."""
    changed = _changed(plan) if plan is not None else []
    summary = (
        f"<details><summary>{change.action.symbol} <code>{html.escape(change.address)}</code> "
        f"— {html.escape(one_line(change.reason))}</summary>"
    )
    where = f"backend {code(change.reference.backend, table=False)}"
    if change.source:
        mark = f" {CHANGED_MARK}" if _changed_file(change.source, changed) else ""
        where += f" · {code(change.source, table=False)}{mark}"
    expected = "absent" if change.before is None else code(change.precondition, table=False)
    where += f" · expects {expected}"
    lines = [summary, "", where, "", "```diff"]
    for path, before, after in field_changes(change.before, change.after):
        if _present(before):
            lines.append(f"- {one_line(path)}: {one_line(show(before))}")
        if _present(after):
            lines.append(f"+ {one_line(path)}: {one_line(show(after))}")
    lines += ["```", "", "</details>"]
    return "\n".join(lines)


# grouping ------------------------------------------------------------------------------------------


def _groups(plan: Plan) -> tuple[dict[str, list[Change]], list[Change]]:
    """Every change (no-ops too) of each dataset with a changed reference, sorted by name with parts in a
    fixed order, and the changed raw references sorted by address."""
    datasets: dict[str, list[Change]] = defaultdict(list)
    moved: set[str] = set()
    raw = []
    for change in plan.changes:
        name = change.reference.dataset
        if name:
            datasets[name].append(change)
            if change.action.mutates:
                moved.add(name)
        elif change.action.mutates:
            raw.append(change)
    rank = {kind: i for i, kind in enumerate(PARTS)}
    ordered = {
        name: sorted(datasets[name], key=lambda c: (rank.get(c.reference.kind, len(rank)), c.address))
        for name in sorted(moved)
    }
    return ordered, sorted(raw, key=lambda c: c.address)


def _changed(plan: Plan) -> list[str]:
    """plan.git["changed_documents"] as strings: paths, absolute or relative to the workspace."""
    return [str(path) for path in plan.git.get("changed_documents") or []]


def _relative(path: str, root: str) -> str:
    return posixpath.relpath(path, root) if root and path.startswith(root.rstrip("/") + "/") else path


def _changed_file(source: str | None, changed: Iterable[str]) -> str | None:
    """The changed document that `source` (`file:line`, or `ref:file:line`) comes from, if any."""
    if not source:
        return None
    file = source.rpartition(":")[0] if source.rpartition(":")[2].isdigit() else source
    file = _path(file.rpartition(":")[2])  # `--git-ref` sources are `REF:path`
    for path in changed:
        other = _path(path)
        if file == other or file.endswith("/" + other) or other.endswith("/" + file):
            return path
    return None


def _parts_moved(changes: list[Change]) -> str:
    """`~ stac, graph on local` style: the parts that change, grouped by action and backend."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for c in changes:
        groups[(c.action.symbol, c.reference.backend)].append(c.reference.kind)
    return "; ".join(f"{symbol} {', '.join(kinds)} on {code(backend)}" for (symbol, backend), kinds in groups.items())


def _path(text: str) -> str:
    return posixpath.normpath(text.replace("\\", "/")).removeprefix("./")


def _present(value: Any) -> bool:
    return value is not MISSING and value is not None


def _source(source: str | None, changed: list[str], *, removed: bool) -> str:
    if not source:
        return "removed from desired state" if removed else ""
    mark = f" {CHANGED_MARK}" if _changed_file(source, changed) else ""
    return f"{code(source)}{mark}"


def _decision(policy: dict[str, Any]) -> str:
    decision = str(policy.get("decision", "allow"))
    warnings = sum(1 for f in policy.get("findings") or [] if f.get("severity") == "warn")
    shown = {"allow": "✅ allow", "deny": "❌ deny"}.get(decision, cell_text(decision))
    return shown + (f" ({warnings} warning{'s' if warnings != 1 else ''})" if warnings else "")


def _commit(git: dict[str, Any]) -> str:
    commit = git.get("commit")
    if not commit:
        return "n/a"
    shown = f"{git['ref']}@{str(commit)[:12]}" if git.get("ref") else str(commit)[:12]
    return code(shown) + (" (dirty)" if git.get("dirty") else "")


def _branch(git: dict[str, Any]) -> str:
    return code(str(git["branch"])) if git.get("branch") else "n/a"
