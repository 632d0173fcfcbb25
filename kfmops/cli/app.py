"""kfmops commands. Each one parses its arguments, calls one library function and renders the result."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kfmops import __version__
from kfmops.cli import views
from kfmops.cli.errors import run, stderr
from kfmops.engine.engine import Engine
from kfmops.engine.history import History
from kfmops.engine.planner import PlanRequest, load_desired
from kfmops.engine.state import StateStore
from kfmops.errors import ExitCode, KfmopsError
from kfmops.gitops import comment
from kfmops.governance.ledger import Ledger, ledger_path
from kfmops.plans import planfile
from kfmops.providers.stac_check import check_catalog
from kfmops.workspace import Workspace, load_workspace

app = typer.Typer(
    name="kfmops",
    help="Plan and apply reference state (STAC links, graph edges, search aliases, cache pointers) from git.\n\n"
    "Example: kfmops plan --out plan.json && kfmops apply plan.json",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,
)
state_app = typer.Typer(
    help="Inspect kfmops' record of managed references.\n\nExample: kfmops state list --json", no_args_is_help=True
)
lock_app = typer.Typer(
    help="Inspect or clear the workspace lock.\n\nExample: kfmops lock status --json", no_args_is_help=True
)
catalog_app = typer.Typer(
    help="Check the STAC catalog kfmops writes links into.\n\nExample: kfmops catalog check --schemas schemas/stac",
    no_args_is_help=True,
)
app.add_typer(catalog_app, name="catalog")
ledger_app = typer.Typer(
    help="Show or verify the governance ledger.\n\nExample: kfmops ledger verify", no_args_is_help=True
)
app.add_typer(ledger_app, name="ledger")
app.add_typer(state_app, name="state")
app.add_typer(lock_app, name="lock")
stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


def current_workspace() -> Workspace:
    return load_workspace(Path.cwd())


@contextmanager
def open_engine(command: str, *, progress: bool = False) -> Iterator[Engine]:
    """An engine for one command: its span, its telemetry, and its warnings printed at the end."""
    engine = Engine(current_workspace(), command=command, progress=views.progress_printer() if progress else None)
    try:
        with engine.governance.span(f"kfmops.{command}"):
            yield engine
    finally:
        engine.close()
        for warning in engine.warnings:
            stderr.print(f"Warning: {warning}", style="yellow")


def _version(value: bool) -> None:
    if value:
        print(f"kfmops {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    directory: Annotated[Path, typer.Option("-C", "--directory", help="Run as if started in DIR.")] = Path("."),
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    try:
        os.chdir(directory)  # like `terraform -chdir`: every relative path is then relative to DIR
    except OSError as exc:
        raise KfmopsError(f"cannot change to directory {directory}: {exc.strerror}") from None


Format = typer.Option("--format", "-f", help="text, json or markdown.")
LockTimeout = typer.Option("--lock-timeout", help="Seconds to wait for the workspace lock (0: fail at once).")


@app.command()
def init() -> None:
    """Create a workspace here (kfmops.yaml and desired/) or prepare an existing one's state and local backend.

    Example: mkdir my-workspace && kfmops -C my-workspace init
    """
    views.init_workspace(Path.cwd())


@app.command()
def validate(
    git_ref: Annotated[str | None, typer.Option("--git-ref", help="Validate the desired state at REF.")] = None,
) -> None:
    """Check every desired-state document (schema, names, versions, backends) without touching a backend.

    Example: kfmops validate
    """
    workspace = current_workspace()
    desired = load_desired(workspace, git_ref)
    stdout.print(f"Valid: {len(desired.documents)} documents, {len(desired.references)} references.")


@app.command()
def plan(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Plan file to write (default plans/<id>.json).")
    ] = None,
    output_format: Annotated[OutputFormat, Format] = OutputFormat.text,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there are changes.")
    ] = False,
    target: Annotated[list[str], typer.Option("--target", help="Only this address (repeatable).")] = [],  # noqa: B006
    exclude: Annotated[list[str], typer.Option("--exclude", help="Skip this address (repeatable).")] = [],  # noqa: B006
    refresh_only: Annotated[bool, typer.Option("--refresh-only", help="Only report live drift.")] = False,
    git_ref: Annotated[str | None, typer.Option("--git-ref", help="Plan the desired state at REF.")] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Mark the documents changed since git REF (e.g. origin/main).")
    ] = None,
    split: Annotated[
        Path | None,
        typer.Option("--split", help="Also write the PR comment as DIR/comment-N.md, each within GitHub's limit."),
    ] = None,
) -> int:
    """Compare desired state with the live backends and write a plan file.

    Example: kfmops plan --out plan.json --format markdown --detailed-exitcode
    """
    workspace = current_workspace()
    with open_engine("plan") as engine:
        result = engine.plan(PlanRequest(list(target), list(exclude), git_ref, refresh_only, base))
    path = out or workspace.plans_dir / f"{result.plan_id}.json"
    planfile.write(result, path)
    if split is not None:
        parts = comment.write_comment(result, split)
        stderr.print(f"Wrote the PR comment in {len(parts)} part(s) to {split}/comment-N.md")
    views.print_plan(result, output_format, stdout)
    if output_format == "text":
        stderr.print(f"Saved plan to {path}. Apply it with: kfmops apply {path}")
    if result.policy.get("decision") != "allow":
        stderr.print("Policy denies this plan (see the findings above); it cannot be applied.", style="red")
        return int(ExitCode.POLICY_DENIED)
    if detailed_exitcode and (result.has_changes() or (refresh_only and result.drift)):
        return int(ExitCode.CHANGES)
    return 0


@app.command()
def drift(output_format: Annotated[OutputFormat, Format] = OutputFormat.text) -> int:
    """Report references whose live value differs from the last applied one; exit 2 when any does.

    Example: kfmops drift --format markdown
    """
    with open_engine("drift") as engine:
        result = engine.plan(PlanRequest(refresh_only=True))
    views.print_plan(result, output_format, stdout)
    return int(ExitCode.CHANGES) if result.drift else 0


@app.command()
def graph(
    graph_format: Annotated[str, typer.Option("--format", "-f", help="mermaid or dot.")] = "mermaid",
) -> None:
    """Print the desired reference graph (dataset -> references -> targets) as Mermaid or DOT.

    Example: kfmops graph --format dot | dot -Tsvg > references.svg
    """
    desired = load_desired(current_workspace())
    sys.stdout.write(views.reference_graph(desired, graph_format))


@app.command()
def show(
    plan_file: Annotated[Path, typer.Argument(help="A plan file written by 'kfmops plan'.")],
    output_format: Annotated[OutputFormat, Format] = OutputFormat.text,
) -> None:
    """Show a saved plan file (verified against its digest).

    Example: kfmops show plans/plan-20261126T120000Z-ab12cd.json --format json
    """
    views.print_plan(planfile.read(plan_file), output_format, stdout)


@app.command()
def apply(
    plan_file: Annotated[Path | None, typer.Argument(help="Plan file to apply; omit to plan and apply.")] = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask before applying.")] = False,
    lock_timeout: Annotated[float, LockTimeout] = 0,
    allow_dirty: Annotated[
        bool, typer.Option("--allow-dirty", help="Apply a plan made from uncommitted desired state.")
    ] = False,
) -> int:
    """Apply a saved plan (or plan and apply) under the lock, with a WAL and compare-and-swap.

    Example: kfmops apply plans/plan-20261126T120000Z-ab12cd.json
    """
    with open_engine("apply", progress=True) as engine:
        if plan_file is None:
            engine.refuse_if_unfinished()  # before reading backends that may still be down
            chosen = engine.plan(PlanRequest())
            views.print_plan(chosen, "text", stdout)
            if not chosen.has_changes():
                stdout.print("Nothing to apply.")
            if chosen.has_changes() and not auto_approve and not views.confirm("Apply these changes?"):
                stderr.print("Apply cancelled; nothing was changed.")
                return int(ExitCode.ERROR)
        else:
            chosen = planfile.read(plan_file)
        result = engine.apply(chosen, lock_timeout=lock_timeout, allow_dirty=allow_dirty)
    views.print_apply(result, stdout)
    return 0


@app.command()
def rollback(
    apply_id: Annotated[str | None, typer.Argument(help="The apply to undo (see 'kfmops history').")] = None,
    last: Annotated[bool, typer.Option("--last", help="Undo the most recent committed apply.")] = False,
    lock_timeout: Annotated[float, LockTimeout] = 0,
) -> int:
    """Undo an apply exactly, from the before values it observed; refuses if live values moved since.

    Example: kfmops rollback --last
    """
    if bool(apply_id) == last:
        raise KfmopsError("give exactly one of APPLY_ID or --last")
    with open_engine("rollback", progress=True) as engine:
        result = engine.rollback(apply_id, lock_timeout=lock_timeout)
    views.print_apply(result, stdout)
    return 0


@app.command()
def recover(
    forward: Annotated[
        bool, typer.Option("--forward", help="Finish the interrupted plan instead of undoing it.")
    ] = False,
    lock_timeout: Annotated[float, LockTimeout] = 0,
) -> int:
    """Resolve an interrupted apply: undo it (default) or finish it (--forward) when preconditions hold.

    Example: kfmops recover --forward
    """
    with open_engine("recover", progress=True) as engine:
        result = engine.recover(forward=forward, lock_timeout=lock_timeout)
    views.print_recover(result, stdout)
    return 0


@app.command()
def hotfix(
    address: Annotated[str, typer.Argument(help="The document to change, e.g. dataset.landcover.")],
    assignment: Annotated[str, typer.Option("--set", help="KEY=VALUE in the document's spec, e.g. version=v2019.")],
    reason: Annotated[str, typer.Option("--reason", help="Why this cannot wait for a pull request.")],
    lock_timeout: Annotated[float, LockTimeout] = 0,
) -> int:
    """Change one reference now, outside git, through the safe apply path; writes the patch for git.

    Example: kfmops hotfix dataset.landcover --set version=v2011 --reason "v2019 tiles corrupt, INC-4411"
    """
    with open_engine("hotfix", progress=True) as engine:
        result, patch = engine.hotfix(address, assignment, reason, lock_timeout=lock_timeout)
    views.print_apply(result, stdout)
    stdout.print(f"Make git match: patch -p1 < {patch}  (then commit); until then 'kfmops plan' shows hotfix drift.")
    return 0


@ledger_app.command("show")
def ledger_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    last: Annotated[int, typer.Option("--last", help="Only the newest N entries (0: all).")] = 0,
) -> None:
    """Show the governance ledger: one entry per apply, rollback, hotfix and recover.

    Example: kfmops ledger show --last 5
    """
    entries = Ledger(ledger_path(*_ledger_location())).entries()
    views.print_ledger(entries[-last:] if last else entries, as_json, stdout)


@ledger_app.command("verify")
def ledger_verify() -> int:
    """Check the ledger's hash chain; names every edited, removed, inserted or reordered entry.

    Example: kfmops ledger verify
    """
    ledger = Ledger(ledger_path(*_ledger_location()))
    problems = ledger.verify()
    for problem in problems:
        stdout.print(f"ledger {ledger.path}: {problem}")
    if problems:
        return int(ExitCode.ERROR)
    stdout.print(f"Ledger intact: {len(ledger.entries())} entries, hash chain verified ({ledger.path}).")
    return 0


def _ledger_location() -> tuple[Path, dict]:
    workspace = current_workspace()
    return workspace.root, workspace.section("ledger")


@app.command()
def history(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List applies, rollbacks, hotfixes and recoveries, newest last.

    Example: kfmops history --json
    """
    workspace = current_workspace()
    views.print_history(History(workspace.state_dir).entries(), as_json, stdout)


@state_app.command("list")
def state_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List managed addresses with their last applied values.

    Example: kfmops state list --json
    """
    views.print_state_list(StateStore(current_workspace().state_dir).load(), as_json, stdout)


@state_app.command("show")
def state_show(address: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show one managed reference: where it lives and its last applied value.

    Example: kfmops state show dataset.landcover.search --json
    """
    views.print_state_entry(StateStore(current_workspace().state_dir).load(), address, as_json, stdout)


@catalog_app.command("check")
def catalog_check(
    root: Annotated[Path | None, typer.Argument(help="Catalog folder (default: the workspace's stac backend).")] = None,
    schemas: Annotated[
        Path | None, typer.Option("--schemas", help="Folder of STAC JSON Schemas with a schema-map.json (offline).")
    ] = None,
) -> int:
    """Validate every STAC document offline against local JSON Schemas and count broken links.

    Example: kfmops catalog check --schemas ../shared/fixtures/stac-schemas
    """
    if root is None:
        with open_engine("catalog") as engine:
            root = engine.catalog_root()
    report = check_catalog(root, schemas)
    return views.print_catalog_report(report, root, stdout)


@lock_app.command("status")
def lock_status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Say who holds the workspace lock, or that it is free (or stale).

    Example: kfmops lock status --json
    """
    with open_engine("lock") as engine:
        status = engine.lock.status()
    if as_json:
        stdout.print_json(json.dumps(status.to_dict()))
    else:
        views.print_lock(status, stdout)


@lock_app.command("force-unlock")
def force_unlock(lock_id: Annotated[str, typer.Argument(help="The exact lock id from 'kfmops lock status'.")]) -> None:
    """Remove a lock whose holder is gone. Needs the exact id.

    Example: kfmops lock force-unlock 5f0c2d1e-...
    """
    with open_engine("lock") as engine:
        info = engine.lock.force_unlock(lock_id)
    stdout.print(f"Removed lock {info.id} ({info.who}, pid {info.pid}, {info.operation}).")


def main() -> None:
    run(typer.main.get_command(app))


if __name__ == "__main__":
    sys.exit(main())
