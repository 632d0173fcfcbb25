"""JSON Schemas shipped in `schemas/`, and validation that reports file and line for each problem."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import Schema, SchemaRegistry

from kfmops.errors import Diagnostic
from kfmops.yamlio import line_of, plain

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    return schema


@cache
def _registry() -> SchemaRegistry:
    """Every shipped schema under its $id, so that one schema can $ref a part of another."""
    resources: list[Resource[Schema]] = [
        Resource.from_contents(_load(path.name.removesuffix(".schema.json")))
        for path in SCHEMA_DIR.glob("*.schema.json")
    ]
    return Registry().with_resources((uri, resource) for resource in resources if (uri := resource.id()))


@cache
def validator(name: str) -> Draft202012Validator:
    """The validator for `schemas/<name>.schema.json`, compiled once per process."""
    schema = _load(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry())


def check(node: Any, name: str, file: str) -> list[Diagnostic]:
    """Problems of `node` (loaded by yamlio, so lines are known) against schema `name`."""
    schema_validator = validator(name)
    instance = plain(node)
    if schema_validator.is_valid(instance):
        return []
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
