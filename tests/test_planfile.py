"""The plan file: written by `plan --out`, shown and applied only when its digest (and signature) verify."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, local_rows, plan_changes
from jsonschema import Draft202012Validator, FormatChecker

from benchmarks.generate import promote
from kfmops.plans import codec, planfile
from kfmops.plans.model import Action


def canonical_digest(body: dict[str, Any]) -> str:
    """The documented digest, computed independently: sha256 of the canonical JSON of all but digest/signature."""
    unsigned = {k: v for k, v in body.items() if k not in {"digest", "signature"}}
    text = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def schema_errors(body: dict[str, Any]) -> list[str]:
    schema = json.loads((ROOT / "kfmops" / "data" / "schemas" / "plan.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]


@pytest.fixture
def planned(make_workspace, cli) -> tuple[Path, Path]:
    """A workspace of 3 datasets and a saved plan that creates their 12 references."""
    workspace = make_workspace(n=3)
    plan = workspace / "p.json"
    code, _out, err = cli(workspace, "plan", "--out", str(plan))
    assert code == 0, err
    return workspace, plan


def test_show_round_trips_the_saved_plan(planned, cli):
    workspace, plan = planned
    saved = plan.read_text(encoding="utf-8")
    code, out, err = cli(workspace, "show", str(plan), "--format", "json")
    assert code == 0, err
    assert json.loads(out) == json.loads(saved)
    body = json.loads(saved)
    assert body["digest"] == canonical_digest(body)
    assert "signature" not in body
    assert body["summary"] == {"create": 12, "update": 0, "delete": 0, "no_op": 0}


def test_plan_with_every_action_validates_against_the_schema(make_workspace, cli):
    workspace = make_workspace(n=4)
    assert cli(workspace, "apply", "--auto-approve")[0] == 0
    desired = workspace / "desired" / "datasets-00000.yaml"
    documents = list(yaml.safe_load_all(desired.read_text()))
    spec = documents[0]["spec"]
    spec["version"] = next(v["id"] for v in spec["versions"] if v["id"] != spec["version"])  # update
    del documents[1]  # delete
    desired.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    (workspace / "desired" / "raw.yaml").write_text(  # create
        "apiVersion: kfmops/v1\nkind: CacheKey\nmetadata:\n  name: tiles\nspec:\n  key: kfm:tiles:current\n"
        "  value: '2024'\n  invalidate: ['kfm:tiles:cache:*']\n"
    )
    code, out, err = cli(workspace, "plan", "--format", "json")
    assert code == 0, err
    body = json.loads(out)
    assert body["summary"] == {"create": 1, "update": 4, "delete": 4, "no_op": 8}
    assert {c["action"] for c in plan_changes(body)} == {"create", "update", "delete", "no-op"}
    assert schema_errors(body) == []
    assert body["digest"] == canonical_digest(body)
    for change in plan_changes(body):
        expected = (
            "sha256:"
            + hashlib.sha256(
                json.dumps(change["before"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            ).hexdigest()[:16]
        )
        assert change["precondition"] == expected


def test_no_ops_are_stored_as_rows_and_read_back_as_the_same_changes(make_workspace, cli):
    workspace = make_workspace(n=4)
    assert cli(workspace, "apply", "--auto-approve")[0] == 0
    assert 0 < promote(workspace, 0.5, 1) < 4
    plan = workspace / "p.json"
    code, _out, err = cli(workspace, "plan", "--out", str(plan))
    assert code == 0, err
    body = json.loads(plan.read_text())
    rows = [c for c in body["changes"] if isinstance(c, list)]
    objects = [c for c in body["changes"] if isinstance(c, dict)]
    assert len(rows) == body["summary"]["no_op"] > 0 and all(len(row) == 10 for row in rows)
    assert objects and all(c["action"] != "no-op" for c in objects)
    assert schema_errors(body) == []
    # read back: each row is a no-op whose before and after are its value, in its place among the changes
    changes = planfile.read(plan).changes
    assert [codec.change_to_dict(c) for c in changes] == plan_changes(body)
    assert all(c.before == c.after for c in changes if c.action is Action.NOOP)

    first = body["changes"].index(rows[0])
    for where, forged in ((1, "volcano"), (4, "not a locator"), (9, 7)):  # kind, locator, before_version
        edited = json.loads(plan.read_text())
        edited["changes"][first][where] = forged
        edited["digest"] = canonical_digest(edited)
        copy = workspace / "forged.json"
        copy.write_text(json.dumps(edited))
        code, out, err = cli(workspace, "show", str(copy))
        assert code == 1 and f"plan refused: changes/{first}/{where}: " in err, err
        assert "Traceback" not in out + err


def flip(text: str, anchor: str, offset: int = 0) -> str:
    """`text` with one character changed: the one `offset` characters after the first match of `anchor`
    (a regular expression, so that it finds its place whatever the file's JSON layout)."""
    match = re.search(anchor, text)
    assert match, anchor
    position = match.end() + offset
    original = text[position]
    replacement = "0" if original != "0" else "1"
    if original.isalpha():
        replacement = "x" if original != "x" else "y"
    return text[:position] + replacement + text[position + 1 :]


TAMPERING = {
    "after-value": lambda t: flip(t, r'"after":\s*"ds-'),
    "precondition": lambda t: flip(t, r'"precondition":\s*"sha256:', 3),
    "state-serial": lambda t: flip(t, r'"serial":\s*', 0),
    "reason-display-only": lambda t: flip(t, r'"reason":\s*"'),
    "digest": lambda t: flip(t, r'"digest":\s*"sha256:', 10),
}


def test_a_changed_byte_makes_show_and_apply_refuse(planned, cli):
    workspace, plan = planned
    original = plan.read_text(encoding="utf-8")
    for name, tamper in TAMPERING.items():
        changed = tamper(original)
        assert sum(a != b for a, b in zip(original, changed, strict=True)) == 1, f"{name}: exactly one byte changed"
        copy = workspace / f"{name}.json"
        copy.write_text(changed, encoding="utf-8")
        commands = [("apply", str(copy))]
        if name in {"after-value", "digest"}:
            commands.append(("show", str(copy)))
        for code, out, err in cli.concurrently(workspace, *commands):
            assert code == 1, (name, code, out, err)
            assert "plan refused" in err, name
            assert "digest does not match" in err, name
            assert "Traceback" not in out + err
    assert local_rows(workspace) == {"relationships": set(), "aliases": set(), "kv": set()}, "nothing was applied"
    assert cli(workspace, "apply", str(plan))[0] == 0, "the untouched plan still applies"


def test_a_plan_that_is_not_json_is_refused(planned, cli):
    workspace, plan = planned
    plan.write_text(plan.read_text()[:-20])
    code, out, err = cli(workspace, "apply", str(plan))
    assert code == 1
    assert "plan refused: it is not valid JSON" in err
    assert "Traceback" not in out + err


def test_unknown_format_version_is_refused_even_with_a_matching_digest(planned, cli):
    workspace, plan = planned
    body = json.loads(plan.read_text())
    commands = []
    for version in (1, 3, "2"):  # 1: a plan of an older kfmops, whose no-ops were objects
        body["format_version"] = version
        body["digest"] = canonical_digest(body)
        copy = workspace / f"format-{version}.json"
        copy.write_text(json.dumps(body, indent=2))
        commands.append(("apply" if version == 3 else "show", str(copy)))
    for (_command, name), (code, _out, err) in zip(commands, cli.concurrently(workspace, *commands), strict=True):
        assert code == 1, name
        assert "plan refused" in err
        assert "format_version" in err and "is not 2, the only one this kfmops" in err, err


def test_a_recomputed_digest_hides_nothing_from_a_signed_plan(make_workspace, cli):
    workspace = make_workspace(n=2)
    key = {"KFMOPS_PLAN_KEY": "correct horse battery staple"}
    code, _out, err = cli(workspace, "plan", "--out", str(workspace / "signed.json"), env=key)
    assert code == 0, err
    plan = workspace / "signed.json"
    body = json.loads(plan.read_text())
    expected = hmac.new(key["KFMOPS_PLAN_KEY"].encode(), body["digest"].encode(), hashlib.sha256).hexdigest()
    assert body["signature"] == f"hmac-sha256:{expected}"
    assert schema_errors(body) == []

    code, out, err = cli(workspace, "show", str(plan), "--format", "json", env=key)
    assert code == 0, err
    assert json.loads(out) == body

    body["changes"][0]["after"] = {"catalog.json": {"child": ["elsewhere/collection.json"]}}
    body["digest"] = canonical_digest(body)
    forged = workspace / "forged.json"
    forged.write_text(json.dumps(body, indent=2))
    code, out, err = cli(workspace, "apply", str(forged), env=key)
    assert code == 1
    assert "plan refused" in err
    assert "signature does not verify" in err


def test_signed_plan_is_refused_with_another_key_and_an_unsigned_one_when_a_key_is_set(make_workspace, cli):
    workspace = make_workspace(n=2)
    signed, unsigned = workspace / "signed.json", workspace / "unsigned.json"
    assert cli(workspace, "plan", "--out", str(signed), env={"KFMOPS_PLAN_KEY": "key-one"})[0] == 0
    assert cli(workspace, "plan", "--out", str(unsigned))[0] == 0
    assert "signature" not in json.loads(unsigned.read_text())

    other_key = cli(workspace, "apply", str(signed), env={"KFMOPS_PLAN_KEY": "key-two"})
    unsigned_with_key = cli(workspace, "apply", str(unsigned), env={"KFMOPS_PLAN_KEY": "key-one"})
    for code, out, err in (other_key, unsigned_with_key):
        assert code == 1, (code, out, err)
        assert "plan refused" in err
        assert "signature does not verify with KFMOPS_PLAN_KEY" in err
        assert "key-one" not in out + err and "key-two" not in out + err, "never print the key"
    assert local_rows(workspace)["kv"] == set()

    code, _out, err = cli(workspace, "apply", str(signed), env={"KFMOPS_PLAN_KEY": "key-one"})
    assert code == 0, err
    assert len(local_rows(workspace)["kv"]) == 2


def test_a_plan_for_another_workspace_is_stale(make_workspace, cli):
    first, second = make_workspace(n=2), make_workspace(n=2)
    assert cli(first, "plan", "--out", str(first / "p.json"))[0] == 0
    assert cli(second, "init")[0] == 0
    code, out, err = cli(second, "apply", str(first / "p.json"))
    assert code == 5, (code, out, err)
    assert "lineage" in err
    assert local_rows(second)["kv"] == set()


def test_a_plan_is_verified_over_its_bytes_and_a_member_after_the_seal_is_refused(planned, cli, monkeypatch):
    """A plan file as `plan --out` wrote it is verified by hashing its bytes (the plan is not serialized again);
    the same plan re-indented still verifies through its canonical JSON; a member appended after the seal,
    which JSON would let override the signed one, is refused."""
    workspace, plan = planned
    text = plan.read_text(encoding="utf-8")
    reindented = workspace / "indented.json"
    reindented.write_text(json.dumps(json.loads(text), indent=2))
    appended = workspace / "appended.json"
    appended.write_text(text[:-2] + ',"changes":[]}\n')
    assert json.loads(appended.read_text())["changes"] == []
    code, _out, err = cli(workspace, "apply", str(appended))
    assert code == 1 and "digest does not match" in err, err
    assert cli(workspace, "show", str(reindented))[0] == 0

    def serialized(value: Any) -> str:
        raise AssertionError("the plan was serialized again to check its digest")

    monkeypatch.setattr(planfile, "digest", serialized)
    assert planfile.read(plan).plan_id == json.loads(text)["plan_id"]
    with pytest.raises(AssertionError, match="serialized again"):
        planfile.read(reindented)


def test_a_plan_file_that_cannot_be_written_is_a_clear_error_and_leaves_nothing(make_workspace, cli):
    """A full disk (injected) or a folder that is a file: one message naming the file, exit 1, no temporary file."""
    workspace = make_workspace(n=2)
    full = cli(workspace, "plan", "--out", str(workspace / "p.plan"), env={"KFMOPS_FAULT": "*/p.plan@write:1:ENOSPC"})
    (workspace / "afile").write_text("")
    folder = cli(workspace, "plan", "--out", str(workspace / "afile" / "p.plan"))
    for (code, out, err), name in ((full, "p.plan"), (folder, "afile/p.plan")):
        assert code == 1, (code, out, err)
        assert f"cannot write the plan file {workspace / name}" in err and "internal error" not in err, err
    assert not [p.name for p in workspace.iterdir() if p.name.startswith(".p.plan")]
    assert not (workspace / "p.plan").exists()
