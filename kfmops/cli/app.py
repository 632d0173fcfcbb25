"""kfmops commands. Each one parses its arguments, calls one library function and hands the result to a view."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from kfmops import __version__
from kfmops.cli import adopt, gates, inspect, operate
from kfmops.cli.common import Detail, Format, OutputFormat, current_workspace, human, session, view
from kfmops.cli.consoles import stderr, stdout
from kfmops.cli.errors import run
from kfmops.errors import ExitCode, KfmopsError

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
app.command()(inspect.diff)
for command in (
    operate.apply,
    operate.rollback,
    operate.recover,
    operate.hotfix,
    operate.repair,
    gates.freeze,
    gates.resume,
    gates.slo,
):
    app.command()(command)
app.command("import")(adopt.import_)


def _version(value: bool) -> None:
    if value:
        print(f"kfmops {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    directory: Annotated[
        Path, typer.Option("-C", "--directory", metavar="DIR", help="Run as if started in DIR.")
    ] = Path("."),
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
    from kfmops.engine.init import init as init_workspace

    human().initialized(init_workspace(Path.cwd()))


@app.command()
def validate(
    git_ref: Annotated[
        str | None, typer.Option("--git-ref", metavar="REF", help="Validate the desired state at REF.")
    ] = None,
) -> None:
    """Check every desired-state document (schema, names, versions, backends) without touching a backend.

    Example: kfmops validate
    """
    from kfmops.engine.plan import load_desired

    desired = load_desired(current_workspace(), git_ref)
    stdout.print(f"Valid: {len(desired.documents)} documents, {len(desired.references)} references.")


@app.command()
def plan(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="PLAN_FILE", help="Plan file to write (default plans/<id>.json)."),
    ] = None,
    output_format: Annotated[OutputFormat, Format] = OutputFormat.text,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there are changes.")
    ] = False,
    target: Annotated[
        list[str], typer.Option("--target", metavar="ADDRESS", help="Only this address (repeatable).")
    ] = [],  # noqa: B006
    exclude: Annotated[
        list[str], typer.Option("--exclude", metavar="ADDRESS", help="Skip this address (repeatable).")
    ] = [],  # noqa: B006
    refresh_only: Annotated[bool, typer.Option("--refresh-only", help="Only report live drift.")] = False,
    git_ref: Annotated[
        str | None, typer.Option("--git-ref", metavar="REF", help="Plan the desired state at REF.")
    ] = None,
    base: Annotated[
        str | None,
        typer.Option("--base", metavar="REF", help="Mark the documents changed since git REF (e.g. origin/main)."),
    ] = None,
    detail: Annotated[str, Detail] = "auto",
    split: Annotated[
        Path | None,
        typer.Option(
            "--split", metavar="DIR", help="Also write the PR comment as DIR/comment-N.md, each within GitHub's limit."
        ),
    ] = None,
    accept_live: Annotated[
        bool,
        typer.Option("--accept-live", help="Import live values that differ from the desired ones, then update them."),
    ] = False,
) -> int:
    """Compare desired state with the live backends and write a plan file.

    Example: kfmops plan --out plan.json --format markdown --detailed-exitcode
    """
    from kfmops.engine.plan import PlanRequest
    from kfmops.engine.plan import plan as make_plan
    from kfmops.plans import planfile
    from kfmops.render.comment import write_comment

    chosen = view(output_format, detail)
    with session("plan", read_only=True) as opened:
        request = PlanRequest(list(target), list(exclude), git_ref, refresh_only, base, accept_live=accept_live)
        result = make_plan(opened, request)
        path = out or opened.workspace.plans_dir / f"{result.plan_id}.json"
    planfile.write(result, path)
    if split is not None:
        parts = write_comment(result, split, detail=detail, artifact=path.name)
        stderr.print(f"Wrote the PR comment in {len(parts)} part(s) to {split}/comment-N.md")
    chosen.plan(result, path)
    if result.policy.get("decision") != "allow":
        stderr.print(
            "Policy denies this plan, or a checkpoint failed (see the findings above); it cannot be applied.",
            style="red",
        )
        return int(ExitCode.POLICY_DENIED)
    if detailed_exitcode and (result.has_changes() or (refresh_only and result.drift)):
        return int(ExitCode.CHANGES)
    return 0


@app.command()
def drift(output_format: Annotated[OutputFormat, Format] = OutputFormat.text) -> int:
    """Report references whose live value differs from the last applied one; exit 2 when any does.

    Example: kfmops drift --format markdown
    """
    from kfmops.engine.plan import PlanRequest
    from kfmops.engine.plan import plan as make_plan

    chosen = view(output_format)
    with session("drift", read_only=True) as opened:
        result = make_plan(opened, PlanRequest(refresh_only=True))
    chosen.plan(result)
    return int(ExitCode.CHANGES) if result.drift else 0


@app.command()
def graph(
    graph_format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="mermaid or dot.")] = "mermaid",
) -> None:
    """Print the desired reference graph (dataset -> references -> targets) as Mermaid or DOT.

    Example: kfmops graph --format dot | dot -Tsvg > references.svg
    """
    from kfmops.engine.plan import load_desired
    from kfmops.render.graph import render_graph

    sys.stdout.write(render_graph(load_desired(current_workspace()), graph_format))


@app.command()
def show(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN_FILE", help="A plan file written by 'kfmops plan'.")],
    output_format: Annotated[OutputFormat, Format] = OutputFormat.text,
    detail: Annotated[str, Detail] = "auto",
) -> None:
    """Show a saved plan file (verified against its digest).

    Example: kfmops show plans/plan-20261126T120000Z-ab12cd.json --format json
    """
    from kfmops.plans import planfile

    view(output_format, detail).plan(planfile.read(plan_file))


GC_THRESHOLDS = (50_000, 20, 100)
"""The cyclic collector runs after 50,000 net new container objects instead of 700: a plan or an apply
makes millions of small, acyclic values (freed by reference counting), and at the default it spent a
quarter of a large plan scanning them. Cycles are still collected (benchmarks/results/README.md)."""


def main() -> None:
    command = typer.main.get_command(app)
    # Everything imported so far (modules, classes, the CLI) lives until exit: never scan it again.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    run(command)


if __name__ == "__main__":
    main()
