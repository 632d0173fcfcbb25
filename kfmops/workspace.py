"""The workspace: `kfmops.yaml` read, validated and resolved into paths, backends and conventions."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfmops.errors import Diagnostic, InputError
from kfmops.references import ReferenceKind
from kfmops.schemas import check
from kfmops.yamlio import line_of, load_documents, plain

CONFIG_NAME = "kfmops.yaml"
SECRET_VARIABLES = ("KFMOPS_PLAN_KEY", "KFMOPS_LEDGER_KEY", "KFMOPS_STATE_DSN")
LOCAL_BACKEND = "local"
CACHE_DIR = ".kfmops/cache"
"""Where a workspace applied before keeps its caches, relative to its root (not under version control)."""


@dataclass(frozen=True)
class Conventions:
    """How a Dataset's version pointer expands into references; `{dataset}`/`{version}` substituted."""

    stac_catalog: str = "catalog.json"
    stac_collection: str = "{dataset}/{version}/collection.json"
    graph_dataset_label: str = "Dataset"
    graph_version_label: str = "DatasetVersion"
    graph_key: str = "id"
    graph_relationship: str = "CURRENT_VERSION"
    graph_dataset_id: str = "{dataset}"
    graph_version_id: str = "{dataset}@{version}"
    search_alias: str = "kfm-{dataset}"
    search_index: str = "kfm-{dataset}-{version}"
    cache_key: str = "kfm:dataset:{dataset}:current"
    cache_invalidate: tuple[str, ...] = ("kfm:cache:{dataset}:*",)

    @classmethod
    def from_config(cls, raw: dict[str, Any]) -> Conventions:
        values: dict[str, Any] = {}
        for section, settings in raw.items():
            for key, value in settings.items():
                values[f"{section}_{key}"] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


def fill(template: str, dataset: str, version: str = "") -> str:
    """A naming convention (see Conventions) with `{dataset}` and `{version}` substituted."""
    return template.replace("{dataset}", dataset).replace("{version}", version)


PLACEHOLDERS = {"dataset": r"[a-z0-9][a-z0-9_-]{0,127}", "version": r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"}


def unfill(template: str, text: str) -> dict[str, str] | None:
    """The reverse of `fill`: {"dataset": ..., "version": ...} for the placeholders of `template` that `text`
    fills, or None when `text` does not follow the convention. A placeholder used twice must match itself."""
    pattern, seen = "", set()
    for part in re.split(r"(\{dataset\}|\{version\})", template):
        name = part[1:-1] if part in ("{dataset}", "{version}") else None
        if name is None:
            pattern += re.escape(part)
        elif name in seen:
            pattern += f"(?P={name})"
        else:
            pattern += f"(?P<{name}>{PLACEHOLDERS[name]})"
            seen.add(name)
    match = re.fullmatch(pattern, text)
    return match.groupdict() if match else None


def literal_prefix(template: str) -> str:
    """The part of a naming convention before its first placeholder (what a listing can filter on)."""
    return re.split(r"\{dataset\}|\{version\}", template, maxsplit=1)[0]


@dataclass(frozen=True)
class BackendConfig:
    """A named backend: its type and its settings (secrets only as environment-variable names)."""

    name: str
    type: str
    settings: dict[str, Any] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True)
class Workspace:
    root: Path
    config_file: Path
    desired_dir: Path
    plans_dir: Path
    state_dir: Path
    backends: dict[str, BackendConfig]
    routes: dict[ReferenceKind, str]
    apply_order: tuple[ReferenceKind, ...]
    batch_size: int
    conventions: Conventions
    raw: dict[str, Any]

    @property
    def applied(self) -> bool:
        """Whether the workspace was ever applied (its state folder exists). Looking at one never applied
        creates nothing in it: no state, telemetry or cache (CACHE_DIR)."""
        return self.state_dir.is_dir()

    def section(self, name: str) -> dict[str, Any]:
        """A free-form config section (policy, telemetry, ...) as plain data; empty when absent."""
        value = self.raw.get(name)
        return dict(value) if isinstance(value, dict) else {}

    def secret_values(self) -> list[str]:
        """Values of every environment variable a setting names (`*_env`) and of kfmops' own key variables:
        what no output may contain."""
        names = set(SECRET_VARIABLES)
        sections = [b.settings for b in self.backends.values()] + [self.section("state"), self.section("ledger")]
        for settings in sections:
            names.update(str(v) for k, v in settings.items() if k.endswith("_env") and isinstance(v, str))
        return [value for name in sorted(names) if (value := os.environ.get(name))]

    def relative(self, path: Path) -> str:
        """`path` as the user would write it from the workspace root (for messages)."""
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path)


def find_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding kfmops.yaml."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise InputError([Diagnostic(f"no {CONFIG_NAME} in {start} or its parents", "run 'kfmops init' or pass -C DIR")])


def load_workspace(start: Path, config: Path | None = None) -> Workspace:
    """Read and validate kfmops.yaml (or the file `config`, whose folder is then the root); every problem is
    reported with its line."""
    if config is not None and not config.is_file():
        raise InputError([Diagnostic(f"no workspace configuration file {config}")])
    config_file = config.resolve() if config is not None else find_root(start) / CONFIG_NAME
    root = config_file.parent
    name = config_file.name
    documents = list(load_documents(config_file.read_text(encoding="utf-8"), name))
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise InputError([Diagnostic("expected exactly one YAML mapping", file=name, line=1)])
    node = documents[0]
    problems = check(node, "workspace", name)
    if problems:
        raise InputError(problems)

    backends_node = node.get("backends") or {}
    backends = {
        backend: BackendConfig(backend, spec["type"], plain(spec), line_of(backends_node, [backend]))
        for backend, spec in backends_node.items()
    }
    backends.setdefault(LOCAL_BACKEND, BackendConfig(LOCAL_BACKEND, "local", {"type": "local"}))
    routes = {kind: LOCAL_BACKEND for kind in ReferenceKind} | {
        ReferenceKind(kind): backend for kind, backend in (node.get("routes") or {}).items()
    }
    unknown = [
        Diagnostic(
            f"routes.{kind}: unknown backend {backend!r}",
            f"define it under 'backends:' (known: {', '.join(sorted(backends))})",
            file=name,
            line=line_of(node, ["routes", kind]),
        )
        for kind, backend in routes.items()
        if backend not in backends
    ]
    if unknown:
        raise InputError(unknown)

    apply_section = node.get("apply") or {}
    return Workspace(
        root=root,
        config_file=config_file,
        desired_dir=root / node.get("desired", "desired"),
        plans_dir=root / node.get("plans", "plans"),
        state_dir=root / _state_folder(node.get("state", "state")),
        backends=backends,
        routes=routes,
        apply_order=_complete_order(apply_section.get("order", [])),
        batch_size=int(apply_section.get("batch_size", 500)),
        conventions=Conventions.from_config(plain(node.get("datasets") or {})),
        raw=plain(node),
    )


def _state_folder(setting: Any) -> str:
    """`state: FOLDER`, or with a store backend its `folder:` for what stays local (telemetry, lineage files)."""
    return setting if isinstance(setting, str) else str(setting.get("folder", "state"))


def _complete_order(given: list[str]) -> tuple[ReferenceKind, ...]:
    """The configured apply order, with kinds it does not name appended in the default order."""
    named = tuple(ReferenceKind(kind) for kind in given)
    return (*named, *(kind for kind in ReferenceKind if kind not in named))


SKELETON = """\
# yaml-language-server: $schema=https://kfmops.dev/schemas/workspace.schema.json
apiVersion: kfmops/v1
kind: Workspace
desired: desired
plans: plans
state: state
backends:
  local:
    type: local
    seed: data
"""


def scaffold(directory: Path) -> list[str]:
    """Create kfmops.yaml and the desired/ and data/ folders where missing; returns what was created."""
    created = []
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / CONFIG_NAME).exists():
        (directory / CONFIG_NAME).write_text(SKELETON, encoding="utf-8")
        created.append(CONFIG_NAME)
    for folder in ("desired", "data"):
        if not (directory / folder).exists():
            (directory / folder).mkdir()
            created.append(f"{folder}/")
    return created
