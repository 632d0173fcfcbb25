"""SIGKILL campaign: kill `apply PLANFILE`, `rollback --last` and `recover` at random moments, recover, and
check that no reference is ever left half-changed.

    python -m benchmarks.kill_campaign --kills 200

One generated workspace (local backend, small batches so that a write phase holds many batches) gives
three starting points: a promotion planned but not applied (killed: `apply plan.json`), the promotion
applied (killed: `rollback --last`), and the promotion killed half-way (killed: `recover`). Each command's
duration is measured first, uninterrupted: from its start to its exit, and its write phase, from its first
WAL record to its last. Each kill then takes a fresh copy of a starting point, starts the command and
sends SIGKILL at a random moment: 80% of them once its first WAL record appeared plus a uniform part of
the measured write phase, the rest uniformly over the whole measured run. `kfmops recover` then runs
(uninterrupted); the local backend, read directly, must hold every reference exactly as before the
operation or exactly as after it, and `apply --auto-approve` must then work. Commands are processes
forked from one pre-imported kfmops (benchmarks/forkserver.py). fsync is off: a SIGKILL leaves the page
cache, so it kills exactly what it would kill with fsync on.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.forkserver import ForkedProcess, ForkServer
from benchmarks.generate import apply_settings, generate, promote
from benchmarks.live import snapshot

COMMANDS = ("apply", "rollback", "recover")
INSIDE_WRITE_PHASE = 0.8
TERMINAL = (b'"type":"COMMIT"', b'"type":"ABORTED"')
BROKEN = ("Traceback", "internal error")


@dataclass(frozen=True)
class Start:
    """A workspace just before `args`; the snapshots before and after the operation (for recover, the
    interrupted apply); and the measured run: seconds to exit, and the write phase (first WAL record to
    last) as (start, length) in seconds from the command's start."""

    workspace: Path
    args: tuple[str, ...]
    before: dict[str, Any]
    after: dict[str, Any]
    duration: float = 0.0
    write_phase: tuple[float, float] = (0.0, 0.0)


@dataclass
class Tally:
    """What the campaign did and found. `mixed`, `recover_failed`, `broken` and `unusable` must stay 0."""

    kills: int = 0
    landed: int = 0  # the process died of the SIGKILL (not finished before it)
    in_write_phase: int = 0  # ... leaving an unfinished WAL (the kill came between its first and last record)
    outcomes: Counter[str] = field(default_factory=Counter)  # per command: before / after
    mixed: int = 0
    recover_failed: int = 0
    broken: int = 0  # a Traceback or "internal error" in any output
    unusable: int = 0  # the apply after recovery failed or did not reach the promoted state
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.mixed or self.recover_failed or self.broken or self.unusable)

    def summary(self) -> str:
        return (
            f"kills {self.kills}, landed {self.landed} ({self.in_write_phase} inside the write phase), "
            f"outcomes {dict(sorted(self.outcomes.items()))}, mixed {self.mixed}, recover failed "
            f"{self.recover_failed}, tracebacks/internal errors {self.broken}, unusable afterwards {self.unusable}"
        )


class Campaign:
    def __init__(self, folder: Path, server: ForkServer, datasets: int, batch_size: int, seed: int):
        self.folder, self.server, self.rng = folder, server, random.Random(seed)
        self.cwd = folder / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TMPDIR": str(self.cwd), "NO_COLOR": "1"}
        self.env.pop("KFMOPS_PLAN_KEY", None)
        self.starts = self._prepare(datasets, batch_size, seed)
        self.promoted = self.starts["apply"].after
        self.tally = Tally()

    def start(self, workspace: Path, *args: str, env: dict[str, str] | None = None) -> ForkedProcess:
        return self.server.start(["-C", str(workspace), *args], cwd=self.cwd, env={**self.env, **(env or {})})

    def run(self, workspace: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        return self.start(workspace, *args, env=env).wait_for()

    def must(self, workspace: Path, *args: str, env: dict[str, str] | None = None) -> str:
        code, out, err = self.run(workspace, *args, env=env)
        if code != 0 or any(text in out + err for text in BROKEN):
            raise RuntimeError(f"kfmops {' '.join(args)} exited {code}: {err.strip()[-1000:]}")
        return out

    def _prepare(self, datasets: int, batch_size: int, seed: int) -> dict[str, Start]:
        original = self.folder / "start-apply"
        generate(original, datasets, 3, seed)
        apply_settings(original, fsync=False, batch_size=batch_size)
        self.must(original, "apply", "--auto-approve")
        before = snapshot(original)
        promote(original, 1.0, seed)
        self.must(original, "plan", "--out", str(original / "plan.json"))
        applied = self.folder / "start-rollback"
        shutil.copytree(original, applied)
        self.must(applied, "apply", str(applied / "plan.json"))
        after = snapshot(applied)
        crashed = self.folder / "start-recover"
        shutil.copytree(original, crashed)
        batches = sum(b'"INTENT"' in line for line in next((applied / "state/wal/archive").glob("*")).open("rb"))
        code, _, err = self.run(
            crashed, "apply", str(crashed / "plan.json"), env={"KFMOPS_CRASH_AT": f"write:{batches // 2}"}
        )
        assert code == -signal.SIGKILL, err
        starts = {
            "apply": Start(original, ("apply", "plan.json"), before, after),
            "rollback": Start(applied, ("rollback", "--last", "--auto-approve"), after, before),
            "recover": Start(crashed, ("recover",), before, after),
        }
        return {name: self._measure(start) for name, start in starts.items()}

    def _copy(self, start: Start, name: str) -> Path:
        workspace = self.folder / name
        shutil.rmtree(workspace, ignore_errors=True)
        shutil.copytree(start.workspace, workspace)
        return workspace

    def _measure(self, start: Start) -> Start:
        """The command's duration and write phase, measured on a copy, uninterrupted."""
        workspace = self._copy(start, "measure")
        marks = wal_marks(workspace)
        began = time.monotonic()
        process = self.start(workspace, *self._args(start, workspace))
        first = last = None
        while process.poll() is None:
            now = phase(workspace, marks)
            if now != "before" and first is None:
                first = time.monotonic() - began
            if now == "after" and last is None:
                last = time.monotonic() - began
            time.sleep(0.001)
        duration = time.monotonic() - began
        code, out, err = process.wait_for()
        assert code == 0, (start.args, out, err)
        first = duration if first is None else first
        return replace(start, duration=duration, write_phase=(first, (last or duration) - first))

    @staticmethod
    def _args(start: Start, workspace: Path) -> tuple[str, ...]:
        return tuple(str(workspace / a) if a.endswith(".json") else a for a in start.args)

    def kill(self, command: str) -> None:
        """One kill of `command` at a random moment, then recover and check."""
        start = self.starts[command]
        workspace = self._copy(start, "victim")
        marks = wal_marks(workspace)
        process = self.start(workspace, *self._args(start, workspace))
        began = time.monotonic()
        if self.rng.random() < INSIDE_WRITE_PHASE:  # from its first WAL record, somewhere in its write phase
            while process.poll() is None and phase(workspace, marks) == "before":
                time.sleep(0.001)
            time.sleep(self.rng.uniform(0, start.write_phase[1]))
        else:  # anywhere in its run
            time.sleep(self.rng.uniform(0, start.duration))
        delay = time.monotonic() - began
        process.send_signal(signal.SIGKILL)
        code, out, err = process.wait_for()
        self.tally.kills += 1
        outputs = [(command, out + err)]
        if code == -signal.SIGKILL:
            self.tally.landed += 1
            if phase(workspace, marks) == "inside":
                self.tally.in_write_phase += 1
        recovered = self.run(workspace, "recover")
        outputs.append(("recover", recovered[1] + recovered[2]))
        case = f"kill {self.tally.kills} ({command} at {delay:.3f}s, exit {code})"
        if recovered[0] != 0:
            self.tally.recover_failed += 1
            self.tally.problems.append(f"{case}: recover exited {recovered[0]}: {recovered[2].strip()[-500:]}")
        live = snapshot(workspace)
        if live == start.before:
            self.tally.outcomes[f"{command}: before"] += 1
        elif live == start.after:
            self.tally.outcomes[f"{command}: after"] += 1
        else:
            self.tally.mixed += 1
            self.tally.problems.append(f"{case}: references neither all before nor all after")
        code, out, err = self.run(workspace, "apply", "--auto-approve")
        outputs.append(("apply afterwards", out + err))
        if code != 0 or snapshot(workspace) != self.promoted:
            self.tally.unusable += 1
            self.tally.problems.append(f"{case}: the apply afterwards exited {code}: {err.strip()[-500:]}")
        for what, text in outputs:
            if any(mark in text for mark in BROKEN):
                self.tally.broken += 1
                self.tally.problems.append(f"{case}: {what} printed {text.strip()[-500:]!r}")


Marks = tuple[dict[Path, int], int]


def wal_marks(workspace: Path) -> Marks:
    """The sizes of the workspace's open WAL files and the number of archived ones."""
    wal = workspace / "state" / "wal"
    return {path: path.stat().st_size for path in wal.glob("*.jsonl")}, len(list(wal.glob("archive/*")))


def phase(workspace: Path, marks: Marks) -> str:
    """Where a command is, judged from its WAL against `marks` taken before it started: "before" its
    first record, "inside" its write phase (a WAL grew and ends in no COMMIT or ABORTED), or "after"."""
    sizes, archived = marks
    wal = workspace / "state" / "wal"
    found = set()
    for path in wal.glob("*.jsonl"):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # archived just now
            return "after"
        found.add(path)
        if len(data) > sizes.get(path, 0):
            return "after" if any(mark in data[-600:] for mark in TERMINAL) else "inside"
    if len(list(wal.glob("archive/*"))) > archived or set(sizes) - found:
        return "after"
    return "before"


def run(
    kills: int,
    folder: Path,
    *,
    server: ForkServer | None = None,
    datasets: int = 40,
    batch_size: int = 10,
    seed: int = 1854,
    progress: bool = False,
) -> Tally:
    """Run `kills` kills, spread evenly over the three commands, in `folder`; returns the tally."""
    own = server is None
    server = server or ForkServer()
    try:
        campaign = Campaign(folder, server, datasets, batch_size, seed)
        if progress:
            for name, start in campaign.starts.items():
                first, length = start.write_phase
                print(f"{name}: {start.duration:.2f}s, write phase {first:.2f}s + {length:.2f}s", flush=True)
        for number in range(kills):
            campaign.kill(COMMANDS[number % len(COMMANDS)])
            if progress and (number + 1) % 20 == 0:
                print(campaign.tally.summary(), flush=True)
        return campaign.tally
    finally:
        if own:
            server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=200, help="how many SIGKILLs (default 200)")
    parser.add_argument("--datasets", type=int, default=40, help="datasets in the workspace (default 40)")
    parser.add_argument("--batch-size", type=int, default=10, help="references per batch (default 10)")
    parser.add_argument("--seed", type=int, default=1854)
    parser.add_argument("--out", type=Path, help="work folder (default: a new temporary folder, removed after)")
    args = parser.parse_args(argv)
    folder = args.out or Path(tempfile.mkdtemp(prefix="kfmops-kill-campaign-"))
    try:
        tally = run(
            args.kills, folder, datasets=args.datasets, batch_size=args.batch_size, seed=args.seed, progress=True
        )
    finally:
        if args.out is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(tally.summary())
    for problem in tally.problems:
        print("PROBLEM", problem)
    print(json.dumps({"ok": tally.ok, "kills": tally.kills, "landed": tally.landed, "mixed": tally.mixed}))
    raise SystemExit(0 if tally.ok else 1)


if __name__ == "__main__":
    main()
