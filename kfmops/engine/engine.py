"""The engine: one object per command run that plans, applies, rolls back and recovers.

Every mutating operation goes through `apply`: lock -> settle finished WALs -> refuse while a WAL is
unfinished (exit 6) -> verify the plan -> compare-and-swap -> WAL-logged batches -> settle.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kfmops.engine import hotfix as hotfixes
from kfmops.engine import wal
from kfmops.engine.apply import (
    Applier,
    ApplyFailed,
    ApplyResult,
    Batch,
    begin_fields,
    change_from,
    check_preconditions,
    elapsed,
    new_apply_id,
    plan_batches,
    settle,
)
from kfmops.engine.history import ApplyRecord, History
from kfmops.engine.lock import FileLockBackend, Lock, RedisLockBackend
from kfmops.engine.planner import PlanRequest, make_plan, new_id, now
from kfmops.engine.refresh import missing_targets, read_live
from kfmops.engine.retry import kill_switch
from kfmops.engine.state import State, StateStore
from kfmops.errors import Diagnostic, ExitCode, InputError, KfmopsError, RecoveryRequired, StalePlan
from kfmops.gitops import repo
from kfmops.governance.policy import PolicyResult
from kfmops.governance.record import Governance
from kfmops.plans.model import Change, Plan, StateRef
from kfmops.providers.registry import Providers
from kfmops.workspace import Workspace

Progress = Callable[[str, int], None]


@dataclass
class RecoverResult:
    apply_id: str | None
    mode: str
    outcome: str
    written: dict[str, str] = field(default_factory=dict)
    restored: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    serial: int | None = None
    message: str = ""


def retarget(datasets: dict[str, Any], changes: tuple[Change, ...]) -> dict[str, Any]:
    """Dataset records as of the version the changes point each dataset at (a rollback moves it back).

    Policy judges the version a pointer moves to; a version missing from the record is judged with no
    metadata at all, so it cannot pass by accident.
    """
    records = {}
    for name, record in datasets.items():
        versions = {c.version for c in changes if c.reference.dataset == name and c.version}
        if len(versions) == 1:
            version = versions.pop()
            target = next((v for v in record.get("versions", []) if v.get("id") == version), {"id": version})
            record = {**record, "version": version, "target": target}
        records[name] = record
    return records


def open_lock(workspace: Workspace, store: StateStore) -> Lock:
    """The workspace's lock: a file lock, or with `apply.lock: redis` a lease in the named redis backend."""
    settings = workspace.section("apply")
    if settings.get("lock", "file") != "redis":
        return FileLockBackend(workspace.state_dir)
    name = settings.get("lock_backend")
    config = workspace.backends.get(name or "")
    if config is None or config.type != "redis":
        raise InputError(
            [
                Diagnostic(
                    "apply.lock is redis but apply.lock_backend does not name a redis backend",
                    file=workspace.relative(workspace.config_file),
                )
            ]
        )
    from kfmops.providers.redis import connect

    return RedisLockBackend(connect(config), store.load().lineage, float(settings.get("lock_lease", 30)))


class Engine:
    def __init__(
        self,
        workspace: Workspace,
        *,
        command: str = "library",
        progress: Progress | None = None,
        lock: Lock | None = None,
    ):
        self.workspace = workspace
        self.governance = Governance(workspace, command)
        self.warnings: list[str] = []
        self.durable = bool(workspace.section("apply").get("fsync", True))
        self.providers = Providers(workspace, on_retry=self._count_retry)
        self.store = StateStore(workspace.state_dir, durable=self.durable)
        self.history = History(workspace.state_dir, durable=self.durable)
        self.wal_dir = workspace.state_dir / "wal"
        self.lock = lock or open_lock(workspace, self.store)
        self.progress = progress

    def _count_retry(self, backend: str, error_class: str) -> None:
        key = f"{backend}:{error_class}"
        self.governance.retries[key] = self.governance.retries.get(key, 0) + 1

    def _refuse_if_red(self, operation: str) -> None:
        reason = kill_switch(self.workspace.section("apply"))
        if reason:
            raise KfmopsError(
                f"red state: every mutation is refused ({reason}); {operation} did nothing. "
                "Plans still work; clear the kill switch to change references again"
            )

    def close(self) -> None:
        self.providers.close()
        self.governance.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self) -> tuple[State, list[str]]:
        """Mint the state lineage if new and open every routed backend (the local one seeds itself)."""
        state = self.store.load()
        backends = sorted(set(self.workspace.routes.values()))
        for backend in backends:
            self.providers.get(backend)
        return state, backends

    def catalog_root(self) -> Path:
        """The folder of the STAC catalog that the `stac` route writes links into."""
        provider = self.providers.get(self.workspace.routes["stac"], "stac")
        return provider.catalog.root

    # plan ---------------------------------------------------------------------------------------

    def plan(self, request: PlanRequest) -> Plan:
        """The plan, with the policy decision over it (a deny is reported, the plan file still written)."""
        plan = make_plan(self.workspace, self.providers, request)
        return replace(plan, policy=self.governance.check(plan).to_dict())

    # apply --------------------------------------------------------------------------------------

    def apply(
        self,
        plan: Plan,
        *,
        lock_timeout: float = 0,
        allow_dirty: bool = False,
        operation: str = "apply",
        reason: str | None = None,
        rolls_back: str | None = None,
    ) -> ApplyResult:
        started = time.monotonic()
        self._refuse_if_red(operation)
        if operation == "apply":
            self._check_git(plan, allow_dirty)
        with self.lock.held(operation, plan.plan_id, lock_timeout) as lock_info:
            self._settle_finished()
            self.refuse_if_unfinished()
            state = self.store.load()
            self._verify(plan, state)
            mutations = plan.mutations
            batch_size = self.workspace.batch_size
            live = read_live(self.providers, [c.reference for c in mutations], batch_size)
            conflicts = check_preconditions(mutations, live)
            if conflicts:
                raise StalePlan(
                    "live values moved since the plan was made (nothing was changed):\n  "
                    + "\n  ".join(conflicts[:20])
                    + (f"\n  ... and {len(conflicts) - 20} more" if len(conflicts) > 20 else "")
                )
            missing = missing_targets(
                self.providers, [(c.reference, c.after) for c in mutations if c.after], batch_size
            )
            if missing:
                raise InputError([Diagnostic(f"{a} points at a target that does not exist: {m}") for a, m in missing])
            policy = self.governance.require_allowed(plan, operation)
            if not mutations and all(
                state.resources.get(c.address) is not None and state.resources[c.address].value == c.after
                for c in plan.changes
            ):
                return ApplyResult(
                    new_apply_id(),
                    plan.plan_id,
                    operation,
                    "nothing",
                    plan.summary(),
                    serial=state.serial,
                    seconds=elapsed(started),
                )
            apply_id = new_apply_id()
            path = self.wal_dir / f"{apply_id}.jsonl"
            log = wal.WalWriter(path, apply_id, durable=self.durable)
            begin = begin_fields(plan, operation, lock_info, reason, rolls_back, state.versions())
            log.append(wal.BEGIN, **begin)
            self._record(lambda: self.governance.run_started(apply_id, operation, begin["changes"]))
            batches = plan_batches(plan.changes, self.workspace.apply_order, batch_size)
            applier = Applier(self.providers, log, self.progress, guard=self.lock.check, span=self.governance.span)
            try:
                observed_by_batch = applier.run(batches)
            except BaseException as exc:
                result = self._abort(log, applier, batches, begin, apply_id, state, exc, policy)
                result.seconds = elapsed(started)
                exit_code = ExitCode.STALE if isinstance(exc, StalePlan) else ExitCode.ERROR
                raise ApplyFailed(f"{operation} failed and was undone: {result.error}", result, exit_code) from exc
            log.append(wal.COMMIT)
            log.close()
            observed = {a: v for values in observed_by_batch.values() for a, v in values.items()}
            record = settle(state, begin, observed, apply_id, now(), "committed")
            self._finish(state, record, path, begin, policy, log.count)
            return ApplyResult(
                apply_id,
                plan.plan_id,
                operation,
                "committed",
                record.summary,
                applied=record.applied,
                serial=state.serial,
                wal_path=str(path),
                wal_records=log.count,
                seconds=elapsed(started),
            )

    def _abort(
        self,
        log: wal.WalWriter,
        applier: Applier,
        batches: list[Batch],
        begin: dict[str, Any],
        apply_id: str,
        state: State,
        error: BaseException,
        policy: PolicyResult,
    ) -> ApplyResult:
        message = str(error) or type(error).__name__
        log.append(wal.FAILED, error=message)
        try:
            restored = applier.compensate(batches, applier.started)
        except Exception as failure:
            log.close()
            raise RecoveryRequired(
                f"apply failed ({message}) and undoing it failed too ({failure}); some references may be "
                f"half-changed. Run 'kfmops recover' once the backend is back (WAL: {log.path})"
            ) from failure
        log.append(wal.ABORTED, compensated=restored)
        log.close()
        record = settle(state, begin, {}, apply_id, now(), "aborted", restored)
        self._finish(None, record, log.path, begin, policy, log.count, message)
        return ApplyResult(
            apply_id,
            begin["plan_id"],
            begin["operation"],
            "aborted",
            record.summary,
            compensated=restored,
            serial=state.serial,
            wal_path=str(log.path),
            error=message,
            wal_records=log.count,
        )

    def _finish(
        self,
        state: State | None,
        record: ApplyRecord,
        wal_path: Path,
        begin: dict[str, Any],
        policy: PolicyResult | None = None,
        wal_records: int = 0,
        error: str | None = None,
    ) -> None:
        """Persist the outcome (state, history, archived WAL), then the governance record of it."""
        self._save(state, record, wal_path)
        self._record(lambda: self.governance.run_finished(record, begin["changes"], policy, wal_records, error))
        if record.outcome == "committed":
            self._record(lambda: self.governance.count_broken_links(self._broken_links(begin["changes"])))

    def _record(self, keep: Callable[[], Any]) -> None:
        """Record keeping never changes an outcome that already happened: its failure is a warning."""
        try:
            keep()
        except Exception as exc:
            self.warnings.append(f"record keeping failed ({type(exc).__name__}: {exc}); the references are as reported")

    def _broken_links(self, changes: list[dict[str, Any]]) -> int:
        """Broken relative links in the STAC documents the operation wrote (kfm.ops_broken_links)."""
        count = 0
        for backend in {c["backend"] for c in changes if c["kind"] == "stac" and c["action"] != "no-op"}:
            catalog = self.providers.get(backend, "stac").catalog
            documents = {
                slot["document"]
                for c in changes
                if c["kind"] == "stac" and c["backend"] == backend
                for slot in c["locator"]["slots"]
            }
            count += sum(len(catalog.broken_links(path)) for path in sorted(documents))
        return count

    def _save(self, state: State | None, record: Any, wal_path: Path) -> None:
        if state is not None:
            self.store.save(state)
        self.history.save(record)
        archive = self.wal_dir / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        shutil.move(str(wal_path), archive / wal_path.name)

    def _check_git(self, plan: Plan, allow_dirty: bool) -> None:
        """A plan from uncommitted desired state needs --allow-dirty; `git.apply_branch` pins the branch."""
        if plan.git.get("dirty") and not allow_dirty:
            raise KfmopsError(
                f"plan {plan.plan_id} was made from uncommitted desired state; commit first, or pass --allow-dirty"
            )
        branch = self.workspace.section("git").get("apply_branch")
        if (
            branch
            and plan.git.get("commit")
            and not repo.is_on_branch(self.workspace.desired_dir, plan.git["commit"], branch)
        ):
            raise KfmopsError(
                f"plan {plan.plan_id} was made at commit {plan.git['commit'][:12]}, which is not on "
                f"branch {branch!r} (kfmops.yaml git.apply_branch); merge it first"
            )

    def _verify(self, plan: Plan, state: State) -> None:
        if plan.state.lineage != state.lineage:
            raise StalePlan(
                f"plan {plan.plan_id} was made for state lineage {plan.state.lineage}, "
                f"but this workspace's state is lineage {state.lineage}"
            )
        if plan.plan_id in state.applied_plans:
            raise StalePlan(f"plan {plan.plan_id} was already applied; make a new plan")
        if plan.state.serial == state.serial:
            return
        moved = self._moved_since(plan.state.serial)
        overlap = sorted(moved & {c.address for c in plan.changes})
        if overlap:
            raise StalePlan(
                f"plan {plan.plan_id} was made at state serial {plan.state.serial}; applies since "
                f"(now serial {state.serial}) changed {len(overlap)} of its references: "
                f"{', '.join(overlap[:10])}. Make a new plan"
            )

    def _moved_since(self, serial: int) -> set[str]:
        moved: set[str] = set()
        for entry in self.history.entries():
            if entry["outcome"] == "committed" and (entry.get("serial") or 0) > serial:
                moved.update(self.history.load(entry["apply_id"]).applied)
        return moved

    def refuse_if_unfinished(self) -> None:
        pending = wal.unfinished(self.wal_dir)
        if pending:
            raise RecoveryRequired(
                f"an earlier apply did not finish ({pending[0].name}); "
                "run 'kfmops recover' (or 'kfmops recover --forward') first"
            )

    def _settle_finished(self) -> None:
        """Finish bookkeeping for WALs that reached COMMIT or ABORTED but whose process died before it.

        Idempotent: a committed plan already recorded in state is only archived.
        """
        if not self.wal_dir.is_dir():
            return
        for path in sorted(self.wal_dir.glob("*.jsonl")):
            records = wal.read_wal(path)
            if not wal.is_finished(records):
                continue
            begin, last = records[0].fields, records[-1]
            state = self.store.load()
            committed = last.type == wal.COMMIT
            recorded = committed and begin["plan_id"] in state.applied_plans
            observed = {a: v for r in records if r.type == wal.INTENT for a, v in r.fields["observed"].items()}
            outcome = "committed" if committed else "aborted"
            serial = state.serial
            record = settle(
                state, begin, observed, begin["apply_id"], now(), outcome, last.fields.get("compensated", [])
            )
            if recorded:
                record.serial = serial
                self._save(None, record, path)
            else:
                self._finish(state if committed else None, record, path, begin, wal_records=len(records))

    # rollback -----------------------------------------------------------------------------------

    def rollback(self, apply_id: str | None, *, lock_timeout: float = 0) -> ApplyResult:
        self._refuse_if_red("rollback")
        record = self.history.load(apply_id) if apply_id else self.history.last_committed()
        if record.outcome != "committed":
            raise KfmopsError(f"{record.apply_id} did not commit ({record.outcome}); there is nothing to roll back")
        state = self.store.load()
        changes = tuple(change_from(c, f"rollback of {record.apply_id}") for c in record.inverse)
        plan = Plan(
            plan_id=new_id("rollback"),
            created_at=now(),
            operation="rollback",
            workspace=str(self.workspace.root),
            state=StateRef(state.lineage, state.serial),
            changes=changes,
            datasets=retarget(record.datasets, changes),
            origin={"rolls_back": record.apply_id},
        )
        try:
            return self.apply(plan, lock_timeout=lock_timeout, operation="rollback", rolls_back=record.apply_id)
        except StalePlan as stale:
            raise StalePlan(
                f"cannot roll back {record.apply_id}: references changed since it was applied. {stale}"
            ) from None

    # hotfix -------------------------------------------------------------------------------------

    def hotfix(
        self, address: str, assignment: str, reason: str, *, lock_timeout: float = 0
    ) -> tuple[ApplyResult, Path]:
        """Apply one document change outside git through the safe path; returns the result and the git patch."""
        self._refuse_if_red("hotfix")
        self.refuse_if_unfinished()
        if not reason.strip():
            raise KfmopsError("a hotfix needs --reason: it is recorded in history and the ledger")
        documents, fix = hotfixes.prepare(self.workspace, address, assignment)
        desired = hotfixes.desired_with(self.workspace, documents)
        plan = make_plan(self.workspace, self.providers, PlanRequest(targets=[address]), desired)
        if not plan.has_changes():
            raise KfmopsError(f"hotfix changes nothing: {address} already holds {assignment}")
        patch = hotfixes.write_patch(self.workspace.plans_dir, plan.plan_id, fix.patch)
        plan = replace(
            plan, operation="hotfix", origin={**plan.origin, "patch": self.workspace.relative(patch), "set": assignment}
        )
        return self.apply(plan, lock_timeout=lock_timeout, operation="hotfix", reason=reason), patch

    # recover ------------------------------------------------------------------------------------

    def recover(self, *, forward: bool = False, lock_timeout: float = 0) -> RecoverResult:
        self._refuse_if_red("recover")
        with self.lock.held("recover", None, lock_timeout):
            self._settle_finished()
            pending = wal.unfinished(self.wal_dir)
            if not pending:
                return RecoverResult(
                    None,
                    "forward" if forward else "compensate",
                    "nothing",
                    message="no unfinished apply; nothing to recover",
                )
            return self._recover_one(pending[0], forward)

    def _recover_one(self, path: Path, forward: bool) -> RecoverResult:
        records = wal.read_wal(path)
        state = self.store.load()
        if not records or records[0].type != wal.BEGIN:
            path.unlink()
            return RecoverResult(
                None,
                "compensate",
                "discarded",
                message=f"{path.name} held no complete BEGIN "
                "record: the apply died before announcing any write; nothing was changed",
            )
        begin = records[0].fields
        apply_id = begin["apply_id"]
        changes = {c["address"]: change_from(c) for c in begin["changes"]}
        intents = {r.fields["batch"]: r.fields for r in records if r.type == wal.INTENT}
        done = {r.fields["batch"] for r in records if r.type == wal.DONE}
        compensating = any(r.type == wal.COMPENSATE for r in records)
        restored_already = {r.fields["batch"] for r in records if r.type == wal.COMPENSATED}
        started_batches = [
            Batch(n, f["backend"], [changes[a] for a in f["addresses"]]) for n, f in sorted(intents.items())
        ]
        written = self._what_happened(started_batches, intents, done)
        log = wal.WalWriter(path, apply_id, durable=self.durable, records=records)
        applier = Applier(self.providers, log, self.progress)
        log.append(
            wal.FAILED,
            error="the apply was interrupted; resumed by 'kfmops recover'",
            mode="forward" if forward else "compensate",
            found=written,
        )
        if forward and compensating:
            log.close()
            raise StalePlan(
                "the interrupted apply had already started undoing itself; run 'kfmops recover' without --forward"
            )
        interrupted = self._interrupted_plan(begin, state)
        if forward:
            policy = self._policy_for_forward(log, interrupted)
            return self._recover_forward(log, applier, begin, changes, intents, done, written, state, path, policy)
        # Restoring the values from before the apply is never blocked by policy: blocking it would
        # leave references half-changed. The findings are recorded in the ledger all the same.
        policy = self.governance.check(interrupted)
        undo = {n: f["observed"] for n, f in intents.items() if n not in restored_already}
        restored = applier.compensate(started_batches, undo)
        log.append(wal.ABORTED, compensated=restored, recovered=True)
        log.close()
        state.serial += 1
        record = settle(state, begin, {}, apply_id, now(), "aborted", restored)
        record.operation = "recover"
        record.reason = f"compensated interrupted {begin['operation']} {apply_id}"
        self._finish(state, record, path, begin, policy, log.count)
        return RecoverResult(
            apply_id,
            "compensate",
            "restored",
            written,
            restored,
            serial=state.serial,
            message=f"every reference of {apply_id} is back at its value before the apply",
        )

    def _interrupted_plan(self, begin: dict[str, Any], state: State) -> Plan:
        """The plan an interrupted apply was running, rebuilt from its BEGIN record (for policy)."""
        return Plan(
            plan_id=begin["plan_id"],
            created_at=begin["time"],
            operation=begin["operation"],
            workspace=str(self.workspace.root),
            state=StateRef(state.lineage, state.serial),
            changes=tuple(change_from(c) for c in begin["changes"]),
            datasets=begin.get("datasets", {}),
            origin=begin.get("origin", {}),
        )

    def _policy_for_forward(self, log: wal.WalWriter, plan: Plan) -> PolicyResult:
        try:
            return self.governance.require_allowed(plan, "recover --forward")
        except KfmopsError:
            log.close()
            raise

    def _what_happened(self, batches: list[Batch], intents: dict[int, dict], done: set[int]) -> dict[str, str]:
        """For each announced write: 'written', 'not written' or 'moved' (neither before nor after)."""
        outcome: dict[str, str] = {}
        for batch in batches:
            live = self.providers.get(batch.backend).read(batch.references)
            for change in batch.changes:
                value = live.get(change.address)
                if value == change.after:
                    outcome[change.address] = "written"
                elif value == intents[batch.number]["observed"][change.address]:
                    outcome[change.address] = "not written"
                else:
                    outcome[change.address] = "moved"
        return outcome

    def _recover_forward(
        self,
        log: wal.WalWriter,
        applier: Applier,
        begin: dict[str, Any],
        changes: dict,
        intents: dict[int, dict],
        done: set[int],
        written: dict[str, str],
        state: State,
        path: Path,
        policy: PolicyResult,
    ) -> RecoverResult:
        moved = sorted(a for a, what in written.items() if what == "moved")
        if moved:
            log.close()
            raise StalePlan(
                f"cannot finish forward: {', '.join(moved[:10])} moved outside kfmops since the "
                "interrupted apply; run 'kfmops recover' to restore the previous values"
            )
        announced = {a for f in intents.values() for a in f["addresses"]}
        remaining = [c for a, c in changes.items() if a not in announced and c.action.mutates]
        live = read_live(self.providers, [c.reference for c in remaining], self.workspace.batch_size)
        conflicts = check_preconditions(remaining, live)
        if conflicts:
            log.close()
            raise StalePlan("cannot finish forward, preconditions no longer hold:\n  " + "\n  ".join(conflicts[:20]))
        completed = []
        for number, fields in sorted(intents.items()):
            if number in done:
                continue
            batch = Batch(number, fields["backend"], [changes[a] for a in fields["addresses"]])
            applier._write_verified(batch, [(c.reference, c.after) for c in batch.changes])
            log.append(wal.DONE, batch=number)
            completed.extend(fields["addresses"])
        first = max(intents, default=-1) + 1
        rest = [
            Batch(first + b.number, b.backend, b.changes)
            for b in plan_batches(remaining, self.workspace.apply_order, self.workspace.batch_size)
        ]
        observed = {a: v for f in intents.values() for a, v in f["observed"].items()}
        for values in applier.run(rest).values():
            observed.update(values)
        completed.extend(c.address for b in rest for c in b.changes)
        log.append(wal.COMMIT, recovered=True)
        log.close()
        record = settle(state, begin, observed, begin["apply_id"], now(), "committed")
        record.operation = "recover"
        record.reason = f"completed interrupted {begin['operation']} {begin['apply_id']} forward"
        self._finish(state, record, path, begin, policy, log.count)
        return RecoverResult(
            begin["apply_id"],
            "forward",
            "completed",
            written,
            completed=completed,
            serial=state.serial,
            message=f"{begin['apply_id']} was completed as planned",
        )
