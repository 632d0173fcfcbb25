"""The STAC read index (issue 13): a plan parses only the catalog documents whose stat changed.

Invariant: a read through the index gives exactly what parsing every document gives, whatever happened to
the files since they were entered (an edit in place of the same size with its mtime put back, a rename
over it, a touch, a chmod, a deletion), and a saved index that is torn, forged, of another kfmops or
catalog, or sealed with another key is not believed. The catalogs are real folders; RACY_NS (the age a
document must have to be entered) is set to 0 where a test needs fresh files entered, and every edit then
waits out the file system's clock tick.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import commit_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kfmops.providers import stac_index
from kfmops.providers.stac import StacCatalog
from kfmops.providers.stac_index import StacIndex
from kfmops.references import Reference

TICK = 0.05  # longer than a kernel clock tick: an edit after it gets a ctime no earlier read saw


def write(root: Path, path: str, document: dict[str, Any]) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(json.dumps(document, indent=2), encoding="utf-8")


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    root = tmp_path / "catalog"
    links = [{"rel": "child", "href": f"./{name}/collection.json", "type": "application/json"} for name in "ab"]
    write(root, "catalog.json", {"type": "Catalog", "id": "root", "links": links})
    for name in "ab":
        write(root, f"{name}/collection.json", {"type": "Collection", "id": name, "deprecated": False, "links": []})
    return root


REFERENCES = [
    Reference(
        f"stac_link.{name}",
        "stac",
        "catalog",
        {
            "slots": [
                {"document": "catalog.json", "field": "child", "scope": [f"{name}/collection.json"]},
                {"document": f"{name}/collection.json", "field": "deprecated", "scope": None},
            ]
        },
    )
    for name in "ab"
]


def fresh_read(root: Path) -> dict[str, Any]:
    """What parsing every document reads: a catalog with an empty index."""
    return StacCatalog(root, "catalog").read(REFERENCES)


def edit_in_place_keeping_size_and_mtime(file: Path, old: str, new: str) -> None:
    assert len(old) == len(new)
    stat = file.stat()
    time.sleep(TICK)
    file.write_text(file.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (file.stat().st_size, file.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


def reseal(file: Path, change: Any) -> None:
    """Rewrite a saved index's entries through `change(entries)` with a matching unkeyed digest: what anyone
    who can write the workspace can do."""
    header, body = file.read_bytes().split(b"\n", 1)
    entries = json.loads(body)
    change(entries)
    body = json.dumps(entries).encode()
    fields = json.loads(header) | {"digest": "sha256:" + hashlib.sha256(body).hexdigest()}
    file.write_bytes(json.dumps(fields).encode() + b"\n" + body)


def forge(path: str) -> Any:
    """A change to saved entries giving the document at `path` a reading no parse of it gives."""

    def change(entries: dict[str, Any]) -> None:
        entries[path][5:7] = ["forged", {"child": ["forged.json"]}]

    return change


def test_a_read_through_the_index_is_a_fresh_read_after_any_change_to_a_document(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr(stac_index, "RACY_NS", 0)
    saved = tmp_path / "index.json"
    first = StacIndex.load(catalog.resolve(), saved)
    assert StacCatalog(catalog, "catalog", index=first).read(REFERENCES) == fresh_read(catalog)
    first.save()
    assert set(StacIndex.load(catalog.resolve(), saved).entries) == {
        "catalog.json",
        "a/collection.json",
        "b/collection.json",
    }

    # the index is what is read: an entry forged with a matching digest is believed while the stat matches
    reseal(saved, lambda entries: entries["a/collection.json"].__setitem__(5, True))
    believed = StacCatalog(catalog, "catalog", index=StacIndex.load(catalog.resolve(), saved)).read(REFERENCES)
    assert believed["stac_link.a"]["a/collection.json"]["deprecated"] is True
    assert fresh_read(catalog)["stac_link.a"]["a/collection.json"]["deprecated"] is False

    file = catalog / "a" / "collection.json"
    edits = {
        "edit in place, same size, mtime put back": (
            file,
            lambda: edit_in_place_keeping_size_and_mtime(file, '"a"', '"A"'),
        ),
        "touch": (file, lambda: (time.sleep(TICK), os.utime(file))),
        "chmod": (file, lambda: (time.sleep(TICK), file.chmod(0o600))),
        "rename over": (
            file,
            lambda: (
                time.sleep(TICK),
                write(catalog, "a/new.json", {"type": "Collection", "id": "a", "deprecated": True, "links": []}),
                os.replace(catalog / "a" / "new.json", file),
            ),
        ),
        "catalog edited in place, same size, mtime put back": (
            catalog / "catalog.json",
            lambda: edit_in_place_keeping_size_and_mtime(catalog / "catalog.json", "./b/", "./a/"),
        ),
        "deleted": (file, lambda: file.unlink()),
    }
    for name, (edited, edit) in edits.items():
        path = edited.relative_to(catalog).as_posix()
        reseal(saved, forge(path))
        index = StacIndex.load(catalog.resolve(), saved)
        assert index.entries[path][1].deprecated == "forged", name
        edit()
        assert StacCatalog(catalog, "catalog", index=index).read(REFERENCES) == fresh_read(catalog), name
        index.save()


def test_a_document_changed_within_the_racy_window_is_never_entered(catalog, tmp_path):
    index = StacIndex(catalog.resolve(), tmp_path / "index.json")
    StacCatalog(catalog, "catalog", index=index).read(REFERENCES)
    assert index.entries == {}, "just written: a second write in the same clock tick could leave the same stat"


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda file: file.write_bytes(file.read_bytes()[:-20]), id="torn"),
        pytest.param(lambda file: file.write_bytes(b"not json\n{}"), id="not json"),
        pytest.param(lambda file: reseal(file, lambda entries: entries.update(x=[1])), id="another shape"),
        pytest.param(
            lambda file: file.write_bytes(file.read_bytes().replace(b'"kfmops":"', b'"kfmops":"0.0.0-', 1)),
            id="another kfmops",
        ),
        pytest.param(lambda file: file.write_bytes(file.read_bytes().replace(b"false", b"true ", 1)), id="forged"),
    ],
)
def test_a_saved_index_in_any_doubt_is_ignored_and_rewritten(catalog, tmp_path, monkeypatch, spoil):
    monkeypatch.setattr(stac_index, "RACY_NS", 0)
    saved = tmp_path / "index.json"
    index = StacIndex.load(catalog.resolve(), saved)
    StacCatalog(catalog, "catalog", index=index).read(REFERENCES)
    index.save()
    spoil(saved)
    again = StacIndex.load(catalog.resolve(), saved)
    assert again.entries == {}
    assert StacCatalog(catalog, "catalog", index=again).read(REFERENCES) == fresh_read(catalog)
    again.save()
    assert len(StacIndex.load(catalog.resolve(), saved).entries) == 3, "rewritten"


def test_a_keyed_index_takes_only_what_its_own_key_sealed_and_another_catalog_takes_nothing(
    catalog, tmp_path, monkeypatch
):
    monkeypatch.setattr(stac_index, "RACY_NS", 0)
    saved = tmp_path / "index.json"
    index = StacIndex.load(catalog.resolve(), saved, b"key one")
    StacCatalog(catalog, "catalog", index=index).read(REFERENCES)
    index.save()
    assert len(StacIndex.load(catalog.resolve(), saved, b"key one").entries) == 3
    assert StacIndex.load(catalog.resolve(), saved, b"key two").entries == {}
    assert StacIndex.load(catalog.resolve(), saved).entries == {}, "an HMAC is not an unkeyed digest"
    reseal(saved, lambda entries: None)  # a forger without the key can only seal without it
    assert StacIndex.load(catalog.resolve(), saved, b"key one").entries == {}
    assert StacIndex.load(tmp_path.resolve(), saved).entries == {}, "another catalog root"


def test_an_index_that_cannot_be_saved_costs_nothing_but_the_parse(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr(stac_index, "RACY_NS", 0)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder would go", encoding="utf-8")
    index = StacIndex(catalog.resolve(), blocked / "stac" / "index.json")
    assert StacCatalog(catalog, "catalog", index=index).read(REFERENCES) == fresh_read(catalog)
    index.save()  # no error: an index is never required
    assert blocked.read_text(encoding="utf-8") == "a file where the folder would go"


def test_plans_keep_the_index_only_in_an_applied_workspace_and_see_an_edit_that_keeps_size_and_mtime(
    make_workspace, cli
):
    workspace = make_workspace(n=3)
    commit_all(workspace)
    saved = workspace / stac_index.FOLDER / "local.json"
    assert cli(workspace, "plan", "-o", "plans/first.json")[0] == 0
    assert not (workspace / ".kfmops" / "cache" / "stac").exists(), "a workspace never applied gets nothing"
    assert cli(workspace, "apply", "--auto-approve")[0] == 0
    time.sleep(stac_index.RACY_NS / 1e9 + TICK)  # old enough to be entered
    assert cli(workspace, "plan", "--detailed-exitcode")[0] == 0
    entered = json.loads(saved.read_bytes().split(b"\n", 1)[1])
    assert "catalog.json" in entered and len(entered) == 1 + 3 * 3, sorted(entered)

    catalog = workspace / "state" / "local" / "stac" / "catalog.json"
    (href,) = [link["href"] for link in json.loads(catalog.read_text())["links"] if "ds-000001" in link["href"]]
    other = href.replace("/v3/", "/v1/") if "/v3/" in href else href.replace(href.split("/")[-2], "v1")
    edit_in_place_keeping_size_and_mtime(catalog, f'"{href}"', f'"{other}"')
    code, out, err = cli(workspace, "plan", "--detailed-exitcode")
    assert code == 2 and "ds-000001" in out, (code, out, err)


def flip_deprecated_in_place(file: Path) -> None:
    """`"deprecated": false` and `"deprecated": true ` (one space: the same size) into each other."""
    if file.exists():
        text = file.read_text(encoding="utf-8")
        old, new = ('"deprecated": false', '"deprecated": true ')
        edit_in_place_keeping_size_and_mtime(file, *((old, new) if old in text else (new, old)))


def collection(name: str, deprecated: bool) -> str:
    text = json.dumps({"type": "Collection", "id": name, "deprecated": deprecated, "links": []}, indent=2)
    return text.replace('"deprecated": true', '"deprecated": true ')


def rename_over_flipped(file: Path) -> None:
    if file.exists():
        time.sleep(TICK)
        deprecated = json.loads(file.read_text(encoding="utf-8"))["deprecated"]
        file.with_suffix(".new").write_text(collection(file.parent.name, not deprecated), encoding="utf-8")
        os.replace(file.with_suffix(".new"), file)


def delete_or_create(file: Path) -> None:
    time.sleep(TICK)
    if file.exists():
        file.unlink()
    else:
        file.write_text(collection(file.parent.name, False), encoding="utf-8")


OPERATIONS = {
    "flip deprecated in place, same size and mtime": flip_deprecated_in_place,
    "rename over, flipped": rename_over_flipped,
    "delete or create": delete_or_create,
    "touch": lambda file: (time.sleep(TICK), file.exists() and os.utime(file)),
    "swap the catalog's child links in place": lambda file: (
        edit_in_place_keeping_size_and_mtime(file.parents[1] / "catalog.json", "./a/", "./b/")
        if "./a/" in (file.parents[1] / "catalog.json").read_text(encoding="utf-8")
        else edit_in_place_keeping_size_and_mtime(file.parents[1] / "catalog.json", "./b/", "./a/")
    ),
}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.sampled_from(sorted(OPERATIONS)), st.sampled_from("ab")), min_size=1, max_size=5),
)
def test_any_sequence_of_edits_reads_through_the_saved_index_as_a_fresh_parse(tmp_path_factory, edits):
    root = tmp_path_factory.mktemp("catalog")
    links = [{"rel": "child", "href": f"./{name}/collection.json", "type": "application/json"} for name in "ab"]
    write(root, "catalog.json", {"type": "Catalog", "id": "root", "links": links})
    for name in "ab":
        write(root, f"{name}/collection.json", {"type": "Collection", "id": name, "deprecated": False, "links": []})
    saved = root.parent / f"{root.name}.index.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stac_index, "RACY_NS", 0)
        for operation, name in [("touch", "a"), *edits]:
            index = StacIndex.load(root.resolve(), saved)
            OPERATIONS[operation](root / name / "collection.json")
            assert StacCatalog(root, "catalog", index=index).read(REFERENCES) == fresh_read(root), operation
            index.save()
