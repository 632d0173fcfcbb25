"""The shared Redis lock against a real Redis server: a lease that a paused holder loses, fencing tokens that
only grow, and mutual exclusion among processes that fight for it.

Needs KFMOPS_TEST_REDIS_URL (scripts/servers/redis.sh start); every lock here has a name of its own.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from servers import delete_keys, redis_client, unique_tag

from kfmops.stores.lock import LockInfo
from kfmops.stores.redis_lock import RedisLock

pytestmark = pytest.mark.servers

CONNECT = """
import sys, time
from kfmops.stores.lock import LockInfo
from kfmops.stores.redis_lock import RedisLock
from kfmops.errors import LockHeld
from kfmops.providers.redis import connect
from kfmops.workspace import BackendConfig

client = connect(BackendConfig("shared", "redis", {"url_env": "KFMOPS_TEST_REDIS_URL"}))
"""

# Takes the lock, says so, waits for a line on stdin, then watches its lease for up to 10 s and releases.
HOLDER = (
    CONNECT
    + """
lock = RedisLock(client, sys.argv[1], float(sys.argv[2]))
held = lock.acquire(LockInfo.new("apply", None, lock.lease_seconds), 0)
print("held", held.fencing_token, held.id, flush=True)
sys.stdin.readline()
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        lock.check()
    except LockHeld as lost:
        print("lost:", lost, flush=True)
        break
    time.sleep(0.01)
lock.release(held)
print("released", flush=True)
"""
)

# Takes the lock `attempts` times (waiting with acquire(), or polling try_acquire() for the most
# contention) and writes (fencing token, entered, left) of each time it held it, in monotonic ns.
CONTENDER = (
    CONNECT
    + """
import json
name, out, attempts, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lock = RedisLock(client, name, 10)
held_times = []
for _ in range(attempts):
    info = LockInfo.new("apply", None, 10)
    if mode == "acquire":
        held = lock.acquire(info, 120)
    else:
        while (held := lock.try_acquire(info)) is None:
            time.sleep(0.001)
    entered = time.monotonic_ns()
    time.sleep(0.001)
    left = time.monotonic_ns()
    lock.release(held)
    held_times.append((held.fencing_token, entered, left))
with open(out, "w") as handle:
    json.dump(held_times, handle)
"""
)


@pytest.fixture
def lock_name(redis_url) -> Iterator[str]:
    """A lock name no other test uses; its keys are deleted afterwards."""
    name = unique_tag("kfmops-test-lock")
    yield name
    with redis_client(redis_url) as client:
        delete_keys(client, f"kfmops:lock:{name}")


def python(*args: str, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", *args], text=True, **options)


def test_fencing_tokens_grow_with_every_holder_and_a_held_lock_is_refused(redis_url, lock_name):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    first, second = RedisLock(client, lock_name, 5), RedisLock(client, lock_name, 5)
    tokens = []
    for lock in (first, second, first, second):
        with lock.held("apply", "plan-test", 0) as info:
            tokens.append(info.fencing_token)
            other = second if lock is first else first
            assert other.try_acquire(LockInfo.new("apply", None, 5)) is None
            status = other.status()
            assert (status.held, status.info.id, status.info.fencing_token) == (True, info.id, info.fencing_token)
            assert status.info.expires is not None
        assert first.status().held is False
    assert tokens == sorted(set(tokens)), tokens


@pytest.mark.parametrize("mode", ["acquire", "try_acquire"])
def test_no_two_processes_ever_hold_the_lock_at_once(redis_url, lock_name, tmp_path, mode):
    outputs = [tmp_path / f"contender-{i}.json" for i in range(8)]
    contenders = [python(CONTENDER, lock_name, str(out), "50", mode) for out in outputs]
    assert [process.wait(timeout=120) for process in contenders] == [0] * 8

    held = sorted(tuple(row) for out in outputs for row in json.loads(out.read_text()))
    assert len(held) == 8 * 50
    by_entry = sorted(held, key=lambda row: row[1])
    overlaps = [(a, b) for a, b in itertools.pairwise(by_entry) if b[1] <= a[2]]
    assert overlaps == [], "two holders at once"
    tokens = [token for token, _, _ in by_entry]
    assert all(a < b for a, b in itertools.pairwise(tokens)), "fencing tokens out of order"


def test_a_paused_holder_loses_its_lease_and_cannot_release_the_next_holders_lock(redis_url, lock_name):
    lease = 2.0
    holder = python(HOLDER, lock_name, str(lease), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = holder.stdout.readline().split()
        assert line[:1] == ["held"], line
        first_token, first_id = int(line[1]), line[2]
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        key = f"kfmops:lock:{lock_name}"

        time.sleep(1.5 * lease)  # longer than the lease: only the heartbeat keeps it
        assert json.loads(client.get(key))["id"] == first_id, "the heartbeat renews a live holder's lease"

        holder.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        while client.exists(key) and time.monotonic() - stopped < 10:
            time.sleep(0.01)
        expired = time.monotonic() - stopped
        assert not client.exists(key), "the lease of a paused holder expires"
        assert expired <= lease + 1.0, f"it lasted {expired:.2f}s after the last possible renewal"

        successor = RedisLock(client, lock_name, 30)
        taken = successor.acquire(LockInfo.new("apply", None, 30), 0)
        assert taken.fencing_token > first_token

        holder.send_signal(signal.SIGCONT)
        out, _ = holder.communicate("check\n", timeout=30)
        assert "lost: the Redis lock lease was lost" in out, out
        assert "released" in out
        assert successor.status().info.id == taken.id, "the old holder's release left the new holder's lock alone"
        successor.release(taken)
        assert not client.exists(key)
    finally:
        holder.kill()
        holder.wait()


REDIS_LOCKED = """\
  shared:
    type: redis
    url_env: KFMOPS_TEST_REDIS_URL
apply:
  lock: redis
  lock_backend: shared
  lock_lease: 5
"""


def test_apply_takes_the_redis_lock_records_its_fencing_token_and_exits_4_while_another_holds_it(
    make_workspace, cli, redis_url, live_snapshot
):
    workspace = make_workspace(n=2)
    config = workspace / "kfmops.yaml"
    config.write_text(config.read_text() + REDIS_LOCKED)
    assert cli(workspace, "init")[0] == 0  # mints the state lineage that names the lock
    lineage = json.loads((workspace / "state" / "state.json").read_text())["lineage"]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        code, out, err = cli(workspace, "apply", "--auto-approve")
        assert code == 0, (out, err)
        (path,) = (workspace / "state" / "wal" / "archive").glob("*.jsonl")
        token = json.loads(path.read_text().splitlines()[0])["fencing_token"]
        assert isinstance(token, int)

        lock = RedisLock(client, lineage, 5)
        with lock.held("apply", "plan-of-the-test", 0) as info:
            assert info.fencing_token > token
            status = json.loads(cli(workspace, "lock", "status", "--json")[1])
            assert (status["held"], status["info"]["id"], status["info"]["plan_id"]) == (
                True,
                info.id,
                "plan-of-the-test",
            )
            assert status["info"]["expires"] is not None
            before = live_snapshot(workspace)
            code, out, err = cli(workspace, "rollback", "--last", "--auto-approve", "--auto-approve")
            assert code == 4, (code, out, err)
            assert f"lock {info.id} held by {info.who}" in err
            assert live_snapshot(workspace) == before
        assert json.loads(cli(workspace, "lock", "status", "--json")[1])["held"] is False
    finally:
        delete_keys(client, f"kfmops:lock:{lineage}")
