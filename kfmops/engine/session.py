"""A session: one command's hold on a workspace — its providers, stores, policy gate and event bus.

Opened by the CLI (or any caller of the library) for one command and closed once. A read-only session
(for `plan`, `drift`, `validate`) creates nothing in the workspace: no state, lock or folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any

from kfmops.errors import Diagnostic, InputError
from kfmops.events import AttemptDenied, EventBus, Observer, ObserverFailed, PolicyEvaluated, RetryHappened
from kfmops.governance import checkpoints
from kfmops.governance.gate import PolicyGate, denied
from kfmops.governance.ledger import LEDGER_KEY, Ledger, ledger_path
from kfmops.governance.manifest import RollbackManifests
from kfmops.governance.observers import Metrics, Recorder
from kfmops.governance.policy import PolicyResult
from kfmops.governance.telemetry import Telemetry
from kfmops.io.redact import Redactor
from kfmops.plans.model import Plan
from kfmops.providers.registry import Providers
from kfmops.stores.base import Stores
from kfmops.stores.folder import FolderControls, FolderHistory, FolderStateStore, FolderWal
from kfmops.stores.folder_lock import FolderLock
from kfmops.stores.ledger_file import FolderLedger
from kfmops.stores.lock import Locker, operator
from kfmops.stores.state import State
from kfmops.stores.wal import Replay, WalStep
from kfmops.workspace import Workspace

if TYPE_CHECKING:
    from kfmops.stores.postgres_db import Database


class Session:
    def __init__(self, workspace: Workspace, command: str, *, read_only: bool = False):
        self.workspace = workspace
        self.command = command
        self.read_only = read_only
        self.durable = bool(workspace.section("apply").get("fsync", True))
        self.bus = EventBus()
        self.providers = Providers(
            workspace, on_retry=lambda backend, error: self.bus.emit(RetryHappened(backend, error)), read_only=read_only
        )
        redact = Redactor(workspace.secret_values())
        settings = workspace.section("telemetry")
        exporter = settings.get("exporter", "file")
        if read_only and exporter == "file" and not workspace.applied:
            exporter = "none"  # looking at a workspace never applied creates nothing in it, telemetry included
        self.telemetry = Telemetry(exporter, workspace.state_dir / "telemetry", settings, redact)
        self.metrics = Metrics(self.telemetry, command)
        self.bus.subscribe(self.metrics)
        self.bus.subscribe(Recorder(workspace, lambda: self.ledger, redact), required=True)
        audit = ledger_path(workspace.root, workspace.section("ledger")).parent
        self.bus.subscribe(
            RollbackManifests(audit / "rollbacks", lambda: self.ledger, workspace.state_dir / "lineage" / "prov")
        )

    @cached_property
    def database(self) -> Database | None:
        """With `state: {backend: postgres, ...}` the postgres store's connection (opened on first use)."""
        settings = self.workspace.section("state")
        if settings.get("backend") != "postgres":
            return None
        from kfmops.stores.postgres_db import Database  # psycopg is imported only by workspaces that use it

        config = self.workspace.relative(self.workspace.config_file)
        return Database(settings, read_only=self.read_only, config=config)

    @cached_property
    def stores(self) -> Stores:
        if self.database is not None:
            from kfmops.stores.postgres import postgres_stores

            return postgres_stores(self.database, os.environ.get(LEDGER_KEY))
        folder, durable = self.workspace.state_dir, self.durable
        return Stores(
            state=FolderStateStore(folder, durable=durable),
            history=FolderHistory(folder, durable=durable),
            wal=FolderWal(folder, durable=durable),
            ledger=FolderLedger(
                ledger_path(self.workspace.root, self.workspace.section("ledger")),
                durable=durable,
                anchor=folder / "ledger-head.json",
                key=key.encode() if (key := os.environ.get(LEDGER_KEY)) else None,
            ),
            controls=FolderControls(folder, durable=durable),
        )

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.stores.ledger)

    @cached_property
    def policy(self) -> PolicyGate:
        return PolicyGate(self.workspace, self.providers)

    def verdict(self, plan: Plan) -> PolicyResult:
        """Policy's decision over `plan` with the checkpoints of the versions it moves pointers to, run now: a
        failed check denies like a policy finding (governance.checkpoints)."""
        result = self.policy.check(plan)
        return checkpoints.judged(result, checkpoints.run(self.providers, plan, result.facts))

    def evaluate(self, plan: Plan, operation: str) -> PolicyResult:
        """The verdict over `plan`, announced (PolicyEvaluated) but not enforced: the caller shows it."""
        result = self.verdict(plan)
        self.bus.emit(
            PolicyEvaluated(operation, result.decision, tuple(f.to_dict() for f in result.findings), result.decisions)
        )
        return result

    def with_verdict(self, plan: Plan, operation: str) -> Plan:
        """`plan` with the verdict over it, the facts it judged and the checkpoint results, to show before
        anything moves."""
        result = self.evaluate(plan, operation)
        return replace(plan, policy=result.to_dict(), facts=dict(result.facts), checks=result.checks)

    def judge(
        self, plan: Plan, operation: str, *, reason: str | None = None, origin: dict[str, Any] | None = None
    ) -> PolicyResult:
        """The verdict over `plan` before `operation` writes anything; PolicyDenied (exit 3) on a deny.

        A denied attempt is ledgered (AttemptDenied, with `reason`, `origin` and the checkpoint results); if
        that record fails, the attempt is still refused and the failure is a warning."""
        result = self.evaluate(plan, operation)
        if result.decision == "allow":
            return result
        findings = tuple(f.to_dict() for f in result.findings)
        attempted = dict(origin or {}) | {"checks": list(result.checks)}
        try:
            self.bus.emit(AttemptDenied(operation, plan, findings, operator(), reason, attempted))
        except ObserverFailed as failure:
            self.warnings.append(f"the denied {operation} could not be ledgered ({failure})")
        raise denied(result, operation)

    def state(self) -> State | None:
        """The stored state, with every committed transaction whose bookkeeping is still pending (its WAL
        says COMMIT but it was not settled) applied in memory: the next mutating command writes it down."""
        state = self.stores.state.load()
        for entry in self.stores.wal.open_entries():
            if entry.records and entry.records[-1].type is WalStep.COMMIT:
                committed = Replay.of(entry.records, entry.location).transaction
                state = state or State.new(committed.state.lineage)
                if committed.plan_id not in state.applied_plans:
                    state.commit(committed)
        return state

    def subscribe(self, observer: Observer) -> None:
        self.bus.subscribe(observer)

    @property
    def warnings(self) -> list[str]:
        return self.bus.warnings

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[None]:
        with self.telemetry.span(name, **attributes):
            yield

    @cached_property
    def lock(self) -> Locker:
        """A file lock, or with `apply.lock: redis` a lease in the named redis backend; the postgres store's own."""
        if self.database is not None:
            from kfmops.stores.postgres_lock import PostgresLock

            return PostgresLock(self.database)
        settings = self.workspace.section("apply")
        if settings.get("lock", "file") != "redis":
            return FolderLock(self.workspace.state_dir)
        name = settings.get("lock_backend")
        config = self.workspace.backends.get(name or "")
        if config is None or config.type != "redis":
            raise InputError(
                [
                    Diagnostic(
                        "apply.lock is redis but apply.lock_backend does not name a redis backend",
                        file=self.workspace.relative(self.workspace.config_file),
                    )
                ]
            )
        from kfmops.providers.redis import connect
        from kfmops.stores.redis_lock import RedisLock

        # Named by the state's lineage; before the first apply (no lineage yet) by the workspace's folder.
        state = self.state()
        name = state.lineage if state is not None else f"workspace:{self.workspace.root}"
        return RedisLock(connect(config), name, float(settings.get("lock_lease", 30)))

    def close(self, failed: bool = False) -> None:
        try:
            self.providers.close()
        finally:
            self.metrics.close(failed)
            self.warnings.extend(self.telemetry.problems)
            if self.database is not None:
                self.database.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close(failed=error is not None)
