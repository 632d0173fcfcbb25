"""Make a plan: load desired state (from the work tree or a git ref), read live values, diff, judge.

Read-only on the workspace: planning creates no state, lock or folder. A workspace never applied plans
against a new, unsaved state; its lineage is adopted by the first apply of that plan.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any

from kfmops.addresses import Address, select
from kfmops.desired import DesiredState, expand
from kfmops.desired.cache import FOLDER, DesiredCache
from kfmops.desired.collector import invalidation_conflicts
from kfmops.desired.load import documents_of, read_folder
from kfmops.desired.state_cache import FILE as STATE_FILE
from kfmops.desired.state_cache import StateCache, state_key
from kfmops.engine.session import Session
from kfmops.errors import Diagnostic, InputError
from kfmops.events import PlanMade
from kfmops.gitops import repo
from kfmops.io.clock import new_id, now
from kfmops.plans import planfile
from kfmops.plans.adopt import import_changes
from kfmops.plans.diff import diff, drift, sort_changes
from kfmops.plans.exposure import exposure_changes
from kfmops.plans.model import Action, Change, Operation, Plan, StateRef
from kfmops.references import Reference
from kfmops.stores.state import State
from kfmops.workspace import Workspace


@dataclass(frozen=True)
class PlanRequest:
    targets: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    git_ref: str | None = None
    refresh_only: bool = False
    base: str | None = None
    imports: list[str] = field(default_factory=list)  # addresses to import besides the Import documents'
    accept_live: bool = False  # import a live value that differs from the desired one, and update it


def load_desired(workspace: Workspace, git_ref: str | None = None, *, review: bool = False) -> DesiredState:
    """Validated, expanded desired state from the work tree, or from `git_ref` without a checkout.

    In a workspace applied before, each file is parsed once per content (the desired-document cache) and
    an unchanged folder is not expanded again (the desired-state cache); looking at one never applied
    creates nothing in it. A commit's files, and the desired state apply checks a plan against (`review`,
    see engine/review), go through the caches only when KFMOPS_PLAN_KEY seals them. A review of a commit
    reads the work tree when its files are the commit's, byte for byte (by git blob id), so that it finds
    what the plan of that work tree kept; the names of the files in sources are then the work tree's."""
    found = _Expansion.of(workspace, git_ref, review)
    desired = found.states.get(found.key) if found.key else None
    if desired is None:
        documents = DesiredCache(workspace.root / FOLDER, secret=found.secret) if found.cached else None
        parsed = documents_of(found.sources, found.unreadable, documents, prune=not found.from_commit)
        desired = expand(parsed, *found.settings)
        if found.key:
            found.states.put(found.key, desired)
    return desired


def cached_digest(workspace: Workspace, git_ref: str | None = None, *, review: bool = False) -> str | None:
    """The digest of what `load_desired` gives, when the desired-state cache holds it (None otherwise): read
    without decoding the expansion."""
    found = _Expansion.of(workspace, git_ref, review)
    return found.states.digest(found.key) if found.key else None


@dataclass(frozen=True)
class _Expansion:
    """Where the desired state of `git_ref` comes from, and the desired-state cache entry that may hold it."""

    sources: list[tuple[str, str]]
    unreadable: list[Diagnostic]
    from_commit: bool
    settings: tuple[Any, ...]
    secret: bytes | None
    cached: bool
    states: StateCache
    key: str | None

    @classmethod
    def of(cls, workspace: Workspace, git_ref: str | None, review: bool) -> _Expansion:
        secret = planfile.derived_key("desired-document cache")
        sources, unreadable, from_commit = _desired_sources(workspace, git_ref, review=review)
        cached = workspace.applied and (secret is not None or not (from_commit or review))
        settings = (workspace.conventions, workspace.routes, set(workspace.backends))
        states = StateCache(workspace.root / STATE_FILE, planfile.derived_key("desired-state cache"))
        key = state_key(sources, *settings) if cached and not unreadable else None
        return cls(sources, unreadable, from_commit, settings, secret, cached, states, key)


def _desired_sources(
    workspace: Workspace, git_ref: str | None, *, review: bool
) -> tuple[list[tuple[str, str]], list[Diagnostic], bool]:
    """(name, text) of the desired files, the problems of those that cannot be read, and whether they were
    read from the commit (`git_ref`) rather than the work tree."""
    if git_ref is None or review:
        sources, unreadable = read_folder(workspace.desired_dir, workspace.root)
        root = workspace.root.resolve()
        if git_ref is None or (
            not unreadable
            and repo.holds(workspace.desired_dir, git_ref, [(root / name, text) for name, text in sources])
        ):
            return sources, unreadable, False
    return repo.files_at(workspace.desired_dir, git_ref), [], True


def plan(session: Session, request: PlanRequest, desired: DesiredState | None = None) -> Plan:
    """The plan with the verdict over it: policy's decision and the checkpoints of the versions it moves
    pointers to (a deny is reported in the plan, not raised)."""
    made = make_plan(session, request, desired)
    judged = session.with_verdict(made, "plan")
    session.bus.emit(PlanMade(judged))
    return judged


def make_plan(session: Session, request: PlanRequest, desired: DesiredState | None = None) -> Plan:
    """The plan from `desired` (default: loaded from the work tree or request.git_ref) to live state."""
    workspace, providers = session.workspace, session.providers
    desired = desired or load_desired(workspace, request.git_ref)
    state = session.state() or State.new()
    managed = state.managed()
    check_selectors(request.targets + request.excludes, [*desired.references, *managed])
    chosen = set(select(sorted(set(desired.references) | set(managed)), request.targets, request.excludes))
    wanted = {a: r for a, r in desired.references.items() if a in chosen}
    kept = {a: m for a, m in managed.items() if a in chosen}
    references = [r.reference for r in wanted.values()] + [m[0] for a, m in kept.items() if a not in wanted]
    managed_only = [reference for address, (reference, _) in managed.items() if address not in desired.references]
    # expanding the desired state refused its own conflicts: only a key state alone manages can add one
    conflicts = []
    if managed_only:
        conflicts = invalidation_conflicts([r.reference for r in desired.references.values()] + managed_only)
    if conflicts:
        raise InputError(
            [
                Diagnostic(
                    f"{reference.address}: invalidation pattern {pattern!r} matches {key!r}, which {owner} manages "
                    "(recorded in state)",
                    "narrow the pattern, or remove the managed key first",
                )
                for reference, pattern, key, owner in conflicts
            ]
        )
    live = providers.read_live(references)
    missing = providers.missing_targets([(r.reference, r.value) for r in wanted.values()])
    if missing:
        raise InputError([_missing_target(address, message, desired) for address, message in missing])
    drifted = drift(live, kept, wanted, state.hotfixes)
    if request.refresh_only:
        changes = [_accept_live(kept[d["address"]][0], d) for d in drifted if d["type"] == "drift"]
    else:
        imported = {a: asked for a, asked in desired.imported(request.imports).items() if a in wanted}
        adopted, problems = import_changes(
            imported,
            wanted,
            live,
            managed,
            [a for a in managed if a not in kept or a in wanted],
            accept_live=request.accept_live,
        )
        if problems:
            raise InputError(problems)
        fresh = {c.address for c in adopted}
        versions = state.versions()  # the version each part was last applied at: what an undo restores
        planned = [c for c in diff(wanted, live, kept, workspace.apply_order) if c.address not in fresh]
        changes = [
            replace(c, before_version=versions.get(c.address))
            for c in sort_changes(planned + adopted, workspace.apply_order)
        ]
    git = repo.describe(workspace.desired_dir)
    if request.git_ref:
        git = {"commit": repo.commit_of(workspace.desired_dir, request.git_ref), "ref": request.git_ref, "dirty": False}
    if request.base:
        git |= {
            "base": request.base,
            "changed_documents": repo.changed_files(workspace.desired_dir, request.base, request.git_ref),
        }
    exposure = [] if request.refresh_only else exposure_of(desired, state, chosen)
    touched = {c.reference.dataset for c in changes if c.action.moves and c.reference.dataset}
    touched |= {entry["dataset"] for entry in exposure}
    # A dataset removed from git is judged (and later rolled back) with the record it was last applied with.
    known = state.datasets | desired.datasets
    datasets = {name: known[name] for name in sorted(touched) if name in known}
    return Plan(
        plan_id=new_id("plan"),
        created_at=now(),
        operation=Operation.REFRESH if request.refresh_only else Operation.APPLY,
        workspace=str(workspace.root),
        state=StateRef(state.lineage, state.serial),
        changes=tuple(changes),
        desired_digest=desired.digest(),
        git=git,
        datasets=datasets,
        drift=tuple(drifted),
        exposure=tuple(exposure),
        origin={
            "targets": request.targets,
            "excludes": request.excludes,
            "git_ref": request.git_ref,
            "base": request.base,
        }
        | ({"imports": request.imports} if request.imports else {})
        | ({"accept_live": True} if request.accept_live else {}),
    )


def exposure_of(desired: DesiredState, state: State, chosen: set[str] | None = None) -> list[dict[str, Any]]:
    """Changes of exposure of the desired datasets (those with a chosen reference, when `chosen` is given)."""
    references = [(r.reference, r.value) for r in desired.references.values()]
    names = {r.dataset for r, _ in references if r.dataset and (chosen is None or r.address in chosen)}
    return exposure_changes({n: r for n, r in desired.datasets.items() if n in names}, state.datasets, references)


def _accept_live(reference: Reference, found: dict[str, Any]) -> Change:
    """A refresh-only change: nothing is written; applying it records the live value in state."""
    return Change(reference, Action.NOOP, found["live"], found["live"], "refresh: record the live value in state")


def check_selectors(selectors: list[str], known: list[str]) -> None:
    if not selectors:
        return
    parsed = [Address.parse(address) for address in known]
    for selector in selectors:
        try:
            wanted = Address.parse(selector)
        except ValueError as exc:
            raise InputError([Diagnostic(str(exc))]) from None
        if not any(wanted.covers(address) for address in parsed):
            names = {str(a) for a in parsed} if wanted.part else {f"{a.type}.{a.name}" for a in parsed}
            close = difflib.get_close_matches(selector, sorted(names), n=2)
            hint = f"Did you mean {' or '.join(close)}? " if close else ""
            raise InputError(
                [Diagnostic(f"unknown address {selector!r}", f"{hint}See 'kfmops state list' or 'kfmops validate'")]
            )


def _missing_target(address: str, message: str, desired: DesiredState) -> Diagnostic:
    """A missing target, reported at the document that declares the reference."""
    source = desired.references[address].source if address in desired.references else ""
    file, _, line = source.rpartition(":")
    return Diagnostic(
        f"{address} points at a target that does not exist: {message}",
        "publish the version first, or point at an existing one",
        file=file or None,
        line=int(line) if line.isdigit() else None,
    )
