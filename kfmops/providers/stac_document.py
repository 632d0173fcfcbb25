"""One STAC JSON document, edited in its own text: its link array and `deprecated` flag, nothing else."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from kfmops.providers.stac_text import (
    Edit,
    Element,
    JsonObject,
    Layout,
    Style,
    append_member,
    elements_of,
    parse_document,
    parse_object,
    remove_member,
    splice,
)

DEPRECATED = "deprecated"
LINK_TYPE = "application/json"


@dataclass(frozen=True)
class Reading:
    """What a read takes from a document: its `deprecated` value and the root-relative targets of its
    links by rel (sorted, once each; links with a rel that is not a string or an href that leaves the
    root are not references kfmops reads)."""

    deprecated: Any
    targets: dict[str, list[str]]
    _sets: dict[str, set[str]] = field(default_factory=dict, compare=False, repr=False)

    def links(self, rel: str, scope: set[str] | None) -> list[str]:
        """The targets of the `rel` links (only those in `scope` when given), sorted: in the time of the
        scope, not of the links (a catalog's one child link per dataset is read once per dataset)."""
        if scope is None:
            return list(self.targets.get(rel, []))
        if rel not in self._sets:
            self._sets[rel] = set(self.targets.get(rel, []))
        return sorted(scope & self._sets[rel])


class StacDocument:
    """One STAC JSON file, edited in its own text: only the link array and `deprecated` are ever rewritten.

    Links are read as a set of targets per rel (a link held twice reads once); a link that stays keeps
    its text, every copy included, and new ones are written in the document's style.
    """

    def __init__(self, path: str, text: str):
        self.path = path
        self.folder = posixpath.dirname(path)
        self.text = text
        data = json.loads(text)  # the fast path for reads; the text is walked only when edited
        if not isinstance(data, dict):
            raise ValueError(f"it is not a JSON object ({type(data).__name__})")
        if not isinstance(data.get("links", []), list):
            raise ValueError(f"its links member is not an array ({type(data['links']).__name__})")
        self.data: dict[str, Any] = data
        self.changed = False
        self._links_changed = False
        self._deprecated_changed = False
        self._reading: Reading | None = None

    @cached_property
    def top(self) -> JsonObject:
        """Where the document's members and link elements are in its text."""
        return parse_document(self.text, frozenset({"links"}))

    @cached_property
    def links(self) -> list[Element]:
        """The link elements with their text, as they are after the edits made so far."""
        return elements_of(self.text, self.top.value.get("links", []), self.top.elements.get("links", []))

    def serialize(self) -> bytes:
        style = Style.of(self.text, self.top)
        edits = []
        if self._links_changed:
            edits.append(self._links_edit(style))
        if self._deprecated_changed:
            edits.append(self._deprecated_edit(style))
        return splice(self.text, edits).encode("utf-8")

    def resolve(self, href: Any) -> str | None:
        """Root-relative path of a relative href; None for absolute URLs and paths outside the root."""
        if not isinstance(href, str) or "://" in href or href.startswith("/"):
            return None
        target = posixpath.normpath(posixpath.join(self.folder, href))
        return None if target.startswith("..") else target

    def href_to(self, target: str) -> str:
        relative = posixpath.relpath(target, self.folder or ".")
        return relative if relative.startswith("..") else f"./{relative}"

    def reading(self) -> Reading:
        """What a read takes from this document, as it is after the edits made so far."""
        if self._reading is None:
            targets: dict[str, set[str]] = {}
            for link in self.data.get("links", []):
                rel, target = _get(link, "rel"), self.resolve(_get(link, "href"))
                if isinstance(rel, str) and target is not None:
                    targets.setdefault(rel, set()).add(target)
            self._reading = Reading(self.deprecated(), {rel: sorted(found) for rel, found in targets.items()})
        return self._reading

    def links_of(self, rel: str, scope: set[str] | None) -> list[str]:
        """Root-relative targets of this document's `rel` links (only those in `scope` when given), once each."""
        return self.reading().links(rel, scope)

    def set_links(self, rel: str, scope: set[str] | None, targets: set[str]) -> None:
        """Make the `rel` links within `scope` (all when None) exactly `targets`; other links stay as they are.

        Every copy of a link whose target stays is kept, every copy of one whose target goes is removed.
        One pass over the links, whatever the number of targets: callers merge the slots of one
        document and rel before calling. New links are placed (see `_placed`) so that undoing a change
        restores the document byte for byte.
        """
        order = self._key_order(rel)
        kept: list[Element] = []
        present: set[str] = set()
        removed_at: int | None = None
        for element in self.links:
            target = self.resolve(_field(element, "href")) if _field(element, "rel") == rel else None
            managed = target is not None and (scope is None or target in scope)
            if managed and target not in targets:
                removed_at = len(kept) if removed_at is None else removed_at
                continue
            if managed and target is not None:
                present.add(target)
            kept.append(element)
        fields = [{"rel": rel, "href": self.href_to(t), "type": LINK_TYPE} for t in targets - present]
        new = [Element({key: link[key] for key in order}) for link in sorted(fields, key=lambda link: link["href"])]
        if new:
            kept = _placed(kept, new, rel, removed_at)
        if new or removed_at is not None:
            self.links = kept
            self.data["links"] = [element.value for element in kept]
            self._reading = None
            self._links_changed = self.changed = True

    def _key_order(self, rel: str) -> tuple[str, ...]:
        """The key order of this document's plain links (rel, href, type and nothing else), its `rel` ones first."""
        plain = [e.value for e in self.links if isinstance(e.value, dict) and set(e.value) == {"rel", "href", "type"}]
        same = [link for link in plain if link["rel"] == rel]
        return tuple((same or plain or [{"rel": 0, "href": 0, "type": 0}])[0])

    def _links_edit(self, style: Style) -> Edit:
        member = self.top.member("links")
        if member is None:
            array = lambda indent: Layout.new(indent, style, inline=False).write(self.links, style)  # noqa: E731
            return append_member(self.text, self.top, "links", array, style)
        spans = self.top.elements.get("links", [])
        layout = Layout.of(self.text, member.value_start, member.end - 1, spans, style)
        return (member.value_start, member.end, layout.write(self.links, style))

    def _fields(self) -> dict[str, Any] | None:
        """The object holding `deprecated`: an Item's properties, else the document."""
        if self.data.get("type") != "Feature":
            return self.data
        properties = self.data.get("properties")
        return properties if isinstance(properties, dict) else None

    def deprecated(self) -> Any:
        fields = self._fields()
        return None if fields is None else fields.get(DEPRECATED)

    def set_deprecated(self, value: bool | None) -> None:
        fields = self._fields()
        if fields is None:
            if value is None:
                return
            raise ValueError(f"STAC Item {self.path} has no properties object to hold {DEPRECATED!r}")
        if fields.get(DEPRECATED) == value and (value is not None or DEPRECATED not in fields):
            return
        if value is None:
            fields.pop(DEPRECATED, None)
        else:
            fields[DEPRECATED] = value
        self._reading = None
        self._deprecated_changed = self.changed = True

    def _deprecated_edit(self, style: Style) -> Edit:
        fields = self._fields()
        assert fields is not None
        obj = self.top
        if fields is not self.data:
            properties = self.top.member("properties")
            assert properties is not None
            obj = parse_object(self.text, properties.value_start)
        member = obj.member(DEPRECATED)
        if DEPRECATED not in fields:
            assert member is not None
            return remove_member(obj, member)
        value = style.render(fields[DEPRECATED], None)
        if member is not None:
            return (member.value_start, member.end, value)
        return append_member(self.text, obj, DEPRECATED, lambda indent: value, style)


def _get(link: Any, name: str) -> Any:
    return link.get(name) if isinstance(link, dict) else None


def _field(element: Element, name: str) -> Any:
    return _get(element.value, name)


def _placed(links: list[Element], new: list[Element], rel: str, removed_at: int | None) -> list[Element]:
    """`links` with `new` links of `rel` (sorted by href) merged in, in one pass.

    Each new link goes before the first link of its rel whose href sorts after it, else after the last
    link of its rel; with no link of its rel left, where the removed ones were, else at the end. So a
    sorted run of links stays sorted, and a link replaced by another keeps its place.
    """
    last = max((i for i, link in enumerate(links) if _field(link, "rel") == rel), default=None)
    if last is None:
        at = len(links) if removed_at is None else removed_at
        return [*links[:at], *new, *links[at:]]
    placed: list[Element] = []
    waiting = iter(new)
    pending = next(waiting, None)
    for i, link in enumerate(links):
        if _field(link, "rel") == rel:
            href = _field(link, "href")
            while pending is not None and pending.value["href"] < (href if isinstance(href, str) else ""):
                placed.append(pending)
                pending = next(waiting, None)
        placed.append(link)
        if i == last and pending is not None:
            placed.extend([pending, *waiting])
    return placed
