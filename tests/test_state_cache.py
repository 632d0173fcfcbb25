"""The desired-state cache (kfmops/desired/state_cache.py) and apply's review through the work tree.

Invariant: a plan made through the cache is the plan made by parsing and expanding every file, whatever
happened to the cache (deleted, torn, forged, of another input); apply's check of a plan against its
commit believes only entries sealed with KFMOPS_PLAN_KEY, and reads the work tree only when its desired
files are the commit's, byte for byte. Through the real CLI on generated workspaces in git.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from conftest import commit_all, plan_changes

from benchmarks.generate import promote
from kfmops.desired.state_cache import FILE, StateCache
from kfmops.engine.plan import load_desired
from kfmops.gitops import repo
from kfmops.io import sealed
from kfmops.io.sealed import write_sealed
from kfmops.plans.planfile import derived_key
from kfmops.workspace import load_workspace

KEY = {"KFMOPS_PLAN_KEY": "s3cret-plan-key"}


def planned(cli, workspace: Path, env: dict[str, str] | None = None) -> list[dict[str, object]]:
    code, _out, err = cli(workspace, "plan", "--format", "json", "--out", str(workspace / "p.json"), env=env)
    assert code == 0, err
    plan = json.loads((workspace / "p.json").read_text())
    return [
        {key: change[key] for key in ("address", "action", "before", "after", "source", "version")}
        for change in plan_changes(plan)
    ] + [plan["desired_digest"], plan["datasets"]]


def forge(workspace: Path, secret: bytes | None, digest: str | None = None) -> None:
    """Rewrite the entry so that every dataset's cache reference points at a version git never named, sealed
    with `secret` (None: unkeyed, what anyone who can write the workspace can do); `digest`: the digest of the
    desired state it claims to hold (else the one it held)."""
    line, body = (workspace / FILE).read_bytes().split(b"\n", 1)
    header = json.loads(line)
    del header["digest"]
    payload = json.loads(body)
    for reference in payload["references"]:
        if reference[1] == "cache":
            reference[5] = "v-forged"
    payload["digest"] = digest or payload["digest"]
    write_sealed(workspace / FILE, header, json.dumps(payload).encode(), secret)


def test_a_plan_through_the_cache_is_the_plan_of_every_file_parsed_whatever_befell_the_cache(make_workspace, cli):
    workspace = make_workspace(n=6)
    commit_all(workspace)
    assert cli(workspace, "apply", "--auto-approve")[0] == 0
    promote(workspace, 0.5, 3)
    parsed = planned(cli, workspace)  # no entry yet for this desired state: parsed and expanded, then kept
    assert (workspace / FILE).is_file()
    assert planned(cli, workspace) == parsed, "read from the cache"

    forge(workspace, None)  # the cache is what a plan reads: a forged entry with a matching digest is believed
    assert any(change["after"] == "v-forged" for change in planned(cli, workspace)[:-2])

    spoiled = {
        "deleted": lambda file: file.unlink(),
        "torn": lambda file: file.write_bytes(file.read_bytes()[:-100]),
        "not json": lambda file: file.write_bytes(b"\x00\n{"),
        "edited, digest kept": lambda file: file.write_bytes(file.read_bytes().replace(b'"v', b'"w', 1)),
        "another input": lambda file: file.write_bytes(file.read_bytes().replace(b'"key":"', b'"key":"0', 1)),
    }
    for name, spoil in spoiled.items():
        planned(cli, workspace)  # rebuilt from the files
        spoil(workspace / FILE)
        assert planned(cli, workspace) == parsed, name

    promote(workspace, 1.0, 4)  # another desired state: another key, expanded again
    again = planned(cli, workspace)
    assert again != parsed and planned(cli, workspace) == again


def test_apply_checks_a_signed_plan_through_sealed_entries_only(make_workspace, cli, monkeypatch):
    workspace = make_workspace(n=6)
    commit_all(workspace)
    assert cli(workspace, "apply", "--auto-approve", env=KEY)[0] == 0
    promote(workspace, 1.0, 7)
    commit_all(workspace, "promote")
    code, _, err = cli(workspace, "plan", "--out", str(workspace / "p.plan"), env=KEY)
    assert code == 0, err

    monkeypatch.setenv("KFMOPS_PLAN_KEY", KEY["KFMOPS_PLAN_KEY"])  # in this process only: the key's derivation
    # only a key holder can: apply believes it, and refuses (a plan whose desired digest it held would pass:
    # the key holder could have signed that plan too)
    forge(workspace, derived_key("desired-state cache"), "sha256:" + "0" * 64)
    code, _, err = cli(workspace, "apply", str(workspace / "p.plan"), env=KEY)
    assert code == 5 and "does not match the desired state of commit" in err, (code, err)
    forge(workspace, None)  # anyone can: ignored, and the plan is checked against the commit's files
    code, _, err = cli(workspace, "apply", str(workspace / "p.plan"), env=KEY)
    assert code == 0, err


def test_a_signed_plan_made_at_this_state_is_checked_by_its_desired_digest_anything_else_in_full(
    make_workspace, cli, monkeypatch
):
    """Apply derives a plan's changes again from its commit, unless kfmops vouches for them: the plan is signed,
    the state has not moved since it was made, and the sealed desired-state entry of the commit names the
    plan's desired digest. Then reading that digest is the whole check; in any other case it is made in full,
    and a work tree changed since a plan of it is refused either way."""
    from kfmops.engine import review
    from kfmops.engine.session import Session
    from kfmops.plans import planfile

    workspace = make_workspace(n=6)
    commit_all(workspace)
    assert cli(workspace, "apply", "--auto-approve", env=KEY)[0] == 0
    promote(workspace, 1.0, 7)
    commit_all(workspace, "promote")
    assert cli(workspace, "plan", "--out", str(workspace / "p.plan"), env=KEY)[0] == 0
    monkeypatch.setenv("KFMOPS_PLAN_KEY", KEY["KFMOPS_PLAN_KEY"])
    signed = planfile.read(workspace / "p.plan")
    loads: list[int] = []
    load = review.load_desired
    monkeypatch.setattr(review, "load_desired", lambda *a, **k: loads.append(1) or load(*a, **k))

    def derivations(plan=signed, moved: int = 0) -> int:
        """How often checking `plan` (against the state moved by `moved` serials) expanded a desired state."""
        loads.clear()
        with Session(load_workspace(workspace), "apply", read_only=True) as session:
            state = session.state()
            state.serial += moved
            review.check_against_desired(session, plan, state)
        return len(loads)

    assert derivations() == 0, "vouched for by the sealed digest"
    assert derivations(moved=1) == 1, "the state moved since the plan"
    assert derivations(replace(signed, desired_digest=None)) == 1
    monkeypatch.delenv("KFMOPS_PLAN_KEY")
    assert derivations() == 1, "unsigned: anyone could have written it"
    monkeypatch.setenv("KFMOPS_PLAN_KEY", KEY["KFMOPS_PLAN_KEY"])
    (workspace / FILE).unlink()
    assert derivations() == 1, "no entry: derived from the files, and kept"
    assert derivations() == 0

    promote(workspace, 1.0, 8)  # a plan of the work tree, which is edited again before it is applied
    assert cli(workspace, "plan", "--out", str(workspace / "d.plan"), env=KEY)[0] == 0
    promote(workspace, 1.0, 9)
    code, _, err = cli(workspace, "apply", str(workspace / "d.plan"), "--allow-dirty", env=KEY)
    assert code == 5 and "does not match the desired state of the work tree" in err, (code, err)
    assert cli(workspace, "apply", str(workspace / "p.plan"), env=KEY)[0] == 0


def test_a_review_reads_the_work_tree_only_when_it_holds_the_commit_byte_for_byte(make_workspace):
    workspace = make_workspace(n=101)  # two files of datasets
    commit = commit_all(workspace)
    config = load_workspace(workspace)
    desired = config.desired_dir
    files = sorted(desired.glob("*.yaml"))
    assert len(files) >= 2

    def work_tree() -> list[tuple[Path, str]]:
        return [(file, file.read_text(encoding="utf-8")) for file in sorted(desired.rglob("*.yaml"))]

    assert repo.holds(desired, commit, work_tree())
    text = files[0].read_text(encoding="utf-8")
    changes = {
        "a file edited": lambda: files[0].write_text(text + "\n", encoding="utf-8"),
        "a file added": lambda: (desired / "extra.yaml").write_text(text, encoding="utf-8"),
        "a file removed": lambda: files[1].unlink(),
        "a file renamed": lambda: files[1].rename(desired / "renamed.yaml"),
    }
    for name, change in changes.items():
        change()
        assert not repo.holds(desired, commit, work_tree()), name
        subprocess.run(["git", "checkout", "-q", "--", "."], cwd=workspace, check=True)
        subprocess.run(["git", "clean", "-qfd"], cwd=workspace, check=True)
        assert repo.holds(desired, commit, work_tree()), name
    assert not repo.holds(desired, "no-such-ref", work_tree())

    # what a review of the commit reads: the work tree's names while it holds the commit, the commit's after
    (workspace / "state").mkdir(exist_ok=True)
    sources = {r.source.split(":")[0] for r in load_desired(config, commit, review=True).references.values()}
    assert sources == {f.relative_to(workspace).as_posix() for f in files}
    files[0].write_text(text + "\n# edited\n", encoding="utf-8")
    sources = {r.source.rsplit(":", 1)[0] for r in load_desired(config, commit, review=True).references.values()}
    assert all(source.startswith(f"{commit}:") for source in sources), sources


def test_a_state_json_would_not_give_back_exactly_is_not_kept(make_workspace, tmp_path):
    workspace = make_workspace(n=2)
    desired = load_desired(load_workspace(workspace))
    cache = StateCache(tmp_path / "state.json")
    cache.put("k", desired)
    assert cache.get("k") == desired and cache.get("k").digest() == desired.digest()
    for value in ({1: "an integer key"}, float("nan"), __import__("datetime").date(2021, 6, 1)):
        (tmp_path / "state.json").unlink(missing_ok=True)
        name = next(iter(desired.datasets))
        desired.datasets[name]["title"] = value
        cache.put("k", desired)
        assert not (tmp_path / "state.json").exists(), value


def test_no_cache_outlives_a_change_to_the_program_that_wrote_it(tmp_path, monkeypatch):
    """The program digest that names every cache entry covers the code and schemas, not only the version: a
    development build that changes how documents are parsed or expanded never reads the entries of another."""
    package = tmp_path / "kfmops"
    shutil.copytree(sealed.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(sealed, "PACKAGE", package)
    digests = []
    for change in (
        lambda: None,
        lambda: (package / "desired" / "datasets.py").write_text("# changed\n", encoding="utf-8"),
        lambda: (package / "data" / "schemas" / "dataset.schema.json").write_text("{}", encoding="utf-8"),
    ):
        change()
        sealed.program_digest.cache_clear()
        digests.append(sealed.program_digest())
    sealed.program_digest.cache_clear()
    assert len(set(digests)) == 3


def test_a_write_removes_what_a_writer_killed_before_its_rename_left(tmp_path):
    file = tmp_path / "cache" / "desired-state.json"
    file.parent.mkdir()
    left = [file.parent / ".desired-state.json.k1ll3d_0", file.parent / ".desired-state.json.abcdefgh"]
    kept = [file.parent / ".other.json.abcdefgh", file.parent / "desired-state.json.bak"]
    for path in left + kept:
        path.write_bytes(b'{"torn')
    write_sealed(file, {"format": 1}, b"{}")
    assert [path.exists() for path in left + kept] == [False, False, True, True]
    assert file.read_bytes().endswith(b"\n{}")
