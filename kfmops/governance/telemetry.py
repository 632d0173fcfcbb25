"""Telemetry of kfmops commands: OpenTelemetry metrics and spans, exported to a file (default), console or OTLP.

Metrics (names are a contract, see DESIGN.md §3): `kfm.ops_latency_ms` (histogram),
`kfm.ops_retry_count` (by backend and error class), `kfm.ops_wal_entries`, `kfm.ops_care_flags`,
`kfm.ops_sovereignty_escalations`, `kfm.ops_energy_wh`, `kfm.ops_carbon_gco2e`,
`kfm.ops_broken_links` (counters). Spans: one per command and one per batch (`Telemetry.span`).

Energy and carbon are ESTIMATES, never measurements: energy_wh = cpu_seconds x `cpu_watts` / 3600
and carbon_gco2e = energy_wh / 1000 x `grid_gco2e_per_kwh`. Their descriptions say so and each of
their data points carries `estimate=true`. Defaults are assumptions, to be replaced per site:
15 W of CPU power attributed to a kfmops process, and 450 gCO2e/kWh, a round figure assumed for the
Kansas grid (coal and gas with a large wind share); set `grid_gco2e_per_kwh` from a current source
such as EPA eGRID for the SPP North subregion.

Must not: use the global OpenTelemetry providers (`set_meter_provider`, `set_tracer_provider`) or
register atexit hooks: every Telemetry owns its providers, so tests and repeated engines in one
process never share or clash. Nothing is exported before `shutdown` (metrics are collected once, there;
file spans are written as each span ends).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    Histogram,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span

from kfmops import __version__
from kfmops.errors import KfmopsError
from kfmops.io.canonical import canonical_json
from kfmops.io.redact import refuse_secrets

EXPORTERS = ("file", "console", "otlp", "none")
DEFAULT_CPU_WATTS = 15.0
DEFAULT_GRID_GCO2E_PER_KWH = 450.0
METRICS_FILE = "metrics.jsonl"
SPANS_FILE = "spans.jsonl"
ESTIMATED = ("kfm.ops_energy_wh", "kfm.ops_carbon_gco2e")
LATENCY_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000)


class Telemetry:
    """Metrics and spans of one kfmops process, exported by `exporter` ("file", "console", "otlp", "none").

    file: JSON lines under `folder` (`metrics.jsonl`, `spans.jsonl`; schema
    `schemas/telemetry-record.schema.json`). console: the same lines on stderr (stdout stays free for
    `--format json`). otlp: OTLP over HTTP, needs the `otlp` extra; settings `endpoint` (the
    collector's base URL, e.g. http://localhost:4318; /v1/metrics and /v1/traces are appended),
    `headers`, `timeout`. none: nothing is exported. `settings` also holds `cpu_watts` and
    `grid_gco2e_per_kwh` for the energy and carbon estimates.
    """

    def __init__(self, exporter: str, folder: Path, settings: dict[str, Any]):
        exporter = exporter or "file"
        if exporter not in EXPORTERS:
            raise KfmopsError(f"unknown telemetry exporter {exporter!r}: use one of {', '.join(EXPORTERS)}")
        self.exporter = exporter
        self.cpu_watts = _positive(settings, "cpu_watts", DEFAULT_CPU_WATTS)
        self.grid_gco2e_per_kwh = _positive(settings, "grid_gco2e_per_kwh", DEFAULT_GRID_GCO2E_PER_KWH)
        resource = Resource.create({"service.name": "kfmops", "service.version": __version__})
        metric_exporter, span_exporter = _exporters(exporter, folder, settings)
        # math.inf: no background thread; metrics are collected once, in shutdown().
        readers = [PeriodicExportingMetricReader(metric_exporter, math.inf)] if metric_exporter else []
        self._meters = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)
        self._tracers = TracerProvider(resource=resource, shutdown_on_exit=False)
        if span_exporter is not None:
            # Local exporters write as each span ends; the network one batches off the hot path.
            processor = BatchSpanProcessor if exporter == "otlp" else SimpleSpanProcessor
            self._tracers.add_span_processor(processor(span_exporter))
        self._tracer = self._tracers.get_tracer("kfmops", __version__)
        meter = self._meters.get_meter("kfmops", __version__)
        self._latency = meter.create_histogram(
            "kfm.ops_latency_ms",
            unit="ms",
            description="Wall-clock latency of one kfmops command",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_MS,
        )
        counters = {
            "kfm.ops_retry_count": ("{retry}", "Backend calls retried, by backend and error class"),
            "kfm.ops_wal_entries": ("{record}", "Write-ahead log records written"),
            "kfm.ops_care_flags": ("{flag}", "CARE findings raised by policy"),
            "kfm.ops_sovereignty_escalations": ("{escalation}", "Sovereignty findings escalated for review"),
            "kfm.ops_energy_wh": (
                "Wh",
                f"Estimate, not a measurement: CPU seconds x {self.cpu_watts:g} W (setting cpu_watts) / 3600",
            ),
            "kfm.ops_carbon_gco2e": (
                "g{CO2e}",
                "Estimate, not a measurement: estimated energy in kWh x "
                f"{self.grid_gco2e_per_kwh:g} gCO2e/kWh (setting grid_gco2e_per_kwh)",
            ),
            "kfm.ops_broken_links": ("{link}", "Broken links found (references whose target is missing)"),
        }
        self._counters = {
            name: meter.create_counter(name, unit=unit, description=description)
            for name, (unit, description) in counters.items()
        }
        self._closed = False

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span]:
        """A span around the block (child of the enclosing one); an exception marks it as an error and propagates.

        Attribute values of None are dropped; mappings are stored as canonical JSON text.
        """
        values = _attributes(attributes)
        refuse_secrets(values, f"span {name!r}")
        with self._tracer.start_as_current_span(name, attributes=values) as span:
            yield span

    def record_operation(
        self,
        *,
        command: str,
        latency_ms: float,
        retries: dict[str, int],
        wal_entries: int,
        care_flags: int,
        sovereignty_escalations: int,
        cpu_seconds: float,
        broken_links: int,
        backend_attrs: dict[str, Any] | None = None,
    ) -> None:
        """Record the metrics of one finished command; every data point carries `command` and `backend_attrs`.

        `retries` maps `"<backend>:<ErrorClass>"` (or a bare backend: error class "unspecified") to a
        retry count; with no retries one zero point (backend and error_class "none") keeps the series.
        Counts and times must be non-negative (ValueError otherwise).
        """
        if self._closed:
            raise RuntimeError("telemetry was shut down; record operations before shutdown()")
        base = {"command": command, **_attributes(backend_attrs or {})}
        refuse_secrets(base, "telemetry attributes")
        numbers = {
            "latency_ms": latency_ms,
            "wal_entries": wal_entries,
            "care_flags": care_flags,
            "sovereignty_escalations": sovereignty_escalations,
            "cpu_seconds": cpu_seconds,
            "broken_links": broken_links,
            **{f"retries[{key}]": count for key, count in retries.items()},
        }
        wrong = [name for name, value in numbers.items() if not _non_negative(value)]
        if wrong:
            raise ValueError(f"telemetry values must be non-negative numbers: {', '.join(wrong)}")
        energy_wh, carbon_g = estimate_footprint(cpu_seconds, self.cpu_watts, self.grid_gco2e_per_kwh)
        self._latency.record(latency_ms, base)
        for key, count in retries.items() or {"none:none": 0}.items():
            backend, _, error_class = key.partition(":")
            self._counters["kfm.ops_retry_count"].add(
                count, {**base, "backend": backend, "error_class": error_class or "unspecified"}
            )
        self._counters["kfm.ops_wal_entries"].add(wal_entries, base)
        self._counters["kfm.ops_care_flags"].add(care_flags, base)
        self._counters["kfm.ops_sovereignty_escalations"].add(sovereignty_escalations, base)
        self._counters["kfm.ops_broken_links"].add(broken_links, base)
        self._counters["kfm.ops_energy_wh"].add(energy_wh, {**base, "estimate": True})
        self._counters["kfm.ops_carbon_gco2e"].add(carbon_g, {**base, "estimate": True})

    def shutdown(self) -> None:
        """Collect and export the metrics once, flush the spans, release the exporters. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        # With an infinite interval the reader has no thread, and its shutdown() does not collect: flush first.
        self._meters.force_flush()
        self._meters.shutdown()
        self._tracers.force_flush()
        self._tracers.shutdown()


def estimate_footprint(cpu_seconds: float, cpu_watts: float, grid_gco2e_per_kwh: float) -> tuple[float, float]:
    """(energy in Wh, carbon in gCO2e) estimated from CPU time; see the module docstring for the assumptions."""
    energy_wh = cpu_seconds * cpu_watts / 3600
    return energy_wh, energy_wh / 1000 * grid_gco2e_per_kwh


class JsonLinesMetricExporter(MetricExporter):
    """Appends one JSON line per metric (`metric_records`) to `path` at each export."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        _append_lines(self.path, metric_records(metrics_data))
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON line per finished span (`span_record`) to `path`."""

    def __init__(self, path: Path):
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        _append_lines(self.path, [span_record(span) for span in spans])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def metric_records(metrics_data: MetricsData) -> list[dict[str, Any]]:
    """One record per metric: name, description, unit, type, estimate flag, resource, time and data points."""
    records = []
    for resource_metrics in metrics_data.resource_metrics:
        resource = _plain(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                data = metric.data
                kind = "histogram" if isinstance(data, Histogram) else "sum" if isinstance(data, Sum) else "gauge"
                points = [_point(point, kind) for point in data.data_points]
                records.append(
                    {
                        "record": "metric",
                        "name": metric.name,
                        "description": metric.description or "",
                        "unit": metric.unit or "",
                        "type": kind,
                        "estimate": metric.name in ESTIMATED,
                        "time": max((p["time"] for p in points), default=_iso(None)),
                        "scope": {"name": scope_metrics.scope.name, "version": scope_metrics.scope.version},
                        "resource": resource,
                        "points": points,
                    }
                )
    return records


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as a JSON-able record (ids in hex, times in ISO 8601, duration in ms)."""
    context = span.get_span_context()
    assert context is not None  # an SDK span always has one
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "record": "span",
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "start_time": _iso(start),
        "end_time": _iso(end),
        "duration_ms": (end - start) / 1e6,
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "attributes": _plain(span.attributes),
        "events": [
            {"name": event.name, "time": _iso(event.timestamp), "attributes": _plain(event.attributes)}
            for event in span.events
        ],
        "resource": _plain(span.resource.attributes),
    }


def _exporters(
    exporter: str, folder: Path, settings: Mapping[str, Any]
) -> tuple[MetricExporter | None, SpanExporter | None]:
    if exporter == "file":
        return JsonLinesMetricExporter(folder / METRICS_FILE), JsonLinesSpanExporter(folder / SPANS_FILE)
    if exporter == "console":
        return (
            ConsoleMetricExporter(out=sys.stderr, formatter=lambda data: _lines(metric_records(data))),
            ConsoleSpanExporter(out=sys.stderr, formatter=lambda span: _lines([span_record(span)])),
        )
    if exporter == "otlp":
        try:
            # The `otlp` extra is optional: without it installed mypy cannot see these modules.
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # type: ignore[import-not-found,unused-ignore]
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise KfmopsError(
                "telemetry exporter 'otlp' needs the optional extra: pip install 'kfmops[otlp]' "
                "(opentelemetry-exporter-otlp-proto-http); or set telemetry.exporter to file, console or none"
            ) from None
        base = str(settings["endpoint"]).rstrip("/") if settings.get("endpoint") else None
        options = {key: settings[key] for key in ("headers", "timeout") if settings.get(key) is not None}
        return (
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None, **options),
            OTLPSpanExporter(endpoint=f"{base}/v1/traces" if base else None, **options),
        )
    return None, None


def _positive(settings: Mapping[str, Any], key: str, default: float) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
        raise KfmopsError(f"telemetry.{key} must be a positive number, not {value!r}")
    return float(value)


def _non_negative(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values OpenTelemetry accepts: scalars and lists of scalars kept, mappings as JSON text, None dropped."""
    plain: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            plain[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(item, str | bool | int | float) for item in value):
            plain[key] = list(value)
        elif isinstance(value, Mapping):
            plain[key] = canonical_json(value)
        else:
            plain[key] = str(value)
    return plain


def _point(point: Any, kind: str) -> dict[str, Any]:
    record = {
        "attributes": _plain(point.attributes),
        "start_time": _iso(point.start_time_unix_nano),
        "time": _iso(point.time_unix_nano),
    }
    if kind == "histogram":
        record |= {
            "count": point.count,
            "sum": point.sum,
            "min": point.min,
            "max": point.max,
            "bucket_counts": list(point.bucket_counts),
            "explicit_bounds": list(point.explicit_bounds),
        }
    else:
        record["value"] = point.value
    return record


def _plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in (attributes or {}).items()}


def _iso(unix_nano: int | None) -> str:
    moment = datetime.now(UTC) if unix_nano is None else datetime.fromtimestamp(unix_nano / 1e9, UTC)
    return moment.isoformat(timespec="microseconds")


def _lines(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def _append_lines(path: Path, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(_lines(records))
