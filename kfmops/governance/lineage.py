"""Lineage of every operation as OpenLineage RunEvents (START, COMPLETE, FAIL); its PROV document is in
`provenance`.

OpenLineage: one run per apply/rollback/hotfix/recover, one job name per run (`kfmops.<operation>`, with
the standard `jobType` facet); a recovery is a run of its own whose `parent` facet names the interrupted
run. Each changed reference is an output dataset carrying the custom facet `kfmops_reference` (its
before and after values, schema in `schemas/lineage-facet.schema.json`) and the standard `version`
facet (the dataset version it points at after); each reference read is an input at the version it
pointed at before. Events go through openlineage-python's own transports, built
here from the transport mapping the engine passes (file by default, or HTTP). The transport is used
directly rather than through `OpenLineageClient`, because the client also reads `openlineage.yml`
from the working directory and `OPENLINEAGE__*` variables (filters, tags, extra facets): what is
emitted must be exactly the event built here, whatever directory kfmops runs from.

Must not: no network access except the configured HTTP transport; no global state (the library's
`set_producer` is never called: the producer is passed on every event and facet).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kfmops.errors import KfmopsError
from kfmops.governance.provenance import KFM_NAMESPACE

if TYPE_CHECKING:  # openlineage is imported when an operation records its lineage, not at start-up
    from openlineage.client.event_v2 import InputDataset, OutputDataset, RunEvent
    from openlineage.client.transport.transport import Transport

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
    *,
    inputs: Sequence[Mapping[str, Any]] = (),
    job_type: str | None = None,
    parent: tuple[str, str] | None = None,
) -> RunEvent:
    """Build one RunEvent, send it through `transport`, and return it (`Serde.to_dict` gives the JSON that was
    sent; the engine does not ask, as serializing the event of 40,000 references costs seconds).

    `outputs`: `{"name", "namespace", "before", "after", "version"}` per changed reference (name: its
    address); `inputs`: `{"name", "namespace", "version"}` per reference read at a dataset version. A
    `version` becomes the standard `version` dataset facet (the dataset version the reference points at).
    `job_type`: the `jobType` facet (processing BATCH, integration KFMOPS). `parent`: (runId, job name)
    of the run this one finishes for (a recover), as the `parent` run facet. `transport`:
    `{"type": "file", "path": ...}` (JSON lines, appended; the folder is created) or `{"type": "http",
    "url": ..., ...}` (any HttpConfig setting). `when` defaults to now (UTC). `error` is the message of a
    FAIL event (an `errorMessage` run facet); it is refused on other event types.
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
    from openlineage.client.facet_v2 import error_message_run, job_type_job, parent_run

    run_facets: dict[str, Any] = {}
    if event_type == "FAIL":
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error or "the run failed without an error message",
            programmingLanguage="python",
            producer=producer,
        )
    if parent is not None:
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent[0]),
            job=parent_run.Job(namespace=namespace, name=parent[1]),
            producer=producer,
        )
    job_facets: dict[str, Any] = {}
    if job_type:
        job_facets["jobType"] = job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="KFMOPS", jobType=job_type, producer=producer
        )
    event = RunEvent(
        eventType=RunState[event_type],
        eventTime=when or datetime.now(UTC).isoformat(),
        run=Run(runId=run_id, facets=run_facets),
        job=Job(namespace=namespace, name=job_name, facets=job_facets),
        inputs=[_input(item, producer) for item in inputs],
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
    return event


def _named(item: Mapping[str, Any], what: str) -> None:
    missing = [key for key in ("name", "namespace") if not item.get(key)]
    if missing:
        raise ValueError(f"OpenLineage {what} {dict(item)!r} lacks {', '.join(missing)}")


def _version_facet(item: Mapping[str, Any], producer: str) -> dict[str, Any]:
    version = item.get("version")
    if not version:
        return {}
    from openlineage.client.facet_v2 import dataset_version_dataset

    return {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version), producer=producer)
    }


def _input(item: Mapping[str, Any], producer: str) -> InputDataset:
    from openlineage.client.event_v2 import InputDataset

    _named(item, "input")
    return InputDataset(namespace=item["namespace"], name=item["name"], facets=_version_facet(item, producer))


def _output(item: Mapping[str, Any], producer: str) -> OutputDataset:
    from openlineage.client.event_v2 import OutputDataset

    _named(item, "output")
    facet = reference_facet()(before=item.get("before"), after=item.get("after"), producer=producer)
    facets = {FACET_KEY: facet, **_version_facet(item, producer)}
    return OutputDataset(namespace=item["namespace"], name=item["name"], facets=facets)


def namespace_for(configured: str | None, remote: str | None, folder: str) -> str:
    """The OpenLineage namespace of a workspace: `lineage.namespace`, else `kfmops://<host>/<path>` of its
    git remote (credentials and `.git` dropped: one name for every clone and runner), else
    `kfmops://<folder>`."""
    if configured:
        return configured
    if remote:
        scp = re.fullmatch(r"(?:[^@/]+@)?([^:/]+):(?!//)(.+)", remote)  # git@github.com:owner/repo.git
        parts = urlsplit(remote) if scp is None else None
        host, path = (scp[1], scp[2]) if scp else ((parts.hostname or ""), parts.path) if parts else ("", "")
        path = path.strip("/").removesuffix(".git")
        if path:
            return f"kfmops://{host}/{path}" if host else f"kfmops://{path}"
    return f"kfmops://{folder}"


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
