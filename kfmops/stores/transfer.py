"""Moving a workspace's records from one store to another (`kfmops state migrate`), and the state as a document
(`kfmops state pull`).

The copy goes through the store interfaces only, so either side may be any store. Nothing is re-derived: the
state is saved as loaded, history records as kept, WAL records and ledger entries appended again with their
original fields, so their hash chains come out identical and the copy is verified by counts and chain heads.
The caller holds both stores' locks.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfmops.errors import KfmopsError
from kfmops.stores.base import LedgerChain, Stores, WalStore
from kfmops.stores.folder import FolderStateStore
from kfmops.stores.state import State
from kfmops.stores.wal import WalRecord

CHAINED = ("seq", "prev_hash", "hash")  # what appending a record or an entry sets anew


@dataclass(frozen=True)
class Copied:
    """What `copy_stores` copied and verified."""

    source: str
    target: str
    lineage: str
    serial: int
    resources: int
    history: int
    wals: int
    ledger: int
    ledger_head: str | None


def state_document(state: State | None) -> str:
    """The state exactly as the folder store writes `state.json` (what `kfmops state pull` prints)."""
    if state is None:
        raise KfmopsError("the workspace has no state yet: nothing was ever applied or initialized")
    with tempfile.TemporaryDirectory(prefix="kfmops-state-") as folder:
        store = FolderStateStore(Path(folder), durable=False)
        store.save(state)
        return store.path.read_text(encoding="utf-8")


def copy_stores(source: Stores, target: Stores) -> Copied:
    """Copy state, history, archived WALs and the ledger chain from `source` to `target`, then verify the copy.

    Refused when the target holds another lineage, a newer serial of this one, or a ledger that is not the
    start of the source's; a target holding an older copy of the same lineage is brought up to date.
    """
    state = source.state.load()
    if state is None:
        raise KfmopsError(f"nothing to migrate: {source.state.location()} holds no state")
    there = target.state.load()
    if there is not None and there.lineage != state.lineage:
        raise KfmopsError(
            f"{target.state.location()} already holds the state of another workspace (lineage {there.lineage}, "
            f"not {state.lineage}); refusing to overwrite it"
        )
    if there is not None and there.serial > state.serial:
        raise KfmopsError(
            f"{target.state.location()} is ahead of {source.state.location()} (serial {there.serial} > "
            f"{state.serial}); refusing to go back"
        )
    entries = _checked_ledger(source.ledger, target.ledger)
    target.state.save(state)
    applies = [entry["apply_id"] for entry in source.history.entries()]
    known = {entry["apply_id"] for entry in target.history.entries()}
    for apply_id in applies:
        if apply_id not in known:
            target.history.append(source.history.load(apply_id))
    wals = [apply_id for apply_id in applies if _archived(source.wal, apply_id)]
    for apply_id in wals:
        if not _archived(target.wal, apply_id):
            _copy_wal(_archived(source.wal, apply_id), target.wal, apply_id)
    for entry in entries[len(target.ledger.entries()) :]:
        target.ledger.append({key: value for key, value in entry.items() if key not in CHAINED})
    return _verify(source, target, state, wals)


def _checked_ledger(source: LedgerChain, target: LedgerChain) -> list[dict[str, Any]]:
    """The source's entries, once its chain verifies and the target's chain is a start of it."""
    problems = source.verify()
    if problems:
        raise KfmopsError(f"the ledger at {source.location()} does not verify ({problems[0]}); fix it first")
    entries, present = source.entries(), target.entries()
    if [e.get("hash") for e in present] != [e.get("hash") for e in entries[: len(present)]]:
        raise KfmopsError(
            f"the ledger at {target.location()} is not the start of the one at {source.location()}; "
            "refusing to mix two chains"
        )
    return entries


def _archived(wal: WalStore, apply_id: str) -> list[WalRecord]:
    try:
        return wal.archived(apply_id)
    except FileNotFoundError:  # the folder store: no such archive file
        return []


def _copy_wal(records: list[WalRecord], target: WalStore, apply_id: str) -> None:
    log = target.begin(apply_id)
    try:
        for record in records:
            fields = {key: value for key, value in record.fields.items() if key not in (*CHAINED, "type", "apply_id")}
            log.append(record.type, **fields)
    finally:
        log.close()
    target.archive(apply_id)


def _head(records: list[WalRecord]) -> Any:
    return records[-1].fields["hash"] if records else None


def _verify(source: Stores, target: Stores, state: State, wals: list[str]) -> Copied:
    """Compare counts and chain heads of both sides; KfmopsError naming the first difference."""
    copied = target.state.load()
    ledger = target.ledger.entries()
    checks = {
        "state": (state_document(copied), state_document(state)),
        "history": (
            [e["apply_id"] for e in target.history.entries()],
            [e["apply_id"] for e in source.history.entries()],
        ),
        "WAL heads": (
            [_head(_archived(target.wal, a)) for a in wals],
            [_head(_archived(source.wal, a)) for a in wals],
        ),
        "ledger": ([e.get("hash") for e in ledger], [e.get("hash") for e in source.ledger.entries()]),
    }
    for what, (there, here) in checks.items():
        if there != here:
            raise KfmopsError(f"the copy in {target.state.location()} does not match the source: its {what} differ")
    return Copied(
        source.state.location(),
        target.state.location(),
        state.lineage,
        state.serial,
        len(state.resources),
        len(checks["history"][1]),
        len(wals),
        len(ledger),
        ledger[-1].get("hash") if ledger else None,
    )
