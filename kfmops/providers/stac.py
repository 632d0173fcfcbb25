"""STAC catalog on disk: reads and writes link arrays and the `deprecated` flag, nothing else.

Every other field, the key order and the indentation of each JSON document are preserved. Paths in
reference values are relative to the catalog root; hrefs written into documents are relative to the
document. A path that would escape the catalog root is refused.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kfmops.desired.identifiers import stac_path_problem
from kfmops.errors import BackendError
from kfmops.io.files import write_atomic
from kfmops.providers.base import Provider, Write
from kfmops.providers.stac_check import broken_links
from kfmops.references import Reference, ReferenceKind
from kfmops.workspace import BackendConfig, Workspace

DEPRECATED = "deprecated"
LINK_TYPE = "application/json"
RECENT_DOCUMENTS = 16
REUSED_SIZE = 64 * 1024  # only large documents (a catalog with many children) are worth keeping


class StacDocument:
    """One parsed STAC JSON file with the formatting needed to write it back the same way."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.folder = posixpath.dirname(path)
        self.data: dict[str, Any] = json.loads(text)
        match = re.search(r"\n([ \t]+)\S", text)
        self.indent: str | int | None = match.group(1) if match else None
        self.trailing_newline = text.endswith("\n")
        self.ascii = text.isascii() and "\\u" in text
        self.changed = False
        self._targets: dict[str, Counter[str]] | None = None

    def serialize(self) -> bytes:
        text = json.dumps(self.data, indent=self.indent, ensure_ascii=self.ascii)
        return (text + ("\n" if self.trailing_newline else "")).encode("utf-8")

    def resolve(self, href: str) -> str | None:
        """Root-relative path of a relative href; None for absolute URLs and paths outside the root."""
        if "://" in href or href.startswith("/"):
            return None
        target = posixpath.normpath(posixpath.join(self.folder, href))
        return None if target.startswith("..") else target

    def href_to(self, target: str) -> str:
        relative = posixpath.relpath(target, self.folder or ".")
        return relative if relative.startswith("..") else f"./{relative}"

    def links_of(self, rel: str, scope: set[str] | None) -> list[str]:
        """Root-relative targets of this document's `rel` links (only those in `scope` when given)."""
        if self._targets is None:
            self._targets = {}
            for link in self.data.get("links", []):
                target = self.resolve(link.get("href", ""))
                if target is not None:
                    self._targets.setdefault(link.get("rel"), Counter())[target] += 1
        found = self._targets.get(rel, Counter())
        return list((found if scope is None else Counter({t: found[t] for t in scope if t in found})).elements())

    def set_links(self, rel: str, scope: set[str] | None, targets: set[str]) -> None:
        """Make the `rel` links within `scope` (all when None) exactly `targets`; other links stay as they are.

        One pass over the links, whatever the number of targets: callers merge the slots of one
        document and rel before calling. New links are placed (see `_placed`) so that undoing a change
        restores the document byte for byte.
        """
        links = self.data.setdefault("links", [])
        kept: list[dict[str, Any]] = []
        present: set[str] = set()
        removed_at: int | None = None
        for link in links:
            target = self.resolve(link.get("href", "")) if link.get("rel") == rel else None
            managed = target is not None and (scope is None or target in scope)
            if managed and (target not in targets or target in present):
                self.changed = True
                removed_at = len(kept) if removed_at is None else removed_at
                continue
            if managed and target is not None:
                present.add(target)
            kept.append(link)
        new = [{"rel": rel, "href": self.href_to(t), "type": LINK_TYPE} for t in targets - present]
        if new:
            kept = _placed(kept, sorted(new, key=lambda link: link["href"]), rel, removed_at)
            self.changed = True
        self.data["links"] = kept
        self._targets = None

    def _flag_holder(self) -> dict[str, Any]:
        if self.data.get("type") == "Feature":
            holder: dict[str, Any] = self.data.setdefault("properties", {})
            return holder
        return self.data

    def deprecated(self) -> bool | None:
        return self._flag_holder().get(DEPRECATED)

    def set_deprecated(self, value: bool | None) -> None:
        holder = self._flag_holder()
        if holder.get(DEPRECATED) == value and (value is not None or DEPRECATED not in holder):
            return
        if value is None:
            holder.pop(DEPRECATED, None)
        else:
            holder[DEPRECATED] = value
        self.changed = True


def _placed(links: list[dict[str, Any]], new: list[dict[str, Any]], rel: str, removed_at: int | None) -> list[Any]:
    """`links` with `new` links of `rel` (sorted by href) merged in, in one pass.

    Each new link goes before the first link of its rel whose href sorts after it, else after the last
    link of its rel; with no link of its rel left, where the removed ones were, else at the end. So a
    sorted run of links stays sorted, and a link replaced by another keeps its place.
    """
    last = max((i for i, link in enumerate(links) if link.get("rel") == rel), default=None)
    if last is None:
        at = len(links) if removed_at is None else removed_at
        return [*links[:at], *new, *links[at:]]
    placed, waiting = [], iter(new)
    pending = next(waiting, None)
    for i, link in enumerate(links):
        if link.get("rel") == rel:
            while pending is not None and pending["href"] < link.get("href", ""):
                placed.append(pending)
                pending = next(waiting, None)
        placed.append(link)
        if i == last and pending is not None:
            placed.extend([pending, *waiting])
    return placed


class StacCatalog:
    """A static STAC catalog rooted at a folder; loads each document once per batch."""

    def __init__(self, root: Path, backend: str, *, durable: bool = True):
        self.root = root
        self.backend = backend
        self.durable = durable
        # Large documents read by earlier batches, keyed by path, valid while the file's (mtime, size,
        # inode) is unchanged: a catalog with one child link per dataset is then parsed once per plan,
        # not once per batch. Only reads use it; writes always load fresh copies.
        self._recent: OrderedDict[str, tuple[tuple[int, int, int], StacDocument]] = OrderedDict()

    def _file(self, path: str) -> Path:
        if problem := stac_path_problem(path):
            raise BackendError(self.backend, problem)
        return self.root / path

    def _load(self, paths: set[str], *, reuse: bool = False) -> dict[str, StacDocument]:
        documents = {}
        for path in paths:
            file = self._file(path)
            try:
                stat = file.stat()
            except FileNotFoundError:
                continue
            version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            recent = self._recent.get(path) if reuse else None
            if recent is not None and recent[0] == version:
                documents[path] = recent[1]
                continue
            try:
                documents[path] = StacDocument(path, file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise BackendError(self.backend, f"{file} is not valid JSON: {exc}") from None
            if reuse and stat.st_size >= REUSED_SIZE:
                self._recent[path] = (version, documents[path])
                self._recent.move_to_end(path)
                while len(self._recent) > RECENT_DOCUMENTS:
                    self._recent.popitem(last=False)
        return documents

    def read(self, references: Sequence[Reference]) -> dict[str, Any]:
        paths = {slot["document"] for r in references for slot in r.locator["slots"]}
        documents = self._load(paths, reuse=True)
        values = {}
        for reference in references:
            value: dict[str, dict[str, Any]] = {}
            for slot in reference.locator["slots"]:
                document = documents.get(slot["document"])
                if document is None:
                    continue
                fields = value.setdefault(slot["document"], {})
                if slot["field"] == DEPRECATED:
                    fields[DEPRECATED] = document.deprecated()
                else:
                    scope = set(slot["scope"]) if slot["scope"] is not None else None
                    fields[slot["field"]] = document.links_of(slot["field"], scope)
            values[reference.address] = reference.normalize(value)
        return values

    def write(self, items: Sequence[Write]) -> None:
        """Set every slot of every item, loading and writing each document once.

        Link slots of one document and rel are merged (their scopes are disjoint: two addresses may
        not own the same link), so a catalog with N children is rewritten in one pass per batch.
        """
        paths = {slot["document"] for reference, _ in items for slot in reference.locator["slots"]}
        documents = self._load(paths)
        merged: dict[tuple[str, str], tuple[set[str] | None, set[str]]] = {}
        for reference, value in items:
            value = value or {}
            for slot in reference.locator["slots"]:
                path, name = slot["document"], slot["field"]
                wanted = value.get(path, {}).get(name)
                document = documents.get(path)
                if document is None:
                    if wanted not in (None, []):
                        raise BackendError(self.backend, f"STAC document {path} does not exist")
                    continue
                if name == DEPRECATED:
                    document.set_deprecated(wanted)
                    continue
                for target in wanted or []:  # before any file is written: a refused batch changes nothing
                    if problem := stac_path_problem(target):
                        raise BackendError(self.backend, problem)
                    if not (self.root / target).is_file():
                        raise BackendError(self.backend, f"link target {target} is not in the catalog")
                scope, targets = merged.get((path, name), (set(), set()))
                scope = None if scope is None or slot["scope"] is None else scope | set(slot["scope"])
                merged[(path, name)] = (scope, targets | set(wanted or []))
        for (path, rel), (scope, targets) in merged.items():
            documents[path].set_links(rel, scope, targets)
        for path, document in sorted(documents.items()):
            if document.changed:
                write_atomic(self._file(path), document.serialize(), durable=self.durable)

    def broken_links(self, references: Sequence[Reference]) -> int:
        """Relative hrefs that do not resolve to a file in the catalog, in the documents of `references`."""
        paths = {slot["document"] for reference in references for slot in reference.locator["slots"]}
        documents = self._load(paths)
        return sum(len(broken_links(path, document.data, self.root)) for path, document in sorted(documents.items()))

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        missing = []
        for reference, value in items:
            wanted = {slot["document"] for slot in reference.locator["slots"]}
            for fields in (value or {}).values():
                wanted.update(p for content in fields.values() if isinstance(content, list) for p in content)
            for path in sorted(wanted):
                if problem := stac_path_problem(path):
                    missing.append((reference.address, problem))
                elif not (self.root / path).is_file():
                    missing.append((reference.address, f"STAC document {path} is not in the catalog"))
        return missing


class StacProvider(Provider):
    """The `stac` backend type: a static catalog folder given by `root` in kfmops.yaml."""

    kinds = frozenset({ReferenceKind.STAC})

    def __init__(self, config: BackendConfig, workspace: Workspace, *, read_only: bool = False):
        super().__init__(config.name)
        root = workspace.root / config.settings.get("root", "catalog")
        self.catalog = StacCatalog(root, config.name, durable=workspace.section("apply").get("fsync", True))

    def read(self, references: Sequence[Reference]) -> dict[str, Any]:
        self.round_trips += 1
        return self.catalog.read(references)

    def write(self, items: Sequence[Write]) -> None:
        self.round_trips += 1
        self.catalog.write(items)

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        return self.catalog.missing_targets(items)

    def broken_links(self, references: Sequence[Reference]) -> int:
        return self.catalog.broken_links(references)
