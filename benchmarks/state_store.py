"""The folder store and the postgres store side by side: a no-op plan and a changed apply at N datasets.

    source ~/.cache/kfmops-servers/run/env.sh
    python -m benchmarks.state_store [--sizes 2500 10000] [--fractions 0.1] [--small 0.01] [--runs 3]

For each size, one generated workspace (4 references per dataset, local backend) is applied once, then copied
twice: one copy keeps its `state/` folder, the other's state is migrated (`stores.transfer.copy_stores`) to the
PostgreSQL of KFMOPS_TEST_POSTGRES_DSN under a fresh key. On each copy, with the defaults (fsync on, every
commit durable):

- `kfmops plan` with no changes, the console script end to end (its wall time);
- an apply of a fraction of the datasets promoted, through the library (`engine.apply`), with the time spent in
  the store (state, history, WAL, ledger: every store method, timed) and in saving the state shown beside the
  total; each run is rolled back untimed before the next, so every run applies the same plan to the same state.

Medians of --runs, the ratio postgres/folder, and the load average before each measurement are printed. The
largest size also applies --small (1%) of its datasets on postgres: state work of O(K) rows should scale with K.
The key is removed from the database at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.generate import generate, promote
from kfmops.engine.apply import apply
from kfmops.engine.plan import PlanRequest, plan
from kfmops.engine.rollback import rollback_plan
from kfmops.engine.session import Session
from kfmops.stores import folder, ledger_file, postgres, postgres_chains, wal
from kfmops.stores.transfer import copy_stores
from kfmops.workspace import load_workspace

KFMOPS = str(Path(sys.executable).parent / "kfmops")
DSN = "KFMOPS_STATE_DSN"
# Every persisting class of both stores; each public method call is timed as state work.
STORE_CLASSES = (
    folder.FolderStateStore,
    folder.FolderHistory,
    folder.FolderWal,
    wal.WalWriter,
    ledger_file.FolderLedger,
    postgres.PostgresState,
    postgres.PostgresHistory,
    postgres_chains.PostgresWal,
    postgres_chains.PostgresWalLog,
    postgres_chains.PostgresLedger,
)


@contextmanager
def store_time() -> Iterator[dict[str, float]]:
    """Time every call of a store method while the block runs; yields {"store": seconds in all of them, "save":
    seconds in StateStore.save} (filled on exit)."""
    spent = {"store": 0.0, "save": 0.0}
    depth = [0]
    originals: list[tuple[type, str, Any]] = []

    def timed(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                seconds = time.perf_counter() - start
                if depth[0] == 0:  # a store method calling another counts once
                    spent["store"] += seconds
                if method.__name__ == "save":
                    spent["save"] += seconds

        return call

    for cls in STORE_CLASSES:
        for name, method in list(vars(cls).items()):
            if callable(method) and not name.startswith("_"):
                originals.append((cls, name, method))
                setattr(cls, name, timed(method))
    try:
        yield spent
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def use_postgres(workspace: Path, key: str) -> None:
    config = workspace / "kfmops.yaml"
    text = config.read_text().replace("state: state\n", f"state:\n  backend: postgres\n  dsn_env: {DSN}\n")
    config.write_text(text.replace(f"  dsn_env: {DSN}\n", f"  dsn_env: {DSN}\n  workspace: {key}\n"))


def set_fsync(workspace: Path, durable: bool) -> None:
    config = workspace / "kfmops.yaml"
    text = config.read_text().replace("apply:\n  fsync: false\n", "")
    config.write_text(text if durable else text + "apply:\n  fsync: false\n")


def timed_plan(workspace: Path) -> float:
    start = time.perf_counter()
    out = workspace / "noop.json"
    code = subprocess.run(
        [KFMOPS, "-C", str(workspace), "plan", "--detailed-exitcode", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - start
    if code.returncode != 0:
        raise SystemExit(f"plan in {workspace} exited {code.returncode}: {code.stderr[-500:]}")
    return seconds


def timed_apply(workspace: Path, fraction: float, seed: int) -> tuple[float, float, float, int]:
    """(wall seconds, seconds in store methods, seconds saving the state, changed references) of applying
    `fraction` promoted; then undone."""
    desired = workspace / "desired"
    kept = workspace / "desired.kept"
    shutil.copytree(desired, kept)
    try:
        promote(workspace, fraction, seed)
        with Session(load_workspace(workspace), "plan", read_only=True) as session:
            promotion = plan(session, PlanRequest())
        os.sync()
        with Session(load_workspace(workspace), "apply") as session, store_time() as spent:
            start = time.perf_counter()
            result = apply(session, promotion)
            wall = time.perf_counter() - start
        assert result.outcome == "committed", result
        with Session(load_workspace(workspace), "rollback") as session:
            apply(session, rollback_plan(session, result.id)[0])
    finally:
        shutil.rmtree(desired)
        kept.rename(desired)
    return wall, spent["store"], spent["save"], len(promotion.mutations)


def median(values: list[float]) -> float:
    return statistics.median(values)


def measure(workspaces: dict[str, Path], runs: int, fraction: float, seed: int, plans: bool) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for store, workspace in workspaces.items():
        if plans:
            print(f"  {store}: no-op plan x{runs} ({load()})", flush=True)
            found[f"plan {store}"] = median([timed_plan(workspace) for _ in range(runs)])
        print(f"  {store}: apply of {fraction:.0%} x{runs} ({load()})", flush=True)
        applied = [timed_apply(workspace, fraction, seed) for _ in range(runs)]
        found[f"apply {store}"] = median([a[0] for a in applied])
        found[f"store {store}"] = median([a[1] for a in applied])
        found[f"save {store}"] = median([a[2] for a in applied])
        found["changed"] = applied[0][3]
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 10000], help="datasets (4 references each)")
    parser.add_argument("--fraction", type=float, default=0.1, help="datasets promoted in the apply (default 0.1)")
    parser.add_argument("--small", type=float, default=0.01, help="the smaller apply at the largest size")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1854)
    parser.add_argument("--out", type=Path, help="folder for the workspaces (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    dsn = os.environ.get("KFMOPS_TEST_POSTGRES_DSN")
    if not dsn:
        raise SystemExit("KFMOPS_TEST_POSTGRES_DSN is not set: scripts/servers/postgres.sh start, then source env.sh")
    os.environ[DSN] = dsn
    key = f"bench-{uuid.uuid4().hex[:8]}"
    root = args.out or Path(tempfile.mkdtemp(prefix="kfmops-state-bench-"))
    rows = []
    try:
        for size in args.sizes:
            print(f"{size} datasets ({size * 4} references): setting up ({load()})", flush=True)
            base = root / f"base-{size}"
            generate(base, size, 3, args.seed)
            set_fsync(base, durable=False)  # setting up is not measured
            with Session(load_workspace(base), "apply") as session:
                apply(session, plan(session, PlanRequest()))
            set_fsync(base, durable=True)
            workspaces = {"folder": root / f"folder-{size}", "postgres": root / f"postgres-{size}"}
            for copy in workspaces.values():
                shutil.copytree(base, copy)
            use_postgres(workspaces["postgres"], f"{key}-{size}")
            with (
                Session(load_workspace(workspaces["folder"]), "migrate") as source,
                Session(load_workspace(workspaces["postgres"]), "migrate") as target,
            ):
                copy_stores(source.stores, target.stores)
            found = measure(workspaces, args.runs, args.fraction, args.seed, plans=True)
            rows.append((size, args.fraction, found))
            if size == max(args.sizes) and args.small:
                small = measure({"postgres": workspaces["postgres"]}, args.runs, args.small, args.seed, plans=False)
                rows.append((size, args.small, small))
        report(rows)
    finally:
        forget(dsn, [f"{key}-{size}" for size in args.sizes])
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)


def forget(dsn: str, keys: list[str]) -> None:
    """Remove the benchmark's workspaces from every kfmops table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'workspace' "
            "AND table_name LIKE 'kfmops%%'"
        ).fetchall()
        for (table,) in tables:
            conn.execute(f"DELETE FROM {table} WHERE workspace = ANY(%s)", (keys,))
        conn.execute("DELETE FROM kfmops_locks WHERE name = ANY(%s)", (keys,))


def cell(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}s" if value is not None else "-"


def ratio(found: dict[str, Any], name: str) -> str:
    folder_value, pg_value = found.get(f"{name} folder"), found.get(f"{name} postgres")
    return f"{pg_value / folder_value:.2f}x" if folder_value and pg_value else "-"


def report(rows: list[tuple[int, float, dict[str, Any]]]) -> None:
    header = ("datasets", "changed refs", "plan folder", "plan pg", "pg/folder", "apply folder", "apply pg",
              "pg/folder", "store folder", "store pg", "save folder", "save pg")  # fmt: skip
    lines = [header]
    for size, _fraction, found in rows:
        lines.append(
            (
                str(size),
                str(found["changed"]),
                cell(found.get("plan folder")),
                cell(found.get("plan postgres")),
                ratio(found, "plan"),
                cell(found.get("apply folder")),
                cell(found.get("apply postgres")),
                ratio(found, "apply"),
                cell(found.get("store folder"), 3),
                cell(found.get("store postgres"), 3),
                cell(found.get("save folder"), 3),
                cell(found.get("save postgres"), 3),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"\nmedians of the runs ({load()}); during the apply, store = time in every store method (state, history,")
    print("WAL, ledger; BEGIN and history records hold every change of the plan, no-ops included), save = in")
    print("StateStore.save (postgres: the rows of the changed references; folder: the whole state file):")
    for line in lines:
        print("  ".join(value.rjust(width) for value, width in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
