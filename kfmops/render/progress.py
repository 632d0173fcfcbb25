"""Progress of a transaction, as an observer of the engine's events: one plain line per batch on stderr."""

from __future__ import annotations

import time

from rich.console import Console

from kfmops.events import BatchCompensated, BatchFinished, Event


class PlainProgress:
    """`applied n/total references (r/s)` after each batch; `compensated ...` while undoing."""

    def __init__(self, err: Console):
        self.err = err
        self.started = time.monotonic()
        self.compensated = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, BatchFinished):
            rate = event.done / max(time.monotonic() - self.started, 1e-6)
            self.err.print(f"  applied {event.done}/{event.total} references ({rate:,.0f}/s)", style="dim")
        elif isinstance(event, BatchCompensated):
            self.compensated += len(event.batch.changes)
            self.err.print(f"  compensated {self.compensated} references", style="dim")
