"""The I/O floor of a no-op plan of a generated workspace (local backend): the reading and writing a plan
cannot avoid, without kfmops.

    python -m benchmarks.io_floor WORKSPACE PLAN_FILE

Parses every desired YAML file (libyaml), loads state.json, reads the live values (every JSON document
of the local backend's STAC folder, parsed; every row of its reference tables), and writes one plan line
per reference (address, action, value) as JSON. No validation, expansion, diff, policy or hashing: what
is left when all of those cost nothing. benchmarks.compare runs it beside `kfmops plan` at each size.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import yaml

PARTS = ("stac", "graph", "search", "cache")


def floor_plan(workspace: Path, out: Path) -> int:
    """Do the floor's work for `workspace`; the number of references written to `out`."""
    versions: dict[str, str] = {}
    for file in sorted((workspace / "desired").glob("*.yaml")):
        for document in yaml.load_all(file.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader):
            if document and document.get("kind") == "Dataset":
                versions[document["metadata"]["name"]] = document["spec"]["version"]
    state_file = workspace / "state" / "state.json"
    state = json.loads(state_file.read_bytes()) if state_file.exists() else {}
    stac = workspace / "state" / "local" / "stac"
    documents = {p: json.loads(p.read_bytes()) for p in stac.rglob("*.json")} if stac.is_dir() else {}
    rows: list[tuple[object, ...]] = []
    database = workspace / "state" / "local" / "references.sqlite"
    if database.exists():
        connection = sqlite3.connect(database)
        for table in ("relationships", "aliases", "kv"):
            rows.extend(connection.execute(f"SELECT * FROM {table}"))
        connection.close()
    written = 0
    with open(out, "w", encoding="utf-8") as handle:
        for name, version in versions.items():
            for part in PARTS:
                line = {"address": f"dataset.{name}.{part}", "action": "no-op", "value": version}
                handle.write(json.dumps(line) + "\n")
                written += 1
    del state, documents, rows
    return written


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit(__doc__)
    floor_plan(Path(args[0]), Path(args[1]))


if __name__ == "__main__":
    main()
