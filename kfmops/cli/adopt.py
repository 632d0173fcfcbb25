"""`kfmops import`: bring live references under management without writing them, or discover them first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from kfmops.cli.common import LockTimeout, confirm, human, session
from kfmops.cli.consoles import stderr, stdout
from kfmops.cli.operate import AutoApprove, NoInput, finished
from kfmops.errors import ExitCode, KfmopsError
from kfmops.references import ReferenceKind


def import_(
    addresses: Annotated[
        list[str] | None,
        typer.Argument(metavar="ADDRESS...", help="Declared addresses to import, e.g. dataset.landcover.search."),
    ] = None,
    accept_live: Annotated[
        bool,
        typer.Option("--accept-live", help="Import a live value that differs from the desired one, then update it."),
    ] = False,
    discover_: Annotated[
        bool,
        typer.Option(
            "--discover", help="Find live references in kfmops' conventions that no document declares; write documents."
        ),
    ] = False,
    kind: Annotated[
        list[ReferenceKind] | None,
        typer.Option("--kind", metavar="KIND", help="With --discover: only stac, graph, search or cache (repeatable)."),
    ] = None,
    write: Annotated[
        Path | None,
        typer.Option("--write", metavar="FILE", help="With --discover: the YAML file to write (default: print it)."),
    ] = None,
    auto_approve: Annotated[bool, AutoApprove] = False,
    allow_dirty: Annotated[bool, typer.Option("--allow-dirty", help="Import with uncommitted desired state.")] = False,
    lock_timeout: Annotated[float, LockTimeout] = 0,
    no_input: Annotated[bool, NoInput] = False,
) -> int:
    """Record live values of declared addresses in state without writing to any backend (`<= import`);
    with --discover, write Dataset and Import documents for live references no document declares.

    Example: kfmops import --discover --write desired/discovered.yaml && kfmops import dataset.landcover
    """
    from kfmops.engine.adopt import import_plan
    from kfmops.engine.apply import ApplyOptions, apply, refuse_if_unfinished
    from kfmops.engine.discover import discover, write_discovered

    if discover_:
        if addresses:
            raise KfmopsError("give ADDRESS... or --discover, not both")
        with session("discover", read_only=True) as opened:
            found = discover(opened, list(kind or ReferenceKind))
        text = write_discovered(found, write)
        if write is None:
            stdout.print(text, markup=False, end="")
        stderr.print(
            f"Discovered {len(found.datasets)} dataset(s) in {', '.join(found.kinds)}"
            + (f"; wrote {write}. Review the CARE metadata, then: kfmops plan" if write else ".")
        )
        for note in found.notes:
            stderr.print(f"Note: {note}", style="yellow")
        return 0
    if kind or write:
        raise KfmopsError("--kind and --write only go with --discover")
    if not addresses:
        raise KfmopsError("give the addresses to import, e.g. kfmops import dataset.landcover, or --discover")
    started = time.monotonic()
    with session("import", progress=True) as opened, opened.lock.held("import", None, lock_timeout):
        refuse_if_unfinished(opened)
        chosen = import_plan(opened, addresses, accept_live=accept_live)
        human().plan(chosen)
        if chosen.policy.get("decision") != "allow":
            return int(ExitCode.POLICY_DENIED)
        if not auto_approve and not confirm("Import these references?", allow_input=not no_input):
            stderr.print("Import cancelled; nothing was changed.")
            return int(ExitCode.ERROR)
        options = ApplyOptions(lock_timeout=lock_timeout, allow_dirty=allow_dirty, fresh=True)
        result = apply(opened, chosen, options)
    return finished(None, result, started)
