"""Apply a plan safely: under the lock, with a write-ahead log, as compare-and-swap, undoable.

Order of one apply: verify the plan against the state -> check every precondition against live
values -> WAL BEGIN -> per batch: re-read, compare-and-swap, INTENT (with the observed before
values), write, read back, DONE -> COMMIT -> state, history and inverse plan (settle). On failure,
completed batches are compensated in reverse from the observed before values, then ABORTED.
COMMIT is the point of no return: settling is redone from the WAL if the process dies after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from deepdiff import DeepDiff

from kfmops.engine import crash, wal
from kfmops.engine.history import ApplyRecord
from kfmops.engine.lock import operator
from kfmops.engine.planner import new_id, now
from kfmops.engine.state import State
from kfmops.errors import BackendError, ExitCode, KfmopsError, StalePlan
from kfmops.plans.model import Action, Change, Plan
from kfmops.providers.base import Provider, chunks
from kfmops.references import Reference

Progress = Callable[[str, int], None]


@dataclass
class ApplyResult:
    apply_id: str
    plan_id: str
    operation: str
    outcome: str
    summary: dict[str, int]
    applied: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    serial: int | None = None
    wal_path: str | None = None
    wal_records: int = 0
    error: str | None = None
    seconds: float = 0.0
    conflicts: list[str] = field(default_factory=list)


class ApplyFailed(KfmopsError):
    """The apply did not commit; `result` says what was applied and what was undone."""

    def __init__(self, message: str, result: ApplyResult, exit_code: ExitCode = ExitCode.ERROR):
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


@dataclass(frozen=True)
class Batch:
    number: int
    backend: str
    changes: Sequence[Change]

    @property
    def references(self) -> list[Reference]:
        return [c.reference for c in self.changes]


def plan_batches(changes: Sequence[Change], order: Sequence[str], size: int) -> list[Batch]:
    """Mutations grouped by kind (in apply order) and backend, cut into batches of `size`."""
    groups: dict[tuple[int, str, str], list[Change]] = {}
    rank = {kind: i for i, kind in enumerate(order)}
    for change in changes:
        if change.action.mutates:
            reference = change.reference
            groups.setdefault((rank[reference.kind], reference.kind, reference.backend), []).append(change)
    batches = []
    for (_, _, backend), group in sorted(groups.items()):
        for part in chunks(group, size):
            batches.append(Batch(len(batches), backend, part))
    return batches


def describe_conflict(change: Change, live: Any) -> str:
    """One line saying what moved since the plan and by how much."""
    moved = DeepDiff(change.before, live, ignore_order=True, verbose_level=2).to_dict()
    detail = "; ".join(f"{kind}: {value}" for kind, value in moved.items()) if moved else ""
    return f"{change.address}: plan expected {change.before!r}, live is {live!r}" + (f" ({detail})" if detail else "")


def check_preconditions(changes: Sequence[Change], live: dict[str, Any]) -> list[str]:
    return [describe_conflict(c, live.get(c.address)) for c in changes if live.get(c.address) != c.before]


def change_dict(change: Change, before_version: str | None = None) -> dict[str, Any]:
    reference = change.reference
    return {
        "version": change.version,
        "before_version": before_version,
        "address": change.address,
        "kind": reference.kind,
        "backend": reference.backend,
        "dataset": reference.dataset,
        "locator": reference.locator,
        "action": change.action.value,
        "before": change.before,
        "after": change.after,
    }


def change_from(record: dict[str, Any], reason: str = "") -> Change:
    reference = Reference(
        record["address"], record["kind"], record["backend"], record["locator"], record.get("dataset")
    )
    return Change(
        reference, Action(record["action"]), record["before"], record["after"], reason, version=record.get("version")
    )


def inverse_of(change: Change, observed_before: Any, before_version: str | None) -> Change:
    """Undo `change` back to the value observed during apply (not the plan's copy of it)."""
    if observed_before is None:
        action = Action.DELETE
    elif change.after is None:
        action = Action.CREATE
    else:
        action = Action.UPDATE
    reversed_change = change.reversed()
    return Change(
        change.reference, action, change.after, observed_before, reversed_change.reason, change.source, before_version
    )


class Applier:
    """Runs one plan's batches against the providers, logging each step to the WAL."""

    def __init__(
        self,
        providers: Any,
        log: wal.WalWriter,
        progress: Progress | None = None,
        guard: Callable[[], None] | None = None,
        span: Callable[..., AbstractContextManager[Any]] | None = None,
    ):
        self.providers = providers
        self.log = log
        self.progress = progress or (lambda _stage, _n: None)
        self.guard = guard or (lambda: None)
        self.span = span or (lambda _name, **_attributes: nullcontext())

    def _provider(self, batch: Batch) -> Provider:
        return self.providers.get(batch.backend)

    def _write_verified(self, batch: Batch, items: list[tuple[Reference, Any]]) -> None:
        provider = self._provider(batch)
        provider.write(items)  # the registry's Resilient wrapper turns faults into BackendError
        crash.reached(f"write:{batch.number}")
        readback = provider.read([reference for reference, _ in items])
        wrong = [reference.address for reference, value in items if readback.get(reference.address) != value]
        if wrong:
            raise BackendError(batch.backend, f"read-back after write differs for {', '.join(wrong[:5])}")

    def run(self, batches: list[Batch]) -> dict[int, dict[str, Any]]:
        """Apply every batch; returns the observed before values per batch. Raises on the first failure,
        with `self.started` holding the batches whose INTENT was logged."""
        self.started: dict[int, dict[str, Any]] = {}
        for batch in batches:
            self.guard()
            with self.span("kfmops.batch", batch=batch.number, backend=batch.backend, references=len(batch.changes)):
                self._run_batch(batch)
            self.progress("applied", len(batch.changes))
        return self.started

    def _run_batch(self, batch: Batch) -> None:
        live = self._provider(batch).read(batch.references)
        conflicts = check_preconditions(batch.changes, live)
        if conflicts:
            raise StalePlan("live values moved since the plan was made:\n  " + "\n  ".join(conflicts))
        observed = {c.address: live.get(c.address) for c in batch.changes}
        self.log.append(
            wal.INTENT,
            batch=batch.number,
            backend=batch.backend,
            addresses=[c.address for c in batch.changes],
            observed=observed,
        )
        self.started[batch.number] = observed
        self._write_verified(batch, [(c.reference, c.after) for c in batch.changes])
        self.log.append(wal.DONE, batch=batch.number)

    def compensate(self, batches: list[Batch], started: dict[int, dict[str, Any]]) -> list[str]:
        """Restore every started batch, newest first, to its observed before values."""
        restored = []
        for batch in sorted((b for b in batches if b.number in started), key=lambda b: -b.number):
            observed = started[batch.number]
            self.log.append(wal.COMPENSATE, batch=batch.number, addresses=list(observed))
            self._write_verified(batch, [(c.reference, observed[c.address]) for c in batch.changes])
            self.log.append(wal.COMPENSATED, batch=batch.number)
            restored.extend(observed)
            self.progress("compensated", len(batch.changes))
        return restored


def settle(
    state: State,
    begin: dict[str, Any],
    observed: dict[str, Any],
    apply_id: str,
    finished: str,
    outcome: str,
    compensated: Sequence[str] = (),
) -> ApplyRecord:
    """Record a finished apply in `state` (in memory) and return its history record.

    committed: every change's after value is recorded (no-ops adopt, deletes forget), the serial
    advances, the plan id is consumed, and the inverse is built from the observed before values.
    aborted: every reference is back at its observed value, so the state is left as it was.
    """
    changes = [change_from(c) for c in begin["changes"]]
    before_versions = {c["address"]: c.get("before_version") for c in begin["changes"]}
    applied: list[str] = []
    inverse: list[dict[str, Any]] = []
    if outcome == "committed":
        for change in changes:
            state.record(change.reference, change.after, apply_id, change.version)
        mutations = [c for c in changes if c.action.mutates]
        applied = [c.address for c in mutations]
        inverse = [
            change_dict(inverse_of(c, observed.get(c.address, c.before), before_versions.get(c.address)))
            for c in reversed(mutations)
        ]
        state.applied_plans.append(begin["plan_id"])
        state.datasets.update(begin.get("datasets", {}))
        state.serial += 1
        _track_hotfixes(state, begin, changes, apply_id)
    summary = {"create": 0, "update": 0, "delete": 0, "no_op": 0}
    for change in changes:
        summary["no_op" if change.action is Action.NOOP else change.action.value] += 1
    return ApplyRecord(
        apply_id=apply_id,
        plan_id=begin["plan_id"],
        operation=begin["operation"],
        operator=begin["operator"],
        started=begin["time"],
        finished=finished,
        outcome=outcome,
        summary=summary,
        wal=f"{apply_id}.jsonl",
        serial=state.serial,
        reason=begin.get("reason"),
        datasets=begin.get("datasets", {}),
        rolls_back=begin.get("rolls_back"),
        applied=applied,
        compensated=list(compensated),
        inverse=inverse,
    )


def _track_hotfixes(state: State, begin: dict[str, Any], changes: list[Change], apply_id: str) -> None:
    """A hotfix marks its addresses until git holds the value; any other apply of them settles it."""
    for change in changes:
        if begin["operation"] != "hotfix":
            state.hotfixes.pop(change.address, None)
        elif change.action.mutates:
            state.hotfixes[change.address] = {
                "apply_id": apply_id,
                "value": change.after,
                "reason": begin.get("reason"),
                "patch": begin.get("origin", {}).get("patch"),
            }


def begin_fields(
    plan: Plan,
    operation: str,
    lock_info: Any,
    reason: str | None,
    rolls_back: str | None,
    versions: dict[str, str | None],
) -> dict:
    """The BEGIN record: everything recover and settle need without the plan file.

    `versions` are the dataset versions the state last recorded, kept as each change's
    before_version so that the inverse plan knows which version it restores.
    """
    return {
        "plan_id": plan.plan_id,
        "operation": operation,
        "operator": operator(),
        "time": now(),
        "lock_id": lock_info.id,
        "fencing_token": lock_info.fencing_token,
        "state": {"lineage": plan.state.lineage, "serial": plan.state.serial},
        "reason": reason,
        "rolls_back": rolls_back,
        "origin": plan.origin,
        "datasets": plan.datasets,
        "changes": [change_dict(c, versions.get(c.address)) for c in plan.changes],
    }


def new_apply_id() -> str:
    return new_id("apply")


def elapsed(start: float) -> float:
    return round(time.monotonic() - start, 3)
