"""Checkpoints through the real console script: the checks a Dataset version declares run on every version a
pointer would move to, at plan and again at apply; their results are in the plan file, the renders and the
ledger; a failed one blocks exactly its dataset's changes (exit 3), and a plan file's word for them is never
taken."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from conftest import plan_changes

from kfmops.io.canonical import digest

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stac-schemas"
DESIRED = "desired/datasets-00000.yaml"


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def checked_workspace(make_workspace: Any) -> Path:
    """Three datasets of three versions, with the offline STAC schemas configured for stac_valid."""
    workspace = make_workspace(n=3)
    config = workspace / "kfmops.yaml"
    config.write_text(config.read_text() + f"checks:\n  stac_schemas: {SCHEMAS}\n")
    return workspace


def datasets(workspace: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((workspace / DESIRED).read_text()))


def others(workspace: Path, name: str) -> list[str]:
    """The versions of `name` its pointer is not at."""
    spec = next(d["spec"] for d in datasets(workspace) if d["metadata"]["name"] == name)
    return [v["id"] for v in spec["versions"] if v["id"] != spec["version"]]


def publish(workspace: Path, name: str, version: str, *, checksum_of: bytes | None = None) -> None:
    """Give a version's data assets (data, metadata) and two items, before anything points at it; the data
    asset's file:checksum is that of `checksum_of` when given (a corrupt file), else of the file itself."""
    folder = workspace / "data" / "catalog" / name / version
    tiles = f"tiles of {name}@{version}\n".encode()
    (folder / "data.bin").write_bytes(tiles)
    (folder / "meta.xml").write_text("<metadata/>\n")
    collection = json.loads((folder / "collection.json").read_text())
    collection["assets"] = {
        "data": {
            "href": "./data.bin",
            "roles": ["data"],
            "file:checksum": "1220" + hashlib.sha256(checksum_of or tiles).hexdigest(),
        },
        "metadata": {"href": "./meta.xml", "roles": ["metadata"]},
    }
    for number in (1, 2):
        item = {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": f"{name}-{version}-{number}",
            "geometry": None,
            "properties": {"datetime": "2020-01-01T00:00:00Z"},
            "links": [],
            "assets": {},
        }
        (folder / f"item-{number}.json").write_text(json.dumps(item))
        collection["links"].append({"rel": "item", "href": f"./item-{number}.json"})
    (folder / "collection.json").write_text(json.dumps(collection, indent=2) + "\n")


def declare(workspace: Path, name: str, version: str, checks: dict[str, Any] | None = None) -> None:
    """Point `name` at `version` in the desired state, with the checks that version declares."""
    documents = datasets(workspace)
    for document in documents:
        if document["metadata"]["name"] == name:
            document["spec"]["version"] = version
            for entry in document["spec"]["versions"]:
                if entry["id"] == version and checks:
                    entry["checks"] = checks
    (workspace / DESIRED).write_text(yaml.safe_dump_all(documents, sort_keys=False))


def python(code: str, timeout: float = 30) -> dict[str, Any]:
    return {"command": {"argv": [sys.executable, "-c", code], "timeout": timeout}}


def ledger(cli: Any, workspace: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in succeeded(cli(workspace, "ledger", "show", "--json")).splitlines()]


def test_every_check_type_passes_is_recorded_and_runs_again_at_apply(make_workspace, cli):
    workspace = checked_workspace(make_workspace)
    target = others(workspace, "ds-000000")[0]
    publish(workspace, "ds-000000", target)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    reads_document = "import json, os; assert json.load(open(os.environ['KFMOPS_CHECK_DOCUMENT']))['assets']['data']"
    declare(
        workspace,
        "ds-000000",
        target,
        {
            "stac_valid": True,
            "asset_roles": ["data", "metadata"],
            "checksum": {"asset": "data"},
            "min_items": 2,
            **python(reads_document),
        },
    )

    plan = workspace / "checked.json"
    out = succeeded(cli(workspace, "plan", "--out", str(plan)))
    assert f"checkpoint checksum passed: dataset.ds-000000@{target}: file:checksum of data match" in out, out
    results = json.loads(plan.read_text())["checks"]
    assert [(r["dataset"], r["version"], r["check"], r["passed"]) for r in results] == [
        ("ds-000000", target, check, True)
        for check in ("stac_valid", "asset_roles", "checksum", "min_items", "command")
    ], results
    assert "2 item(s), at least 2" in results[3]["detail"]
    markdown = succeeded(cli(workspace, "show", str(plan), "--format", "markdown"))
    assert "**Checkpoints**" in markdown and f"| passed | `ds-000000` | `{target}` | checksum |" in markdown

    # the data changes after the plan was made: apply checks again and refuses, nothing moves
    live_data = workspace / "state" / "local" / "stac" / "ds-000000" / target / "data.bin"
    original = live_data.read_bytes()
    live_data.write_bytes(b"truncated")
    code, _, err = cli(workspace, "apply", str(plan))
    assert code == 3, err
    assert "a failed checkpoint blocks this apply; nothing was changed" in err and "checkpoint.checksum" in err, err
    live_data.write_bytes(original)

    assert "Apply complete!" in succeeded(cli(workspace, "apply", str(plan)))
    entries = ledger(cli, workspace)
    assert entries[-2]["outcome"] == "denied" and [c["passed"] for c in entries[-2]["checks"]] == [
        True,
        True,
        False,
        True,
        True,
    ]
    assert entries[-1]["outcome"] == "committed"
    assert [(c["check"], c["passed"]) for c in entries[-1]["checks"]] == [(r["check"], True) for r in results]
    # the version is current now: nothing moves to it, so nothing is checked again
    assert json.loads(succeeded(cli(workspace, "plan", "--format", "json")))["checks"] == []


def test_a_failed_checksum_blocks_exactly_that_versions_changes(make_workspace, cli, live_snapshot):
    workspace = checked_workspace(make_workspace)
    bad = others(workspace, "ds-000000")[0]
    publish(workspace, "ds-000000", bad, checksum_of=b"what the publisher meant to ship\n")
    succeeded(cli(workspace, "apply", "--auto-approve"))
    before = live_snapshot(workspace)
    declare(workspace, "ds-000000", bad, {"checksum": {"asset": ["data"]}, "asset_roles": ["data"]})
    declare(workspace, "ds-000001", others(workspace, "ds-000001")[0])

    plan = workspace / "blocked.json"
    code, out, err = cli(workspace, "plan", "--out", str(plan))
    assert code == 3, (out, err)
    assert f"checkpoint checksum FAILED: dataset.ds-000000@{bad}: asset 'data' (./data.bin) has sha256" in out, out
    saved = json.loads(plan.read_text())
    moving = {c["address"]: c["dataset"] for c in plan_changes(saved) if c["action"] != "no-op"}
    assert set(moving.values()) == {"ds-000000", "ds-000001"}
    [failed] = [r for r in saved["checks"] if not r["passed"]]
    assert failed["check"] == "checksum"
    assert sorted(failed["blocks"]) == sorted(a for a, d in moving.items() if d == "ds-000000")
    assert not any(moving[a] == "ds-000001" for a in failed["blocks"]), "another dataset's changes are not blocked"
    [finding] = [f for f in saved["policy"]["findings"] if f["severity"] == "deny"]
    assert finding["rule"] == "checkpoint.checksum" and finding["address"] == "dataset.ds-000000"
    assert "--exclude dataset.ds-000000" in finding["fix"]

    code, _, err = cli(workspace, "apply", "--auto-approve")
    assert code == 3, err
    assert "a failed checkpoint blocks this apply" in err and "dataset.ds-000000.stac" in err, err
    assert "dataset.ds-000001" not in err, err
    denied = ledger(cli, workspace)[-1]
    assert denied["outcome"] == "denied" and denied["denied_by"][0]["rule"] == "checkpoint.checksum"
    assert [(c["check"], c["passed"]) for c in denied["checks"]] == [("asset_roles", True), ("checksum", False)]

    # a forged plan file: its checks say passed, its policy allows, its digest is recomputed
    forged = workspace / "forged.json"
    body = {k: v for k, v in saved.items() if k != "digest"}
    body["checks"] = [{**r, "passed": True, "detail": "ok"} for r in saved["checks"]]
    for result in body["checks"]:
        result.pop("blocks", None)
    body["policy"] = {"decision": "allow", "findings": []}
    forged.write_text(json.dumps(body | {"digest": digest(body)}))
    code, _, err = cli(workspace, "apply", str(forged))
    assert code == 3 and "checkpoint.checksum" in err, err
    assert live_snapshot(workspace) == before, "nothing moved"

    # the other dataset's changes go ahead without it
    rest = workspace / "rest.json"
    succeeded(cli(workspace, "plan", "--exclude", "dataset.ds-000000", "--out", str(rest)))
    succeeded(cli(workspace, "apply", str(rest)))
    assert live_snapshot(workspace) != before
    code, _, _ = cli(workspace, "plan", "--detailed-exitcode")
    assert code == 3, "the blocked version is still refused"


def test_a_command_check_that_times_out_or_fails_blocks_with_its_reason(make_workspace, cli):
    workspace = checked_workspace(make_workspace)
    declare(workspace, "ds-000000", others(workspace, "ds-000000")[0], python("import time; time.sleep(60)", 1))
    complain = "import sys; sys.stderr.write('looking\\nno tiles for 1854\\n'); sys.exit(4)"
    declare(workspace, "ds-000001", others(workspace, "ds-000001")[0], python(complain))

    started = time.monotonic()
    code, out, err = cli(workspace, "plan", "--format", "json")
    assert code == 3, err
    assert time.monotonic() - started < 30, "the sleeping command was killed at its timeout"
    results = {r["dataset"]: r for r in json.loads(out)["checks"]}
    assert not results["ds-000000"]["passed"] and "timed out after 1 s" in results["ds-000000"]["detail"]
    assert not results["ds-000001"]["passed"]
    assert results["ds-000001"]["detail"].endswith("exited 4: no tiles for 1854"), results
    assert "ds-000002" not in results, "a version declaring no checks has none"
