"""Rules for names that reach a backend; checked at validation and again by each provider.

Neo4j labels and relationship types cannot be query parameters, so they must match a strict pattern
and are backtick-quoted; every other name must be something its backend accepts literally.
"""

from __future__ import annotations

import posixpath
import re

GRAPH_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
SEARCH_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,254}$")
CACHE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._@/-]{0,511}$")
CACHE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._@/-]*\*?$")
NODE_ID = re.compile(r"^[^\x00-\x1f]{1,512}$")


def graph_identifier_problem(name: str, what: str) -> str | None:
    if GRAPH_IDENTIFIER.fullmatch(name):
        return None
    return f"{what} {name!r} is not allowed: use letters, digits and '_' (starting with a letter)"


def search_name_problem(name: str, what: str) -> str | None:
    if SEARCH_NAME.fullmatch(name) and name not in {".", ".."}:
        return None
    return f"{what} {name!r} is not a valid Elasticsearch name: lowercase letters, digits, '.', '_', '-'"


def cache_key_problem(key: str, *, pattern: bool = False) -> str | None:
    rule = CACHE_PATTERN if pattern else CACHE_KEY
    if rule.fullmatch(key):
        return None
    what = "cache invalidation pattern" if pattern else "cache key"
    allowed = "letters, digits and ':._@/-'" + (" with one trailing '*'" if pattern else "")
    return f"{what} {key!r} is not allowed: use {allowed}"


def node_id_problem(value: str) -> str | None:
    return None if NODE_ID.fullmatch(value) else f"node id {value!r} is empty, too long or has control characters"


def stac_path_problem(path: str) -> str | None:
    """A STAC document path must be relative to the catalog root and stay inside it."""
    if not path or "\\" in path or "\x00" in path or ":" in path or path.startswith("/"):
        return f"STAC path {path!r} must be a relative path inside the catalog root"
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../") or not normal.endswith(".json"):
        return f"STAC path {path!r} escapes the catalog root or is not a .json document"
    return None
