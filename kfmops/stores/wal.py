"""The write-ahead log of one transaction: hash-chained JSON lines, each durable before the step it announces.

Records, in order: BEGIN (the transaction as fixed at its start), then per batch INTENT (the addresses
and the before values observed under the lock) and DONE; FAILED, COMPENSATE/COMPENSATED per undone
batch; and COMMIT or ABORTED. A record counts once its newline is written: a torn final line was never
acted on and is ignored; any other unreadable line, or a broken hash chain, is an error.

`Replay` is the typed reading of a WAL that recovery and settling use; no other module reads a
record's fields.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from kfmops.errors import Diagnostic, InputError
from kfmops.io import chain, crash
from kfmops.io.files import append_line, fsync_folder
from kfmops.plans import codec
from kfmops.plans.transaction import Batch, Transaction


class WalStep(StrEnum):
    BEGIN = "BEGIN"
    INTENT = "INTENT"
    DONE = "DONE"
    FAILED = "FAILED"
    COMPENSATE = "COMPENSATE"
    COMPENSATED = "COMPENSATED"
    COMMIT = "COMMIT"
    ABORTED = "ABORTED"


TERMINAL = {WalStep.COMMIT, WalStep.ABORTED}


@dataclass(frozen=True)
class WalRecord:
    seq: int
    type: WalStep
    fields: dict[str, Any]


class WalLog(ABC):
    """The open WAL of one transaction. `append` returns only once the record is durable."""

    count: int

    @abstractmethod
    def append(self, step: WalStep, **fields: Any) -> WalRecord: ...

    @abstractmethod
    def close(self) -> None: ...


class WalWriter(WalLog):
    """Appends records to one WAL file; `durable=False` skips fsync (benchmarks only).

    Each record is written with one unbuffered `os.write` and fsynced before `append` returns, so a
    failed write raises before the step it announces, and nothing is left in a buffer.
    """

    def __init__(self, path: Path, apply_id: str, *, durable: bool = True, records: list[WalRecord] | None = None):
        self.path = path
        self.apply_id = apply_id
        self.durable = durable
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = records if records is not None else []
        self.seq = existing[-1].seq if existing else 0
        self.prev_hash = existing[-1].fields["hash"] if existing else chain.GENESIS
        new_file = not path.exists()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if records is not None:
            os.ftruncate(self.fd, path.read_bytes().rfind(b"\n") + 1)  # cut a torn tail
        if new_file and durable:
            fsync_folder(path.parent)
        self.count = 0
        self.failure: OSError | None = None

    def append(self, step: WalStep, **fields: Any) -> WalRecord:
        if self.failure is not None:  # an earlier record may have landed, whole or torn, without being durable:
            raise OSError(self.failure.errno, self.failure.strerror, str(self.path))  # only recover goes on
        record = chain.link(
            {"seq": self.seq + 1, "type": str(step), "apply_id": self.apply_id, **fields}, self.prev_hash
        )
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        try:
            append_line(self.fd, line, self.path, durable=self.durable)
        except OSError as exc:
            self.failure = exc
            raise
        self.seq += 1
        self.prev_hash = record["hash"]
        self.count += 1
        crash.reached(f"wal:{self.seq}")
        return WalRecord(self.seq, step, record)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_wal(path: Path) -> list[WalRecord]:
    """Every intact record of a WAL in order; a torn final line is dropped, a broken chain raises."""
    *complete, _torn_tail = path.read_bytes().split(b"\n")
    records: list[WalRecord] = []
    prev = chain.GENESIS
    for number, line in enumerate(complete, start=1):
        try:
            record = json.loads(line)
            step = WalStep(record["type"])
            if not isinstance(record["seq"], int):
                raise TypeError("seq")
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError, RecursionError):
            raise _broken(path, number, "is not valid JSON, or not a WAL record") from None
        if chain.problems(record, prev):
            raise _broken(path, number, "breaks the hash chain (edited, removed or reordered records)")
        records.append(WalRecord(record["seq"], step, record))
        prev = record["hash"]
    return records


def is_finished(records: list[WalRecord]) -> bool:
    return bool(records) and records[-1].type in TERMINAL


@dataclass(frozen=True)
class Intent:
    """One batch as its INTENT record announced it."""

    batch: Batch
    observed: Mapping[str, Any]


@dataclass(frozen=True)
class Replay:
    """A WAL read back: the transaction with what it observed, and how far each batch got."""

    transaction: Transaction
    intents: dict[int, Intent]
    done: frozenset[int]
    compensated: frozenset[int]
    compensating: bool
    last: WalStep
    restored: tuple[str, ...]

    @classmethod
    def of(cls, records: list[WalRecord], name: str) -> Replay:
        """The replay of `records` (whose first is BEGIN); `name` says where they came from."""
        begin = {k: v for k, v in records[0].fields.items() if k not in {"seq", "type", "prev_hash", "hash"}}
        transaction = codec.transaction_from_dict(begin, name)
        changes = {change.address: change for change in transaction.changes}
        intents: dict[int, Intent] = {}
        for record in records:
            if problem := _malformed(record, changes):
                raise InputError(
                    [
                        Diagnostic(
                            f"WAL record {record.seq} ({record.type}) {problem}",
                            "the log cannot be trusted; inspect it before recovering",
                            file=name,
                        )
                    ]
                )
            if record.type is WalStep.INTENT:
                number, fields = record.fields["batch"], record.fields
                batch = Batch(number, fields["backend"], tuple(changes[a] for a in fields["addresses"]))
                intents[number] = Intent(batch, fields["observed"])
                transaction = transaction.observe(fields["observed"])
        last = records[-1]
        return cls(
            transaction,
            intents,
            frozenset(r.fields["batch"] for r in records if r.type is WalStep.DONE),
            frozenset(r.fields["batch"] for r in records if r.type is WalStep.COMPENSATED),
            any(r.type is WalStep.COMPENSATE for r in records),
            last.type,
            tuple(last.fields.get("compensated", ())) if last.type is WalStep.ABORTED else (),
        )

    @property
    def announced(self) -> set[str]:
        return {address for intent in self.intents.values() for address in intent.batch.addresses}


# The fields each kind of record needs beyond seq, type, apply_id and its hashes, with their types.
_FIELDS: dict[WalStep, dict[str, type]] = {
    WalStep.INTENT: {"batch": int, "backend": str, "addresses": list, "observed": dict},
    WalStep.DONE: {"batch": int},
    WalStep.COMPENSATE: {"batch": int, "addresses": list},
    WalStep.COMPENSATED: {"batch": int},
}


def _malformed(record: WalRecord, changes: Mapping[str, Any]) -> str | None:
    """Why `record` cannot be replayed against the changes its BEGIN record planned (None when it can)."""
    fields = record.fields
    for name, kind in _FIELDS.get(record.type, {}).items():
        if not isinstance(fields.get(name), kind) or isinstance(fields.get(name), bool):
            return f"lacks its field {name!r} or it is not a {kind.__name__}"
    addresses = fields.get("addresses", []) if record.type in _FIELDS else []
    if not all(isinstance(address, str) and address in changes for address in addresses):
        return "names an address that its BEGIN record does not plan"
    if record.type is WalStep.INTENT:
        if set(fields["observed"]) != set(addresses):
            return "does not observe exactly the addresses it announces"
        for address in addresses:
            try:
                changes[address].reference.normalize(fields["observed"][address])
            except (AttributeError, KeyError, TypeError, ValueError):
                return f"observed a value of {address} that is not a value of its kind"
    if record.type is WalStep.ABORTED and not isinstance(fields.get("compensated", []), list):
        return "lists what it compensated in something other than a list"
    return None


def begin_fields(transaction: Transaction) -> dict[str, Any]:
    """The BEGIN record's fields: the transaction as fixed at its start."""
    fields = codec.transaction_to_dict(transaction, header_only=True)
    fields.pop("apply_id")  # every record carries it already
    return fields


def _broken(path: Path, line: int, why: str) -> InputError:
    return InputError(
        [
            Diagnostic(
                f"WAL record {why}",
                "the log cannot be trusted; inspect it before recovering",
                file=str(path),
                line=line,
            )
        ]
    )
