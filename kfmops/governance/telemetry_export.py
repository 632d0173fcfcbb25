"""Exporting telemetry: JSON-lines files (metrics.jsonl, spans.jsonl), the console, or OTLP over HTTP.

Records follow `schemas/telemetry-record.schema.json`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    Histogram,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from kfmops.errors import KfmopsError
from kfmops.io import faults
from kfmops.io.redact import Redactor

METRICS_FILE = "metrics.jsonl"
SPANS_FILE = "spans.jsonl"
ESTIMATED = ("kfm.ops_energy_wh", "kfm.ops_carbon_gco2e")


class JsonLinesMetricExporter(MetricExporter):
    """Appends one JSON line per metric (`metric_records`) to `path` at each export."""

    def __init__(self, path: Path, problems: list[str], redact: Redactor):
        super().__init__()
        self.path = path
        self.problems = problems
        self.redact = redact

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        written = _append_lines(self.path, self.redact.value(metric_records(metrics_data)), self.problems)
        return MetricExportResult.SUCCESS if written else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON line per finished span (`span_record`) to `path`."""

    def __init__(self, path: Path, problems: list[str], redact: Redactor):
        self.path = path
        self.problems = problems
        self.redact = redact

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        written = _append_lines(self.path, self.redact.value([span_record(span) for span in spans]), self.problems)
        return SpanExportResult.SUCCESS if written else SpanExportResult.FAILURE

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


def exporters(
    exporter: str, folder: Path, settings: Mapping[str, Any], problems: list[str], redact: Redactor
) -> tuple[MetricExporter | None, SpanExporter | None]:
    if exporter == "file":
        return (
            JsonLinesMetricExporter(folder / METRICS_FILE, problems, redact),
            JsonLinesSpanExporter(folder / SPANS_FILE, problems, redact),
        )
    if exporter == "console":
        return (
            ConsoleMetricExporter(out=sys.stderr, formatter=lambda data: _lines(redact.value(metric_records(data)))),
            ConsoleSpanExporter(out=sys.stderr, formatter=lambda span: _lines(redact.value([span_record(span)]))),
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


def _append_lines(path: Path, records: list[dict[str, Any]], problems: list[str]) -> bool:
    """Append the records (file mode 0600); a folder that cannot be written is a problem noted, not a crash."""
    if not records:
        return True
    try:
        faults.check(path, "write")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(_lines(records))
    except OSError as exc:
        problem = f"telemetry could not be written to {path} ({exc.strerror or exc})"
        if problem not in problems:
            problems.append(problem)
        return False
    return True
