"""Map what went wrong to one message and one exit code; unexpected errors get a debug log."""

from __future__ import annotations

import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from kfmops.cli.consoles import stderr
from kfmops.errors import ExitCode, InputError, KfmopsError


def report(error: BaseException) -> int:
    """Print `error` for a user and return the exit code."""
    if isinstance(error, InputError):
        for diagnostic in error.diagnostics:
            stderr.print(f"[bold red]Error:[/] {escape(str(diagnostic))}")
        return int(error.exit_code)
    if isinstance(error, KfmopsError):
        stderr.print(f"[bold red]Error:[/] {escape(str(error))}")
        return int(error.exit_code)
    log = Path(tempfile.gettempdir()) / f"kfmops-debug-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    log.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
    stderr.print(f"[bold red]internal error:[/] {type(error).__name__}; details in {log}")
    return int(ExitCode.ERROR)


try:  # newer typer runs on its own vendored copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import ClickException  # type: ignore[assignment]


def run(app: Any) -> None:
    """Run the click command of the typer app and exit with the code of whatever happened."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        stderr.print("Aborted.")
        code = ExitCode.ERROR
    except ClickException as usage:
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
