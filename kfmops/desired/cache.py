"""The desired-document cache: each desired-state file parsed and schema-checked once per content.

One sealed file (io/sealed) per desired file, named by the SHA-256 of kfmops' program digest (io/sealed:
its version, code and schemas) and the file's text: a changed file or any other kfmops names another
entry, so an entry is never trusted across either. An entry holds the file's documents with every line number
the loader recorded; one that is unreadable, torn, of another shape, not sealed for its name or whose
digest does not match is ignored (and rewritten). Only files without a problem are cached: every
diagnostic still comes from parsing the file. The folder is safe to delete at any time.

Anyone who can write the folder can compute a name and a digest, so an entry proves nothing about who
made it. A cache opened with a `secret` (derived from KFMOPS_PLAN_KEY) seals each entry with an HMAC
instead, and takes only entries sealed with that secret: apply reads the desired state of a plan's
commit through such a cache alone, since that check is what catches a forged plan.

Must not: make a read-only command create anything in a workspace never applied (the caller passes no
cache then); fail a command because the cache cannot be read or written (a cache is never required).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kfmops.desired.document import Document
from kfmops.io.sealed import program_digest, read_sealed, write_sealed
from kfmops.workspace import CACHE_DIR
from kfmops.yamlio import LineDict, LineList

FORMAT = 2
FOLDER = f"{CACHE_DIR}/desired"
"""Where a workspace keeps the cache, relative to its root."""


class _NotCacheable(Exception):
    """A value JSON cannot carry exactly (a YAML date, binary, ordered map): the file is parsed every time."""


class DesiredCache:
    """Entries under `folder`, valid for `program` (default: this kfmops, see io.sealed.program_digest), and sealed
    with `secret` when one is given (see the module's note)."""

    def __init__(self, folder: Path, program: str | None = None, secret: bytes | None = None):
        self.folder = folder
        self.program = program or f"{program_digest()} cache {FORMAT}"
        self.secret = secret
        self.used: set[str] = set()

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.program}\0{text}".encode()).hexdigest()

    def get(self, text: str, file: str) -> list[Document] | None:
        """The documents of a file with this `text` (named `file` in every diagnostic), or None."""
        key = self.key(text)
        self.used.add(key)
        body = read_sealed(self.folder / f"{key}.json", {"format": FORMAT, "key": key}, self.secret)
        if body is None:
            return None  # absent or in doubt: parse the file again
        try:
            return [
                Document(kind, name, _decode(spec), file, line, name_line)
                for kind, name, spec, line, name_line in json.loads(body)
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # another shape

    def put(self, text: str, documents: Iterable[Document]) -> None:
        """Remember the documents of a file with this `text`; a value JSON cannot carry skips the file."""
        key = self.key(text)
        self.used.add(key)
        try:
            payload = [[d.kind, d.name, _encode(d.spec), d.line, d.name_line] for d in documents]
        except _NotCacheable:
            return
        body = json.dumps(payload, separators=(",", ":")).encode()
        write_sealed(self.folder / f"{key}.json", {"format": FORMAT, "key": key}, body, self.secret)

    def prune(self) -> None:
        """Remove the entries (and leftover temporary files) not used since this cache was opened."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            if name.removeprefix(".").split(".")[0] not in self.used:
                with contextlib.suppress(OSError):
                    os.unlink(self.folder / name)


def _encode(node: Any) -> Any:
    """A loaded YAML node as JSON: mappings `{"m": line, "k": [[key, line, value], ...]}`, sequences
    `{"s": line, "i": [lines], "v": [values]}`; scalars as they are (a scalar is never a JSON object)."""
    if type(node) is LineDict:
        return {"m": node.line, "k": [[key, node.lines[key], _encode(value)] for key, value in node.items()]}
    if type(node) is LineList:
        return {"s": node.line, "i": node.lines, "v": [_encode(value) for value in node]}
    if node is None or type(node) in (str, bool, int, float):
        return node
    raise _NotCacheable(type(node).__name__)


def _decode(value: Any) -> Any:
    if type(value) is not dict:
        return value
    if "m" in value:
        mapping = LineDict()
        mapping.line, mapping.lines = value["m"], {}
        for key, line, item in value["k"]:
            mapping[key] = _decode(item)
            mapping.lines[key] = line
        return mapping
    sequence = LineList(_decode(item) for item in value["v"])
    sequence.line, sequence.lines = value["s"], value["i"]
    return sequence
