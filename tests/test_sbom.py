"""The supply-chain scripts, run for real: scripts/sbom.py writes the CycloneDX SBOM of this test run's
environment and checks it (schema, licences, pyproject ranges); scripts/provenance.py writes an in-toto
statement for a wheel and verifies it. docs/supply-chain.md describes both."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

SBOM = ROOT / "scripts" / "sbom.py"
PROVENANCE = ROOT / "scripts" / "provenance.py"
# Outside GitHub Actions the provenance says `local`; the tests choose which of the two they see.
LOCAL_ENV = {name: value for name, value in os.environ.items() if not name.startswith("GITHUB_")}


def run(script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env or LOCAL_ENV, timeout=300
    )


@pytest.fixture(scope="module")
def environment_sbom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SBOM of the interpreter running the tests, as .ci/run writes it."""
    path = tmp_path_factory.mktemp("sbom") / "build" / "sbom.cdx.json"
    written = run(SBOM, "write", str(path))
    assert written.returncode == 0, written.stderr
    return path


def small_sbom(environment_sbom: Path, tmp_path: Path, edit: Any = None) -> Path:
    """A copy of the environment's SBOM cut to two real components (quick to validate), edited by `edit`."""
    bom = json.loads(environment_sbom.read_text())
    bom["components"] = [c for c in bom["components"] if c["name"] in {"PyYAML", "GitPython"}]
    bom["dependencies"] = []
    assert len(bom["components"]) == 2
    if edit is not None:
        edit(bom)
    path = tmp_path / "small.cdx.json"
    path.write_text(json.dumps(bom))
    return path


def test_the_sbom_of_the_environment_validates_against_the_cyclonedx_schema(environment_sbom: Path) -> None:
    bom = json.loads(environment_sbom.read_text())
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.6")
    assert bom["metadata"]["component"]["name"] == "kfmops"  # the root, described from pyproject.toml
    names = {component["name"] for component in bom["components"]}
    assert {"typer", "pystac", "cyclonedx-bom", "packaging"} <= names

    checked = run(SBOM, "check", str(environment_sbom))
    assert checked.returncode == 0, checked.stderr
    assert "valid CycloneDX 1.6" in checked.stdout
    assert f"{len(bom['components'])} components, all licensed" in checked.stdout


def test_a_schema_invalid_sbom_fails_the_check(environment_sbom: Path, tmp_path: Path) -> None:
    def tamper(bom: dict[str, Any]) -> None:
        bom["components"][0]["type"] = "gizmo"
        bom["signedOff"] = True  # the strict schema admits no unknown property

    checked = run(SBOM, "check", str(small_sbom(environment_sbom, tmp_path, tamper)))
    assert checked.returncode == 1
    lines = checked.stderr.splitlines()
    assert any("schema (CycloneDX 1.6): $.components[0].type:" in line and "'gizmo'" in line for line in lines)
    assert any("schema (CycloneDX 1.6): $:" in line and "signedOff" in line for line in lines)
    assert "Traceback" not in checked.stderr

    garbled = tmp_path / "garbled.cdx.json"
    garbled.write_text('{"bomFormat": "CycloneDX",')
    checked = run(SBOM, "check", str(garbled))
    assert checked.returncode == 1
    assert checked.stderr.startswith(f"{garbled}: not a readable JSON SBOM")


def test_a_component_without_a_licence_is_named(environment_sbom: Path, tmp_path: Path) -> None:
    def add_unlicensed(bom: dict[str, Any]) -> None:
        bom["components"].append({"type": "library", "name": "kfm-unlicensed", "version": "1.0.0"})

    checked = run(SBOM, "check", str(small_sbom(environment_sbom, tmp_path, add_unlicensed)))
    assert checked.returncode == 1
    (line,) = checked.stderr.splitlines()
    assert "component kfm-unlicensed 1.0.0: no licence" in line


def test_a_licence_the_sbom_lacks_is_read_from_the_installed_metadata(environment_sbom: Path, tmp_path: Path) -> None:
    def strip(bom: dict[str, Any]) -> None:
        for component in bom["components"]:
            del component["licenses"]
        bom["components"][0]["version"] = "0.0.1"  # not the installed distribution: its metadata does not count

    checked = run(SBOM, "check", str(small_sbom(environment_sbom, tmp_path, strip)))
    assert checked.returncode == 1
    (line,) = checked.stderr.splitlines()  # the other one declares its licence in its installed metadata
    assert re.search(r"component (PyYAML|GitPython) 0\.0\.1: no licence", line)


def test_an_unbounded_range_in_pyproject_fails_with_its_name(environment_sbom: Path, tmp_path: Path) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    rich, mypy = re.search(r'"rich>=[\d.]+,<\d+"', text), re.search(r'"mypy>=[\d.]+,<\d+"', text)
    assert rich is not None and mypy is not None
    pyproject = tmp_path / "pyproject.toml"  # `!=` excludes one version and bounds nothing
    pyproject.write_text(text.replace(rich.group(0), '"rich>=13"').replace(mypy.group(0), '"mypy>=1.10,!=1.11"'))

    sbom = small_sbom(environment_sbom, tmp_path)
    checked = run(SBOM, "check", "--pyproject", str(pyproject), str(sbom))
    assert checked.returncode == 1
    fix = "lets a new major version in: add an upper bound below the next major version"
    assert checked.stderr.splitlines() == [
        f"{sbom}: pyproject.toml: dependencies: rich ('rich>=13') {fix}",
        f"{sbom}: pyproject.toml: optional-dependencies.dev: mypy ('mypy!=1.11,>=1.10') {fix}",
    ]


def test_the_release_installs_the_sbom_tools_with_the_ranges_of_the_dev_extra() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    install = next(step["run"] for step in steps if step.get("name") == "Install the SBOM tools")
    installed = set(re.findall(r'"([^"]+)"', install))
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert installed == {line for line in dev if line.startswith(("cyclonedx-bom", "packaging"))}
    assert len(installed) == 2


# Provenance ----------------------------------------------------------------------------------------


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    """A stand-in for a built wheel: the statement covers its bytes, whatever they are."""
    path = tmp_path / "dist" / "kfmops-0.1.0-py3-none-any.whl"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 not really a zip, but bytes with a digest")
    return path


def test_the_provenance_digest_matches_the_wheel_and_verify_catches_a_change(wheel: Path) -> None:
    statement_path = wheel.with_suffix(".intoto.json")
    written = run(PROVENANCE, "write", "--started-on", "2026-01-02T03:04:05Z", str(wheel), str(statement_path))
    assert written.returncode == 0, written.stderr

    statement = json.loads(statement_path.read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [
        {"name": wheel.name, "digest": {"sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}}
    ]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    build, run_details = statement["predicate"]["buildDefinition"], statement["predicate"]["runDetails"]
    assert build["externalParameters"]["source"]["commit"] == commit.strip()
    assert [dependency["digest"] for dependency in build["resolvedDependencies"]] == [{"gitCommit": commit.strip()}]
    assert run_details["builder"]["id"] == "urn:kfmops:builder:local"
    assert run_details["metadata"]["startedOn"] == "2026-01-02T03:04:05Z"
    assert run_details["metadata"]["invocationId"].startswith("urn:uuid:")

    verified = run(PROVENANCE, "verify", str(statement_path), str(wheel))
    assert verified.returncode == 0, verified.stderr

    wheel.write_bytes(wheel.read_bytes() + b"\x00")
    verified = run(PROVENANCE, "verify", str(statement_path), str(wheel))
    assert verified.returncode == 1
    assert f"{wheel.name} has sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()}, the statement says" in (
        verified.stderr
    )

    renamed = wheel.with_name("kfmops-0.2.0-py3-none-any.whl")
    shutil.copy(wheel, renamed)
    verified = run(PROVENANCE, "verify", str(statement_path), str(renamed))
    assert verified.returncode == 1
    assert f"{renamed.name} is not a subject" in verified.stderr


def test_on_github_actions_the_builder_run_and_source_come_from_the_environment(wheel: Path) -> None:
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "kfm/kfmops",
        "GITHUB_REF": "refs/tags/v0.1.0",
        "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
        "GITHUB_WORKFLOW_REF": "kfm/kfmops/.github/workflows/release.yml@refs/tags/v0.1.0",
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "2",
    }
    statement_path = wheel.with_suffix(".intoto.json")
    written = run(PROVENANCE, "write", str(wheel), str(statement_path), env={**LOCAL_ENV, **github})
    assert written.returncode == 0, written.stderr

    predicate = json.loads(statement_path.read_text())["predicate"]
    assert predicate["buildDefinition"]["externalParameters"]["source"] == {
        "repository": "git+https://github.com/kfm/kfmops",
        "ref": "refs/tags/v0.1.0",
        "commit": github["GITHUB_SHA"],
    }
    assert predicate["buildDefinition"]["resolvedDependencies"] == [
        {"uri": "git+https://github.com/kfm/kfmops@refs/tags/v0.1.0", "digest": {"gitCommit": github["GITHUB_SHA"]}}
    ]
    details = predicate["runDetails"]
    assert details["builder"]["id"] == "https://github.com/kfm/kfmops/.github/workflows/release.yml@refs/tags/v0.1.0"
    assert details["metadata"]["invocationId"] == "https://github.com/kfm/kfmops/actions/runs/42/attempts/2"
    assert details["metadata"]["startedOn"] == details["metadata"]["finishedOn"]  # no --started-on given
