"""Service level objectives over kfmops' own history, and their error budgets (pure: entries in, reports out).

`slo:` in kfmops.yaml declares them:

    slo:
      apply_success: {objective: 0.99, window: 30d}    # share of applies and hotfixes that committed
      rollback_p95_ms: {objective: 120000, window: 30d} # 95th percentile of rollback durations (or a bare number)
      broken_links: 0                                   # broken links from the managed STAC documents now

Each report gives the measured value, the remaining error budget (1: untouched, 0 or less: spent) and the burn
rate (budget spent per budget allowed: above 1 spends faster than the objective allows). A budget is exhausted
when its objective is missed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from kfmops.io.clock import parse_duration

DEFAULT_WINDOW = "30d"
SUCCESS_OPERATIONS = {"apply", "hotfix"}
SETTLED = {"committed", "aborted"}
SLOW_SHARE = 0.05  # a p95 objective allows 5 % of rollbacks above it


@dataclass(frozen=True)
class SloReport:
    """One objective measured: `measured` in the objective's unit, over `events` history entries of `window`."""

    name: str
    objective: float
    measured: float
    unit: str
    window: str
    events: int
    remaining_budget: float
    burn_rate: float
    exhausted: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.name}: measured {self.measured:g} {self.unit} against {self.objective:g} over {self.window} "
            f"(error budget {self.remaining_budget:.0%} left, burn rate {self.burn_rate:.2f})"
        )


def objectives(settings: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
    """name -> (objective, window) from the `slo:` section (a bare number is the objective, window 30d)."""
    found = {}
    for name, value in settings.items():
        given = value if isinstance(value, Mapping) else {"objective": value}
        window = str(given.get("window", DEFAULT_WINDOW))
        parse_duration(window)  # the workspace schema admits only durations; this keeps other callers honest
        found[name] = (float(given["objective"]), window)
    return found


def measure(
    settings: Mapping[str, Any], history: Sequence[Mapping[str, Any]], broken_links: int, at: datetime
) -> list[SloReport]:
    """Every declared objective measured over the history entries finished within its window before `at`."""
    reports = []
    for name, (objective, window) in objectives(settings).items():
        since = at - parse_duration(window)
        recent = [entry for entry in history if _finished(entry) and _finished(entry) >= since]  # type: ignore[operator]
        if name == "apply_success":
            reports.append(_success(name, objective, window, recent))
        elif name == "rollback_p95_ms":
            reports.append(_latency(name, objective, window, recent))
        else:
            reports.append(_threshold(name, objective, window, broken_links))
    return reports


def _success(name: str, objective: float, window: str, recent: list[Mapping[str, Any]]) -> SloReport:
    settled = [e for e in recent if e["operation"] in SUCCESS_OPERATIONS and e["outcome"] in SETTLED]
    failed = sum(e["outcome"] != "committed" for e in settled)
    measured = 1 - failed / len(settled) if settled else 1.0
    burn = (1 - measured) / (1 - objective)
    return SloReport(name, objective, round(measured, 6), "ratio", window, len(settled), 1 - burn, burn, failed > 0
                     and measured <= objective)  # fmt: skip


def _latency(name: str, objective: float, window: str, recent: list[Mapping[str, Any]]) -> SloReport:
    durations = sorted(
        (_finished(e) - _started(e)) / timedelta(milliseconds=1)  # type: ignore[operator]
        for e in recent
        if e["operation"] == "rollback" and e["outcome"] == "committed" and _started(e)
    )
    p95 = durations[max(0, math.ceil(0.95 * len(durations)) - 1)] if durations else 0.0
    slow = sum(d > objective for d in durations) / len(durations) if durations else 0.0
    burn = slow / SLOW_SHARE
    return SloReport(name, objective, p95, "ms", window, len(durations), 1 - burn, burn, p95 > objective)


def _threshold(name: str, objective: float, window: str, measured: int) -> SloReport:
    burn = measured / objective if objective else float(measured)
    remaining = 1 - burn if objective else (1.0 if measured == 0 else -float(measured))
    return SloReport(name, objective, float(measured), "links", "now", 1, remaining, burn, measured > objective)


def _finished(entry: Mapping[str, Any]) -> datetime | None:
    return datetime.fromisoformat(entry["finished"]) if entry.get("finished") else None


def _started(entry: Mapping[str, Any]) -> datetime | None:
    return datetime.fromisoformat(entry["started"]) if entry.get("started") else None
