"""The STAC read index: what was read from each catalog document, kept by the file's stat, the way git's
index keeps a work tree's, so that a document whose stat is unchanged is not parsed again.

An entry holds a document's reading (its `deprecated` value and link targets, see `Reading`) under the
(device, inode, size, mtime_ns, ctime_ns) it had when it was read. Any doubt means the document is
parsed again: a stat that differs in any field, or a document changed less than RACY_NS before it was
read. Such a document is never entered, because a second write in the same clock tick could leave the
same stat (git's "racily clean" entries). A user can set mtime back but not ctime: any later write,
rename, touch or chmod gives the file a ctime later than any entered, so a stat it never had.

Every catalog keeps its entries in memory for the run. Plans also keep them in a file (`open_saved`,
`save`), `.kfmops/cache/stac/<backend>.json` in a workspace applied before: a header with the format,
kfmops' program digest (io/sealed), the catalog's real root and the digest of the entries (an HMAC under a key derived
from KFMOPS_PLAN_KEY when that is set, as the desired-document cache), then the entries. A file with
another header, or whose entries do not match its digest, is ignored and rewritten. Apply, recover and
rollback never read the file: the values they compare with were parsed, or entered, in their own run.

Must not: trust an entry across any doubt above; fail a command because the file cannot be read or
written (the folder is safe to delete at any time); create anything in a workspace never applied.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kfmops.io.sealed import program_digest, read_sealed, write_sealed
from kfmops.plans.planfile import derived_key
from kfmops.providers.stac_document import Reading
from kfmops.workspace import CACHE_DIR, Workspace

FORMAT = 1
FOLDER = f"{CACHE_DIR}/stac"
RACY_NS = 2_000_000_000  # coarser than any file system's timestamps and the kernel's clock tick

Stat = tuple[int, int, int, int, int]


def stat_of(result: os.stat_result) -> Stat:
    return (result.st_dev, result.st_ino, result.st_size, result.st_mtime_ns, result.st_ctime_ns)


class StacIndex:
    """Readings of a catalog's documents by root-relative path; saved to `file` when one is given."""

    def __init__(self, root: Path, file: Path | None = None, secret: bytes | None = None):
        self.root = str(root)
        self.file = file
        self.secret = secret
        self.entries: dict[str, tuple[Stat, Reading]] = {}
        self.changed = False

    @classmethod
    def open_saved(cls, workspace: Workspace, backend: str, root: Path) -> StacIndex:
        """The index of a plan's reads, with the entries saved by earlier plans (none in a workspace never
        applied, where nothing is saved either)."""
        if not workspace.applied:
            return cls(root)
        return cls.load(root, workspace.root / FOLDER / f"{backend}.json", derived_key("stac read index"))

    @classmethod
    def load(cls, root: Path, file: Path, secret: bytes | None = None) -> StacIndex:
        """The index of the catalog at (real) `root` saved in `file`; empty when the file is absent or in any
        doubt (see the module)."""
        index = cls(root, file, secret)
        index.entries = index._saved(file)
        return index

    def get(self, path: str, stat: Stat) -> Reading | None:
        entry = self.entries.get(path)
        return entry[1] if entry is not None and entry[0] == stat else None

    def put(self, path: str, stat: Stat, reading: Reading, read_at: int) -> None:
        """Enter the `reading` of the document at `path`, whose stat was `stat` at time.time_ns() `read_at`."""
        if max(stat[3], stat[4]) >= read_at - RACY_NS:
            self.forget(path)
            return
        self.entries[path] = (stat, reading)
        self.changed = True

    def forget(self, path: str) -> None:
        if self.entries.pop(path, None) is not None:
            self.changed = True

    def save(self) -> None:
        """Write the entries to the file, when there is one and they changed; a failure only loses them."""
        if self.file is None or not self.changed:
            return
        entries = {path: [*stat, reading.deprecated, reading.targets] for path, (stat, reading) in self.entries.items()}
        write_sealed(self.file, self._header(), json.dumps(entries, separators=(",", ":")).encode(), self.secret)
        self.changed = False

    def _saved(self, file: Path) -> dict[str, tuple[Stat, Reading]]:
        body = read_sealed(file, self._header(), self.secret)
        try:
            return {
                path: ((dev, inode, size, mtime, ctime), Reading(deprecated, targets))
                for path, (dev, inode, size, mtime, ctime, deprecated, targets) in json.loads(body or b"{}").items()
            }
        except (ValueError, TypeError, AttributeError):
            return {}  # another shape: every document is parsed

    def _header(self) -> dict[str, Any]:
        return {"format": FORMAT, "kfmops": program_digest(), "root": self.root}
