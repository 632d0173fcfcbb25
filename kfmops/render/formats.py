"""The output formats a command can be asked for, each mapped to its view class."""

from __future__ import annotations

from rich.console import Console

from kfmops.errors import KfmopsError
from kfmops.render.human import HumanView, MarkdownView
from kfmops.render.view import JsonView

View = HumanView | JsonView
DETAILS = ("auto", "full", "summary")
VIEWS: dict[str, type[View]] = {"text": HumanView, "json": JsonView, "markdown": MarkdownView}


def view_for(output_format: str, out: Console, err: Console, *, detail: str = "auto") -> View:
    """The view of `output_format` (text, json or markdown); `detail` applies to Markdown plans."""
    if output_format not in VIEWS:
        raise KfmopsError(f"unknown format {output_format!r}; use one of {', '.join(VIEWS)}")
    if detail not in DETAILS:
        raise KfmopsError(f"unknown detail {detail!r}; use one of {', '.join(DETAILS)}")
    return VIEWS[output_format](out, err, detail=detail)
