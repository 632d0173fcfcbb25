"""The engine: refresh, apply, rollback, recover and hotfix, with the WAL, the lock and state persistence."""
