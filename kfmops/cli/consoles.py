"""The two consoles every command writes to: results on stdout, messages and progress on stderr.

Each is made on its first use: `kfmops --help` and commands that print nothing through them do not
import rich. On a terminal they are rich Consoles; otherwise (a pipe, a file, CI) lines of text are
written as they are, without rich's layout, which costs ~60 µs a line: 2.5 s for a 40,000-line plan.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console


class PlainConsole:
    """A non-terminal Console's output without its layout: strings (markup rendered to its text) and Text
    objects are written as their plain text; tables and other renderables still go through rich."""

    def __init__(self, console: Console):
        self.console = console

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", markup: bool | None = None, **options: Any) -> None:
        from rich.text import Text

        options.pop("style", None)  # a non-terminal shows no style
        if options or not all(isinstance(o, str | Text) for o in objects):
            self.console.print(*objects, sep=sep, end=end, markup=markup, **options)
            return
        self.console.file.write(sep.join(self._plain(o, markup is not False) for o in objects) + end)

    @staticmethod
    def _plain(item: Any, markup: bool) -> str:
        from rich.markup import render

        if isinstance(item, str):
            return render(item).plain if markup and "[" in item else item
        return str(item.plain)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


class _OnFirstUse:
    """A Console with `options` (plain when its stream is not a terminal), made when first asked for."""

    def __init__(self, **options: Any):
        self._options = options
        self._console: Console | PlainConsole | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            console = Console(**self._options)
            self._console = console if console.is_terminal else PlainConsole(console)
        return getattr(self._console, name)


stdout = cast("Console", _OnFirstUse(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200))
stderr = cast("Console", _OnFirstUse(stderr=True, highlight=False, soft_wrap=True))
