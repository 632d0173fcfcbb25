"""Lineage of every operation: OpenLineage RunEvents (START, COMPLETE, FAIL) and a W3C PROV document.

OpenLineage: one run per apply/rollback/hotfix/recover; each changed reference is an output dataset
carrying the custom facet `kfmops_reference` (its before and after values, schema in
`schemas/lineage-facet.schema.json`). Events go through openlineage-python's own transports, built
here from the transport mapping the engine passes (file by default, or HTTP). The transport is used
directly rather than through `OpenLineageClient`, because the client also reads `openlineage.yml`
from the working directory and `OPENLINEAGE__*` variables (filters, tags, extra facets): what is
emitted must be exactly the event built here, whatever directory kfmops runs from.

PROV: the operation is a prov:Activity associated with the operator (prov:Person, or
prov:SoftwareAgent when run from CI); per changed reference the activity used the before state
`kfm:reference/<address>@before` and generated the after state `kfm:reference/<address>@after`, which
wasDerivedFrom (a prov:Revision of) the before state. A create has no before entity; a delete has
no after entity and invalidates the before state instead.

Must not: no network access except the configured HTTP transport; no global state (the library's
`set_producer` is never called: the producer is passed on every event and facet).
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kfmops.errors import KfmopsError
from kfmops.io.canonical import canonical_json
from kfmops.io.files import write_atomic

if TYPE_CHECKING:  # openlineage and prov are imported when an operation records its lineage, not at start-up
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.transport.transport import Transport
    from prov.identifier import Namespace, QualifiedName
    from prov.model import ProvDocument

KFM_NAMESPACE = "https://kfmops.dev/ns/"
FACET_KEY = "kfmops_reference"
FACET_SCHEMA_URL = "https://kfmops.dev/schemas/lineage-facet.schema.json#/$defs/KfmopsReferenceDatasetFacet"
EVENT_TYPES = ("START", "COMPLETE", "FAIL")


@cache
def reference_facet() -> type[Any]:
    """The dataset facet class `kfmops_reference` (built on first use: openlineage costs 0.3 s to import)."""
    import attr
    from openlineage.client.facet_v2 import DatasetFacet

    @attr.define
    class KfmopsReferenceDatasetFacet(DatasetFacet):
        """The before and after value of one managed reference changed by the run.

        OpenLineage's serializer drops null values, so an absent `before` means the reference did not
        exist (create) and an absent `after` means it was deleted; a null inside a value disappears too
        (kfmops values treat None as absent, so nothing is lost).
        """

        before: Any = attr.field(default=None)
        after: Any = attr.field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return FACET_SCHEMA_URL

    return KfmopsReferenceDatasetFacet


@cache
def _http_settings() -> frozenset[str]:
    import attr
    from openlineage.client.transport.http import HttpConfig

    return frozenset({field.name for field in attr.fields(HttpConfig)} - {"session", "adapter"}) | {
        "sslContext",
        "sslcontext",
    }


_Attributes = dict["QualifiedName | str", "QualifiedName | str"]
"""Attributes of a PROV record: qualified names (prov:type) or `kfm:` prefixed strings, to text values."""


def run_id_for(apply_id: str) -> str:
    """The OpenLineage runId of an operation: a UUID derived from its apply id, so recover finds it again."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{KFM_NAMESPACE}apply/{apply_id}"))


def emit_openlineage(
    run_id: str,
    event_type: str,
    job_name: str,
    namespace: str,
    outputs: list[dict[str, Any]],
    transport: dict[str, Any],
    producer: str,
    when: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """Build one RunEvent, send it through `transport`, and return it as the JSON-able dict that was sent.

    `outputs`: `{"name", "namespace", "before", "after"}` per changed reference (name: its address,
    namespace: `kfmops://<workspace>`). `transport`: `{"type": "file", "path": ...}` (JSON lines,
    appended; the folder is created) or `{"type": "http", "url": ..., ...}` (any HttpConfig setting:
    endpoint, timeout, auth, custom_headers, retry, ...). `when` defaults to now (UTC). `error` is the
    message of a FAIL event (an `errorMessage` run facet); it is refused on other event types.
    Raises ValueError for arguments the engine got wrong, KfmopsError when the transport fails.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"OpenLineage event type must be one of {', '.join(EVENT_TYPES)}, not {event_type!r}")
    if error is not None and event_type != "FAIL":
        raise ValueError(f"an error message belongs to a FAIL event, not {event_type}")
    try:
        uuid.UUID(run_id)
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"OpenLineage runId must be a UUID, not {run_id!r}; see run_id_for(apply_id)") from None
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import error_message_run
    from openlineage.client.serde import Serde

    run_facets: dict[str, Any] = {}
    if event_type == "FAIL":
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error or "the run failed without an error message",
            programmingLanguage="python",
            producer=producer,
        )
    event = RunEvent(
        eventType=RunState[event_type],
        eventTime=when or datetime.now(UTC).isoformat(),
        run=Run(runId=run_id, facets=run_facets),
        job=Job(namespace=namespace, name=job_name),
        outputs=[_output(item, producer) for item in outputs],
        producer=producer,
    )
    sender = _open_transport(transport)
    try:
        sender.emit(event)
    except Exception as exc:  # the library raises RuntimeError (file) or requests' errors (http)
        raise KfmopsError(
            f"could not send the OpenLineage {event_type} event through the {transport.get('type', 'file')} "
            f"transport: {exc}"
        ) from exc
    finally:
        sender.close()
    return Serde.to_dict(event)


def _output(item: Mapping[str, Any], producer: str) -> OutputDataset:
    from openlineage.client.event_v2 import OutputDataset

    missing = [key for key in ("name", "namespace") if not item.get(key)]
    if missing:
        raise ValueError(f"OpenLineage output {dict(item)!r} lacks {', '.join(missing)}")
    facet = reference_facet()(before=item.get("before"), after=item.get("after"), producer=producer)
    return OutputDataset(namespace=item["namespace"], name=item["name"], facets={FACET_KEY: facet})


def _open_transport(config: Mapping[str, Any]) -> Transport:
    from openlineage.client.transport.file import FileConfig, FileTransport
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    kind = config.get("type", "file")
    if kind == "file":
        if not config.get("path"):
            raise KfmopsError("lineage transport 'file' needs a 'path' (a JSON lines file)")
        path = Path(config["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        # append=True: one file, one line per event. The library's default (append=False) writes a new
        # timestamped file per event instead.
        return FileTransport(FileConfig(log_file_path=str(path), append=True))
    if kind == "http":
        settings = {key: value for key, value in config.items() if key != "type"}
        unknown = sorted(set(settings) - _http_settings())
        if unknown:  # HttpConfig.from_dict silently drops keys it does not know
            raise KfmopsError(
                f"lineage transport 'http': unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_http_settings()))}"
            )
        if not settings.get("url"):
            raise KfmopsError("lineage transport 'http' needs a 'url'")
        return HttpTransport(HttpConfig.from_dict(settings))
    raise KfmopsError(f"unknown lineage transport type {kind!r}: use 'file' or 'http'")


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
    from prov.model import PROV, PROV_TYPE, ProvDocument

    op_type = apply.get("op_type") or apply.get("operation")
    if not apply.get("apply_id") or not op_type:
        raise ValueError("write_prov needs the apply's apply_id and op_type (or operation)")
    document = ProvDocument()
    kfm = document.add_namespace("kfm", KFM_NAMESPACE)
    attributes: _Attributes = {PROV_TYPE: kfm[str(op_type)], "kfm:op_type": str(op_type)}
    for key in ("plan_id", "outcome", "openlineage_run_id"):
        if apply.get(key):
            attributes[f"kfm:{key}"] = str(apply[key])
    activity = document.activity(
        f"kfm:apply/{_local(apply['apply_id'])}", apply.get("started"), apply.get("finished"), attributes
    )
    ci_run_url = apply.get("ci_run_url")
    agent_attributes: _Attributes = {PROV_TYPE: PROV["SoftwareAgent"] if ci_run_url else PROV["Person"]}
    if ci_run_url:
        agent_attributes["kfm:ci_run_url"] = str(ci_run_url)
    agent_attributes["kfm:operator"] = operator
    agent = document.agent(f"kfm:agent/{_local(operator)}", agent_attributes)
    document.wasAssociatedWith(activity, agent)
    for reference in references:
        address = reference.get("address")
        if not address:
            raise ValueError(f"PROV reference {dict(reference)!r} lacks an address")
        before, after = reference.get("before"), reference.get("after")
        old = new = None
        if before is not None:
            old = document.entity(f"kfm:reference/{_local(address)}@before", _state(kfm, reference, before))
            document.used(activity, old, apply.get("started"))
        if after is not None:
            new = document.entity(f"kfm:reference/{_local(address)}@after", _state(kfm, reference, after))
            document.wasGeneratedBy(new, activity, apply.get("finished"))
        if old is not None and new is not None:
            document.wasDerivedFrom(new, old, activity, other_attributes={PROV_TYPE: PROV["Revision"]})
        elif old is not None:
            document.wasInvalidatedBy(old, activity, apply.get("finished"))
    return document


def _local(name: Any) -> str:
    """`name` usable in an identifier that PROV-O turns into an IRI (spaces and the like percent-encoded)."""
    return quote(str(name), safe="@._-~/:")


def _state(kfm: Namespace, reference: Mapping[str, Any], value: Any) -> _Attributes:
    from prov.model import PROV_TYPE

    return {
        PROV_TYPE: kfm["ReferenceState"],
        "kfm:address": str(reference["address"]),
        "kfm:kind": str(reference.get("kind", "")),
        "kfm:backend": str(reference.get("backend", "")),
        "kfm:value": canonical_json(value),
    }
