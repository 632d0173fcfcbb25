"""Neo4j: relationships between keyed nodes, read and written in batches with UNWIND.

A graph reference is the single outgoing relationship of one type from a node to a node of a label:
`(:Dataset {id: D})-[:CURRENT_VERSION]->(:DatasetVersion {id: ...})`. Nodes are immutable targets and
are never created. Labels, keys and relationship types cannot be query parameters, so they are checked
against a strict pattern and backtick-quoted; every value is a parameter. Per batch: one statement in one
explicit transaction to write (detach, link, count what was linked), one auto-commit query to read, one to
check targets, each answered as one record. A keyed write sets `kfmops_transaction` and `kfmops_batch` on
each relationship it creates: the idempotency key, read back by `written_by`. Keys should be indexed (a
uniqueness constraint does it); where they are, every lookup is forced to be an index seek. Settings:
uri_env, user_env, password_env, database, timeout, encrypted, trust, batch_size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import neo4j
from neo4j import exceptions as neo4j_errors

from kfmops.desired.identifiers import graph_identifier_problem
from kfmops.errors import BackendError
from kfmops.providers.base import Provider, Write, WriteKey, chunks, from_environment
from kfmops.references import Reference, ReferenceKind
from kfmops.workspace import BackendConfig, Workspace

Shape = tuple[str, str, str, str, str]  # from label, from key, type, to label, to key


class Neo4jProvider(Provider):
    kinds = frozenset({ReferenceKind.GRAPH})

    def __init__(self, config: BackendConfig, workspace: Workspace, *, read_only: bool = False):
        super().__init__(config.name)
        settings = config.settings
        uri = from_environment(config.name, settings, "uri")
        assert uri is not None  # required: from_environment raises instead
        user = from_environment(config.name, settings, "user", required=False)
        password = from_environment(config.name, settings, "password", required=False)
        timeout = settings.get("timeout", 10.0)
        # Resilient (providers/resilient.py) is the one retry layer: the driver's managed transactions (execute_query)
        # would otherwise retry an unreachable server for 30 s first, unseen by the budgets and the breaker.
        # connection_timeout bounds only the TCP connect; the Bolt handshake waits for the acquisition timeout
        # (60 s by default) and a pooled connection's reads wait forever, so a server that stops answering hangs
        # kfmops. A liveness check on every checkout (one RESET round trip) bounded by `timeout` turns such a
        # server into a retryable ConnectionAcquisitionTimeoutError instead.
        options: dict[str, Any] = {
            "connection_timeout": timeout,
            "connection_acquisition_timeout": timeout,
            "liveness_check_timeout": 0,
            "max_transaction_retry_time": 0,
            # The server's notifications (e.g. 01N51 for a label not yet in a fresh database) would be logged
            # on the operator's terminal; kfmops reports what it needs in its own words.
            "notifications_min_severity": neo4j.NotificationMinimumSeverity.OFF,
        }
        if user is not None:
            options["auth"] = (user, password or "")
        if settings.get("encrypted") is not None and uri.startswith(("bolt://", "neo4j://")):
            options["encrypted"] = bool(settings["encrypted"])
        self.database = settings.get("database")
        self.batch = int(settings.get("batch_size", 1000))
        self.indexed: set[tuple[str, str]] | None = None  # (label, key) with an online range index, looked up once
        # (label, key, id) of the nodes this provider's reads found at either end of a relationship. Nodes are
        # immutable targets, so missing_targets need not ask again within one command (a write still checks).
        self.present: set[tuple[str, str, Any]] = set()
        try:
            self.driver = neo4j.GraphDatabase.driver(uri, **options)
        except (ValueError, neo4j_errors.ConfigurationError) as exc:
            raise BackendError(config.name, f"invalid Neo4j connection settings: {exc}") from None

    def _quoted(self, name: str, what: str) -> str:
        if problem := graph_identifier_problem(name, what):
            raise BackendError(self.name, problem)
        return f"`{name}`"

    def _node(self, variable: str, label: str, key: str, value: str) -> tuple[str, str]:
        """`(variable:label {key: value})`, and a hint to seek the index on (label, key) when the server has one.

        Without it, a plan made while the index's statistics still counted few entries (a label filled just
        after it was empty: a fresh database, a new label, a test's label) scans the whole index for every id
        of a batch, 4 to 8 seconds a batch of 1,000 on the test server, until the planner replans it.
        """
        node = f"({variable}:{self._quoted(label, 'label')} {{{self._quoted(key, 'key')}: {value}}})"
        if self.indexed is None:
            self.indexed = self._indexes()
        hint = f" USING INDEX SEEK {variable}:{self._quoted(label, 'label')}({self._quoted(key, 'key')})"
        return node, hint if (label, key) in self.indexed else ""

    def _indexes(self) -> set[tuple[str, str]]:
        """(label, key) of the online single-property range indexes (a uniqueness constraint makes one).

        One schema lookup per provider, not counted as a round trip of the data. Where the user may not list
        indexes (or the server cannot), queries go without hints."""
        try:
            records, _, _ = self.driver.execute_query(
                "SHOW INDEXES YIELD labelsOrTypes, properties, type, state, entityType",
                database_=self.database,
                routing_=neo4j.RoutingControl.READ,
            )
        except neo4j_errors.AuthError as exc:
            raise self._error(exc) from exc
        except neo4j_errors.ClientError:
            return set()
        except (neo4j_errors.Neo4jError, neo4j_errors.DriverError) as exc:
            raise self._error(exc) from exc
        return {
            (record["labelsOrTypes"][0], record["properties"][0])
            for record in records
            if record["entityType"] == "NODE"
            and record["type"] in ("RANGE", "BTREE")
            and record["state"] == "ONLINE"
            and len(record["labelsOrTypes"] or []) == 1
            and len(record["properties"] or []) == 1
        }

    def _by_shape(self, references: Sequence[Reference]) -> dict[Shape, list[Reference]]:
        """References grouped by their pattern: one Cypher statement per group."""
        groups: dict[Shape, list[Reference]] = defaultdict(list)
        for reference in references:
            groups[self._shape(reference)].append(reference)
        return groups

    def _shape(self, reference: Reference) -> Shape:
        locator = reference.locator
        return (
            locator["from"]["label"],
            locator["from"]["key"],
            locator["type"],
            locator["to"]["label"],
            locator["to"]["key"],
        )

    def _query(self, cypher: str, **parameters: Any) -> list[neo4j.Record]:
        """The records of one read, in an auto-commit transaction: one round trip, where a managed one
        (execute_query) adds a BEGIN and a COMMIT. Every record in one pull (fetch_size=-1)."""
        self.round_trips += 1
        try:
            with self.driver.session(
                database=self.database, default_access_mode=neo4j.READ_ACCESS, fetch_size=-1
            ) as session:
                return list(session.run(cypher, parameters))
        except (neo4j_errors.Neo4jError, neo4j_errors.DriverError) as exc:
            raise self._error(exc) from exc

    def read(self, references: Sequence[Reference]) -> dict[str, Any]:
        groups = self._by_shape(references)
        values: dict[str, Any] = {}
        for (from_label, from_key, rel, to_label, to_key), group in groups.items():
            # One record of two lists per batch, the sources by their position in $ids: a record, a list or a
            # string per reference costs the driver more to decode than the server takes to answer.
            source, hint = self._node("a", from_label, from_key, "$ids[i]")
            cypher = (
                f"UNWIND range(0, size($ids) - 1) AS i MATCH {source}-[:{self._quoted(rel, 'relationship type')}]->"
                f"(b:{self._quoted(to_label, 'label')}){hint} WITH i, b.{self._quoted(to_key, 'key')} AS target "
                "WHERE target IS NOT NULL RETURN collect(i) AS sources, collect(target) AS targets"
            )
            for batch in chunks(group, self.batch):
                ids = list(dict.fromkeys(r.locator["from"]["id"] for r in batch))
                found: dict[Any, list[Any]] = defaultdict(list)
                record = self._query(cypher, ids=ids)[0]
                for position, target_id in zip(record["sources"], record["targets"], strict=True):
                    found[ids[position]].append(target_id)
                    self.present.add((from_label, from_key, ids[position]))
                    self.present.add((to_label, to_key, target_id))
                for reference in batch:
                    targets = found.get(reference.locator["from"]["id"])
                    if targets is None:
                        values[reference.address] = None
                    else:
                        values[reference.address] = targets[0] if len(targets) == 1 else sorted(targets)
        return values

    def write(self, items: Sequence[Write], *, key: WriteKey | None = None) -> None:
        groups: dict[Shape, list[Write]] = defaultdict(list)
        for item in items:
            groups[self._shape(item[0])].append(item)
        for (from_label, from_key, rel, to_label, to_key), group in groups.items():
            relationship = self._quoted(rel, "relationship type")
            target_label = self._quoted(to_label, "label")
            # One statement per batch: detach each source from its old targets, then link the new ones, each new
            # relationship marked with the write's key (an unkeyed write leaves none: SET to null removes).
            source, source_hint = self._node("a", from_label, from_key, "row.source")
            target, target_hint = self._node("b", to_label, to_key, "row.target")
            cypher = (
                f"UNWIND $rows AS row MATCH {source}{source_hint} "
                f"OPTIONAL MATCH (a)-[old:{relationship}]->(:{target_label}) DELETE old "
                f"WITH DISTINCT a, row WHERE row.target IS NOT NULL MATCH {target}{target_hint} "
                f"MERGE (a)-[r:{relationship}]->(b) SET r.kfmops_transaction = $transaction, r.kfmops_batch = $batch "
                "RETURN count(*) AS linked"
            )
            marks = (
                {"transaction": key.transaction, "batch": key.batch} if key else {"transaction": None, "batch": None}
            )
            for batch in chunks(group, self.batch):
                rows = [{"source": r.locator["from"]["id"], "target": value} for r, value in batch]
                expected = sum(1 for row in rows if row["target"] is not None)
                self.round_trips += 1
                try:
                    with self.driver.session(database=self.database) as session, session.begin_transaction() as tx:
                        record = tx.run(cypher, rows=rows, **marks).single()
                        assert record is not None  # count(*) always returns exactly one row
                        linked = record["linked"]
                        if linked != expected:
                            tx.rollback()
                            raise BackendError(
                                self.name,
                                f"linked {linked} of {expected} relationships: a source "
                                "or target node is missing; nothing in this batch was changed",
                            )
                        tx.commit()
                except (neo4j_errors.Neo4jError, neo4j_errors.DriverError) as exc:
                    raise self._error(exc) from exc

    def written_by(self, key: WriteKey, references: Sequence[Reference]) -> set[str] | None:
        """The addresses whose every live relationship carries `key`, one query per batch.

        A reference with no relationship (deleted, or never linked) has nothing to carry a key: it is counted
        as written under any key, so that its absent value alone decides, as it would without keys.
        """
        groups = self._by_shape(references)
        written: set[str] = set()
        for (from_label, from_key, rel, to_label, _), group in groups.items():
            source, hint = self._node("a", from_label, from_key, "$ids[i]")
            cypher = (
                f"UNWIND range(0, size($ids) - 1) AS i MATCH {source}-[r:{self._quoted(rel, 'relationship type')}]->"
                f"(:{self._quoted(to_label, 'label')}){hint} WITH i, collect(coalesce(r.kfmops_transaction = "
                "$transaction AND r.kfmops_batch = $batch, false)) AS marks "
                "RETURN collect(i) AS linked, collect(CASE WHEN all(m IN marks WHERE m) THEN i END) AS keyed"
            )
            for batch in chunks(group, self.batch):
                ids = list(dict.fromkeys(r.locator["from"]["id"] for r in batch))
                record = self._query(cypher, ids=ids, transaction=key.transaction, batch=key.batch)[0]
                linked = {ids[i] for i in record["linked"]}
                keyed = {ids[i] for i in record["keyed"]}
                written.update(
                    r.address
                    for r in batch
                    if r.locator["from"]["id"] in keyed or r.locator["from"]["id"] not in linked
                )
        return written

    def pointers(self, kind: str, shape: Mapping[str, str]) -> dict[str, Any]:
        """{source id: target id} of every relationship of the shape whose source id starts with the prefix."""
        if kind != ReferenceKind.GRAPH:
            return super().pointers(kind, shape)
        key, to_key = self._quoted(shape["key"], "key"), self._quoted(shape["to_key"], "key")
        cypher = (
            f"MATCH (a:{self._quoted(shape['from_label'], 'label')})-"
            f"[:{self._quoted(shape['type'], 'relationship type')}]->(b:{self._quoted(shape['to_label'], 'label')}) "
            f"WHERE a.{key} STARTS WITH $prefix AND b.{to_key} IS NOT NULL "
            f"RETURN a.{key} AS source, collect(b.{to_key}) AS targets"
        )
        # a source with several targets is not one pointer: discovery leaves it to a GraphRelationship document
        records = self._query(cypher, prefix=shape["prefix"])
        return {record["source"]: record["targets"][0] for record in records if len(record["targets"]) == 1}

    def missing_targets(self, items: Sequence[Write]) -> list[tuple[str, str]]:
        missing: list[tuple[str, str]] = []
        for batch in chunks(items, self.batch):
            wanted: dict[tuple[str, str], dict[Any, list[str]]] = defaultdict(lambda: defaultdict(list))
            for reference, value in batch:
                locator = reference.locator
                ends = [(locator["from"]["label"], locator["from"]["key"], locator["from"]["id"])]
                if value is not None:
                    ends.append((locator["to"]["label"], locator["to"]["key"], value))
                for label, key, node in ends:
                    if (label, key, node) not in self.present:
                        wanted[(label, key)][node].append(reference.address)
            if not wanted:
                continue
            # One query per batch, one part per (label, key), each answering only the ids it did not find.
            parts = []
            for number, (label, key) in enumerate(wanted):
                node, hint = self._node("n", label, key, "id")
                parts.append(
                    f"UNWIND $ids{number} AS id OPTIONAL MATCH {node}{hint} WITH id, n WHERE n IS NULL "
                    f"RETURN {number} AS part, collect(id) AS absent"
                )
            parameters = {f"ids{number}": list(ids) for number, ids in enumerate(wanted.values())}
            records = self._query(" UNION ALL ".join(parts), **parameters)
            shapes = list(wanted.items())
            for record in records:
                (label, key), ids = shapes[record["part"]]
                missing.extend(
                    (address, f"node (:{label} {{{key}: {absent!r}}}) does not exist")
                    for absent in record["absent"]
                    for address in ids[absent]
                )
        return missing

    def is_retryable(self, error: Exception) -> bool:
        if isinstance(error, BackendError):
            return error.retryable
        return (
            isinstance(
                error,
                neo4j_errors.TransientError
                | neo4j_errors.ServiceUnavailable
                | neo4j_errors.SessionExpired
                | neo4j_errors.ConnectionAcquisitionTimeoutError,  # no answer within `timeout`
            )
            or getattr(error, "is_retryable", lambda: False)()
        )

    def _error(self, exc: Exception) -> BackendError:
        if isinstance(exc, neo4j_errors.AuthError):
            return BackendError(self.name, f"authentication failed: {exc}")
        return BackendError(self.name, f"{type(exc).__name__}: {exc}", retryable=self.is_retryable(exc))

    def close(self) -> None:
        self.driver.close()
