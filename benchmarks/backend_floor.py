"""kfmops against each backend's floor, in the same run: apply and plan as ratios of the own client's best.

    source ~/.cache/kfmops-servers/run/env.sh
    python -m benchmarks.backend_floor --refs 10000 [--batch 1000] [--runs 3] [--backends neo4j,...]
        [--record benchmarks/results/backend_floor.jsonl]

For each backend and each run, the targets of N references are created twice with the backend's own
client (benchmarks.roundtrips.Targets), under two fresh tags, and not timed. Then:

- kfmops apply: the engine's batch loop (engine.runner.BatchRunner) over N created references, through
  the providers of a Session (retry layer included): per batch read, compare-and-swap, WAL INTENT
  (fsynced), write, read back, WAL DONE. `engine.apply` runs a plan-shaped pre-check (the plan column)
  before this loop.
- kfmops plan: what `engine.plan` asks the providers: read_live of the N references and missing_targets
  of their values, through a read-only Session.
- The session is opened (workspace, stores, telemetry) before the clock starts, as the floors' clients
  are created inside theirs: both sides pay for connecting to the backend.
- floor apply / floor read: benchmarks.floors, the same N references under the other tag.

Which of kfmops and the floor goes first alternates between runs. Printed: the median of the runs, the
ratios kfmops / floor, and os.getloadavg() before and after; `--record` appends them as one JSON line
with the git commit and the date, so that a regression shows as a changed ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.floors import Floor
from benchmarks.roundtrips import Targets, reference, unreachable, value
from kfmops.engine.runner import BatchRunner
from kfmops.engine.session import Session
from kfmops.io.clock import new_id, now
from kfmops.plans.model import Action, Change, Operation, StateRef
from kfmops.plans.transaction import Transaction
from kfmops.workspace import load_workspace

SERVERS = ("neo4j", "elasticsearch", "redis", "stac")
TIMES = ("kfmops_apply", "floor_apply", "kfmops_plan", "floor_read")
LIMITS = {"apply": 2.0, "plan": 1.5}


def workspace_text(batch: int) -> str:
    """The benchmark workspace of roundtrips with the batch size set and the WAL fsynced (the default)."""
    from benchmarks.roundtrips import WORKSPACE

    return WORKSPACE.replace("apply: {fsync: false}", f"apply: {{fsync: true, batch_size: {batch}}}")


def timed(step: Callable[[], Any]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def kfmops_apply(workspace: Path, backend: str, tag: str, n: int) -> float:
    """Seconds of the engine's apply loop (engine.apply.run's BatchRunner) for N created references. The
    transaction is built and the session opened before the clock starts; the backend's connection after."""
    changes = tuple(
        Change(reference(backend, tag, i), Action.CREATE, None, value(backend, tag, i), "benchmark") for i in range(n)
    )
    transaction = Transaction(
        new_id("tx"), new_id("plan"), Operation.APPLY, "benchmark", now(), StateRef("benchmark", 0), changes
    )
    with Session(load_workspace(workspace), "apply") as session:
        batches = transaction.batches(session.workspace.apply_order, session.workspace.batch_size)
        started = time.perf_counter()
        log = session.stores.wal.begin(transaction.id)
        try:
            BatchRunner(session, log, transaction, lambda: None).run(batches, n)
        finally:
            log.close()
        return time.perf_counter() - started


def kfmops_plan(workspace: Path, backend: str, tag: str, n: int) -> float:
    """Seconds of the provider calls of engine.plan: live values, then the targets of the desired values."""
    references = [reference(backend, tag, i) for i in range(n)]
    items = [(r, value(backend, tag, i)) for i, r in enumerate(references)]
    with Session(load_workspace(workspace), "plan", read_only=True) as session:
        started = time.perf_counter()
        live = session.providers.read_live(references)
        missing = session.providers.missing_targets(items)
        seconds = time.perf_counter() - started
    wrong = sum(1 for r, v in items if live.get(r.address) != v)
    if wrong or missing:
        raise RuntimeError(f"{backend}: plan read {wrong} wrong values and {len(missing)} missing targets")
    return seconds


def run_once(backend: str, n: int, batch: int, folder: Path, floor_first: bool) -> dict[str, float]:
    """The four times of one run on one backend, each on freshly seeded references."""
    workspace = folder / f"{backend}-{uuid.uuid4().hex[:6]}"
    workspace.mkdir()
    (workspace / "kfmops.yaml").write_text(workspace_text(batch), encoding="utf-8")
    mine, theirs = f"b{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    targets = [Targets(backend, workspace, mine), Targets(backend, workspace, theirs)]
    floor = Floor(backend, workspace, theirs, n, batch)
    times: dict[str, float] = {}
    try:
        with Session(load_workspace(workspace), "apply") as session:
            session.providers.get(backend)  # the local kinds of provider create their folders first
        for target in targets:
            target.seed(n)
        floor_steps = {"floor_apply": floor.write, "floor_read": lambda: found.append(floor.read())}
        found: list[int] = []
        for kfmops_name, measure_kfmops, floor_name in (
            ("kfmops_apply", kfmops_apply, "floor_apply"),
            ("kfmops_plan", kfmops_plan, "floor_read"),
        ):
            if floor_first:
                times[floor_name] = timed(floor_steps[floor_name])
            times[kfmops_name] = measure_kfmops(workspace, backend, mine, n)
            if not floor_first:
                times[floor_name] = timed(floor_steps[floor_name])
        if found != [n]:
            raise RuntimeError(f"{backend}: the floor read {found} of {n} references back")
        return times
    finally:
        floor.close()
        for target in targets:
            target.cleanup()


def measure(backends: list[str], n: int, batch: int, runs: int) -> dict[str, Any]:
    """{backend: {"runs": [...], "median": {...}, "ratio": {...}}, "load": [...]} for every backend measured."""
    result: dict[str, Any] = {"refs": n, "batch": batch, "runs": runs, "backends": {}, "skipped": {}}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="kfmops-floor-") as folder:
        for backend in backends:
            if (why := unreachable(backend)) is not None:
                result["skipped"][backend] = why
                continue
            samples = []
            for number in range(runs):
                samples.append(run_once(backend, n, batch, Path(folder), floor_first=number % 2 == 1))
                load.append(os.getloadavg()[0])
            median = {key: statistics.median(sample[key] for sample in samples) for key in TIMES}
            result["backends"][backend] = {
                "runs": samples,
                "median": median,
                "ratio": {
                    "apply": median["kfmops_apply"] / median["floor_apply"],
                    "plan": median["kfmops_plan"] / median["floor_read"],
                },
            }
    result["load"] = {"min": min(load), "max": max(load), "samples": load}
    return result


def table(result: dict[str, Any]) -> str:
    header = ("backend", "kfmops apply s", "floor write s", "apply x", "kfmops plan s", "floor read s", "plan x")
    lines = [header]
    for backend, entry in result["backends"].items():
        median, ratio = entry["median"], entry["ratio"]
        lines.append(
            (
                backend,
                f"{median['kfmops_apply']:.2f}",
                f"{median['floor_apply']:.2f}",
                f"{ratio['apply']:.2f}" + ("" if ratio["apply"] <= LIMITS["apply"] else " !"),
                f"{median['kfmops_plan']:.2f}",
                f"{median['floor_read']:.2f}",
                f"{ratio['plan']:.2f}" + ("" if ratio["plan"] <= LIMITS["plan"] else " !"),
            )
        )
    lines += [(backend, "-", "-", "-", "-", "-", f"skipped: {why}") for backend, why in result["skipped"].items()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |" for line in lines]
    rendered.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    load = result["load"]
    intro = (
        f"{result['refs']:,} references, batches of {result['batch']:,}, median of {result['runs']} runs; "
        f"load {load['min']:.2f}-{load['max']:.2f} (1-minute os.getloadavg(), {os.cpu_count()} cores); "
        f"limits: apply ≤ {LIMITS['apply']}x, plan ≤ {LIMITS['plan']}x (! = over)"
    )
    return intro + "\n" + "\n".join(rendered)


def commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=int, default=10000, help="references per backend (default 10000)")
    parser.add_argument("--batch", type=int, default=1000, help="references per batch (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per backend; the median is shown (default 3)")
    parser.add_argument("--backends", default=",".join(SERVERS), help=f"comma-separated (default {','.join(SERVERS)})")
    parser.add_argument("--record", type=Path, help="append the figures as one JSON line to this file")
    parser.add_argument("--label", default="", help="a note recorded with the figures (e.g. before, after)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.backends.split(",")) - set(SERVERS))
    if unknown:
        parser.error(f"unknown backends: {', '.join(unknown)}")
    result = measure(args.backends.split(","), args.refs, args.batch, args.runs)
    result.update(commit=commit(), date=datetime.now(UTC).isoformat(timespec="seconds"), label=args.label)
    result["table"] = table(result)
    print(result["table"])
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        with args.record.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(result, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    main()
