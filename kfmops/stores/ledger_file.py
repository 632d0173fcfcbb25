"""The folder store's ledger chain: one hash-chained JSON line per entry, in a file under the workspace.

Every stored entry carries `seq` (1, 2, ... n with no gap), `prev_hash` and `hash` (see `io.chain`).
`verify` recomputes all three, so an edited, removed, inserted or reordered entry is named by line and
seq. Removing the *last* entries leaves a valid shorter chain: only a head known elsewhere reveals
that, which is why `verify` accepts one. A torn last line (a crash mid-append) is left in place as
evidence and reported; the next entry starts on a line of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from kfmops.io import chain
from kfmops.io.files import append_line, fsync_folder, write_atomic
from kfmops.stores.base import LedgerChain


class FolderLedger(LedgerChain):
    """The append-only, hash-chained ledger file at `path`.

    `durable=False` skips fsync (benchmarks only). Appends hold a file lock on `<path>.lock`, so two
    processes never interleave lines or reuse a seq.
    """

    def __init__(
        self, path: Path, *, durable: bool = True, anchor: Path | None = None, key: bytes | None = None
    ) -> None:
        self.path = path
        self.durable = durable
        self.anchor = anchor  # where the head (seq, hash) is kept beside the state: a cut tail is detected
        self.key = key  # KFMOPS_LEDGER_KEY: a keyed (HMAC) chain that cannot be re-hashed without it

    def location(self) -> str:
        return str(self.path)

    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Store `entry` (already checked by the caller) as the next line; returns it as stored."""
        fields = dict(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.exists()
        from filelock import FileLock  # imported by the first ledger write, not at start-up

        with FileLock(f"{self.path}.lock"), open(self.path, "a+b") as handle:
            last, torn = _tail(handle)
            stored = chain.link(
                {"seq": last["seq"] + 1 if last else 1, "time": fields.pop("time"), **fields},
                last["hash"] if last else chain.GENESIS,
                self.key,
            )
            line = json.dumps(stored, ensure_ascii=False, separators=(",", ":")).encode()
            # A torn line stays as evidence; the new entry starts on a line of its own.
            append_line(handle.fileno(), (b"\n" if torn else b"") + line + b"\n", self.path, durable=self.durable)
            if new_file and self.durable:
                fsync_folder(self.path.parent)
            if self.anchor is not None:
                head = {"seq": stored["seq"], "hash": stored["hash"]}
                write_atomic(self.anchor, json.dumps(head).encode(), durable=self.durable)
        return stored

    def entries(self) -> list[dict[str, Any]]:
        """Every line that parses as a JSON object, in file order (`verify` reports the others)."""
        found = []
        for _, line in self._lines():
            entry = _parse(line)
            if entry is not None:
                found.append(entry)
        return found

    def verify(self, *, head: Mapping[str, Any] | None = None) -> list[str]:
        """Problems found, one per damaged line, each naming the line and seq; empty when intact.

        Checks per line: it parses; its hash matches its content; its seq follows the previous entry's;
        its prev_hash equals the previous entry's hash. With `head` (`{seq, hash}` of an entry recorded earlier), also
        that the entry with that seq still exists with that hash, which catches a cut-off tail.
        """
        if head is None and self.anchor is not None and self.anchor.is_file():
            head = json.loads(self.anchor.read_text(encoding="utf-8"))
        problems: list[str] = []
        prev_seq, prev_label = 0, "the start of the ledger"
        prev_hash: Any = chain.GENESIS
        by_seq: dict[Any, Any] = {}
        for number, line in self._lines():
            entry = _parse(line)
            if entry is None:
                what = "is empty" if not line.strip() else "is not a JSON object (edited, or a write was interrupted)"
                problems.append(f"line {number}: {what}")
                continue
            seq = entry.get("seq")
            label = f"line {number} (seq {seq})"
            reasons = []
            if entry.get("hash") != chain.record_hash(entry, self.key):
                reasons.append("its content does not match its hash: the entry was edited")
            if seq != prev_seq + 1:
                reasons.append(
                    f"expected seq {prev_seq + 1} after {prev_label}: an entry was removed, inserted or reordered"
                )
            if entry.get("prev_hash") != prev_hash:
                reasons.append(
                    f"prev_hash does not match the hash of {prev_label}: that entry was edited, "
                    "or entries were removed, inserted or reordered"
                )
            if reasons:
                problems.append(f"{label}: " + "; ".join(reasons))
            prev_seq = seq if isinstance(seq, int) else prev_seq + 1
            prev_hash = entry.get("hash")
            prev_label = label
            by_seq[seq] = entry.get("hash")
        if head is not None and by_seq.get(head.get("seq")) != head.get("hash"):
            where = f"ends at {prev_label}" if by_seq else "is empty"
            problems.append(
                f"the ledger {where} but the recorded head is seq {head.get('seq')} with hash {head.get('hash')}: "
                "entries were removed from the end or rewritten"
            )
        return problems

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        if not self.path.exists():
            return
        lines = self.path.read_bytes().split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        yield from enumerate(lines, start=1)


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return entry if isinstance(entry, dict) else None


def _tail(handle: IO[bytes]) -> tuple[dict[str, Any] | None, bool]:
    """The last entry that parses with an int seq and a hash, and whether the file ends mid-line."""
    handle.seek(0, os.SEEK_END)
    if handle.tell() == 0:
        return None, False
    torn = None
    for line in _lines_backwards(handle):
        if torn is None:
            torn = line != b""  # the text after the last newline: empty unless a write was cut short
        entry = _parse(line)
        if entry is not None and isinstance(entry.get("seq"), int) and isinstance(entry.get("hash"), str):
            return entry, bool(torn)
    return None, bool(torn)


def _lines_backwards(handle: IO[bytes], block: int = 1 << 16) -> Iterator[bytes]:
    """Lines from the end of the file without reading all of it; the first is the text after the last newline."""
    handle.seek(0, os.SEEK_END)
    position, rest = handle.tell(), b""
    while position > 0:
        step = min(block, position)
        position -= step
        handle.seek(position)
        lines = (handle.read(step) + rest).split(b"\n")
        rest = lines.pop(0)
        yield from reversed(lines)
    yield rest
