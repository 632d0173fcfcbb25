"""Governance of every mutation: policy, data-quality checkpoints, the hash-chained provenance ledger, lineage
(OpenLineage, PROV), telemetry."""
