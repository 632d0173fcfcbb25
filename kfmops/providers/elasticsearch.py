"""Elasticsearch: index aliases, read with one `GET _alias` per batch and swapped atomically.

A batch of alias changes is one `POST _aliases` request: `remove` actions (with `must_exist: true`)
for indices that leave an alias and `add` actions (with `is_write_index`) for the desired ones, so
readers never see an alias half-moved. The response is checked per action: since 8.14 a partly
failed request answers 200 with `errors: true`. Indices are immutable targets and must exist.
No idempotency key is recorded (an alias has nowhere to hold one without touching the index): the
actions of one `_aliases` request are applied atomically, all or none, and re-applying them sets the same
alias again, so a batch is naturally idempotent and its live value alone says whether it was written.
Settings: url_env, user_env, password_env or api_key_env, ca_file, verify, timeout.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import elastic_transport
import elasticsearch

from kfmops.desired.identifiers import search_name_problem
from kfmops.errors import BackendError
from kfmops.providers.base import Provider, Write, WriteKey, from_environment
from kfmops.references import Reference, ReferenceKind
from kfmops.workspace import BackendConfig, Workspace

MAX_URL_NAMES = 3000  # characters of comma-joined names per request line (Elasticsearch allows 4 KiB)
RETRYABLE_STATUS = {429, 502, 503, 504}
MIN_PREFIX = 4


class ElasticsearchProvider(Provider):
    kinds = frozenset({ReferenceKind.SEARCH})

    def __init__(self, config: BackendConfig, workspace: Workspace, *, read_only: bool = False):
        super().__init__(config.name)
        self.client = _client(config)

    def _names(self, names: Sequence[str]) -> Iterator[list[str]]:
        """Names in groups whose comma-joined length fits one request line."""
        group: list[str] = []
        length = 0
        for name in names:
            if problem := search_name_problem(name, "name"):
                raise BackendError(self.name, problem)
            if group and length + len(name) + 1 > MAX_URL_NAMES:
                yield group
                group, length = [], 0
            group.append(name)
            length += len(name) + 1
        if group:
            yield group

    def _request_names(self, names: list[str]) -> list[list[str]]:
        """Name lists for `GET _alias/...`: one request per batch. When the names do not fit one request
        line, their common prefix (at least 4 characters, e.g. `kfm-`) as `prefix*` asks for them all at
        once; the answer is filtered to the names asked for."""
        groups = list(self._names(names))
        if len(groups) > 1:
            prefix = posixpath.commonprefix(names)
            if len(prefix) >= MIN_PREFIX and not search_name_problem(prefix, "alias prefix"):
                return [[f"{prefix}*"]]
        return groups

    def _live_aliases(self, aliases: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{alias: {"indices": [...], "write_index": ...}} for the aliases that exist."""
        found: dict[str, dict[str, Any]] = {}
        names = sorted(set(aliases))
        wanted = set(names)
        for group in self._request_names(names):
            self.round_trips += 1
            body = self._call(lambda g=group: self.client.options(ignore_status=404).indices.get_alias(name=g)).body
            for index, entry in body.items():
                if not isinstance(entry, dict):
                    continue  # the "error" and "status" members of a partly missing answer
                for alias, properties in entry.get("aliases", {}).items():
                    if alias not in wanted:
                        continue  # matched the batch's prefix pattern but was not asked for
                    value = found.setdefault(alias, {"indices": [], "write_index": None})
                    value["indices"].append(index)
                    if properties.get("is_write_index"):
                        value["write_index"] = index
        return found

    def pointers(self, kind: str, shape: Mapping[str, str]) -> dict[str, Any]:
        """{alias: value} of every alias whose name starts with `shape["prefix"]` (one `GET _alias/prefix*`)."""
        prefix = shape.get("prefix", "") if kind == ReferenceKind.SEARCH else ""
        if len(prefix) < MIN_PREFIX or search_name_problem(prefix, "alias prefix"):
            raise BackendError(
                self.name, f"cannot list aliases by the prefix {prefix!r}: give at least {MIN_PREFIX} characters"
            )
        self.round_trips += 1
        body = self._call(lambda: self.client.options(ignore_status=404).indices.get_alias(name=f"{prefix}*")).body
        found: dict[str, dict[str, Any]] = {}
        for index, entry in body.items():
            for alias, properties in (entry.get("aliases", {}) if isinstance(entry, dict) else {}).items():
                if alias.startswith(prefix):
                    value = found.setdefault(alias, {"indices": [], "write_index": None})
                    value["indices"].append(index)
                    if properties.get("is_write_index"):
                        value["write_index"] = index
        return {alias: {**value, "indices": sorted(value["indices"])} for alias, value in found.items()}

    def read(self, references: Sequence[Reference]) -> dict[str, Any]:
        live = self._live_aliases([r.locator["alias"] for r in references])
        return {r.address: r.normalize(live.get(r.locator["alias"])) for r in references}

    def write(self, items: Sequence[Write], *, key: WriteKey | None = None) -> None:
        for _, value in items:
            # Index names go in the request body, where `_aliases` would expand a wildcard to every index.
            for index in (value or {}).get("indices", []):
                if problem := search_name_problem(index, "index"):
                    raise BackendError(self.name, problem)
        live = self._live_aliases([r.locator["alias"] for r, _ in items])
        actions: list[dict[str, Any]] = []
        for reference, value in items:
            alias = reference.locator["alias"]
            current = set(live.get(alias, {}).get("indices", []))
            wanted = value or {"indices": [], "write_index": None}
            for index in sorted(current - set(wanted["indices"])):
                actions.append({"remove": {"index": index, "alias": alias, "must_exist": True}})
            for index in wanted["indices"]:
                add: dict[str, Any] = {"index": index, "alias": alias}
                if wanted.get("write_index") is not None:
                    add["is_write_index"] = index == wanted["write_index"]
                actions.append({"add": add})
        if not actions:
            return
        self.round_trips += 1
        response = self._call(lambda: self.client.indices.update_aliases(actions=actions)).body
        failed = [result for result in response.get("action_results", []) if result.get("status", 200) >= 300]
        if response.get("errors") or failed or not response.get("acknowledged"):
            detail = "; ".join(str(f.get("error", f)) for f in failed[:3]) or str(response)
            raise BackendError(self.name, f"alias update partly failed: {detail}")

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        wanted: dict[str, list[str]] = {}
        for reference, value in items:
            for index in (value or {}).get("indices", []):
                wanted.setdefault(index, []).append(reference.address)
        existing: set[str] = set()
        for group in self._names(sorted(wanted)):
            self.round_trips += 1
            body = self._call(
                lambda g=group: self.client.indices.get_settings(
                    index=g, ignore_unavailable=True, allow_no_indices=True, filter_path="*.settings.index.uuid"
                )
            ).body
            existing.update(body or {})
        return [
            (address, f"index {index!r} does not exist")
            for index, addresses in sorted(wanted.items())
            if index not in existing
            for address in addresses
        ]

    def is_retryable(self, error: Exception) -> bool:
        if isinstance(error, BackendError):
            return error.retryable
        if isinstance(error, elasticsearch.ApiError):
            return error.meta.status in RETRYABLE_STATUS
        return isinstance(error, elastic_transport.ConnectionError | elastic_transport.ConnectionTimeout)

    def _call(self, operation: Any) -> Any:
        try:
            return operation()
        except elasticsearch.AuthenticationException as exc:
            raise BackendError(self.name, f"authentication failed: {exc.message}") from exc
        except elasticsearch.ApiError as exc:
            raise BackendError(
                self.name, f"HTTP {exc.meta.status}: {exc.message}", retryable=self.is_retryable(exc)
            ) from exc
        except elastic_transport.TransportError as exc:
            raise BackendError(
                self.name, f"{type(exc).__name__}: {exc.message}", retryable=self.is_retryable(exc)
            ) from exc

    def close(self) -> None:
        self.client.close()


def _client(config: BackendConfig) -> elasticsearch.Elasticsearch:
    """A client for the backend's settings; credentials come only from the environment variables they name."""
    settings = config.settings
    url = from_environment(config.name, settings, "url")
    options: dict[str, Any] = {"request_timeout": settings.get("timeout", 10.0), "max_retries": 0}
    user = from_environment(config.name, settings, "user", required=False)
    if user is not None:
        options["basic_auth"] = (user, from_environment(config.name, settings, "password") or "")
    api_key = from_environment(config.name, settings, "api_key", required=False)
    if api_key is not None:
        options["api_key"] = api_key
    if settings.get("ca_file"):
        options["ca_certs"] = settings["ca_file"]
    if settings.get("verify") is False:
        options["verify_certs"] = False
    try:
        return elasticsearch.Elasticsearch(url, **options)
    except ValueError as exc:
        raise BackendError(config.name, f"invalid Elasticsearch settings: {exc}") from None
