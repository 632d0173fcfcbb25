"""Apply a plan safely: under the lock, with a write-ahead log, as compare-and-swap, undoable.

Order: gates (kill switch, freeze) -> lock -> settle finished WALs -> refuse while one is unfinished (exit 6) ->
freeze and SLO gates (exit 3) -> verify the plan against the state -> compare every before value with the live
one -> policy -> WAL BEGIN -> batches (runner) -> COMMIT -> settle. On failure, the started batches are
compensated from the values observed under the lock, newest first, then ABORTED and settled. Rollback, hotfix,
repair and recovery all come through `run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from kfmops.engine import gates, slo
from kfmops.engine.freeze import refuse_if_frozen
from kfmops.engine.review import check_against_desired
from kfmops.engine.runner import BatchRunner, append_durably, conflicts, stale
from kfmops.engine.session import Session
from kfmops.engine.settle import settle, settle_finished
from kfmops.errors import Diagnostic, ExitCode, InputError, KfmopsError, RecoveryRequired, StalePlan
from kfmops.events import TransactionStarted
from kfmops.gitops import repo
from kfmops.io.clock import new_id, now
from kfmops.io.redact import Redactor
from kfmops.plans.model import Action, Operation, Plan
from kfmops.plans.transaction import Outcome, Transaction
from kfmops.stores.lock import LockInfo, ci_run_url, operator
from kfmops.stores.state import State
from kfmops.stores.wal import WalLog, WalStep, begin_fields, is_finished


@dataclass(frozen=True)
class ApplyOptions:
    lock_timeout: float = 0
    allow_dirty: bool = False
    reason: str | None = None  # default: the subject of the commit the plan was made at (else of HEAD)
    approved_by: str | None = None  # the person who approved it: a CI run acts on their behalf (PROV)
    rolls_back: str | None = None
    fresh: bool = False  # the plan was made under the lock this apply holds: its reads need no repeating
    override_slo: str | None = None  # the reason to apply although an error budget is exhausted


DEFAULT_OPTIONS = ApplyOptions()


class ApplyFailed(KfmopsError):
    """The transaction did not commit; it was undone, and `transaction` says what was written and restored."""

    def __init__(self, message: str, transaction: Transaction, exit_code: ExitCode):
        super().__init__(message)
        self.transaction = transaction
        self.exit_code = exit_code


def apply(session: Session, plan: Plan, options: ApplyOptions = DEFAULT_OPTIONS) -> Transaction:
    """Apply `plan`; returns the settled transaction (outcome NOTHING when there was nothing to write)."""
    gates.refuse_if_red(session.workspace.section("apply"), str(plan.operation))
    refuse_if_frozen(session, str(plan.operation))
    if plan.operation is Operation.APPLY:
        check_git(session, plan, options.allow_dirty)
    with session.lock.held(str(plan.operation), plan.plan_id, options.lock_timeout) as lock:
        settle_finished(session)
        refuse_if_unfinished(session)
        refuse_if_frozen(session, str(plan.operation))  # again under the lock: a freeze set while this one waited
        overrides = slo.gate(session, "apply", options.override_slo) if plan.operation is Operation.APPLY else []
        state = session.state() or State.new(plan.state.lineage)
        verify(session, plan, state)
        if not options.fresh:  # a plan this process just made from the desired state needs no second look
            check_against_desired(session, plan, state)
        mutations = plan.mutations
        if not options.fresh:  # a saved plan: check it all before the WAL begins, so a refusal writes nothing
            # an import records the value it saw: it too must still be what is live (a forget needs nothing)
            checked = [c for c in plan.changes if c.action.mutates or c.action is Action.IMPORT]
            found = conflicts(checked, session.providers.read_live(c.reference for c in checked))
            if found:
                raise stale("live values moved since the plan was made (nothing was changed)", found)
            missing = session.providers.missing_targets([(c.reference, c.after) for c in mutations if c.after])
            if missing:
                raise InputError([Diagnostic(f"{a} points at a target that does not exist: {m}") for a, m in missing])
        said, origin = judge_attempt(session, plan, options)
        transaction = begin(plan, state, lock, replace(options, reason=said), origin, overrides)
        if (
            not mutations
            and not plan.exposure
            and all(
                (managed := state.resources.get(c.address)) is not None and managed.value == c.after
                for c in plan.changes
            )
        ):
            return transaction.settle(Outcome.NOTHING, now(), state.serial)
        return run(session, transaction, session.stores.wal.begin(transaction.id))


def judge_attempt(
    session: Session, plan: Plan, options: ApplyOptions = DEFAULT_OPTIONS
) -> tuple[str | None, dict[str, Any]]:
    """The verdict on applying `plan` (policy and checkpoints): PolicyDenied (exit 3) with the attempt ledgered,
    or the reason and origin the transaction will carry (see `attempt`), with the checkpoint results found now
    (never those a plan file says)."""
    said, origin = attempt(session, plan, options)
    result = session.judge(plan, str(plan.operation), reason=said, origin=origin)
    return said, origin | {"checks": list(result.checks)}


def attempt(session: Session, plan: Plan, options: ApplyOptions) -> tuple[str | None, dict[str, Any]]:
    """Why and from where `plan` is applied: the reason (`--reason`, else the commit subject), and the
    origin the ledger and PROV record: the git commit, the CI run URL and the approver, where known.

    Operator text is kept in the WAL, history and state and shown by plan and drift: never a secret in it.
    """
    commit = plan.git.get("commit") or repo.describe(session.workspace.desired_dir).get("commit")
    reason = options.reason or (repo.subject(session.workspace.desired_dir, commit) if commit else None)
    origin = {"git_commit": commit, "ci_run_url": ci_run_url(), "approved_by": options.approved_by}
    redact = Redactor(session.workspace.secret_values())
    return (redact.text(reason) if reason else None), {k: v for k, v in origin.items() if v}


def begin(
    plan: Plan,
    state: State,
    lock: LockInfo,
    options: ApplyOptions,
    origin: Mapping[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> Transaction:
    """The transaction of `plan` as fixed at BEGIN; each change knows the version it would restore.
    `origin` (see `attempt`) is kept with the plan's own origin, which also names the gates an operator
    overrode for it."""
    versions = state.versions()
    # a no-op that state records as it is moves nothing and commits nothing: the WAL, history, ledger and
    # lineage of a change of K references then cost O(K), not the size of the workspace
    changes = [c for c in plan.changes if c.action is not Action.NOOP or not state.keeps(c)]
    return Transaction(
        id=new_id("apply"),
        plan_id=plan.plan_id,
        operation=plan.operation,
        operator=operator(),
        started=now(),
        state=plan.state,
        changes=tuple(replace(c, before_version=versions.get(c.address)) for c in changes),
        datasets=plan.datasets,
        unchanged=len(plan.changes) - len(changes),
        origin={**plan.origin, **(origin or {})} | ({"overrides": overrides} if overrides else {}),
        reason=options.reason,
        rolls_back=options.rolls_back or plan.origin.get("rolls_back"),
        lock_id=lock.id,
        fencing_token=lock.fencing_token,
    )


def run(session: Session, transaction: Transaction, log: WalLog) -> Transaction:
    """Log BEGIN, write every batch, COMMIT and settle; on failure undo what was written and raise ApplyFailed.

    A WAL record that cannot be written (a full disk, an I/O error) stops everything before the write it
    would announce: nothing unannounced ever reaches a backend.
    """
    try:
        log.append(WalStep.BEGIN, **begin_fields(transaction))
    except OSError as exc:
        log.close()
        session.stores.wal.discard(transaction.id)
        raise KfmopsError(f"cannot write the WAL ({exc.strerror or exc}); nothing was changed") from exc
    session.bus.emit(TransactionStarted(transaction))
    workspace = session.workspace
    batches = transaction.batches(workspace.apply_order, workspace.batch_size)
    runner = BatchRunner(session, log, transaction, session.lock.check)
    try:
        transaction = runner.run(batches, len(transaction.mutations))
    except BaseException as exc:
        undone = abort(session, runner, log, exc)
        code = ExitCode.STALE if isinstance(exc, StalePlan) else ExitCode.ERROR
        raise ApplyFailed(f"{transaction.operation} failed and was undone: {undone.error}", undone, code) from exc
    append_durably(log, transaction, WalStep.COMMIT)
    log.close()
    return settle(session, transaction, Outcome.COMMITTED, log.count)


def abort(session: Session, runner: BatchRunner, log: WalLog, error: BaseException) -> Transaction:
    """Compensate the started batches and settle as aborted; RecoveryRequired when undoing fails too."""
    message = str(error) or type(error).__name__
    append_durably(log, runner.transaction, WalStep.FAILED, error=message)
    try:
        restored = runner.compensate(runner.started, runner.transaction.observed)
    except Exception as failure:
        log.close()
        raise RecoveryRequired(
            f"{runner.transaction.operation} failed ({message}) and undoing it failed too ({failure}); some "
            f"references may be half-changed. Run 'kfmops recover' once the backend is back "
            f"(WAL of {runner.transaction.id})"
        ) from failure
    append_durably(log, runner.transaction, WalStep.ABORTED, compensated=restored)
    log.close()
    return settle(session, runner.transaction, Outcome.ABORTED, log.count, compensated=restored, error=message)


def refuse_if_unfinished(session: Session) -> None:
    """Exit 6 while a WAL neither committed nor aborted: `recover` must resolve it first."""
    pending = [entry for entry in session.stores.wal.open_entries() if not is_finished(entry.records)]
    if pending:
        raise RecoveryRequired(
            f"an earlier apply did not finish ({pending[0].apply_id}.jsonl); "
            "run 'kfmops recover' (or 'kfmops recover --forward') first"
        )


def check_git(session: Session, plan: Plan, allow_dirty: bool) -> None:
    """A plan from uncommitted desired state needs --allow-dirty; `git.apply_branch` pins the branch."""
    if plan.git.get("dirty") and not allow_dirty:
        raise KfmopsError(
            f"plan {plan.plan_id} was made from uncommitted desired state; commit first, or pass --allow-dirty"
        )
    branch = session.workspace.section("git").get("apply_branch")
    commit = plan.git.get("commit")
    if branch and commit and not repo.is_on_branch(session.workspace.desired_dir, commit, branch):
        raise KfmopsError(
            f"plan {plan.plan_id} was made at commit {commit[:12]}, which is not on "
            f"branch {branch!r} (kfmops.yaml git.apply_branch); merge it first"
        )


def verify(session: Session, plan: Plan, state: State) -> None:
    """Refuse a plan made for another lineage, already applied, or whose references applies since moved."""
    if plan.state.lineage != state.lineage:
        raise StalePlan(
            f"plan {plan.plan_id} was made for state lineage {plan.state.lineage}, "
            f"but this workspace's state is lineage {state.lineage}"
        )
    if plan.plan_id in state.applied_plans:
        raise StalePlan(f"plan {plan.plan_id} was already applied; make a new plan")
    if plan.state.serial == state.serial:
        return
    moved: set[str] = set()
    for entry in session.stores.history.entries():
        if entry["outcome"] == "committed" and (entry.get("serial") or 0) > plan.state.serial:
            moved.update(session.stores.history.load(entry["apply_id"]).applied)
    overlap = sorted(moved & {c.address for c in plan.changes})
    if overlap:
        raise StalePlan(
            f"plan {plan.plan_id} was made at state serial {plan.state.serial}; applies since "
            f"(now serial {state.serial}) changed {len(overlap)} of its references: "
            f"{', '.join(overlap[:10])}. Make a new plan"
        )
