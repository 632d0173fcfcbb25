"""Commands that look without changing references: history, state, lock, ledger and catalog checks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kfmops.cli.common import human
from kfmops.cli.consoles import stderr, stdout
from kfmops.errors import ExitCode, KfmopsError

# The engine and the views are imported by the command that runs, not when the CLI starts (--help).
if TYPE_CHECKING:
    from kfmops.engine.session import Session
    from kfmops.render.formats import View

Json = typer.Option("--json", help="Print JSON.")
state_app = typer.Typer(
    help="Inspect kfmops' record of managed references.\n\nExample: kfmops state list --json", no_args_is_help=True
)
lock_app = typer.Typer(
    help="Inspect or clear the workspace lock.\n\nExample: kfmops lock status --json", no_args_is_help=True
)
ledger_app = typer.Typer(
    help="Show or verify the governance ledger.\n\nExample: kfmops ledger verify", no_args_is_help=True
)
catalog_app = typer.Typer(
    help="Check the STAC catalog kfmops writes links into.\n\nExample: kfmops catalog check --schemas schemas/stac",
    no_args_is_help=True,
)


def looking(command: str) -> Session:
    """A read-only session on the workspace of the current directory."""
    from kfmops.engine.session import Session
    from kfmops.workspace import load_workspace

    return Session(load_workspace(Path.cwd()), command, read_only=True)


def view(as_json: bool) -> View:
    if not as_json:
        return human()
    from kfmops.render.view import JsonView

    return JsonView(stdout, stderr)


def history(as_json: Annotated[bool, Json] = False) -> None:
    """List applies, rollbacks, hotfixes, repairs, recoveries, freezes and resumes, newest last.

    Example: kfmops history --json
    """
    from kfmops.engine import freeze

    with looking("history") as session:
        view(as_json).history(freeze.history(session))


@state_app.command("list")
def state_list(as_json: Annotated[bool, Json] = False) -> None:
    """List managed addresses with their last applied values.

    Example: kfmops state list --json
    """
    with looking("state") as session:
        view(as_json).state_list(session.state())


@state_app.command("show")
def state_show(
    address: Annotated[
        str | None,
        typer.Argument(metavar="ADDRESS", help="A managed address, e.g. dataset.landcover.search."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="APPLY_ID", help="The state as it was right after this apply (from history)."),
    ] = None,
    as_json: Annotated[bool, Json] = False,
) -> None:
    """Show one managed reference (where it lives, its last applied value), or with --at the state as it was
    right after an apply (every reference, or the one named).

    Example: kfmops state show dataset.landcover.search --json; kfmops state show --at apply-20261126T120000Z-ab12cd
    """
    if address is None and at is None:
        raise KfmopsError("give an ADDRESS, or --at APPLY_ID for the whole state after that apply")
    from kfmops.engine.timetravel import state_at

    with looking("state") as session:
        state = state_at(session, at) if at else session.state()
    if address is None and at is not None and state is not None:
        view(as_json).state_at(at, state)
        return
    managed = state.resources.get(str(address)) if state else None
    if managed is None:
        when = f"was not managed right after {at}" if at else "is not managed"
        raise KfmopsError(f"{address} {when}; see 'kfmops state list'")
    view(as_json).state_entry(str(address), managed)


def diff(
    first: Annotated[str, typer.Argument(metavar="APPLY_A", help="The earlier apply (see 'kfmops history').")],
    second: Annotated[str, typer.Argument(metavar="APPLY_B", help="The later apply.")],
    as_json: Annotated[bool, Json] = False,
) -> None:
    """Show what moved between two points of history: every managed reference whose value differs between
    the state right after APPLY_A and the state right after APPLY_B.

    Example: kfmops diff apply-20261126T120000Z-ab12cd apply-20261127T090000Z-cd34ef --json
    """
    from kfmops.engine.timetravel import applies_diff

    with looking("diff") as session:
        moved = applies_diff(session, first, second)
    view(as_json).state_diff(first, second, moved)


@state_app.command("pull")
def state_pull() -> None:
    """Print the state as JSON, in the format of the folder store's state.json, wherever it is kept.

    Example: kfmops state pull > state.json
    """
    from kfmops.stores.transfer import state_document

    with looking("state") as session:
        document = state_document(session.stores.state.load())
    sys.stdout.write(document)


@state_app.command("migrate")
def state_migrate(
    to_config: Annotated[
        Path, typer.Option("--to-config", help="A kfmops.yaml whose 'state:' names the target store.")
    ],
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", help="Seconds to wait for each lock.")] = 0,
) -> None:
    """Copy state, history, WAL and ledger chain to another store under both locks, and verify the copy.

    Example: kfmops state migrate --to-config kfmops.postgres.yaml
    """
    from kfmops.engine.migrate import migrate
    from kfmops.engine.session import Session
    from kfmops.workspace import load_workspace

    source = Session(load_workspace(Path.cwd()), "migrate")
    with source, Session(load_workspace(Path.cwd(), to_config), "migrate") as target:
        copied = migrate(source, target, lock_timeout)
    human().migrated(copied)


@lock_app.command("status")
def lock_status(as_json: Annotated[bool, Json] = False) -> None:
    """Say who holds the workspace lock, or that it is free (or stale), and whether the workspace is frozen.

    Example: kfmops lock status --json
    """
    from kfmops.engine import freeze

    with looking("lock") as session:
        view(as_json).lock(session.lock.status(), freeze.frozen(session))


@lock_app.command("force-unlock")
def force_unlock(
    lock_id: Annotated[str, typer.Argument(metavar="LOCK_ID", help="The exact lock id from 'kfmops lock status'.")],
) -> None:
    """Remove a lock whose holder is gone. Needs the exact id.

    Example: kfmops lock force-unlock 5f0c2d1e-...
    """
    with looking("lock") as session:
        info = session.lock.force_unlock(lock_id)
    stdout.print(f"Removed lock {info.id} ({info.who}, pid {info.pid}, {info.operation}).")


@ledger_app.command("show")
def ledger_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    last: Annotated[int, typer.Option("--last", metavar="N", help="Only the newest N entries (0: all).")] = 0,
) -> None:
    """Show the governance ledger: one entry per apply, rollback, hotfix and recover.

    Example: kfmops ledger show --last 5
    """
    with looking("ledger") as session:
        entries = session.ledger.entries()
    view(as_json).ledger(entries[-last:] if last else entries)


@ledger_app.command("verify")
def ledger_verify() -> int:
    """Check the ledger's hash chain; names every edited, removed, inserted or reordered entry.

    Example: kfmops ledger verify
    """
    with looking("ledger") as session:
        ledger = session.ledger
        problems = ledger.verify()
        count = len(ledger.entries())
    for problem in problems:
        stdout.print(f"ledger {ledger.location}: {problem}")
    if problems:
        return int(ExitCode.ERROR)
    stdout.print(f"Ledger intact: {count} entries, hash chain verified ({ledger.location}).")
    return 0


@catalog_app.command("check")
def catalog_check(
    root: Annotated[
        Path | None, typer.Argument(metavar="ROOT", help="Catalog folder (default: the workspace's stac backend).")
    ] = None,
    schemas: Annotated[
        Path | None,
        typer.Option("--schemas", metavar="DIR", help="Folder of STAC JSON Schemas with a schema-map.json (offline)."),
    ] = None,
) -> int:
    """Validate every STAC document offline against local JSON Schemas, count broken links and orphans (documents
    no link reaches from the root catalog; with the workspace's catalog, versions of datasets no Dataset declares).

    Example: kfmops catalog check --schemas ../shared/fixtures/stac-schemas
    """
    from kfmops.engine.plan import load_desired
    from kfmops.providers.stac_check import Declared, check_catalog

    declared = None
    if root is None:
        with looking("catalog") as session:
            root = session.providers.catalog_root()
            conventions = session.workspace.conventions
            names = frozenset(load_desired(session.workspace).datasets)
        declared = Declared(conventions.stac_catalog, conventions.stac_collection, names)
    report = check_catalog(root, schemas, declared)
    human().catalog(report, root)
    return 0 if report.ok else int(ExitCode.ERROR)
