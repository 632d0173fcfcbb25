"""Output to a pipe or file is plain text: what a terminal would show, without rich's layout or escapes."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kfmops.cli.consoles import PlainConsole


def plain_console() -> tuple[PlainConsole, io.StringIO]:
    stream = io.StringIO()
    return PlainConsole(Console(file=stream, highlight=False, soft_wrap=True, width=40)), stream


def test_strings_and_text_are_written_as_their_text_with_markup_rendered_and_no_wrapping() -> None:
    console, stream = plain_console()
    long = "x" * 100
    console.print("[bold green]Apply complete![/] 3 created", style="dim")
    console.print(Text(f"  + dataset.{long}", style="bold green"))
    console.print("kept [as is]", "and :smile:", markup=False, end="|\n")
    console.print()
    assert stream.getvalue() == f"Apply complete! 3 created\n  + dataset.{long}\nkept [as is] and :smile:|\n\n"


def test_a_table_still_gets_its_layout() -> None:
    console, stream = plain_console()
    table = Table("seq", "op")
    table.add_row("1", "apply")
    console.print(table)
    assert "│ 1   │ apply │" in stream.getvalue()


def test_a_piped_plan_has_no_escape_codes_and_matches_the_plan_line_for_line(cli, make_workspace) -> None:
    workspace = make_workspace(n=3)
    code, out, err = cli(workspace, "plan")
    assert code == 0, err
    assert "\x1b" not in out + err
    lines = out.splitlines()
    assert lines[0].startswith("Plan plan-")
    assert lines[-1].startswith("Plan: ") and "to create" in lines[-1]
    creates = [line for line in lines if line.startswith("  + ")]
    assert len(creates) == int(lines[-1].split()[1])
