"""Hash chains: each record carries `prev_hash` (the hash of the record before it) and its own `hash`.

One module for every chained log kfmops keeps (the WAL of an apply, the governance ledger), so that both
start at the same genesis and hash the same way: sha256 of the canonical JSON of the record without its
`hash` field. An edited record no longer matches its hash; a removed, inserted or reordered one breaks
the `prev_hash` link of the record after it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from kfmops.io.canonical import canonical_json, sha256_hex

GENESIS = "0" * 64
KEYED = "hmac-sha256"
"""The `chain` marker of a record hashed with a key."""


def record_hash(record: Mapping[str, Any], key: bytes | None = None) -> str:
    """sha256 (hex) of the canonical JSON of `record` without its own `hash` field; with `key`, an
    HMAC-SHA256 instead, so that a chain edited and re-hashed by someone without the key fails to verify."""
    body = {name: value for name, value in record.items() if name != "hash"}
    if key is None:
        return sha256_hex(body)
    return hmac.new(key, canonical_json(body).encode(), hashlib.sha256).hexdigest()


def link(record: dict[str, Any], prev_hash: str, key: bytes | None = None) -> dict[str, Any]:
    """`record` with `prev_hash` and `hash` set, chained after the record whose hash is `prev_hash`; with
    `key`, marked `"chain": "hmac-sha256"` (inside what is hashed) and hashed with it."""
    linked = {**record, "prev_hash": prev_hash} | ({"chain": KEYED} if key is not None else {})
    linked["hash"] = record_hash(linked, key)
    return linked


def content_problem(record: Mapping[str, Any], key: bytes | None = None) -> str | None:
    """Why `record`'s content does not match its hash, or None when it does.

    With `key`, every record must be keyed: a record hashed without the key (an edit re-hashed by someone
    who does not hold it) fails, marker or not. Without `key`, a keyed record cannot be checked and fails too.
    """
    keyed = record.get("chain") == KEYED
    if key is not None and not keyed:
        return "it is not keyed although the key is set: written without the key, or edited and re-hashed without it"
    if key is None and keyed:
        return "it is keyed (HMAC): set the key (KFMOPS_LEDGER_KEY) to verify it"
    if record.get("hash") != record_hash(record, key):
        return "its content does not match its hash"
    return None


def problems(record: Mapping[str, Any], prev_hash: str, key: bytes | None = None) -> list[str]:
    """Why `record` does not follow the record whose hash is `prev_hash` (empty when it does)."""
    found = []
    if (problem := content_problem(record, key)) is not None:
        found.append(problem)
    if record.get("prev_hash") != prev_hash:
        found.append("its prev_hash does not match the record before it")
    return found
