"""Telemetry: the nine kfm.ops_* metrics and the spans, as JSON lines that match their schema."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from jsonschema import Draft202012Validator, FormatChecker
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from kfmops.errors import KfmopsError
from kfmops.governance.telemetry import Telemetry, estimate_footprint

METRIC_NAMES = {
    "kfm.ops_latency_ms",
    "kfm.ops_retry_count",
    "kfm.ops_wal_entries",
    "kfm.ops_care_flags",
    "kfm.ops_sovereignty_escalations",
    "kfm.ops_energy_wh",
    "kfm.ops_carbon_gco2e",
    "kfm.ops_broken_links",
    "kfm.ops_policy_denials",
}
OPERATION: dict[str, Any] = {
    "command": "apply",
    "outcome": "denied",
    "denials": {"heritage": 2, "provenance": 1},
    "latency_ms": 1234.5,
    "retries": {"redis:ConnectionError": 2, "elasticsearch:ConnectionTimeout": 1, "neo4j": 1},
    "wal_entries": 14,
    "care_flags": 1,
    "sovereignty_escalations": 1,
    "cpu_seconds": 7.2,
    "broken_links": 3,
    "backend_attrs": {"workspace": "kansas", "backends": ["local", "redis"]},
}


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def schema_errors(record: dict[str, Any]) -> list[str]:
    schema = json.loads((ROOT / "kfmops" / "data" / "schemas" / "telemetry-record.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    return [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(record)]


def by_name(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["name"]: record for record in records}


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """One apply of two batches recorded with the file exporter; the telemetry folder."""
    folder = tmp_path / "state" / "telemetry"
    telemetry = Telemetry("file", folder, {})
    with telemetry.span("kfmops apply", plan_id="plan-1", dry_run=False, skipped=None):
        for number in (0, 1):
            with telemetry.span("batch", number=number, backend="local", addresses=["a", "b"]):
                pass
    telemetry.record_operation(**OPERATION)
    telemetry.shutdown()
    return folder


def test_all_nine_metrics_are_written_and_match_the_schema(recorded: Path) -> None:
    records = read(recorded / "metrics.jsonl")
    assert [record["name"] for record in records if record["name"] in METRIC_NAMES] == [r["name"] for r in records]
    assert {record["name"] for record in records} == METRIC_NAMES
    assert len(records) == len(METRIC_NAMES)  # collected once, at shutdown
    for record in records:
        assert schema_errors(record) == [], record["name"]
        for point in record["points"]:
            assert point["attributes"]["command"] == "apply"
            assert point["attributes"]["outcome"] == "denied"
            assert point["attributes"]["workspace"] == "kansas"


def test_energy_and_carbon_are_labelled_estimates(recorded: Path) -> None:
    records = by_name(read(recorded / "metrics.jsonl"))
    energy_wh = 7.2 * 15 / 3600
    carbon_g = energy_wh / 1000 * 450
    assert estimate_footprint(7.2, 15, 450) == pytest.approx((energy_wh, carbon_g))
    for name, value, unit in (("kfm.ops_energy_wh", energy_wh, "Wh"), ("kfm.ops_carbon_gco2e", carbon_g, "g{CO2e}")):
        record = records[name]
        assert record["estimate"] is True
        assert record["unit"] == unit
        assert record["description"].startswith("Estimate, not a measurement")
        [point] = record["points"]
        assert point["attributes"]["estimate"] is True
        assert point["value"] == pytest.approx(value)
    assert not any(
        record["estimate"]
        for name, record in records.items()
        if name not in {"kfm.ops_energy_wh", "kfm.ops_carbon_gco2e"}
    )


def test_a_record_without_the_estimate_label_is_refused_by_the_schema(recorded: Path) -> None:
    energy = by_name(read(recorded / "metrics.jsonl"))["kfm.ops_energy_wh"]
    assert schema_errors(energy | {"estimate": False})
    assert schema_errors(energy | {"description": "CPU energy"})
    unlabelled = json.loads(json.dumps(energy))
    del unlabelled["points"][0]["attributes"]["estimate"]
    assert schema_errors(unlabelled)


def test_metric_values(recorded: Path) -> None:
    records = by_name(read(recorded / "metrics.jsonl"))
    [latency] = records["kfm.ops_latency_ms"]["points"]
    assert records["kfm.ops_latency_ms"]["type"] == "histogram"
    assert (latency["count"], latency["sum"], latency["min"], latency["max"]) == (1, 1234.5, 1234.5, 1234.5)
    assert sum(latency["bucket_counts"]) == 1
    retries = {
        (p["attributes"]["backend"], p["attributes"]["error_class"]): p["value"]
        for p in records["kfm.ops_retry_count"]["points"]
    }
    assert retries == {
        ("redis", "ConnectionError"): 2,
        ("elasticsearch", "ConnectionTimeout"): 1,
        ("neo4j", "unspecified"): 1,
    }
    for name, value in (
        ("kfm.ops_wal_entries", 14),
        ("kfm.ops_care_flags", 1),
        ("kfm.ops_sovereignty_escalations", 1),
        ("kfm.ops_broken_links", 3),
    ):
        assert [point["value"] for point in records[name]["points"]] == [value]
    denials = {p["attributes"]["rule_family"]: p["value"] for p in records["kfm.ops_policy_denials"]["points"]}
    assert denials == {"heritage": 2, "provenance": 1}


def test_no_denials_still_writes_the_denial_series(tmp_path: Path) -> None:
    telemetry = Telemetry("file", tmp_path, {})
    telemetry.record_operation(**OPERATION | {"denials": {}, "outcome": "committed"})
    telemetry.shutdown()
    [point] = by_name(read(tmp_path / "metrics.jsonl"))["kfm.ops_policy_denials"]["points"]
    assert (point["attributes"]["rule_family"], point["attributes"]["outcome"], point["value"]) == (
        "none",
        "committed",
        0,
    )


def test_no_retries_still_writes_the_retry_series(tmp_path: Path) -> None:
    telemetry = Telemetry("file", tmp_path, {})
    telemetry.record_operation(**OPERATION | {"retries": {}})
    telemetry.shutdown()
    [point] = by_name(read(tmp_path / "metrics.jsonl"))["kfm.ops_retry_count"]["points"]
    assert (point["attributes"]["backend"], point["attributes"]["error_class"], point["value"]) == ("none", "none", 0)


def test_spans_per_command_and_batch(recorded: Path) -> None:
    spans = read(recorded / "spans.jsonl")
    assert all(schema_errors(span) == [] for span in spans)
    command = next(span for span in spans if span["name"] == "kfmops apply")
    batches = [span for span in spans if span["name"] == "batch"]
    assert command["parent_span_id"] is None
    assert command["attributes"] == {"plan_id": "plan-1", "dry_run": False}  # None values are dropped
    assert [batch["attributes"]["number"] for batch in batches] == [0, 1]
    assert all(batch["parent_span_id"] == command["span_id"] for batch in batches)
    assert {span["trace_id"] for span in spans} == {command["trace_id"]}
    assert all(span["status"]["code"] == "UNSET" and span["duration_ms"] >= 0 for span in spans)


def test_a_failing_block_marks_its_span_as_an_error(tmp_path: Path) -> None:
    telemetry = Telemetry("file", tmp_path, {})
    with pytest.raises(RuntimeError, match="backend down"), telemetry.span("batch", number=3):
        raise RuntimeError("backend down")
    telemetry.shutdown()
    [span] = read(tmp_path / "spans.jsonl")
    assert span["status"]["code"] == "ERROR"
    assert [event["name"] for event in span["events"]] == ["exception"]
    assert schema_errors(span) == []


def test_settings_change_the_estimates_and_their_descriptions(tmp_path: Path) -> None:
    telemetry = Telemetry("file", tmp_path, {"cpu_watts": 65, "grid_gco2e_per_kwh": 120})
    telemetry.record_operation(**OPERATION | {"cpu_seconds": 3600})
    telemetry.shutdown()
    records = by_name(read(tmp_path / "metrics.jsonl"))
    assert records["kfm.ops_energy_wh"]["points"][0]["value"] == pytest.approx(65)
    assert records["kfm.ops_carbon_gco2e"]["points"][0]["value"] == pytest.approx(65 / 1000 * 120)
    assert "65 W" in records["kfm.ops_energy_wh"]["description"]
    assert "120 gCO2e/kWh" in records["kfm.ops_carbon_gco2e"]["description"]


def test_instances_are_independent_and_leave_the_global_providers_alone(tmp_path: Path) -> None:
    first, second = Telemetry("file", tmp_path / "a", {}), Telemetry("file", tmp_path / "b", {})
    first.record_operation(**OPERATION | {"wal_entries": 5})
    second.record_operation(**OPERATION | {"wal_entries": 7})
    first.shutdown()
    second.shutdown()
    for folder, value in ((tmp_path / "a", 5), (tmp_path / "b", 7)):
        assert by_name(read(folder / "metrics.jsonl"))["kfm.ops_wal_entries"]["points"][0]["value"] == value
    assert not isinstance(metrics.get_meter_provider(), MeterProvider)
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_shutdown_is_idempotent_and_final(tmp_path: Path) -> None:
    telemetry = Telemetry("file", tmp_path, {})
    telemetry.record_operation(**OPERATION)
    telemetry.shutdown()
    telemetry.shutdown()
    assert len(read(tmp_path / "metrics.jsonl")) == len(METRIC_NAMES)
    with pytest.raises(RuntimeError, match="shut down"):
        telemetry.record_operation(**OPERATION)


def test_console_exporter_writes_records_to_stderr_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = Telemetry("console", tmp_path / "unused", {})
    with telemetry.span("kfmops plan"):
        pass
    telemetry.record_operation(**OPERATION)
    telemetry.shutdown()
    out, err = capsys.readouterr()
    assert out == ""
    records = [json.loads(line) for line in err.splitlines()]
    assert {record["name"] for record in records if record["record"] == "metric"} == METRIC_NAMES
    assert [record["name"] for record in records if record["record"] == "span"] == ["kfmops plan"]
    assert all(schema_errors(record) == [] for record in records)
    assert not (tmp_path / "unused").exists()


def test_none_exports_nothing(tmp_path: Path) -> None:
    telemetry = Telemetry("none", tmp_path / "t", {})
    with telemetry.span("kfmops apply"):
        telemetry.record_operation(**OPERATION)
    telemetry.shutdown()
    assert not (tmp_path / "t").exists()


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@pytest.mark.skipif(installed("opentelemetry.exporter.otlp.proto.http"), reason="the otlp extra is installed")
def test_otlp_without_the_extra_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KfmopsError, match=r"pip install 'kfmops\[otlp\]'"):
        Telemetry("otlp", tmp_path, {"endpoint": "http://127.0.0.1:4318"})


@pytest.mark.parametrize(
    ("exporter", "settings", "message"),
    [
        ("prometheus", {}, "unknown telemetry exporter"),
        ("file", {"cpu_watts": 0}, "telemetry.cpu_watts must be a positive number"),
        ("file", {"grid_gco2e_per_kwh": "450"}, "telemetry.grid_gco2e_per_kwh must be a positive number"),
    ],
)
def test_configuration_errors(tmp_path: Path, exporter: str, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(KfmopsError, match=message):
        Telemetry(exporter, tmp_path, settings)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"latency_ms": -1}, "latency_ms"),
        ({"cpu_seconds": float("nan")}, "cpu_seconds"),
        ({"retries": {"redis": -2}}, r"retries\[redis\]"),
        ({"wal_entries": True}, "wal_entries"),
        ({"backend_attrs": {"redis_password": "hunter2"}}, "credential"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    telemetry = Telemetry("file", tmp_path, {})
    with pytest.raises(ValueError, match=message):
        telemetry.record_operation(**OPERATION | changes)
    telemetry.shutdown()
    assert not (tmp_path / "metrics.jsonl").exists()
