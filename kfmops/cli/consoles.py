"""The two consoles every command writes to: results on stdout, messages and progress on stderr.

Each is made on its first use: `kfmops --help` and commands that print nothing through them do not
import rich.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console


class _OnFirstUse:
    """A rich Console with `options`, created when one of its attributes is first asked for."""

    def __init__(self, **options: Any):
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


stdout = cast("Console", _OnFirstUse(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200))
stderr = cast("Console", _OnFirstUse(stderr=True, highlight=False, soft_wrap=True))
