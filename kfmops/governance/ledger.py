"""The governance ledger: one hash-chained entry per apply, rollback, hotfix or recover, and one per
attempt policy denied (`outcome: denied`). An entry says why (reason), who ran and approved it, the git
commit and CI run it came from, the consents of the datasets it touches, and what a rollback undoes.

The chain itself is a store (`stores.base.LedgerChain`; by default a JSON-lines file at
`docs/reports/audit/data_provenance_ledger.jsonl` under the workspace root, or the workspace's
`ledger.path`). This module decides what an entry says and checks it before it is chained.

Must not: the ledger never holds a secret. `append` refuses keys named like credentials and values
shaped like them (`io.redact.refuse_secrets`), and entries that do not match
`schemas/ledger-entry.schema.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kfmops.io import chain
from kfmops.io.canonical import digest
from kfmops.io.clock import now
from kfmops.io.redact import Redactor, refuse_secrets
from kfmops.plans.model import Action, Operation, Plan
from kfmops.plans.transaction import Transaction
from kfmops.schemas import record_problems
from kfmops.stores.base import LedgerChain

DEFAULT_PATH = Path("docs/reports/audit/data_provenance_ledger.jsonl")
LEDGER_KEY = "KFMOPS_LEDGER_KEY"
"""With this environment variable set, the chain is keyed (HMAC-SHA256): re-hashing it needs the key."""
GENESIS = chain.GENESIS
ADDED_FIELDS = ("seq", "prev_hash", "hash")
OP_TYPES = {
    Operation.APPLY: "apply",
    Operation.REFRESH: "apply",
    Operation.ROLLBACK: "rollback",
    Operation.HOTFIX: "hotfix",
    Operation.RECOVER: "recover",
    Operation.REPAIR: "repair",
}
CONSENT_FIELDS = ("authority", "reference", "granted", "expires")


def ledger_path(root: Path, settings: Mapping[str, Any]) -> Path:
    """The ledger file of the workspace at `root`: its `ledger.path` setting (relative to root) or the default."""
    return root / Path(settings.get("path") or DEFAULT_PATH)


def digest_values(values: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of the canonical JSON of `values` (address -> value): an entry's before/after digest."""
    return digest(values)


class Ledger:
    """The ledger over a chain store: every entry checked, then chained."""

    def __init__(self, store: LedgerChain):
        self.store = store

    @property
    def location(self) -> str:
        return self.store.location()

    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Store `entry` as the next link and return it as stored (with seq, time, prev_hash, hash).

        Raises ValueError when the entry sets seq/prev_hash/hash itself, holds something that looks
        like a credential, is not JSON, or does not match `schemas/ledger-entry.schema.json`.
        """
        if not isinstance(entry, Mapping):
            raise ValueError("a ledger entry must be a mapping")
        preset = [key for key in ADDED_FIELDS if key in entry]
        if preset:
            raise ValueError(f"ledger entry sets {', '.join(preset)}; the ledger assigns these itself")
        refuse_secrets(entry)
        try:
            # A JSON round trip first, so that the hash is computed over exactly what a reader will parse.
            fields = json.loads(json.dumps(entry, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ledger entry is not plain JSON: {exc}") from None
        fields.setdefault("time", now())
        # Checked before the chain is touched; seq and hashes are placeholders of the right shape.
        problems = sorted(record_problems({"seq": 1, **fields, "prev_hash": GENESIS, "hash": GENESIS}, "ledger-entry"))
        if problems:
            raise ValueError("ledger entry does not match schemas/ledger-entry.schema.json: " + "; ".join(problems))
        return self.store.append(fields)

    def entries(self) -> list[dict[str, Any]]:
        return self.store.entries()

    def head(self) -> dict[str, Any] | None:
        """`{"seq", "hash"}` of the last entry, to keep elsewhere and pass back to `verify`; None when empty."""
        entries = self.entries()
        return {"seq": entries[-1].get("seq"), "hash": entries[-1].get("hash")} if entries else None

    def verify(self, *, head: Mapping[str, Any] | None = None) -> list[str]:
        return self.store.verify(head=head)

    def recorded(self, apply_id: str, op_type: str) -> bool:
        """Whether an entry for this operation is already in the chain (recording is redone after a crash)."""
        return any(e.get("apply_id") == apply_id and e.get("op_type") == op_type for e in self.entries())


def entry_for(
    transaction: Transaction,
    *,
    findings: list[dict[str, Any]],
    decisions: list[dict[str, Any]],
    lineage_refs: dict[str, str],
    redact: Redactor,
) -> dict[str, Any]:
    """The ledger entry of a settled transaction; its free text (reason, error) redacted, never dropped.
    `decisions`: policy's access decisions (rationale and obligations) over the datasets it judged."""
    outputs = transaction.outputs() if transaction.outcome == "committed" else transaction.mutations
    overrides = transaction.origin.get("overrides")
    return (
        ({"overrides": overrides} if overrides else {})
        | ({"access_decisions": decisions} if decisions else {})
        | {
            "op_type": OP_TYPES[transaction.operation],
            "apply_id": transaction.id,
            "plan_id": transaction.plan_id,
            "wal_ids": [f"{transaction.id}.jsonl"],
            "outcome": str(transaction.outcome),
            "operator": transaction.operator,
            "reason": redact.text(reason) if (reason := transaction.reason or transaction.error) else None,
            "lineage_refs": lineage_refs,
            "sovereignty_findings": [f for f in findings if str(f.get("rule", "")).startswith("sovereignty.")],
            "care_review_status": _reviews(transaction.datasets),
            "before_digest": digest_values({c.address: c.before for c in outputs}),
            "after_digest": digest_values({c.address: c.after for c in outputs}),
            "changes": {
                action: [c.address for c in transaction.moves if c.action is Action(action)]
                for action in ("create", "update", "delete")
            }
            | {
                action: addresses
                for action in ("import", "forget")
                if (addresses := [c.address for c in transaction.moves if c.action is Action(action)])
            }
            | {"no_op": transaction.summary()["no_op"]},
            "compensated": list(transaction.compensated),
        }
        | _context(transaction.rolls_back, transaction.origin, transaction.datasets)
    )


def denial_entry(
    operation: Operation,
    plan: Plan,
    *,
    attempt_id: str,
    operator: str,
    reason: str | None,
    origin: Mapping[str, Any],
    findings: Sequence[Mapping[str, Any]],
    lineage_refs: dict[str, str],
    redact: Redactor,
) -> dict[str, Any]:
    """The ledger entry of an attempt policy denied: nothing was written, so no WAL and no digests."""
    mutations = plan.mutations
    return {
        "op_type": OP_TYPES[operation],
        "apply_id": attempt_id,
        "plan_id": plan.plan_id,
        "wal_ids": [],
        "outcome": "denied",
        "operator": operator,
        "reason": redact.text(reason) if reason else None,
        "lineage_refs": lineage_refs,
        "sovereignty_findings": [dict(f) for f in findings if str(f.get("rule", "")).startswith("sovereignty.")],
        "denied_by": [
            {"rule": f.get("rule"), "address": f.get("address"), "message": redact.text(str(f.get("message", "")))}
            for f in findings
            if f.get("severity") == "deny"
        ],
        "care_review_status": _reviews(plan.datasets),
        "changes": {
            action: [c.address for c in mutations if c.action is Action(action)]
            for action in ("create", "update", "delete")
        }
        | {"no_op": len(plan.changes) - len(mutations)},
    } | _context(plan.origin.get("rolls_back"), origin, plan.datasets)


def _context(rolls_back: str | None, origin: Mapping[str, Any], datasets: Mapping[str, Any]) -> dict[str, Any]:
    """What an entry says about where an operation came from: the apply it undoes, the git commit, the CI
    run, who approved it, the consent (authority and reference) each dataset it touches holds, and the
    checkpoint results of the versions it points at."""
    fields = {
        "rolls_back": rolls_back,
        "git_commit": origin.get("git_commit"),
        "ci_run_url": origin.get("ci_run_url"),
        "approved_by": origin.get("approved_by"),
    }
    consents = {
        name: {key: str(value) for key, value in consent.items() if key in CONSENT_FIELDS}
        for name, record in datasets.items()
        if isinstance(consent := (record.get("care") or {}).get("consent"), Mapping)
    }
    checks = origin.get("checks")
    return (
        {key: value for key, value in fields.items() if value}
        | ({"consents": consents} if consents else {})
        | ({"checks": list(checks)} if checks else {})
    )


def _reviews(datasets: Mapping[str, Any]) -> dict[str, str]:
    return {name: str((record.get("care") or {}).get("review", "unreviewed")) for name, record in datasets.items()}
