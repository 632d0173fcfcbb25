"""The ground floor: durable file writes, canonical JSON and digests, hash chains, ids and clocks.

Nothing here imports another kfmops module except `kfmops.errors`.
"""
