"""Commands that change references: apply, rollback, recover and hotfix. Each shows what it will do first
(a plan), asks for `yes` unless --auto-approve, and takes the same safe path."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kfmops.cli.common import LockTimeout, confirm, human, session
from kfmops.cli.consoles import stderr, stdout
from kfmops.errors import ExitCode, KfmopsError, StalePlan

# The engine is imported by the command that runs, not when the CLI starts (--help).
if TYPE_CHECKING:
    from kfmops.engine.apply import ApplyOptions
    from kfmops.engine.session import Session
    from kfmops.plans.model import Plan
    from kfmops.plans.transaction import Transaction
    from kfmops.render.human import HumanView
    from kfmops.render.stream import JsonStream

AutoApprove = typer.Option("--auto-approve", help="Do not ask for approval.")
NoInput = typer.Option("--no-input", help="Never wait for an answer: refuse unless --auto-approve.")
AsJson = typer.Option("--json", help="Stream one JSON object per event on stdout (schemas/event.schema.json).")
Reason = typer.Option(
    "--reason", metavar="TEXT", help="Why, for the ledger and history (default: the git commit subject)."
)
ApprovedBy = typer.Option(
    "--approved-by",
    metavar="PERSON",
    envvar="KFMOPS_APPROVED_BY",
    help="Who approved it; a CI run is recorded as acting on their behalf (ledger, PROV).",
)


def apply(
    plan_file: Annotated[
        Path | None, typer.Argument(metavar="PLAN_FILE", help="Plan file to apply; omit to plan and apply.")
    ] = None,
    auto_approve: Annotated[bool, AutoApprove] = False,
    lock_timeout: Annotated[float, LockTimeout] = 0,
    allow_dirty: Annotated[
        bool, typer.Option("--allow-dirty", help="Apply a plan made from uncommitted desired state.")
    ] = False,
    no_input: Annotated[bool, NoInput] = False,
    as_json: Annotated[bool, AsJson] = False,
    override_slo: Annotated[
        bool, typer.Option("--override-slo", help="Apply although an error budget is exhausted (needs --reason).")
    ] = False,
    reason: Annotated[str | None, Reason] = None,
    approved_by: Annotated[str | None, ApprovedBy] = None,
    refresh_only: Annotated[
        bool, typer.Option("--refresh-only", help="Plan and apply only the acceptance of live drift into state.")
    ] = False,
) -> int:
    """Apply a saved plan (or plan and apply) under the lock, with a WAL and compare-and-swap.

    Example: kfmops apply plans/plan-20261126T120000Z-ab12cd.json
    """
    if override_slo and not (reason or "").strip():
        raise KfmopsError("--override-slo needs --reason TEXT: the override is recorded in the ledger")
    if refresh_only and plan_file is not None:
        raise KfmopsError("--refresh-only plans the acceptance of drift itself; give no PLAN_FILE")
    from kfmops.engine.apply import ApplyOptions, judge_attempt, refuse_if_unfinished
    from kfmops.engine.apply import apply as apply_plan
    from kfmops.engine.plan import PlanRequest
    from kfmops.engine.plan import plan as make_plan
    from kfmops.plans import planfile

    started = time.monotonic()
    with operating("apply", as_json) as (opened, stream):
        options = ApplyOptions(
            lock_timeout=lock_timeout,
            allow_dirty=allow_dirty,
            fresh=plan_file is None,
            reason=reason,
            approved_by=approved_by,
            override_slo=reason if override_slo else None,
        )
        if plan_file is not None:
            signed = bool(opened.workspace.section("apply").get("require_signed_plans", False))
            result = apply_plan(opened, planfile.read(plan_file, require_signature=signed), options)
        else:  # plan and apply under one lock: the plan's live reads are the compare-and-swap values
            with opened.lock.held("apply", None, lock_timeout):
                refuse_if_unfinished(opened)  # before reading backends that may still be down
                chosen = make_plan(opened, PlanRequest(refresh_only=refresh_only))
                show(stream, chosen, lambda view: view.plan(chosen))
                if denied(chosen):
                    judge_attempt(opened, chosen, options)  # ledgers the denied attempt, exits 3
                if not chosen.has_changes() and not (refresh_only and chosen.drift):
                    stderr.print("Nothing to apply.")
                elif not approved("Apply these changes?", "Apply", auto_approve, no_input):
                    return int(ExitCode.ERROR)
                result = apply_plan(opened, chosen, options)
    return finished(stream, result, started)


def rollback(
    apply_id: Annotated[
        str | None, typer.Argument(metavar="APPLY_ID", help="The apply to undo (see 'kfmops history').")
    ] = None,
    last: Annotated[bool, typer.Option("--last", help="Undo the most recent committed apply.")] = False,
    auto_approve: Annotated[bool, AutoApprove] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="PLAN_FILE", help="Save the rollback as a plan file to review and apply."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the rollback plan and an audit report; change nothing.")
    ] = False,
    lock_timeout: Annotated[float, LockTimeout] = 0,
    no_input: Annotated[bool, NoInput] = False,
    as_json: Annotated[bool, AsJson] = False,
    reason: Annotated[str | None, Reason] = None,
    approved_by: Annotated[str | None, ApprovedBy] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="APPLY_ID", help="Undo every committed apply after APPLY_ID, as one plan."),
    ] = None,
    to_time: Annotated[
        str | None,
        typer.Option("--to-time", metavar="TIME", help="Undo every committed apply after TIME (ISO 8601, UTC)."),
    ] = None,
    force_live: Annotated[
        bool,
        typer.Option("--force-live", help="With --to/--to-time: overwrite references changed outside kfmops."),
    ] = False,
) -> int:
    """Undo an apply exactly, from the before values it observed: shows the inverse plan (with the policy
    verdict) and asks for `yes`; refuses if live values moved since. With --to or --to-time, undo every
    apply after that point as one plan.

    Example: kfmops rollback --last --dry-run; kfmops rollback --to-time 2026-11-30T09:00:00Z
    """
    from kfmops.engine.apply import ApplyOptions, judge_attempt
    from kfmops.engine.apply import apply as apply_plan
    from kfmops.engine.rollback import judged_rollback_plan

    options = ApplyOptions(lock_timeout=lock_timeout, reason=reason, approved_by=approved_by)
    if to is not None or to_time is not None:
        if apply_id or last or out is not None:
            raise KfmopsError("--to and --to-time go without APPLY_ID, --last and --out (review with --dry-run)")
        return rollback_to(to, to_time, force_live, options, auto_approve, dry_run, no_input, as_json)
    if force_live:
        raise KfmopsError("--force-live goes with --to or --to-time")
    if bool(apply_id) == last:
        raise KfmopsError("Give exactly one of APPLY_ID, --last, --to or --to-time")
    started = time.monotonic()
    with operating("rollback", as_json) as (opened, stream):
        plan, undone = judged_rollback_plan(opened, apply_id)
        show(stream, plan, lambda view: view.rollback_plan(plan, undone, audit=dry_run))
        if out is not None:
            return saved(opened, plan, out, "rollback")
        if dry_run:
            return verdict_code(plan)
        if denied(plan):
            judge_attempt(opened, plan, options)  # ledgers the denied attempt, exits 3
        if not approved(f"Roll back {undone.id}?", "Rollback", auto_approve, no_input):
            return int(ExitCode.ERROR)
        try:
            result = apply_plan(opened, plan, options)
        except StalePlan as moved:
            raise StalePlan(f"cannot roll back {undone.id}: references changed since it was applied. {moved}") from None
    return finished(stream, result, started)


def rollback_to(
    to: str | None,
    to_time: str | None,
    force_live: bool,
    options: ApplyOptions,
    auto_approve: bool,
    dry_run: bool,
    no_input: bool,
    as_json: bool,
) -> int:
    """Point-in-time rollback: planned and applied under one lock, so its live reads are the compare-and-swap."""
    from kfmops.engine.apply import apply as apply_plan
    from kfmops.engine.apply import judge_attempt, refuse_if_unfinished
    from kfmops.engine.timetravel import point, rollback_to_plan

    started = time.monotonic()
    with operating("rollback", as_json) as (opened, stream), opened.lock.held("rollback", None, options.lock_timeout):
        refuse_if_unfinished(opened)
        plan, where = rollback_to_plan(opened, point(opened, to, to_time), force_live=force_live)
        show(stream, plan, lambda view: view.point_in_time(plan, where))
        if dry_run:
            return verdict_code(plan)
        if denied(plan):
            judge_attempt(opened, plan, options)  # ledgers the denied attempt, exits 3
        if not approved(f"Roll back {len(where.undone)} apply(s)?", "Rollback", auto_approve, no_input):
            return int(ExitCode.ERROR)
        result = apply_plan(opened, plan, replace(options, fresh=True))
    return finished(stream, result, started)


def repair(
    target: Annotated[
        list[str], typer.Option("--target", metavar="ADDRESS", help="Only this address (repeatable).")
    ] = [],  # noqa: B006
    auto_approve: Annotated[bool, AutoApprove] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="PLAN_FILE", help="Save the repair as a plan file to review and apply."),
    ] = None,
    lock_timeout: Annotated[float, LockTimeout] = 0,
    no_input: Annotated[bool, NoInput] = False,
    as_json: Annotated[bool, AsJson] = False,
) -> int:
    """Put drifted references back to the values kfmops last applied: shows the plan (with the policy verdict)
    and asks for `yes`. The opposite of 'apply --refresh-only', which accepts the drift into state.

    Example: kfmops repair --target dataset.landcover --out repair.json
    """
    from kfmops.engine.apply import ApplyOptions, judge_attempt
    from kfmops.engine.apply import apply as apply_plan
    from kfmops.engine.repair import repair_plan

    started = time.monotonic()
    with operating("repair", as_json) as (opened, stream):
        plan = repair_plan(opened, list(target))
        show(stream, plan, lambda view: view.plan(plan))
        if out is not None:
            return saved(opened, plan, out, "repair")
        options = ApplyOptions(lock_timeout=lock_timeout)
        if denied(plan):
            judge_attempt(opened, plan, options)  # ledgers the denied attempt, exits 3
        if not plan.has_changes():
            stderr.print("Nothing to repair: every managed reference holds its last applied value.")
            return 0
        if not approved("Repair these references?", "Repair", auto_approve, no_input):
            return int(ExitCode.ERROR)
        result = apply_plan(opened, plan, options)
    return finished(stream, result, started)


@contextmanager
def operating(command: str, as_json: bool) -> Iterator[tuple[Session, JsonStream | None]]:
    """A session whose events stream as JSON lines on stdout with --json, else show as progress on stderr."""
    from kfmops.render.stream import JsonStream

    stream = JsonStream(stdout) if as_json else None
    with session(command, progress=not as_json) as opened:
        if stream:
            opened.subscribe(stream)
        yield opened, stream


def show(stream: JsonStream | None, plan: Plan, human_view: Callable[[HumanView], None]) -> None:
    """What will move: one `planned_change` event per change with --json, else the human view of it."""
    if stream:
        stream.planned(plan)
    else:
        human_view(human())


def denied(plan: Plan) -> bool:
    return plan.policy.get("decision") != "allow"


def verdict_code(plan: Plan) -> int:
    """A reviewed-but-not-applied plan's exit code: 3 when its verdict denies it, so CI fails on it."""
    return int(ExitCode.POLICY_DENIED) if denied(plan) else 0


def saved(opened: Session, plan: Plan, out: Path, what: str) -> int:
    """Write `plan` to `out` for review, and say how to apply it."""
    from kfmops.plans import planfile

    planfile.write(plan, out)
    stderr.print(f"Saved the {what} plan to {out}. Review it, then: kfmops -C {opened.workspace.root} apply {out}")
    return verdict_code(plan)


def approved(question: str, what: str, auto_approve: bool, no_input: bool) -> bool:
    """`yes` from the operator (or --auto-approve); when it is not given, say that nothing changed."""
    if auto_approve or confirm(question, allow_input=not no_input):
        return True
    stderr.print(f"{what} cancelled; nothing was changed.")
    return False


def finished(stream: JsonStream | None, result: Transaction, started: float) -> int:
    """Say what happened: the last event of the stream, or the human summary with how to undo it."""
    if stream:
        stream.finished(result)
    else:
        human().applied(result, time.monotonic() - started)
    return 0


def recover(
    forward: Annotated[
        bool, typer.Option("--forward", help="Finish the interrupted plan instead of undoing it.")
    ] = False,
    lock_timeout: Annotated[float, LockTimeout] = 0,
) -> int:
    """Resolve an interrupted apply: undo it (default) or finish it (--forward) when preconditions hold.

    Example: kfmops recover --forward
    """
    from kfmops.engine.recover import recover as recover_workspace

    with session("recover", progress=True) as opened:
        result = recover_workspace(opened, forward=forward, lock_timeout=lock_timeout)
    human().recovered(result)
    return 0


def hotfix(
    address: Annotated[str, typer.Argument(metavar="ADDRESS", help="The document to change, e.g. dataset.landcover.")],
    assignment: Annotated[
        str, typer.Option("--set", metavar="KEY=VALUE", help="A field of the document's spec, e.g. version=v2019.")
    ],
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why this cannot wait for a pull request.")],
    lock_timeout: Annotated[float, LockTimeout] = 0,
) -> int:
    """Change one reference now, outside git, through the safe apply path; writes the patch for git.

    Example: kfmops hotfix dataset.landcover --set version=v2011 --reason "v2019 tiles corrupt, INC-4411"
    """
    from kfmops.engine.hotfix import hotfix as apply_hotfix

    started = time.monotonic()
    with session("hotfix", progress=True) as opened:
        result, patch = apply_hotfix(opened, address, assignment, reason, lock_timeout=lock_timeout)
    human().applied(result, time.monotonic() - started)
    stdout.print(f"Make git match: patch -p1 < {patch}  (then commit); until then 'kfmops plan' shows hotfix drift.")
    return 0
