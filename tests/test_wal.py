"""The write-ahead log: a hash chain that exposes edits, a torn last line that is dropped, and group commit.

The chain is checked here with hashlib and json, not with kfmops' own helpers, so that a bug in how the
WAL hashes cannot hide itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.generate import promote
from kfmops.errors import InputError
from kfmops.stores import wal
from kfmops.stores.folder import FolderStateStore

GENESIS = "0" * 64
KINDS = ("stac", "graph", "search", "cache")


def write_log(path: Path) -> list[bytes]:
    """A finished four-record WAL as an apply of one batch writes it; returns its lines."""
    log = wal.WalWriter(path, "apply-test")
    log.append(wal.WalStep.BEGIN, plan_id="plan-test", changes=[])
    log.append(wal.WalStep.INTENT, batch=0, backend="local", addresses=["a", "b"], observed={"a": None, "b": "v1"})
    log.append(wal.WalStep.DONE, batch=0)
    log.append(wal.WalStep.COMMIT)
    log.close()
    return path.read_bytes().splitlines(keepends=True)


def digest(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def broken(path: Path) -> InputError:
    with pytest.raises(InputError) as caught:
        wal.read_wal(path)
    return caught.value


def test_every_record_is_hashed_and_chained_to_the_one_before(tmp_path):
    path = tmp_path / "apply-test.jsonl"
    lines = [json.loads(line) for line in write_log(path)]

    assert [(r["seq"], r["type"], r["apply_id"]) for r in lines] == [
        (1, "BEGIN", "apply-test"),
        (2, "INTENT", "apply-test"),
        (3, "DONE", "apply-test"),
        (4, "COMMIT", "apply-test"),
    ]
    assert [r["prev_hash"] for r in lines] == [GENESIS] + [r["hash"] for r in lines[:-1]]
    assert all(r["hash"] == digest(r) for r in lines)
    assert lines[1]["observed"] == {"a": None, "b": "v1"}, "the before values are in the INTENT record"

    records = wal.read_wal(path)
    assert [(r.seq, r.type) for r in records] == [(r["seq"], r["type"]) for r in lines]
    assert wal.is_finished(records)
    assert wal.is_finished(wal.read_wal(path))


@pytest.mark.parametrize("cut", [1, 20, -2, -1], ids=["one-byte", "mid-record", "no-brace", "no-newline"])
def test_a_torn_last_line_is_dropped_and_appending_resumes_after_the_last_whole_record(tmp_path, cut):
    path = tmp_path / "apply-test.jsonl"
    lines = write_log(path)
    path.write_bytes(b"".join(lines[:3]) + lines[3][:cut])  # died while writing COMMIT

    records = wal.read_wal(path)
    assert [r.type for r in records] == ["BEGIN", "INTENT", "DONE"]
    assert not wal.is_finished(records), "without its COMMIT the apply is unfinished"

    log = wal.WalWriter(path, "apply-test", records=records)  # as recover does
    log.append(wal.WalStep.FAILED, error="interrupted")
    log.close()
    resumed = wal.read_wal(path)
    assert [(r.seq, r.type) for r in resumed] == [(1, "BEGIN"), (2, "INTENT"), (3, "DONE"), (4, "FAILED")]
    assert resumed[3].fields["prev_hash"] == records[2].fields["hash"]


def test_an_edited_middle_record_is_an_error_naming_the_file_and_line(tmp_path):
    path = tmp_path / "apply-test.jsonl"
    lines = write_log(path)
    record = json.loads(lines[1])
    record["observed"]["b"] = "v2"  # someone "fixes" the before value that recover would restore
    path.write_bytes(lines[0] + (json.dumps(record, separators=(",", ":")) + "\n").encode() + b"".join(lines[2:]))

    error = broken(path)
    (diagnostic,) = error.diagnostics
    assert (diagnostic.file, diagnostic.line) == (str(path), 2)
    assert "breaks the hash chain" in diagnostic.summary


def test_an_edit_that_recomputes_its_own_hash_is_caught_by_the_next_record(tmp_path):
    path = tmp_path / "apply-test.jsonl"
    lines = write_log(path)
    record = json.loads(lines[1])
    record["observed"]["b"] = "v2"
    record["hash"] = digest(record)
    path.write_bytes(lines[0] + (json.dumps(record, separators=(",", ":")) + "\n").encode() + b"".join(lines[2:]))

    assert broken(path).diagnostics[0].line == 3


@pytest.mark.parametrize(
    ("arrange", "line", "why"),
    [
        (lambda ls: [ls[0], ls[2], ls[3]], 2, "breaks the hash chain"),  # a record removed
        (lambda ls: [ls[0], ls[2], ls[1], ls[3]], 2, "breaks the hash chain"),  # two records swapped
        (lambda ls: [ls[0], ls[1][:30] + b"\n", *ls[2:]], 2, "is not valid JSON"),  # a torn line that is not last
    ],
    ids=["removed", "reordered", "torn-in-the-middle"],
)
def test_a_removed_reordered_or_garbled_middle_record_is_an_error(tmp_path, arrange, line, why):
    path = tmp_path / "apply-test.jsonl"
    path.write_bytes(b"".join(arrange(write_log(path))))

    (diagnostic,) = broken(path).diagnostics
    assert diagnostic.line == line
    assert why in diagnostic.summary


def test_group_commit_logs_one_intent_and_done_pair_per_batch(make_workspace, cli):
    workspace = make_workspace(n=10)
    config = workspace / "kfmops.yaml"
    config.write_text(config.read_text() + "apply:\n  batch_size: 3\n")
    code, out, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, (out, err)

    (path,) = (workspace / "state" / "wal" / "archive").glob("*.jsonl")
    records = wal.read_wal(path)
    batches = 4 * math.ceil(10 / 3)  # per kind (4 kinds of 10 references), cut into batches of 3
    assert Counter(r.type for r in records) == {"BEGIN": 1, "INTENT": batches, "DONE": batches, "COMMIT": 1}
    assert len(records) == 2 + 2 * batches, "one fsynced record per batch step, not per reference"

    intents = [r for r in records if r.type == wal.WalStep.INTENT]
    assert [r.fields["batch"] for r in intents] == list(range(batches))
    announced = [address for r in intents for address in r.fields["addresses"]]
    assert sorted(announced) == sorted(f"dataset.ds-{i:06d}.{k}" for i in range(10) for k in KINDS)
    for intent in intents:
        assert 1 <= len(intent.fields["addresses"]) <= 3
        assert len({address.rsplit(".", 1)[1] for address in intent.fields["addresses"]}) == 1, "one kind per batch"
        assert set(intent.fields["observed"]) == set(intent.fields["addresses"])
        done = records[records.index(intent) + 1]
        assert (done.type, done.fields["batch"]) == ("DONE", intent.fields["batch"])


def test_a_small_change_logs_only_what_it_changes_and_still_counts_the_rest(make_workspace, cli):
    """The WAL, history and ledger of an apply of K of N references hold K changes (O(K), not O(N)); the
    references left out are counted, and state still records every one of them."""
    workspace = make_workspace(n=10)
    assert cli(workspace, "apply", "--auto-approve")[0] == 0
    promote(workspace, 0.2, 7)
    code, out, err = cli(workspace, "apply", "--auto-approve")
    assert code == 0, (out, err)

    ledger = workspace / "docs" / "reports" / "audit" / "data_provenance_ledger.jsonl"
    entry = json.loads(ledger.read_text().splitlines()[-1])
    moved = entry["changes"]["update"]
    assert 0 < len(moved) < 40
    assert entry["changes"]["no_op"] == 40 - len(moved)
    (path,) = sorted((workspace / "state" / "wal" / "archive").glob("*.jsonl"))[-1:]
    begin = wal.read_wal(path)[0]
    assert sorted(c["address"] for c in begin.fields["changes"]) == sorted(moved)
    assert begin.fields["unchanged"] == 40 - len(moved)
    history = json.loads((workspace / "state" / "history.jsonl").read_text().splitlines()[-1])
    assert history["summary"] == {"create": 0, "update": len(moved), "delete": 0, "no_op": 40 - len(moved)}
    state = json.loads((workspace / "state" / "state.json").read_text())
    assert len(state["resources"]) == 40
    code, out, err = cli(workspace, "plan", "--detailed-exitcode")
    assert code == 0, (out, err)


# The WAL as recover meets it after a real crash ----------------------------------------------------


@pytest.fixture
def crashed(make_workspace, cli, live_snapshot) -> tuple[Path, dict, Path]:
    """A workspace whose promotion was SIGKILLed after WAL record 5 (two batches done): (workspace,
    backend before the apply, unfinished WAL)."""
    workspace = make_workspace(n=2)
    assert cli(workspace, "apply", "--auto-approve")[0] == 0
    before = live_snapshot(workspace)
    promote(workspace, 1.0, 1854)
    plan = workspace / "plan.json"
    assert cli(workspace, "plan", "--out", str(plan))[0] == 0
    code, out, err = cli(workspace, "apply", str(plan), env={"KFMOPS_CRASH_AT": "wal:5"})
    assert code == -signal.SIGKILL, (code, out, err)
    (path,) = (workspace / "state" / "wal").glob("*.jsonl")
    return workspace, before, path


def test_recover_resumes_a_wal_whose_last_line_was_torn(crashed, cli, live_snapshot):
    workspace, before, path = crashed
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(path.read_bytes() + lines[-1][: len(lines[-1]) // 2])  # as if killed writing record 6

    code, out, err = cli(workspace, "recover")
    assert code == 0, (out, err)
    assert live_snapshot(workspace) == before
    records = wal.read_wal(workspace / "state" / "wal" / "archive" / path.name)
    steps = ["DONE", "FAILED", "COMPENSATE", "COMPENSATED", "COMPENSATE", "COMPENSATED", "ABORTED"]
    assert [r.type for r in records][4:] == steps
    assert [r.seq for r in records] == list(range(1, len(records) + 1))


def test_an_edited_wal_record_stops_recover_and_every_mutating_command(crashed, cli, live_snapshot):
    workspace, _, path = crashed
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[3])
    assert record["type"] == "INTENT"
    record["observed"] = dict.fromkeys(record["observed"])  # "undo" would now delete every reference
    lines[3] = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    path.write_bytes(b"".join(lines))
    at_crash = live_snapshot(workspace)

    for command in (("recover",), ("recover", "--forward"), ("apply", str(workspace / "plan.json"))):
        code, out, err = cli(workspace, *command)
        assert code == 1, (command, code, out, err)
        assert f"{path}:4: WAL record breaks the hash chain" in err
        assert "Traceback" not in out + err
    assert live_snapshot(workspace) == at_crash


def test_the_state_store_reads_a_file_once_but_never_misses_a_replacement_or_an_edit(make_workspace, cli):
    """The folder store keeps what it parsed by the file's identity (device, inode, size, mtime, ctime): a second
    load of the same file is not parsed again, but a replaced, edited, corrupted or deleted file always is."""
    workspace = make_workspace(n=2)
    assert cli(workspace, "apply", "--auto-approve")[0] == 0
    store = FolderStateStore(workspace / "state")
    first = store.load()
    again = store.load()
    assert first is not None and again is not None and again is not first
    assert again.resources.keys() == first.resources.keys() and again.serial == first.serial
    first.serial = 99  # one load's state is its own to change, as a commit changes it
    first.resources.pop(next(iter(first.resources)))
    first.applied_plans.append("plan-x")
    first.hotfixes["dataset.x.cache"] = {"value": "v9"}
    later = store.load()
    assert later is not None and later.serial == again.serial and later.resources == again.resources
    assert (later.applied_plans, later.hotfixes) == (again.applied_plans, again.hotfixes)

    path = workspace / "state" / "state.json"
    raw = json.loads(path.read_text())
    store.save(replace(first, serial=7))  # replaced by a rename: a new inode
    assert store.load().serial == 7
    with path.open("r+") as edited:  # an edit in place, same inode
        text = edited.read().replace('"serial":7', '"serial":8')
        edited.seek(0)
        edited.write(text)
        edited.truncate()
    assert store.load().serial == 8
    with path.open("r+") as torn:
        torn.truncate(len(json.dumps(raw)) // 2)
    with pytest.raises(InputError, match="not valid JSON"):
        store.load()
    path.unlink()
    assert store.load() is None
