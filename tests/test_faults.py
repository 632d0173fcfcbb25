"""Backend faults during plan and apply, through the real console script and real servers.

Every backend kfmops talks to over the network sits behind a FaultProxy (tests/faultproxy.py), so a test
can take it away in the middle of an apply without touching the shared servers: `refuse` is a server that
is down (connects refused, open connections reset), `drop` a black hole, `delay` a slow network. The STAC
folder and the embedded local backend fail by becoming immutable (chattr +i as root, chmod otherwise).
A "server stopped and started again" is a dedicated Redis started by the test, with its own port, folder
and append-only file.

What the backends hold before and after is read with their own clients, straight from the servers (never
through the proxy, never through kfmops). An apply must end in one of two ways: every reference at its
new value (exit 0), or every reference at its value before the apply (exit 1 after compensation, or
exit 6 and then `kfmops recover`). Never half.

Apply order decides which backend holds finished batches when the fault starts: the faulty backend first
means it has something to compensate (exit 6, recovery required); last means only healthy backends do
(exit 1, compensated at once). The fault starts once the WAL holds its first DONE record.
"""

from __future__ import annotations

import json
import os
import posixpath
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from faultproxy import DedicatedRedis, FaultProxy
from servers import (
    REQUIRED,
    address_of,
    aliases_of,
    create_indices,
    create_nodes,
    delete_indices,
    delete_keys,
    delete_nodes,
    es_client,
    neo4j_driver,
    redis_client,
    unique_tag,
)

from benchmarks.generate import dataset_document, promote, write_catalog

DATASETS = 4  # per scenario; with batch_size 2 every kind takes two batches, so a fault lands between them
DATASET_LABEL, VERSION_LABEL = "KfmopsFaultDataset", "KfmopsFaultVersion"
KEYS = "kfmops-test:"
SERVER_OF = {"cache": "redis", "graph": "neo4j", "search": "elasticsearch"}  # backend -> server behind it
KIND_OF = {"catalog": "stac", "graph": "graph", "search": "search", "cache": "cache"}  # backend -> reference kind
URL_VARIABLE = {"redis": "KFMOPS_REDIS_URL", "neo4j": "KFMOPS_NEO4J_URI", "elasticsearch": "KFMOPS_ES_URL"}
RETRY = "{attempts: 4, max_seconds: 5, base_delay: 0.05, max_delay: 0.5, failure_threshold: 3, open_seconds: 2}"
OUTAGE = 1.5  # seconds a transient outage lasts
QUIET = {"KFMOPS_KILL_SWITCH": ""}  # whatever the caller's shell says, these tests set the switch themselves


# the shared servers, seeded once ------------------------------------------------------------------------------


@dataclass
class Platform:
    """The three shared servers, their own clients, and the immutable targets every scenario points at."""

    tag: str
    urls: dict[str, str]
    redis: Any
    neo4j: Any
    es: Any

    def target(self, server: str) -> tuple[str, int]:
        parts = urlsplit(self.urls[server])
        return parts.hostname or "127.0.0.1", parts.port or {"redis": 6379, "neo4j": 7687}.get(server, 9200)

    def version(self, version: str) -> str:
        """The id of a version node and the name of a version index (one per version, shared by all datasets)."""
        return f"{self.tag}-{version}"


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    urls = {server: address_of(server) for server in ("redis", "neo4j", "elasticsearch")}
    tag = unique_tag("kfmops-test-faults")
    shared = Platform(
        tag, urls, redis_client(urls["redis"]), neo4j_driver(urls["neo4j"]), es_client(urls["elasticsearch"])
    )
    try:
        create_nodes(shared.neo4j, VERSION_LABEL, [shared.version("v1"), shared.version("v2")])
        create_indices(shared.es, [shared.version("v1"), shared.version("v2")])
        yield shared
    finally:
        delete_nodes(shared.neo4j, [DATASET_LABEL, VERSION_LABEL], tag)
        delete_indices(shared.es, tag)
        delete_keys(shared.redis, f"{KEYS}{tag}:")
        shared.neo4j.close()
        shared.es.close()
        shared.redis.close()


@pytest.fixture
def proxies(platform: Platform) -> Iterator[dict[str, FaultProxy]]:
    """One fault proxy in front of each shared server, passing until a test breaks it."""
    started = {server: FaultProxy(platform.target(server), lifetime=300).start() for server in platform.urls}
    try:
        yield started
    finally:
        for proxy in started.values():
            proxy.stop()


def proxied_env(platform: Platform, proxies: dict[str, FaultProxy]) -> dict[str, str]:
    """The workspace's URL variables, each pointing at the proxy of its server (same scheme and path)."""
    env = dict(QUIET)
    for server, url in platform.urls.items():
        parts = urlsplit(url)
        env[URL_VARIABLE[server]] = parts._replace(netloc=f"127.0.0.1:{proxies[server].port}").geturl()
    return env


# one scenario: a workspace of its own datasets, pointing at v1, desired at v2 -------------------------------------


@dataclass
class Scenario:
    platform: Platform
    root: Path
    datasets: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def node_ids(self) -> list[str]:
        return [f"{self.platform.tag}-{d}" for d in self.datasets]

    @property
    def aliases(self) -> list[str]:
        return [f"{self.platform.tag}-{d}" for d in self.datasets]

    @property
    def keys(self) -> list[str]:
        return [f"{KEYS}{self.platform.tag}:{d}:current" for d in self.datasets]

    def snapshot(self, redis_reader: Any = None) -> dict[str, Any]:
        """Every reference of the scenario, read straight from the servers and the catalog folder."""
        shared = self.platform
        records = shared.neo4j.execute_query(
            f"UNWIND $ids AS id MATCH (a:`{DATASET_LABEL}` {{id: id}}) "
            "OPTIONAL MATCH (a)-[:CURRENT_VERSION]->(b) RETURN a.id AS a, collect(b.id) AS b",
            {"ids": self.node_ids},
        ).records
        redis_reader = redis_reader or shared.redis
        catalog = self.root / "catalog"
        return {
            "graph": {r["a"]: sorted(r["b"]) for r in records},
            "search": aliases_of(shared.es, self.aliases),
            "cache": dict(zip(self.keys, redis_reader.mget(self.keys), strict=True)),
            "stac": {
                p.relative_to(catalog).as_posix(): json.loads(p.read_text(encoding="utf-8"))
                for p in sorted(catalog.rglob("*.json"))
            },
        }

    def applied(self, version: str = "v2") -> dict[str, Any]:
        """The graph, search and cache part of a snapshot once every pointer is at `version`."""
        target = self.platform.version(version)
        return {
            "graph": {i: [target] for i in self.node_ids},
            "search": {a: {target: False} for a in self.aliases},
            "cache": dict.fromkeys(self.keys, version),
        }

    def stac_children(self) -> set[str]:
        catalog = json.loads((self.root / "catalog" / "catalog.json").read_text(encoding="utf-8"))
        return {posixpath.normpath(link["href"]) for link in catalog["links"] if link["rel"] == "child"}

    def assert_applied(self, snapshot: dict[str, Any]) -> None:
        assert {k: snapshot[k] for k in ("graph", "search", "cache")} == self.applied()
        assert self.stac_children() == {f"{d}/v2/collection.json" for d in self.datasets}


def write_workspace(
    root: Path, datasets: list[str], order: Sequence[str], backends: str, routes: str, tag: str
) -> None:
    rng = random.Random(1854)
    write_catalog(root / "catalog", [(d, ["v1", "v2"], f"Fault dataset {d}") for d in datasets], "Fault scenarios")
    (root / "desired").mkdir(parents=True)
    documents = [dataset_document(d, ["v1", "v2"], "v2", rng) for d in datasets]
    (root / "desired" / "datasets.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    (root / "kfmops.yaml").write_text(
        f"""\
apiVersion: kfmops/v1
kind: Workspace
desired: desired
plans: plans
state: state
backends:
{backends}
routes: {routes}
apply: {{batch_size: 2, order: [{", ".join(order)}]}}
retry: {RETRY}
datasets:
  graph:
    {{dataset_label: {DATASET_LABEL}, version_label: {VERSION_LABEL}, dataset_id: "{tag}-{{dataset}}",
     version_id: "{tag}-{{version}}"}}
  search: {{alias: "{tag}-{{dataset}}", index: "{tag}-{{version}}"}}
  cache: {{key: "{KEYS}{tag}:{{dataset}}:current", invalidate: ["{KEYS}{tag}:cache:{{dataset}}:*"]}}
""",
        encoding="utf-8",
    )


SERVER_BACKENDS = f"""\
  catalog: {{type: stac, root: catalog}}
  graph: {{type: neo4j, uri_env: KFMOPS_NEO4J_URI, timeout: 1}}
  search: {{type: elasticsearch, url_env: KFMOPS_ES_URL, timeout: 1}}
  cache: {{type: redis, url_env: KFMOPS_REDIS_URL, prefixes: ["{KEYS}"], timeout: 1}}"""
SERVER_ROUTES = "{stac: catalog, graph: graph, search: search, cache: cache}"


def seed_v1(platform: Platform, scenario: Scenario, redis_writer: Any = None) -> None:
    """Point every dataset at v1 the way other tools would have (kfmops sees these as live values to update)."""
    platform.neo4j.execute_query(
        f"UNWIND $ids AS id MERGE (a:`{DATASET_LABEL}` {{id: id}}) WITH a "
        f"MATCH (v:`{VERSION_LABEL}` {{id: $v1}}) MERGE (a)-[:CURRENT_VERSION]->(v)",
        {"ids": scenario.node_ids, "v1": platform.version("v1")},
    )
    platform.es.indices.update_aliases(
        actions=[{"add": {"index": platform.version("v1"), "alias": alias}} for alias in scenario.aliases]
    )
    (redis_writer or platform.redis).mset(dict.fromkeys(scenario.keys, "v1"))


@pytest.fixture
def scenario(platform: Platform, proxies: dict[str, FaultProxy], tmp_path: Path) -> Callable[..., Scenario]:
    """`scenario(name, order)`: a workspace whose datasets point at v1 on the servers and are desired at v2."""

    def make(name: str, order: Sequence[str]) -> Scenario:
        datasets = [f"{name}-d{i}" for i in range(DATASETS)]
        root = tmp_path / name
        write_workspace(root, datasets, order, SERVER_BACKENDS, SERVER_ROUTES, platform.tag)
        made = Scenario(platform, root, datasets, proxied_env(platform, proxies))
        seed_v1(platform, made)
        return made

    return make


# watching an apply ------------------------------------------------------------------------------------------------


def wal_records(workspace: Path) -> list[dict[str, Any]]:
    """Complete records of the unfinished WALs (a torn last line is skipped, as kfmops does)."""
    records = []
    for path in sorted((workspace / "state" / "wal").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            with suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def running(process: Any) -> bool:
    """Whether a background console script (conftest's `cli_process`) still runs."""
    return process.running() if hasattr(process, "running") else process.poll() is None


def finish(process: Any, timeout: float = 90) -> tuple[int, str, str]:
    if hasattr(process, "finish"):
        code, out, err = process.finish(timeout)
    else:
        out, err = process.communicate(timeout=timeout)
        code = process.returncode
    assert "Traceback" not in out + err, err
    return code, out, err


def wait_for_first_done(workspace: Path, process: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r.get("type") == "DONE" for r in wal_records(workspace)):
            return
        if not running(process):
            code, out, err = finish(process)
            pytest.fail(f"apply exited ({code}) before its first DONE record:\n{out}\n{err}")
        time.sleep(0.005)
    pytest.fail(f"no DONE record in the WAL within {timeout}s")


def retry_counts(workspace: Path, command: str) -> dict[tuple[str, str], int]:
    """kfm.ops_retry_count points of `command` in state/telemetry/metrics.jsonl, summed by (backend, error class)."""
    counts: dict[tuple[str, str], int] = {}
    metrics = workspace / "state" / "telemetry" / "metrics.jsonl"
    for line in metrics.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("name") != "kfm.ops_retry_count":
            continue
        for point in record["points"]:
            attributes = point["attributes"]
            if attributes.get("command") == command and point["value"] > 0:
                key = (attributes["backend"], attributes["error_class"])
                counts[key] = counts.get(key, 0) + point["value"]
    return counts


def recover_when_back(cli: Any, workspace: Path, env: dict[str, str], back: float, limit: float = 60) -> float:
    """Run `kfmops recover` until it succeeds; seconds from the backend's return (`back`) to that success."""
    deadline = back + limit
    while True:
        code, out, err = cli(workspace, "recover", env=env)
        if code == 0:
            assert "back at its value before the apply" in out, out
            return time.monotonic() - back
        assert time.monotonic() < deadline, f"recover still fails {limit}s after the backend returned: {err}"
        time.sleep(0.2)


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Make `path` (recursively) unwritable even for root: chattr +i as root, chmod a-w otherwise."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("chattr is needed to make a folder read-only for root")
        subprocess.run(["chattr", "-R", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-R", "-i", str(path)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


def note(request: pytest.FixtureRequest, **measured: Any) -> None:
    """Keep a measurement in the JUnit report and print it (shown with -rA)."""
    for key, value in measured.items():
        request.node.user_properties.append((key, value))
    print(" ".join(f"{k}={v}" for k, v in measured.items()))


# 1. transient and persistent outages of each server ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "mode"), [("cache", "refuse"), ("graph", "refuse"), ("search", "refuse"), ("graph", "drop")]
)
def test_transient_outage_mid_apply_is_ridden_out(
    backend: str,
    mode: str,
    scenario: Callable[..., Scenario],
    proxies: dict[str, FaultProxy],
    cli_process: Any,
    request: Any,
) -> None:
    """The server refuses connections (or stops answering) for 1.5 s between two batches; retries and the
    breaker's probe carry the apply through."""
    server = SERVER_OF[backend]
    case = scenario(
        f"transient-{backend}-{mode}", [KIND_OF[backend], *(k for k in KIND_OF.values() if k != KIND_OF[backend])]
    )
    proxy = proxies[server]
    proxy.set_mode("delay", delay_ms=40)  # the second batch cannot finish before the outage starts
    process = cli_process(case.root, "apply", "--auto-approve", env=case.env)
    wait_for_first_done(case.root, process)
    proxy.set_mode(mode)
    time.sleep(OUTAGE)
    proxy.set_mode("pass")
    code, out, err = finish(process)
    assert code == 0, (out, err)
    case.assert_applied(case.snapshot())
    retries = retry_counts(case.root, "apply")
    spent = sum(n for (b, _), n in retries.items() if b == backend)
    assert spent > 0, f"the outage did not hit {backend} mid-apply: {retries}"
    note(request, backend=backend, fault=f"{mode} {OUTAGE}s", exit=code, retries=dict_text(retries))


@pytest.mark.parametrize("backend", ["cache", "graph", "search"])
def test_persistent_outage_of_a_backend_with_nothing_to_undo_compensates_the_others(
    backend: str, scenario: Callable[..., Scenario], proxies: dict[str, FaultProxy], cli_process: Any, request: Any
) -> None:
    """The faulty backend is applied last: the others are undone at once; exit 1 names it and its open circuit."""
    server = SERVER_OF[backend]
    case = scenario(f"late-{backend}", [*(k for k in KIND_OF.values() if k != KIND_OF[backend]), KIND_OF[backend]])
    before = case.snapshot()
    process = cli_process(case.root, "apply", "--auto-approve", env=case.env)
    wait_for_first_done(case.root, process)
    proxies[server].set_mode("refuse")
    code, out, err = finish(process)
    assert code == 1, (out, err)
    assert f"backend '{backend}'" in err and "circuit open" in err and "was undone" in err, err
    assert not wal_records(case.root), "an aborted apply leaves no unfinished WAL"
    proxies[server].set_mode("pass")
    assert case.snapshot() == before
    note(request, backend=backend, fault="refuse (stays down)", exit=code, error=error_line(err))


@pytest.mark.parametrize("backend", ["cache", "graph", "search"])
def test_persistent_outage_of_a_backend_to_undo_requires_recover(
    backend: str,
    scenario: Callable[..., Scenario],
    proxies: dict[str, FaultProxy],
    cli_process: Any,
    cli: Any,
    request: Any,
) -> None:
    """The faulty backend is applied first and dies after its first batch: undoing it fails too (exit 6);
    once it is back, `kfmops recover` restores every reference to its value before the apply."""
    server = SERVER_OF[backend]
    case = scenario(f"early-{backend}", [KIND_OF[backend], *(k for k in KIND_OF.values() if k != KIND_OF[backend])])
    before = case.snapshot()
    proxy = proxies[server]
    proxy.set_mode("delay", delay_ms=40)
    process = cli_process(case.root, "apply", "--auto-approve", env=case.env)
    wait_for_first_done(case.root, process)
    proxy.set_mode("refuse")
    code, out, err = finish(process)
    assert code == 6, (out, err)
    assert f"backend '{backend}'" in err and "kfmops recover" in err, err
    print(error_line(err))
    proxy.set_mode("pass")
    back = time.monotonic()
    seconds = recover_when_back(cli, case.root, case.env, back)
    assert case.snapshot() == before
    note(request, backend=backend, fault="refuse (until recover)", exit=6, recover_after_return_s=round(seconds, 2))


def test_read_only_catalog_late_compensates_the_servers(scenario: Callable[..., Scenario], cli_process: Any) -> None:
    """A STAC folder that cannot be written is a permanent fault: no retry, the servers are undone, exit 1."""
    case = scenario("late-catalog", ["graph", "search", "cache", "stac"])
    before = case.snapshot()
    process = cli_process(case.root, "apply", "--auto-approve", env=case.env)
    wait_for_first_done(case.root, process)
    with immutable(case.root / "catalog"):
        code, out, err = finish(process)
    assert code == 1, (out, err)
    assert "backend 'catalog'" in err and "was undone" in err, err
    assert case.snapshot() == before


def test_read_only_catalog_early_requires_recover(
    scenario: Callable[..., Scenario],
    proxies: dict[str, FaultProxy],
    cli_process: Any,
    cli: Any,
    request: Any,
) -> None:
    """The catalog is written first; then Neo4j goes away and, while its retries run, the catalog becomes
    read-only: undoing the catalog fails (exit 6) until it is writable again and `kfmops recover` runs."""
    case = scenario("early-catalog", ["stac", "graph", "search", "cache"])
    before = case.snapshot()
    process = cli_process(case.root, "apply", "--auto-approve", env=case.env)
    wait_for_first_done(case.root, process)
    proxies["neo4j"].set_mode("refuse")
    with immutable(case.root / "catalog"):
        code, out, err = finish(process)
        assert code == 6, (out, err)
        assert "backend 'catalog'" in err and "kfmops recover" in err, err
        proxies["neo4j"].set_mode("pass")
        refused, _, message = cli(case.root, "apply", "--auto-approve", env=case.env)
        assert refused == 6 and "kfmops recover" in message, "every mutation is refused while the WAL is unfinished"
    seconds = recover_when_back(cli, case.root, case.env, time.monotonic())
    assert case.snapshot() == before
    note(
        request,
        backend="catalog",
        fault="chattr +i (until recover)",
        exit=code,
        recover_after_return_s=round(seconds, 2),
    )


def error_line(err: str) -> str:
    return next((line for line in err.splitlines() if line.startswith("Error:")), err.strip())


def dict_text(counts: dict[tuple[str, str], int]) -> str:
    return ",".join(f"{b}:{e}={n}" for (b, e), n in sorted(counts.items())) or "none"


def test_read_only_local_backend_requires_recover(
    make_workspace: Callable[..., Path], cli: Any, cli_process: Any, live_snapshot: Callable, request: Any
) -> None:
    """The embedded local backend's folder becomes read-only between two batches: exit 6, then recover."""
    workspace = make_workspace(n=5)
    with (workspace / "kfmops.yaml").open("a", encoding="utf-8") as config:
        config.write(f"apply: {{batch_size: 1}}\nretry: {RETRY}\n")
    code, out, err = cli(workspace, "apply", "--auto-approve", env=QUIET)
    assert code == 0, (out, err)
    promote(workspace, 1.0, 1854)
    before = live_snapshot(workspace)
    process = cli_process(workspace, "apply", "--auto-approve", env=QUIET)
    wait_for_first_done(workspace, process)
    with immutable(workspace / "state" / "local" / "stac"):
        code, out, err = finish(process)
        assert code == 6, (out, err)
        assert "backend 'local'" in err and "kfmops recover" in err, err
    seconds = recover_when_back(cli, workspace, QUIET, time.monotonic())
    assert live_snapshot(workspace) == before
    note(request, backend="local", fault="chattr +i (until recover)", exit=6, recover_after_return_s=round(seconds, 2))


# 2. a server stopped in the middle of an apply and started again ---------------------------------------------------


@pytest.fixture
def dedicated_redis(tmp_path: Path) -> Iterator[DedicatedRedis]:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (scripts/servers/redis.sh start installs it)"
        if REQUIRED:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = DedicatedRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_scenario(
    platform: Platform, proxies: dict[str, FaultProxy], dedicated_redis: DedicatedRedis, tmp_path: Path
) -> Callable[..., Scenario]:
    """A scenario whose cache backend is the dedicated Redis (reached directly, no proxy)."""

    def make(name: str, order: Sequence[str]) -> Scenario:
        datasets = [f"{name}-d{i}" for i in range(DATASETS)]
        root = tmp_path / name
        write_workspace(root, datasets, order, SERVER_BACKENDS, SERVER_ROUTES, platform.tag)
        env = proxied_env(platform, proxies) | {"KFMOPS_REDIS_URL": dedicated_redis.url}
        made = Scenario(platform, root, datasets, env)
        with redis_client(dedicated_redis.url) as writer:
            seed_v1(platform, made, writer)
        return made

    return make


def test_redis_stopped_and_started_mid_apply_completes(
    redis_scenario: Callable[..., Scenario],
    dedicated_redis: DedicatedRedis,
    proxies: dict[str, FaultProxy],
    cli_process: Any,
    request: Any,
) -> None:
    """Redis stops (SIGTERM) before its batches and is back 1 s later: the apply finishes, or undoes itself."""
    case = redis_scenario("restart-short", ["graph", "cache", "search", "stac"])
    before = case.snapshot(redis_client(dedicated_redis.url))
    proxies["neo4j"].set_mode("delay", delay_ms=40)
    process = cli_process(case.root, "apply", "--auto-approve", env=case.env)
    wait_for_first_done(case.root, process)
    dedicated_redis.stop()
    time.sleep(1.0)
    dedicated_redis.start()
    code, out, err = finish(process)
    with redis_client(dedicated_redis.url) as reader:
        after = case.snapshot(reader)
    assert code in (0, 1), (out, err)
    if code == 0:
        case.assert_applied(after)
    else:
        assert after == before
    retries = retry_counts(case.root, "apply")
    note(request, backend="cache (own redis)", fault="SIGTERM, restart after 1s", exit=code, retries=dict_text(retries))


def test_redis_killed_mid_apply_and_restarted_is_recovered(
    redis_scenario: Callable[..., Scenario],
    dedicated_redis: DedicatedRedis,
    proxies: dict[str, FaultProxy],
    cli_process: Any,
    cli: Any,
    request: Any,
) -> None:
    """Redis is killed (SIGKILL) after its first batch and stays down: undoing it fails (exit 6). Once it is
    restarted (its append-only file brings back what it acknowledged), `kfmops recover` restores everything."""
    case = redis_scenario("restart-long", ["cache", "graph", "search", "stac"])
    before = case.snapshot(redis_client(dedicated_redis.url))
    process = cli_process(case.root, "apply", "--auto-approve", env=case.env)
    wait_for_first_done(case.root, process)
    dedicated_redis.stop(signal_number=9)
    proxies["neo4j"].set_mode("refuse")  # whether or not the second cache batch got through, the apply fails
    code, out, err = finish(process)
    assert code == 6, (out, err)
    assert "backend 'cache'" in err and "kfmops recover" in err, err
    proxies["neo4j"].set_mode("pass")
    back = dedicated_redis.start()
    seconds = recover_when_back(cli, case.root, case.env, back)
    with redis_client(dedicated_redis.url) as reader:
        assert case.snapshot(reader) == before
    note(
        request, backend="cache (own redis)", fault="SIGKILL, restart", exit=6, recover_after_return_s=round(seconds, 2)
    )


# 3. reads fail safe --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "mode"), [("cache", "refuse"), ("graph", "refuse"), ("graph", "drop"), ("search", "drop")]
)
def test_plan_that_cannot_read_a_backend_fails_and_writes_no_plan(
    backend: str, mode: str, scenario: Callable[..., Scenario], proxies: dict[str, FaultProxy], cli: Any
) -> None:
    """The catalog (and the backends read before it) answer, this one does not: a partial read is no plan."""
    case = scenario(f"read-{backend}-{mode}", list(KIND_OF.values()))
    proxies[SERVER_OF[backend]].set_mode(mode)
    code, out, err = cli(case.root, "plan", "--detailed-exitcode", env=case.env)
    assert code == 1, (out, err)
    assert f"backend '{backend}'" in err and "gave up after" in err, err
    assert "Traceback" not in err and "internal error" not in err
    plans = case.root / "plans"
    assert not (plans.exists() and any(plans.iterdir())), "no plan file may be written from a partial read"
    assert "will be" not in out, "no change may be shown from a partial read"


# 4. the kill switch --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["environment", "kfmops.yaml"])
def test_kill_switch_blocks_every_mutation_and_plan_still_works(
    where: str, make_workspace: Callable[..., Path], cli: Any, live_snapshot: Callable
) -> None:
    workspace = make_workspace(n=3)
    assert cli(workspace, "apply", "--auto-approve", env=QUIET)[0] == 0
    promote(workspace, 1.0, 1854)
    if where == "environment":
        env, source = {"KFMOPS_KILL_SWITCH": "INC-4411 storage incident"}, "KFMOPS_KILL_SWITCH"
    else:
        with (workspace / "kfmops.yaml").open("a", encoding="utf-8") as config:
            config.write('apply: {kill_switch: "INC-4411 storage incident"}\n')
        env, source = QUIET, "apply.kill_switch"
    before = live_snapshot(workspace)
    plan_file = workspace / "plans" / "red.json"
    code, out, err = cli(workspace, "plan", "--out", str(plan_file), "--detailed-exitcode", env=env)
    assert code == 2 and plan_file.is_file(), (out, err)
    mutations = [
        ("apply", str(plan_file)),
        ("apply", "--auto-approve"),
        ("rollback", "--last", "--auto-approve", "--auto-approve"),
        ("hotfix", "dataset.ds-000000", "--set", "version=v1", "--reason", "INC-4411"),
        ("recover",),
    ]
    with ThreadPoolExecutor(len(mutations)) as pool:  # each is refused before it takes the lock
        results = list(pool.map(lambda args: cli(workspace, *args, env=env), mutations))
    for args, (code, out, err) in zip(mutations, results, strict=True):
        assert code == 1, (args, out, err)
        assert "red state" in err and source in err and "INC-4411" in err and "did nothing" in err, (args, err)
    assert live_snapshot(workspace) == before
    assert not (workspace / "state" / "wal").exists() or not list((workspace / "state" / "wal").glob("*.jsonl"))


# 5. retries are counted ----------------------------------------------------------------------------------------------


def test_retries_are_counted_by_backend_and_error_class(
    scenario: Callable[..., Scenario], proxies: dict[str, FaultProxy], cli_process: Any
) -> None:
    """A plan rides out 1 s of Redis resetting every connection; metrics.jsonl then holds kfm.ops_retry_count
    points for backend cache and error class ConnectionError, and none for the backends that answered."""
    case = scenario("counted", list(KIND_OF.values()))
    code, out, err = finish(cli_process(case.root, "init", env=case.env))  # a plan of a workspace never
    assert code == 0, (out, err)  # initialized or applied writes nothing in it, telemetry included
    proxy = proxies["redis"]
    proxy.set_mode("cut")
    process = cli_process(case.root, "plan", env=case.env)
    deadline = time.monotonic() + 30
    while proxy.stats.resets == 0 and running(process) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(1.0)
    proxy.set_mode("pass")
    code, out, err = finish(process)
    assert code == 0, (out, err)
    counts = retry_counts(case.root, "plan")
    assert counts.get(("cache", "ConnectionError"), 0) >= 1, counts
    assert all(backend == "cache" for backend, _ in counts), counts
