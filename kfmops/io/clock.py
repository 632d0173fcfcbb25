"""Ids and clocks, in one place: every id kfmops mints and every timestamp it records come from here."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta


def now() -> str:
    """The current time, UTC, to the second (ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def today() -> str:
    """The current UTC date (YYYY-MM-DD): the day the default policies judge consent expiry against."""
    return datetime.now(UTC).date().isoformat()


def new_id(prefix: str) -> str:
    """A sortable, unique id such as `plan-20261126T153000Z-3f9a1c`."""
    return f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `30d` or `1w` as a timedelta; ValueError naming the accepted forms otherwise."""
    found = DURATION.match(str(text).strip())
    if not found:
        raise ValueError(f"{text!r} is not a duration; write a number and s, m, h, d or w (e.g. 30d)")
    return timedelta(**{UNITS[found[2]]: int(found[1])})


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone), or a duration from now (`2h`)."""
    try:
        return datetime.now(UTC) + parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time (2026-12-01T18:00:00Z) nor a duration (2h)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def stamp(moment: datetime) -> str:
    """`moment` as kfmops records times (UTC, to the second)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")
