"""Canonical JSON and the digests built on it: one byte form per value, for hashes and comparisons."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Deterministic JSON used for digests, comparisons and fingerprints."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def fingerprint(value: Any) -> str:
    """Short, stable digest of a value (the compare-and-swap precondition shown in plans)."""
    return "sha256:" + sha256_hex(value)[:16]


def digest(value: Any) -> str:
    """`sha256:<hex>` of the canonical JSON of `value`."""
    return "sha256:" + sha256_hex(value)
