"""Apply history: one record per apply, rollback, hotfix or recover, with its inverse changes.

`state/applies/<apply_id>.json` holds the full record (inverse included); `state/history.jsonl`
is the append-only index that `kfmops history` lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfmops.engine.files import write_atomic
from kfmops.errors import KfmopsError


@dataclass
class ApplyRecord:
    apply_id: str
    plan_id: str
    operation: str
    operator: str
    started: str
    finished: str
    outcome: str
    summary: dict[str, int]
    wal: str
    serial: int | None = None
    reason: str | None = None
    rolls_back: str | None = None
    applied: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    inverse: list[dict[str, Any]] = field(default_factory=list)
    datasets: dict[str, Any] = field(default_factory=dict)

    def index_entry(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in {"inverse", "applied", "compensated", "datasets"}}


class History:
    def __init__(self, state_dir: Path, *, durable: bool = True):
        self.folder = state_dir / "applies"
        self.index = state_dir / "history.jsonl"
        self.durable = durable

    def save(self, record: ApplyRecord) -> None:
        """Write the record and index it once (saving an apply that is already indexed changes nothing)."""
        if any(entry["apply_id"] == record.apply_id for entry in self.entries()):
            return
        write_atomic(
            self.folder / f"{record.apply_id}.json",
            json.dumps(record.__dict__, indent=1).encode(),
            durable=self.durable,
        )
        with open(self.index, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record.index_entry()) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        if not self.index.exists():
            return []
        return [json.loads(line) for line in self.index.read_text(encoding="utf-8").splitlines() if line.strip()]

    def load(self, apply_id: str) -> ApplyRecord:
        path = self.folder / f"{apply_id}.json"
        if not path.is_file():
            raise KfmopsError(f"no apply with id {apply_id!r}; see 'kfmops history'")
        return ApplyRecord(**json.loads(path.read_text(encoding="utf-8")))

    def last_committed(self) -> ApplyRecord:
        for entry in reversed(self.entries()):
            if entry["outcome"] == "committed" and entry["summary"] != {
                "create": 0,
                "update": 0,
                "delete": 0,
                "no_op": 0,
            }:
                return self.load(entry["apply_id"])
        raise KfmopsError("nothing to roll back: no committed apply in history")
