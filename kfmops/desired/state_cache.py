"""The desired-state cache: the expansion of a whole desired folder, kept for the exact input it came from,
so that a plan of unchanged desired state neither parses nor expands it again.

One sealed file (io/sealed) per workspace, `.kfmops/cache/desired-state.json`, holding the last expansion
under its key: the SHA-256 of kfmops' program digest (version, code, schemas), the expansion settings
(conventions, routes, backends) and every file's name and text in order. Any change to any of them names
another key, and the entry is replaced. Only an expansion without a problem is kept, and only one that
JSON gives back exactly (a YAML date or an integer key would not be: such a state is expanded every time).
The entry also keeps the state's digest, which is computed over the same content.

Trust is the desired-document cache's: unkeyed, an entry proves only that it is whole; with KFMOPS_PLAN_KEY
it is sealed with a key derived from it, and apply's check of a plan against its commit reads sealed
entries only. Safe to delete at any time; never required.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from kfmops.desired.collector import DesiredReference
from kfmops.desired.expand import DesiredState
from kfmops.io.sealed import program_digest, read_sealed, write_sealed
from kfmops.references import Reference, ReferenceKind
from kfmops.workspace import CACHE_DIR, Conventions

FORMAT = 1
FILE = f"{CACHE_DIR}/desired-state.json"
"""Where a workspace keeps the entry, relative to its root (beside the desired-document cache)."""


def state_key(
    sources: Sequence[tuple[str, str]], conventions: Conventions, routes: dict[ReferenceKind, str], backends: set[str]
) -> str:
    """What an expansion depends on: kfmops, its settings, and every (file name, text) in order."""
    digest = hashlib.sha256(f"{program_digest()} state {FORMAT}".encode())
    settings = {"conventions": dataclasses.asdict(conventions), "routes": dict(routes), "backends": sorted(backends)}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, text in sources:
        digest.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()


class StateCache:
    """The entry in `file`, sealed with `secret` when one is given."""

    def __init__(self, file: Path, secret: bytes | None = None):
        self.file = file
        self.secret = secret

    def get(self, key: str) -> DesiredState | None:
        body = read_sealed(self.file, {"format": FORMAT, "key": key}, self.secret)
        if body is None:
            return None
        try:
            return _state(msgspec.json.decode(body))
        except (ValueError, KeyError, TypeError, AttributeError):  # msgspec.DecodeError is a ValueError
            return None  # another shape: expand again

    def digest(self, key: str) -> str | None:
        """The digest of the state kept under `key`, without decoding the state (msgspec skips the rest)."""
        body = read_sealed(self.file, {"format": FORMAT, "key": key}, self.secret)
        if body is None:
            return None
        try:
            return msgspec.json.decode(body, type=_Stamp).digest
        except ValueError:  # not JSON, or no digest
            return None

    def put(self, key: str, state: DesiredState) -> None:
        """Keep `state` under `key`, unless JSON cannot give it back exactly."""
        payload = _payload(state)
        try:
            body = msgspec.json.encode(payload)
        except (TypeError, ValueError, msgspec.MsgspecError):
            return  # a value JSON cannot carry
        if msgspec.json.decode(body) != payload:
            return  # a value JSON changes (a date, NaN, an integer mapping key)
        write_sealed(self.file, {"format": FORMAT, "key": key}, body, self.secret)


class _Stamp(msgspec.Struct):
    digest: str


def _payload(state: DesiredState) -> dict[str, Any]:
    return {
        "references": [
            [r.address, r.kind, r.backend, r.locator, r.dataset, d.value, d.source, d.version]
            for r, d in ((d.reference, d) for d in state.references.values())
        ],
        "datasets": state.datasets,
        "documents": state.documents,
        "imports": state.imports,
        "digest": state.digest(),
    }


def _state(payload: dict[str, Any]) -> DesiredState:
    references = {
        address: DesiredReference(Reference(address, kind, backend, locator, dataset), value, source, version)
        for address, kind, backend, locator, dataset, value, source, version in payload["references"]
    }
    state = DesiredState(references, payload["datasets"], payload["documents"], payload["imports"])
    state.known_digest = str(payload["digest"])
    return state
