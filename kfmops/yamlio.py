"""Safe YAML loading with the C loader, remembering the line of every mapping key and list item."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import yaml

from kfmops.errors import Diagnostic, InputError


class LineDict(dict[Any, Any]):
    """A mapping that knows its own line and the line of each key (1-based)."""

    line: int = 0
    lines: dict[Any, int]


class LineList(list[Any]):
    """A sequence that knows its own line and the line of each item (1-based)."""

    line: int = 0
    lines: list[int]


MAX_VALUES = 100_000  # per document, aliases expanded: a few nested aliases must not multiply into billions


class _Loader(yaml.CSafeLoader):
    """CSafeLoader whose mappings and sequences keep their positions; still safe (no tags)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, dict | list):
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value", mark)
        if key in result:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_documents(text: str, file: str) -> Iterator[Any]:
    """Every YAML document in `text`; a syntax error becomes an InputError naming file and line."""
    try:
        for document in yaml.load_all(text, Loader=_Loader):
            if _expanded_size(document, MAX_VALUES) > MAX_VALUES:
                summary = f"the document holds more than {MAX_VALUES} values once its YAML aliases are expanded"
                line = getattr(document, "line", None)
                raise InputError([Diagnostic(summary, "use fewer or shallower aliases", file=file, line=line)])
            yield document
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError([Diagnostic(f"YAML syntax error: {problem}", file=file, line=line)]) from None
    except yaml.YAMLError as exc:
        raise InputError([Diagnostic(f"YAML error: {exc}", file=file)]) from None


def _expanded_size(node: Any, limit: int) -> int:
    """How many values `node` holds with shared (aliased) parts counted each time; stops past `limit`."""
    count, pending = 0, [node]
    while pending and count <= limit:
        item = pending.pop()
        count += 1
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return count


def line_of(node: Any, path: Iterable[Any]) -> int | None:
    """Line of the deepest element of `path` inside `node` that carries a position."""
    line = getattr(node, "line", None)
    for step in path:
        if isinstance(node, LineDict) and step in node:
            line = node.lines.get(step, line)
            node = node[step]
        elif isinstance(node, LineList) and isinstance(step, int) and step < len(node):
            line = node.lines[step]
            node = node[step]
        else:
            break
    return line


def plain(node: Any) -> Any:
    """The same data as plain dicts and lists (for hashing, JSON and schema validation)."""
    if isinstance(node, dict):
        return {key: plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [plain(item) for item in node]
    return node
