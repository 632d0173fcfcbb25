"""The governance ledger: a hash chain that names every edited, removed, inserted or reordered entry."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from jsonschema import Draft202012Validator, FormatChecker

from kfmops.governance.ledger import DEFAULT_PATH, GENESIS, Ledger, digest_values, ledger_path
from kfmops.stores.ledger_file import FolderLedger


def file_ledger(path: Path, *, durable: bool = True) -> Ledger:
    """The ledger over the folder store's chain file at `path`."""
    return Ledger(FolderLedger(path, durable=durable))


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def documented_hash(entry: dict[str, Any]) -> str:
    """The hash as documented, computed independently: sha256 of the canonical JSON of all but `hash`."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"}).encode()).hexdigest()


def engine_entry(number: int = 1, **overrides: Any) -> dict[str, Any]:
    """An entry as the engine passes it after a committed dataset promotion."""
    before = {"dataset.landcover-1992.search": {"indices": ["kfm-landcover-1992-v1"], "write_index": None}}
    after = {"dataset.landcover-1992.search": {"indices": ["kfm-landcover-1992-v2"], "write_index": None}}
    entry = {
        "op_type": "apply",
        "apply_id": f"apply-20261126T153000Z-{number:06x}",
        "plan_id": f"plan-20261126T152900Z-{number:06x}",
        "wal_ids": [f"apply-20261126T153000Z-{number:06x}"],
        "outcome": "committed",
        "operator": "ana@ks-gis-01",
        "reason": "promote landcover 1992 to v2 (reprojected, Ñ-safe names)",
        "lineage_refs": {
            "openlineage_run_id": "a29c9cda-d5f3-505a-8d60-92798d969428",
            "prov_document": f"state/lineage/prov/apply-{number}.prov.json",
        },
        "sovereignty_findings": [{"dataset": "landcover-1992", "status": "public", "authority": "KDHE"}],
        "care_review_status": {"landcover-1992": "approved"},
        "before_digest": digest_values(before),
        "after_digest": digest_values(after),
        "changes": {"create": [], "update": ["dataset.landcover-1992.search"], "delete": []},
        "compensated": [],
    }
    return entry | overrides


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """A ledger of five committed applies."""
    book = file_ledger(tmp_path / "audit" / "ledger.jsonl")
    for number in range(1, 6):
        book.append(engine_entry(number))
    return book


def lines(book: Ledger) -> list[bytes]:
    return book.store.path.read_bytes().splitlines()


def rewrite(book: Ledger, new_lines: list[bytes]) -> None:
    book.store.path.write_bytes(b"".join(line + b"\n" for line in new_lines))


def named(problems: list[str], line: int, seq: int | None = None) -> bool:
    prefix = f"line {line} (seq {seq})" if seq is not None else f"line {line}"
    return any(problem.startswith((prefix + ":", prefix + " ")) for problem in problems)


def test_append_chains_entries_as_documented(tmp_path: Path) -> None:
    book = file_ledger(tmp_path / "docs" / "ledger.jsonl")
    stored = [book.append(engine_entry(n)) for n in (1, 2, 3)]

    assert [entry["seq"] for entry in stored] == [1, 2, 3]
    assert stored[0]["prev_hash"] == GENESIS == "0" * 64
    assert [entry["prev_hash"] for entry in stored[1:]] == [entry["hash"] for entry in stored[:-1]]
    assert all(entry["hash"] == documented_hash(entry) for entry in stored)
    assert all(entry["time"].endswith("+00:00") for entry in stored)
    assert book.entries() == stored == [json.loads(line) for line in lines(book)]
    assert book.verify() == []
    assert book.head() == {"seq": 3, "hash": stored[-1]["hash"]}


def test_stored_entries_match_the_schema(ledger: Ledger) -> None:
    schema = json.loads((ROOT / "kfmops" / "data" / "schemas" / "ledger-entry.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    for entry in ledger.entries():
        assert list(validator.iter_errors(entry)) == []


def test_entry_fields_are_kept_as_given(tmp_path: Path) -> None:
    book = file_ledger(tmp_path / "ledger.jsonl")
    given = engine_entry(7, time="2026-11-26T15:31:02+00:00", op_type="hotfix", changes={"update": 1, "no_op": 11})
    stored = book.append(given)
    assert {k: stored[k] for k in given} == given
    assert "Ñ-safe" in book.store.path.read_text(encoding="utf-8")  # UTF-8, not \u escapes


def test_digest_values_is_sha256_of_canonical_json() -> None:
    values = {"b": {"indices": ["x"], "write_index": None}, "a": "v2"}
    expected = "sha256:" + hashlib.sha256(canonical(values).encode()).hexdigest()
    assert digest_values(values) == expected
    assert digest_values(dict(reversed(values.items()))) == expected


def test_any_changed_byte_of_any_entry_is_named(ledger: Ledger) -> None:
    original = lines(ledger)
    for number, line in enumerate(original, start=1):
        # Every byte of the middle entry (every field, both chain links); a sample of the others.
        for position in range(0, len(line), 1 if number == 3 else 17):
            edited = bytearray(line)
            edited[position] = ord("x") if line[position] != ord("x") else ord("y")
            rewrite(ledger, [*original[: number - 1], bytes(edited), *original[number:]])
            problems = ledger.verify()
            assert named(problems, number), (number, position, problems)


def test_an_edit_with_a_recomputed_hash_is_named_by_the_next_entry(ledger: Ledger) -> None:
    original = lines(ledger)
    forged = json.loads(original[1])
    forged["outcome"] = "aborted"
    forged["hash"] = documented_hash(forged)
    rewrite(ledger, [original[0], json.dumps(forged).encode(), *original[2:]])
    problems = ledger.verify()
    assert len(problems) == 1 and named(problems, 3, 3)
    assert "line 2 (seq 2)" in problems[0]


@pytest.mark.parametrize("removed", [1, 2, 3, 4])
def test_a_removed_entry_is_named(ledger: Ledger, removed: int) -> None:
    original = lines(ledger)
    rewrite(ledger, original[: removed - 1] + original[removed:])
    problems = ledger.verify()
    assert len(problems) == 1
    assert named(problems, removed, removed + 1)
    assert "removed" in problems[0]


def test_a_removed_last_entry_needs_the_recorded_head(ledger: Ledger) -> None:
    head = ledger.head()
    rewrite(ledger, lines(ledger)[:-1])
    assert ledger.verify() == []  # a shorter chain is still a valid chain
    problems = ledger.verify(head=head)
    assert len(problems) == 1 and "seq 5" in problems[0] and "line 4 (seq 4)" in problems[0]


def test_a_later_append_keeps_an_old_head_valid(ledger: Ledger) -> None:
    head = ledger.head()
    ledger.append(engine_entry(6))
    assert ledger.verify(head=head) == []


@pytest.mark.parametrize("position", [1, 3, 6])
def test_an_inserted_entry_is_named(ledger: Ledger, tmp_path: Path, position: int) -> None:
    original = lines(ledger)
    other = file_ledger(tmp_path / "other.jsonl")
    for number in range(1, position + 1):
        other.append(engine_entry(100 + number))
    stranger = other.store.path.read_bytes().splitlines()[-1]  # a well-formed entry with the right seq, wrong chain
    rewrite(ledger, [*original[: position - 1], stranger, *original[position - 1 :]])
    problems = ledger.verify()
    if position == 1:  # another ledger's first entry is a valid first entry: the displaced one is named
        assert problems and all(named([problem], 2, 1) for problem in problems)
    else:
        assert named(problems, position, position)


def test_a_duplicated_entry_is_named(ledger: Ledger) -> None:
    original = lines(ledger)
    rewrite(ledger, [*original[:3], original[2], *original[3:]])
    problems = ledger.verify()
    assert named(problems, 4, 3)


def test_a_forged_entry_that_fits_the_chain_is_caught_at_the_next_one(ledger: Ledger) -> None:
    original = lines(ledger)
    second = json.loads(original[1])
    forged = engine_entry(99) | {"seq": 3, "time": second["time"], "prev_hash": second["hash"]}
    forged["hash"] = documented_hash(forged)
    rewrite(ledger, [*original[:2], json.dumps(forged).encode(), *original[2:]])
    problems = ledger.verify()
    assert not named(problems, 3)
    assert named(problems, 4, 3)


@pytest.mark.parametrize(("first", "second"), [(1, 2), (2, 4), (4, 5), (1, 5)])
def test_swapped_entries_are_named(ledger: Ledger, first: int, second: int) -> None:
    swapped = lines(ledger)
    swapped[first - 1], swapped[second - 1] = swapped[second - 1], swapped[first - 1]
    rewrite(ledger, swapped)
    problems = ledger.verify()
    assert named(problems, first, second)
    assert named(problems, second, first)


def test_a_torn_last_line_is_kept_reported_and_appended_after(ledger: Ledger) -> None:
    whole = ledger.store.path.read_bytes()
    ledger.store.path.write_bytes(whole + b'{"seq":6,"time":"2026-11-')  # a crash in the middle of a write
    stored = ledger.append(engine_entry(6))
    assert stored["seq"] == 6
    assert ledger.store.path.read_bytes().startswith(whole + b'{"seq":6,"time":"2026-11-\n')
    problems = ledger.verify()
    assert len(problems) == 1 and named(problems, 6)
    assert [entry["seq"] for entry in ledger.entries()] == [1, 2, 3, 4, 5, 6]


def test_separate_writers_continue_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    for number in range(1, 7):
        file_ledger(path).append(engine_entry(number))  # a fresh object each time, as separate processes would
    assert [entry["seq"] for entry in file_ledger(path).entries()] == [1, 2, 3, 4, 5, 6]
    assert file_ledger(path).verify() == []


def append_many(path: Path, writer: int, count: int) -> None:
    book = file_ledger(path, durable=False)
    for number in range(count):
        book.append(engine_entry(writer * 1000 + number))


def test_concurrent_processes_never_interleave_or_reuse_a_seq(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        list(pool.map(append_many, [path] * 4, range(4), [15] * 4))
    book = file_ledger(path)
    assert book.verify() == []
    assert [entry["seq"] for entry in book.entries()] == list(range(1, 61))


def test_an_empty_or_missing_ledger_is_intact(tmp_path: Path) -> None:
    book = file_ledger(tmp_path / "none.jsonl")
    assert book.entries() == [] and book.verify() == [] and book.head() is None
    assert "is empty" in book.verify(head={"seq": 1, "hash": "0" * 64})[0]


SECRETS = [
    ({"password": "hunter2"}, "entry.password"),
    ({"lineage_refs": {"openlineage_run_id": "x", "api_key": "k-123"}}, "entry.lineage_refs.api_key"),
    ({"lineage_refs": {"apiKey": "k-123"}}, "entry.lineage_refs.apiKey"),
    ({"sovereignty_findings": [{"authority": "KDHE", "access_token": "t"}]}, "sovereignty_findings[0].access_token"),
    ({"care_review_status": {"CLIENT_SECRET": "s"}}, "care_review_status.CLIENT_SECRET"),
    ({"reason": "moved to redis://:hunter2@cache.internal:6379/0"}, "entry.reason"),
    ({"reason": "header was Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"}, "entry.reason"),
    ({"reason": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "entry.reason"),
    ({"operator": "AKIAIOSFODNN7EXAMPLE"}, "entry.operator"),
    ({"reason": "ran with password=hunter2"}, "entry.reason"),
]


@pytest.mark.parametrize(("overrides", "where"), SECRETS)
def test_secrets_are_refused_and_never_written(tmp_path: Path, overrides: dict[str, Any], where: str) -> None:
    book = file_ledger(tmp_path / "ledger.jsonl")
    with pytest.raises(ValueError, match="secret") as refused:
        book.append(engine_entry(1) | overrides)
    assert where in str(refused.value)
    assert "hunter2" not in str(refused.value) and "k-123" not in str(refused.value)
    assert not book.store.path.exists()


def test_words_near_secrets_are_not_refused(tmp_path: Path) -> None:
    book = file_ledger(tmp_path / "ledger.jsonl")
    book.append(
        engine_entry(
            1,
            reason="rotate the token cache after the auth outage; see https://ks.example/runbook",
            sovereignty_findings=[{"authority": "Kaw Nation", "reference": "consent 2026-14", "passed": True}],
        )
    )
    assert book.verify() == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (engine_entry(1, seq=9), "assigns these itself"),
        (engine_entry(1, hash="0" * 64), "assigns these itself"),
        (engine_entry(1, op_type="deploy"), "op_type"),
        (engine_entry(1, outcome="ok"), "outcome"),
        (engine_entry(1, before_digest="md5:abc"), "before_digest"),
        (engine_entry(1, surprise=1), "surprise"),
        ({k: v for k, v in engine_entry(1).items() if k != "operator"}, "operator"),
        (engine_entry(1, reason=Path("not json")), "not plain JSON"),
    ],
)
def test_malformed_entries_are_refused(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    book = file_ledger(tmp_path / "ledger.jsonl")
    with pytest.raises(ValueError, match=message):
        book.append(entry)
    assert not book.store.path.exists()


def test_ledger_path_defaults_under_the_workspace_root(tmp_path: Path) -> None:
    assert ledger_path(tmp_path, {}) == tmp_path / "docs/reports/audit/data_provenance_ledger.jsonl"
    assert ledger_path(tmp_path, {}) == tmp_path / DEFAULT_PATH
    assert ledger_path(tmp_path, {"path": "audit/ledger.jsonl"}) == tmp_path / "audit/ledger.jsonl"
