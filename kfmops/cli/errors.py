"""Map what went wrong to one message and one exit code; unexpected errors get a debug log."""

from __future__ import annotations

import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console

from kfmops.errors import ExitCode, InputError, KfmopsError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def report(error: BaseException) -> int:
    """Print `error` for a user and return the exit code."""
    if isinstance(error, InputError):
        for diagnostic in error.diagnostics:
            stderr.print(f"[bold red]Error:[/] {_escape(str(diagnostic))}")
        return int(error.exit_code)
    if isinstance(error, KfmopsError):
        stderr.print(f"[bold red]Error:[/] {_escape(str(error))}")
        return int(error.exit_code)
    log = Path(tempfile.gettempdir()) / f"kfmops-debug-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    log.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
    stderr.print(f"[bold red]internal error:[/] {type(error).__name__}; details in {log}")
    return int(ExitCode.ERROR)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def run(app: click.Command) -> None:
    try:
        code = app(standalone_mode=False)
    except click.exceptions.Abort:
        stderr.print("Aborted.")
        code = ExitCode.ERROR
    except click.ClickException as usage:
        usage.show()
        code = ExitCode.ERROR
    except KeyboardInterrupt:
        stderr.print("Interrupted.")
        code = 130
    except BaseException as error:
        if isinstance(error, SystemExit):
            raise
        code = report(error)
    sys.exit(int(code or 0))
