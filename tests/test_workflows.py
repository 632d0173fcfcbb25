"""The GitHub Actions workflows: actionlint passes on each of them and on the examples in
docs/github-actions.md, they keep the contracts the docs describe, and their scripts do what they say
(the shell snippets run with bash, the github-script steps with node against a fake GitHub API)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
DOCS = ROOT / "docs" / "github-actions.md"
TOOLS_BIN = Path(os.environ.get("KFMOPS_TOOLS_DIR") or Path.home() / ".cache" / "kfmops-tools") / "bin"
REQUIRED = os.environ.get("KFMOPS_REQUIRE_SERVERS") == "1"
PINNED = {
    "actions/checkout": "v4",
    "actions/setup-python": "v5",
    "actions/upload-artifact": "v4",
    "actions/download-artifact": "v4",
    "actions/github-script": "v7",
    "actions/setup-java": "v4",
    "actions/setup-go": "v5",
    "actions/cache": "v4",
    "softprops/action-gh-release": "v2",
}


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOW_DIR / name).read_text(encoding="utf-8"))


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The `on:` mapping (YAML 1.1 reads the bare key `on` as True)."""
    return workflow.get("on", workflow.get(True)) or {}


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def step(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in steps(workflow) if s.get("name") == name)


def backend_env_snippet(script: str) -> str:
    start = script.index("# Each NAME=value line")
    end = script.index('done <<< "$BACKEND_ENV"') + len('done <<< "$BACKEND_ENV"')
    return script[start:end]


@pytest.fixture(scope="module")
def actionlint() -> str:
    found = shutil.which("actionlint")
    if found is None and (TOOLS_BIN / "actionlint").is_file():
        found = str(TOOLS_BIN / "actionlint")
    if found is None:
        reason = f"actionlint is not installed (not on PATH nor in {TOOLS_BIN}): run scripts/install-actionlint.sh"
        if REQUIRED:
            pytest.fail(f"{reason}; KFMOPS_REQUIRE_SERVERS=1 forbids skipping")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: the github-script steps cannot be run")
    return found


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "kfmops-plan.yml", "kfmops-apply.yml", "kfmops-drift.yml"}


# actionlint ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_passes(actionlint, path):
    result = subprocess.run(
        [actionlint, "-no-color", str(path.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"actionlint {path.name}:\n{result.stdout}{result.stderr}"


def test_actionlint_passes_on_the_documented_callers(actionlint, tmp_path):
    """The examples in docs/github-actions.md, calling this repository's workflows as local reusable
    workflows, so that actionlint checks their inputs and secrets against the real definitions."""
    examples = [
        block
        for block in re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
        if "/kfmops/.github/workflows/" in block
    ]
    assert len(examples) >= 2
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (tmp_path / ".git").mkdir()  # actionlint resolves local reusable workflows inside a project
    for path in WORKFLOWS:
        shutil.copy(path, folder / path.name)
    names = []
    for i, example in enumerate(examples):
        local = re.sub(r"uses: <owner>/kfmops/(\.github/workflows/[\w.-]+)@\S+", r"uses: ./\1", example)
        assert local != example
        (folder / f"example-{i}.yml").write_text(local, encoding="utf-8")
        names.append(f".github/workflows/example-{i}.yml")
    result = subprocess.run(
        [actionlint, "-no-color", *names], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Contracts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_major_versions(path):
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    uses = [s["uses"] for s in steps(workflow) if "uses" in s]
    for use in uses:
        action, _, version = use.partition("@")
        assert re.fullmatch(r"v\d+", version), f"{use}: pin a major version such as @v4"
        assert PINNED.get(action, version) == version, f"{use}: expected {action}@{PINNED.get(action)}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_minimal(path):
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert "permissions" in workflow, "no top-level permissions: the token would get the repository default"
    granted: dict[str, str] = dict(workflow["permissions"] or {})
    for name, job in workflow["jobs"].items():
        if "workflow_call" in triggers(workflow):
            assert "permissions" in job, f"job {name} of a reusable workflow must say what it needs"
        granted |= job.get("permissions") or {}
    assert "write-all" not in str(granted) and "read-all" not in str(granted)
    writes = {scope for scope, level in granted.items() if level == "write"}
    writable = {"kfmops-plan.yml": {"pull-requests"}, "kfmops-drift.yml": {"issues"}, "release.yml": {"contents"}}
    assert writes == writable.get(path.name, set())


def test_the_plan_workflow_comments_on_pull_requests():
    workflow = load("kfmops-plan.yml")
    call = triggers(workflow)["workflow_call"]
    assert set(call["inputs"]) >= {"working-directory", "kfmops-version", "kfmops-ref", "python-version"}
    assert call["inputs"]["python-version"]["default"] == "3.11"
    script = step(workflow, "kfmops plan")["run"]
    assert "kfmops plan --out plan.json --format markdown --detailed-exitcode --split comment" in script
    comment = step(workflow, "Comment on the pull request")
    assert comment["uses"] == "actions/github-script@v7"
    assert "<!-- kfmops-plan(?: part (\\d+))? -->" in comment["with"]["script"]
    upload = next(s for s in steps(workflow) if s.get("uses") == "actions/upload-artifact@v4")
    assert "${{ inputs.working-directory }}/plan.json" in upload["with"]["path"]


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (2, 0), (3, 3), (1, 1), (4, 4), (5, 5), (6, 6)])
def test_the_plan_workflow_fails_on_denial_and_errors_only(code, expected):
    script = step(load("kfmops-plan.yml"), "Fail on policy denial or error")["run"]
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", script], env={"EXITCODE": str(code)}, timeout=30)
    assert result.returncode == expected


def test_the_apply_workflow_is_protected_and_serial():
    workflow = load("kfmops-apply.yml")
    inputs = triggers(workflow)["workflow_call"]["inputs"]
    job = workflow["jobs"]["apply"]
    assert job["environment"] == "${{ inputs.environment }}" and inputs["environment"]["default"] == "production"
    assert job["concurrency"]["cancel-in-progress"] is False
    assert "inputs.working-directory" in job["concurrency"]["group"]
    assert inputs["lock-timeout"]["default"] == 300
    assert inputs["ledger"]["default"] == "docs/reports/audit/data_provenance_ledger.jsonl"
    script = step(workflow, "kfmops plan, then apply")["run"]
    assert 'kfmops apply plan.json --lock-timeout "$LOCK_TIMEOUT"' in script
    assert "kfmops history --json > history.json" in step(workflow, "Apply history")["run"]
    upload = step(workflow, "Upload the plan, history and ledger")["with"]["path"]
    for name in ("plan.json", "history.json", "${{ inputs.ledger }}"):
        assert f"${{{{ inputs.working-directory }}}}/{name}" in upload


def test_the_drift_workflow_runs_daily_and_on_demand():
    workflow = load("kfmops-drift.yml")
    on = triggers(workflow)
    (cron,) = [entry["cron"] for entry in on["schedule"]]
    minute, hour, *every = cron.split()
    assert minute.isdigit() and hour.isdigit() and every == ["*", "*", "*"]
    assert "workflow_dispatch" in on and "workflow_call" in on
    assert on["workflow_call"]["inputs"]["label"]["default"] == "drift"
    assert "kfmops drift --format markdown" in step(workflow, "kfmops drift")["run"]


def test_ci_runs_the_same_entry_point_with_servers_cached():
    workflow = load("ci.yml")
    assert set(triggers(workflow)) == {"push", "pull_request"}
    job = workflow["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    python = next(s for s in job["steps"] if s.get("uses") == "actions/setup-python@v5")
    assert python["with"]["python-version"] == "3.11"
    cache = next(s for s in job["steps"] if s.get("uses") == "actions/cache@v4")["with"]["path"].split()
    assert {"~/.cache/kfmops-servers", "~/.m2", "~/.cache/kfmops-tools"} <= set(cache)
    runs = [s.get("run", "") for s in job["steps"]]
    assert runs[-1] == "bash .ci/run"
    assert any("scripts/install-actionlint.sh" in run for run in runs)


# The shell snippets --------------------------------------------------------------------------------


def test_every_workflow_reads_backend_credentials_the_same_way():
    scripts = [
        step(load("kfmops-plan.yml"), "kfmops plan")["run"],
        step(load("kfmops-apply.yml"), "kfmops plan, then apply")["run"],
        step(load("kfmops-drift.yml"), "kfmops drift")["run"],
    ]
    assert len({backend_env_snippet(script) for script in scripts}) == 1


def run_backend_env(value: str) -> subprocess.CompletedProcess[str]:
    snippet = backend_env_snippet(step(load("kfmops-plan.yml"), "kfmops plan")["run"])
    script = f'{snippet}\nfor n in KFM_URL KFM_PASSWORD KFM_EMPTY; do echo "$n=[${{!n-unset}}]"; done'
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],
        env={"BACKEND_ENV": value, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_backend_env_lines_become_masked_variables_of_the_step():
    result = run_backend_env("# comment\nKFM_URL=redis://h:6379/0?a=b\r\n\nKFM_PASSWORD=p@ss word\nKFM_EMPTY=")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [
        "::add-mask::redis://h:6379/0?a=b",
        "::add-mask::p@ss word",
        "KFM_URL=[redis://h:6379/0?a=b]",
        "KFM_PASSWORD=[p@ss word]",
        "KFM_EMPTY=[]",
        "",
    ]
    assert run_backend_env("").stdout.startswith("KFM_URL=[unset]")


@pytest.mark.parametrize("line", ["no-equals-s3cret", "1BAD=s3cret", "BAD NAME=s3cret", "=s3cret"])
def test_a_malformed_backend_env_line_fails_the_step(line):
    result = run_backend_env(f"KFM_URL=x\n{line}")
    assert result.returncode == 1
    assert "::error::secret KFMOPS_BACKEND_ENV: every line must be NAME=value" in result.stdout
    assert "s3cret" not in result.stdout  # a malformed line may hold a secret: never echo it


# The github-script steps, against a fake GitHub API ------------------------------------------------

HARNESS = r"""
const fs = require('fs');
const [script, world] = [fs.readFileSync(process.argv[2], 'utf8'), JSON.parse(fs.readFileSync(process.argv[3]))];
const calls = [];
const sent = [];
let next = 1000;
const record = (kind) => async (params) => {
  calls.push([kind, params.comment_id || params.issue_number || null, (params.body || '').split('\n')[0]]);
  sent.push(params.body || '');
  if (kind === 'createComment') world.comments.push({ id: next++, body: params.body, user: { type: 'Bot' } });
  if (kind === 'updateComment') world.comments.find((c) => c.id === params.comment_id).body = params.body;
  if (kind === 'deleteComment') world.comments = world.comments.filter((c) => c.id !== params.comment_id);
  if (kind === 'create') return { data: { number: 99 } };
  return { data: {} };
};
const issues = {
  listComments: 'listComments', listForRepo: 'listForRepo',
  createComment: record('createComment'), updateComment: record('updateComment'),
  deleteComment: record('deleteComment'), update: record('update'), create: record('create'),
  createLabel: async () => { const e = new Error('exists'); e.status = 422; throw e; },
};
const github = {
  rest: { issues },
  paginate: async (what) => (what === 'listComments' ? world.comments : world.issues).map((x) => ({ ...x })),
};
const context = { repo: { owner: 'o', repo: 'r' }, issue: { number: 7 }, sha: 'abc' };
const core = { info: () => {}, setOutput: () => {}, setFailed: (m) => { throw new Error(m); } };
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
new AsyncFunction('github', 'context', 'core', 'require', script)(github, context, core, require)
  .then(() => console.log(JSON.stringify({ calls, sent, comments: world.comments })))
  .catch((error) => { console.error(error); process.exit(1); });
"""


def run_script(
    node: str, tmp_path: Path, workflow: str, name: str, world: dict[str, Any], env: dict[str, str]
) -> dict[str, Any]:
    (tmp_path / "harness.js").write_text(HARNESS, encoding="utf-8")
    (tmp_path / "script.js").write_text(step(load(workflow), name)["with"]["script"], encoding="utf-8")
    (tmp_path / "world.json").write_text(json.dumps(world), encoding="utf-8")
    environment = {"PATH": os.environ["PATH"], "GITHUB_WORKSPACE": str(tmp_path), "RUN_URL": "https://run/1", **env}
    result = subprocess.run(
        [node, "harness.js", "script.js", "world.json"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def comment(tmp_path: Path, parts: list[str]) -> None:
    folder = tmp_path / "ws" / "comment"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, body in enumerate(parts, 1):
        (folder / f"comment-{i}.md").write_text(body, encoding="utf-8")


def post(node: str, tmp_path: Path, comments: list[dict[str, Any]], code: int = 2, most: int = 10):
    env = {"WORKDIR": "ws", "EXITCODE": str(code), "MAX_COMMENTS": str(most)}
    return run_script(node, tmp_path, "kfmops-plan.yml", "Comment on the pull request", {"comments": comments}, env)


def parts(n: int) -> list[str]:
    return [f"<!-- kfmops-plan part {i} -->\n**kfmops plan (part {i}/{n})**\n" for i in range(1, n + 1)]


def test_the_plan_comment_is_created_then_updated_in_place(node, tmp_path):
    comment(tmp_path, parts(3))
    first = post(node, tmp_path, [{"id": 1, "body": "LGTM", "user": {"type": "User"}}])
    assert [c[0] for c in first["calls"]] == ["createComment"] * 3
    assert [c["body"].split("\n")[0] for c in first["comments"]][1:] == [
        f"<!-- kfmops-plan part {i} -->" for i in (1, 2, 3)
    ]

    # A smaller plan: part 1 becomes the single sticky comment, parts 2 and 3 go; a user's comment that
    # copies the marker is not the plan's.
    comment(tmp_path, ["<!-- kfmops-plan -->\nsmall plan\n"])
    impostor = {"id": 2, "body": "<!-- kfmops-plan -->\nfake", "user": {"type": "User"}}
    second = post(node, tmp_path, [*first["comments"], impostor])
    assert second["calls"] == [
        ["updateComment", 1000, "<!-- kfmops-plan -->"],
        ["deleteComment", 1001, ""],
        ["deleteComment", 1002, ""],
    ]
    assert [c["id"] for c in second["comments"]] == [1, 1000, 2]

    # The same plan again changes nothing.
    assert post(node, tmp_path, second["comments"])["calls"] == []


def test_a_plan_longer_than_max_comments_points_at_the_artifact(node, tmp_path):
    comment(tmp_path, parts(5))
    result = post(node, tmp_path, [], most=3)
    heads = [c[2] for c in result["calls"]]
    assert heads == ["<!-- kfmops-plan part 1 -->", "<!-- kfmops-plan part 2 -->", "<!-- kfmops-plan part 3 -->"]
    assert "parts 3-5 not posted" in result["comments"][-1]["body"]
    assert "https://run/1" in result["comments"][-1]["body"]


def test_a_failed_plan_comments_its_output(node, tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "plan.err").write_text("Error: lock held by ci@runner\n```oops", encoding="utf-8")
    result = post(node, tmp_path, [], code=4)
    (body,) = [c["body"] for c in result["comments"]]
    assert body.startswith("<!-- kfmops-plan -->\n### kfmops plan failed: exit 4 (lock held)")
    assert "Error: lock held by ci@runner\n'''oops\n```" in body


SLO_REPORT = "### kfmops service level objectives\n\n| objective | target |\n|---|---:|\n| apply_success | 0.99 |\n"


def drift(node: str, tmp_path: Path, issues: list[dict[str, Any]], code: int, report: str = "| a |\n|---|\n"):
    (tmp_path / "ws").mkdir(exist_ok=True)
    (tmp_path / "ws" / "drift.md").write_text(report, encoding="utf-8")
    (tmp_path / "ws" / "slo.md").write_text(SLO_REPORT, encoding="utf-8")
    env = {"WORKDIR": "ws", "LABEL": "drift", "EXITCODE": str(code)}
    world = {"comments": [], "issues": issues}
    return run_script(node, tmp_path, "kfmops-drift.yml", "Open, update or close the drift issue", world, env)


def test_drift_opens_updates_and_closes_one_issue(node, tmp_path):
    opened = drift(node, tmp_path, [], 2)
    assert opened["calls"] == [["create", None, "<!-- kfmops-drift ws -->"]]
    existing = {"number": 5, "body": "<!-- kfmops-drift ws -->\nold"}
    other = {"number": 6, "body": "<!-- kfmops-drift elsewhere -->\n"}
    assert drift(node, tmp_path, [other, existing], 2)["calls"] == [["update", 5, "<!-- kfmops-drift ws -->"]]
    closed = drift(node, tmp_path, [other, existing], 0)["calls"]
    assert [c[:2] for c in closed] == [["createComment", 5], ["update", 5]]
    assert drift(node, tmp_path, [], 0)["calls"] == []


def test_the_drift_issue_body_holds_the_slo_report_before_the_drift(node, tmp_path):
    (body,) = drift(node, tmp_path, [], 2, "| drifted |\n|---|\n")["sent"]
    assert SLO_REPORT in body and body.index(SLO_REPORT) < body.index("| drifted |")
    workflow = (WORKFLOW_DIR / "kfmops-drift.yml").read_text()
    assert "kfmops slo --format markdown > slo.md" in workflow


def test_a_long_drift_report_is_cut_to_fit_an_issue(node, tmp_path):
    report = "```text\n" + "\n".join(f"line {i} " + "x" * 80 for i in range(2000)) + "\n```\n"
    (body,) = drift(node, tmp_path, [], 2, report)["sent"]
    assert len(body) <= 65536
    assert len(re.findall(r"^```", body, re.M)) % 2 == 0
    assert body.endswith("_The report is cut here: the whole report is in the run summary._\n")
