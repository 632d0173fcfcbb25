"""Read desired-state files into validated Documents, collecting every problem with file and line."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kfmops.desired.cache import DesiredCache
from kfmops.desired.document import Document
from kfmops.errors import Diagnostic, InputError
from kfmops.schemas import check
from kfmops.yamlio import LineDict, line_of, load_documents

SCHEMA_OF_KIND = {
    "Dataset": "dataset",
    "StacLink": "stac-link",
    "GraphRelationship": "graph-relationship",
    "SearchAlias": "search-alias",
    "CacheKey": "cache-key",
    "Import": "import",
    "Consent": "consent",
}


def load_documents_from(folder: Path, root: Path, cache: DesiredCache | None = None) -> list[Document]:
    """Every document in the YAML files under `folder`, in path order; raises InputError on problems.

    With a `cache`, a file whose text was parsed and found valid before is not parsed again, and the
    cache's entries of files no longer there (or changed) are removed."""
    sources, unreadable = read_folder(folder, root)
    return documents_of(sources, unreadable, cache, prune=True)


def read_folder(folder: Path, root: Path) -> tuple[list[tuple[str, str]], list[Diagnostic]]:
    """(name, text) of every YAML file under `folder` in path order, named relative to `root`, and a
    problem for each file that cannot be read (a symbolic link out of the folder, text that is not UTF-8)."""
    if not folder.is_dir():
        raise InputError(
            [Diagnostic(f"desired-state folder {folder} does not exist", "check 'desired:' in kfmops.yaml")]
        )
    files = sorted(p for p in folder.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())
    sources = []
    unreadable = []
    inside = folder.resolve()
    for path in files:
        if not path.resolve().is_relative_to(inside):
            # git records the link, not what it points at: editing the target would change what apply
            # does while the plan records a clean commit.
            unreadable.append(
                Diagnostic(
                    f"{path.relative_to(folder)} is a symbolic link to {path.resolve()}, outside the desired folder",
                    "copy the file into the desired folder (and commit it) instead of linking to it",
                    file=str(path),
                )
            )
            continue
        shown = os.path.relpath(path.resolve(), root.resolve())  # normalized: no `a/../b`
        try:
            sources.append((shown, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError as exc:
            line = exc.object[: exc.start].count(b"\n") + 1
            unreadable.append(Diagnostic("the file is not UTF-8 text", "save it as UTF-8", file=shown, line=line))
    return sources, unreadable


def documents_of(
    sources: list[tuple[str, str]], unreadable: list[Diagnostic], cache: DesiredCache | None, *, prune: bool
) -> list[Document]:
    """The documents of `sources`; InputError with every problem, those of files that could not be read first.
    `prune`: the sources are the whole folder, so the cache's entries of other texts go."""
    try:
        documents = parse_documents(sources, cache)
    except InputError as error:
        raise InputError([*unreadable, *error.diagnostics]) from None
    if unreadable:
        raise InputError(unreadable)
    if cache is not None and prune:
        cache.prune()
    return documents


def parse_documents(sources: Iterable[tuple[str, str]], cache: DesiredCache | None = None) -> list[Document]:
    """Documents from (file name, text) pairs; every problem in every file is collected first."""
    documents: list[Document] = []
    problems: list[Diagnostic] = []
    for file, text in sources:
        cached = cache.get(text, file) if cache is not None else None
        if cached is not None:
            documents.extend(cached)
            continue
        try:
            nodes = list(load_documents(text, file))
        except InputError as error:
            problems.extend(error.diagnostics)
            continue
        parsed, found = [], []
        for node in nodes:
            if node is None:
                continue
            document, trouble = _document(node, file)
            found.extend(trouble)
            if document:
                parsed.append(document)
        documents.extend(parsed)
        problems.extend(found)
        if cache is not None and not found:
            cache.put(text, parsed)
    if problems:
        raise InputError(problems)
    return documents


def _document(node: Any, file: str) -> tuple[Document | None, list[Diagnostic]]:
    if not isinstance(node, LineDict):
        line = getattr(node, "line", None)
        return None, [
            Diagnostic("a document must be a mapping with apiVersion, kind, metadata, spec", file=file, line=line)
        ]
    kind = node.get("kind")
    if not isinstance(kind, str) or kind not in SCHEMA_OF_KIND:
        return None, [
            Diagnostic(
                f"unknown kind {kind!r}",
                f"use one of {', '.join(SCHEMA_OF_KIND)}",
                file=file,
                line=line_of(node, ["kind"]) or node.line,
            )
        ]
    problems = check(node, SCHEMA_OF_KIND[kind], file)
    if problems:
        return None, problems
    name_line = line_of(node, ["metadata", "name"])
    return Document(kind, node["metadata"]["name"], node["spec"], file, node.line, name_line), []
