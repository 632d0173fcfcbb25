"""Many runners on one postgres store, and runners or servers dying: the console script in separate clones of one
data repository, PostgreSQL's own advisory locks, and a private PostgreSQL stopped in the middle of an apply.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pgstate import DSN_ENV, clone, connect, data_repository, drop, open_wals
from servers import unavailable, unique_tag
from test_recover import disagreements

from benchmarks.generate import promote

SEED = 1854
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "servers" / "postgres.sh"


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err
    return out


def json_of(cli: Any, workspace: Path, *args: str) -> Any:
    return json.loads(succeeded(cli(workspace, *args)))


@pytest.fixture
def key(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(DSN_ENV, postgres_dsn)
    name = unique_tag("ws")
    yield name
    drop(postgres_dsn, name)


def promoted_clones(tmp_path: Path, key: str, cli: Any, count: int, **apply: Any) -> tuple[list[Path], Path]:
    """`count` clones of a data repository whose first apply is done and whose pointers a pull request moves."""
    origin, live = data_repository(tmp_path, key, n=6, **apply)
    succeeded(cli(origin, "apply", "--auto-approve"))
    clones = [origin] + [clone(origin, tmp_path / f"clone-{i}") for i in range(1, count)]
    for workspace in clones:
        promote(workspace, 1.0, SEED)
    return clones, live


@pytest.mark.slow
def test_eight_clones_applying_at_once_one_applies_and_the_others_exit_4_or_5(key, tmp_path, cli, cli_process):
    clones, _ = promoted_clones(tmp_path, key, cli, 8)
    plans = []
    for workspace in clones:
        succeeded(cli(workspace, "plan", "--out", str(workspace / "plan.json")))
        plans.append(json.loads((workspace / "plan.json").read_text())["plan_id"])
    racing = [cli_process(w, "apply", str(w / "plan.json")) for w in clones]
    results = [process.finish() for process in racing]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and set(codes[1:]) <= {4, 5} and codes.count(0) == 1, results
    for code, _, err in results:
        assert code == 0 or ("workspace is locked: lock" if code == 4 else "Make a new plan") in err, err
    committed = [e["plan_id"] for e in json_of(cli, clones[3], "history", "--json") if e["outcome"] == "committed"]
    assert len(set(committed) & set(plans)) == 1
    assert json_of(cli, clones[5], "lock", "status", "--json")["held"] is False


WORKER = """
import json, sys, time
from kfmops.stores.lock import LockInfo
from kfmops.stores.postgres_db import Database
from kfmops.stores.postgres_lock import PostgresLock

key, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
database = Database({"dsn_env": "KFMOPS_STATE_DSN", "workspace": key})
lock = PostgresLock(database)
held = []
for _ in range(rounds):
    info = lock.acquire(LockInfo.new("fencing test", None), 300)
    start = time.monotonic_ns()
    with database.writing("a write under the lock") as cursor:  # passes the fencing guard
        cursor.execute("SELECT 1")
    lock.check()
    end = time.monotonic_ns()
    lock.release(info)
    held.append([info.fencing_token, start, end])
with open(out, "w") as handle:
    json.dump(held, handle)
"""


@pytest.mark.slow
def test_fencing_tokens_strictly_increase_across_8_processes_taking_the_lock_50_times_each(key, tmp_path):
    outputs = [tmp_path / f"worker-{i}.json" for i in range(8)]
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, key, "50", str(out)], cwd=ROOT, stderr=subprocess.PIPE)
        for out in outputs
    ]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read() if worker.stderr else ""
    rounds = sorted((start, end, token) for out in outputs for token, start, end in json.loads(out.read_text()))
    tokens = [token for _, _, token in rounds]
    assert len(rounds) == 400
    assert tokens == sorted(set(tokens)), "in the order holders got the lock, every token is new and larger"
    overlaps = [(a, b) for a, b in itertools.pairwise(rounds) if b[0] <= a[1]]
    assert overlaps == [], "no two holders at once"


def test_an_apply_killed_holding_the_lock_leaves_no_stuck_lock_and_any_clone_recovers_it(
    key, tmp_path, cli, live_snapshot
):
    (a, b, c), live = promoted_clones(tmp_path, key, cli, 3, fsync=False)
    plan = str(a / "plan.json")
    succeeded(cli(a, "plan", "--out", plan))
    before = live_snapshot(live)
    managed_before = json_of(cli, b, "state", "list", "--json")
    code, out, err = cli(a, "apply", plan, env={"KFMOPS_CRASH_AT": "write:1"})
    assert code == -signal.SIGKILL, (code, out, err)
    at_crash = live_snapshot(live)
    assert at_crash != before, "the killed apply had written something"

    code, out, err = cli(b, "apply", plan, "--lock-timeout", "10")
    assert code == 6, (code, out, err)
    assert "kfmops recover" in err
    assert live_snapshot(live) == at_crash
    assert "is back at its value before the apply" in succeeded(cli(c, "recover"))
    assert live_snapshot(live) == before
    assert json_of(cli, a, "state", "list", "--json")["resources"] == managed_before["resources"]
    assert open_wals(os.environ[DSN_ENV], key) == {}
    assert json_of(cli, b, "lock", "status", "--json")["info"] is None
    assert "Apply complete!" in succeeded(cli(b, "apply", "--auto-approve"))


# A private PostgreSQL, stopped in the middle of an apply ----------------------------------------------


@dataclass(frozen=True)
class Private:
    run: Path
    env: dict[str, str]
    dsn: str

    def pid(self) -> int:
        return int((self.run / "postgres" / "postgres.pid").read_text().strip())

    def start(self, *, keep: bool) -> None:
        env = {**self.env, **({"KFMOPS_POSTGRES_KEEP_DATA": "1"} if keep else {})}
        done = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
        if done.returncode:
            unavailable(f"scripts/servers/postgres.sh could not start a private server: {done.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def private_server(postgres_dsn: str) -> Iterator[Private]:
    """A PostgreSQL of this test's own (scripts/servers/postgres.sh: its own data and port), free to stop.

    Its folder is not under pytest's temporary folders: every pytest run chmods those, which resets the ACL
    that lets the server's user reach its data."""
    run, port = Path(tempfile.mkdtemp(prefix="kfmops-postgres-")), free_port()
    env = {**os.environ, "KFMOPS_SERVERS_RUN": str(run), "KFMOPS_POSTGRES_PORT": str(port)}
    server = Private(run, env, f"postgresql://kfmops:kfmops-test@127.0.0.1:{port}/kfmops")
    try:
        server.start(keep=False)
        yield server
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(run, ignore_errors=True)


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


def gone(pids: list[int], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_stopping_postgresql_mid_apply_leaves_nothing_half_changed(
    stop, private_server, tmp_path, cli, cli_process, live_snapshot, monkeypatch
):
    monkeypatch.setenv(DSN_ENV, private_server.dsn)
    workspace, live = data_repository(tmp_path, "kansas-prod", n=60, batch_size=10)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    promote(workspace, 1.0, SEED)
    plan = str(workspace / "plan.json")
    succeeded(cli(workspace, "plan", "--out", plan))
    before = live_snapshot(live)

    applying = cli_process(workspace, "apply", plan)
    with connect(private_server.dsn) as conn:
        while (
            applying.running()
            and not conn.execute(
                "SELECT 1 FROM kfmops_wal_records r JOIN kfmops_wal_logs l USING (workspace, apply_id) "
                "WHERE NOT l.archived AND r.record->>'type' = 'DONE'"
            ).fetchall()
        ):
            time.sleep(0.005)
    assert applying.running(), applying.finish()
    postmaster = private_server.pid()
    backends = children(postmaster)
    os.kill(postmaster, stop)
    code, out, err = applying.finish(timeout=180)
    assert gone([postmaster, *backends]), "the server did not stop"
    private_server.start(keep=True)

    assert code in (0, 1, 6), (code, out, err)
    assert "Traceback" not in out + err
    if code:
        assert "postgres state store kfmops@127.0.0.1" in err, err
    pending = open_wals(private_server.dsn, "kansas-prod")
    committed = code == 0 or any(records[-1]["type"] == "COMMIT" for records in pending.values())
    if pending and not committed:
        code, out, err = cli(workspace, "apply", plan)
        assert code == 6, (code, out, err)
        assert "is back at its value before the apply" in succeeded(cli(workspace, "recover"))
    else:  # settles a committed apply whose bookkeeping the stop cut short; nothing to recover
        assert "nothing to recover" in succeeded(cli(workspace, "recover"))
    assert open_wals(private_server.dsn, "kansas-prod") == {}
    live_after = live_snapshot(live)
    assert (live_after != before) == committed, "an apply that did not commit is undone, one that did is whole"
    assert disagreements(json_of(cli, workspace, "state", "list", "--json"), live_after) == []
