"""Write a valid kfmops workspace of N datasets, or promote a fraction of an existing one's pointers.

    python -m benchmarks.generate --datasets 10000 --out /tmp/ws
    python -m benchmarks.generate --promote 0.2 --out /tmp/ws

Each dataset gets `--versions` immutable versions, seeded as STAC collections in data/catalog (from
which the local backend registers the version nodes and indices). Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

import yaml

KANSAS_BBOX = [-102.0517, 36.9930, -94.5884, 40.0031]
VERSION_EXTENSION = "https://stac-extensions.github.io/version/v1.2.0/schema.json"
PER_FILE = 100
WORKSPACE = """\
apiVersion: kfmops/v1
kind: Workspace
desired: desired
plans: plans
state: state
backends:
  local:
    type: local
    seed: data
"""


def collection(dataset: str, version: str, title: str, license_id: str = "CC-BY-4.0") -> dict[str, Any]:
    """A STAC 1.1.0 Collection for one immutable dataset version (links to root and parent only)."""
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "stac_extensions": [VERSION_EXTENSION],
        "id": f"{dataset}-{version}",
        "title": f"{title} ({version})",
        "description": f"{title}, version {version}. Immutable; kfmops manages only its links.",
        "version": version,
        "kfm:dataset": dataset,
        "license": license_id,
        "extent": {
            "spatial": {"bbox": [KANSAS_BBOX]},
            "temporal": {"interval": [["1850-01-01T00:00:00Z", None]]},
        },
        "links": [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../../catalog.json", "type": "application/json"},
        ],
    }


def write_catalog(folder: Path, datasets: list[tuple[str, list[str], str]], title: str) -> None:
    """data/catalog: a root catalog and one collection per (dataset, version)."""
    root = {
        "type": "Catalog",
        "stac_version": "1.1.0",
        "id": "kfm",
        "title": title,
        "description": "Kansas Frontier Matrix: every dataset version; kfmops points child links at current ones.",
        "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"}],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "catalog.json").write_text(json.dumps(root, indent=2) + "\n")
    for name, versions, dataset_title in datasets:
        for version in versions:
            path = folder / name / version / "collection.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(collection(name, version, dataset_title), indent=2) + "\n")


def dataset_document(name: str, versions: list[str], current: str, rng: random.Random) -> dict[str, Any]:
    return {
        "apiVersion": "kfmops/v1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "title": f"Generated dataset {name}",
            "version": current,
            "versions": [
                {"id": v, "provenance": {"source": f"generator:{name}/{v}", "activity": "generate"}} for v in versions
            ],
            "care": {
                "label": rng.choice(["open", "attribution"]),
                "sovereignty": "none",
                "visibility": "public",
                "review": "approved",
            },
        },
    }


def generate(out: Path, count: int, versions: int, seed: int) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kfmops.yaml").write_text(WORKSPACE)
    names = [f"ds-{i:06d}" for i in range(count)]
    version_ids = [f"v{i + 1}" for i in range(versions)]
    write_catalog(
        out / "data" / "catalog",
        [(n, version_ids, f"Generated dataset {n}") for n in names],
        f"Generated workspace of {count} datasets",
    )
    desired = out / "desired"
    desired.mkdir(exist_ok=True)
    for start in range(0, count, PER_FILE):
        documents = [
            dataset_document(n, version_ids, rng.choice(version_ids), rng) for n in names[start : start + PER_FILE]
        ]
        text = yaml.dump_all(documents, sort_keys=False, Dumper=yaml.CSafeDumper)
        (desired / f"datasets-{start // PER_FILE:05d}.yaml").write_text(text)
    print(f"wrote {count} datasets x {versions} versions to {out}")


def apply_settings(out: Path, **settings: Any) -> None:
    """Add an `apply:` section with `settings` (fsync, batch_size, ...) to a generated workspace's kfmops.yaml."""
    config = out / "kfmops.yaml"
    lines = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in settings.items())
    config.write_text(config.read_text() + "apply:\n" + lines)


def promote(out: Path, fraction: float, seed: int) -> int:
    """Move `fraction` of the dataset pointers to another declared version, editing files in place."""
    rng = random.Random(seed)
    files = sorted((out / "desired").glob("*.yaml"))
    moved = 0
    for file in files:
        documents = list(yaml.load_all(file.read_text(), Loader=yaml.CSafeLoader))
        changed = False
        for document in documents:
            if document.get("kind") != "Dataset" or rng.random() >= fraction:
                continue
            spec = document["spec"]
            others = [v["id"] for v in spec["versions"] if v["id"] != spec["version"]]
            if others:
                spec["version"] = rng.choice(others)
                moved += 1
                changed = True
        if changed:
            file.write_text(yaml.dump_all(documents, sort_keys=False, Dumper=yaml.CSafeDumper))
    print(f"promoted {moved} datasets in {out}")
    return moved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="workspace folder")
    parser.add_argument("--datasets", type=int, help="write a new workspace of this many datasets")
    parser.add_argument("--versions", type=int, default=3, help="versions per dataset (default 3)")
    parser.add_argument("--promote", type=float, help="fraction of pointers to move in an existing workspace")
    parser.add_argument("--seed", type=int, default=1854)
    args = parser.parse_args(argv)
    if (args.datasets is None) == (args.promote is None):
        parser.error("give exactly one of --datasets N or --promote FRACTION")
    if args.datasets is not None:
        generate(args.out, args.datasets, args.versions, args.seed)
    else:
        if not re.fullmatch(r"0(\.\d+)?|1(\.0+)?", str(args.promote)):
            parser.error("--promote takes a fraction between 0 and 1")
        promote(args.out, args.promote, args.seed)


if __name__ == "__main__":
    main()
