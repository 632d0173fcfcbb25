"""Time `kfmops plan` with no changes on a generated workspace of N datasets (local backend).

    python -m benchmarks.plan_time --datasets 10000 [--runs 3]

Generates the workspace, applies it once, then runs the real console script `kfmops plan` N times
and prints the wall and CPU time of each run and the median. Also prints the time of a plan after
promoting 10% of the pointers (with changes).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.generate import generate, promote

KFMOPS = str(Path(sys.executable).parent / "kfmops")


def timed(*args: str) -> tuple[float, float, int]:
    """(wall seconds, child CPU seconds, exit code) of one kfmops run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    code = subprocess.run([KFMOPS, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="workspace folder (default: a temporary one)")
    args = parser.parse_args(argv)
    folder = args.out or Path(tempfile.mkdtemp(prefix="kfmops-plan-bench-"))
    generate(folder, args.datasets, 3, 1854)
    wall, cpu, code = timed("-C", str(folder), "apply", "--auto-approve")
    print(f"initial apply of {args.datasets * 4} references: {wall:.1f}s wall, {cpu:.1f}s CPU (exit {code})")
    runs = []
    for run in range(args.runs):
        wall, cpu, code = timed("-C", str(folder), "plan", "--detailed-exitcode", "--out", str(folder / "p.json"))
        runs.append(wall)
        print(f"plan, no changes, run {run + 1}: {wall:.2f}s wall, {cpu:.2f}s CPU (exit {code}, expect 0)")
    print(
        f"median plan (no changes) over {args.datasets} datasets / {args.datasets * 4} references: "
        f"{statistics.median(runs):.2f}s"
    )
    promote(folder, 0.1, 7)
    wall, cpu, code = timed("-C", str(folder), "plan", "--detailed-exitcode", "--out", str(folder / "p.json"))
    print(f"plan after promoting 10%: {wall:.2f}s wall, {cpu:.2f}s CPU (exit {code}, expect 2)")


if __name__ == "__main__":
    main()
