"""The policy gate: every plan is judged once, before anything it moves is written.

Fails closed: a deny (or an evaluation error, which is a deny) stops the operation before the WAL
begins. The gate answers; the engine decides when to ask and emits what it heard.

A verdict is sealed (`PolicyResult.judged`) with the digest of everything it depends on: the policy
input (facts gathered then included), the policy files, the settings, kfmops' program and the UTC day
(rules judge consent expiry against today). A plan file records it; applying a signed plan whose
seal matches the input gathered under the lock reuses the verdict instead of running every query
again. Unsigned plans are always judged again: anyone could write their seal.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from kfmops.errors import PolicyDenied
from kfmops.governance.checkpoints import RULE_PREFIX
from kfmops.governance.facts import gather
from kfmops.governance.policy import DEFAULT_POLICY_DIR, PolicyResult, decide, evaluate, load_policies
from kfmops.io import clock
from kfmops.io.canonical import canonical_json
from kfmops.io.sealed import program_digest
from kfmops.plans import codec, planfile
from kfmops.plans.model import Action, Plan
from kfmops.providers.registry import Providers
from kfmops.workspace import Workspace


class PolicyGate:
    def __init__(self, workspace: Workspace, providers: Providers):
        self.providers = providers
        settings = workspace.section("policy")
        self.settings = {k: v for k, v in settings.items() if k not in {"paths", "defaults"}}
        extra = [workspace.root / path for path in settings.get("paths", [])]
        if settings.get("defaults", True):
            self.policies = load_policies(DEFAULT_POLICY_DIR, extra)
        else:
            self.policies = load_policies(extra[0], extra[1:]) if extra else []
        self._judged: dict[str, PolicyResult] = {}

    def check(self, plan: Plan) -> PolicyResult:
        """The policy decision over `plan` (governance.policy: a query per group of datasets), judged on
        facts gathered now from the data of the versions its datasets point at: the facts a plan file
        carries are never trusted. A plan this gate judged already, with the same input (facts included;
        its own earlier verdict aside), gets that decision again: `apply --auto-approve` judges its plan
        when it is made and again under the lock. So does a signed plan that records it (see the module)."""
        facts = gather(self.providers, plan.datasets)
        # checkpoint results are the session's to add (governance.checkpoints): a plan file's are never judged
        document = policy_input(replace(plan, facts=facts, checks=()))
        key = self._key({name: value for name, value in document.items() if name != "policy"})
        if key not in self._judged:
            result = self._recorded(plan, key) or evaluate(document, self.policies, self.settings)
            self._judged[key] = replace(result, facts=facts, judged=seal(key, result))
        return self._judged[key]

    def _key(self, judged: dict[str, Any]) -> str:
        """The digest of everything a verdict over the policy input `judged` depends on."""
        digest = hashlib.sha256()
        for part in (
            program_digest(),
            clock.today(),
            canonical_json([self.policies, self.settings]),
            canonical_json(judged),
        ):
            digest.update(part.encode() + b"\0")
        return digest.hexdigest()

    def _recorded(self, plan: Plan, key: str) -> PolicyResult | None:
        """The verdict `plan` records, when it is this gate's verdict over the input of `key`: the plan is signed
        (with KFMOPS_PLAN_KEY set, planfile reads no other) and its seal is that of `key` and of the findings it
        records, checkpoint findings aside (the session runs checkpoints again and adds its own)."""
        if not planfile.signed() or not plan.policy.get("judged"):
            return None
        recorded = PolicyResult.from_dict(plan.policy)
        own = decide(f for f in recorded.findings if not f.rule.startswith(RULE_PREFIX))
        candidate = replace(own, decisions=recorded.decisions)
        return candidate if seal(key, candidate) == recorded.judged else None


def seal(key: str, result: PolicyResult) -> str:
    """The seal of `result` (its findings and decisions, not its own seal) as the verdict over the input of `key`."""
    found = {name: value for name, value in result.to_dict().items() if name != "judged"}
    return "sha256:" + hashlib.sha256(f"{key}\0{canonical_json(found)}".encode()).hexdigest()


def denied(result: PolicyResult, operation: str) -> PolicyDenied:
    """The error (exit 3) of a denied `operation`, naming every denying finding and its fix."""
    lines = [
        f"{f.rule}: {f.address or '-'}: {f.message}" + (f" (fix: {f.fix})" if f.fix else "")
        for f in result.findings
        if f.severity == "deny"
    ]
    checkpoints = all(f.rule.startswith(RULE_PREFIX) for f in result.findings if f.severity == "deny")
    what = "a failed checkpoint blocks" if checkpoints else "policy denies"
    return PolicyDenied(f"{what} this {operation}; nothing was changed:\n  " + "\n  ".join(lines))


def policy_input(plan: Plan) -> dict[str, Any]:
    """The plan JSON without its no-op changes: they move nothing, and a plan of 10,000 references
    that are up to date would otherwise cost seconds to hand to the interpreter. Findings are the same
    as `opa`/`conftest` give on the full `kfmops show --format json` (the summary still counts no-ops)."""
    moving = tuple(change for change in plan.changes if change.action is not Action.NOOP)
    return codec.plan_to_dict(replace(plan, changes=moving)) | {"summary": plan.summary()}
