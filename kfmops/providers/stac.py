"""STAC catalog on disk: reads and writes link arrays and the `deprecated` flag, nothing else.

Every other field, the key order and the indentation of each JSON document are preserved. Paths in
reference values are relative to the catalog root; hrefs written into documents are relative to the
document. A path that would escape the catalog root, by name or through a symlink, is refused.
Documents are edited in their own text (see stac_text): rollback restores them byte for byte.
No idempotency key is recorded: a document's bytes are its value, so comparing the live links with the
before and after values tells exactly what a write did (or that it stopped half way, across documents),
and a key written into the document would be a change kfmops makes to the data it must not touch.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat as stat_mode
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kfmops.desired.identifiers import stac_path_problem
from kfmops.errors import BackendError
from kfmops.io.files import remove_stale_temporaries, write_atomic
from kfmops.providers.base import Provider, Write, WriteKey
from kfmops.providers.stac_check import broken_links, targets, unreached
from kfmops.providers.stac_document import DEPRECATED, Reading, StacDocument
from kfmops.providers.stac_facts import version_facts
from kfmops.providers.stac_index import StacIndex, stat_of
from kfmops.references import Reference, ReferenceKind
from kfmops.workspace import BackendConfig, Workspace


class StacCatalog:
    """A static STAC catalog rooted at a folder; loads each document once per batch."""

    def __init__(self, root: Path, backend: str, *, durable: bool = True, index: StacIndex | None = None):
        self.root = root
        self.backend = backend
        self.durable = durable
        # What reads took from documents whose stat has not changed since (see stac_index): a catalog with
        # one child link per dataset is parsed once per plan, not once per batch. Writes always load.
        self.index = index or StacIndex(root.resolve())
        self._facts: dict[str, dict[str, Any]] = {}  # by digest of a version's documents (bytes)

    def _file(self, path: str, root: Path | None = None, plain: set[str] | None = None) -> Path:
        """The real file of root-relative `path`; refused when it leaves the root, by name or through a symlink."""
        real, problem = self._locate(path, root or self.root.resolve(), plain)
        if problem:
            raise BackendError(self.backend, problem)
        return real

    def _locate(self, path: str, root: Path, plain: set[str] | None = None) -> tuple[Path, str | None]:
        """The real file of `path` under the real `root` (`self.root` resolved), and why it is refused (None
        when it is not). `plain`: the root-relative names already seen not to be symlinks in this pass; a
        normalized path none of whose names is a symlink is `root / path` without resolving it again."""
        if problem := stac_path_problem(path):
            return self.root / path, problem
        if plain is not None and posixpath.normpath(path) == path and _no_symlink(root, path, plain):
            return root / path, None
        try:
            real = (self.root / path).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            return self.root / path, f"STAC path {path!r} cannot be resolved: {exc}"
        if real.is_relative_to(root):
            return real, None
        parts = Path(path).parts
        prefixes = [self.root.joinpath(*parts[: i + 1]) for i in range(len(parts))]
        outside = [p for p in prefixes if p.is_symlink() and not p.resolve().is_relative_to(root)]
        name = (outside or [self.root / path])[0].relative_to(self.root).as_posix()
        return real, f"STAC path {path!r} leads outside the catalog root through the symlink {name!r}; refused"

    def _load(self, paths: set[str]) -> dict[str, StacDocument]:
        documents = {}
        root = self.root.resolve()
        plain: set[str] = set()
        for path in paths:
            try:
                documents[path] = self._parse(path, self._file(path, root, plain))
            except FileNotFoundError:
                continue
        return documents

    def _readings(self, paths: set[str]) -> dict[str, Reading]:
        """What reads take from the documents at `paths` that exist: from the index when their stat has not
        changed since it was entered, else parsed (and entered)."""
        readings = {}
        root = self.root.resolve()
        plain: set[str] = set()
        read_at = time.time_ns()  # before every stat of the batch: a document changed since is never entered
        for path in paths:
            file = self._file(path, root, plain)
            try:
                stat = stat_of(file.stat())
            except FileNotFoundError:
                self.index.forget(path)
                continue
            reading = self.index.get(path, stat)
            if reading is None:
                try:
                    reading = self._parse(path, file).reading()
                except FileNotFoundError:
                    continue
                self.index.put(path, stat, reading, read_at)
            readings[path] = reading
        return readings

    def _parse(self, path: str, file: Path) -> StacDocument:
        try:
            return StacDocument(path, file.read_bytes().decode("utf-8"))  # CRLF kept
        except ValueError as exc:  # not JSON, not UTF-8, not an object, links not an array
            raise BackendError(self.backend, f"{file} is not a valid STAC JSON document: {exc}") from None

    def read(self, references: Sequence[Reference]) -> dict[str, Any]:
        paths = {slot["document"] for r in references for slot in r.locator["slots"]}
        readings = self._readings(paths)
        values = {}
        for reference in references:
            value: dict[str, dict[str, Any]] = {}
            for slot in reference.locator["slots"]:
                reading = readings.get(slot["document"])
                if reading is None:
                    continue
                fields = value.setdefault(slot["document"], {})
                if slot["field"] == DEPRECATED:
                    fields[DEPRECATED] = reading.deprecated
                else:
                    scope = set(slot["scope"]) if slot["scope"] is not None else None
                    fields[slot["field"]] = reading.links(slot["field"], scope)
            values[reference.address] = reference.normalize(value)
        return values

    def write(self, items: Sequence[Write]) -> None:
        """Set every slot of every item, loading and writing each document once.

        Link slots of one document and rel are merged (their scopes are disjoint: two addresses may
        not own the same link), so a catalog with N children is rewritten in one pass per batch.
        """
        paths = {slot["document"] for reference, _ in items for slot in reference.locator["slots"]}
        root = self.root.resolve()
        plain: set[str] = set()
        files = {path: self._file(path, root, plain) for path in sorted(paths)}
        if len(set(files.values())) < len(files):  # two names of one file (a symlink inside the root)
            same = sorted(p for p in files if list(files.values()).count(files[p]) > 1)
            raise BackendError(self.backend, f"STAC paths {', '.join(same)} are one file; refused")
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
                    try:
                        document.set_deprecated(wanted)
                    except ValueError as exc:
                        raise BackendError(self.backend, str(exc)) from None
                    continue
                for target in wanted or []:  # before any file is written: a refused batch changes nothing
                    if not self._file(target, root, plain).is_file():
                        raise BackendError(self.backend, f"link target {target} is not in the catalog")
                scope, targets = merged.get((path, name), (set(), set()))
                scope = None if scope is None or slot["scope"] is None else scope | set(slot["scope"])
                merged[(path, name)] = (scope, targets | set(wanted or []))
        for (path, rel), (scope, targets) in merged.items():
            documents[path].set_links(rel, scope, targets)
        # a write killed before its rename left a temporary file next to the document: this write of the
        # same batch (a retry, a compensation or a recovery) removes it, whether or not the document changes
        remove_stale_temporaries(files.values())
        for path, document in sorted(documents.items()):
            if document.changed:  # the catalog's own mode and owner stay: a web server may be reading it
                write_atomic(files[path], document.serialize(), durable=self.durable, keep_metadata=True)

    def find(self, pattern: str) -> list[str]:
        """Root-relative paths of the documents matching a glob `pattern` (for discovery), inside the root only."""
        if stac_path_problem(pattern.replace("*", "x")):
            raise BackendError(
                self.backend, f"STAC pattern {pattern!r} must be a relative path inside the catalog root"
            )
        root = self.root.resolve()
        return sorted(
            path.relative_to(self.root).as_posix()
            for path in self.root.glob(pattern)
            if path.is_file() and path.resolve().is_relative_to(root)
        )

    def names(self, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{path: {"id", "kfm:dataset", "version"}} of the documents that exist (a Feature's from its properties)."""
        found = {}
        for path, document in self._load(set(paths)).items():
            data = document.data
            fields = data.get("properties", data) if data.get("type") == "Feature" else data
            found[path] = {
                "id": data.get("id"),
                "kfm:dataset": fields.get("kfm:dataset"),
                "version": fields.get("version"),
            }
        return found

    def broken_links(self, references: Sequence[Reference]) -> int:
        """Relative hrefs that do not resolve to a file in the catalog, in the documents of `references`, plus
        orphans among them: a dataset's version documents that no link from its catalog document reaches."""
        paths = {slot["document"] for reference in references for slot in reference.locator["slots"]}
        documents = self._load(paths)
        broken = sum(len(broken_links(path, document.data, self.root)) for path, document in sorted(documents.items()))
        # each catalog document is walked once, over the documents of every reference it lists: walking it
        # per reference read its 10,000 child links 10,000 times after an initial apply
        own: dict[str, set[str]] = {}
        for reference in references:
            slots = reference.locator["slots"]
            for start in {slot["document"] for slot in slots if slot["field"] == "child"}:
                own.setdefault(start, set()).update(slot["document"] for slot in slots if slot["document"] in documents)
        links = {path: targets(path, document.data) for path, document in documents.items()}
        orphaned = {path for start, paths in own.items() for path in unreached(start, {p: links[p] for p in paths})}
        return broken + len(orphaned)

    def version_facts(self, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{path: facts} of each version document and the items it links (stac_facts), with `digest` (sha256
        of their bytes, under which facts are cached) and `status` "gathered"; or status "unavailable" and
        the `problem` when the documents cannot be read: a missing fact is never an empty one."""
        found = {}
        for path in paths:
            try:
                found[path] = self._facts_of(path)
            except (BackendError, OSError, ValueError) as exc:
                found[path] = {"status": "unavailable", "source": path, "problem": str(exc)}
        return found

    def _facts_of(self, path: str) -> dict[str, Any]:
        root = self.root.resolve()
        file = self._file(path, root)
        raw = file.read_bytes()
        version = _json_object(raw, path)
        hashed = hashlib.sha256(raw)
        items = []
        for link in version.get("links") or []:
            if not isinstance(link, dict) or link.get("rel") != "item":
                continue
            href = str(link.get("href", ""))
            if "://" in href or href.startswith("/"):
                raise ValueError(f"{path}: item link {href!r} is not a relative link inside the catalog")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), href))
            item_raw = self._file(target, root).read_bytes()
            hashed.update(b"\0" + item_raw)
            items.append(_json_object(item_raw, target))
        key = "sha256:" + hashed.hexdigest()
        if key not in self._facts:
            self._facts[key] = version_facts(version, items)
        return {"status": "gathered", "source": path, "digest": key, **self._facts[key]}

    def data_file(self, path: str) -> Path:
        """The real file of root-relative `path` (a version document, or an asset beside it, of any type);
        BackendError when it leaves the catalog root, by name or through a symlink."""
        root = self.root.resolve()
        try:
            real = (self.root / path).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise BackendError(self.backend, f"catalog path {path!r} cannot be resolved: {exc}") from None
        if posixpath.isabs(path) or not real.is_relative_to(root):
            raise BackendError(self.backend, f"catalog path {path!r} leads outside the catalog root; refused")
        return real

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        missing = []
        root = self.root.resolve()
        plain: set[str] = set()
        for reference, value in items:
            wanted = {slot["document"] for slot in reference.locator["slots"]}
            for fields in (value or {}).values():
                wanted.update(p for content in fields.values() if isinstance(content, list) for p in content)
            for path in sorted(wanted):
                real, problem = self._locate(path, root, plain)
                if problem or not real.is_file():
                    missing.append((reference.address, problem or f"STAC document {path} is not in the catalog"))
        return missing


def _json_object(raw: bytes, path: str) -> dict[str, Any]:
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def _no_symlink(root: Path, path: str, plain: set[str]) -> bool:
    """True when no name along root-relative `path` is a symlink (names that do not exist are not); adds
    the names checked to `plain`. One lstat per name not seen before in this pass, instead of a resolve."""
    prefix, base = "", str(root)
    for name in path.split("/"):
        prefix = f"{prefix}/{name}" if prefix else name
        if prefix in plain:
            continue
        try:
            mode = os.lstat(f"{base}/{prefix}").st_mode
        except (FileNotFoundError, NotADirectoryError):
            return True  # nothing below a missing name exists either: resolving would only append names
        except OSError:
            return False  # unreadable: let the full resolve say what is wrong
        if stat_mode.S_ISLNK(mode):
            return False
        plain.add(prefix)
    return True


class StacProvider(Provider):
    """The `stac` backend type: a static catalog folder given by `root` in kfmops.yaml."""

    kinds = frozenset({ReferenceKind.STAC})

    def __init__(self, config: BackendConfig, workspace: Workspace, *, read_only: bool = False):
        super().__init__(config.name)
        root = workspace.root / config.settings.get("root", "catalog")
        durable = workspace.section("apply").get("fsync", True)
        index = StacIndex.open_saved(workspace, config.name, root.resolve()) if read_only else None
        self.catalog = StacCatalog(root, config.name, durable=durable, index=index)

    def read(self, references: Sequence[Reference]) -> dict[str, Any]:
        self.round_trips += 1
        return self.catalog.read(references)

    def write(self, items: Sequence[Write], *, key: WriteKey | None = None) -> None:
        self.round_trips += 1
        self.catalog.write(items)

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        return self.catalog.missing_targets(items)

    def broken_links(self, references: Sequence[Reference]) -> int:
        return self.catalog.broken_links(references)

    def version_facts(self, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.catalog.version_facts(paths)

    def data_file(self, path: str) -> Path:
        return self.catalog.data_file(path)

    def close(self) -> None:
        self.catalog.index.save()
