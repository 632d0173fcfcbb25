"""Policy as code: Rego v1 files evaluated over the plan JSON with regopy (rego-cpp; governance.rego).

The files are plain OPA policies: `opa eval` and `conftest test --namespace kfmops` run them unchanged
on `kfmops show PLAN --format json` (docs/policy.md). Findings are the values of the rules of package
`kfmops` that conftest reads: `deny`, `violation`, `warn`, and their `deny_<suffix>` forms. Each value
is a string or an object with a `msg` key; kfmops's own rules also give `rule`, `address` and `fix`.
Settings (kfmops.yaml `policy:`) reach Rego as `data.kfmops.config`; their defaults live in the Rego.

Invariants:
- Evaluation fails closed. A policy file that cannot be read or parsed, an interpreter error, an
  undefined result or a malformed finding gives decision "deny" with a `policy.error` finding that
  names the file or the problem. No error path returns "allow".
- An empty policy set denies (`policy.empty`) unless settings say `allow_empty: true`; so does a set
  in which no file defines a deny or violation rule in package `kfmops`.
- Rules never run per change: the plan is judged in groups of datasets (`groups`), one query each,
  every group a complete plan document carrying the whole plan's summary. The findings and decisions
  are the union over the groups; a plan of up to GROUP_SIZE datasets is one query. Groups are
  queried in threads, one interpreter per core (Rego.query_each).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

NAMESPACE = "kfmops"
DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[1] / "data" / "policies"
"""The default policies shipped with kfmops (package data: `kfmops/data/policies/`)."""

RULE_NAME = r"^(deny|violation|warn)(_[a-zA-Z0-9]+)*$"
"""Rule names that hold findings, as conftest matches them; `warn...` are warnings, the rest denials."""

DECISIONS = "decisions"
"""The rule that holds access decisions: per judged dataset, its access, rationale and obligations."""

QUERY = f"{{name: value | some name, value in data.{NAMESPACE}; regex.match(`{RULE_NAME}|^{DECISIONS}$`, name)}}"
"""The query per group of datasets: every finding rule of the namespace, and the access decisions, at once."""

LOAD_ERROR = "# kfmops: cannot load policy: "
"""Text of a load_policies entry for a file that could not be read; evaluate() denies on it."""

SEVERITIES = ("deny", "warn")

GROUP_SIZE = 250
"""Datasets judged per query. rego-cpp stops a query at a statement limit (not settable through regopy)
that a plan of about 9,000 datasets reaches; rules judge datasets one by one, so groups give the same
findings, and `summary` in each group is still the whole plan's. A query costs what its datasets do, so
small groups cost no more, and they let a plan of 1,000 datasets use every core (evaluate)."""


@dataclass(frozen=True)
class Finding:
    """One policy finding. `severity` "deny" blocks the plan; "warn" is shown and never blocks.

    `address` is the resource the finding is about (a dataset address for the default rules), or None
    for a finding about the policy set itself. `fix` says how to resolve it ("" when a user policy
    gives only a message)."""

    rule: str
    address: str | None
    message: str
    fix: str
    severity: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "address": self.address,
            "message": self.message,
            "fix": self.fix,
            "severity": self.severity,
        }


@dataclass(frozen=True)
class PolicyResult:
    """The decision over one plan: "deny" iff at least one finding has severity "deny". `facts` are the
    facts from the data it was judged on (governance.facts), by dataset; `checks` the checkpoints it ran."""

    decision: str
    findings: tuple[Finding, ...]
    facts: Mapping[str, Any] = field(default_factory=dict, compare=False)
    decisions: tuple[dict[str, Any], ...] = ()
    checks: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    """Checkpoint results of the versions the plan moves pointers to (governance.checkpoints); a failed one is
    also a deny finding."""
    judged: str | None = field(default=None, compare=False)
    """The seal of what policy judged and found (governance.gate): a signed plan carrying it is not judged again."""

    def to_dict(self) -> dict[str, Any]:
        """The plan file's `policy` member (schemas/plan.schema.json)."""
        findings = {"decision": self.decision, "findings": [finding.to_dict() for finding in self.findings]}
        return (
            findings
            | ({"decisions": list(self.decisions)} if self.decisions else {})
            | ({"judged": self.judged} if self.judged else {})
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyResult:
        """The result a plan file's `policy` member records (findings, decisions and seal; no facts or checks)."""
        findings = tuple(
            Finding(f["rule"], f.get("address"), f["message"], f.get("fix", ""), f.get("severity", "deny"))
            for f in data.get("findings", [])
        )
        decisions = tuple(data.get("decisions", []))
        return cls(str(data.get("decision")), findings, decisions=decisions, judged=data.get("judged"))


def load_policies(policy_dir: Path, extra: list[Path]) -> list[tuple[str, str]]:
    """(file name, Rego text) of every policy: the `*.rego` files under policy_dir, then under each extra
    path (a `.rego` file or a folder), each folder walked recursively in sorted order.

    Raises nothing. A path that is missing or unreadable becomes an entry whose text starts with
    LOAD_ERROR, which evaluate() turns into a deny. `*_test.rego` files (OPA unit tests of policies,
    run by `opa test`) are skipped; a file reached twice is loaded once.
    """
    entries: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for root in [policy_dir, *extra]:
        for path, problem in _policy_files(root):
            key = _resolved(path)
            if key in seen:
                continue
            seen.add(key)
            if problem is None:
                try:
                    entries.append((str(path), path.read_text(encoding="utf-8")))
                    continue
                except (OSError, UnicodeDecodeError) as error:
                    problem = f"cannot read it ({error})"
            entries.append((str(path), f"{LOAD_ERROR}{problem}\n"))
    return entries


def evaluate(plan: Mapping[str, Any], policies: list[tuple[str, str]], settings: Mapping[str, Any]) -> PolicyResult:
    """Evaluate the policies over one plan document (planfile's dict): one query per group of datasets.

    `settings` is kfmops.yaml's `policy:` section; it is passed whole as `data.kfmops.config`, and
    `allow_empty: true` lets an empty policy set allow. Fails closed: see the module invariants.
    """
    settings = dict(settings or {})
    if not policies:
        return _empty(settings, "no policy files were loaded")
    problems = [
        _error(f"{name}: {text[len(LOAD_ERROR) :].strip()}", "restore the file or remove it from policy.paths")
        for name, text in policies
        if text.startswith(LOAD_ERROR)
    ]
    # Imported here: the commands that judge no plan (--help, validate, state ...) do not load rego-cpp.
    from kfmops.governance.rego import Rego, RegoFailure

    try:
        rego = Rego(
            [entry for entry in policies if not entry[1].startswith(LOAD_ERROR)], {NAMESPACE: {"config": settings}}
        )
        if problems:
            return decide(problems)
        # Through JSON (in query_each), so input is exactly what `kfmops show --format json` gives opa/conftest.
        answers = rego.query_each(QUERY, groups(plan, GROUP_SIZE))
    except RegoFailure as failure:
        return decide(problems + [_error(message, fix) for message, fix in failure.problems])
    rules: dict[str, Any] = {}
    for results in answers:
        if len(results) != 1 or len(results[0]) != 1 or not isinstance(results[0][0], dict):
            return decide(
                [
                    _error(
                        f"the query {QUERY} was undefined or not an object: {results!r}",
                        "check that the policies declare `package kfmops`",
                    )
                ]
            )
        _merge(rules, results[0][0])
    decisions = rules.pop(DECISIONS, [])
    if not any(not name.startswith("warn") for name in rules):
        return _empty(settings, f"no policy defines a deny or violation rule in package {NAMESPACE}")
    findings: list[Finding] = []
    for name, value in sorted(rules.items()):
        findings.extend(_findings(name, value))
    if not _well_formed_decisions(decisions):
        findings.append(
            _error(
                f"rule {NAMESPACE}.{DECISIONS} is not a set of access decisions: {json.dumps(decisions)[:300]}",
                "give objects with a string dataset and access, and rationale and obligations as lists of strings",
            )
        )
        decisions = []
    return replace(decide(findings), decisions=tuple(sorted(decisions, key=lambda d: str(d["dataset"]))))


def groups(plan: Mapping[str, Any], size: int) -> list[dict[str, Any]]:
    """The plan document as documents of at most `size` datasets each, in name order: one per query.

    Each is a whole plan document (every member as it is, `summary` of the whole plan included) holding
    only its datasets' records, facts, exposure entries and changes; what belongs to no dataset (a change
    without one, drift) goes in the first. A plan of at most `size` datasets is one document: itself."""
    changes = plan.get("changes") or []
    exposure = plan.get("exposure") or []
    records = plan.get("datasets") or {}
    facts = plan.get("facts") or {}
    named = [item.get("dataset") for item in [*changes, *exposure] if isinstance(item, dict)]
    names = sorted({*records, *facts, *(name for name in named if isinstance(name, str))})
    if len(names) <= size:
        return [dict(plan)]
    group_of = {name: index // size for index, name in enumerate(names)}
    documents = [
        dict(plan, changes=[], exposure=[], datasets={}, facts={}, drift=[]) for _ in range(max(group_of.values()) + 1)
    ]
    documents[0]["drift"] = plan.get("drift") or []

    def group(item: Any) -> dict[str, Any]:
        name = item.get("dataset") if isinstance(item, dict) else None
        return documents[group_of[name] if isinstance(name, str) else 0]

    for change in changes:
        group(change)["changes"].append(change)
    for entry in exposure:
        group(entry)["exposure"].append(entry)
    for name, record in records.items():
        documents[group_of[name]]["datasets"][name] = record
    for name, fact in facts.items():
        documents[group_of[name]]["facts"][name] = fact
    return documents


def _merge(rules: dict[str, Any], more: Mapping[str, Any]) -> None:
    """Add one group's rule values to `rules`: the findings and decisions of each rule, concatenated."""
    for name, value in more.items():
        known = rules.setdefault(name, [] if isinstance(value, list) else value)
        if isinstance(known, list) and isinstance(value, list):
            known.extend(value)


def _policy_files(root: Path) -> list[tuple[Path, str | None]]:
    """(path, problem) of each policy file under root; problem is None for a file to read."""
    try:
        if root.is_dir():
            return [
                (path, None)
                for path in sorted(root.rglob("*.rego"))
                if path.is_file() and not path.name.endswith("_test.rego")
            ]
        if root.is_file():
            return [(root, None if root.suffix == ".rego" else "not a .rego file")]
        return [(root, "no such file or folder")]
    except OSError as error:
        return [(root, f"cannot list it ({error})")]


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path


def _findings(name: str, value: Any) -> list[Finding]:
    """Findings of one rule's value; a value conftest would not accept becomes a policy.error."""
    severity = "warn" if name.startswith("warn") else "deny"
    if not isinstance(value, list):
        return [
            _error(
                f"rule {NAMESPACE}.{name} is {json.dumps(value)}, not a set of findings",
                f"declare it as a multi-value rule: `{name} contains msg if {{ ... }}`",
            )
        ]
    findings = []
    for item in value:
        if isinstance(item, str) and item.strip():
            findings.append(Finding(name, None, item, "", severity))
            continue
        if isinstance(item, dict) and _well_formed(item):
            findings.append(
                Finding(item.get("rule") or name, item.get("address"), item["msg"], item.get("fix", ""), severity)
            )
            continue
        findings.append(
            _error(
                f"rule {NAMESPACE}.{name} gave a malformed finding: {json.dumps(item)[:300]}",
                "give a non-empty string, or an object with a non-empty string msg and optional string rule, "
                "address and fix",
            )
        )
    return findings


def _well_formed(item: dict[str, Any]) -> bool:
    message = item.get("msg")
    return (
        isinstance(message, str)
        and bool(message.strip())
        and isinstance(item.get("rule", ""), str)
        and isinstance(item.get("address"), str | None)
        and isinstance(item.get("fix", ""), str)
    )


def _well_formed_decisions(decisions: Any) -> bool:
    return isinstance(decisions, list) and all(
        isinstance(d, dict)
        and isinstance(d.get("dataset"), str)
        and isinstance(d.get("access"), str)
        and all(
            isinstance(d.get(key), list) and all(isinstance(line, str) for line in d[key])
            for key in ("rationale", "obligations")
        )
        for d in decisions
    )


def decide(findings: Iterable[Finding]) -> PolicyResult:
    """The result of `findings`, each once and in order: "deny" iff one of them denies."""
    unique = sorted(
        set(findings),
        key=lambda f: (SEVERITIES.index(f.severity), f.rule, f.address or "", f.message),
    )
    decision = "deny" if any(f.severity == "deny" for f in unique) else "allow"
    return PolicyResult(decision, tuple(unique))


def _empty(settings: Mapping[str, Any], why: str) -> PolicyResult:
    if settings.get("allow_empty") is True:
        return PolicyResult("allow", ())
    return decide(
        [
            Finding(
                "policy.empty",
                None,
                f"{why}, so nothing was checked",
                "restore the bundled policies (policy.defaults: true) or add policy.paths in kfmops.yaml; "
                "set policy.allow_empty: true only to run without policy on purpose",
                "deny",
            )
        ]
    )


def _error(message: str, fix: str) -> Finding:
    return Finding("policy.error", None, message, fix, "deny")
