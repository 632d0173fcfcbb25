"""The provider interface every backend implements, and the conformance rules it must keep.

- read(references) -> {address: value}: batched; an absent reference reads as None, never raises.
- write(items, key=None): sets each reference to its value (None deletes it); idempotent; batched; it may
  only touch the references it is given (and, for cache pointers, the keys they invalidate). Where the
  backend can hold one, it records `key` (a WriteKey: transaction id and batch number) with the values,
  atomically with them and never as a reference of its own (not read, discovered or drifted).
- written_by(key, references): the addresses whose live value the backend recorded as written under
  `key`; None where the backend holds no keys (then the values alone say what happened). Recovery
  uses it to tell its own write from someone else's move to the same value.
- missing_targets(items): the immutable targets (version documents, nodes, indices) that values
  point at but that do not exist; kfmops refuses to plan or apply a pointer at nothing.
- broken_links(references): links that resolve to nothing in what the references point from (STAC).
- pointers(kind, shape): every live pointer of one shape, for discovery (`kfmops import --discover`):
  graph {from_label, key, type, to_label, to_key, prefix} -> {source id: target id}; search {prefix} ->
  {alias: value}; cache {pattern} -> {key: value}. Read only; names outside `prefix`/`pattern` are not listed.
- version_facts(paths): facts read from the data of version documents (STAC: geometry, H3 cells,
  licence, item count; see stac_facts); a backend that holds no data gives none.
- data_file(path): the local file of a root-relative path in a STAC catalog (a version document or an
  asset beside it), for the checkpoints that read the data; None where a backend holds no files.
- is_retryable(error): transient (timeout, connection reset, 429/503) vs permanent.

Constructors take `(config, workspace, *, read_only=False)`; a read-only provider creates nothing.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfmops.errors import BackendError
from kfmops.references import Reference

Write = tuple[Reference, Any]


@dataclass(frozen=True)
class WriteKey:
    """The idempotency key of one write: the transaction that made it and the batch it belongs to."""

    transaction: str
    batch: int


class Provider(ABC):
    """A backend that holds references of some kinds. Instances own their connections."""

    kinds: frozenset[str] = frozenset()

    def __init__(self, name: str):
        self.name = name
        self.round_trips = 0

    @abstractmethod
    def read(self, references: Sequence[Reference]) -> dict[str, Any]: ...

    @abstractmethod
    def write(self, items: Sequence[Write], *, key: WriteKey | None = None) -> None: ...

    @abstractmethod
    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        """(address, message) for each value that points at an immutable target that is absent."""
        ...

    def written_by(self, key: WriteKey, references: Sequence[Reference]) -> set[str] | None:
        """The addresses whose live value this backend recorded as written under `key`; None: it holds no keys."""
        return None

    def broken_links(self, references: Sequence[Reference]) -> int:
        """Links in the documents these references live in that resolve to nothing (0 where links do not exist)."""
        return 0

    def pointers(self, kind: str, shape: Mapping[str, str]) -> dict[str, Any]:
        """Every live pointer of `kind` and `shape` (see the module docstring); for discovery only."""
        raise BackendError(self.name, f"cannot list its {kind} references for discovery")

    def version_facts(self, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{path: facts} of the version documents at these paths; {} where this backend holds no data."""
        return {}

    def data_file(self, path: str) -> Path | None:
        """The local file of root-relative `path` among this backend's data; None where it holds no files."""
        return None

    def is_retryable(self, error: Exception) -> bool:
        if isinstance(error, BackendError):
            return error.retryable
        return isinstance(error, TimeoutError | ConnectionError)

    def close(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections; safe to call twice."""


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def from_environment(backend: str, settings: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    """The value of the environment variable that setting `<key>_env` names (secrets never live in config)."""
    variable = settings.get(f"{key}_env")
    if variable is None:
        if required:
            raise BackendError(backend, f"setting '{key}_env' (the name of an environment variable) is missing")
        return None
    value = os.environ.get(variable)
    if value is None and required:
        raise BackendError(backend, f"environment variable {variable} (its {key}) is not set")
    return value
