"""Does an apply cost what it changes? A 1 % and a 10 % `kfmops apply PLAN` of one workspace, side by side.

    python -m benchmarks.change_scaling --datasets 10000 [--runs 3] [--small 0.01 --large 0.1] [--record FILE --label X]

Generates a workspace of N datasets in a git repository and applies it once (setup, not timed). Then, for
each run, alternately for the small and the large fraction: promote that fraction of the datasets, commit,
`kfmops plan --out`, and time `kfmops apply PLAN` (WAL fsynced, the plan checked against its commit). The
plans are signed with a KFMOPS_PLAN_KEY of the benchmark's own, as CI would sign them. Prints the medians
(wall, CPU, peak RSS) of each fraction, their ratios and the load; `--record` appends them as one JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.compare import KFMOPS, Run, child_environment, load, measure
from benchmarks.generate import generate, promote


def git(workspace: Path, *args: str) -> None:
    command = ["git", "-c", "user.email=bench@kfm", "-c", "user.name=bench", *args]
    subprocess.run(command, cwd=workspace, check=True, capture_output=True)


def applied(workspace: Path, datasets: int, env: dict[str, str]) -> None:
    generate(workspace, datasets, 3, 1854)
    git(workspace, "init", "-q")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-qm", "generated")
    run = measure([KFMOPS, "-C", str(workspace), "apply", "--auto-approve"], (0,), env)
    print(f"  setup: applied {datasets * 4} references in {run.wall:.1f}s", flush=True)


def promoted_apply(workspace: Path, fraction: float, seed: int, env: dict[str, str]) -> tuple[Run, int]:
    """Promote `fraction` of the datasets, commit, plan; the timed apply of that plan and its references moved."""
    moved = promote(workspace, fraction, seed)
    git(workspace, "commit", "-qam", f"promote {fraction}")
    plan = workspace / "plans" / "change.plan"
    measure([KFMOPS, "-C", str(workspace), "plan", "--out", str(plan)], (0,), env)
    run = measure([KFMOPS, "-C", str(workspace), "apply", str(plan)], (0,), env)
    return run, moved * 4


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small", type=float, default=0.01)
    parser.add_argument("--large", type=float, default=0.1)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--label", default="", help="what was measured (a commit, before/after), kept in the record")
    args = parser.parse_args(argv)
    env = child_environment() | {"KFMOPS_PLAN_KEY": f"bench-{random.getrandbits(64):x}"}
    started = load()
    runs: dict[float, list[tuple[Run, int]]] = {args.small: [], args.large: []}
    with tempfile.TemporaryDirectory(prefix="kfmops-scaling-") as folder:
        workspace = Path(folder) / "ws"
        applied(workspace, args.datasets, env)
        for number in range(args.runs):
            for fraction in (args.small, args.large):
                run, refs = promoted_apply(workspace, fraction, 1000 * number + int(fraction * 1000), env)
                runs[fraction].append((run, refs))
                print(f"  run {number + 1}: {fraction:.0%} ({refs} references) {run.wall:.2f}s wall", flush=True)
        medians: dict[float, dict[str, float]] = {
            fraction: {
                "references": statistics.median(refs for _, refs in measured),
                "wall": statistics.median(run.wall for run, _ in measured),
                "cpu": statistics.median(run.cpu for run, _ in measured),
                "rss_mib": max(run.rss_mib for run, _ in measured),
            }
            for fraction, measured in runs.items()
        }
        small, large = medians[args.small], medians[args.large]
        ratio = {what: small[what] / large[what] for what in ("wall", "cpu", "rss_mib")}
        print(f"\napply PLAN of {args.datasets} datasets ({args.datasets * 4} references), median of {args.runs}")
        print("| change | references | wall s | CPU s | peak RSS MiB |\n|---|---:|---:|---:|---:|")
        for fraction, row in medians.items():
            moved, wall, cpu, rss = row["references"], row["wall"], row["cpu"], row["rss_mib"]
            print(f"| {fraction:.0%} | {moved:.0f} | {wall:.2f} | {cpu:.2f} | {rss:.0f} |")
        print(f"| ratio | | {ratio['wall']:.2f} | {ratio['cpu']:.2f} | {ratio['rss_mib']:.2f} |")
        print(f"load {started} before, {load()} after (1/5/15-minute, {os.cpu_count()} cores)")
        result = {"datasets": args.datasets, "runs": args.runs, "medians": medians, "ratio": ratio}
        if args.record:
            now = datetime.datetime.now(datetime.UTC).isoformat()
            record = result | {"label": args.label, "date": now, "load": [started, load()]}
            with args.record.open("a", encoding="utf-8") as out:
                out.write(json.dumps({**record, "medians": {str(k): v for k, v in medians.items()}}) + "\n")
    return result


if __name__ == "__main__":
    main()
