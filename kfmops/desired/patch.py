"""Hotfix documents: one desired document changed in memory, and the git patch that writes the change
into its file. `engine.hotfix` plans and applies it; nothing here touches a backend or writes a file."""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, replace
from typing import Any

import yaml

from kfmops.addresses import Address
from kfmops.desired.document import Document
from kfmops.desired.expand import DesiredState, expand
from kfmops.desired.load import SCHEMA_OF_KIND, load_documents_from
from kfmops.errors import InputError, KfmopsError
from kfmops.schemas import check
from kfmops.workspace import Workspace
from kfmops.yamlio import LineDict, LineList


@dataclass(frozen=True)
class Hotfix:
    document: Document
    path: list[str]
    value: Any
    patch: str


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """`version=v3` or `indices=["a","b"]`: a dotted spec path and a YAML value."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise KfmopsError(f"--set {text!r}: expected KEY=VALUE, e.g. --set version=v2021")
    try:
        value = yaml.load(raw, Loader=yaml.CSafeLoader) if raw else ""
    except yaml.YAMLError as exc:
        raise KfmopsError(f"--set {text!r}: the value is not valid YAML ({exc})") from None
    return key.split("."), value


def prepare(workspace: Workspace, address: str, assignment: str) -> tuple[list[Document], Hotfix]:
    """Documents with the hotfix applied in memory, and the hotfix with its git patch."""
    try:
        wanted = Address.parse(address)
    except ValueError as exc:
        raise KfmopsError(str(exc)) from None
    if wanted.part is not None:
        raise KfmopsError(f"hotfix a whole document, e.g. dataset.{wanted.name}, not one of its parts")
    documents = load_documents_from(workspace.desired_dir, workspace.root)
    matches = [d for d in documents if d.address == str(wanted)]
    if not matches:
        raise KfmopsError(f"no document with address {address}; see 'kfmops validate'")
    document = matches[0]
    path, value = parse_assignment(assignment)
    spec = copy.deepcopy(document.spec)
    holder = spec
    for step in path[:-1]:
        holder = holder.setdefault(step, LineDict())
    holder[path[-1]] = value
    node = {"apiVersion": "kfmops/v1", "kind": document.kind, "metadata": {"name": document.name}, "spec": spec}
    problems = check(node, SCHEMA_OF_KIND[document.kind], document.file)
    if problems:
        raise InputError(problems)
    patched = replace(document, spec=spec)
    hotfix = Hotfix(patched, path, value, _patch(workspace, document, path, value))
    return [patched if d is document else d for d in documents], hotfix


def desired_with(workspace: Workspace, documents: list[Document]) -> DesiredState:
    return expand(documents, workspace.conventions, workspace.routes, set(workspace.backends))


def _patch(workspace: Workspace, document: Document, path: list[str], value: Any) -> str:
    """A unified diff (`git apply`-able from the workspace root) that writes the value into the file."""
    file = workspace.root / document.file
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    rendered = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else _scalar(value)
    node: Any = document.spec
    for step in path[:-1]:
        node = node.get(step) if isinstance(node, dict) else None
    key = path[-1]
    if isinstance(node, LineDict) and key in node:
        start = node.lines[key] - 1
        end = _last_line(node[key], start)
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        new = [*lines[:start], f"{indent}{key}: {rendered}\n", *lines[end + 1 :]]
    else:
        raise KfmopsError(
            f"{document.file}: cannot place spec.{'.'.join(path)} automatically; add it by hand, then 'kfmops plan'"
        )
    return "".join(difflib.unified_diff(lines, new, f"a/{document.file}", f"b/{document.file}"))


def _last_line(value: Any, start: int) -> int:
    """Index of the last line a block value that starts on line index `start` occupies."""
    last = start
    if isinstance(value, LineDict):
        for key, line in value.lines.items():
            last = max(last, _last_line(value[key], line - 1))
    elif isinstance(value, LineList):
        for item, line in zip(value, value.lines, strict=True):
            last = max(last, _last_line(item, line - 1))
    return last


def _scalar(value: str) -> str:
    dumped = yaml.safe_dump(value, default_flow_style=True).strip()
    return dumped.removesuffix("\n...").strip()
