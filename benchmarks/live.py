"""What the embedded local backend of a workspace holds, read directly (no kfmops code).

Shared by the tests (tests/conftest.py) and the kill campaign, which judge what kfmops really did.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def local_rows(workspace: Path) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of the reference tables of the local backend's SQLite file (none before the first apply
    creates it: planning creates nothing)."""
    path = workspace / "state" / "local" / "references.sqlite"
    if not path.exists():
        return {"relationships": set(), "aliases": set(), "kv": set()}
    database = sqlite3.connect(path)
    try:
        return {
            "relationships": set(database.execute("SELECT * FROM relationships")),
            "aliases": set(database.execute("SELECT * FROM aliases")),
            "kv": set(database.execute("SELECT * FROM kv")),
        }
    finally:
        database.close()


def snapshot(workspace: Path) -> dict[str, Any]:
    """The rows of the local backend's reference tables (as `local_rows`) plus every JSON document of its
    STAC folder, parsed, under "stac" by path relative to the catalog root. Equal snapshots mean equal
    references. Before the first apply creates the local backend, it holds its seed (`data/catalog`)."""
    root = workspace / "state" / "local" / "stac"
    if not root.exists():  # never written: the local backend still holds its seed
        root = workspace / "data" / "catalog"
    documents = {
        path.relative_to(root).as_posix(): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(root.rglob("*.json"))
    }
    return {**local_rows(workspace), "stac": documents}
