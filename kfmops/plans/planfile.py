"""The plan file: the only module that knows its bytes. Writes, reads and verifies plan JSON.

A plan file carries a sha256 `digest` over the canonical JSON of everything else, and an HMAC
`signature` of that digest when KFMOPS_PLAN_KEY is set. Reading refuses unknown format versions,
any changed byte, and a missing or wrong signature when a key is configured.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from kfmops import __version__
from kfmops.engine.files import write_atomic
from kfmops.errors import Diagnostic, InputError
from kfmops.plans.model import Action, Change, Plan, StateRef
from kfmops.references import Reference, canonical_json

FORMAT_VERSION = 1
KEY_VARIABLE = "KFMOPS_PLAN_KEY"


def to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as the JSON document of schemas/plan.schema.json, digest (and signature) included."""
    body: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kfmops_version": __version__,
        "plan_id": plan.plan_id,
        "created_at": plan.created_at,
        "operation": plan.operation,
        "workspace": plan.workspace,
        "git": plan.git,
        "desired_digest": plan.desired_digest,
        "state": {"lineage": plan.state.lineage, "serial": plan.state.serial},
        "origin": plan.origin,
        "changes": [_change(change) for change in plan.changes],
        "datasets": plan.datasets,
        "drift": list(plan.drift),
        "policy": plan.policy,
        "summary": plan.summary(),
    }
    body["digest"] = _digest(body)
    key = os.environ.get(KEY_VARIABLE)
    if key:
        body["signature"] = _sign(key, body["digest"])
    return body


def _change(change: Change) -> dict[str, Any]:
    reference = change.reference
    return {
        "address": change.address,
        "kind": reference.kind,
        "backend": reference.backend,
        "dataset": reference.dataset,
        "locator": reference.locator,
        "action": change.action.value,
        "before": change.before,
        "after": change.after,
        "reason": change.reason,
        "source": change.source,
        "version": change.version,
        "precondition": change.precondition,
    }


def from_dict(body: dict[str, Any], name: str = "plan") -> Plan:
    """A verified Plan from its JSON document; raises InputError naming what does not match."""
    if not isinstance(body, dict):
        raise _refused(name, "it is not a JSON object")
    version = body.get("format_version")
    if version != FORMAT_VERSION:
        raise _refused(
            name,
            f"its format_version {version!r} is not {FORMAT_VERSION}, the only one this "
            f"kfmops {__version__} reads; make the plan again with this version",
        )
    recorded = body.get("digest")
    unsigned = {k: v for k, v in body.items() if k not in {"digest", "signature"}}
    if recorded != _digest(unsigned):
        raise _refused(name, "its digest does not match its content (the file was changed after it was written)")
    key = os.environ.get(KEY_VARIABLE)
    if key and not hmac.compare_digest(str(body.get("signature", "")), _sign(key, recorded)):
        raise _refused(name, f"its signature does not verify with {KEY_VARIABLE} (unsigned or signed with another key)")
    try:
        changes = tuple(
            Change(
                Reference(c["address"], c["kind"], c["backend"], c["locator"], c.get("dataset")),
                Action(c["action"]),
                c["before"],
                c["after"],
                c["reason"],
                c.get("source"),
                c.get("version"),
            )
            for c in body["changes"]
        )
        return Plan(
            plan_id=body["plan_id"],
            created_at=body["created_at"],
            operation=body["operation"],
            workspace=body["workspace"],
            state=StateRef(body["state"]["lineage"], body["state"]["serial"]),
            changes=changes,
            desired_digest=body.get("desired_digest"),
            git=body.get("git") or {},
            datasets=body.get("datasets") or {},
            policy=body["policy"],
            drift=tuple(body.get("drift") or ()),
            origin=body.get("origin") or {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _refused(name, f"it lacks or mistypes a required field ({exc})") from None


def write(plan: Plan, path: Path) -> dict[str, Any]:
    body = to_dict(plan)
    # Compact JSON: the C encoder is an order of magnitude faster on plans of 10,000s of changes;
    # `kfmops show FILE --format json` prints it indented.
    write_atomic(path, (json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
    return body


def read(path: Path) -> Plan:
    if not path.is_file():
        raise InputError([Diagnostic(f"plan file {path} does not exist")])
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _refused(str(path), f"it is not valid JSON ({exc})") from None
    return from_dict(body, str(path))


def _digest(body: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _sign(key: str, digest: str) -> str:
    return "hmac-sha256:" + hmac.new(key.encode(), digest.encode(), hashlib.sha256).hexdigest()


def _refused(name: str, why: str) -> InputError:
    return InputError([Diagnostic(f"plan refused: {why}", file=name)])
