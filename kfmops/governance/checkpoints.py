"""Checkpoints before a pointer moves: the checks a Dataset version declares (`checks:`, governance.expectations)
run on every version an apply plan moves a pointer to, when it is planned and again under the lock at apply.

A failed check is a deny finding (`checkpoint.<check>`) of its dataset that names the changes it blocks: the plan
is refused the way policy refuses one (exit 3, the attempt ledgered), and the other datasets' changes can be
planned without it (`--exclude dataset.NAME`).

Invariants: results are computed anew from the data each time they are asked for (a plan file's are never
trusted), from the checks the desired state declares (apply re-derives a saved plan's dataset records from git
first). Versions no pointer moves to are not checked. Only apply plans are: rollback, repair and recovery
restore values applied before, and a hotfix is an operator's ledgered emergency move.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kfmops.errors import KfmopsError
from kfmops.governance.expectations import EXPECTATIONS, CheckFailed, Target
from kfmops.governance.policy import Finding, PolicyResult
from kfmops.io.redact import Redactor
from kfmops.plans.model import Change, Operation, Plan
from kfmops.providers.registry import Providers

RULE_PREFIX = "checkpoint."


@dataclass(frozen=True)
class CheckResult:
    """One check of one dataset version; `blocks`: the addresses a failed check keeps from moving."""

    dataset: str
    version: str
    check: str
    passed: bool
    detail: str
    blocks: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        result = {
            "dataset": self.dataset,
            "version": self.version,
            "check": self.check,
            "passed": self.passed,
            "detail": self.detail,
        }
        return result | ({"blocks": list(self.blocks)} if self.blocks else {})


def run(providers: Providers, plan: Plan, facts: Mapping[str, Mapping[str, Any]]) -> list[CheckResult]:
    """The result of every check declared by a version `plan` moves a pointer to, by dataset name then in the
    order of `EXPECTATIONS`. `facts`: those gathered for the plan's datasets (governance.facts) just now."""
    if plan.operation is not Operation.APPLY:
        return []
    redact = Redactor(providers.workspace.secret_values())
    moves: dict[str, list[Change]] = defaultdict(list)
    for change in plan.moves:
        if change.reference.dataset:
            moves[change.reference.dataset].append(change)
    results = []
    for name, record in sorted(plan.datasets.items()):
        target = record.get("target") or {}
        declared = target.get("checks") or {}
        version = str(target.get("id"))
        moving = [c for c in moves.get(name, ()) if c.action.mutates and c.after is not None]
        if not declared or not any(c.version == version for c in moving):
            continue
        blocked = tuple(c.address for c in moves[name])
        found = facts.get(name) or {}
        source, backend = found.get("source"), found.get("backend")
        data = Target(
            name,
            version,
            providers.workspace,
            found,
            source if isinstance(source, str) else None,
            providers.get(backend) if isinstance(backend, str) and isinstance(source, str) else None,
        )
        for check, expectation in EXPECTATIONS.items():
            setting = declared.get(check)
            if setting is None or setting is False:
                continue
            try:
                results.append(CheckResult(name, version, check, True, redact.text(expectation(setting, data))))
            except (CheckFailed, KfmopsError, OSError, ValueError) as failure:
                results.append(CheckResult(name, version, check, False, redact.text(str(failure)), blocked))
    return results


def judged(result: PolicyResult, checks: Sequence[CheckResult]) -> PolicyResult:
    """`result` with `checks` recorded beside it and one deny finding per failed check."""
    failed = tuple(
        Finding(
            f"{RULE_PREFIX}{c.check}",
            f"dataset.{c.dataset}",
            f"{c.check} failed for {c.dataset}@{c.version}: {c.detail}; it blocks {', '.join(c.blocks)}",
            f"fix the data of {c.dataset}@{c.version}, or remove the check in a reviewed commit; "
            f"to apply the other changes, plan with --exclude dataset.{c.dataset}",
            "deny",
        )
        for c in checks
        if not c.passed
    )
    return replace(
        result,
        decision="deny" if failed else result.decision,
        findings=result.findings + failed,
        checks=tuple(c.to_dict() for c in checks),
    )
