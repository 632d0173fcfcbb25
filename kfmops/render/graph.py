"""The desired reference graph: each dataset or raw document, its references, and what they point at."""

from __future__ import annotations

import re
from typing import Any

from kfmops.desired.collector import DesiredReference
from kfmops.desired.expand import DesiredState
from kfmops.errors import KfmopsError


def _target(reference: DesiredReference) -> str:
    return reference.reference.describe(reference.value)


def _edges(desired: DesiredState) -> list[tuple[str, str, str]]:
    """(owner, address, label) per reference; the owner is the dataset or the raw document's address."""
    edges = []
    for address, reference in sorted(desired.references.items()):
        owner = f"dataset.{reference.reference.dataset}" if reference.reference.dataset else address
        edges.append(
            (owner, address, f"{reference.reference.kind}@{reference.reference.backend}: {_target(reference)}")
        )
    return edges


def _node_id(text: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", text)


def _quoted(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")


def mermaid(desired: DesiredState) -> str:
    lines = ["flowchart LR"]
    owners: dict[str, Any] = {}
    for owner, address, label in _edges(desired):
        if owner not in owners:
            owners[owner] = True
            version = desired.datasets.get(owner.removeprefix("dataset."), {}).get("version")
            title = f"{owner} @ {version}" if version else (owner if owner != address else f"{owner}: {label}")
            lines.append(f'  {_node_id(owner)}["{_quoted(title)}"]')
        if owner != address:
            lines.append(f'  {_node_id(address)}["{_quoted(label)}"]')
            lines.append(f"  {_node_id(owner)} --> {_node_id(address)}")
    return "\n".join(lines) + "\n"


def dot(desired: DesiredState) -> str:
    lines = ["digraph references {", "  rankdir=LR;", "  node [shape=box];"]
    for owner, address, label in _edges(desired):
        lines.append(f'  "{_quoted(owner)}";')
        if owner != address:
            lines.append(f'  "{_quoted(address)}" [label="{_quoted(address)}\\n{_quoted(label)}"];')
            lines.append(f'  "{_quoted(owner)}" -> "{_quoted(address)}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


GRAPH_FORMATS = {"mermaid": mermaid, "dot": dot}


def render_graph(desired: DesiredState, graph_format: str) -> str:
    """The reference graph as Mermaid or DOT."""
    if graph_format not in GRAPH_FORMATS:
        raise KfmopsError(f"unknown graph format {graph_format!r}; use mermaid or dot")
    return GRAPH_FORMATS[graph_format](desired)
