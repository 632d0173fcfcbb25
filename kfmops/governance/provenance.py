"""The W3C PROV document of every operation, written as PROV-JSON (and PROV-O Turtle on request).

PROV: ids are unique per operation and reference, so that the documents of many operations merge
without an entity holding two values or being generated twice. The operation is a prov:Activity
`kfm:apply/<apply id>` associated with the operator (`kfm:person/<name>`, a prov:Person), or from CI with
the run (`kfm:ci-run/<url>`, a prov:SoftwareAgent) that acted on behalf of the person who approved it.
It used the governance decision `kfm:decision/<apply id>` (decision and rules), and per changed reference
the before state `kfm:reference/<address>/<apply id>/before` and generated the after state
`.../after`, which wasDerivedFrom (a prov:Revision of) the before state. A create has no before entity;
a delete has no after entity and invalidates the before state instead. A state `kfm:points_at` the
dataset version `kfm:dataset/<name>@<version>` (one id everywhere: versions are immutable). A rollback
wasInformedBy the apply it undoes.

Must not: no network access; no global state.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kfmops.io.canonical import canonical_json
from kfmops.io.files import write_atomic

if TYPE_CHECKING:  # prov is imported when an operation records its lineage, not at start-up
    from prov.identifier import Namespace, QualifiedName
    from prov.model import ProvDocument

KFM_NAMESPACE = "https://kfmops.dev/ns/"
"""The `kfm:` namespace of PROV ids; an operation's OpenLineage runId is derived from its `kfm:apply/<id>`."""

_Attributes = dict["QualifiedName | str", "QualifiedName | str"]
"""Attributes of a PROV record: qualified names (prov:type) or `kfm:` prefixed strings, to text values."""


def write_prov(
    path: Path,
    apply: dict[str, Any],
    operator: str,
    references: list[dict[str, Any]],
    *,
    provo: bool = False,
) -> Path:
    """Write the W3C PROV document of one operation as PROV-JSON at `path`, and return `path`.

    `apply`: an ApplyRecord-like mapping: `apply_id`, `op_type` (or `operation`), `started`,
    `finished`, and optionally `plan_id`, `outcome`, `ci_run_url` (set when run from CI: the agent is
    then a prov:SoftwareAgent) and `openlineage_run_id`. `references`: `{"address", "kind",
    "backend", "before", "after"}` per changed reference; values are stored as canonical JSON text.
    With `provo=True` PROV-O (Turtle) is also written next to it, at `path.with_suffix(".ttl")`,
    when the prov package's RDF serializer is available (it needs rdflib, the `prov[rdf]` extra);
    otherwise a RuntimeWarning says it was skipped and only PROV-JSON is written.
    """
    from prov.serializers import DoNotExist
    from prov.serializers import get as prov_serializer

    document = prov_document(apply, operator, references)
    text = document.serialize(format="json")
    assert text is not None  # without a destination, prov returns the serialization
    write_atomic(path, text.encode())
    if provo:
        try:
            prov_serializer("rdf")
        except DoNotExist:
            warnings.warn(
                "PROV-O (Turtle) skipped: the prov package needs rdflib for it (pip install 'prov[rdf]'); "
                f"PROV-JSON was written to {path}",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            turtle = document.serialize(format="rdf", rdf_format="turtle")
            assert turtle is not None
            write_atomic(path.with_suffix(".ttl"), turtle.encode() if isinstance(turtle, str) else turtle)
    return path


def prov_document(apply: Mapping[str, Any], operator: str, references: Sequence[Mapping[str, Any]]) -> ProvDocument:
    """The PROV document of one operation (see the module docstring for its shape)."""
    op_type = apply.get("op_type") or apply.get("operation")
    if not apply.get("apply_id") or not op_type:
        raise ValueError("write_prov needs the apply's apply_id and op_type (or operation)")
    from prov.model import PROV, PROV_TYPE, ProvDocument

    apply_id = _local(apply["apply_id"])
    document = ProvDocument()
    kfm = document.add_namespace("kfm", KFM_NAMESPACE)
    attributes: _Attributes = {PROV_TYPE: kfm[str(op_type)], "kfm:op_type": str(op_type)}
    for key in ("plan_id", "outcome", "openlineage_run_id"):
        if apply.get(key):
            attributes[f"kfm:{key}"] = str(apply[key])
    activity = document.activity(f"kfm:apply/{apply_id}", apply.get("started"), apply.get("finished"), attributes)
    _agents(document, kfm, activity, apply, operator)
    if apply.get("rolls_back"):
        document.wasInformedBy(activity, f"kfm:apply/{_local(apply['rolls_back'])}")
    decision = apply.get("decision")
    if decision:
        rules = sorted({str(f.get("rule")) for f in decision.get("findings", ()) if f.get("rule")})
        judged = document.entity(
            f"kfm:decision/{apply_id}",
            {
                PROV_TYPE: kfm["GovernanceDecision"],
                "kfm:decision": str(decision.get("decision", "deny")),
                "kfm:rules": " ".join(rules),
            },
        )
        document.used(activity, judged, apply.get("started"))
    versions: dict[str, Any] = {}
    for reference in references:
        address = reference.get("address")
        if not address:
            raise ValueError(f"PROV reference {dict(reference)!r} lacks an address")
        before, after = reference.get("before"), reference.get("after")
        state = f"kfm:reference/{_local(address)}/{apply_id}"
        old = new = None
        if before is not None:
            pointed = _version(document, kfm, versions, reference.get("dataset"), reference.get("before_version"))
            old = document.entity(f"{state}/before", _state(kfm, reference, before, pointed))
            document.used(activity, old, apply.get("started"))
        if after is not None:
            pointed = _version(document, kfm, versions, reference.get("dataset"), reference.get("version"))
            new = document.entity(f"{state}/after", _state(kfm, reference, after, pointed))
            document.wasGeneratedBy(new, activity, apply.get("finished"))
        if old is not None and new is not None:
            document.wasDerivedFrom(new, old, activity, other_attributes={PROV_TYPE: PROV["Revision"]})
        elif old is not None:
            document.wasInvalidatedBy(old, activity, apply.get("finished"))
    return document


def _agents(document: ProvDocument, kfm: Namespace, activity: Any, apply: Mapping[str, Any], operator: str) -> None:
    """Who did it: the operator (a prov:Person); from CI, the run (a prov:SoftwareAgent) acting on behalf of
    the person who approved it (else the operator). An approver other than the operator is delegated to."""
    from prov.model import PROV, PROV_TYPE

    approver = apply.get("approved_by")
    ci_run_url = apply.get("ci_run_url")
    if ci_run_url:
        run = document.agent(
            f"kfm:ci-run/{_local(ci_run_url)}", {PROV_TYPE: PROV["SoftwareAgent"], "kfm:ci_run_url": str(ci_run_url)}
        )
        document.wasAssociatedWith(activity, run)
        document.actedOnBehalfOf(run, _person(document, approver or operator), activity)
        return
    person = _person(document, operator)
    document.wasAssociatedWith(activity, person)
    if approver and approver != operator:
        document.actedOnBehalfOf(person, _person(document, approver), activity)


def _person(document: ProvDocument, name: str) -> Any:
    from prov.model import PROV, PROV_TYPE

    return document.agent(f"kfm:person/{_local(name)}", {PROV_TYPE: PROV["Person"], "kfm:name": str(name)})


def _version(
    document: ProvDocument, kfm: Namespace, declared: dict[str, Any], dataset: Any, version: Any
) -> QualifiedName | None:
    """The entity of dataset version `dataset@version` (immutable, so one id across every document)."""
    if not dataset or not version:
        return None
    from prov.model import PROV_TYPE

    identifier = f"kfm:dataset/{_local(dataset)}@{_local(version)}"
    if identifier not in declared:
        declared[identifier] = document.entity(
            identifier,
            {PROV_TYPE: kfm["DatasetVersion"], "kfm:dataset": str(dataset), "kfm:version": str(version)},
        )
    name: QualifiedName = declared[identifier].identifier
    return name


def _local(name: Any) -> str:
    """`name` usable in an identifier that PROV-O turns into an IRI (spaces and the like percent-encoded)."""
    return quote(str(name), safe="@._-~/:")


def _state(kfm: Namespace, reference: Mapping[str, Any], value: Any, version: QualifiedName | None) -> _Attributes:
    from prov.model import PROV_TYPE

    state: _Attributes = {
        PROV_TYPE: kfm["ReferenceState"],
        "kfm:address": str(reference["address"]),
        "kfm:kind": str(reference.get("kind", "")),
        "kfm:backend": str(reference.get("backend", "")),
        "kfm:value": canonical_json(value),
    }
    if version is not None:
        state["kfm:points_at"] = version  # the dataset version this state of the reference points at
    return state
