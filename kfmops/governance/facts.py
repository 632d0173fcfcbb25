"""Facts from the data: before policy runs, read what each judged dataset's target version really holds.

For every dataset record a plan carries, the version its pointer moves to (or stays at, for a change of
exposure) is read from the backend that holds its STAC documents (the dataset's `stac` route): geometry,
H3 cells and resolutions, declared masking, licence, item count, sites per cell (providers/stac_facts).
Facts are keyed by dataset name and go into the policy input as `input.facts` and into the plan.

Invariant: a fact that cannot be gathered is reported as `status: unavailable` with its `problem`, never
left out and never replaced by the YAML's declaration; policy denies on it where a rule needs it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from kfmops.errors import KfmopsError
from kfmops.providers.registry import Providers
from kfmops.references import ReferenceKind
from kfmops.workspace import fill


def gather(providers: Providers, datasets: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """{dataset name: facts of the version its record targets} for every record."""
    workspace = providers.workspace
    facts: dict[str, dict[str, Any]] = {}
    wanted: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for name, record in sorted(datasets.items()):
        version = _target(record)
        backend = record.get("stac_backend", workspace.routes.get(ReferenceKind.STAC))
        if version is None:
            facts[name] = unavailable(None, None, "the record names no target version")
        elif not isinstance(backend, str):
            facts[name] = unavailable(version, None, "the dataset has no STAC part, so no backend holds its data")
        else:
            wanted[backend][name] = (version, fill(workspace.conventions.stac_collection, name, version))
    for backend, group in sorted(wanted.items()):
        try:
            found = providers.get(backend).version_facts(sorted({path for _, path in group.values()}))
        except KfmopsError as error:  # an unreachable backend: its facts are missing, which denies
            found = {path: {"status": "unavailable", "problem": str(error)} for _, path in group.values()}
        for name, (version, path) in group.items():
            read = found.get(path) or {"status": "unavailable", "problem": f"backend {backend!r} holds no data facts"}
            facts[name] = {"version": version, "backend": backend, "source": path, **read}
    return facts


def unavailable(version: str | None, backend: str | None, problem: str) -> dict[str, Any]:
    return {"version": version, "backend": backend, "status": "unavailable", "problem": problem}


def _target(record: Mapping[str, Any]) -> str | None:
    target = record.get("target")
    if isinstance(target, Mapping) and isinstance(target.get("id"), str):
        return str(target["id"])
    version = record.get("version")
    return version if isinstance(version, str) else None
