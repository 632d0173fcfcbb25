"""Map what went wrong to one message and one exit code; unexpected errors get a debug log."""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import typer

from kfmops.cli.consoles import stderr
from kfmops.errors import ExitCode, InputError, KfmopsError
from kfmops.io.redact import Redactor


def report(error: BaseException) -> int:
    """Print `error` for a user and return the exit code; no secret is ever printed or logged."""
    from rich.markup import escape

    redact = redactor()
    if isinstance(error, InputError):
        for diagnostic in error.diagnostics:
            stderr.print(f"[bold red]Error:[/] {escape(redact.text(str(diagnostic)))}")
        return int(error.exit_code)
    if isinstance(error, KfmopsError):
        stderr.print(f"[bold red]Error:[/] {escape(redact.text(str(error)))}")
        return int(error.exit_code)
    if isinstance(error, RecursionError):
        stderr.print("[bold red]Error:[/] input nested too deeply to read (a forged or broken file?)")
        return int(ExitCode.ERROR)
    # A new file of its own (O_EXCL, mode 0600): never a predictable name, never written through a link.
    fd, log = tempfile.mkstemp(prefix="kfmops-debug-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(redact.text("".join(traceback.format_exception(error))))
    stderr.print(f"[bold red]internal error:[/] {type(error).__name__}; details in {log}")
    return int(ExitCode.ERROR)


def redactor() -> Redactor:
    """Masks the secrets the workspace of the current directory names (and credential-shaped text)."""
    from kfmops.workspace import load_workspace

    try:
        return Redactor(load_workspace(Path.cwd()).secret_values())
    except Exception:  # no workspace, or a broken one: still mask credential-shaped text
        return Redactor()


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
