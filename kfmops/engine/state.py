"""kfmops' own record: lineage, serial, the managed references with their last applied values.

This module alone reads and writes `state/state.json`. A state is never edited in place on disk: it is
replaced atomically, so a crash leaves the previous state whole.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfmops.engine.files import write_atomic
from kfmops.errors import Diagnostic, InputError
from kfmops.references import Reference

FORMAT_VERSION = 1


@dataclass
class ManagedReference:
    reference: Reference
    value: Any
    apply_id: str | None = None
    version: str | None = None


@dataclass
class State:
    lineage: str
    serial: int = 0
    resources: dict[str, ManagedReference] = field(default_factory=dict)
    applied_plans: list[str] = field(default_factory=list)
    hotfixes: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # last applied desired record of each

    def managed(self) -> dict[str, tuple[Reference, Any]]:
        return {address: (m.reference, m.value) for address, m in self.resources.items()}

    def record(self, reference: Reference, value: Any, apply_id: str, version: str | None = None) -> None:
        """The reference now holds `value` as kfmops left it; None means kfmops no longer manages it."""
        if value is None:
            self.resources.pop(reference.address, None)
        else:
            self.resources[reference.address] = ManagedReference(reference, value, apply_id, version)

    def versions(self) -> dict[str, str | None]:
        """The dataset version each managed dataset part was last applied at."""
        return {address: managed.version for address, managed in self.resources.items()}


class StateStore:
    """Reads and atomically replaces the state file of one workspace."""

    def __init__(self, folder: Path, *, durable: bool = True):
        self.folder = folder
        self.path = folder / "state.json"
        self.durable = durable

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> State:
        """The current state; a workspace never applied gets a new lineage, saved at once."""
        if not self.path.is_file():
            state = State(lineage=str(uuid.uuid4()))
            self.save(state)
            return state
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError([Diagnostic(f"state file is not valid JSON: {exc}", file=str(self.path))]) from None
        if raw.get("format_version") != FORMAT_VERSION:
            raise InputError(
                [
                    Diagnostic(
                        f"state format {raw.get('format_version')!r} is not supported "
                        f"(this kfmops reads format {FORMAT_VERSION})",
                        file=str(self.path),
                    )
                ]
            )
        resources = {
            address: ManagedReference(
                Reference(address, r["kind"], r["backend"], r["locator"], r.get("dataset")),
                r["value"],
                r.get("apply_id"),
                r.get("version"),
            )
            for address, r in raw["resources"].items()
        }
        return State(
            raw["lineage"],
            raw["serial"],
            resources,
            raw.get("applied_plans", []),
            raw.get("hotfixes", {}),
            raw.get("datasets", {}),
        )

    def save(self, state: State) -> None:
        raw = {
            "format_version": FORMAT_VERSION,
            "lineage": state.lineage,
            "serial": state.serial,
            "resources": {
                address: {
                    "kind": m.reference.kind,
                    "backend": m.reference.backend,
                    "locator": m.reference.locator,
                    "dataset": m.reference.dataset,
                    "value": m.value,
                    "apply_id": m.apply_id,
                    "version": m.version,
                }
                for address, m in sorted(state.resources.items())
            },
            "applied_plans": state.applied_plans,
            "hotfixes": state.hotfixes,
            "datasets": state.datasets,
        }
        write_atomic(self.path, json.dumps(raw, indent=1, sort_keys=False).encode(), durable=self.durable)
