"""Shared fixtures: small generated workspaces and the real `kfmops` console script run in a subprocess."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package; it is importable from the checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.forkserver import ForkServer  # noqa: E402
from benchmarks.generate import generate  # noqa: E402

SERVER_VARIABLES = ("KFMOPS_TEST_REDIS_URL", "KFMOPS_TEST_NEO4J_URI", "KFMOPS_TEST_ES_URL", "KFMOPS_TEST_POSTGRES_DSN")


def pytest_configure(config: pytest.Config) -> None:
    """Start what the suite needs, once, so that a newcomer's `pytest` runs it whole with nothing skipped:
    the test servers (scripts/servers/all.sh, idempotent and cached) and the linters the tests call
    (actionlint, opa, conftest; built once into ~/.cache/kfmops-tools). Set KFMOPS_START_SERVERS=0 to
    use only what is already running (tests that need a missing server then skip, or fail in CI)."""
    if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("KFMOPS_START_SERVERS") == "0":
        return  # workers inherit what the controller started
    if not all(os.environ.get(name) for name in SERVER_VARIABLES):
        started = subprocess.run(
            ["bash", str(ROOT / "scripts" / "servers" / "all.sh"), "start"], capture_output=True, text=True
        )
        if started.returncode != 0:
            sys.stderr.write(f"kfmops tests: could not start the test servers:\n{started.stderr[-2000:]}\n")
        run_dir = Path(os.environ.get("KFMOPS_SERVERS_CACHE") or Path.home() / ".cache" / "kfmops-servers") / "run"
        for line in (run_dir / "env.sh").read_text().splitlines() if (run_dir / "env.sh").is_file() else []:
            name, _, value = line.removeprefix("export ").partition("=")
            if name.startswith("KFMOPS_TEST_"):
                os.environ.setdefault(name, value.strip().strip("'\""))
    tools = Path(os.environ.get("KFMOPS_TOOLS_DIR") or Path.home() / ".cache" / "kfmops-tools") / "bin"
    if shutil.which("go") and not all((tools / name).is_file() for name in ("actionlint", "opa", "conftest")):
        tools.mkdir(parents=True, exist_ok=True)
        with FileLock(tools / ".install.lock"):  # one build at a time, whatever runs pytest at once
            for script in ("install-actionlint.sh", "install-policy-tools.sh"):
                subprocess.run(["bash", str(ROOT / "scripts" / script)], capture_output=True, text=True)
    os.environ["PATH"] = f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"


from benchmarks.live import local_rows, snapshot  # noqa: E402,F401  (local_rows: re-exported to the tests)

KFMOPS = Path(sys.executable).parent / "kfmops"
CliResult = tuple[int, str, str]


def plan_changes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every change of a plan document as an object, a no-op row (plan.schema.json#/$defs/unchanged) expanded."""
    from kfmops.plans.codec import change_from_row, change_to_dict

    return [change_to_dict(change_from_row(c)) if isinstance(c, list) else c for c in plan["changes"]]


def commit_all(workspace: Path, subject: str = "desired state") -> str:
    """Commit everything in `workspace` (a git repository of its own from the first call); the commit's id."""

    def git(*args: str) -> str:
        command = ["git", "-c", "user.email=ana@kfm", "-c", "user.name=Ana", *args]
        return subprocess.run(command, cwd=workspace, capture_output=True, text=True, check=True).stdout.strip()

    if not (workspace / ".git").exists():
        git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "--allow-empty", "-m", subject)
    return git("rev-parse", "HEAD")


@pytest.fixture
def make_workspace(tmp_path: Path) -> Callable[..., Path]:
    """`make_workspace(n=5, versions=3)`: a fresh, valid workspace of n datasets under tmp_path."""
    numbers = itertools.count()

    def make(n: int = 5, versions: int = 3, seed: int = 1854) -> Path:
        out = tmp_path / f"ws{next(numbers)}"
        generate(out, n, versions, seed)
        return out

    return make


class Cli:
    """Runs the installed `kfmops` console script with `-C workspace`, as a user or CI would.

    The environment never carries KFMOPS_PLAN_KEY unless a test passes it. Commands run from `cwd`, a
    scratch folder (never the checkout), where debug logs of unexpected errors land too.
    """

    def __init__(self, cwd: Path):
        self.cwd = cwd

    def environment(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The whole environment of a command: the test run's, without KFMOPS_PLAN_KEY, plus `env`."""
        environment = {k: v for k, v in os.environ.items() if k != "KFMOPS_PLAN_KEY"}
        environment.update({"TMPDIR": str(self.cwd), "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"})
        environment.update(env or {})
        return environment

    def _start(self, workspace: Path, args: tuple[str, ...], env: dict[str, str] | None) -> Any:
        return subprocess.Popen(
            [str(KFMOPS), "-C", str(workspace), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.environment(env),
            cwd=self.cwd,
        )

    @staticmethod
    def _finish(process: subprocess.Popen) -> CliResult:
        out, err = process.communicate(timeout=120)
        return process.returncode, out, err

    def __call__(self, workspace: Path, *args: str, env: dict[str, str] | None = None) -> CliResult:
        """(exit code, stdout, stderr) of `kfmops -C workspace ARGS...`."""
        return self._finish(self._start(workspace, args, env))

    def concurrently(self, workspace: Path, *commands: tuple[str, ...]) -> list[CliResult]:
        """Several commands at once, results in order. They must not depend on each other, and at most one
        may take the workspace lock (apply): concurrent applies are a different test."""
        return [self._finish(process) for process in [self._start(workspace, args, None) for args in commands]]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """`cli(workspace, *args, env={...})` -> (exit code, stdout, stderr) of the real console script."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return Cli(cwd)


class ForkedCli(Cli):
    """`Cli` whose commands are forked from a process that imported kfmops once (benchmarks/forkserver.py).

    Each command is still a process of its own (pid, environment, exit code, exit handlers; it can be
    killed), started through the console script's `main`, without the 1.5 s of imports: for the suites
    that run thousands of commands (fault matrix, kill campaign).
    """

    def __init__(self, cwd: Path, server: ForkServer):
        super().__init__(cwd)
        self.server = server

    def _start(self, workspace: Path, args: tuple[str, ...], env: dict[str, str] | None) -> Any:
        return self.server.start(["-C", str(workspace), *args], cwd=self.cwd, env=self.environment(env))


@pytest.fixture(scope="session")
def fork_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkedCli]:
    """Like `cli`, shared by the session, its commands forked from one pre-imported kfmops (see ForkedCli)."""
    cwd = tmp_path_factory.mktemp("forked-cwd")
    with ForkServer(Cli(cwd).environment(), cwd) as server:
        yield ForkedCli(cwd, server)


# Reading the embedded local backend directly (no kfmops code), to check what apply really did.


def execute_sql(workspace: Path, statement: str, parameters: tuple[Any, ...] = ()) -> None:
    database = sqlite3.connect(workspace / "state" / "local" / "references.sqlite")
    try:
        with database:
            database.execute(statement, parameters)
    finally:
        database.close()


def stac_document(workspace: Path, path: str) -> dict[str, Any]:
    return json.loads((workspace / "state" / "local" / "stac" / path).read_text(encoding="utf-8"))


def stac_links(workspace: Path, path: str, rel: str) -> list[str]:
    """hrefs of the links of `rel` in one document of the local backend's STAC folder."""
    return sorted(link["href"] for link in stac_document(workspace, path).get("links", []) if link["rel"] == rel)


# Fixtures of the safe-apply suites (WAL, lock, recover, rollback).


@pytest.fixture(scope="module")
def module_cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """`cli` shared by the tests of one module, for workspaces that a module builds once and copies."""
    return Cli(tmp_path_factory.mktemp("cwd"))


class Background:
    """A console-script process running in the background; a thread drains its output so it never blocks."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.pid = process.pid
        self.result: CliResult | None = None
        self._drain = threading.Thread(target=self._collect, daemon=True)
        self._drain.start()

    def _collect(self) -> None:
        out, err = self.process.communicate()
        self.result = (self.process.returncode, out, err)

    def running(self) -> bool:
        return self.process.poll() is None

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def finish(self, timeout: float = 120) -> CliResult:
        """(exit code, stdout, stderr) once it exits; a code of -N means it died of signal N."""
        self._drain.join(timeout)
        assert self.result is not None, f"kfmops (pid {self.pid}) still runs after {timeout}s"
        return self.result


@pytest.fixture
def cli_process(cli: Cli) -> Callable[..., Background]:
    """`cli_process(workspace, *args, env={...})`: the console script started in the background, to signal it."""

    def start(workspace: Path, *args: str, env: dict[str, str] | None = None) -> Background:
        return Background(cli._start(workspace, args, env))

    return start


@pytest.fixture(scope="session")
def live_snapshot() -> Callable[[Path], dict[str, Any]]:
    """`live_snapshot(workspace)`: what the local backend holds, read directly (no kfmops code).

    The rows of its reference tables (as `local_rows`) plus every JSON document of its STAC folder,
    parsed, under "stac" by path relative to the catalog root. Equal snapshots mean equal references.
    Before the first apply creates the local backend, it holds its seed (`data/catalog`, no rows).
    """
    return snapshot


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a real Redis (KFMOPS_TEST_REDIS_URL); skips when absent, fails if KFMOPS_REQUIRE_SERVERS=1."""
    from servers import address_of

    return address_of("redis")


@pytest.fixture(scope="session")
def neo4j_uri() -> str:
    """The Bolt URI of a real Neo4j (KFMOPS_TEST_NEO4J_URI); skips when absent, fails if KFMOPS_REQUIRE_SERVERS=1."""
    from servers import address_of

    return address_of("neo4j")


@pytest.fixture(scope="session")
def es_url() -> str:
    """The URL of a real Elasticsearch (KFMOPS_TEST_ES_URL); skips when absent, fails if KFMOPS_REQUIRE_SERVERS=1."""
    from servers import address_of

    return address_of("elasticsearch")


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The DSN of a real PostgreSQL (KFMOPS_TEST_POSTGRES_DSN); skips when absent, fails if KFMOPS_REQUIRE_SERVERS=1."""
    from servers import address_of

    return address_of("postgres")


def remove_dataset(workspace: Path, dataset: str) -> None:
    """Remove one Dataset document from the desired YAML, as a pull request would."""
    for file in (workspace / "desired").glob("*.yaml"):
        documents = list(yaml.safe_load_all(file.read_text()))
        kept = [d for d in documents if d["metadata"]["name"] != dataset]
        if len(kept) != len(documents):
            file.write_text(yaml.safe_dump_all(kept, sort_keys=False))
            return
    raise AssertionError(f"no document for {dataset}")
