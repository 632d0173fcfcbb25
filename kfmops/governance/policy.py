"""Policy as code: Rego v1 files evaluated over the plan JSON with regopy (rego-cpp), one query per plan.

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
- The whole plan is one query; rules never run per change.
"""

from __future__ import annotations

import json
import re
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
"""The one query per plan: every finding rule of the namespace, and the access decisions, at once."""

LOAD_ERROR = "# kfmops: cannot load policy: "
"""Text of a load_policies entry for a file that could not be read; evaluate() denies on it."""

SEVERITIES = ("deny", "warn")


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

    def to_dict(self) -> dict[str, Any]:
        """The plan file's `policy` member (schemas/plan.schema.json)."""
        findings = {"decision": self.decision, "findings": [finding.to_dict() for finding in self.findings]}
        return findings | ({"decisions": list(self.decisions)} if self.decisions else {})


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
    """Evaluate the policies over one plan document (planfile's dict) with one query.

    `settings` is kfmops.yaml's `policy:` section; it is passed whole as `data.kfmops.config`, and
    `allow_empty: true` lets an empty policy set allow. Fails closed: see the module invariants.
    """
    settings = dict(settings or {})
    if not policies:
        return _empty(settings, "no policy files were loaded")
    texts = dict(policies)
    problems = [
        _error(f"{name}: {text[len(LOAD_ERROR) :].strip()}", "restore the file or remove it from policy.paths")
        for name, text in policies
        if text.startswith(LOAD_ERROR)
    ]
    # regopy ships neither type hints nor a py.typed marker, and PyPI has no stub package for it. Imported
    # here: the commands that judge no plan (--help, validate, state ...) do not load rego-cpp.
    from regopy import Interpreter, LogLevel, RegoError  # type: ignore[import-untyped]

    try:
        interpreter = Interpreter()
        interpreter.log_level = LogLevel.NONE  # rego-cpp prints errors to stdout otherwise
        interpreter.strict_built_in_errors = True  # a failing built-in is an error, not a silent undefined
        for name, text in policies:
            if text.startswith(LOAD_ERROR):
                continue
            try:
                interpreter.add_module(name, text)
            except RegoError as error:
                problems.extend(_module_errors(name, error, texts))
        if problems:
            return _decide(problems)
        interpreter.add_data_json(json.dumps({NAMESPACE: {"config": settings}}, default=str))
        # Through JSON first, so input is exactly what `kfmops show --format json` gives opa/conftest;
        # then built node by node, which is faster in regopy than parsing it as a Rego term.
        interpreter.set_input(json.loads(json.dumps(plan, default=str)))
        output = interpreter.query(QUERY)
        if not output.ok():
            return _decide(
                [
                    _error(
                        f"evaluation failed: {reason}",
                        "fix the policy; `opa eval --strict-builtin-errors` on the plan JSON shows where it fails",
                    )
                    for reason in _output_errors(output)
                ]
            )
        results = [result.expressions for result in output.results]
    except json.JSONDecodeError as error:  # regopy parses the interpreter's output as JSON
        return _decide(
            [
                _error(
                    f"the interpreter's output is not valid JSON ({error})",
                    "build messages with concat, not with sprintf over a string another built-in returned "
                    "(a rego-cpp quirk; docs/policy.md)",
                )
            ]
        )
    except Exception as error:  # fail closed: any failure of the interpreter is a deny, never an allow
        return _decide(
            [
                _error(
                    f"policy evaluation failed: {type(error).__name__}: {_first_line(error)}",
                    "fix the policy files; run `opa check` on them for details",
                )
            ]
        )
    if len(results) != 1 or len(results[0]) != 1 or not isinstance(results[0][0], dict):
        return _decide(
            [
                _error(
                    f"the query {QUERY} was undefined or not an object: {results!r}",
                    "check that the policies declare `package kfmops`",
                )
            ]
        )
    rules: dict[str, Any] = results[0][0]
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
    return replace(_decide(findings), decisions=tuple(sorted(decisions, key=lambda d: str(d["dataset"]))))


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


def _decide(findings: Iterable[Finding]) -> PolicyResult:
    unique = sorted(
        set(findings),
        key=lambda f: (SEVERITIES.index(f.severity), f.rule, f.address or "", f.message),
    )
    decision = "deny" if any(f.severity == "deny" for f in unique) else "allow"
    return PolicyResult(decision, tuple(unique))


def _empty(settings: Mapping[str, Any], why: str) -> PolicyResult:
    if settings.get("allow_empty") is True:
        return PolicyResult("allow", ())
    return _decide(
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no detail)"


_ERROR_HEAD = re.compile(rb"\(error (\d+):")
_ERROR_SPAN = re.compile(rb"\|(\d+)\|(\d+)")
_ERROR_MESSAGE = re.compile(rb"\(errormsg (\d+):")


def _module_errors(name: str, error: Exception, texts: Mapping[str, str]) -> list[Finding]:
    """policy.error findings, with file:line:column, from a RegoError raised while adding a module.

    rego-cpp reports errors as an S-expression whose strings are length-prefixed
    (`(error 8:bad.rego|49|1 (errormsg 16:this is unclosed) ...)`), offsets in bytes of the file."""
    raw = str(error.args[0] if error.args else error).encode("utf-8", "replace")
    found: list[Finding] = []
    position = 0
    while head := _ERROR_HEAD.search(raw, position):
        start = head.end()
        file = raw[start : start + int(head[1])].decode("utf-8", "replace")
        span = _ERROR_SPAN.match(raw, start + int(head[1]))
        message = _ERROR_MESSAGE.search(raw, start)
        if message is None:
            break
        text = raw[message.end() : message.end() + int(message[1])].decode("utf-8", "replace")
        position = message.end() + int(message[1])
        where = _location(file or name, int(span[1]) if span else None, texts)
        found.append(_error(f"{where}: {text}", "fix the Rego syntax (Rego v1: `import rego.v1`, `if`, `contains`)"))
    return found or [_error(f"{name}: {_first_line(error)}", "fix the Rego syntax")]


def _location(file: str, offset: int | None, texts: Mapping[str, str]) -> str:
    text = texts.get(file)
    if offset is None or text is None:
        return file
    before = text.encode("utf-8")[:offset].decode("utf-8", "replace")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return f"{file}:{line}:{column}"


def _output_errors(output: Any) -> list[str]:
    """The messages of an output that is not ok (an ErrorSeq of Error nodes: message, ast, code)."""
    from regopy import NodeKind
    from regopy.rego_shared import rego_node_value  # type: ignore[import-untyped]

    reasons = []
    try:
        sequence = output.node()
        for index in range(len(sequence)):
            parts = sequence.at(index)
            texts = {parts.at(i).kind: rego_node_value(parts.at(i)._impl) for i in range(len(parts))}
            code = texts.get(NodeKind.ErrorCode, "")
            message = texts.get(NodeKind.ErrorMessage, "")
            reasons.append(f"{code}: {message}" if code else message)
    except Exception:  # the error detail is best effort; the deny does not depend on it
        pass
    return [reason for reason in reasons if reason] or ["the interpreter reported an error without detail"]
