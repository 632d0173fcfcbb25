"""Hardening: the adversarial cases of issue 11 that concern the engine, the stores and the CLI edge.

Each test drives the real console script against a generated workspace and checks what the local
backend, the state folder and the ledger really hold afterwards (read without kfmops code where that
matters). File faults come from the off-by-default KFMOPS_FAULT hook (kfmops/io/faults.py).
"""

from __future__ import annotations

import json
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import commit_all, local_rows

from benchmarks.generate import promote
from kfmops.stores.folder import FolderStateStore

CANARY = "canary-Zq8vX2pL"  # a password no output may ever contain


def succeeded(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    assert "Traceback" not in out + err and "internal error" not in err
    return out


def add_document(workspace: Path, document: dict[str, Any], name: str = "extra.yaml") -> Path:
    path = workspace / "desired" / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def cache_key(name: str, key: str, value: str, invalidate: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kfmops/v1",
        "kind": "CacheKey",
        "metadata": {"name": name},
        "spec": {"key": key, "value": value, "invalidate": invalidate},
    }


def history(cli: Any, workspace: Path) -> list[dict[str, Any]]:
    return json.loads(succeeded(cli(workspace, "history", "--json")))


# 1. An invalidation pattern never deletes a key that another address manages ------------------------


def test_an_invalidation_pattern_that_matches_managed_keys_is_refused_at_its_line(make_workspace, cli):
    workspace = make_workspace(n=3)
    add_document(workspace, cache_key("flush-all", "kfm:flush", "now", ["kfm:dataset:*"]))
    for command in (("validate",), ("plan",)):
        code, _, err = cli(workspace, *command)
        assert code == 1, (command, err)
        assert "desired/extra.yaml" in err
        assert "invalidation pattern 'kfm:dataset:*' matches 'kfm:dataset:ds-000000:current'" in err
        assert "Traceback" not in err


def test_a_dataset_invalidation_that_matches_a_managed_cache_key_is_refused(make_workspace, cli):
    workspace = make_workspace(n=2)
    add_document(workspace, cache_key("style", "kfm:cache:ds-000000:style", "s1", []))
    code, _, err = cli(workspace, "validate")
    assert code == 1
    assert "dataset.ds-000000.cache: invalidation pattern 'kfm:cache:ds-000000:*' matches" in err
    assert "cache_key.style manages" in err


def test_a_pattern_matching_a_key_only_the_state_manages_is_refused_at_plan(make_workspace, cli):
    workspace = make_workspace(n=2)
    extra = add_document(workspace, cache_key("banner", "kfm:banner", "b1", []))
    succeeded(cli(workspace, "apply", "--auto-approve"))
    extra.unlink()  # kfm:banner is still managed (recorded in state) until the delete is applied
    add_document(workspace, cache_key("flush", "kfm:flush", "now", ["kfm:banner*"]), "flush.yaml")
    code, _, err = cli(workspace, "plan")
    assert code == 1
    assert "matches 'kfm:banner', which cache_key.banner manages (recorded in state)" in err
    assert ("kfm:banner", "b1") in local_rows(workspace)["kv"], "nothing was deleted"


# 2. A WAL that cannot be written stops everything before the write it would announce -----------------


def test_a_full_disk_at_a_wal_record_stops_the_apply_and_recover_restores_exactly(make_workspace, cli, live_snapshot):
    workspace = make_workspace(n=3)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    before = live_snapshot(workspace)
    promote(workspace, 1.0, 1854)
    # BEGIN, INTENT/DONE of the stac and graph batches, then the INTENT of the search batch: the disk is full
    code, out, err = cli(workspace, "apply", "--auto-approve", env={"KFMOPS_FAULT": "*/wal/*@write:6+:ENOSPC"})
    assert code == 6, (code, out, err)
    assert "WAL could not be written" in err and "kfmops recover" in err
    assert "Traceback" not in out + err
    (wal,) = (workspace / "state" / "wal").glob("*.jsonl")
    types = [json.loads(line)["type"] for line in wal.read_text().splitlines()]
    assert types == ["BEGIN", "INTENT", "DONE", "INTENT", "DONE"], "nothing unannounced, nothing out of order"
    assert cli(workspace, "apply", "--auto-approve")[0] == 6, "an unfinished WAL blocks every mutation"
    succeeded(cli(workspace, "recover"))
    assert live_snapshot(workspace) == before


def test_a_short_write_of_a_wal_record_is_a_torn_tail_that_recover_ignores(make_workspace, cli, live_snapshot):
    workspace = make_workspace(n=3)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    before = live_snapshot(workspace)
    promote(workspace, 1.0, 1854)
    code, _, err = cli(workspace, "apply", "--auto-approve", env={"KFMOPS_FAULT": "*/wal/*@write:4+:SHORT"})
    assert code == 6, err
    succeeded(cli(workspace, "recover"))
    assert live_snapshot(workspace) == before
    succeeded(cli(workspace, "apply", "--auto-approve"))


# 3. The lock cannot be bypassed by deleting a file --------------------------------------------------


def test_deleting_every_lock_file_lets_no_second_apply_in(make_workspace, cli, cli_process):
    workspace = make_workspace(n=3)
    promote(workspace, 1.0, 1854)
    holder = cli_process(workspace, "apply", "--auto-approve")
    state = workspace / "state"
    deadline = time.monotonic() + 30
    while not (state / "lock.json").exists() and holder.running() and time.monotonic() < deadline:
        time.sleep(0.005)
    holder.signal(signal.SIGSTOP)
    try:
        for name in (".lock", "lock.json", "lock.counter"):
            (state / name).unlink(missing_ok=True)
        code, _, err = cli(workspace, "apply", "--auto-approve")
        assert code == 4, err
        assert "locked" in err
    finally:
        holder.signal(signal.SIGCONT)
        holder.finish()


# 4. Apply judges a plan against what its commit declares ---------------------------------------------


def forged(plan: Path, edit: Any) -> None:
    """Edit a plan file and recompute its (unkeyed) digest, as anyone who can write the file could."""
    import hashlib

    body = json.loads(plan.read_text())
    edit(body)
    unsigned = {k: v for k, v in body.items() if k not in {"digest", "signature"}}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    body["digest"] = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    plan.write_text(json.dumps(body))


@pytest.mark.parametrize("where", ["dataset record", "after value"])
def test_a_forged_plan_with_a_recomputed_digest_is_refused(make_workspace, cli, where):
    workspace = make_workspace(n=2)
    commit_all(workspace)
    plan = workspace / "plan.json"
    succeeded(cli(workspace, "plan", "--out", str(plan)))

    def edit(body: dict[str, Any]) -> None:
        if where == "dataset record":
            body["datasets"]["ds-000000"]["care"] = {"label": "open", "forged": True}
        else:
            change = next(c for c in body["changes"] if c["address"] == "dataset.ds-000000.cache")
            change["after"] = "v-does-not-exist"

    forged(plan, edit)
    code, _, err = cli(workspace, "apply", str(plan))
    assert code == 5, err
    assert "does not match the desired state of commit" in err
    assert local_rows(workspace)["kv"] == set(), "nothing was applied"


def test_require_signed_plans_refuses_an_unsigned_plan(make_workspace, cli):
    workspace = make_workspace(n=1)
    config = workspace / "kfmops.yaml"
    config.write_text(config.read_text() + "apply:\n  require_signed_plans: true\n")
    plan = workspace / "plan.json"
    succeeded(cli(workspace, "plan", "--out", str(plan)))
    code, _, err = cli(workspace, "apply", str(plan))
    assert code == 1 and "require_signed_plans" in err
    key = {"KFMOPS_PLAN_KEY": "k" * 32}
    succeeded(cli(workspace, "plan", "--out", str(plan), env=key))
    succeeded(cli(workspace, "apply", str(plan), env=key))


# 5. Desired state is read only from the workspace ----------------------------------------------------


def test_a_symlink_to_a_file_outside_the_workspace_is_refused(make_workspace, cli, tmp_path):
    workspace = make_workspace(n=1)
    outside = tmp_path / "outside.yaml"
    outside.write_text(yaml.safe_dump(cache_key("sneaky", "kfm:sneaky", "v", [])))
    (workspace / "desired" / "link.yaml").symlink_to(outside)
    code, _, err = cli(workspace, "validate")
    assert code == 1
    assert "is a symbolic link" in err and "outside the desired folder" in err


# 8. Bookkeeping after COMMIT never turns a committed apply into a failure ----------------------------


def test_a_history_write_failing_after_commit_is_a_warning_and_redone(make_workspace, cli):
    workspace = make_workspace(n=2)
    out = succeeded(cli(workspace, "apply", "--auto-approve", env={"KFMOPS_FAULT": "*/applies/*@write:1:EACCES"}))
    assert "Apply complete!" in out
    assert history(cli, workspace) == []  # not yet recorded ...
    assert (workspace / "state" / "state.json").exists()
    code, out, _ = cli(workspace, "plan", "--detailed-exitcode")
    assert code == 0, "the committed apply is part of the state a plan sees"
    succeeded(cli(workspace, "recover"))  # ... the next mutating command records it
    (entry,) = history(cli, workspace)
    assert entry["outcome"] == "committed"
    ledger = workspace / "docs" / "reports" / "audit" / "data_provenance_ledger.jsonl"
    assert [json.loads(line)["apply_id"] for line in ledger.read_text().splitlines()] == [entry["apply_id"]]


def test_a_ledger_failing_after_commit_is_written_by_the_next_command(make_workspace, cli):
    workspace = make_workspace(n=2)
    ledger = workspace / "docs" / "reports" / "audit" / "data_provenance_ledger.jsonl"
    out = succeeded(cli(workspace, "apply", "--auto-approve", env={"KFMOPS_FAULT": "*ledger.jsonl@write:1:ENOSPC"}))
    assert "Apply complete!" in out
    assert not ledger.exists() or ledger.read_text() == ""
    succeeded(cli(workspace, "recover"))
    assert len(ledger.read_text().splitlines()) == 1
    succeeded(cli(workspace, "ledger", "verify"))


def test_a_torn_last_history_line_breaks_no_later_command(make_workspace, cli):
    workspace = make_workspace(n=2)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    index = workspace / "state" / "history.jsonl"
    index.write_bytes(index.read_bytes() + b'{"apply_id": "apply-torn')
    assert len(history(cli, workspace)) == 1
    promote(workspace, 1.0, 1854)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    assert len(history(cli, workspace)) == 2


# 9. The ledger keeps every entry, and a cut or re-hashed chain is detected ---------------------------


def test_a_reason_that_looks_like_a_credential_is_redacted_not_dropped(make_workspace, cli):
    workspace = make_workspace(n=1)
    succeeded(cli(workspace, "apply", "--auto-approve"))
    reason = "INC-7 rotate password=hunter2hunter2 now"
    succeeded(cli(workspace, "hotfix", "dataset.ds-000000", "--set", "version=v1", "--reason", reason))
    entries = [json.loads(line) for line in (workspace / "docs/reports/audit/data_provenance_ledger.jsonl").open()]
    assert [e["op_type"] for e in entries] == ["apply", "hotfix"]
    assert "hunter2" not in json.dumps(entries) and "[redacted]" in entries[-1]["reason"]


def test_removing_the_last_ledger_entry_or_rehashing_an_edit_is_detected(make_workspace, cli):
    workspace = make_workspace(n=2)
    key = {"KFMOPS_LEDGER_KEY": "ledger-key-for-tests"}
    succeeded(cli(workspace, "apply", "--auto-approve", env=key))
    promote(workspace, 1.0, 1854)
    succeeded(cli(workspace, "apply", "--auto-approve", env=key))
    ledger = workspace / "docs" / "reports" / "audit" / "data_provenance_ledger.jsonl"
    whole = ledger.read_text()
    succeeded(cli(workspace, "ledger", "verify", env=key))

    ledger.write_text(whole.splitlines(keepends=True)[0])  # the last entry removed
    code, out, _ = cli(workspace, "ledger", "verify", env=key)
    assert code == 1 and "removed from the end" in out

    import hashlib

    lines = [json.loads(line) for line in whole.splitlines()]
    lines[0]["operator"] = "someone-else"
    prev = "0" * 64
    for entry in lines:  # re-hash the whole chain without the key, as a forger would
        entry["prev_hash"] = prev
        body = {k: v for k, v in entry.items() if k != "hash"}
        entry["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        prev = entry["hash"]
    ledger.write_text("".join(json.dumps(e) + "\n" for e in lines))
    code, out, _ = cli(workspace, "ledger", "verify", env=key)
    assert code == 1 and "does not match its hash" in out


# 10, 11. No secret in any output; the debug log is private -------------------------------------------


def test_a_password_in_a_backend_url_appears_in_no_output_or_file(make_workspace, cli, tmp_path):
    workspace = make_workspace(n=1)
    config = workspace / "kfmops.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["backends"]["graph"] = {"type": "neo4j", "uri_env": "CANARY_URI", "password_env": "CANARY_PASSWORD"}
    settings |= {"routes": {"graph": "graph"}, "retry": {"attempts": 1}}
    config.write_text(yaml.safe_dump(settings))
    env = {"CANARY_URI": f"bolt://neo4j:{CANARY}@127.0.0.1:1", "CANARY_PASSWORD": CANARY}
    for command in (("plan",), ("apply", "--auto-approve"), ("validate",)):
        _, out, err = cli(workspace, *command, env=env)
        assert CANARY not in out + err, command
    leaked = [
        path
        for root in (workspace, tmp_path)
        for path in root.rglob("*")
        if path.is_file() and CANARY.encode() in path.read_bytes()
    ]
    assert leaked == []


def test_an_internal_error_writes_a_private_debug_log_without_secrets(make_workspace, cli, tmp_path):
    workspace = make_workspace(n=1)
    env = {"KFMOPS_FAULT": "*/state.json@write:1:EIO", "KFMOPS_PLAN_KEY": CANARY * 2}
    code, _, err = cli(workspace, "init", env=env)
    assert code == 1 and "Traceback" not in err
    logs = list((tmp_path / "cwd").glob("kfmops-debug-*.log"))
    if logs:  # an unexpected error: the log is private and holds no secret
        (log,) = logs
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert CANARY not in log.read_text()


# 14. Odd input gets one clear line ---------------------------------------------------------------------


def test_a_name_ending_in_a_newline_is_refused(make_workspace, cli):
    workspace = make_workspace(n=1)
    add_document(workspace, cache_key("odd", "kfm:odd\n", "v\n", []))
    code, _, err = cli(workspace, "validate")
    assert code == 1 and "desired/extra.yaml" in err and "Traceback" not in err


@pytest.mark.parametrize("content", ["[]", '{"format_version": 1}', "not json"])
def test_a_broken_state_file_is_one_clear_error(make_workspace, cli, content):
    workspace = make_workspace(n=1)
    (workspace / "state").mkdir(exist_ok=True)
    (workspace / "state" / "state.json").write_text(content)
    code, _, err = cli(workspace, "plan")
    assert code == 1 and "state" in err and "Traceback" not in err and "internal error" not in err


def test_a_state_file_names_the_field_it_mistypes_and_the_format_it_does_not_read(make_workspace, cli):
    """The state file is decoded straight into its types: a field of the wrong type is named by its path in
    the file, another format version by its number; and a state saved is the state loaded, exactly."""
    workspace = make_workspace(n=1)
    assert cli(workspace, "apply", "--auto-approve")[0] == 0
    path = workspace / "state" / "state.json"
    good = json.loads(path.read_text())
    address = next(iter(good["resources"]))
    cases = {
        "backend": (lambda raw: raw["resources"][address].update(backend=7), f"$.resources['{address}'].backend"),
        "kind": (lambda raw: raw["resources"][address].update(kind="ftp"), "kind"),
        "serial": (lambda raw: raw.update(serial="one"), "$.serial"),
        "format": (lambda raw: raw.update(format_version=2, resources=[]), "state format 2 is not supported"),
    }
    for name, (edit, named) in cases.items():
        raw = json.loads(json.dumps(good))
        edit(raw)
        path.write_text(json.dumps(raw))
        code, _, err = cli(workspace, "plan")
        assert code == 1 and "state.json" in err and named in err, (name, err)
        assert "Traceback" not in err and "internal error" not in err
    store = FolderStateStore(workspace / "state")
    path.write_text(json.dumps(good))
    state = store.load()
    assert state is not None
    state.hotfixes[address] = {"value": "v9", "reason": "crème brûlée ✓", "nested": [1, 2.5, None, {"a": True}]}
    state.datasets["odd"] = {"title": "\u0000 and \ud7ff", "versions": []}
    store.save(state)
    assert FolderStateStore(workspace / "state").load() == state


def test_a_deeply_nested_plan_file_is_one_clear_error(make_workspace, cli):
    workspace = make_workspace(n=1)
    plan = workspace / "plan.json"
    plan.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = cli(workspace, "apply", str(plan))
    assert code == 1 and "plan refused" in err and "internal error" not in err


def test_an_unwritable_telemetry_folder_is_a_warning_not_a_traceback(make_workspace, cli):
    workspace = make_workspace(n=1)
    code, _, err = cli(workspace, "apply", "--auto-approve", env={"KFMOPS_FAULT": "*/telemetry/*@write:1+:EACCES"})
    assert code == 0, err
    assert "Traceback" not in err and "telemetry could not be written" in err


def test_a_local_seed_killed_before_its_commit_is_done_again(make_workspace, cli):
    """The local backend seeds its tables and rows in one transaction: killed half way (its catalog copied,
    nothing committed), a plan still reads the seed in place and the next apply seeds again and applies.
    In autocommit mode the tables stayed without rows, and every later write was refused."""
    workspace = make_workspace(n=3)
    code, _out, err = cli(workspace, "apply", "--auto-approve", env={"KFMOPS_CRASH_AT": "seed"})
    assert code == -signal.SIGKILL, err
    assert (workspace / "state" / "local" / "references.sqlite").is_file()
    assert "12 to create" in succeeded(cli(workspace, "plan"))
    succeeded(cli(workspace, "apply", "--auto-approve"))
    assert cli(workspace, "plan", "--detailed-exitcode")[0] == 0
    assert len(local_rows(workspace)["kv"]) == 3
