"""SLSA-style build provenance for a built wheel: an in-toto v1 Statement whose subject is the wheel (name
and sha256) and whose predicate (SLSA provenance v1) says which source commit it was built from, by which
builder, in which run, and when. `verify` recomputes the wheel's digest against the statement.

    python scripts/provenance.py write dist/kfmops-0.1.0-py3-none-any.whl dist/kfmops.intoto.json
    python scripts/provenance.py verify dist/kfmops.intoto.json dist/kfmops-0.1.0-py3-none-any.whl

On GitHub Actions the builder, run and git ref come from the GITHUB_* variables; elsewhere the builder is
`local` and the ref and commit come from the git checkout of --source. The statement is not signed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# What the build was: `pip wheel --no-deps` of the source at externalParameters.source (docs/supply-chain.md).
BUILD_TYPE = "urn:kfmops:build-type:pip-wheel:v1"
LOCAL_BUILDER = "urn:kfmops:builder:local"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git(source: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, check=True).stdout.strip()


def timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def statement(wheel: Path, source: Path, started_on: str | None, env: dict[str, str]) -> dict[str, Any]:
    """The statement for `wheel`, built from the checkout at `source`; `env` holds the GITHUB_* variables
    when the build ran on GitHub Actions. The build finished when it wrote the wheel."""
    on_github = env.get("GITHUB_ACTIONS") == "true"
    if on_github:
        server, repository = env["GITHUB_SERVER_URL"], env["GITHUB_REPOSITORY"]
        repository_uri, ref, commit = f"git+{server}/{repository}", env["GITHUB_REF"], env["GITHUB_SHA"]
        builder = f"{server}/{env['GITHUB_WORKFLOW_REF']}"
        invocation = f"{server}/{repository}/actions/runs/{env['GITHUB_RUN_ID']}/attempts/{env['GITHUB_RUN_ATTEMPT']}"
    else:
        repository_uri = f"git+{source.resolve().as_uri()}"
        ref, commit = git(source, "rev-parse", "--symbolic-full-name", "HEAD"), git(source, "rev-parse", "HEAD")
        builder, invocation = LOCAL_BUILDER, uuid.uuid4().urn
    finished_on = timestamp(datetime.datetime.fromtimestamp(wheel.stat().st_mtime))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": wheel.name, "digest": {"sha256": sha256(wheel)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"source": {"repository": repository_uri, "ref": ref, "commit": commit}},
                "resolvedDependencies": [{"uri": f"{repository_uri}@{ref}", "digest": {"gitCommit": commit}}],
            },
            "runDetails": {
                "builder": {"id": builder},
                "metadata": {
                    "invocationId": invocation,
                    "startedOn": started_on or finished_on,
                    "finishedOn": finished_on,
                },
            },
        },
    }


def write(wheel: Path, out: Path, source: Path, started_on: str | None) -> int:
    try:
        document = statement(wheel, source, started_on, dict(os.environ))
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"{wheel}: no provenance written: {error}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"{out}: provenance of {wheel.name} (sha256 {document['subject'][0]['digest']['sha256']})")
    return 0


def verify(provenance: Path, wheel: Path) -> int:
    """0 when the statement is an in-toto v1 SLSA provenance whose subject `wheel.name` has the wheel's digest."""
    try:
        document = json.loads(provenance.read_text(encoding="utf-8"))
        actual = sha256(wheel)
    except (OSError, ValueError) as error:
        print(f"{provenance}: cannot verify: {error}", file=sys.stderr)
        return 1
    if (
        not isinstance(document, dict)
        or document.get("_type") != STATEMENT_TYPE
        or document.get("predicateType") != PREDICATE_TYPE
    ):
        print(f"{provenance}: not an in-toto v1 statement of SLSA provenance v1", file=sys.stderr)
        return 1
    recorded = {subject["name"]: subject["digest"].get("sha256") for subject in document.get("subject", [])}
    if wheel.name not in recorded:
        print(f"{provenance}: {wheel.name} is not a subject (subjects: {', '.join(recorded)})", file=sys.stderr)
        return 1
    if recorded[wheel.name] != actual:
        print(
            f"{provenance}: {wheel.name} has sha256 {actual}, the statement says {recorded[wheel.name]}",
            file=sys.stderr,
        )
        return 1
    print(f"{provenance}: {wheel.name} matches (sha256 {actual})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    writing = commands.add_parser("write", help="write the provenance statement of WHEEL to OUT")
    writing.add_argument("wheel", type=Path, metavar="WHEEL")
    writing.add_argument("out", type=Path, metavar="OUT")
    writing.add_argument("--source", type=Path, default=ROOT, help="the git checkout the wheel was built from")
    writing.add_argument("--started-on", help="when the build started (RFC 3339, UTC); default: when it finished")
    verifying = commands.add_parser("verify", help="check that WHEEL has the digest STATEMENT records")
    verifying.add_argument("provenance", type=Path, metavar="STATEMENT")
    verifying.add_argument("wheel", type=Path, metavar="WHEEL")
    arguments = parser.parse_args(argv)
    if arguments.command == "write":
        return write(arguments.wheel, arguments.out, arguments.source, arguments.started_on)
    return verify(arguments.provenance, arguments.wheel)


if __name__ == "__main__":
    sys.exit(main())
