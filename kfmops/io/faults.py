"""Fault injection for tests: off unless KFMOPS_FAULT is set; then chosen file writes fail.

`KFMOPS_FAULT=PATTERN@STEP:N:ERROR[,...]`: the N-th time (1-based, per process; `N+`: that time and every
later one, as a disk that stays full) a write whose path matches the glob PATTERN reaches STEP (`write`,
`fsync` or `rename`), it fails with ERROR: an errno
name (ENOSPC, EIO, EACCES, ...) or SHORT (a short write: half the bytes land, then ENOSPC). Example:
`KFMOPS_FAULT='*/wal/*@write:3:ENOSPC'` fails the third WAL record of an apply as a full disk would.
Every durable write of kfmops goes through `io.files`, which asks here first.
"""

from __future__ import annotations

import errno
import fnmatch
import os
from pathlib import Path

VARIABLE = "KFMOPS_FAULT"
_reached: dict[str, int] = {}  # how often each rule's point was reached in this process


def check(path: Path | str, step: str) -> str | None:
    """Raise the configured OSError at this point, or return "SHORT" for a short write; None when off."""
    spec = os.environ.get(VARIABLE)
    if not spec:
        return None
    for rule in spec.split(","):
        where, _, rest = rule.partition(":")
        pattern, _, rule_step = where.partition("@")
        nth, _, error = rest.partition(":")
        if (rule_step or "write") != step or not fnmatch.fnmatch(str(path), pattern):
            continue
        _reached[rule] = _reached.get(rule, 0) + 1
        first = int(nth.rstrip("+"))
        if _reached[rule] != first and not (nth.endswith("+") and _reached[rule] > first):
            continue
        if error == "SHORT":
            return error
        code = getattr(errno, error, errno.EIO)
        raise OSError(code, f"{os.strerror(code)} (injected by {VARIABLE})", str(path))
    return None
