"""Progress of a transaction, as an observer of the engine's events: a bar with total, rate and ETA on a
terminal; one plain line per batch (`n/total`, rate) otherwise, so CI logs stay readable."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from kfmops.events import BatchCompensated, BatchFinished, BatchStarted, Event, TransactionAborted, TransactionCommitted


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


class BarProgress:
    """A rich progress bar of the references written: total, rate, time remaining."""

    def __init__(self, err: Console):
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[progress.data.speed]{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self.task: TaskID | None = None
        self.started = time.monotonic()

    def __call__(self, event: Event) -> None:
        if isinstance(event, BatchStarted) and self.task is None:
            self.bar.start()
            total = len(event.transaction.mutations)
            self.task = self.bar.add_task(f"{event.transaction.operation}", total=total, rate="")
        elif isinstance(event, BatchFinished) and self.task is not None:
            rate = event.done / max(time.monotonic() - self.started, 1e-6)
            self.bar.update(self.task, completed=event.done, rate=f"{rate:,.0f}/s")
        elif isinstance(event, BatchCompensated) and self.task is not None:
            self.bar.update(self.task, description="compensating")
        elif isinstance(event, TransactionCommitted | TransactionAborted):
            self.bar.stop()


def progress_for(err: Console) -> PlainProgress | BarProgress:
    return BarProgress(err) if err.is_terminal else PlainProgress(err)
