"""The checks a Dataset version may declare (`checks:`), each over the data of that version, named after Great
Expectations' vocabulary where it fits. Each takes its setting and the version's `Target` and returns a detail
sentence when the data meets it; it raises `CheckFailed` with the reason when it does not.

Must not: a check never passes because it could not look. No document, no schema folder, an asset that is not a
local file or a command that cannot start is a failure that says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfmops.providers.resilient import Resilient
from kfmops.providers.stac_check import schema_problems, validators_of
from kfmops.workspace import Workspace

DOCUMENT_VARIABLE = "KFMOPS_CHECK_DOCUMENT"
"""A `command` check runs with this environment variable set to the path of the version's STAC document."""
DEFAULT_TIMEOUT = 30.0
MULTIHASH = {"12": ("sha256", 32), "13": ("sha512", 64)}
"""`file:checksum` multihash prefixes kfmops can verify: sha2-256 (`1220...`) and sha2-512 (`1340...`)."""
SHOWN = 3  # problems quoted in a detail; the rest are counted


class CheckFailed(Exception):
    """The data does not meet the check; the message says why."""


@dataclass(frozen=True)
class Target:
    """The data of one dataset version under check: its STAC document (root-relative `source` in the catalog of
    `provider`) and the facts gathered from it (governance.facts), or `problem` when it has none."""

    dataset: str
    version: str
    workspace: Workspace
    facts: Mapping[str, Any]
    source: str | None = None
    provider: Resilient | None = None

    def file(self, path: str) -> Path:
        """The local file of root-relative `path` in the version's catalog (never outside its root)."""
        if self.provider is None:
            raise CheckFailed(str(self.facts.get("problem") or "the dataset has no STAC part to read its data from"))
        found = self.provider.data_file(path)
        if found is None:
            raise CheckFailed(f"backend {self.provider.name!r} holds no files to check")
        return found

    def document_file(self) -> Path:
        if self.source is None:
            raise CheckFailed(str(self.facts.get("problem") or "the version has no STAC document"))
        return self.file(self.source)

    def document(self) -> dict[str, Any]:
        data = json.loads(self.document_file().read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise CheckFailed(f"{self.source} is not a JSON object")
        return data

    def assets(self) -> dict[str, Any]:
        assets = self.document().get("assets")
        return assets if isinstance(assets, dict) else {}


def stac_valid(setting: Any, target: Target) -> str:
    """The version's STAC document validates against STAC 1.1.0 and every extension it declares, offline, with
    the schema folder that kfmops.yaml `checks.stac_schemas` names (a `schema-map.json` beside the schemas)."""
    folder = target.workspace.section("checks").get("stac_schemas")
    if not folder:
        raise CheckFailed("no schemas to validate with offline: set checks.stac_schemas in kfmops.yaml")
    schemas = target.workspace.root / str(folder)
    if not (schemas / "schema-map.json").is_file():
        raise CheckFailed(f"checks.stac_schemas {folder} has no schema-map.json")
    document = target.document()
    problems, unchecked = schema_problems(document, validators_of(schemas))
    problems += [f"declares {url}, which has no schema in {folder}" for url in sorted(unchecked)]
    if problems:
        raise CheckFailed(_listed(problems))
    extensions = len(document.get("stac_extensions") or [])
    return f"{target.source} is a valid STAC 1.1.0 {document.get('type')} ({extensions} extension(s) checked)"


def asset_roles(setting: Any, target: Target) -> str:
    """Every required role is held by at least one asset of the version's document."""
    present = {
        role for asset in target.assets().values() if isinstance(asset, dict) for role in asset.get("roles") or []
    }
    missing = [role for role in setting if role not in present]
    if missing:
        raise CheckFailed(f"no asset has the role(s) {', '.join(missing)} (roles present: {_names(present)})")
    return f"assets hold the roles {', '.join(setting)}"


def checksum(setting: Any, target: Target) -> str:
    """The `file:checksum` (multihash, hex) of each named asset matches the bytes of its local file."""
    keys = [setting["asset"]] if isinstance(setting["asset"], str) else list(setting["asset"])
    assets = target.assets()
    problems = []
    for key in keys:
        asset = assets.get(key)
        if not isinstance(asset, dict):
            problems.append(f"asset {key!r} is not in {target.source} (assets: {_names(assets)})")
            continue
        declared = str(asset.get("file:checksum") or "").lower()
        algorithm, size = MULTIHASH.get(declared[:2], ("", 0))
        if not algorithm or declared[2:4] != f"{size:02x}" or len(declared) != 4 + 2 * size:
            problems.append(f"asset {key!r} has no sha2-256 or sha2-512 file:checksum ({declared or 'none'})")
            continue
        href = str(asset.get("href", ""))
        if "://" in href or href.startswith("/"):
            problems.append(f"asset {key!r} is not a local file of the catalog ({href})")
            continue
        path = posixpath.normpath(posixpath.join(posixpath.dirname(str(target.source)), href))
        with target.file(path).open("rb") as data:
            found = hashlib.file_digest(data, algorithm).hexdigest()
        if found != declared[4:]:
            problems.append(
                f"asset {key!r} ({href}) has {algorithm} {found[:16]}…, file:checksum says {declared[4:20]}…"
            )
    if problems:
        raise CheckFailed(_listed(problems))
    return f"file:checksum of {', '.join(keys)} match"


def min_items(setting: Any, target: Target) -> str:
    """The version holds at least `setting` items, as counted by the facts gathered from its data."""
    if target.facts.get("status") != "gathered" or target.facts.get("version") != target.version:
        raise CheckFailed(f"its items could not be counted: {target.facts.get('problem') or 'no facts gathered'}")
    count = int(target.facts.get("items") or 0)
    if count < int(setting):
        raise CheckFailed(f"{count} item(s), fewer than {setting}")
    return f"{count} item(s), at least {setting}"


def command(setting: Any, target: Target) -> str:
    """A command of the user's, run without a shell from the workspace root with KFMOPS_CHECK_DOCUMENT set to the
    version's STAC document: exit 0 passes. On timeout the command and everything it started are killed."""
    argv = [str(arg) for arg in setting["argv"]]
    timeout = float(setting.get("timeout", DEFAULT_TIMEOUT))
    environment = os.environ | {DOCUMENT_VARIABLE: str(target.document_file())}
    try:
        process = subprocess.Popen(
            argv,
            cwd=target.workspace.root,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills what it started too
        )
    except OSError as exc:
        raise CheckFailed(f"{argv[0]} cannot run: {exc.strerror or exc}") from None
    try:
        _, errors = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise CheckFailed(f"{argv[0]} timed out after {timeout:g} s") from None
    last = next((line.strip() for line in reversed(errors.decode(errors="replace").splitlines()) if line.strip()), "")
    if process.returncode != 0:
        raise CheckFailed(f"{argv[0]} exited {process.returncode}" + (f": {last}" if last else ""))
    return f"{argv[0]} exited 0"


EXPECTATIONS: dict[str, Callable[[Any, Target], str]] = {
    "stac_valid": stac_valid,
    "asset_roles": asset_roles,
    "checksum": checksum,
    "min_items": min_items,
    "command": command,
}
"""Every check type, in the order a version's checks run."""


def _listed(problems: list[str]) -> str:
    more = len(problems) - SHOWN
    return "; ".join(problems[:SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _names(values: Any) -> str:
    return ", ".join(sorted(str(v) for v in values)) or "none"
