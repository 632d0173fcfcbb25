"""kfmops as a user gets it: a wheel, installed in a fresh venv outside the repository, run on a copy of
the example with no checkout beside it. Schemas and default policies must come from the wheel
(package data), and a workspace's own policies from the workspace (`policy.paths`).

Dependencies are not downloaded again: the fresh venv sees the test run's site-packages through a
`.pth` line (added to its path after its own site-packages, and without running that folder's `.pth`
files, so the editable install of the checkout stays invisible). Building the wheel needs the build
backend, which pip fetches from the package index (or its cache) as `pip install -e .` does in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.slow

DENY_EVERYTHING = """\
package kfmops

import rego.v1

deny contains {"rule": "org.frozen", "msg": "this workspace is frozen by its own policy", "fix": "unfreeze it"} if {
	count(input.changes) > 0
}
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin` folder of a fresh venv holding only the kfmops wheel built from this checkout."""
    place = tmp_path_factory.mktemp("wheel")
    source = place / "source"  # only what the build reads, so that the checkout gets no build/ folder
    shutil.copytree(ROOT / "kfmops", source / "kfmops", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "-q", "-w", str(place / "dist"), str(source)],
        capture_output=True,
        text=True,
        cwd=place,
    )
    assert built.returncode == 0, built.stderr
    wheel = next((place / "dist").glob("kfmops-*.whl"))
    fresh = place / "venv"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "kfmops-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installing = subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        cwd=place,
    )
    assert installing.returncode == 0, installing.stderr
    return fresh / "bin"


def run(installed: Path, workspace: Path, *args: str) -> tuple[int, str, str]:
    """`kfmops -C workspace ARGS` from the fresh venv, from a folder outside the checkout."""
    environment = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "KFMOPS_PLAN_KEY"}}
    environment.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", "PATH": f"{installed}:/usr/bin:/bin"})
    done = subprocess.run(
        [str(installed / "kfmops"), "-C", str(workspace), *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=workspace.parent,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of examples/kansas alone in a folder: no repository, no schemas/ or policies/ beside it."""
    workspace = tmp_path / "kansas"
    shutil.copytree(ROOT / "examples" / "kansas", workspace, ignore=shutil.ignore_patterns("state", "plans", "docs"))
    return workspace


def test_the_installed_wheel_loads_nothing_from_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed / "python"), "-c", "import kfmops; print(kfmops.__file__)"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.parent), where
    assert not Path(where).is_relative_to(ROOT)


def test_validate_plan_and_apply_the_example_from_the_wheel(installed: Path, example: Path) -> None:
    code, out, err = run(installed, example, "validate")
    assert code == 0, (out, err)
    assert "Valid:" in out

    code, out, err = run(installed, example, "plan", "--out", "plans/first.json")
    assert code == 0, (out, err)
    plan = json.loads((example / "plans" / "first.json").read_text())
    assert plan["policy"]["decision"] == "allow"  # judged by the bundled policies, read from the wheel
    assert plan["summary"]["create"] > 0

    code, out, err = run(installed, example, "apply", "plans/first.json")
    assert code == 0, (out, err)
    assert "Apply complete!" in out
    assert "Traceback" not in out + err

    code, out, err = run(installed, example, "plan", "--detailed-exitcode")
    assert code == 0, (out, err)  # converged: nothing left to do
    code, out, err = run(installed, example, "ledger", "verify")
    assert code == 0, (out, err)


def test_the_workspace_policies_judge_the_plan(installed: Path, example: Path) -> None:
    (example / "org-policies").mkdir()
    (example / "org-policies" / "frozen.rego").write_text(DENY_EVERYTHING)
    config = yaml.safe_load((example / "kfmops.yaml").read_text())
    config["policy"] = {"paths": ["org-policies"]}
    (example / "kfmops.yaml").write_text(yaml.safe_dump(config))

    code, out, err = run(installed, example, "plan")
    assert code == 3, (out, err)
    assert "org.frozen" in out + err

    config["policy"] = {"paths": ["missing-policies"]}
    (example / "kfmops.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run(installed, example, "plan")
    assert code == 3, (out, err)  # a policy path that is not there fails closed, naming it
    assert "missing-policies" in out + err
