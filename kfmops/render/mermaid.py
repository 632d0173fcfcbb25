"""The Mermaid flowchart of what a plan moves, for the Markdown view: each dataset (or raw kind) and its
changed references, before -> after. Labels are escaped as Mermaid entity codes."""

from __future__ import annotations

from kfmops.plans.model import Change, Plan
from kfmops.render.markup import mermaid_label
from kfmops.render.values import short
from kfmops.render.versions import pointer_version, version_arrow, version_ids

DIAGRAM_EDGES = 200
"""The Mermaid diagram draws at most this many changed references; a node says how many more there are."""


def diagram(plan: Plan, datasets: dict[str, list[Change]], raw: list[Change]) -> list[str]:
    """A Mermaid flowchart: each dataset (or raw kind) -> one node per changed reference, before -> after."""
    edges: list[tuple[str, str, str]] = []  # (parent label, parent id, child label)
    for i, (name, changes) in enumerate(datasets.items()):
        versions = version_ids(plan, name)
        for c in changes:
            if not c.action.mutates:
                continue
            before, after = (pointer_version(c, value, versions) for value in (c.before, c.after))
            edges.append((name, f"d{i}", f"{c.action.symbol} {c.reference.kind}: {version_arrow(before, after)}"))
    kinds = {kind: f"k{i}" for i, kind in enumerate(sorted({c.address.split(".", 1)[0] for c in raw}))}
    for c in raw:
        kind, name = c.address.split(".", 1)
        edges.append((kind, kinds[kind], f"{c.action.symbol} {name}: {version_arrow(short(c.before), short(c.after))}"))
    if not edges:
        return []
    lines = ["#### What moves", "", "```mermaid", "flowchart LR"]
    for n, (parent, parent_id, child) in enumerate(edges[:DIAGRAM_EDGES]):
        lines.append(f'  {parent_id}["{mermaid_label(parent)}"] --> e{n}["{mermaid_label(child)}"]')
    hidden = len(edges) - DIAGRAM_EDGES
    if hidden > 0:
        lines.append(f'  more["… and {hidden} more changed references"]')
    lines.append("```")
    if hidden > 0:
        lines += ["", f"_The diagram shows {DIAGRAM_EDGES} of {len(edges)} changed references, and {hidden} more._"]
    return ["\n".join(lines)]
