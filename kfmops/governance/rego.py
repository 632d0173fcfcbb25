"""The embedded Rego interpreter (regopy, rego-cpp): modules loaded once, then one query per input.

Every failure is a RegoFailure holding (message, fix) pairs, a syntax error with its file:line:column;
the policy module turns them into a deny. Nothing here decides what a result means.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# regopy ships neither type hints nor a py.typed marker, and PyPI has no stub package for it. This module
# is imported only when a plan is judged: the commands that judge none (--help, validate ...) never load it.
from regopy import Interpreter, LogLevel, NodeKind, RegoError  # type: ignore[import-untyped]
from regopy.rego_shared import rego_node_value  # type: ignore[import-untyped]


class RegoFailure(Exception):
    """The interpreter could not load the modules or answer a query; `problems` are (message, fix) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(message for message, _ in problems))
        self.problems = problems


class Rego:
    def __init__(self, modules: list[tuple[str, str]], data: Mapping[str, Any]):
        """An interpreter holding `modules` ((file name, Rego text)) and `data`; RegoFailure names every
        module that does not load, with its file:line:column."""
        self.modules, self.data = modules, data
        problems: list[tuple[str, str]] = []
        try:
            self._interpreter = Interpreter()
            self._interpreter.log_level = LogLevel.NONE  # rego-cpp prints errors to stdout otherwise
            self._interpreter.strict_built_in_errors = True  # a failing built-in is an error, not an undefined
            texts = dict(modules)
            for name, text in modules:
                try:
                    self._interpreter.add_module(name, text)
                except RegoError as error:
                    problems.extend(_module_errors(name, error, texts))
            self._interpreter.add_data_json(json.dumps(data, default=str))
        except Exception as error:  # fail closed: any failure of the interpreter is a deny, never an allow
            raise _failure(error) from error
        if problems:
            raise RegoFailure(problems)

    def query_each(self, query: str, documents: Sequence[Mapping[str, Any]]) -> list[list[list[Any]]]:
        """`query` over each of `documents`, in order; each document goes through JSON on its own first (plain
        data, exactly what JSON gives back), so that a caller's whole input is never held twice. rego-cpp
        answers a query without holding the GIL: the documents are split over one interpreter per core,
        each in a thread of its own, this one included."""
        workers = min(len(documents), len(os.sched_getaffinity(0)))
        if workers < 2:
            return [self.query(query, _plain(document)) for document in documents]
        share = -(-len(documents) // workers)
        parts = [documents[start : start + share] for start in range(0, len(documents), share)]
        interpreters = [self] + [Rego(self.modules, self.data) for _ in parts[1:]]
        with ThreadPoolExecutor(len(parts)) as pool:
            found = pool.map(lambda rego, part: [rego.query(query, _plain(d)) for d in part], interpreters, parts)
            return [answer for part in found for answer in part]

    def query(self, query: str, document: Any) -> list[list[Any]]:
        """The expressions of each result of `query` with `document` (plain JSON data) as input."""
        try:
            # Built node by node from plain data, which is faster in regopy than parsing a Rego term.
            self._interpreter.set_input(document)
            output = self._interpreter.query(query)
            if not output.ok():
                raise RegoFailure(
                    [
                        (
                            f"evaluation failed: {reason}",
                            "fix the policy; `opa eval --strict-builtin-errors` on the plan JSON shows where it fails",
                        )
                        for reason in _output_errors(output)
                    ]
                )
            return [result.expressions for result in output.results]
        except RegoFailure:
            raise
        except Exception as error:
            raise _failure(error) from error


def _plain(document: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(document, default=str))


def _failure(error: Exception) -> RegoFailure:
    if isinstance(error, json.JSONDecodeError):  # regopy parses the interpreter's output as JSON
        return RegoFailure(
            [
                (
                    f"the interpreter's output is not valid JSON ({error})",
                    "build messages with concat, not with sprintf over a string another built-in returned "
                    "(a rego-cpp quirk; docs/policy.md)",
                )
            ]
        )
    return RegoFailure(
        [
            (
                f"policy evaluation failed: {type(error).__name__}: {first_line(error)}",
                "fix the policy files; run `opa check` on them for details",
            )
        ]
    )


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no detail)"


_ERROR_HEAD = re.compile(rb"\(error (\d+):")
_ERROR_SPAN = re.compile(rb"\|(\d+)\|(\d+)")
_ERROR_MESSAGE = re.compile(rb"\(errormsg (\d+):")
_SYNTAX_FIX = "fix the Rego syntax (Rego v1: `import rego.v1`, `if`, `contains`)"


def _module_errors(name: str, error: Exception, texts: Mapping[str, str]) -> list[tuple[str, str]]:
    """(message with file:line:column, fix) of each error in a RegoError raised while adding a module.

    rego-cpp reports errors as an S-expression whose strings are length-prefixed
    (`(error 8:bad.rego|49|1 (errormsg 16:this is unclosed) ...)`), offsets in bytes of the file."""
    raw = str(error.args[0] if error.args else error).encode("utf-8", "replace")
    found: list[tuple[str, str]] = []
    position = 0
    while head := _ERROR_HEAD.search(raw, position):
        start = head.end()
        file = raw[start : start + int(head[1])].decode("utf-8", "replace")
        span = _ERROR_SPAN.match(raw, start + int(head[1]))
        message = _ERROR_MESSAGE.search(raw, start)
        if message is None:
            break
        text = raw[message.end() : message.end() + int(message[1])].decode("utf-8", "replace")
        position = message.end() + int(message[1])
        where = _location(file or name, int(span[1]) if span else None, texts)
        found.append((f"{where}: {text}", _SYNTAX_FIX))
    return found or [(f"{name}: {first_line(error)}", "fix the Rego syntax")]


def _location(file: str, offset: int | None, texts: Mapping[str, str]) -> str:
    text = texts.get(file)
    if offset is None or text is None:
        return file
    before = text.encode("utf-8")[:offset].decode("utf-8", "replace")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return f"{file}:{line}:{column}"


def _output_errors(output: Any) -> list[str]:
    """The messages of an output that is not ok (an ErrorSeq of Error nodes: message, ast, code)."""
    reasons = []
    try:
        sequence = output.node()
        for index in range(len(sequence)):
            parts = sequence.at(index)
            texts = {parts.at(i).kind: rego_node_value(parts.at(i)._impl) for i in range(len(parts))}
            code = texts.get(NodeKind.ErrorCode, "")
            message = texts.get(NodeKind.ErrorMessage, "")
            reasons.append(f"{code}: {message}" if code else message)
    except Exception:  # the error detail is best effort; the deny does not depend on it
        pass
    return [reason for reason in reasons if reason] or ["the interpreter reported an error without detail"]
