"""kfmops commands. Each one parses its arguments, calls one library function and hands the result to a view."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kfmops import __version__
from kfmops.cli import inspect
from kfmops.cli.consoles import stderr, stdout
from kfmops.cli.errors import redactor, run
from kfmops.engine.apply import ApplyOptions, refuse_if_unfinished
from kfmops.engine.apply import apply as apply_plan
from kfmops.engine.hotfix import hotfix as apply_hotfix
from kfmops.engine.init import init as init_workspace
from kfmops.engine.plan import PlanRequest, load_desired
from kfmops.engine.plan import plan as make_plan
from kfmops.engine.recover import recover as recover_workspace
from kfmops.engine.rollback import rollback as rollback_apply
from kfmops.engine.session import Session
from kfmops.errors import ExitCode, KfmopsError
from kfmops.plans import planfile
from kfmops.render.comment import write_comment
from kfmops.render.formats import View, view_for
from kfmops.render.graph import render_graph
from kfmops.render.human import HumanView
from kfmops.render.progress import PlainProgress
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
app.add_typer(inspect.state_app, name="state")
app.add_typer(inspect.lock_app, name="lock")
app.add_typer(inspect.ledger_app, name="ledger")
app.add_typer(inspect.catalog_app, name="catalog")
app.command()(inspect.history)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


Format = typer.Option("--format", "-f", help="text, json or markdown.")
LockTimeout = typer.Option("--lock-timeout", help="Seconds to wait for the workspace lock (0: fail at once).")


def current_workspace() -> Workspace:
    return load_workspace(Path.cwd())


def human() -> HumanView:
    return HumanView(stdout, stderr)


def view(output_format: str) -> View:
    return view_for(output_format, stdout, stderr)


@contextmanager
def session(command: str, *, read_only: bool = False, progress: bool = False) -> Iterator[Session]:
    """A session for one command: its span, its telemetry, progress lines, and its warnings printed at the end."""
    opened = Session(current_workspace(), command, read_only=read_only)
    if progress:
        opened.subscribe(PlainProgress(stderr))
    try:
        with opened.span(f"kfmops.{command}"):
            yield opened
    finally:
        opened.close()
        redact = redactor()
        for warning in opened.warnings:
            stderr.print(f"Warning: {redact.text(warning)}", style="yellow")


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


@app.command()
def init() -> None:
    """Create a workspace here (kfmops.yaml and desired/) or prepare an existing one's state and local backend.

    Example: mkdir my-workspace && kfmops -C my-workspace init
    """
    human().initialized(init_workspace(Path.cwd()))


@app.command()
def validate(
    git_ref: Annotated[str | None, typer.Option("--git-ref", help="Validate the desired state at REF.")] = None,
) -> None:
    """Check every desired-state document (schema, names, versions, backends) without touching a backend.

    Example: kfmops validate
    """
    desired = load_desired(current_workspace(), git_ref)
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
    chosen = view(output_format)
    with session("plan", read_only=True) as opened:
        result = make_plan(opened, PlanRequest(list(target), list(exclude), git_ref, refresh_only, base))
        path = out or opened.workspace.plans_dir / f"{result.plan_id}.json"
    planfile.write(result, path)
    if split is not None:
        parts = write_comment(result, split)
        stderr.print(f"Wrote the PR comment in {len(parts)} part(s) to {split}/comment-N.md")
    chosen.plan(result, path)
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
    chosen = view(output_format)
    with session("drift", read_only=True) as opened:
        result = make_plan(opened, PlanRequest(refresh_only=True))
    chosen.plan(result)
    return int(ExitCode.CHANGES) if result.drift else 0


@app.command()
def graph(
    graph_format: Annotated[str, typer.Option("--format", "-f", help="mermaid or dot.")] = "mermaid",
) -> None:
    """Print the desired reference graph (dataset -> references -> targets) as Mermaid or DOT.

    Example: kfmops graph --format dot | dot -Tsvg > references.svg
    """
    sys.stdout.write(render_graph(load_desired(current_workspace()), graph_format))


@app.command()
def show(
    plan_file: Annotated[Path, typer.Argument(help="A plan file written by 'kfmops plan'.")],
    output_format: Annotated[OutputFormat, Format] = OutputFormat.text,
) -> None:
    """Show a saved plan file (verified against its digest).

    Example: kfmops show plans/plan-20261126T120000Z-ab12cd.json --format json
    """
    view(output_format).plan(planfile.read(plan_file))


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
    started = time.monotonic()
    with session("apply", progress=True) as opened:
        if plan_file is None:
            refuse_if_unfinished(opened)  # before reading backends that may still be down
            chosen = make_plan(opened, PlanRequest())
            human().plan(chosen)
            if not chosen.has_changes():
                stdout.print("Nothing to apply.")
            if chosen.has_changes() and not auto_approve and not confirm("Apply these changes?"):
                stderr.print("Apply cancelled; nothing was changed.")
                return int(ExitCode.ERROR)
        else:
            signed = bool(opened.workspace.section("apply").get("require_signed_plans", False))
            chosen = planfile.read(plan_file, require_signature=signed)
        result = apply_plan(opened, chosen, ApplyOptions(lock_timeout=lock_timeout, allow_dirty=allow_dirty))
    human().applied(result, time.monotonic() - started)
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
    started = time.monotonic()
    with session("rollback", progress=True) as opened:
        result = rollback_apply(opened, apply_id, ApplyOptions(lock_timeout=lock_timeout))
    human().applied(result, time.monotonic() - started)
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
    with session("recover", progress=True) as opened:
        result = recover_workspace(opened, forward=forward, lock_timeout=lock_timeout)
    human().recovered(result)
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
    started = time.monotonic()
    with session("hotfix", progress=True) as opened:
        result, patch = apply_hotfix(opened, address, assignment, reason, lock_timeout=lock_timeout)
    human().applied(result, time.monotonic() - started)
    stdout.print(f"Make git match: patch -p1 < {patch}  (then commit); until then 'kfmops plan' shows hotfix drift.")
    return 0


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise KfmopsError("not a terminal, so apply cannot ask for approval: pass --auto-approve or a plan file")
    return input(f"{question} Only 'yes' is accepted: ").strip() == "yes"


def main() -> None:
    run(typer.main.get_command(app))


if __name__ == "__main__":
    main()
