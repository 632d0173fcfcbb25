"""The CLI documents itself: every command and subcommand has help text with an example."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer

from kfmops.cli.app import app


def walk(command: Any, path: tuple[str, ...] = ("kfmops",)) -> Iterator[tuple[str, Any]]:
    """Every command of the click tree typer builds, as ("kfmops state list", command)."""
    yield " ".join(path), command
    for name, child in sorted((getattr(command, "commands", None) or {}).items()):
        yield from walk(child, (*path, name))


COMMANDS = dict(walk(typer.main.get_command(app)))


def test_the_tree_holds_the_documented_commands():
    expected = {"init", "validate", "plan", "show", "apply", "rollback", "recover", "history"}
    expected |= {"state list", "state show", "lock status", "lock force-unlock"}
    assert {f"kfmops {name}" for name in expected} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(name):
    command = COMMANDS[name]
    text = command.help or ""
    assert text.strip(), f"{name} has no help text"
    assert "Example:" in text, f"{name}'s help has no 'Example:'"
    example = text.split("Example:", 1)[1].strip().splitlines()[0]
    words = example.split()
    assert "kfmops" in words, f"{name}'s example is not a kfmops command line: {example!r}"
    assert all(word in words for word in name.split()[1:]), f"{name}'s example does not run {name}: {example!r}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_says_what_it_does(name):
    for parameter in COMMANDS[name].params:
        if getattr(parameter, "param_type_name", "") == "option" and not getattr(parameter, "hidden", False):
            assert (parameter.help or "").strip(), f"{name} {parameter.opts} has no help"


def test_help_is_printed_by_the_real_entry_point(make_workspace, cli):
    workspace = make_workspace(n=1)
    for code, out, err in cli.concurrently(workspace, ("--help",), ("state", "list", "--help"), ("plan", "--help")):
        assert code == 0, err
        assert "Example:" in out


def test_a_usage_error_is_a_usage_message_not_an_internal_error(make_workspace, cli):
    workspace = make_workspace(n=1)
    for code, _out, err in cli.concurrently(workspace, ("plan", "--bogus"), ("show",)):
        assert code != 0
        assert "internal error" not in err
        assert "Usage:" in err or "No such option" in err


def test_relative_paths_are_relative_to_the_directory_given_with_c(make_workspace, cli):
    """-C DIR runs as if started in DIR (like terraform -chdir): --out and plan file arguments included."""
    workspace = make_workspace(n=1)
    code, _out, err = cli(workspace, "plan", "--out", "relative.json")
    assert code == 0, err
    assert (workspace / "relative.json").is_file()
    code, out, err = cli(workspace, "apply", "relative.json")
    assert code == 0, (out, err)


def test_a_bad_format_is_refused_before_anything_is_written(make_workspace, cli):
    workspace = make_workspace(n=1)
    code, _out, err = cli(workspace, "plan", "--format", "yaml")
    assert code == 1
    assert "'yaml' is not one of" in err
    assert "internal error" not in err
    assert not list(workspace.glob("plans/*.json"))
