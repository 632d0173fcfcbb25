"""Canary secrets: a distinct canary value in every setting that names an environment variable (Neo4j URI, user
and password; Elasticsearch URL, user, password and API key; Redis URL and password; the postgres state DSN;
KFMOPS_PLAN_KEY and KFMOPS_LEDGER_KEY), through runs that fail (every server address refuses at once:
127.0.0.1:1, one attempt) and runs that succeed (the local backend: plan, signed plan files, apply, rollback,
hotfix, ledger, drift, an internal error's debug log). No canary may appear, whole or in part, in any
stdout or stderr, nor in any file under the workspace, the test's folder or the folder commands run in
(spans, metrics, WAL, ledger, lineage, PROV, plan files, history, debug logs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.generate import promote

MARK = "Zq8vX2pL"  # in every canary: a leak of any part of one that keeps this is found


def canary(setting: str) -> str:
    return f"{setting}-{MARK}-canary"


CANARIES = {
    "CANARY_NEO4J_URI": f"bolt://neo4j:{canary('neo4j-uri-password')}@127.0.0.1:1",
    "CANARY_NEO4J_USER": canary("neo4j-user"),
    "CANARY_NEO4J_PASSWORD": canary("neo4j-password"),
    "CANARY_ES_URL": f"http://elastic:{canary('es-url-password')}@127.0.0.1:1",
    "CANARY_ES_USER": canary("es-user"),
    "CANARY_ES_PASSWORD": canary("es-password"),
    "CANARY_ES_API_KEY": canary("es-api-key"),
    "CANARY_REDIS_URL": f"redis://:{canary('redis-url-password')}@127.0.0.1:1/0",
    "CANARY_REDIS_PASSWORD": canary("redis-password"),
    "KFMOPS_STATE_DSN": f"postgresql://kfmops:{canary('dsn-password')}@127.0.0.1:1/kfmops?connect_timeout=2",
    "KFMOPS_PLAN_KEY": canary("plan-key"),
    "KFMOPS_LEDGER_KEY": canary("ledger-key"),
}
FAILING = {  # one backend (or the state store) per case, every address refusing at once
    "neo4j": {
        "backends": {
            "graph": {
                "type": "neo4j",
                "uri_env": "CANARY_NEO4J_URI",
                "user_env": "CANARY_NEO4J_USER",
                "password_env": "CANARY_NEO4J_PASSWORD",
                "timeout": 2,
            }
        },
        "routes": {"graph": "graph"},
    },
    "elasticsearch basic auth": {
        "backends": {
            "search": {
                "type": "elasticsearch",
                "url_env": "CANARY_ES_URL",
                "user_env": "CANARY_ES_USER",
                "password_env": "CANARY_ES_PASSWORD",
                "timeout": 2,
            }
        },
        "routes": {"search": "search"},
    },
    "elasticsearch api key": {
        "backends": {
            "search": {"type": "elasticsearch", "url_env": "CANARY_ES_URL", "api_key_env": "CANARY_ES_API_KEY"}
        },
        "routes": {"search": "search"},
    },
    "redis": {
        "backends": {
            "cache": {
                "type": "redis",
                "url_env": "CANARY_REDIS_URL",
                "password_env": "CANARY_REDIS_PASSWORD",
                "prefixes": ["kfm:"],
                "timeout": 2,
            }
        },
        "routes": {"cache": "cache"},
    },
    "postgres state": {"state": {"backend": "postgres", "dsn_env": "KFMOPS_STATE_DSN"}},
}


def configure(workspace: Path, settings: dict[str, Any]) -> None:
    """Merge `settings` into kfmops.yaml (backends added beside the local one), with one attempt per call."""
    config = workspace / "kfmops.yaml"
    merged = yaml.safe_load(config.read_text())
    merged["backends"].update(settings.get("backends", {}))
    merged.update({k: v for k, v in settings.items() if k != "backends"})
    merged["retry"] = {"attempts": 1}
    config.write_text(yaml.safe_dump(merged, sort_keys=False))


def leaks(text: str) -> bool:
    return MARK in text


def leaked_files(*roots: Path) -> list[Path]:
    """Files under `roots` holding the canary mark (as bytes: any encoding of an ASCII canary keeps it)."""
    return sorted(
        path
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and MARK.encode() in path.read_bytes()
    )


class Runs:
    """Commands run with every canary in the environment; remembers whatever they printed that leaks."""

    def __init__(self, cli: Callable[..., tuple[int, str, str]]):
        self.cli = cli
        self.leaked: list[str] = []
        self.codes: list[int] = []

    def __call__(self, workspace: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        code, out, err = self.cli(workspace, *args, env={**CANARIES, **(env or {})})
        self.codes.append(code)
        if leaks(out + err):
            self.leaked.append(f"{' '.join(args)} (exit {code}): {(out + err).strip()[-600:]}")
        assert "Traceback" not in out + err, (args, err)
        return code, out, err


@pytest.mark.parametrize("case", FAILING)
def test_canaries_in_every_setting_of_a_failing_backend_leak_nowhere(case, make_workspace, fork_cli, tmp_path):
    workspace = make_workspace(n=2)
    configure(workspace, FAILING[case])
    runs = Runs(fork_cli)
    for command in (
        ("validate",),
        ("plan",),
        ("plan", "--format", "json", "--out", str(tmp_path / "plan.json")),
        ("apply", "--auto-approve"),
        ("drift",),
        ("recover",),
        ("state", "list"),
        ("history",),
        ("lock", "status", "--json"),
    ):
        runs(workspace, *command)
    assert runs.codes[1] != 0, "the unreachable backend (or store) must fail the plan"
    assert runs.leaked == []
    assert leaked_files(workspace, tmp_path, fork_cli.cwd) == []


def test_canaries_through_succeeding_runs_and_an_internal_error_leak_nowhere(make_workspace, fork_cli, tmp_path):
    workspace = make_workspace(n=3)
    runs = Runs(fork_cli)
    plan = tmp_path / "plan.json"
    assert runs(workspace, "plan", "--out", str(plan))[0] == 0
    assert runs(workspace, "show", str(plan), "--format", "json")[0] == 0
    assert runs(workspace, "apply", str(plan))[0] == 0
    promote(workspace, 1.0, 1854)
    assert runs(workspace, "apply", "--auto-approve")[0] == 0
    assert runs(workspace, "rollback", "--last", "--auto-approve", "--json")[0] == 0
    reason = f"INC-1 rotated {CANARIES['KFMOPS_LEDGER_KEY']} and password={CANARIES['CANARY_REDIS_PASSWORD']}"
    assert runs(workspace, "hotfix", "dataset.ds-000000", "--set", "version=v3", "--reason", reason)[0] == 0  # was v2
    for command in (("drift",), ("history",), ("ledger", "verify"), ("ledger", "show"), ("state", "list", "--json")):
        runs(workspace, *command)
    # an unexpected error writes a debug log (in the folder commands run in): it holds no secret either
    broken = make_workspace(n=1)
    code, _, _ = runs(broken, "init", env={"KFMOPS_FAULT": "*/state.json@write:1:EIO"})
    assert code != 0
    assert runs.leaked == []
    assert leaked_files(workspace, broken, tmp_path, fork_cli.cwd) == []
