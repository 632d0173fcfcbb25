"""Edit the text of a JSON document in place: spans of members and array elements, and splices.

A document written by another tool survives an edit byte for byte outside the edited spans: escapes
(`\\u0026`, `\\/`), key order, number spellings and whitespace stay as they were. New text is rendered
in the document's own style (indentation unit, separators, ASCII escapes, escaped slashes), so that
adding an element and removing it again gives back the original bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Edit = tuple[int, int, str]  # replace text[start:end] with the string

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
_LINE_INDENT = re.compile(r"[ \t]*")
_INDENT = re.compile(r"\n([ \t]+)\S")
_BARE_SLASH = re.compile(r"(?<!\\)/")


def _skip(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at


def line_indent(text: str, at: int) -> str:
    """The indentation of the line holding text[at]."""
    match = _LINE_INDENT.match(text, text.rfind("\n", 0, at) + 1)
    return match.group() if match else ""


@dataclass(frozen=True)
class Member:
    key: str
    start: int  # the key's opening quote
    key_end: int  # just past the key's closing quote
    value_start: int
    end: int  # just past the value


@dataclass(frozen=True)
class JsonObject:
    """An object's value and where its parts are in the text."""

    open: int  # index of "{"
    close: int  # index of "}"
    members: list[Member]
    value: dict[str, Any]
    elements: dict[str, list[tuple[int, int]]]  # element spans of the arrays asked for, by member key

    def member(self, key: str) -> Member | None:
        """The member JSON readers use (the last one of that key)."""
        return next((m for m in reversed(self.members) if m.key == key), None)


def parse_document(text: str, arrays: frozenset[str] = frozenset()) -> JsonObject:
    """The top-level object of `text`; raises json.JSONDecodeError as json.loads would."""
    start = _skip(text, 0)
    if text[start : start + 1] != "{":
        raise json.JSONDecodeError("Expecting a JSON object", text, start)
    document = parse_object(text, start, arrays)
    end = _skip(text, document.close + 1)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return document


def parse_object(text: str, at: int, arrays: frozenset[str] = frozenset()) -> JsonObject:
    """The object whose "{" is at `at`, with the element spans of its array members named in `arrays`."""
    members: list[Member] = []
    value: dict[str, Any] = {}
    elements: dict[str, list[tuple[int, int]]] = {}
    i = _skip(text, at + 1)
    if text[i : i + 1] == "}":
        return JsonObject(at, i, members, value, elements)
    while True:
        if text[i : i + 1] != '"':
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
        key, key_end = _DECODER.raw_decode(text, i)
        colon = _skip(text, key_end)
        if text[colon : colon + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", text, colon)
        value_start = _skip(text, colon + 1)
        if key in arrays and text[value_start : value_start + 1] == "[":
            value[key], elements[key], end = parse_array(text, value_start)
        else:
            value[key], end = _DECODER.raw_decode(text, value_start)
        members.append(Member(key, i, key_end, value_start, end))
        i = _skip(text, end)
        if text[i : i + 1] == "}":
            return JsonObject(at, i, members, value, elements)
        if text[i : i + 1] != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
        i = _skip(text, i + 1)


def parse_array(text: str, at: int) -> tuple[list[Any], list[tuple[int, int]], int]:
    """The values and spans of the elements of the array whose "[" is at `at`, and the index past its "]"."""
    values: list[Any] = []
    spans: list[tuple[int, int]] = []
    i = _skip(text, at + 1)
    if text[i : i + 1] == "]":
        return values, spans, i + 1
    while True:
        element, end = _DECODER.raw_decode(text, i)
        values.append(element)
        spans.append((i, end))
        i = _skip(text, end)
        if text[i : i + 1] == "]":
            return values, spans, i + 1
        if text[i : i + 1] != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
        i = _skip(text, i + 1)


@dataclass(frozen=True)
class Style:
    """How a document writes JSON, read from its text."""

    unit: str | None  # one level of indentation; None for a document on one line
    colon: str  # between a key and its value
    comma: str  # between elements written on one line
    ascii: bool  # non-ASCII characters escaped
    slashes: bool  # "/" written as "\/"
    newline: str  # "\n", or "\r\n" in a document written with CRLF line ends

    @classmethod
    def of(cls, text: str, document: JsonObject) -> Style:
        indent = _INDENT.search(text)
        members = document.members
        colon = text[members[0].key_end : members[0].value_start] if members else ": "
        comma = ", "
        if indent is None and len(members) >= 2:
            comma = text[members[0].end : members[1].start]
        slashes = "\\/" in text and _BARE_SLASH.search(text) is None
        newline = "\r\n" if "\r\n" in text else "\n"
        return cls(indent.group(1) if indent else None, colon, comma, text.isascii(), slashes, newline)

    def render(self, value: Any, indent: str | None) -> str:
        """`value` as this document writes it, starting on a line indented by `indent` (None: on one line)."""
        if indent is None or self.unit is None:
            text = json.dumps(value, separators=(self.comma, self.colon), ensure_ascii=self.ascii)
        else:
            text = json.dumps(value, indent=self.unit, separators=(",", self.colon), ensure_ascii=self.ascii)
            text = text.replace("\n", self.newline + indent)
        return text.replace("/", "\\/") if self.slashes else text


@dataclass
class Element:
    """One array element: kept ones carry their original text and the separator that preceded it."""

    value: Any
    text: str | None = None  # None: new, rendered in the document's style when written
    before: str | None = None  # the text between the previous element and this one, when there was one


def elements_of(text: str, values: Sequence[Any], spans: Sequence[tuple[int, int]]) -> list[Element]:
    return [
        Element(value, text[start:end], text[spans[i - 1][1] : start] if i else None)
        for i, (value, (start, end)) in enumerate(zip(values, spans, strict=True))
    ]


@dataclass(frozen=True)
class Layout:
    """Where an array's elements go: the text after "[", between elements and before "]", new elements' indent."""

    opening: str
    separator: str
    closing: str
    indent: str | None  # the indentation new elements start at; None: written on one line

    @classmethod
    def new(cls, base: str | None, style: Style, *, inline: bool) -> Layout:
        """An empty array on a line indented by `base` (None: a document on one line)."""
        if base is None or style.unit is None:
            return cls("", style.comma, "", None)
        opening = style.newline + base + style.unit
        return cls(opening, "," + opening, style.newline + base, None if inline else base + style.unit)

    @classmethod
    def of(cls, text: str, open_at: int, close_at: int, spans: Sequence[tuple[int, int]], style: Style) -> Layout:
        """The layout of the array text[open_at:close_at + 1] (elements at `spans`)."""
        inline = any("\n" not in text[start:end] for start, end in spans[:1])
        if not spans:
            return cls.new(line_indent(text, open_at) if style.unit is not None else None, style, inline=False)
        opening, closing = text[open_at + 1 : spans[0][0]], text[spans[-1][1] : close_at]
        if len(spans) >= 2:
            separator = text[spans[0][1] : spans[1][0]]
        else:
            separator = "," + opening if "\n" in opening else style.comma
        multiline = "\n" in opening and style.unit is not None and not inline
        return cls(opening, separator, closing, opening.rsplit("\n", 1)[1] if multiline else None)

    def write(self, elements: Sequence[Element], style: Style) -> str:
        if not elements:
            return "[]"
        parts = ["[", self.opening]
        for i, element in enumerate(elements):
            if i:
                parts.append(self.separator if element.before is None else element.before)
            parts.append(style.render(element.value, self.indent) if element.text is None else element.text)
        parts += [self.closing, "]"]
        return "".join(parts)


def append_member(text: str, obj: JsonObject, key: str, render: Callable[[str | None], str], style: Style) -> Edit:
    """An edit adding `key` as the last member of `obj`; `render(indent)` writes the value for a line at `indent`."""
    name = style.render(key, None)
    if not obj.members:
        if style.unit is None:
            return (obj.open + 1, obj.close, name + style.colon + render(None))
        base = line_indent(text, obj.open)
        inner = base + style.unit
        value = render(inner)
        return (obj.open + 1, obj.close, style.newline + inner + name + style.colon + value + style.newline + base)
    last = obj.members[-1]
    if len(obj.members) >= 2:
        between = text[obj.members[-2].end : last.start]
        gap = between[between.index(",") + 1 :]
    else:
        gap = text[obj.open + 1 : last.start]
        if "\n" not in gap:  # one member on one line: no separator to copy; use the document's
            gap = style.comma[style.comma.index(",") + 1 :]
    indent = gap.rsplit("\n", 1)[1] if "\n" in gap and style.unit is not None else None
    return (last.end, last.end, "," + gap + name + text[last.key_end : last.value_start] + render(indent))


def remove_member(obj: JsonObject, member: Member) -> Edit:
    """An edit removing `member` from `obj`, with the separator that goes with it."""
    members = obj.members
    at = members.index(member)
    if at > 0:
        return (members[at - 1].end, member.end, "")
    if len(members) > 1:
        return (member.start, members[1].start, "")
    return (obj.open + 1, obj.close, "")


def splice(text: str, edits: Sequence[Edit]) -> str:
    """`text` with non-overlapping `edits` applied; insertions at one place keep their order."""
    parts, at = [], 0
    for start, end, new in sorted(edits, key=lambda edit: (edit[0], edit[1])):
        if start < at:
            raise ValueError("overlapping edits")
        parts += [text[at:start], new]
        at = end
    parts.append(text[at:])
    return "".join(parts)
