"""What every command shares: the workspace of the current directory, a session for the command, the
consoles and views, and the one way to ask an operator for approval."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kfmops.cli.consoles import stderr, stdout
from kfmops.cli.errors import redactor
from kfmops.errors import KfmopsError

# The engine and the views are imported by the command that runs, not when the CLI starts (--help).
if TYPE_CHECKING:
    from kfmops.engine.session import Session
    from kfmops.render.formats import View
    from kfmops.render.human import HumanView
    from kfmops.workspace import Workspace


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


Format = typer.Option("--format", "-f", metavar="FORMAT", help="text, json or markdown.")
Detail = typer.Option(
    "--detail", metavar="DETAIL", help="Markdown plans: full, summary, or auto (summary above 200 datasets)."
)
LockTimeout = typer.Option(
    "--lock-timeout", metavar="SECONDS", help="Seconds to wait for the workspace lock (0: fail at once)."
)


def current_workspace() -> Workspace:
    from kfmops.workspace import load_workspace

    return load_workspace(Path.cwd())


def human() -> HumanView:
    from kfmops.render.human import HumanView

    return HumanView(stdout, stderr)


def view(output_format: str, detail: str = "auto") -> View:
    from kfmops.render.formats import view_for

    return view_for(output_format, stdout, stderr, detail=detail)


@contextmanager
def session(command: str, *, read_only: bool = False, progress: bool = False) -> Iterator[Session]:
    """A session for one command: its span, its telemetry, progress lines, and its warnings printed at the end."""
    from kfmops.engine.session import Session
    from kfmops.render.progress import progress_for

    opened = Session(current_workspace(), command, read_only=read_only)
    if progress:
        opened.subscribe(progress_for(stderr))
    try:
        with opened.span(f"kfmops.{command}"):
            yield opened
    finally:
        opened.close()
        redact = redactor()
        for warning in opened.warnings:
            stderr.print(f"Warning: {redact.text(warning)}", style="yellow")


def confirm(question: str, *, allow_input: bool = True) -> bool:
    """Ask for `yes`, from the terminal or a piped stdin (as Terraform does); refuse when input is off
    (`--no-input`, KFMOPS_INPUT=false) or stdin is closed, rather than wait."""
    if not allow_input or os.environ.get("KFMOPS_INPUT", "").lower() in {"0", "false", "no", "off"}:
        raise KfmopsError("Input is disabled, so kfmops cannot ask for approval: pass --auto-approve")
    if sys.stdin.isatty():
        return input(f"{question} Only 'yes' is accepted: ").strip() == "yes"
    answer = sys.stdin.readline()
    if not answer:
        raise KfmopsError("No answer on stdin (closed, not a terminal): pass --auto-approve, or pipe 'yes'")
    stderr.print(f"{question} (answered {answer.strip()!r} from stdin)")
    return answer.strip() == "yes"
