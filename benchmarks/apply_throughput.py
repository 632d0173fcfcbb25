"""Apply throughput (references per second) with the WAL fsynced, and with `apply: {fsync: false}`.

    python -m benchmarks.apply_throughput --datasets 2500

Generates a workspace of N datasets (4 references each: STAC, graph, search, cache, all in the local
backend), applies it, promotes every dataset's version and makes one plan of the 4N changed references.
That plan is applied to two copies of the workspace: one with the default (every WAL record, state file,
STAC file and SQLite commit fsynced) and one with `apply: {fsync: false}`. Each apply is timed around
the library's Engine.apply (lock, checks, WAL-logged batches, state, history, governance records); both
rates and their ratio are printed. The page cache is flushed (sync) before each timed apply.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.generate import generate, promote
from kfmops.engine.apply import apply
from kfmops.engine.plan import PlanRequest, plan
from kfmops.engine.session import Session
from kfmops.plans import planfile
from kfmops.plans.model import Plan
from kfmops.stores import wal
from kfmops.workspace import load_workspace

NO_FSYNC = "apply:\n  fsync: false\n"


def set_fsync(workspace: Path, durable: bool) -> None:
    """Write kfmops.yaml with the default fsync (on), or with `apply: {fsync: false}`."""
    config = workspace / "kfmops.yaml"
    text = config.read_text().replace(NO_FSYNC, "")
    config.write_text(text if durable else text + NO_FSYNC)


def plan_everything(workspace: Path) -> Plan:
    with Session(load_workspace(workspace), "plan", read_only=True) as session:
        return plan(session, PlanRequest())


def timed_apply(workspace: Path, plan_path: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, WAL records) of applying the plan file in `workspace`."""
    os.sync()
    with Session(load_workspace(workspace), "apply") as session:
        saved = planfile.read(plan_path)
        wall, cpu = time.perf_counter(), time.process_time()
        result = apply(session, saved)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert result.outcome == "committed", result
    archived = workspace / "state" / "wal" / "archive" / f"{result.id}.jsonl"
    return wall, cpu, len(wal.read_wal(archived))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=2500, help="datasets (4 references each; default 2500)")
    parser.add_argument("--out", type=Path, help="folder for the workspaces (default: a temporary one, removed)")
    parser.add_argument("--seed", type=int, default=1854)
    args = parser.parse_args(argv)
    folder = args.out or Path(tempfile.mkdtemp(prefix="kfmops-apply-bench-"))
    try:
        base = folder / "base"
        generate(base, args.datasets, 3, args.seed)
        set_fsync(base, durable=False)  # setting up is not what is measured
        with Session(load_workspace(base), "apply") as session:
            apply(session, plan(session, PlanRequest()))
        promote(base, 1.0, args.seed)
        promotion = plan_everything(base)
        changed = len(promotion.mutations)
        print(
            f"plan: {changed} changed references ({promotion.summary()}), batch size {load_workspace(base).batch_size}"
        )
        rates = {}
        for durable in (True, False):
            copy = folder / ("fsync-on" if durable else "fsync-off")
            shutil.copytree(base, copy)
            set_fsync(copy, durable)
            plan_path = copy / "plan.json"
            planfile.write(promotion, plan_path)
            wall, cpu, records = timed_apply(copy, plan_path)
            rates[durable] = changed / wall
            print(
                f"fsync {'on ' if durable else 'off'}: {changed} references in {wall:.2f}s wall ({cpu:.2f}s CPU) "
                f"= {rates[durable]:,.0f} references/s; {records} WAL records"
            )
        print(f"ratio fsync off / fsync on: {rates[False] / rates[True]:.1f}x")
    finally:
        if args.out is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
