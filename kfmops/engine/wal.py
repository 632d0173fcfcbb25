"""The write-ahead log of one apply: hash-chained JSON lines at `state/wal/<apply_id>.jsonl`.

Each record is flushed and fsynced before the backend call it announces. A torn last line (a crash
while writing it) is ignored; any other unreadable line or a broken hash chain is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfmops.engine import crash
from kfmops.engine.files import fsync_folder
from kfmops.errors import Diagnostic, InputError
from kfmops.references import canonical_json

BEGIN, INTENT, DONE, FAILED = "BEGIN", "INTENT", "DONE", "FAILED"
COMPENSATE, COMPENSATED, COMMIT, ABORTED = "COMPENSATE", "COMPENSATED", "COMMIT", "ABORTED"
TERMINAL = {COMMIT, ABORTED}
GENESIS = "0" * 64


@dataclass(frozen=True)
class WalRecord:
    seq: int
    type: str
    fields: dict[str, Any]


def _hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()


class WalWriter:
    """Appends records to one apply's WAL; `durable=False` skips fsync (benchmarks only)."""

    def __init__(self, path: Path, apply_id: str, *, durable: bool = True, records: list[WalRecord] | None = None):
        self.path = path
        self.apply_id = apply_id
        self.durable = durable
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = records if records is not None else []
        self.seq = existing[-1].seq if existing else 0
        self.prev_hash = existing[-1].fields["hash"] if existing else GENESIS
        new_file = not path.exists()
        self.handle = open(path, "ab")  # noqa: SIM115 - kept open for the whole apply
        if records is not None:
            self.handle.truncate(path.read_bytes().rfind(b"\n") + 1)
        if new_file and durable:
            fsync_folder(path.parent)
        self.count = 0

    def append(self, record_type: str, **fields: Any) -> None:
        self.seq += 1
        record = {
            "seq": self.seq,
            "type": record_type,
            "apply_id": self.apply_id,
            **fields,
            "prev_hash": self.prev_hash,
        }
        record["hash"] = _hash(record)
        self.handle.write((json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode())
        self.handle.flush()
        if self.durable:
            os.fsync(self.handle.fileno())
        self.prev_hash = record["hash"]
        self.count += 1
        crash.reached(f"wal:{self.seq}")

    def close(self) -> None:
        self.handle.close()


def read_wal(path: Path) -> list[WalRecord]:
    """Every intact record of a WAL in order; a torn final line is dropped, a broken chain raises.

    A record counts once its newline is written: the writer writes record and newline in one call and
    only then announces the step, so a final line without its newline was never acted on.
    """
    *complete, _torn_tail = path.read_bytes().split(b"\n")
    records: list[WalRecord] = []
    prev = GENESIS
    for number, line in enumerate(complete, start=1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _broken(path, number, "is not valid JSON") from None
        claimed = record.pop("hash", None)
        if record.get("prev_hash") != prev or claimed != _hash(record):
            raise _broken(path, number, "breaks the hash chain (edited, removed or reordered records)")
        record["hash"] = claimed
        records.append(WalRecord(record["seq"], record["type"], record))
        prev = claimed
    return records


def is_finished(records: list[WalRecord]) -> bool:
    return bool(records) and records[-1].type in TERMINAL


def unfinished(folder: Path) -> list[Path]:
    """WAL files whose apply neither committed nor aborted: recovery is required."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.glob("*.jsonl") if not is_finished(read_wal(path)))


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
