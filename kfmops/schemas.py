"""JSON Schemas shipped in `schemas/`, and validation that reports file and line for each problem.

Two validators, one per kind of input. Documents people write (desired state, kfmops.yaml) are checked
by jsonschema, whose best-match messages name the likeliest mistake. Records kfmops writes and reads back
in bulk (plan files, WAL and history records, ledger entries, manifests) are checked by jsonschema-rs,
which checks a plan of 40,000 changes in 0.02 s where jsonschema takes 4 s.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfmops.errors import Diagnostic
from kfmops.yamlio import line_of, plain

if TYPE_CHECKING:  # jsonschema is imported by the first validation, not when kfmops starts
    from jsonschema import ValidationError
    from referencing.jsonschema import SchemaRegistry

SCHEMA_DIR = Path(__file__).resolve().parent / "data" / "schemas"


FORMAT_CHECKERS = (
    "fqdn",
    "idna",
    "isoduration",
    "jsonpointer",
    "rfc3339_validator",
    "rfc3986_validator",
    "rfc3987",
    "rfc3987_syntax",
    "uri_template",
    "webcolors",
)
"""The packages jsonschema imports, when they are installed, to check string formats (its `format` and
`format-nongpl` extras, which cyclonedx-bom, jupyter and others pull in)."""


@cache
def import_jsonschema() -> None:
    """Import jsonschema without its format checkers. Installed, they cost a second at every start-up:
    rfc3987_syntax compiles 38 lark grammars (2.3 s), isoduration imports arrow (0.2 s). kfmops never checks
    string formats, so for this one import they are marked absent; anything imported later may still use them."""
    if "jsonschema" in sys.modules:
        return
    absent = [name for name in FORMAT_CHECKERS if name not in sys.modules]
    for name in absent:
        sys.modules[name] = None  # type: ignore[assignment]  # None makes the import raise ImportError
    try:
        import jsonschema  # noqa: F401
    finally:
        for name in absent:
            del sys.modules[name]


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    return schema


@cache
def _registry() -> SchemaRegistry:
    """Every shipped schema under its $id, so that one schema can $ref a part of another."""
    from referencing import Registry, Resource
    from referencing.jsonschema import Schema

    resources: list[Resource[Schema]] = [
        Resource.from_contents(_load(path.name.removesuffix(".schema.json")))
        for path in SCHEMA_DIR.glob("*.schema.json")
    ]
    return Registry().with_resources((uri, resource) for resource in resources if (uri := resource.id()))


def _whole_pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """`pattern` as JSON Schema means it (ECMA-262): a final `$` is the end of the text. Python's `$` also
    matches before a final newline, which would let `name\n` pass; `\\Z` does not."""
    from jsonschema import ValidationError

    if isinstance(instance, str):
        strict = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
        if not re.search(strict, instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _validator_class() -> Any:
    import_jsonschema()
    from jsonschema import Draft202012Validator, validators

    return validators.extend(Draft202012Validator, {"pattern": _whole_pattern})  # type: ignore[no-untyped-call]


@cache
def validator(name: str) -> Any:
    """The validator for `schemas/<name>.schema.json`, compiled once per process."""
    import_jsonschema()
    from jsonschema import Draft202012Validator

    schema = _load(name)
    Draft202012Validator.check_schema(schema)
    return _validator_class()(schema, registry=_registry())


@cache
def _record_validator(name: str) -> Any:
    import jsonschema_rs

    schemas = [_load(path.name.removesuffix(".schema.json")) for path in SCHEMA_DIR.glob("*.schema.json")]
    registry = jsonschema_rs.Registry([(schema["$id"], schema) for schema in schemas if "$id" in schema])
    return jsonschema_rs.validator_for(_load(name), registry=registry, validate_formats=False)


def record_problems(record: Any, name: str) -> Iterator[str]:
    """Each way `record` does not fit `schemas/<name>.schema.json`, as "where: what" (a path like changes/3/after)."""
    for error in _record_validator(name).iter_errors(record):
        where = "/".join(str(part) for part in error.instance_path) or "the document"
        yield f"{where}: {error.message}"


def check(node: Any, name: str, file: str) -> list[Diagnostic]:
    """Problems of `node` (loaded by yamlio, so lines are known) against schema `name`."""
    schema_validator = validator(name)
    instance = plain(node)
    if schema_validator.is_valid(instance):
        return []
    from jsonschema.exceptions import best_match

    problems = []
    for error in schema_validator.iter_errors(instance):
        error = best_match([error, *error.context]) if error.context else error
        path = list(error.absolute_path)
        where = ".".join(str(p) for p in path) or "document"
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # The mapping that holds an unexpected key is rarely where the typo is: point at the key.
            known = error.schema.get("properties", {})
            path += [key for key in error.instance if key not in known][:1]
        problems.append(
            Diagnostic(
                f"{where}: {error.message}",
                detail=f"see schemas/{name}.schema.json",
                file=file,
                line=line_of(node, path),
            )
        )
    return sorted(problems, key=lambda d: d.line or 0)
