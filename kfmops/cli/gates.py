"""Commands over the operational gates: freeze and resume (red state for everyone sharing the state) and the
SLO report with its error budgets."""

from __future__ import annotations

from typing import Annotated

import typer

from kfmops.cli.common import Format, OutputFormat, session
from kfmops.cli.common import view as view_of
from kfmops.cli.inspect import Json, view

Reason = typer.Option("--reason", metavar="TEXT", help="Why; shown to everyone refused and kept in the ledger.")


def freeze(
    reason: Annotated[str, Reason],
    until: Annotated[
        str | None,
        typer.Option("--until", metavar="TIME", help="Lift by itself at TIME (ISO 8601, or a duration: 2h, 1d)."),
    ] = None,
    as_json: Annotated[bool, Json] = False,
) -> None:
    """Freeze the workspace (red state) for everyone who shares its state: apply, hotfix and rollback refuse
    until 'kfmops resume' (or --until); plan and recover still work.

    Example: kfmops freeze --reason "INC-4411: tiles corrupt, investigating" --until 4h
    """
    from kfmops.engine import freeze as freezing

    with session("freeze") as opened:
        record = freezing.freeze(opened, reason, until)
    view(as_json).frozen(record)


def resume(reason: Annotated[str, Reason], as_json: Annotated[bool, Json] = False) -> None:
    """Lift the freeze: applies, hotfixes and rollbacks may run again.

    Example: kfmops resume --reason "INC-4411 resolved"
    """
    from kfmops.engine import freeze as freezing

    with session("resume") as opened:
        lifted = freezing.resume(opened, reason)
    view(as_json).resumed(lifted)


def slo(output_format: Annotated[OutputFormat, Format] = OutputFormat.text) -> None:
    """Report each service level objective of kfmops.yaml 'slo:': target, measured value, error budget left and
    burn rate, from the state store's history; also exported as OTel gauges (kfm.ops_slo_*).

    Example: kfmops slo --format markdown
    """
    from kfmops.engine import slo as objectives

    chosen = view_of(output_format)
    with session("slo", read_only=True) as opened:
        reports = objectives.report(opened)
    chosen.slo(reports)
