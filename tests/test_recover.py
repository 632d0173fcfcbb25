"""Crash recovery through the real console script, checked against the local backend read directly.

An apply is killed with SIGKILL (KFMOPS_CRASH_AT) right after each WAL record and right after each batch
write. `kfmops recover` must then put every reference back at its value before the apply, and
`kfmops recover --forward` (on a copy of the same crashed workspace) must take every reference to its
value after it; kfmops' own records (state, history, WAL) must stay readable and agree with the backend.
"""

from __future__ import annotations

import json
import posixpath
import random
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Background, plan_changes, remove_dataset

from benchmarks.generate import generate, promote
from kfmops.stores import wal
from kfmops.stores.folder import FolderHistory, FolderStateStore
from kfmops.stores.state import State

SEED = 1854
KINDS = ("stac", "graph", "search", "cache")
BATCHES = len(KINDS)  # every scenario changes fewer references of a kind than one batch holds
RECORDS = 2 + 2 * BATCHES  # BEGIN, one INTENT/DONE pair per batch, COMMIT
CRASH_POINTS = [f"wal:{k}" for k in range(1, RECORDS + 1)] + [f"write:{b}" for b in range(BATCHES)]
COMMIT_POINT = f"wal:{RECORDS}"
# the mixed scenario (every point is covered by the promotion): nothing written yet, the first, third and
# last batch written but not logged DONE, two batches done, and COMMIT
MIXED_POINTS = ["wal:1", "write:0", "wal:5", "write:2", "write:3", COMMIT_POINT]
# where state and history are read through `kfmops state list/history --json` (elsewhere through the
# library calls those commands print): a batch written but not logged DONE, and COMMIT
CLI_READS = {"write:1", COMMIT_POINT}
VERSION_RELS = ("latest-version", "predecessor-version", "successor-version")


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def json_of(cli: Callable, workspace: Path, *args: str) -> Any:
    return json.loads(succeeded(cli(workspace, *args)))


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Run independent commands (on different workspaces, or read-only) at the same time."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def resolve(document: str, href: str) -> str:
    return posixpath.normpath(posixpath.join(posixpath.dirname(document), href))


def stac_value(stac: dict[str, Any], dataset: str) -> dict[str, Any] | None:
    """A dataset's STAC reference as kfmops records it, rebuilt from the parsed documents."""
    value: dict[str, Any] = {}
    children = [
        resolve("catalog.json", link["href"]) for link in stac["catalog.json"]["links"] if link["rel"] == "child"
    ]
    if mine := sorted(target for target in children if target.startswith(f"{dataset}/")):
        value["catalog.json"] = {"child": mine}
    for path, document in stac.items():
        if not path.startswith(f"{dataset}/"):
            continue
        fields: dict[str, Any] = {}
        for rel in VERSION_RELS:
            if targets := sorted(resolve(path, link["href"]) for link in document["links"] if link["rel"] == rel):
                fields[rel] = targets
        if document.get("deprecated") is not None:
            fields["deprecated"] = document["deprecated"]
        if fields:
            value[path] = fields
    return value or None


def live_value(live: dict[str, Any], kind: str, dataset: str) -> Any:
    """A dataset's reference of `kind` as kfmops records it, rebuilt from a live snapshot."""
    if kind == "stac":
        return stac_value(live["stac"], dataset)
    if kind == "graph":
        return next((row[6] for row in live["relationships"] if row[2:4] == (dataset, "CURRENT_VERSION")), None)
    if kind == "cache":
        return dict(live["kv"]).get(f"kfm:dataset:{dataset}:current")
    rows = [(index, is_write) for alias, index, is_write in live["aliases"] if alias == f"kfm-{dataset}"]
    if not rows:
        return None
    return {"indices": sorted(i for i, _ in rows), "write_index": next((i for i, w in rows if w), None)}


def disagreements(listing: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """Where `kfmops state list --json` and the backend differ: a recorded value that is not live, or a
    dataset reference that is live but not recorded."""
    recorded = {r["address"]: r["value"] for r in listing["resources"]}
    datasets = sorted({path.split("/")[0] for path in live["stac"] if "/" in path})
    problems = []
    for dataset, kind in ((d, k) for d in datasets for k in KINDS):
        address, value = f"dataset.{dataset}.{kind}", live_value(live, kind, dataset)
        if recorded.get(address) != value:
            problems.append(f"{address}: state says {recorded.get(address)!r}, backend holds {value!r}")
    return problems


@dataclass(frozen=True)
class Scenario:
    """A workspace just before an apply (the plan in plan.json) and what an uninterrupted apply leaves."""

    workspace: Path
    before: dict[str, Any]
    after: dict[str, Any]
    managed_before: dict[str, Any]
    managed_after: dict[str, Any]
    committed_before: list[str]


def values_of(listing: dict[str, Any]) -> dict[str, Any]:
    """{address: value} of a `state list --json` listing."""
    return {r["address"]: r["value"] for r in listing["resources"]}


def managed(cli: Callable, workspace: Path) -> dict[str, Any]:
    return values_of(json_of(cli, workspace, "state", "list", "--json"))


def committed(entries: list[dict[str, Any]]) -> list[str]:
    return [e["apply_id"] for e in entries if e["outcome"] == "committed"]


def without_fsync(workspace: Path, **settings: int) -> None:
    """Turn fsync off (and set other `apply:` settings) in a generated workspace's kfmops.yaml.

    fsync guards against power loss, which no test simulates: a SIGKILLed process leaves the page cache,
    and so every write it made, intact either way (SQLite documents the same for synchronous=OFF). The
    crash tests therefore kill exactly what they would kill with fsync on, many times faster.
    """
    config = workspace / "kfmops.yaml"
    lines = "".join(f"  {key}: {value}\n" for key, value in {"fsync": "false", **settings}.items())
    config.write_text(config.read_text() + "apply:\n" + lines)


def promote_everything(workspace: Path, cli: Callable) -> dict[str, int]:
    """3 datasets applied, then every version pointer moved: 12 updates over the four kinds."""
    generate(workspace, 3, 3, SEED)
    without_fsync(workspace)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promote(workspace, 1.0, SEED)
    return {"create": 0, "update": 12, "delete": 0, "no_op": 0}


def create_update_delete(workspace: Path, cli: Callable) -> dict[str, int]:
    """4 datasets, the last not applied yet; then every pointer moved and the third dataset removed."""
    generate(workspace, 4, 3, SEED)
    without_fsync(workspace)
    first = workspace / "first.json"
    succeeded(cli(workspace, "plan", "--exclude", "dataset.ds-000003", "--out", str(first)))
    succeeded(cli(workspace, "apply", str(first)))
    promote(workspace, 1.0, SEED)
    remove_dataset(workspace, "ds-000002")
    return {"create": 4, "update": 8, "delete": 4, "no_op": 0}


def prepare(build: Callable, cli: Callable, live_snapshot: Callable, folder: Path) -> Scenario:
    """Build a scenario's workspace and plan, and apply the plan once, uninterrupted, on a copy."""
    workspace = folder / "workspace"
    summary = build(workspace, cli)
    plan = json_of(cli, workspace, "plan", "--format", "json", "--out", str(workspace / "plan.json"))
    assert plan["summary"] == summary
    assert {c["kind"] for c in plan_changes(plan)} == set(KINDS)

    uninterrupted = folder / "uninterrupted"
    shutil.copytree(workspace, uninterrupted)
    succeeded(cli(uninterrupted, "apply", str(uninterrupted / "plan.json")))
    (state_before, history_before), (state_after, history_after) = records_of(
        cli, workspace, uninterrupted, via_cli=True
    )
    apply_id = history_after[-1]["apply_id"]
    records = wal.read_wal(uninterrupted / "state" / "wal" / "archive" / f"{apply_id}.jsonl")
    assert [r.type for r in records] == ["BEGIN", *["INTENT", "DONE"] * BATCHES, "COMMIT"], "crash points assume this"
    return Scenario(
        workspace,
        live_snapshot(workspace),
        live_snapshot(uninterrupted),
        values_of(state_before),
        values_of(state_after),
        committed(history_before),
    )


@pytest.fixture(scope="module")
def promotion(module_cli, live_snapshot, tmp_path_factory) -> Scenario:
    return prepare(promote_everything, module_cli, live_snapshot, tmp_path_factory.mktemp("promotion"))


@pytest.fixture(scope="module")
def mixed(module_cli, live_snapshot, tmp_path_factory) -> Scenario:
    return prepare(create_update_delete, module_cli, live_snapshot, tmp_path_factory.mktemp("mixed"))


def records_of(cli: Callable, *workspaces: Path, via_cli: bool) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(`state list --json`, `history --json`) of each workspace, all read at once; without `via_cli`, from
    the library calls those commands print (a console script costs half a second to start)."""
    if not via_cli:
        return [
            (listing(FolderStateStore(w / "state").load()), FolderHistory(w / "state").entries()) for w in workspaces
        ]
    reads = [
        lambda w=w, a=a: json_of(cli, w, *a)
        for w in workspaces
        for a in (("state", "list", "--json"), ("history", "--json"))
    ]
    found = together(*reads)
    return list(zip(found[::2], found[1::2], strict=True))


def listing(state: State | None) -> dict[str, Any]:
    """What `kfmops state list --json` prints for `state`."""
    if state is None:
        return {"lineage": None, "serial": 0, "resources": []}
    rows = [
        {"address": a, "kind": m.reference.kind, "backend": m.reference.backend, "value": m.value}
        for a, m in sorted(state.resources.items())
    ]
    return {"lineage": state.lineage, "serial": state.serial, "resources": rows}


def assert_records_agree(
    workspace: Path,
    records: tuple[dict[str, Any], list[dict[str, Any]]],
    live: dict[str, Any],
    values: dict[str, Any],
    apply_id: str,
    outcome: str,
) -> None:
    """state list and history say what the backend holds, and the crashed apply is settled once."""
    listing, entries = records
    assert values_of(listing) == values
    assert disagreements(listing, live) == []
    assert [e["apply_id"] for e in entries].count(apply_id) == 1
    assert (entries[-1]["apply_id"], entries[-1]["outcome"]) == (apply_id, outcome)
    assert entries[-1]["serial"] == listing["serial"]
    assert not list((workspace / "state" / "wal").glob("*.jsonl")), "no unfinished WAL is left"
    archived = wal.read_wal(workspace / "state" / "wal" / "archive" / f"{apply_id}.jsonl")
    assert archived[-1].type == ("COMMIT" if outcome == "committed" else "ABORTED")


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_recover_after_sigkill_during_a_promotion_restores_or_completes_it(
    promotion, crash_at, module_cli, live_snapshot, tmp_path
):
    crash_and_recover(promotion, crash_at, module_cli, live_snapshot, tmp_path)


@pytest.mark.parametrize("crash_at", MIXED_POINTS)
def test_recover_after_sigkill_during_creates_updates_and_deletes_restores_or_completes_them(
    mixed, crash_at, module_cli, live_snapshot, tmp_path
):
    crash_and_recover(mixed, crash_at, module_cli, live_snapshot, tmp_path)


def crash_and_recover(
    scenario: Scenario, crash_at: str, cli: Callable, live_snapshot: Callable, tmp_path: Path
) -> None:
    """Kill the scenario's apply at `crash_at`; recover one copy backward and another forward."""
    crashed = tmp_path / "crashed"
    shutil.copytree(scenario.workspace, crashed)
    code, out, err = cli(crashed, "apply", str(crashed / "plan.json"), env={"KFMOPS_CRASH_AT": crash_at})
    assert code == -signal.SIGKILL, (code, out, err)

    (unfinished,) = (crashed / "state" / "wal").glob("*.jsonl")
    records = wal.read_wal(unfinished)
    if crash_at.startswith("wal:"):
        assert records[-1].seq == int(crash_at.removeprefix("wal:"))
    else:
        assert (records[-1].type, records[-1].fields["batch"]) == ("INTENT", int(crash_at.removeprefix("write:")))
    apply_id = records[0].fields["apply_id"]
    finished = crash_at == COMMIT_POINT  # COMMIT is durable: the apply happened; recover only settles it
    forward = tmp_path / "forward"
    shutil.copytree(crashed, forward)

    def refuse_then_recover() -> str:
        if not finished:
            at_crash = live_snapshot(crashed)
            mutating = (
                ("apply", str(crashed / "plan.json"))
                if CRASH_POINTS.index(crash_at) % 2
                else ("rollback", "--last", "--auto-approve", "--auto-approve")
            )
            code, out, err = cli(crashed, *mutating)
            assert code == 6, (mutating, code, out, err)
            assert "kfmops recover" in err
            assert live_snapshot(crashed) == at_crash, f"a refused {mutating[0]} changed something"
        return succeeded(cli(crashed, "recover"))

    back, on = together(refuse_then_recover, lambda: succeeded(cli(forward, "recover", "--forward")))
    undone, completed = records_of(cli, crashed, forward, via_cli=crash_at in CLI_READS)
    if finished:
        assert "nothing to recover" in back
        assert live_snapshot(crashed) == scenario.after
        assert_records_agree(crashed, undone, scenario.after, scenario.managed_after, apply_id, "committed")
    else:
        assert f"every reference of {apply_id} is back at its value before the apply" in back
        assert live_snapshot(crashed) == scenario.before
        assert_records_agree(crashed, undone, scenario.before, scenario.managed_before, apply_id, "aborted")
        assert committed(undone[1]) == scenario.committed_before
        assert f"{apply_id} was completed as planned" in on
    assert live_snapshot(forward) == scenario.after
    assert_records_agree(forward, completed, scenario.after, scenario.managed_after, apply_id, "committed")


def test_a_crash_inside_recover_is_recovered_by_running_recover_again(make_workspace, cli, live_snapshot):
    workspace = make_workspace(n=3)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promote(workspace, 1.0, SEED)
    plan = workspace / "plan.json"
    succeeded(cli(workspace, "plan", "--out", str(plan)))
    before = live_snapshot(workspace)
    assert cli(workspace, "apply", str(plan), env={"KFMOPS_CRASH_AT": "wal:8"})[0] == -signal.SIGKILL

    # recover appends FAILED (9), then COMPENSATE/COMPENSATED per batch, newest first: die once it has
    # restored the second batch (2) but not yet logged COMPENSATED for it
    code, out, err = cli(workspace, "recover", env={"KFMOPS_CRASH_AT": "write:2"})
    assert code == -signal.SIGKILL, (code, out, err)
    (unfinished,) = (workspace / "state" / "wal").glob("*.jsonl")
    assert [r.type for r in wal.read_wal(unfinished)][8:] == ["FAILED", "COMPENSATE", "COMPENSATED", "COMPENSATE"]

    code, out, err = cli(workspace, "recover", "--forward")
    assert code == 5, (code, out, err)
    assert "already started undoing itself" in err
    succeeded(cli(workspace, "recover"))
    assert live_snapshot(workspace) == before


def test_an_apply_settled_again_after_a_crash_in_its_bookkeeping_is_listed_once(make_workspace, cli):
    workspace = make_workspace(n=2)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    (entry,) = json_of(cli, workspace, "history", "--json")
    state = json.loads((workspace / "state" / "state.json").read_text())

    # where a crash after the history record was written but before its index line leaves an apply:
    # state saved, record written, index line missing, WAL not yet archived
    (workspace / "state" / "history.jsonl").write_text("")
    archived = workspace / "state" / "wal" / "archive" / f"{entry['apply_id']}.jsonl"
    shutil.move(archived, workspace / "state" / "wal" / archived.name)

    assert "nothing to recover" in succeeded(cli(workspace, "recover"))
    (settled,) = json_of(cli, workspace, "history", "--json")
    assert {k: settled[k] for k in ("apply_id", "outcome", "serial")} == {
        "apply_id": entry["apply_id"],
        "outcome": "committed",
        "serial": state["serial"],
    }
    assert json.loads((workspace / "state" / "state.json").read_text()) == state, "settling twice changes no state"
    assert "Rollback complete!" in succeeded(cli(workspace, "rollback", "--last", "--auto-approve", "--auto-approve"))


# Random-time kills of a large apply ------------------------------------------------------------------


def new_wal(process: Background, folder: Path) -> Path | None:
    """The WAL file an apply creates, once it exists; None if the process ended first."""
    while process.running():
        if found := sorted(folder.glob("*.jsonl")):
            return found[0]
        time.sleep(0.002)
    return None


def wait_for_commit(process: Background, path: Path) -> None:
    """Wait until the apply writing `path` has logged COMMIT (or ended)."""
    while process.running() and path.exists():
        with open(path, "rb") as log:
            log.seek(max(0, path.stat().st_size - 512))
            if b'"type":"COMMIT"' in log.read():
                return
        time.sleep(0.002)


def wal_grew(process: Background, path: Path) -> bool:
    """Wait until a recover appends its first record to `path` (False if the process ended first)."""
    size = path.stat().st_size
    while process.running():
        if not path.exists() or path.stat().st_size > size:
            return path.exists()
        time.sleep(0.002)
    return False


def kill(process: Background) -> bool:
    """SIGKILL the process if it still runs; True when the kill is what ended it."""
    process.signal(signal.SIGKILL)
    return process.finish()[0] == -signal.SIGKILL


@pytest.mark.slow
def test_random_sigkills_of_a_2000_reference_apply_and_its_recovery_leave_every_reference_as_before(
    make_workspace, cli, cli_process, live_snapshot
):
    workspace = make_workspace(n=500)
    without_fsync(workspace, batch_size=100)
    wal_dir = workspace / "state" / "wal"

    first = cli_process(workspace, "apply", "--auto-approve")
    path = new_wal(first, wal_dir)
    assert path is not None, first.finish()
    started = time.monotonic()
    wait_for_commit(first, path)
    window = time.monotonic() - started  # how long 2,000 references take from BEGIN to COMMIT on this machine
    succeeded(first.finish())

    promote(workspace, 1.0, SEED)
    plan = workspace / "plan.json"
    changes = json_of(cli, workspace, "plan", "--format", "json", "--out", str(plan))["summary"]
    assert changes["update"] >= 2000
    before, managed_before = live_snapshot(workspace), managed(cli, workspace)

    rng = random.Random(SEED)
    landed = []
    for attempt in range(3):
        process = cli_process(workspace, "apply", str(plan))
        path = new_wal(process, wal_dir)
        assert path is not None, process.finish()
        time.sleep(rng.uniform(0.0, 0.6) * window)
        landed.append(kill(process))
        assert landed[-1], "the apply ended before it could be killed"
        if attempt < 2:  # then kill the first recover too, while it undoes the batches
            process = cli_process(workspace, "recover")
            if wal_grew(process, path):
                time.sleep(rng.uniform(0.0, 0.5) * window)
            landed.append(kill(process))
        assert "is back at its value before the apply" in succeeded(cli(workspace, "recover"))
        assert live_snapshot(workspace) == before, f"after round {attempt}"

    assert 3 <= sum(landed) <= 5
    assert managed(cli, workspace) == managed_before
    assert "Apply complete!" in succeeded(cli(workspace, "apply", str(plan))), "the plan still applies after all that"
