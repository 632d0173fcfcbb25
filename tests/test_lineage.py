"""Lineage: OpenLineage RunEvents through the library's transports, and the W3C PROV document of an apply."""

from __future__ import annotations

import importlib.util
import json
import threading
import uuid
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import prov
import pytest
from conftest import ROOT
from jsonschema import Draft202012Validator
from openlineage.client.serde import Serde
from prov.model import PROV, PROV_TYPE, ProvDocument

from kfmops.errors import KfmopsError
from kfmops.governance.lineage import FACET_KEY, FACET_SCHEMA_URL, emit_openlineage, run_id_for
from kfmops.governance.provenance import prov_document, write_prov

PRODUCER = "https://github.com/kfm/kfmops/tree/0.1.0"
NAMESPACE = "kfmops://kansas"
RUN_ID = run_id_for("apply-20261126T153000Z-3f9a1c")

# The parts of the OpenLineage 2-0-2 RunEvent schema that kfmops relies on (the spec is not shipped offline).
RUN_EVENT_SHAPE = {
    "type": "object",
    "required": ["eventTime", "eventType", "producer", "schemaURL", "run", "job", "outputs"],
    "properties": {
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "eventTime": {"type": "string", "pattern": "T"},
        "producer": {"type": "string", "pattern": "^https://"},
        "schemaURL": {"const": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"},
        "run": {
            "type": "object",
            "required": ["runId"],
            "properties": {"runId": {"type": "string", "pattern": "^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$"}},
        },
        "job": {
            "type": "object",
            "required": ["namespace", "name"],
            "properties": {"namespace": {"type": "string"}, "name": {"type": "string"}},
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["namespace", "name", "facets"],
                "properties": {"facets": {"type": "object"}},
            },
        },
    },
}


def outputs() -> list[dict[str, Any]]:
    """A promotion (update), a new cache pointer (create) and a removed STAC link (delete)."""
    return [
        {
            "name": "dataset.landcover-1992.search",
            "namespace": NAMESPACE,
            "before": {"indices": ["kfm-landcover-1992-v1"], "write_index": "kfm-landcover-1992-v1"},
            "after": {"indices": ["kfm-landcover-1992-v2"], "write_index": "kfm-landcover-1992-v2"},
        },
        {"name": "dataset.landcover-1992.cache", "namespace": NAMESPACE, "before": None, "after": "v2"},
        {"name": "stac_link.legacy", "namespace": NAMESPACE, "before": {"catalog.json": {"child": ["a"]}}},
    ]


def facet_schema() -> dict[str, Any]:
    schema = json.loads((ROOT / "kfmops" / "data" / "schemas" / "lineage-facet.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return schema


def emit(event_type: str, path: Path, **extra: Any) -> dict[str, Any]:
    return sent(
        emit_openlineage(
            RUN_ID,
            event_type,
            "apply",
            NAMESPACE,
            outputs(),
            {"type": "file", "path": str(path)},
            PRODUCER,
            **extra,
        )
    )


def sent(event: Any) -> dict[str, Any]:
    """The JSON of an event emit_openlineage returned."""
    return Serde.to_dict(event)


def test_start_complete_fail_are_appended_to_the_file_transport(tmp_path: Path) -> None:
    path = tmp_path / "lineage" / "openlineage.jsonl"  # the folder does not exist yet
    returned = [
        emit("START", path, when="2026-11-26T15:30:00+00:00"),
        emit("COMPLETE", path),
        emit("FAIL", path, error="search: alias kfm-landcover-1992 swap refused (HTTP 409)"),
    ]

    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert written == returned
    shape = Draft202012Validator(RUN_EVENT_SHAPE)
    for event in written:
        assert list(shape.iter_errors(event)) == []
    assert [event["eventType"] for event in written] == ["START", "COMPLETE", "FAIL"]
    assert {event["run"]["runId"] for event in written} == {RUN_ID}
    assert written[0]["eventTime"] == "2026-11-26T15:30:00+00:00"
    assert all(event["job"] == {"namespace": NAMESPACE, "name": "apply", "facets": {}} for event in written)
    assert [o["name"] for o in written[1]["outputs"]] == [o["name"] for o in outputs()]


def test_the_reference_facet_matches_its_schema(tmp_path: Path) -> None:
    event = emit("COMPLETE", tmp_path / "ol.jsonl")
    schema = facet_schema()
    validator = Draft202012Validator(schema)
    for output in event["outputs"]:
        assert list(validator.iter_errors(output["facets"])) == []
        facet = output["facets"][FACET_KEY]
        assert facet["_producer"] == PRODUCER
        assert facet["_schemaURL"] == FACET_SCHEMA_URL
    # _schemaURL points into the schema file, as OpenLineage facet conventions want.
    base, fragment = FACET_SCHEMA_URL.split("#")
    assert base == schema["$id"]
    assert fragment.split("/")[1:] == ["$defs", "KfmopsReferenceDatasetFacet"]
    assert "KfmopsReferenceDatasetFacet" in schema["$defs"]

    promoted, created, deleted = (output["facets"][FACET_KEY] for output in event["outputs"])
    assert promoted["before"]["indices"] == ["kfm-landcover-1992-v1"]
    assert promoted["after"]["indices"] == ["kfm-landcover-1992-v2"]
    assert "before" not in created and created["after"] == "v2"  # OpenLineage's serializer drops nulls
    assert "after" not in deleted


def test_the_schema_refuses_a_facet_without_producer() -> None:
    validator = Draft202012Validator(facet_schema())
    assert not validator.is_valid({FACET_KEY: {"_schemaURL": FACET_SCHEMA_URL, "after": "v2"}})
    assert not validator.is_valid({FACET_KEY: {"_producer": PRODUCER, "_schemaURL": "x", "after": "v2"}})


def test_fail_carries_the_error_message_and_only_fail_does(tmp_path: Path) -> None:
    failed = emit("FAIL", tmp_path / "ol.jsonl", error="write failed: connection reset")
    facet = failed["run"]["facets"]["errorMessage"]
    assert facet["message"] == "write failed: connection reset"
    assert facet["programmingLanguage"] == "python"
    assert facet["_schemaURL"].endswith("ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet")
    assert emit("COMPLETE", tmp_path / "ol.jsonl")["run"]["facets"] == {}
    with pytest.raises(ValueError, match="FAIL"):
        emit("START", tmp_path / "ol.jsonl", error="not a failure")


@pytest.mark.parametrize(
    ("run_id", "event_type", "message"),
    [
        ("apply-20261126T153000Z-3f9a1c", "START", "UUID"),
        (RUN_ID, "ABORTED", "START, COMPLETE, FAIL"),
    ],
)
def test_wrong_arguments_are_refused(tmp_path: Path, run_id: str, event_type: str, message: str) -> None:
    path = tmp_path / "ol.jsonl"
    with pytest.raises(ValueError, match=message):
        emit_openlineage(run_id, event_type, "apply", NAMESPACE, [], {"type": "file", "path": str(path)}, PRODUCER)
    assert not path.exists()


def test_run_ids_are_stable_uuids_per_apply() -> None:
    assert run_id_for("apply-1") == run_id_for("apply-1") != run_id_for("apply-2")
    assert uuid.UUID(run_id_for("apply-1")).version == 5


@pytest.mark.parametrize(
    ("transport", "message"),
    [
        ({"type": "file"}, "needs a 'path'"),
        ({"type": "http"}, "needs a 'url'"),
        ({"type": "http", "url": "http://127.0.0.1:9", "path": "/x"}, "unknown setting"),
        ({"type": "kafka"}, "unknown lineage transport"),
    ],
)
def test_transport_configuration_errors_are_clear(transport: dict[str, Any], message: str) -> None:
    with pytest.raises(KfmopsError, match=message):
        emit_openlineage(RUN_ID, "START", "apply", NAMESPACE, [], transport, PRODUCER)


class Receiver(BaseHTTPRequestHandler):
    """Records each POST; answers with the status the test sets."""

    received: list[tuple[str, dict[str, str], dict[str, Any]]]
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), json.loads(body)))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[Receiver]]]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    handler = type("Handler", (Receiver,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_transport_posts_the_event(receiver: tuple[str, type[Receiver]]) -> None:
    url, handler = receiver
    transport = {"type": "http", "url": url, "endpoint": "api/v1/lineage", "custom_headers": {"X-Kfm": "1"}}
    event = sent(emit_openlineage(RUN_ID, "START", "apply", NAMESPACE, outputs(), transport, PRODUCER))
    [(path, headers, body)] = handler.received
    assert path == "/api/v1/lineage"
    assert headers["X-Kfm"] == "1"
    assert body == event


def test_http_errors_become_one_clear_error(receiver: tuple[str, type[Receiver]]) -> None:
    url, handler = receiver
    handler.status = 500
    transport = {"type": "http", "url": url, "retry": {"total": 0}}
    with pytest.raises(KfmopsError, match="could not send the OpenLineage START event through the http transport"):
        emit_openlineage(RUN_ID, "START", "apply", NAMESPACE, [], transport, PRODUCER)


APPLY = {
    "apply_id": "apply-20261126T153000Z-3f9a1c",
    "plan_id": "plan-20261126T152900Z-0c1d2e",
    "operation": "apply",
    "operator": "ana@ks-gis-01",
    "started": "2026-11-26T15:30:00+00:00",
    "finished": "2026-11-26T15:30:04+00:00",
    "outcome": "committed",
}
REFERENCES = [
    {
        "address": "dataset.landcover-1992.search",
        "kind": "search",
        "backend": "local",
        "dataset": "landcover-1992",
        "before": {"indices": ["kfm-landcover-1992-v1"], "write_index": None},
        "after": {"indices": ["kfm-landcover-1992-v2"], "write_index": None},
        "before_version": "v1",
        "version": "v2",
    },
    {
        "address": "dataset.landcover-1992.cache",
        "kind": "cache",
        "backend": "redis",
        "dataset": "landcover-1992",
        "before": None,
        "after": "v2",
        "version": "v2",
    },
    {"address": "stac_link.legacy", "kind": "stac", "backend": "local", "before": "old", "after": None},
]


def records(document: ProvDocument, kind: str) -> list[Any]:
    return [record for record in document.get_records() if record.get_type() == PROV[kind]]


def identifier(record: Any, attribute: str) -> str:
    return str(record.get_attribute(f"prov:{attribute}").pop())


def test_prov_document_round_trips_with_activity_agent_and_entities(tmp_path: Path) -> None:
    path = write_prov(tmp_path / "prov" / "apply.prov.json", APPLY, "ana@ks-gis-01", REFERENCES)
    assert path == tmp_path / "prov" / "apply.prov.json"
    document = prov.read(path, format="json")
    assert document == ProvDocument.deserialize(path, format="json")
    assert document == prov_document(APPLY, "ana@ks-gis-01", REFERENCES)

    [activity] = records(document, "Activity")
    assert str(activity.identifier) == "kfm:apply/apply-20261126T153000Z-3f9a1c"
    assert activity.get_startTime().isoformat() == "2026-11-26T15:30:00+00:00"
    assert activity.get_endTime().isoformat() == "2026-11-26T15:30:04+00:00"
    assert {str(value) for value in activity.get_attribute("kfm:op_type")} == {"apply"}

    [agent] = records(document, "Agent")
    assert str(agent.identifier) == "kfm:person/ana@ks-gis-01"
    assert PROV["Person"] in agent.get_attribute(PROV_TYPE)
    [association] = records(document, "Association")
    assert identifier(association, "activity") == str(activity.identifier)
    assert identifier(association, "agent") == str(agent.identifier)

    state = "kfm:reference/{}/apply-20261126T153000Z-3f9a1c/{}"
    entities = {str(entity.identifier): entity for entity in records(document, "Entity")}
    assert set(entities) == {
        state.format("dataset.landcover-1992.search", "before"),
        state.format("dataset.landcover-1992.search", "after"),
        state.format("dataset.landcover-1992.cache", "after"),
        state.format("stac_link.legacy", "before"),
        "kfm:dataset/landcover-1992@v1",
        "kfm:dataset/landcover-1992@v2",
    }
    after = entities[state.format("dataset.landcover-1992.search", "after")]
    assert json.loads(after.get_attribute("kfm:value").pop()) == REFERENCES[0]["after"]
    assert {str(v) for v in after.get_attribute("kfm:points_at")} == {"kfm:dataset/landcover-1992@v2"}
    before = entities[state.format("dataset.landcover-1992.search", "before")]
    assert {str(v) for v in before.get_attribute("kfm:points_at")} == {"kfm:dataset/landcover-1992@v1"}
    version = entities["kfm:dataset/landcover-1992@v2"]
    assert {str(v) for v in version.get_attribute(PROV_TYPE)} == {"kfm:DatasetVersion"}

    used = {identifier(record, "entity") for record in records(document, "Usage")}
    generated = {identifier(record, "entity") for record in records(document, "Generation")}
    assert used == {state.format("dataset.landcover-1992.search", "before"), state.format("stac_link.legacy", "before")}
    assert generated == {
        state.format("dataset.landcover-1992.search", "after"),
        state.format("dataset.landcover-1992.cache", "after"),
    }
    [derivation] = records(document, "Derivation")
    assert identifier(derivation, "generatedEntity") == state.format("dataset.landcover-1992.search", "after")
    assert identifier(derivation, "usedEntity") == state.format("dataset.landcover-1992.search", "before")
    assert PROV["Revision"] in derivation.get_attribute(PROV_TYPE)
    [invalidation] = records(document, "Invalidation")
    assert identifier(invalidation, "entity") == state.format("stac_link.legacy", "before")


def test_a_ci_run_is_a_software_agent_acting_for_the_approver(tmp_path: Path) -> None:
    url = "https://github.com/kfm/desired/actions/runs/42"
    apply = APPLY | {"ci_run_url": url, "approved_by": "mara@kfm", "op_type": "rollback"}
    document = prov.read(write_prov(tmp_path / "p.json", apply, "github-actions", REFERENCES[:1]), format="json")
    agents = {str(agent.identifier): agent for agent in records(document, "Agent")}
    run = agents[f"kfm:ci-run/{url}"]
    assert PROV["SoftwareAgent"] in run.get_attribute(PROV_TYPE)
    assert PROV["Person"] in agents["kfm:person/mara@kfm"].get_attribute(PROV_TYPE)
    [association] = records(document, "Association")
    assert identifier(association, "agent") == f"kfm:ci-run/{url}"
    [delegation] = records(document, "Delegation")
    assert identifier(delegation, "delegate") == f"kfm:ci-run/{url}"
    assert identifier(delegation, "responsible") == "kfm:person/mara@kfm"
    [activity] = records(document, "Activity")
    assert {str(value) for value in activity.get_attribute("kfm:op_type")} == {"rollback"}


def test_a_rollback_is_informed_by_the_apply_it_undoes_and_uses_the_decision(tmp_path: Path) -> None:
    decision = {"decision": "allow", "findings": [{"rule": "care.consent_expiring", "severity": "warn"}]}
    apply = APPLY | {"op_type": "rollback", "rolls_back": "apply-20261125T100000Z-aaaaaa", "decision": decision}
    document = prov.read(write_prov(tmp_path / "p.json", apply, "ana", REFERENCES), format="json")
    [communication] = records(document, "Communication")
    assert identifier(communication, "informant") == "kfm:apply/apply-20261125T100000Z-aaaaaa"
    assert identifier(communication, "informed") == "kfm:apply/apply-20261126T153000Z-3f9a1c"
    [judged] = [e for e in records(document, "Entity") if str(e.identifier).startswith("kfm:decision/")]
    assert {str(v) for v in judged.get_attribute("kfm:decision")} == {"allow"}
    assert {str(v) for v in judged.get_attribute("kfm:rules")} == {"care.consent_expiring"}
    assert str(judged.identifier) in {identifier(record, "entity") for record in records(document, "Usage")}


def test_prov_needs_an_apply_id_and_an_op_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="apply_id"):
        write_prov(tmp_path / "p.json", {"apply_id": "a"}, "ana", REFERENCES)


@pytest.mark.skipif(importlib.util.find_spec("rdflib") is not None, reason="rdflib is installed")
def test_provo_without_rdflib_is_skipped_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match="rdflib"):
        path = write_prov(tmp_path / "p.prov.json", APPLY, "ana", REFERENCES, provo=True)
    assert path.exists() and not path.with_suffix(".ttl").exists()


@pytest.mark.skipif(importlib.util.find_spec("rdflib") is None, reason="PROV-O needs rdflib (prov[rdf])")
def test_provo_turtle_round_trips(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # rdflib 7 deprecations inside prov
        path = write_prov(tmp_path / "p.prov.json", APPLY, "ana", REFERENCES, provo=True)
        turtle = prov.read(path.with_suffix(".ttl"), format="rdf", rdf_format="turtle")
    assert turtle == prov.read(path, format="json")
