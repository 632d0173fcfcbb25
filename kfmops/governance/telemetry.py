"""Telemetry of kfmops commands: OpenTelemetry metrics and spans, exported to a file (default), console or OTLP.

Metrics (names are a contract, see DESIGN.md §3): `kfm.ops_latency_ms` (histogram),
`kfm.ops_retry_count` (by backend and error class), `kfm.ops_wal_entries`, `kfm.ops_care_flags`,
`kfm.ops_sovereignty_escalations`, `kfm.ops_energy_wh`, `kfm.ops_carbon_gco2e`,
`kfm.ops_broken_links`, `kfm.ops_policy_denials` (by rule family) (counters); every point carries the
command's `outcome`. Spans: one per command and one per batch (`Telemetry.span`).

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

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfmops import __version__
from kfmops.errors import KfmopsError
from kfmops.io.canonical import canonical_json
from kfmops.io.redact import Redactor, refuse_secrets

if TYPE_CHECKING:  # the SDK is imported when a Telemetry is made, not when kfmops starts (--help, validate)
    from opentelemetry.trace import Span

    from kfmops.governance.slo import SloReport

EXPORTERS = ("file", "console", "otlp", "none")
DEFAULT_CPU_WATTS = 15.0
DEFAULT_GRID_GCO2E_PER_KWH = 450.0
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

    def __init__(self, exporter: str, folder: Path, settings: dict[str, Any], redact: Redactor | None = None):
        exporter = exporter or "file"
        if exporter not in EXPORTERS:
            raise KfmopsError(f"unknown telemetry exporter {exporter!r}: use one of {', '.join(EXPORTERS)}")
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        from kfmops.governance.telemetry_export import exporters

        self.exporter = exporter
        self.cpu_watts = _positive(settings, "cpu_watts", DEFAULT_CPU_WATTS)
        self.grid_gco2e_per_kwh = _positive(settings, "grid_gco2e_per_kwh", DEFAULT_GRID_GCO2E_PER_KWH)
        resource = Resource.create({"service.name": "kfmops", "service.version": __version__})
        self.problems: list[str] = []  # exports that failed (an unwritable folder): warnings, never a crash
        self.redact = redact or Redactor()
        metric_exporter, span_exporter = exporters(exporter, folder, settings, self.problems, self.redact)
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
            "kfm.ops_policy_denials": ("{finding}", "Denying policy findings, by rule family (heritage, care, ...)"),
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
        from opentelemetry.trace import Status, StatusCode

        values = _attributes(attributes)
        refuse_secrets(values, f"span {name!r}")
        # The SDK would record the exception's message as it is; it is recorded here, redacted, instead.
        with self._tracer.start_as_current_span(
            name, attributes=values, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except BaseException as error:
                message = self.redact.text(str(error) or type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, message))
                span.add_event("exception", {"exception.type": type(error).__name__, "exception.message": message})
                raise

    def record_operation(
        self,
        *,
        command: str,
        latency_ms: float,
        retries: dict[str, int],
        outcome: str = "ok",
        denials: dict[str, int] | None = None,
        wal_entries: int,
        care_flags: int,
        sovereignty_escalations: int,
        cpu_seconds: float,
        broken_links: int,
        backend_attrs: dict[str, Any] | None = None,
    ) -> None:
        """Record the metrics of one finished command; every data point carries `command`, `outcome` (ok,
        denied, committed, aborted, nothing or error) and `backend_attrs`.

        `denials` maps a rule family (the part of a finding's rule before its first dot: heritage, care,
        sovereignty, provenance, policy, ...) to how many denying findings it raised; with none, one zero
        point (rule_family "none") keeps the series. `retries` maps `"<backend>:<ErrorClass>"` (or a bare
        backend: error class "unspecified") to a retry count; with no retries one zero point (backend and
        error_class "none") keeps the series.
        Counts and times must be non-negative (ValueError otherwise).
        """
        if self._closed:
            raise RuntimeError("telemetry was shut down; record operations before shutdown()")
        base = {"command": command, "outcome": outcome, **_attributes(backend_attrs or {})}
        refuse_secrets(base, "telemetry attributes")
        numbers = {
            "latency_ms": latency_ms,
            "wal_entries": wal_entries,
            "care_flags": care_flags,
            "sovereignty_escalations": sovereignty_escalations,
            "cpu_seconds": cpu_seconds,
            "broken_links": broken_links,
            **{f"retries[{key}]": count for key, count in retries.items()},
            **{f"denials[{family}]": count for family, count in (denials or {}).items()},
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
        for family, count in (denials or {"none": 0}).items():
            self._counters["kfm.ops_policy_denials"].add(count, {**base, "rule_family": family})
        self._counters["kfm.ops_energy_wh"].add(energy_wh, {**base, "estimate": True})
        self._counters["kfm.ops_carbon_gco2e"].add(carbon_g, {**base, "estimate": True})

    def record_slo(self, reports: Sequence[SloReport]) -> None:
        """Each objective's measured value, remaining error budget and burn rate as gauges, by objective name."""
        meter = self._meters.get_meter("kfmops", __version__)
        gauges = {
            "kfm.ops_slo_measured": ("measured", "Measured value of a service level objective (its unit varies)"),
            "kfm.ops_slo_budget_remaining": ("remaining_budget", "Share of the error budget left (<= 0: spent)"),
            "kfm.ops_slo_burn_rate": ("burn_rate", "Error budget spent per budget allowed (> 1: too fast)"),
        }
        for name, (field, description) in gauges.items():
            gauge = meter.create_gauge(name, description=description)
            for report in reports:
                gauge.set(getattr(report, field), {"objective": report.name, "window": report.window})

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
