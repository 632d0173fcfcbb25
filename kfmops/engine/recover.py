"""Recover an interrupted transaction from its WAL: undo it (default) or finish it (`--forward`).

For each announced batch, the live values and, where the backend holds them, the idempotency keys say
whether its write happened (`BatchRunner.found`): "written" needs the after value *and* this
transaction's key on it (Redis, Neo4j); the after value that someone else wrote (no key, or another
transaction's) is "moved", like a value that is neither before nor after. Recovery never claims or undoes
someone else's write: undoing writes every announced batch back to the values observed before it, newest
first, except the moved references, which are left as found and reported ('kfmops drift' shows them,
for a person to decide); finishing forward is refused while any reference moved. Undoing is never
blocked by policy, because blocking it would leave references half-changed (the findings are still
recorded). Finishing forward needs policy to allow the plan and every precondition to still hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kfmops.engine import gates
from kfmops.engine.runner import BatchRunner, append_durably, conflicts, stale
from kfmops.engine.session import Session
from kfmops.engine.settle import settle, settle_finished
from kfmops.errors import StalePlan
from kfmops.plans.model import Plan, StateRef
from kfmops.plans.transaction import Outcome, Transaction, cut_batches
from kfmops.stores.base import WalEntry
from kfmops.stores.state import State
from kfmops.stores.wal import Replay, WalLog, WalStep, is_finished


@dataclass(frozen=True)
class Recovery:
    """What `recover` found and did. outcome: nothing, discarded, restored or completed."""

    mode: str
    outcome: str
    message: str
    transaction: Transaction | None = None
    written: dict[str, str] = field(default_factory=dict)
    restored: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # moved by someone else: left as found


def recover(session: Session, *, forward: bool = False, lock_timeout: float = 0) -> Recovery:
    mode = "forward" if forward else "compensate"
    gates.refuse_if_red(session.workspace.section("apply"), "recover")
    with session.lock.held("recover", None, lock_timeout):
        settle_finished(session)
        pending = [entry for entry in session.stores.wal.open_entries() if not is_finished(entry.records)]
        if not pending:
            return Recovery(mode, "nothing", "no unfinished apply; nothing to recover")
        entry = pending[0]
        if entry.records[:1] == [] or entry.records[0].type is not WalStep.BEGIN:
            session.stores.wal.discard(entry.apply_id)
            return Recovery(
                mode,
                "discarded",
                f"{entry.apply_id}.jsonl held no complete BEGIN record: the apply died before announcing any "
                "write; nothing was changed",
            )
        return _forward(session, entry) if forward else _compensate(session, entry)


def _start(session: Session, entry: WalEntry, mode: str) -> tuple[Replay, dict[str, str], WalLog, BatchRunner]:
    replay = Replay.of(entry.records, entry.location)
    log = session.stores.wal.resume(entry)
    runner = BatchRunner(session, log, replay.transaction, session.lock.check)
    try:
        written = {
            address: what
            for intent in replay.intents.values()
            for address, what in runner.found(intent.batch, intent.observed).items()
        }
    except BaseException:
        log.close()
        raise
    append_durably(
        log,
        replay.transaction,
        WalStep.FAILED,
        error="interrupted; resumed by 'kfmops recover'",
        mode=mode,
        found=written,
    )
    return replay, written, log, runner


def _compensate(session: Session, entry: WalEntry) -> Recovery:
    replay, written, log, runner = _start(session, entry, "compensate")
    transaction = replay.transaction
    session.evaluate(interrupted_plan(session, transaction), "recover")
    undo = [intent.batch for number, intent in replay.intents.items() if number not in replay.compensated]
    restored = runner.compensate(undo, transaction.observed)
    append_durably(log, transaction, WalStep.ABORTED, compensated=restored, recovered=True)
    log.close()
    reason = f"compensated interrupted {transaction.operation} {transaction.id}"
    settled = settle(session, transaction, Outcome.ABORTED, log.count, compensated=restored, recovered=reason)
    left = sorted(address for address, what in written.items() if what == "moved")
    message = (
        f"every reference of {transaction.id} is back at its value before the apply"
        if not left
        else f"{transaction.id} is undone except {', '.join(left[:10])}, which someone else moved: left as found"
    )
    return Recovery("compensate", "restored", message, settled, written, restored, left=left)


def _forward(session: Session, entry: WalEntry) -> Recovery:
    replay, written, log, runner = _start(session, entry, "forward")
    transaction = replay.transaction
    try:
        if replay.compensating:
            raise StalePlan(
                "the interrupted apply had already started undoing itself; run 'kfmops recover' without --forward"
            )
        session.judge(interrupted_plan(session, transaction), "recover --forward", origin=dict(transaction.origin))
        moved = sorted(address for address, what in written.items() if what == "moved")
        if moved:
            raise StalePlan(
                f"cannot finish forward: {', '.join(moved[:10])} moved outside kfmops since the "
                "interrupted apply; run 'kfmops recover' to restore the previous values"
            )
        remaining = [c for c in transaction.mutations if c.address not in replay.announced]
        found = conflicts(remaining, session.providers.read_live(c.reference for c in remaining))
        if found:
            raise stale("cannot finish forward, preconditions no longer hold", found)
    except BaseException:
        log.close()
        raise
    completed: list[str] = []
    for number, intent in sorted(replay.intents.items()):
        if number not in replay.done:
            runner.write(intent.batch, {c.address: c.after for c in intent.batch.changes})
            append_durably(log, transaction, WalStep.DONE, batch=number)
            completed.extend(intent.batch.addresses)
    workspace = session.workspace
    rest = cut_batches(
        remaining, workspace.apply_order, workspace.batch_size, first=max(replay.intents, default=-1) + 1
    )
    transaction = runner.run(rest, len(remaining))
    completed.extend(c.address for batch in rest for c in batch.changes)
    append_durably(log, transaction, WalStep.COMMIT, recovered=True)
    log.close()
    reason = f"completed interrupted {transaction.operation} {transaction.id} forward"
    settled = settle(session, transaction, Outcome.COMMITTED, log.count, recovered=reason)
    return Recovery(
        "forward", "completed", f"{transaction.id} was completed as planned", settled, written, completed=completed
    )


def interrupted_plan(session: Session, transaction: Transaction) -> Plan:
    """The plan an interrupted transaction was running, rebuilt from its BEGIN record (for policy)."""
    state = session.state() or State.new(transaction.state.lineage)
    return Plan(
        plan_id=transaction.plan_id,
        created_at=transaction.started,
        operation=transaction.operation,
        workspace=str(session.workspace.root),
        state=StateRef(state.lineage, state.serial),
        changes=transaction.changes,
        datasets=dict(transaction.datasets),
        origin=dict(transaction.origin),
    )
