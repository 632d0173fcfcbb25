"""Counts the fault-injection points a kfmops process reaches, for tests/test_fault_matrix.py.

Put this folder on PYTHONPATH and set KFMOPS_FAULT_TRACE to a file: every call of
`kfmops.io.faults.check(path, step)` (one per durable write step) appends `step<TAB>path` to it. Nothing
else changes: the hook still injects whatever KFMOPS_FAULT asks for.
"""

from __future__ import annotations

import os

if trace := os.environ.get("KFMOPS_FAULT_TRACE"):
    from kfmops.io import faults

    _check = faults.check

    def _traced(path: os.PathLike[str] | str, step: str) -> str | None:
        with open(trace, "a", encoding="utf-8") as log:
            log.write(f"{step}\t{path}\n")
        return _check(path, step)

    faults.check = _traced
