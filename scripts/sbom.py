"""The software bill of materials of an installed Python environment: `write` makes it with cyclonedx-bom
(CycloneDX 1.6, JSON); `check` fails (exit 1, one line per problem) when it does not validate against the
CycloneDX schema, when a component has no licence, or when a dependency range of pyproject.toml lets a new
major version in.

    python scripts/sbom.py write build/sbom.cdx.json               # the environment of this interpreter
    python scripts/sbom.py check build/sbom.cdx.json
    python scripts/sbom.py write --python /tmp/runtime/bin/python dist/kfmops.cdx.json   # another one

Both run offline: the schemas ship inside cyclonedx-python-lib.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# Operators that put a ceiling on a range; `>=`, `>`, `!=` and no specifier at all leave it open.
UPPER_BOUNDS = {"<", "<=", "==", "===", "~="}
# A trove classifier that names no licence, only that one is approved.
VAGUE_CLASSIFIER = "License :: OSI Approved"


def write(out: Path, python: str, pyproject: Path) -> int:
    """Write the SBOM of `python`'s environment, with pyproject's project as the root component."""
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "cyclonedx_py", "environment", "--spec-version", "1.6"]
    command += ["--output-format", "JSON", "--pyproject", str(pyproject), "--output-file", str(out)]
    # `check` validates with the strict schema; validating here too would double the slowest step.
    command += ["--no-validate", python]
    return subprocess.run(command).returncode


def schema_problems(text: str) -> list[str]:
    """One line per place where the document breaks the strict CycloneDX 1.6 JSON schema."""
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    return [f"schema (CycloneDX 1.6): {error.data.json_path}: {error.data.message}" for error in errors or ()]


def declared_licence(name: str, version: str, search_path: list[str]) -> str | None:
    """The licence the installed distribution `name==version` declares in its metadata, if any."""
    for distribution in importlib.metadata.distributions(name=name, path=search_path):
        if distribution.version != version:
            continue
        metadata = distribution.metadata
        classifiers = [
            classifier
            for classifier in metadata.get_all("Classifier") or []
            if classifier.startswith("License ::") and classifier != VAGUE_CLASSIFIER
        ]
        fields = [*(metadata.get_all("License-Expression") or []), *(metadata.get_all("License") or [])]
        for licence in (*fields, *classifiers):
            if licence.strip() and licence.strip().upper() != "UNKNOWN":
                return str(licence)
    return None


def interpreter_path(python: str) -> list[str]:
    """The `sys.path` of `python`: where its distributions' metadata lies."""
    shown = subprocess.run([python, "-c", "import json, sys; print(json.dumps(sys.path))"], capture_output=True)
    return list(json.loads(shown.stdout)) if shown.returncode == 0 else []


def licence_problems(bom: dict[str, Any], python: str) -> list[str]:
    """Components without a licence in the SBOM nor in their installed metadata (cyclonedx-bom reads the
    same fields, but not every shape of them)."""
    unlicensed = [component for component in bom.get("components", []) if not component.get("licenses")]
    search_path = interpreter_path(python) if unlicensed else []
    return [
        f"component {component['name']} {component.get('version', '')}: no licence in the SBOM "
        "nor in the installed distribution's metadata (License-Expression, License, classifiers)"
        for component in unlicensed
        if declared_licence(component["name"], component.get("version", ""), search_path) is None
    ]


def declared_requirements(pyproject: Path) -> Iterator[tuple[str, Requirement]]:
    """Each dependency of the project with the table it is declared in. An extra that pulls in another
    of the project's own extras (`kfmops[bench]`) names no package from the index, so it is left out."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    tables = {"dependencies": project.get("dependencies", [])}
    tables |= {
        f"optional-dependencies.{extra}": lines for extra, lines in project.get("optional-dependencies", {}).items()
    }
    for table, lines in tables.items():
        for requirement in map(Requirement, lines):
            if canonicalize_name(requirement.name) != canonicalize_name(project["name"]):
                yield table, requirement


def range_problems(pyproject: Path) -> list[str]:
    """Requirements whose range has no ceiling, so that the next major version would be installed."""
    return [
        f"{pyproject.name}: {table}: {requirement.name} ('{requirement}') lets a new major version in: "
        "add an upper bound below the next major version"
        for table, requirement in declared_requirements(pyproject)
        if not any(spec.operator in UPPER_BOUNDS for spec in requirement.specifier)
    ]


def check(sbom: Path, python: str, pyproject: Path) -> int:
    try:
        text = sbom.read_text(encoding="utf-8")
        bom = json.loads(text)
    except (OSError, ValueError) as error:
        print(f"{sbom}: not a readable JSON SBOM: {error}", file=sys.stderr)
        return 1
    # The licence check reads the document's structure, which only the schema vouches for.
    problems = schema_problems(text) or licence_problems(bom, python)
    problems += range_problems(pyproject)
    for problem in problems:
        print(f"{sbom}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"{sbom}: valid CycloneDX 1.6; {len(bom.get('components', []))} components, all licensed; "
        f"every range in {pyproject.name} is bounded"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("write", "write the SBOM to FILE"), ("check", "check the SBOM in FILE")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("file", type=Path, metavar="FILE")
        command.add_argument("--python", default=sys.executable, help="the environment's interpreter")
        command.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    arguments = parser.parse_args(argv)
    run = write if arguments.command == "write" else check
    return run(arguments.file, arguments.python, arguments.pyproject)


if __name__ == "__main__":
    sys.exit(main())
