"""The store interfaces, in the manner of Terraform's statemgr: persisters for state, history, WAL and
ledger, and a locker. An implementation keeps them wherever it likes; callers only see these methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kfmops.errors import KfmopsError
from kfmops.plans.transaction import Transaction
from kfmops.stores.state import State
from kfmops.stores.wal import WalLog, WalRecord


class StateStore(ABC):
    """The workspace state: lineage, serial and managed references."""

    @abstractmethod
    def load(self) -> State | None:
        """The current state, or None for a workspace never initialized or applied (nothing is created)."""

    @abstractmethod
    def save(self, state: State) -> None:
        """Replace the state atomically: a crash leaves the old state or the new one, whole."""

    @abstractmethod
    def location(self) -> str:
        """Where the state lives, for messages."""


class HistoryStore(ABC):
    """Every settled transaction, with what `inverse()` needs to undo it."""

    @abstractmethod
    def append(self, transaction: Transaction) -> None:
        """Record a settled transaction once; recording it again changes nothing."""

    @abstractmethod
    def entries(self) -> list[dict[str, Any]]:
        """The index, oldest first: one `codec.history_entry` per transaction."""

    @abstractmethod
    def load(self, apply_id: str) -> Transaction: ...

    def last_committed(self) -> Transaction:
        """The newest committed transaction that moved something."""
        for entry in reversed(self.entries()):
            summary = entry["summary"]
            if entry["outcome"] == "committed" and any(
                summary.get(k) for k in ("create", "update", "delete", "import", "forget")
            ):
                return self.load(entry["apply_id"])
        raise KfmopsError("nothing to roll back: no committed apply in history")


@dataclass(frozen=True)
class WalEntry:
    """One transaction's WAL as a store holds it: its id, where it is (for messages), its records."""

    apply_id: str
    location: str
    records: list[WalRecord]


class WalStore(ABC):
    """The write-ahead logs of transactions still open, and the archive of finished ones."""

    @abstractmethod
    def begin(self, apply_id: str) -> WalLog:
        """A new, empty WAL for `apply_id`."""

    @abstractmethod
    def resume(self, entry: WalEntry) -> WalLog:
        """Append to an existing WAL after its last whole record (a torn tail is cut)."""

    @abstractmethod
    def open_entries(self) -> list[WalEntry]:
        """Every WAL not archived yet, oldest first; a broken chain raises InputError naming it."""

    @abstractmethod
    def archive(self, apply_id: str) -> None:
        """Move a finished WAL out of the open set (idempotent)."""

    @abstractmethod
    def discard(self, apply_id: str) -> None:
        """Drop a WAL that announced nothing (no complete BEGIN record)."""

    @abstractmethod
    def archived(self, apply_id: str) -> list[WalRecord]: ...


@dataclass(frozen=True)
class Freeze:
    """The workspace's red state as an operator set it: why, who, since when, and until when (None: until
    `resume`). Every runner and clone that shares the state sees it."""

    reason: str
    who: str
    since: str
    until: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "who": self.who, "since": self.since, "until": self.until}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Freeze:
        return cls(str(raw["reason"]), str(raw["who"]), str(raw["since"]), raw.get("until"))


class ControlStore(ABC):
    """Operational switches shared with everyone who shares the state: the freeze, and the log of every
    freeze and resume. Written without the workspace lock, so that a workspace can be frozen while an apply
    holds it."""

    @abstractmethod
    def freeze(self) -> Freeze | None:
        """The freeze as last set (possibly past its `until`), or None."""

    @abstractmethod
    def set_freeze(self, freeze: Freeze | None, event: Mapping[str, Any]) -> None:
        """Set the freeze (lift it with None) and add `event` to the freeze log, in one atomic write."""

    @abstractmethod
    def events(self) -> list[dict[str, Any]]:
        """The freeze log, oldest first: one history row per freeze and resume."""


class LedgerChain(ABC):
    """The governance ledger's hash chain: append-only, each entry chained to the one before."""

    @abstractmethod
    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Store `entry` as the next link; returns it as stored (seq, prev_hash, hash added)."""

    @abstractmethod
    def entries(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    def verify(self, *, head: Mapping[str, Any] | None = None) -> list[str]:
        """Problems found, each naming the entry; empty when intact."""

    @abstractmethod
    def location(self) -> str: ...


@dataclass(frozen=True)
class Stores:
    """The persisters of one workspace, as the engine uses them (its `Locker` is opened on its own:
    reading a workspace never needs it)."""

    state: StateStore
    history: HistoryStore
    wal: WalStore
    ledger: LedgerChain
    controls: ControlStore
