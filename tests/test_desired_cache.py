"""The desired-document cache (kfmops/desired/cache.py): used when valid, and a deleted, stale or corrupted
cache is detected and rebuilt, with the plan unchanged. Through the real CLI, on generated workspaces."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import commit_all, plan_changes

from benchmarks.generate import promote
from kfmops.desired.cache import FOLDER, DesiredCache
from kfmops.desired.load import load_documents_from
from kfmops.desired.state_cache import FILE as STATE_FILE
from kfmops.io.sealed import write_sealed
from kfmops.plans.planfile import derived_key


def entries(workspace: Path) -> dict[str, bytes]:
    folder = workspace / FOLDER
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def digest_of(body: bytes) -> str:
    return str(json.loads(body.split(b"\n", 1)[0])["digest"])


def forge(file: Path, secret: bytes | None) -> None:
    """Rewrite a cache entry one document short, sealed with `secret` (None: unkeyed): what anyone who can
    write the workspace can do, and with a secret what only its holder can."""
    line, body = file.read_bytes().split(b"\n", 1)
    header = json.loads(line)
    del header["digest"]
    write_sealed(file, header, json.dumps(json.loads(body)[:1]).encode(), secret)


def without_state_cache(workspace: Path) -> Path:
    """The workspace with no desired-state cache, which would answer before this one is asked."""
    (workspace / STATE_FILE).unlink(missing_ok=True)
    return workspace


def planned(cli, workspace: Path) -> dict[str, object]:
    without_state_cache(workspace)
    code, _out, err = cli(workspace, "plan", "--format", "json", "--out", str(workspace / "p.json"))
    assert code == 0, err
    plan = json.loads((workspace / "p.json").read_text())
    return {c["address"]: (c["action"], c["after"]) for c in plan_changes(plan)}


def test_plan_of_a_workspace_never_applied_creates_no_cache(make_workspace, cli):
    workspace = make_workspace(n=3)
    planned(cli, workspace)
    assert not (workspace / ".kfmops").exists()


def test_a_deleted_stale_or_corrupted_cache_is_rebuilt_and_the_plan_does_not_change(make_workspace, cli):
    workspace = make_workspace(n=6)
    code, _, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, err
    expected = planned(cli, workspace)
    built = entries(workspace)
    assert len(built) == len(list((workspace / "desired").glob("*.yaml"))) >= 1

    # deleted: rebuilt with the same entries
    for name in built:
        (workspace / FOLDER / name).unlink()
    assert planned(cli, workspace) == expected
    assert entries(workspace) == built

    # corrupted: not JSON, or JSON whose payload no longer matches its digest
    first, second = sorted(built)[0], sorted(built)[-1]
    (workspace / FOLDER / first).write_bytes(b"\x00 not json")
    line, body = built[second].split(b"\n", 1)
    documents = json.loads(body)
    documents[0][1] = "ds-999999"  # another name, same digest: must not be believed
    (workspace / FOLDER / second).write_bytes(line + b"\n" + json.dumps(documents).encode())
    assert planned(cli, workspace) == expected
    assert entries(workspace) == built

    # stale: a changed file gets a new entry and the old one is removed
    promote(workspace, 1.0, 7)
    changed = planned(cli, workspace)
    assert changed != expected and any(action == "update" for action, _ in changed.values())
    assert set(entries(workspace)).isdisjoint(built)
    assert len(entries(workspace)) == len(built)


def test_an_entry_of_another_kfmops_version_is_not_trusted(make_workspace, tmp_path):
    workspace = make_workspace(n=4)
    old = DesiredCache(tmp_path / "cache", program="kfmops 0.0.1")
    documents = load_documents_from(workspace / "desired", workspace, old)
    assert len(entries_in(tmp_path / "cache")) == 1
    # the old version's entry holds a wrong document under its own key: the current version never reads it
    (name,) = entries_in(tmp_path / "cache")
    forge(tmp_path / "cache" / name, None)
    assert len(load_documents_from(workspace / "desired", workspace, old)) == 1  # the old program trusts it
    current = DesiredCache(tmp_path / "cache")
    again = load_documents_from(workspace / "desired", workspace, current)
    assert [(d.name, d.spec) for d in again] == [(d.name, d.spec) for d in documents]
    assert [d.spec.lines for d in again] == [d.spec.lines for d in documents]
    assert name not in entries_in(tmp_path / "cache")  # pruned: only the current version's entry is left


def entries_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.json"))


def test_a_sealed_cache_takes_only_entries_sealed_with_its_own_secret(make_workspace, tmp_path):
    workspace = make_workspace(n=4)
    folder = tmp_path / "cache"
    documents = load_documents_from(workspace / "desired", workspace, DesiredCache(folder))
    (name,) = entries_in(folder)

    sealed = DesiredCache(folder, secret=b"the key")
    for forger in (None, b"another key"):
        forge(folder / name, forger)  # a forged entry, one document short, under the file's own key
        again = load_documents_from(workspace / "desired", workspace, sealed)
        assert [(d.name, d.spec) for d in again] == [(d.name, d.spec) for d in documents]
    assert digest_of((folder / name).read_bytes()).startswith("hmac-sha256:")  # parsed and rewritten
    forge(folder / name, b"the key")  # only a holder of the secret can make an entry the sealed cache takes
    assert len(load_documents_from(workspace / "desired", workspace, sealed)) == 1


def test_apply_checks_a_signed_plan_against_its_commit_through_the_sealed_cache_only(make_workspace, cli, monkeypatch):
    """With KFMOPS_PLAN_KEY, apply reads the plan's commit through the cache, and only through entries sealed
    with that key: forged entries sealed with it are believed (and refuse the plan), others are ignored."""
    key = {"KFMOPS_PLAN_KEY": "s3cret-plan-key"}
    workspace = make_workspace(n=6)
    commit_all(workspace)
    code, _, err = cli(workspace, "apply", "--auto-approve", env=key)
    assert code == 0, err
    promote(workspace, 1.0, 7)
    commit_all(workspace, "promote")
    code, _, err = cli(workspace, "plan", "--out", str(workspace / "p.plan"), env=key)
    assert code == 0, err
    built = entries(workspace)
    assert built and all(digest_of(body).startswith("hmac-sha256:") for body in built.values())

    def plant(secret: bytes | None) -> None:
        """Each entry one document short, under the file's own key, sealed with `secret` (None: unsealed)."""
        for name in built:
            forge(workspace / FOLDER / name, secret)

    monkeypatch.setenv("KFMOPS_PLAN_KEY", key["KFMOPS_PLAN_KEY"])  # in this process only: the key's derivation
    secret = derived_key("desired-document cache")
    plant(secret)  # what only a holder of the key can make: apply reads it, and the plan no longer matches
    code, _, err = cli(without_state_cache(workspace), "apply", str(workspace / "p.plan"), env=key)
    assert code != 0 and "does not match the desired state of commit" in err, err
    plant(None)  # what anyone who can write the workspace can make: ignored, the commit's files are parsed
    code, _, err = cli(without_state_cache(workspace), "apply", str(workspace / "p.plan"), env=key)
    assert code == 0, err
    assert all(digest_of(body).startswith("hmac-sha256:") for body in entries(workspace).values())
