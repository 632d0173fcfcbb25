"""Seed the immutable targets of a workspace on real servers, as a data platform would publish them.

    python -m benchmarks.seed --workspace examples/kansas-servers [--data examples/kansas/data]

Copies the data catalog into the stac backend's root, creates the dataset and version nodes in
Neo4j (unique by their key, hence indexed) and one empty index per version in Elasticsearch, by the
workspace's conventions. Connection settings come from the same environment variables the workspace's
backends name. Idempotent.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import neo4j

from kfmops.providers.registry import Providers
from kfmops.workspace import Workspace, fill, load_workspace


def versions_in(catalog: Path) -> list[tuple[str, str]]:
    """(dataset, version) of every collection or item carrying `kfm:dataset` and `version`."""
    found = []
    for file in sorted(catalog.rglob("*.json")):
        data = json.loads(file.read_text(encoding="utf-8"))
        fields = data.get("properties", data) if data.get("type") == "Feature" else data
        if fields.get("kfm:dataset") and fields.get("version"):
            found.append((fields["kfm:dataset"], fields["version"]))
    return found


def keyed(driver: Any, label: str, key: str, database: str | None) -> None:
    """Nodes of `label` unique by `key`, which indexes them: without an index every lookup of kfmops' reads and
    writes scans the label. A server that already has a plain index on them keeps it."""
    try:
        driver.execute_query(
            f"CREATE CONSTRAINT IF NOT EXISTS FOR (n:`{label}`) REQUIRE n.`{key}` IS UNIQUE", database_=database
        )
    except neo4j.exceptions.ClientError:
        driver.execute_query(f"CREATE INDEX IF NOT EXISTS FOR (n:`{label}`) ON (n.`{key}`)", database_=database)
    driver.execute_query("CALL db.awaitIndexes(120)", database_=database)


def seed(workspace: Workspace, data: Path) -> dict[str, int]:
    conventions = workspace.conventions
    pairs = versions_in(data / "catalog")
    counts = {"versions": len(pairs)}
    with Providers(workspace) as providers:
        for kind, backend in workspace.routes.items():
            provider = providers.get(backend, kind)
            backend_type = workspace.backends[backend].type
            if backend_type == "stac":
                shutil.copytree(data / "catalog", provider.catalog.root, dirs_exist_ok=True)
            elif backend_type == "neo4j":
                rows = [
                    {
                        "dataset": fill(conventions.graph_dataset_id, d),
                        "version": fill(conventions.graph_version_id, d, v),
                    }
                    for d, v in pairs
                ]
                key = conventions.graph_key
                for label in (conventions.graph_dataset_label, conventions.graph_version_label):
                    keyed(provider.driver, label, key, provider.database)
                provider.driver.execute_query(
                    f"UNWIND $rows AS row MERGE (:`{conventions.graph_dataset_label}` {{`{key}`: row.dataset}}) "
                    f"MERGE (:`{conventions.graph_version_label}` {{`{key}`: row.version}})",
                    {"rows": rows},
                    database_=provider.database,
                )
                counts["nodes"] = len(rows)
            elif backend_type == "elasticsearch":
                indices = sorted({fill(conventions.search_index, d, v) for d, v in pairs})
                for index in indices:
                    if not provider.client.indices.exists(index=index):
                        provider.client.indices.create(index=index)
                counts["indices"] = len(indices)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="data folder with catalog/ (default: ../kansas/data beside it)")
    args = parser.parse_args(argv)
    workspace = load_workspace(args.workspace)
    data = args.data or workspace.root.parent / "kansas" / "data"
    print(f"seeded {seed(workspace, data)} from {data}")


if __name__ == "__main__":
    main()
