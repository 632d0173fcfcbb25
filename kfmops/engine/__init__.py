"""Orchestration only: plan, apply, rollback, recover and hotfix, one module each; they emit typed events."""
