"""Ids and clocks, in one place: every id kfmops mints and every timestamp it records come from here."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def now() -> str:
    """The current time, UTC, to the second (ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_id(prefix: str) -> str:
    """A sortable, unique id such as `plan-20261126T153000Z-3f9a1c`."""
    return f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
