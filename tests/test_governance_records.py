"""What operations leave behind, through the real CLI: ledger entries (reason, approver, commit, CI run,
consents, denied attempts, the apply a rollback undoes), a keyed chain that a forger cannot re-hash,
PROV documents that merge across operations, OpenLineage events that follow the 2-0-2 spec with one job
per run, and denials counted by rule family in the metrics.

The workspace is a copy of examples/kansas in a git repository of its own, so that commit subjects
and the commit a plan was made at are real.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import subprocess
import uuid
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import prov
import pytest
import yaml
from conftest import ROOT, commit_all
from jsonschema import Draft202012Validator, FormatChecker
from prov.model import PROV, ProvDocument

CI = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "kfm/desired", "GITHUB_RUN_ID": "4242"}
CI_RUN_URL = "https://github.com/kfm/desired/actions/runs/4242"
LEDGER = Path("docs/reports/audit/data_provenance_ledger.jsonl")
FROZEN = """\
package kfmops

import rego.v1

deny contains {"rule": "org.frozen", "msg": "changes are frozen", "fix": "wait for the thaw"} if {
	count(input.changes) > 0
}
"""


def git(workspace: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=ana@kfm", "-c", "user.name=Ana", *args],
        cwd=workspace,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def kansas(tmp_path: Path) -> Path:
    """examples/kansas in a git repository of its own, whose remote is a GitHub URL with credentials."""
    workspace = tmp_path / "kansas"
    shutil.copytree(ROOT / "examples" / "kansas", workspace, ignore=shutil.ignore_patterns("state", "plans", "docs"))
    (workspace / ".gitignore").write_text("state/\nplans/\ndocs/\n")
    git(workspace, "init", "-q", "-b", "main")
    git(workspace, "remote", "add", "origin", "https://ci-bot:s3cr3t-t0ken@github.com/kfm/kansas-desired.git")
    commit_all(workspace, "Kansas example")
    return workspace


def set_version(workspace: Path, dataset: str, version: str) -> None:
    """Point `dataset` at `version` in its desired YAML (a one-line change, as a pull request makes)."""
    for file in sorted((workspace / "desired").glob("*.yaml")):
        text = file.read_text()
        match = re.search(rf"^  name: {re.escape(dataset)}\n(?:.*\n)*?  version: (\S+)$", text, re.M)
        if match:
            file.write_text(text[: match.start(1)] + version + text[match.end(1) :])
            return
    raise AssertionError(f"no dataset {dataset}")


def entries(workspace: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (workspace / LEDGER).read_text().splitlines()]


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (out, err)
    assert "Traceback" not in out + err
    return out


def test_the_ledger_says_why_who_approved_from_which_commit_and_ci_run(cli, kansas: Path) -> None:
    first = commit_all(kansas, "Publish the Kansas layers")  # nothing changed: the commit is only a subject
    ok(cli(kansas, "apply", "--auto-approve", "--approved-by", "mara@kfm", env=CI))
    set_version(kansas, "landcover", "v2021")
    second = commit_all(kansas, "Promote land cover to NLCD 2021")
    ok(cli(kansas, "plan", "--out", "plans/promote.json"))
    ok(cli(kansas, "apply", "plans/promote.json"))
    ok(cli(kansas, "rollback", "--last", "--auto-approve", "--reason", "v2021 tiles misclassify wetlands, INC-77"))

    published, promoted, undone = entries(kansas)
    assert published["reason"] == "Publish the Kansas layers"  # the commit subject when no --reason
    assert published["git_commit"] == first
    assert published["ci_run_url"] == CI_RUN_URL
    assert published["approved_by"] == "mara@kfm"
    declared = {
        d["metadata"]["name"]: d["spec"]["care"]["consent"]
        for d in yaml.safe_load_all((kansas / "desired" / "history.yaml").read_text())
        if d and d["kind"] == "Dataset" and "consent" in d["spec"].get("care", {})
    }
    assert published["consents"]["treaty-1854"] == declared["treaty-1854"]  # as the desired document holds it
    assert published["consents"]["kaw-allotments"]["authority"] == "Kaw Nation"
    assert "landcover" not in published["consents"]  # open data holds no consent

    assert (promoted["reason"], promoted["git_commit"]) == ("Promote land cover to NLCD 2021", second)
    assert "ci_run_url" not in promoted and "approved_by" not in promoted
    assert undone["op_type"] == "rollback"
    assert undone["rolls_back"] == promoted["apply_id"]
    assert undone["reason"] == "v2021 tiles misclassify wetlands, INC-77"
    ok(cli(kansas, "ledger", "verify"))
    assert "s3cr3t" not in (kansas / LEDGER).read_text()


def test_denied_attempts_are_ledgered_and_counted_by_rule_family(cli, kansas: Path) -> None:
    ok(cli(kansas, "apply", "--auto-approve"))
    # A version without provenance: the bundled provenance rule denies the promotion.
    document = kansas / "desired" / "basemaps.yaml"
    document.write_text(
        document.read_text().replace(
            '    - id: v1\n      provenance: {source: "NRCS SSURGO 2020", activity: "mosaic counties"}\n',
            "    - id: v1\n",
        )
    )
    set_version(kansas, "soils", "v1")
    commit_all(kansas, "Soils back to the 2020 survey")
    code, out, err = cli(kansas, "apply", "--auto-approve", "--reason", "try the old survey")
    assert code == 3, (out, err)

    # The workspace's own policy freezes everything: a saved plan and a rollback are refused too.
    set_version(kansas, "soils", "v2")
    (kansas / "org-policies").mkdir()
    (kansas / "org-policies" / "frozen.rego").write_text(FROZEN)
    config = yaml.safe_load((kansas / "kfmops.yaml").read_text())
    config["policy"] = {"paths": ["org-policies"]}
    (kansas / "kfmops.yaml").write_text(yaml.safe_dump(config))
    commit_all(kansas, "Freeze changes")
    code, out, err = cli(kansas, "rollback", "--last", "--auto-approve")
    assert code == 3, (out, err)
    assert "org.frozen" in out + err

    applied, denied_apply, denied_rollback = entries(kansas)
    assert applied["outcome"] == "committed"
    assert (denied_apply["op_type"], denied_apply["outcome"]) == ("apply", "denied")
    assert denied_apply["reason"] == "try the old survey"
    assert denied_apply["wal_ids"] == [] and denied_apply["plan_id"].startswith("plan-")
    assert {f["rule"].split(".")[0] for f in denied_apply["denied_by"]} == {"provenance"}
    assert any(f["address"] == "dataset.soils" for f in denied_apply["denied_by"])
    assert (denied_rollback["op_type"], denied_rollback["outcome"]) == ("rollback", "denied")
    assert denied_rollback["rolls_back"] == applied["apply_id"]
    assert [f["rule"] for f in denied_rollback["denied_by"]] == ["org.frozen"]
    assert denied_rollback["reason"] == "Freeze changes"
    ok(cli(kansas, "ledger", "verify"))

    counted: Counter[tuple[str, str, str]] = Counter()
    for line in (kansas / "state" / "telemetry" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["name"] == "kfm.ops_policy_denials":
            for point in record["points"]:
                labels = point["attributes"]
                counted[(labels["command"], labels["outcome"], labels["rule_family"])] += point["value"]
    assert counted[("apply", "committed", "none")] == 0
    assert counted[("apply", "denied", "provenance")] >= 1
    assert counted[("rollback", "denied", "org")] == 1


def rehash(entries_: list[dict[str, Any]], key: bytes | None) -> list[dict[str, Any]]:
    """The chain recomputed as a forger would: with `key` (HMAC, the right marker) or plain sha256."""
    previous, forged = "0" * 64, []
    for entry in entries_:
        body = {k: v for k, v in entry.items() if k not in {"hash", "prev_hash", "chain"}} | {"prev_hash": previous}
        if key is not None:
            body["chain"] = "hmac-sha256"
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        digest = hmac.new(key, text, hashlib.sha256).hexdigest() if key else hashlib.sha256(text).hexdigest()
        forged.append(body | {"hash": digest})
        previous = digest
    return forged


def test_a_keyed_ledger_cannot_be_re_hashed_without_the_key(cli, kansas: Path) -> None:
    key = {"KFMOPS_LEDGER_KEY": "k3y-only-the-operators-hold"}
    ok(cli(kansas, "apply", "--auto-approve", env=key))
    set_version(kansas, "soils", "v1")
    commit_all(kansas, "Soils back to the 2020 survey")
    ok(cli(kansas, "apply", "--auto-approve", env=key))
    ok(cli(kansas, "ledger", "verify", env=key))
    stored = entries(kansas)
    assert all(entry["chain"] == "hmac-sha256" for entry in stored)
    assert "k3y-only" not in (kansas / LEDGER).read_text()

    code, out, _ = cli(kansas, "ledger", "verify")  # without the key a keyed chain cannot be vouched for
    assert code == 1 and "set the key (KFMOPS_LEDGER_KEY)" in out

    edited = [stored[0] | {"reason": "nothing to see here"}, stored[1]]
    for forged in (rehash(edited, None), rehash(edited, b"a guessed key"), rehash(edited[:1], None)):
        (kansas / LEDGER).write_text("".join(json.dumps(entry) + "\n" for entry in forged))
        head = {"seq": forged[-1]["seq"], "hash": forged[-1]["hash"]}
        (kansas / "state" / "ledger-head.json").write_text(json.dumps(head))  # the forger moves the head too
        code, out, err = cli(kansas, "ledger", "verify", env=key)
        assert code == 1, (out, err)
        assert "line 1 (seq 1)" in out

    (kansas / LEDGER).write_text("".join(json.dumps(entry) + "\n" for entry in stored))
    (kansas / "state" / "ledger-head.json").write_text(json.dumps({"seq": 2, "hash": stored[1]["hash"]}))
    ok(cli(kansas, "ledger", "verify", env=key))  # the untouched chain still verifies


# PROV and OpenLineage across ten operations ---------------------------------------------------------


def run_event_validator() -> Draft202012Validator:
    schema = json.loads((ROOT / "tests" / "schemas" / "openlineage-2-0-2-run-event.json").read_text())
    Draft202012Validator.check_schema(schema)
    formats = FormatChecker()
    formats.checks("date-time", raises=ValueError)(lambda value: bool(datetime.fromisoformat(value).tzinfo))
    formats.checks("uri", raises=ValueError)(lambda value: bool(urlsplit(value).scheme))
    formats.checks("uuid", raises=ValueError)(lambda value: bool(uuid.UUID(value)))
    return Draft202012Validator(schema, format_checker=formats)


@pytest.mark.slow
def test_ten_operations_merge_into_one_consistent_provenance(cli, kansas: Path) -> None:
    ok(cli(kansas, "apply", "--auto-approve"))  # 1 apply: create every reference
    set_version(kansas, "landcover", "v2021")
    commit_all(kansas, "Promote land cover to NLCD 2021")
    ok(cli(kansas, "apply", "--auto-approve"))  # 2 apply: update
    ok(cli(kansas, "rollback", "--last", "--auto-approve"))  # 3 rollback of 2
    ok(cli(kansas, "rollback", "--last", "--auto-approve"))  # 4 rollback of the rollback
    ok(cli(kansas, "hotfix", "dataset.hydrography", "--set", "version=v2", "--reason", "NHD v3 reaches broken"))  # 5
    set_version(kansas, "hydrography", "v2")
    set_version(kansas, "soils", "v1")
    commit_all(kansas, "Soils back to the 2020 survey")
    for mode in ((), ("--forward",)):  # 6 recover (undo), 7 recover --forward
        ok(cli(kansas, "plan", "--out", "plans/soils.json"))
        code, out, err = cli(kansas, "apply", "plans/soils.json", env={"KFMOPS_CRASH_AT": "write:0"})
        assert code != 0, (out, err)
        ok(cli(kansas, "recover", *mode))
    set_version(kansas, "county-boundaries", "v1")
    commit_all(kansas, "County boundaries of 2010")
    ok(cli(kansas, "apply", "--auto-approve", env=CI | {"KFMOPS_APPROVED_BY": "mara@kfm"}))  # 8 apply from CI
    ok(cli(kansas, "rollback", "--last", "--auto-approve"))  # 9 rollback of 8
    set_version(kansas, "precipitation-normals", "v1981-2010")
    commit_all(kansas, "Older precipitation normals")
    ok(cli(kansas, "apply", "--auto-approve"))  # 10 apply

    ledger = entries(kansas)
    assert [e["op_type"] for e in ledger] == [
        "apply", "apply", "rollback", "rollback", "hotfix", "recover", "recover", "apply", "rollback", "apply"
    ]  # fmt: skip
    documents = [prov.read(kansas / e["lineage_refs"]["prov_document"], format="json") for e in ledger]
    merged = ProvDocument()
    for document in documents:
        merged.update(document)
    unified = merged.unified()

    generations: Counter[str] = Counter()
    for record in unified.get_records():
        if record.get_type() == PROV["Entity"]:
            for name, values in attributes_of(record).items():
                assert len(values) == 1, f"{record.identifier} has {len(values)} values of {name}: {values}"
        if record.get_type() == PROV["Generation"]:
            generations[str(next(iter(record.get_attribute("prov:entity"))))] += 1
    assert generations and max(generations.values()) == 1, generations.most_common(3)

    versions = {str(r.identifier) for r in unified.get_records() if r.get_type() == PROV["Entity"]}
    assert {"kfm:dataset/landcover@v2019", "kfm:dataset/landcover@v2021"} <= versions
    informed = {
        (str(next(iter(r.get_attribute("prov:informed")))), str(next(iter(r.get_attribute("prov:informant")))))
        for r in unified.get_records()
        if r.get_type() == PROV["Communication"]
    }
    for entry in ledger:
        if entry["op_type"] == "rollback":
            assert (f"kfm:apply/{entry['apply_id']}", f"kfm:apply/{entry['rolls_back']}") in informed
    delegations = [r for r in unified.get_records() if r.get_type() == PROV["Delegation"]]
    assert {
        (str(next(iter(d.get_attribute("prov:delegate")))), str(next(iter(d.get_attribute("prov:responsible")))))
        for d in delegations
    } == {(f"kfm:ci-run/{CI_RUN_URL}", "kfm:person/mara@kfm")}
    assert unified.serialize(format="provn")  # converts to PROV-N

    events = [json.loads(line) for line in (kansas / "state/lineage/openlineage.jsonl").read_text().splitlines()]
    validator = run_event_validator()
    jobs: defaultdict[str, set[str]] = defaultdict(set)
    kinds: defaultdict[str, list[str]] = defaultdict(list)
    for event in events:
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(event)]
        assert problems == [], (event["job"]["name"], problems)
        jobs[event["run"]["runId"]].add(event["job"]["name"])
        kinds[event["run"]["runId"]].append(event["eventType"])
        assert event["job"]["namespace"] == "kfmops://github.com/kfm/kansas-desired"
        assert event["job"]["facets"]["jobType"]["jobType"] == event["job"]["name"].removeprefix("kfmops.").upper()
    assert all(len(names) == 1 for names in jobs.values()), jobs
    assert all(k[0] == "START" and k[-1] in {"COMPLETE", "FAIL"} and len(k) == 2 for k in kinds.values()), kinds
    assert len(jobs) == 12  # ten operations, and the two interrupted applies that recover finished
    recovers = [e for e in events if e["job"]["name"] == "kfmops.recover"]
    assert {e["run"]["facets"]["parent"]["job"]["name"] for e in recovers} == {"kfmops.apply"}
    promotion = next(e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == "kfmops.apply"
                     and any(i["name"] == "dataset.landcover.search" for i in e.get("inputs", [])))  # fmt: skip
    [output] = [o for o in promotion["outputs"] if o["name"] == "dataset.landcover.search"]
    [input_] = [i for i in promotion["inputs"] if i["name"] == "dataset.landcover.search"]
    assert (input_["facets"]["version"]["datasetVersion"], output["facets"]["version"]["datasetVersion"]) == (
        "v2019",
        "v2021",
    )
    assert "s3cr3t" not in (kansas / "state/lineage/openlineage.jsonl").read_text()


def attributes_of(record: Any) -> dict[str, set[str]]:
    values: defaultdict[str, set[str]] = defaultdict(set)
    for name, value in record.attributes:
        values[str(name)].add(str(value))
    return values
