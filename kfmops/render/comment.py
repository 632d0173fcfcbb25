"""Split a Markdown PR comment into parts that each fit GitHub's comment limit and each render on their own.

The comment is a sequence of blocks (a code fence, a <details> element, a table, a paragraph or list).
Blocks are packed greedily into parts and never cut, except a block larger than a whole part, which is
cut into several complete blocks: a fence is closed and re-opened (a Mermaid fence keeps its diagram
type line), a table repeats its header and separator rows, a <details> element repeats its summary
marked "(continued)" around the cut content. So every part has balanced fences and <details>, every
table in it starts with its header, and the first part starts with the first block (the summary).

Sizes are counted in UTF-16 code units, never fewer than characters, so a part is within the limit
however GitHub counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kfmops.plans.model import Plan
from kfmops.render.markdown import render_blocks

GITHUB_LIMIT = 65536
"""GitHub's maximum comment body."""
MARKER = "kfmops-plan"
"""Hidden marker: a single comment starts with `<!-- kfmops-plan -->`, part N with `<!-- kfmops-plan part N -->`."""
SMALLEST_LIMIT = 1024

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_SEPARATOR = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def split_comment(markdown: str | Sequence[str], limit: int = GITHUB_LIMIT, *, marker: str = MARKER) -> list[str]:
    """`markdown` (one text, or self-contained blocks such as `render_blocks` makes) as comment bodies of at
    most `limit` characters: one body when it fits, otherwise parts headed "kfmops plan (part i/n)"."""
    if limit < SMALLEST_LIMIT:
        raise ValueError(f"a comment limit of {limit} characters is too small (at least {SMALLEST_LIMIT})")
    if isinstance(markdown, str):
        units = blocks_of(markdown)
    else:
        units = [_Unit("block", block.strip("\n").split("\n")) for block in markdown if block.strip()]
    whole = f"<!-- {marker} -->\n" + "\n\n".join(unit.text for unit in units) + "\n"
    if size(whole) <= limit:
        return [whole]
    budget = limit - size(_header(marker, 10**6, 10**6)) - 1  # the trailing newline
    parts = [part for part in _pack(units, budget, budget) if part]
    return [_header(marker, i, len(parts)) + "\n\n".join(part) + "\n" for i, part in enumerate(parts, 1)]


def write_parts(parts: Sequence[str], folder: Path) -> list[Path]:
    """Write comment-1.md, comment-2.md, ... into `folder`, removing parts left there by an earlier run."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("comment-*.md"):
        stale.unlink()
    paths = []
    for i, part in enumerate(parts, 1):
        path = folder / f"comment-{i}.md"
        path.write_text(part, encoding="utf-8")
        paths.append(path)
    return paths


def write_comment(
    plan: Plan, folder: Path, limit: int = GITHUB_LIMIT, detail: str = "auto", artifact: str | None = None
) -> list[Path]:
    """Render `plan` as a PR comment, split it, and write the parts into `folder` (`plan --split DIR`)."""
    return write_parts(split_comment(render_blocks(plan, detail, artifact), limit), folder)


def size(text: str) -> int:
    """Length in UTF-16 code units: characters, plus one for each character outside the BMP."""
    return len(text.encode("utf-16-le")) // 2


def _header(marker: str, index: int, count: int) -> str:
    return f"<!-- {marker} part {index} -->\n**kfmops plan (part {index}/{count})**\n\n"


# blocks --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    """One block: `fence`, `details`, `table`, `text`, or `block` (a caller's block, segmented if too big)."""

    kind: str
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def blocks_of(markdown: str) -> list[_Unit]:
    """The top-level blocks of `markdown`, in order. A block never ends inside a fence or <details>."""
    lines = markdown.split("\n")
    units: list[_Unit] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        kind = _starts(lines, i)
        if kind == "fence":
            end = _fence_end(lines, i)
        elif kind == "details":
            end = _details_end(lines, i)
        elif kind == "table":
            end = i + 2
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
        else:
            end = i + 1
            while end < len(lines) and lines[end].strip() and _starts(lines, end) == "text":
                end += 1
        units.append(_Unit(kind, lines[i:end]))
        i = end
    return units


def _starts(lines: list[str], i: int) -> str:
    line = lines[i]
    if _FENCE.match(line):
        return "fence"
    if line.lstrip().lower().startswith("<details"):
        return "details"
    if line.lstrip().startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1]):
        return "table"
    return "text"


def _closes(line: str, opening: re.Match[str]) -> bool:
    fence = opening.group(1)
    return re.fullmatch(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*", line) is not None


def _fence_end(lines: list[str], i: int) -> int:
    opening = _FENCE.match(lines[i])
    assert opening is not None
    for j in range(i + 1, len(lines)):
        if _closes(lines[j], opening):
            return j + 1
    return len(lines)  # unclosed: CommonMark runs it to the end of the document


def _details_end(lines: list[str], i: int) -> int:
    depth = 0
    opening = None
    for j in range(i, len(lines)):
        line = lines[j]
        if opening is not None:
            if _closes(line, opening):
                opening = None
            continue
        if j > i and (opening := _FENCE.match(line)):
            continue
        lower = line.lower()
        depth += lower.count("<details") - lower.count("</details>")
        if depth <= 0:
            return j + 1
    return len(lines)


# packing -------------------------------------------------------------------------------------------


def _pack(units: Sequence[_Unit], first: int, rest: int) -> list[list[str]]:
    """Pieces of `units` grouped into parts: part 0 at most `first` long (it may stay empty), the others at
    most `rest`. A unit is kept whole when it fits in a part; only a unit longer than `rest` is cut."""
    parts: list[list[str]] = [[]]
    used, budget = 0, first
    for unit in units:
        text = unit.text
        length = size(text)
        gap = 2 if parts[-1] else 0
        if used + gap + length <= budget:
            parts[-1].append(text)
            used += gap + length
            continue
        room = budget - used - gap
        if length <= rest or room < min(SMALLEST_LIMIT, rest // 4):
            parts.append([])
            used, budget, gap, room = 0, rest, 0, rest
        if length <= rest:
            parts[-1].append(text)
            used = length
            continue
        head, *tail = _cut(unit, room, rest)
        if head:  # "" when nothing fitted in the room left
            parts[-1].append(head)
            used += gap + size(head)
        for piece in tail:
            parts.append([piece])
            used, budget = size(piece), rest
    return parts


def _cut(unit: _Unit, first: int, rest: int) -> list[str]:
    """`unit` as complete blocks: the first at most `first` long ("" when nothing fits), the others `rest`."""
    lines = unit.lines
    if unit.kind == "block":
        inner = blocks_of(unit.text)
        if len(inner) == 1:
            return _cut(inner[0], first, rest)
        return ["\n\n".join(part) for part in _pack(inner, first, rest)]
    if unit.kind == "fence":
        opening = _FENCE.match(lines[0])
        assert opening is not None
        head = lines[:2] if opening.group(2).strip() == "mermaid" and len(lines) > 2 else lines[:1]
        closed = len(lines) > 1 and _closes(lines[-1], opening)
        tail = [lines[-1]] if closed else [opening.group(1)]
        body = lines[len(head) : len(lines) - 1 if closed else len(lines)]
        return _cut_rows(head, body, tail, first, rest, _wrap_code)
    if unit.kind == "table":
        return _cut_rows(lines[:2], lines[2:], [], first, rest, _shorten_row)
    if unit.kind == "details" and len(lines) > 2:
        return _cut_details(lines, first, rest)
    return _cut_rows([], lines, [], first, rest, _wrap_text)


def _cut_details(lines: list[str], first: int, rest: int) -> list[str]:
    """A <details> element as several, each around a share of its content, the later ones "(continued)"."""
    leading = next((j for j, line in enumerate(lines) if not line.strip()), len(lines) - 1)
    end = next((j for j, line in enumerate(lines[:leading]) if "</summary>" in line.lower()), 0)
    opening, closing = lines[: end + 1], lines[-1]
    if "</details>" not in closing.lower():
        closing = "</details>"
        inner_lines = lines[end + 1 :]
    else:
        inner_lines = lines[end + 1 : -1]
    again = [*opening[:-1], re.sub(r"(?i)</summary>", " (continued)</summary>", opening[-1], count=1)]
    wrap = size("\n".join([*opening, closing])) + 4  # a blank line after the summary and before </details>
    wrap_again = size("\n".join([*again, closing])) + 4
    inner = blocks_of("\n".join(inner_lines))
    parts = _pack(inner, max(first - wrap, 0), rest - wrap_again)
    pieces = []
    for n, part in enumerate(parts):
        if not part:
            pieces.append("")
            continue
        head = opening if n == 0 else again
        pieces.append("\n".join(head) + "\n\n" + "\n\n".join(part) + "\n\n" + closing)
    return pieces


def _cut_rows(
    head: list[str], rows: list[str], tail: list[str], first: int, rest: int, fit: Callable[[str, int], list[str]]
) -> list[str]:
    """head + a run of rows + tail, repeated until every row is placed. A row that cannot fit even alone
    is passed through `fit(row, width)` first, which returns rows at most `width` long."""
    fixed = sum(size(line) + 1 for line in head + tail)
    width = rest - fixed
    if width < 80:
        raise ValueError("the comment limit leaves no room for a row beside the repeated header")
    pieces: list[str] = []
    current: list[str] = []
    used, budget = fixed, first
    for row in rows:
        for line in [row] if size(row) <= width else fit(row, width):
            length = size(line) + 1
            if used + length - 1 > budget:
                pieces.append("\n".join(head + current + tail) if current else "")
                current, used, budget = [], fixed, rest
            current.append(line)
            used += length
    if current or not pieces:
        pieces.append("\n".join(head + current + tail))
    return pieces


def _chunks(text: str, width: int) -> list[str]:
    """`text` cut into pieces of at most `width` UTF-16 units, never inside a surrogate pair."""
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for char in text:
        step = 2 if ord(char) > 0xFFFF else 1
        if used + step > width:
            pieces.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += step
    return [*pieces, "".join(current)]


def _wrap_code(line: str, width: int) -> list[str]:
    """A long code line as several; continuations keep the diff sign and never start with a fence."""
    sign = line[0] if line[:1] in {"+", "-"} else ""
    lead = f"{sign}↪ "
    first, *more = _chunks(line, width)
    return [first, *(lead + piece for piece in _chunks("".join(more), width - size(lead)) if piece)]


def _shorten_row(row: str, width: int) -> list[str]:
    note = f"| … a row of {size(row)} characters is left out here to fit the comment limit; see the plan file |"
    return [note[:width]]


def _wrap_text(line: str, width: int) -> list[str]:
    return [piece for piece in _chunks(line, width) if piece]
