"""Fault matrix: a full disk, an I/O error or a short write at every durable write an operation reaches.

For an `apply` of a promotion, a `rollback --last` and a `recover` after a crash, the write points are
discovered by counting: the operation runs once without a fault under tests/faulttrace (every call of
the KFMOPS_FAULT hook is logged), then again on a fresh copy of the workspace with a fault at each point
(`<workspace>/<glob>@<step>:<n>:<error>`): ENOSPC from that point on (`n+`, a disk that stays full),
EIO once, and a short write from that point on for the append-only line files. After each faulted
command, `kfmops recover` runs (first with the fault still present when it persists, then without) and
the local backend, read directly, must hold exactly its references before or exactly after the
operation; no command may print a traceback or "internal error"; and the workspace must still work
without a hand edit: `apply --auto-approve` then takes it to the promoted state.

The quick test runs a representative sample on a small workspace; the `slow` ones cover every point of
each operation on a 200-dataset workspace (the documents of one STAC batch as its first, second, middle
and last, the positions a fault can tell apart) and print how many points and cases they covered.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.generate import apply_settings, generate, promote
from benchmarks.live import snapshot

SEED = 1854
TRACER = Path(__file__).resolve().parent / "faulttrace"
BROKEN = ("Traceback", "internal error")


@dataclass(frozen=True)
class Category:
    """Files of one kind, by a glob relative to the workspace; `lines`: append-only line files."""

    name: str
    glob: str
    lines: bool = False


CATEGORIES = (
    Category("wal", "state/wal/*", lines=True),
    Category("state", "state/state.json"),
    Category("history record", "state/applies/*"),
    Category("history index", "state/history.jsonl", lines=True),
    Category("ledger", "docs/reports/audit/*ledger*", lines=True),
    Category("ledger head", "state/ledger-head.json"),
    Category("stac", "state/local/stac/*"),
    Category("telemetry", "state/telemetry/*"),
    Category("lock", "state/lock.*"),
    Category("lineage", "state/lineage/*"),
    Category("rollback manifest", "docs/reports/audit/rollbacks/*"),
)


@dataclass(frozen=True)
class Point:
    """The n-th time (1-based) a file of `category` reaches `step` (write, fsync or rename)."""

    category: Category
    step: str
    n: int

    def faults(self) -> list[tuple[str, bool]]:
        """(error, persistent) injected here: a full disk that stays full, one I/O error, a short write."""
        found = [("ENOSPC", True), ("EIO", False)]
        return [*found, ("SHORT", True)] if self.category.lines and self.step == "write" else found

    def spec(self, workspace: Path, error: str, persistent: bool) -> str:
        return f"{workspace}/{self.category.glob}@{self.step}:{self.n}{'+' if persistent else ''}:{error}"

    def __str__(self) -> str:
        return f"{self.category.name}@{self.step}:{self.n}"


@dataclass(frozen=True)
class Scenario:
    """A workspace just before `command`; the snapshots before and after the operation (for `recover`,
    the interrupted apply); what the command leaves when nothing fails; and the promoted snapshot that a
    final `apply --auto-approve` must reach."""

    name: str
    workspace: Path
    command: tuple[str, ...]
    before: dict[str, Any]
    after: dict[str, Any]
    done: dict[str, Any]
    promoted: dict[str, Any]


def run_ok(cli: Callable[..., tuple[int, str, str]], workspace: Path, *args: str, **kwargs: Any) -> str:
    code, out, err = cli(workspace, *args, **kwargs)
    assert code == 0, (args, code, out, err)
    assert not any(text in out + err for text in BROKEN), (args, out, err)
    return out


def build(folder: Path, cli: Callable[..., tuple[int, str, str]], datasets: int, batch_size: int) -> list[Scenario]:
    """The three scenarios on one generated workspace: apply a promotion, roll it back, recover a crash."""
    original = folder / "original"
    generate(original, datasets, 3, SEED)
    apply_settings(original, batch_size=batch_size)  # fsync stays on: its fault points are part of the matrix
    run_ok(cli, original, "apply", "--auto-approve")
    before = snapshot(original)
    promote(original, 1.0, SEED)
    run_ok(cli, original, "plan", "--out", str(original / "plan.json"))

    applied = folder / "applied"
    shutil.copytree(original, applied)
    run_ok(cli, applied, "apply", str(applied / "plan.json"))
    promoted = snapshot(applied)
    assert promoted != before
    batches = sum(
        1 for line in next((applied / "state" / "wal" / "archive").glob("*.jsonl")).open() if '"INTENT"' in line
    )

    crashed = folder / "crashed"
    shutil.copytree(original, crashed)
    middle = {"KFMOPS_CRASH_AT": f"write:{(batches - 1) // 2}"}  # killed with half of the batches written
    code, out, err = cli(crashed, "apply", str(crashed / "plan.json"), env=middle)
    assert code == -signal.SIGKILL, (code, out, err)
    assert snapshot(crashed) not in (before, promoted), "the crash left the apply half-done"
    return [
        Scenario("apply", original, ("apply", str(original / "plan.json")), before, promoted, promoted, promoted),
        Scenario("rollback", applied, ("rollback", "--last", "--auto-approve"), promoted, before, before, promoted),
        Scenario("recover", crashed, ("recover",), before, promoted, before, promoted),
    ]


def discover(scenario: Scenario, cli: Callable[..., tuple[int, str, str]], folder: Path) -> list[Point]:
    """Every fault point the scenario's command reaches, by running it once on a copy under the tracer."""
    probe = folder / f"probe-{scenario.name}"
    shutil.copytree(scenario.workspace, probe)
    trace = folder / f"trace-{scenario.name}"
    tracing = {"PYTHONPATH": str(TRACER), "KFMOPS_FAULT_TRACE": str(trace)}
    run_ok(cli, probe, *relocated(scenario.command, scenario.workspace, probe), env=tracing)
    assert snapshot(probe) == scenario.done
    reached: list[tuple[Category, str]] = []
    for line in trace.read_text().splitlines():
        step, path = line.split("\t")
        relative = os.path.relpath(path, probe)
        found = [c for c in CATEGORIES if fnmatch.fnmatch(relative, c.glob)]
        assert len(found) == 1, f"{relative} is in {len(found)} categories: every write point must be in one"
        reached.append((found[0], step))
    counts: Counter[tuple[Category, str]] = Counter()
    points = []
    for category, step in reached:
        counts[(category, step)] += 1
        points.append(Point(category, step, counts[(category, step)]))
    return points


def relocated(command: tuple[str, ...], old: Path, new: Path) -> tuple[str, ...]:
    """The command with paths inside the scenario's workspace (its plan file) moved to a copy."""
    return tuple(arg.replace(str(old), str(new)) for arg in command)


def stac_sample(points: list[Point]) -> list[Point]:
    """Every point, except that of a run of STAC documents written one after another (one batch) only
    the first, second, middle and last are kept: a fault cannot tell the others apart."""
    kept: list[Point] = []
    run: dict[str, list[Point]] = {}

    def flush() -> None:
        for same_step in run.values():
            positions = {0, 1, len(same_step) // 2, len(same_step) - 1}
            kept.extend(same_step[i] for i in sorted(positions) if i < len(same_step))
        run.clear()

    for point in points:
        if point.category.name == "stac":
            run.setdefault(point.step, []).append(point)
        else:
            flush()
            kept.append(point)
    flush()
    return kept


def stray_temporaries(workspace: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (`.<name>.XXXXXXXX`, tempfile's names) left behind."""
    return [p for p in workspace.rglob(".*") if p.is_file() and re.fullmatch(r"\.(.+)\.[a-z0-9_]{8}", p.name)]


def inject(scenario: Scenario, point: Point, error: str, persistent: bool, cli: Any, folder: Path) -> list[str]:
    """Run the scenario's command with one fault, recover, check the invariants; the problems found."""
    workspace = folder / f"case-{scenario.name}"
    shutil.rmtree(workspace, ignore_errors=True)
    shutil.copytree(scenario.workspace, workspace)
    fault = {"KFMOPS_FAULT": point.spec(workspace, error, persistent)}
    case = f"{scenario.name} {point} {error}{'+' if persistent else ''}"
    problems: list[str] = []
    results = [("faulted", cli(workspace, *relocated(scenario.command, scenario.workspace, workspace), env=fault))]
    if results[0][1][0] == 0 and snapshot(workspace) != scenario.done:
        problems.append(f"{case}: exit 0, but the references are not where the command takes them")
    if persistent:
        results.append(("recover, disk still full", cli(workspace, "recover", env=fault)))
    results.append(("recover", cli(workspace, "recover")))
    live = snapshot(workspace)
    if live not in (scenario.before, scenario.after):
        problems.append(f"{case}: after recover the references are neither all before nor all after it")
    if leftovers := stray_temporaries(workspace):
        problems.append(f"{case}: temporary files left after recover: {leftovers[:3]}")
    results.append(("apply afterwards", cli(workspace, "apply", "--auto-approve")))
    for what, (code, out, err) in results:
        if any(text in out + err for text in BROKEN):
            problems.append(f"{case}: {what} printed {err.strip()[-400:]!r}")
        if what in ("recover", "apply afterwards") and code != 0:
            problems.append(f"{case}: {what} exited {code}: {err.strip()[-400:]!r}")
    if not problems and snapshot(workspace) != scenario.promoted:
        problems.append(f"{case}: the apply afterwards did not reach the promoted state")
    return problems


def run_matrix(scenario: Scenario, points: list[Point], cli: Any, folder: Path) -> tuple[int, list[str]]:
    """Inject every fault of every point; (cases run, problems found)."""
    cases, problems = 0, []
    for point in points:
        for error, persistent in point.faults():
            cases += 1
            problems += inject(scenario, point, error, persistent, cli, folder)
    return cases, problems


def covered(scenario: Scenario, points: list[Point], cases: int) -> str:
    kinds = Counter(p.category.name for p in points)
    return f"fault matrix, {scenario.name}: {len(points)} points, {cases} cases ({dict(sorted(kinds.items()))})"


# The quick sample: a small workspace, one or two points of every kind of file -------------------------


@pytest.fixture(scope="module")
def small(fork_cli, tmp_path_factory) -> dict[str, Scenario]:
    return {s.name: s for s in build(tmp_path_factory.mktemp("small"), fork_cli, datasets=3, batch_size=6)}


def sample(points: list[Point], wanted: list[tuple[str, str, int, str]]) -> list[tuple[Point, str, bool]]:
    """(point, error, persistent) named (category, step, n, error); n=-1 is the last of its category and
    step; ENOSPC and SHORT persist (a full disk), EIO does not."""
    chosen = []
    for name, step, n, error in wanted:
        same = [p for p in points if p.category.name == name and p.step == step]
        assert same, f"no {name}@{step} point was reached"
        chosen.append((same[n if n < 0 else n - 1], error, error != "EIO"))
    return chosen


QUICK = {
    "apply": [
        ("wal", "write", 2, "ENOSPC"),  # the first INTENT: nothing written yet, the disk stays full
        ("wal", "fsync", 4, "EIO"),  # the second INTENT landed but is not durable
        ("stac", "rename", 5, "EIO"),  # a STAC batch half written
        ("state", "write", 1, "ENOSPC"),  # after COMMIT: bookkeeping
        ("lock", "write", 2, "EIO"),  # the lock's record: nothing taken
    ],
    "rollback": [("wal", "write", -1, "SHORT"), ("ledger", "write", 1, "EIO")],  # a torn COMMIT; the ledger
    "recover": [("wal", "fsync", 2, "ENOSPC"), ("stac", "rename", 2, "EIO")],  # while undoing
}


@pytest.mark.parametrize("name", QUICK)
def test_faults_at_a_sample_of_write_points_leave_every_reference_before_or_after(name, small, fork_cli, tmp_path):
    scenario = small[name]
    problems = []
    for point, error, persistent in sample(discover(scenario, fork_cli, tmp_path), QUICK[name]):
        problems += inject(scenario, point, error, persistent, fork_cli, tmp_path)
    assert problems == []


# The full matrices: every point of each operation, on the small workspace and on 200 datasets -------------


def full_matrix(scenario: Scenario, cli: Any, folder: Path, sample_stac: bool) -> None:
    reached = discover(scenario, cli, folder)
    points = stac_sample(reached) if sample_stac and os.environ.get("KFMOPS_FAULT_MATRIX_STAC") != "all" else reached
    cases, problems = run_matrix(scenario, points, cli, folder)
    print(covered(scenario, points, cases), f"of {len(reached)} reached; {len(problems)} problems")
    assert problems == []


@pytest.mark.campaign
@pytest.mark.parametrize("name", ["apply", "rollback", "recover"])
def test_faults_at_every_write_point_of_a_small_workspace_leave_every_reference_before_or_after(
    name, small, fork_cli, tmp_path
):
    full_matrix(small[name], fork_cli, tmp_path, sample_stac=False)


@pytest.fixture(scope="module")
def large(fork_cli, tmp_path_factory) -> dict[str, Scenario]:
    return {s.name: s for s in build(tmp_path_factory.mktemp("large"), fork_cli, datasets=200, batch_size=100)}


@pytest.mark.campaign
@pytest.mark.parametrize("name", ["apply", "rollback", "recover"])
def test_faults_at_every_write_point_on_200_datasets_leave_every_reference_before_or_after(
    name, large, fork_cli, tmp_path
):
    """Every point; the documents of one STAC batch as first, second, middle and last (all of them with
    KFMOPS_FAULT_MATRIX_STAC=all)."""
    full_matrix(large[name], fork_cli, tmp_path, sample_stac=True)
