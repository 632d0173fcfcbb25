"""Escaping for Markdown: values from desired state or backends made safe where they land — table cells
(pipes, HTML, Markdown punctuation), inline code spans, Mermaid labels (entity codes)."""

from __future__ import annotations

import html
import re

_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]~])")
_MERMAID = str.maketrans({'"': "#34;", "#": "#35;", "<": "#60;", ">": "#62;", "&": "#38;", "`": "#96;"})


def one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def cell_text(value: str) -> str:
    """Plain text for a table cell: one line, Markdown punctuation and HTML escaped, pipes escaped."""
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", one_line(value)), quote=False).replace("|", "\\|")


def code(value: str, *, table: bool = True) -> str:
    """An inline code span that survives any backticks in `value` (and pipes, inside a table cell)."""
    value = one_line(value)
    if not value:
        return "(empty)"
    run = max((len(r) for r in re.findall(r"`+", value)), default=0)
    fence = "`" * (run + 1)
    padded = f" {value} " if value.startswith("`") or value.endswith("`") else value
    if table:
        padded = padded.replace("|", "\\|")
    return f"{fence}{padded}{fence}"


def mermaid_label(label: str) -> str:
    """Text for a quoted Mermaid label: quotes, #, HTML and backticks as Mermaid entity codes."""
    return one_line(label).replace("\\n", " ").translate(_MERMAID)
