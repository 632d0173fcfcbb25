"""The governance ledger: one hash-chained JSON line per apply, rollback, hotfix or recover.

The file lives at `docs/reports/audit/data_provenance_ledger.jsonl` under the workspace root unless
the workspace's `ledger.path` says otherwise (`ledger_path`). Every stored entry carries `seq`
(1, 2, ... n with no gap), `prev_hash` (the previous entry's `hash`; 64 zeros for the first) and
`hash`, the sha256 of the canonical JSON of the entry without `hash`. `Ledger.verify` recomputes all
three, so an edited, removed, inserted or reordered entry is named by line and seq. Removing the
*last* entries leaves a valid shorter chain: only a head known elsewhere (`Ledger.head`, kept in the
state or in git) reveals that, which is why `verify` accepts one.

Must not: the ledger never holds a secret. It stores only what the engine passes, and `append`
refuses keys named like credentials and values shaped like them (`refuse_secrets`). It never
rewrites bytes already written: a torn last line (a crash mid-append) is left in place and reported.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kfmops.engine.files import fsync_folder
from kfmops.references import canonical_json
from kfmops.schemas import validator

try:  # POSIX only; elsewhere the workspace lock alone serializes writers
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

DEFAULT_PATH = Path("docs/reports/audit/data_provenance_ledger.jsonl")
GENESIS = "0" * 64
OP_TYPES = ("apply", "rollback", "hotfix", "recover")
OUTCOMES = ("committed", "aborted", "restored", "completed")
ADDED_FIELDS = ("seq", "prev_hash", "hash")

# Key names are split into words ("apiKey", "api-key", "API_KEY" -> api, key) before matching.
_SECRET_WORDS = {
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "secrets",
    "token",
    "tokens",
    "apikey",
    "credential",
    "credentials",
    "authorization",
    "cookie",
    "privatekey",
    "accesskey",
    "secretkey",
}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("client", "secret")}
_SECRET_VALUES = (
    ("a URL with a password", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.I)),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("an HTTP credential", re.compile(r"\b(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{12,}")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    (
        "a GitHub or Slack token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{20,}|xox[abprs]-[\w-]{10,})"),
    ),
    ("a password assignment", re.compile(r"\b(?:password|passwd|secret|token|api[_-]?key)\s*=\s*\S+", re.I)),
)


def ledger_path(root: Path, settings: Mapping[str, Any]) -> Path:
    """The ledger file of the workspace at `root`: its `ledger.path` setting (relative to root) or the default."""
    return root / Path(settings.get("path") or DEFAULT_PATH)


def digest_values(values: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of the canonical JSON of `values` (address -> value): an entry's before/after digest."""
    return "sha256:" + hashlib.sha256(canonical_json(values).encode()).hexdigest()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of `entry` without its own `hash` field."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def refuse_secrets(value: Any, where: str = "entry") -> None:
    """Raise ValueError if `value` holds a key named like a credential or a string shaped like one.

    The message names the field, never the value. Used for ledger entries and telemetry attributes.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}"
            if _secret_key(str(key)):
                raise ValueError(
                    f"{path}: a field named like a credential is refused; governance records hold no secrets"
                )
            refuse_secrets(item, path)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            refuse_secrets(item, f"{where}[{index}]")
    elif isinstance(value, str):
        for what, pattern in _SECRET_VALUES:
            if pattern.search(value):
                raise ValueError(
                    f"{where}: the value looks like {what} and is refused; governance records hold no secrets"
                )


def _secret_key(key: str) -> bool:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key).lower()
    words = [word for word in re.split(r"[^a-z0-9]+", spaced) if word]
    if any(word in _SECRET_WORDS for word in words) or "".join(words) in _SECRET_WORDS:
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


class Ledger:
    """The append-only, hash-chained ledger file at `path`.

    `durable=False` skips fsync (benchmarks only). Appends take an exclusive `flock` on the file, so
    two processes never interleave lines or reuse a seq.
    """

    def __init__(self, path: Path, *, durable: bool = True):
        self.path = path
        self.durable = durable

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Store `entry` as the next line and return it as stored (with seq, time, prev_hash, hash).

        Raises ValueError when the entry sets seq/prev_hash/hash itself, holds something that looks
        like a credential, is not JSON, or does not match `schemas/ledger-entry.schema.json`.
        """
        if not isinstance(entry, Mapping):
            raise ValueError("a ledger entry must be a mapping")
        preset = [key for key in ADDED_FIELDS if key in entry]
        if preset:
            raise ValueError(f"ledger entry sets {', '.join(preset)}; the ledger assigns these itself")
        refuse_secrets(entry)
        try:
            # A JSON round trip first, so that the hash is computed over exactly what a reader will parse.
            fields = json.loads(json.dumps(entry, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ledger entry is not plain JSON: {exc}") from None
        fields.setdefault("time", _now())
        # Checked before the file is touched; seq and hashes are placeholders of the right shape.
        problems = sorted(
            f"{'.'.join(str(part) for part in error.absolute_path) or 'entry'}: {error.message}"
            for error in validator("ledger-entry").iter_errors(
                {"seq": 1, **fields, "prev_hash": GENESIS, "hash": GENESIS}
            )
        )
        if problems:
            raise ValueError("ledger entry does not match schemas/ledger-entry.schema.json: " + "; ".join(problems))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.exists()
        with open(self.path, "a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            last, torn = _tail(handle)
            stored = {
                "seq": last["seq"] + 1 if last else 1,
                "time": fields.pop("time"),
                **fields,
                "prev_hash": last["hash"] if last else GENESIS,
            }
            stored["hash"] = entry_hash(stored)
            line = json.dumps(stored, ensure_ascii=False, separators=(",", ":")).encode()
            # A torn line stays as evidence; the new entry starts on a line of its own.
            handle.write((b"\n" if torn else b"") + line + b"\n")
            handle.flush()
            if self.durable:
                os.fsync(handle.fileno())
        if new_file and self.durable:
            fsync_folder(self.path.parent)
        return stored

    def entries(self) -> list[dict[str, Any]]:
        """Every line that parses as a JSON object, in file order (`verify` reports the others)."""
        found = []
        for _, line in self._lines():
            entry = _parse(line)
            if entry is not None:
                found.append(entry)
        return found

    def head(self) -> dict[str, Any] | None:
        """`{"seq", "hash"}` of the last entry, to keep elsewhere and pass back to `verify`; None when empty."""
        entries = self.entries()
        return {"seq": entries[-1].get("seq"), "hash": entries[-1].get("hash")} if entries else None

    def verify(self, *, head: Mapping[str, Any] | None = None) -> list[str]:
        """Problems found, one per damaged line, each naming the line and seq; empty when intact.

        Checks per line: it parses; its hash matches its content; its seq follows the previous entry's;
        its prev_hash equals the previous entry's hash. With `head` (a former `Ledger.head()`), also
        that the entry with that seq still exists with that hash, which catches a cut-off tail.
        """
        problems: list[str] = []
        prev_seq, prev_hash, prev_label = 0, GENESIS, "the start of the ledger"
        by_seq: dict[Any, str] = {}
        for number, line in self._lines():
            entry = _parse(line)
            if entry is None:
                what = "is empty" if not line.strip() else "is not a JSON object (edited, or a write was interrupted)"
                problems.append(f"line {number}: {what}")
                continue
            seq = entry.get("seq")
            label = f"line {number} (seq {seq})"
            reasons = []
            if entry.get("hash") != entry_hash(entry):
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
            prev_hash, prev_label = entry.get("hash"), label
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
