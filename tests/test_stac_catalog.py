"""kfmops on a real published STAC catalog: only links and `deprecated` change, the catalog stays valid offline.

The catalog is a copy of ../shared/fixtures/open-stac (Planet Fusion, 2021 Nebraska sample: a root catalog, one
collection, 365 daily items, STAC 1.0.0, 2-space JSON), behind a `type: stac` backend. Three daily items are one
Dataset's versions (child, latest-version, predecessor-version, successor-version links and `deprecated`), a raw
StacLink gives one item several predecessor-version links, and another owns the collection's item links.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from servers import closing, open_provider

from kfmops.errors import BackendError
from kfmops.providers.stac_check import check_catalog
from kfmops.references import Reference
from kfmops.workspace import load_workspace

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
OPEN_STAC = FIXTURES / "open-stac"
SCHEMAS = FIXTURES / "stac-schemas"
COLLECTION = "fusion/14N/29E-188N/collection.json"
DAYS = "fusion/14N/29E-188N"
VERSIONS = ["2021-06-01", "2021-06-02", "2021-06-03"]
UNLINKED = "2021-06-15"  # the published copy lacks the collection's item link to this day; kfmops adds it
WORKSPACE = f"""\
apiVersion: kfmops/v1
kind: Workspace
apply: {{fsync: false}}
backends:
  catalog: {{type: stac, root: catalog}}
routes: {{stac: catalog}}
datasets:
  stac: {{catalog: "{COLLECTION}", collection: "{DAYS}/{{version}}.json"}}
"""
DATASET = (
    """\
apiVersion: kfmops/v1
kind: Dataset
metadata:
  name: fusion-29e-188n
spec:
  title: Planet Fusion daily mosaics, three days as versions
  version: "2021-06-02"
  versions:
"""
    + "".join(
        f'    - id: "{v}"\n      provenance: {{source: Planet Fusion, activity: daily mosaic}}\n' for v in VERSIONS
    )
    + """\
  care: {label: open, sovereignty: none, visibility: public, review: approved}
  backends: {graph: false, search: false, cache: false}
"""
)
PREDECESSORS = f"""\
apiVersion: kfmops/v1
kind: StacLink
metadata:
  name: fusion-0701-predecessors
spec:
  document: {DAYS}/2021-07-01.json
  rel: predecessor-version
  targets: [{DAYS}/2021-06-30.json, {DAYS}/2021-06-29.json, {DAYS}/2021-06-28.json]
"""

pytestmark = pytest.mark.skipif(not OPEN_STAC.is_dir(), reason="../shared/fixtures/open-stac is absent")


def items_link(days: list[str]) -> str:
    targets = "".join(f"  - {DAYS}/{day}.json\n" for day in days)
    return (
        "apiVersion: kfmops/v1\nkind: StacLink\nmetadata:\n  name: fusion-items\nspec:\n"
        f"  document: {COLLECTION}\n  rel: item\n  targets:\n{targets}"
    )


def files_of(root: Path) -> dict[str, bytes]:
    return {f.relative_to(root).as_posix(): f.read_bytes() for f in sorted(root.rglob("*.json"))}


def without_managed(text: str) -> str:
    """The JSON text with its `links` array and `deprecated` member cut out, byte for byte otherwise."""
    text = re.sub(r'(?ms)^( *)"links": \[\n.*?^\1\],?\n', "", text)
    text = re.sub(r',\n *"deprecated": (?:true|false)(?=\n)', "", text)  # the object's last member
    return re.sub(r'\n *"deprecated": (?:true|false),(?=\n)', "", text)


def pairs_without_managed(text: str) -> Any:
    """The parsed document as nested key/value pair lists (key order kept), without links and `deprecated`."""

    def strip(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in pairs if k not in ("links", "deprecated")]

    return json.loads(text, object_pairs_hook=strip)


def links_of(files: dict[str, bytes], path: str, rel: str) -> list[str]:
    return [link["href"] for link in json.loads(files[path])["links"] if link["rel"] == rel]


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """A workspace whose stac backend is a copy of the open catalog, missing one item link."""
    root = tmp_path / "ws"
    shutil.copytree(OPEN_STAC, root / "catalog", ignore=shutil.ignore_patterns("README.md"))
    (root / "kfmops.yaml").write_text(WORKSPACE, encoding="utf-8")
    (root / "desired").mkdir()
    collection = root / "catalog" / COLLECTION
    document = json.loads(collection.read_text(encoding="utf-8"))
    document["links"] = [link for link in document["links"] if link["href"] != f"./{UNLINKED}.json"]
    collection.write_text(json.dumps(document, indent=2), encoding="utf-8")  # the catalog's style: no final newline
    return root


def desired(root: Path, *documents: str) -> None:
    (root / "desired" / "fusion.yaml").write_text("---\n".join(documents), encoding="utf-8")


def ok(result: tuple[int, str, str]) -> str:
    assert result[0] == 0, result
    return result[1]


def test_apply_changes_only_links_and_deprecated_and_rollback_restores_every_byte(cli, published):
    catalog = published / "catalog"
    days = sorted(p.stem for p in (catalog / DAYS).glob("2021-*.json"))
    assert len(days) == 365
    desired(published, DATASET, PREDECESSORS, items_link(days))
    before = files_of(catalog)
    ok(cli(published, "validate"))
    ok(cli(published, "apply", "--auto-approve"))
    after = files_of(catalog)

    # the links kfmops was asked for, and only those
    changed = {path for path in before if after[path] != before[path]}
    versions = {f"{DAYS}/{v}.json" for v in VERSIONS}
    assert changed == versions | {COLLECTION, f"{DAYS}/2021-07-01.json"}
    assert links_of(after, COLLECTION, "child") == ["./2021-06-02.json"]
    assert links_of(after, COLLECTION, "item") == [f"./{day}.json" for day in days]
    assert links_of(after, f"{DAYS}/2021-07-01.json", "predecessor-version") == [
        "./2021-06-28.json",
        "./2021-06-29.json",
        "./2021-06-30.json",
    ]
    for i, version in enumerate(VERSIONS):
        path = f"{DAYS}/{version}.json"
        assert links_of(after, path, "latest-version") == ["./2021-06-02.json"]
        assert links_of(after, path, "predecessor-version") == ([f"./{VERSIONS[i - 1]}.json"] if i else [])
        assert links_of(after, path, "successor-version") == ([f"./{VERSIONS[i + 1]}.json"] if i < 2 else [])
        assert json.loads(after[path])["properties"]["deprecated"] is (version != "2021-06-02")

    # every other member, its key order and the file's formatting are as published
    for path in changed:
        old, new = before[path].decode(), after[path].decode()
        assert pairs_without_managed(new) == pairs_without_managed(old), path
        assert without_managed(new) == without_managed(old), path
        assert old == json.dumps(json.loads(old), indent=2), f"{path}: as published, 2-space indent, no final newline"
        assert new == json.dumps(json.loads(new), indent=2), f"{path}: written in the same style"
        untouched = json.loads(old)["links"]
        assert [link for link in json.loads(new)["links"] if link in untouched] == untouched, "old links stay put"

    # the catalog is still valid and whole, offline
    report = check_catalog(catalog, SCHEMAS)
    assert report.documents == 367
    assert report.invalid == [] and report.broken_links == []
    out = ok(cli(published, "catalog", "check", "--schemas", str(SCHEMAS)))
    assert "367 STAC documents" in out and "0 schema problems, 0 broken links" in out

    ok(cli(published, "rollback", "--last", "--auto-approve", "--auto-approve"))
    assert files_of(catalog) == before, "every file is byte for byte what was published"


def test_a_broken_link_is_counted(cli, published):
    catalog = published / "catalog"
    path = f"{DAYS}/2021-03-01.json"
    document = json.loads((catalog / path).read_text(encoding="utf-8"))
    document["links"].append({"rel": "related", "href": "./2020-12-31.json", "type": "application/json"})
    (catalog / path).write_text(json.dumps(document, indent=2), encoding="utf-8")
    report = check_catalog(catalog, SCHEMAS)
    assert report.invalid == []
    assert report.broken_links == [(path, "./2020-12-31.json")]
    code, out, err = cli(published, "catalog", "check", "--schemas", str(SCHEMAS))
    assert code == 1, (code, out, err)
    assert "1 broken link" in out + err


def test_hrefs_cannot_leave_the_catalog_root(published):
    """Neither a document nor a link target outside the root is read or written, and no file changes."""
    catalog = published / "catalog"
    (published / "secret.json").write_text('{"stac_version": "1.0.0"}\n', encoding="utf-8")
    before = files_of(published)
    path = f"{DAYS}/2021-06-01.json"
    with closing(open_provider(load_workspace(published), "catalog")) as provider:
        for document, target in (
            (path, "../secret.json"),
            (path, f"{DAYS}/../../../../secret.json"),
            ("../secret.json", path),
        ):
            slot = {"document": document, "field": "related", "scope": None}
            reference = Reference("stac_link.escape", "stac", "catalog", {"slots": [slot]})
            with pytest.raises(BackendError, match="escapes the catalog root"):
                provider.write([(reference, {document: {"related": [target]}})])
    assert files_of(published) == before
    assert check_catalog(catalog).broken_links == []
