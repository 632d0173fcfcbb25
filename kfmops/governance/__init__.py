"""Governance of every mutation: policy, the hash-chained provenance ledger, lineage (OpenLineage, PROV), telemetry."""
