"""The PR comment: what the Markdown view says, how values are escaped, and how a comment of any size is
split into parts that each fit GitHub's limit and each render on their own."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from kfmops.desired import Document, expand
from kfmops.plans.diff import diff
from kfmops.plans.model import Action, Change, Plan, StateRef
from kfmops.references import Reference
from kfmops.render.comment import GITHUB_LIMIT, blocks_of, split_comment, write_comment, write_parts
from kfmops.render.markdown import render_blocks, render_plan
from kfmops.render.mermaid import DIAGRAM_EDGES
from kfmops.workspace import Conventions
from kfmops.yamlio import LineDict

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py (a dependency of rich) parses the parts")
PARSER = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
ROUTES = dict.fromkeys(("stac", "graph", "search", "cache"), "local")
ORDER = ("stac", "graph", "search", "cache")
FENCE_LINE = re.compile(r"^ {0,3}```")
SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+$")


# Plans built by the real expansion and diff, without files or backends ------------------------------


def dataset_document(name: str, current: str, file: str, line: int, versions: Iterable[str]) -> Document:
    spec = LineDict(
        version=current,
        versions=[{"id": v, "provenance": {"source": f"test:{name}/{v}"}} for v in versions],
        care={"label": "open", "sovereignty": "none"},
    )
    spec.line, spec.lines = line + 2, {"version": line + 2, "versions": line + 3, "care": line + 6}
    return Document("Dataset", name, spec, file, line, name_line=line + 1)


def desired_references(pointers: dict[str, str], versions: tuple[str, ...] = ("v1", "v2", "v3")):
    """Desired references and dataset records of datasets pointing at `pointers[name]`, 100 per file.

    Expanded one dataset at a time: each is independent, and it keeps building 5,000 fast."""
    references, records = {}, {}
    for i, (name, current) in enumerate(pointers.items()):
        document = dataset_document(
            name, current, f"desired/datasets-{i // 100:05d}.yaml", 1 + 10 * (i % 100), versions
        )
        state = expand([document], Conventions(), ROUTES, {"local"})
        references.update(state.references)
        records.update(state.datasets)
    return references, records


def promotion_plan(count: int, git: dict[str, Any] | None = None, **plan: Any) -> Plan:
    """A plan moving `count` datasets from v1 to v2 or v3: four updated references each, as `kfmops plan`
    makes it after `kfmops apply` of the v1 pointers."""
    names = [f"ds-{i:06d}" for i in range(count)]
    applied, _ = desired_references(dict.fromkeys(names, "v1"))
    wanted, records = desired_references({name: ("v2", "v3")[i % 2] for i, name in enumerate(names)})
    live = {address: r.value for address, r in applied.items()}
    managed = {address: (r.reference, r.value) for address, r in applied.items()}
    changes = diff(wanted, live, managed, ORDER)
    git = {"commit": "3f9a1c" * 6 + "ab", "branch": "promote-all", "dirty": False} if git is None else git
    return Plan(
        plan_id="plan-20261126T120000Z-abcdef",
        created_at="2026-11-26T12:00:00+00:00",
        operation="apply",
        workspace="/ws",
        state=StateRef("lineage-1", 1),
        changes=tuple(changes),
        git=git,
        datasets=records,
        **plan,
    )


def raw(address: str, kind: str, locator: dict[str, Any], before: Any, after: Any, reason: str = "r") -> Change:
    action = Action.CREATE if before is None else Action.DELETE if after is None else Action.UPDATE
    return Change(Reference(address, kind, "local", locator), action, before, after, reason, "desired/raw.yaml:3")


def plan_of(changes: Iterable[Change], **fields: Any) -> Plan:
    return Plan("plan-x", "2026-11-26T12:00:00+00:00", "apply", "/ws", StateRef("l", 1), tuple(changes), **fields)


# What makes a part valid on its own ----------------------------------------------------------------


def check_part(part: str) -> list[Any]:
    """Assert that `part` renders on its own: fences closed, <details> balanced, every table line inside
    a table that starts with its header and separator. Returns markdown-it's tokens."""
    lines = part.split("\n")
    tokens = PARSER.parse(part)
    fences = [t for t in tokens if t.type == "fence"]
    fence_lines = [n for n, line in enumerate(lines) if FENCE_LINE.match(line)]
    assert len(fence_lines) % 2 == 0, "a code fence is left open"
    assert len(fences) * 2 == len(fence_lines), "fence lines that markdown-it does not pair"
    for fence in fences:
        start, end = fence.map
        assert end - 1 > start and FENCE_LINE.match(lines[end - 1]), f"fence at line {start + 1} is not closed"
    in_fence = {n for fence in fences for n in range(*fence.map)}
    depth = 0
    for n, line in enumerate(lines):
        if n in in_fence:
            continue
        depth += line.count("<details>") - line.count("</details>")
        assert depth >= 0, f"</details> without <details> at line {n + 1}"
    assert depth == 0, "a <details> element is left open"
    tables = [t for t in tokens if t.type == "table_open"]
    in_table = {n for table in tables for n in range(*table.map)}
    for table in tables:
        start = table.map[0]
        assert lines[start].startswith("|") and SEPARATOR.match(lines[start + 1]), f"table at line {start + 1}"
    orphans = [line for n, line in enumerate(lines) if line.startswith("|") and n not in in_table | in_fence]
    assert not orphans, f"table rows outside a table: {orphans[:3]}"
    return tokens


def check_parts(parts: list[str], limit: int) -> None:
    count = len(parts)
    for i, part in enumerate(parts, 1):
        assert len(part) <= limit and len(part.encode("utf-16-le")) // 2 <= limit, f"part {i} is too long"
        if count > 1:
            assert part.startswith(f"<!-- kfmops-plan part {i} -->\n**kfmops plan (part {i}/{count})**\n")
        else:
            assert part.startswith("<!-- kfmops-plan -->\n")
        check_part(part)


def summary_addresses(text: str) -> list[str]:
    return re.findall(r"<summary>\S+ <code>([^<]+)</code>", text)


# The 5,000-dataset plan ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_plan() -> Plan:
    return promotion_plan(5000)


@pytest.fixture(scope="module")
def big_parts(big_plan: Plan) -> list[str]:
    return split_comment(render_blocks(big_plan))


def test_a_plan_of_5000_datasets_has_20000_updates(big_plan):
    assert big_plan.summary() == {"create": 0, "update": 20000, "delete": 0, "no_op": 0}


def test_every_part_fits_github_and_renders_on_its_own(big_parts):
    assert len(big_parts) > 1
    check_parts(big_parts, GITHUB_LIMIT)


def test_the_summary_is_in_part_one_only(big_parts):
    first = big_parts[0].split("\n")
    assert first[3] == "### kfmops plan `plan-20261126T120000Z-abcdef`"
    assert "**Plan: 0 to create, 20000 to update, 0 to delete, 0 unchanged.**" in first
    assert "| 0 | 20000 | 0 | 0 | ✅ allow | 0 | `3f9a1c3f9a1c` | `promote-all` |" in first
    assert all("### kfmops plan" not in part for part in big_parts[1:])


def test_the_parts_hold_every_change_once(big_plan, big_parts):
    found = [address for part in big_parts for address in summary_addresses(part)]
    assert sorted(found) == sorted(c.address for c in big_plan.mutations)
    rows = {m for part in big_parts for m in re.findall(r"^\| `(ds-\d{6})` \| `v1` → `v[23]` \|", part, re.M)}
    assert rows == set(big_plan.datasets)


def test_the_parts_are_the_comment_cut_between_blocks(big_plan, big_parts):
    """Joined again without their headers, the parts hold the same blocks as the whole comment (only the
    dataset table, too big for one part, is cut, into tables that repeat its header)."""
    bodies = [part.split("\n", 3)[3] for part in big_parts]
    header = ["| dataset | version | changes | source |", "|:---|:---|:---|:---|"]

    def lines(text: str) -> list[str]:
        return [line for line in text.split("\n") if line and line not in header]

    assert [line for body in bodies for line in lines(body)] == lines(render_plan(big_plan))
    assert sum(body.count("\n".join(header)) for body in bodies) > 1


def test_splitting_the_rendered_text_matches_splitting_the_blocks(big_plan, big_parts):
    assert split_comment(render_plan(big_plan)) == big_parts


def test_the_diagram_is_capped(big_parts):
    diagram = big_parts[0].split("```mermaid\n", 1)
    text = diagram[1] if len(diagram) > 1 else next(p for p in big_parts if "```mermaid" in p).split("```mermaid\n")[1]
    body = text.split("\n```", 1)[0].split("\n")
    assert body[0] == "flowchart LR"
    assert len([line for line in body if "-->" in line]) == DIAGRAM_EDGES
    assert body[-1] == f'  more["… and {20000 - DIAGRAM_EDGES} more changed references"]'


# Splitting -----------------------------------------------------------------------------------------


def test_a_comment_that_fits_is_one_part_with_the_sticky_marker():
    plan = promotion_plan(3)
    parts = split_comment(render_blocks(plan))
    assert parts == ["<!-- kfmops-plan -->\n" + render_plan(plan)]
    check_parts(parts, GITHUB_LIMIT)


def test_small_limits_split_every_kind_of_block(tmp_path):
    plan = promotion_plan(60)
    for limit in (1024, 1500, 4000, 9000):
        parts = split_comment(render_blocks(plan), limit)
        check_parts(parts, limit)
        found = [address for part in parts for address in summary_addresses(part)]
        assert set(found) == {c.address for c in plan.mutations}
        assert "### kfmops plan" in parts[0]


def test_a_diff_bigger_than_a_part_is_cut_into_complete_details():
    indices = [f"kfm-roads-{i:05d}" for i in range(3000)]
    change = raw("search_alias.kfm-roads", "search", {"alias": "kfm-roads"}, {"indices": indices[:1]}, None)
    big = raw("stac_link.many", "stac", {"slots": []}, None, {"catalog.json": {"child": indices}})
    plan = plan_of([change, big])
    parts = split_comment(render_blocks(plan), 8000)
    check_parts(parts, 8000)
    continued = [p for p in parts if "<code>stac_link.many</code> — r (continued)</summary>" in p]
    assert len(continued) >= 2
    for part in continued:
        assert "```diff\n+ catalog.json.child: " in part or "```diff\n+↪ " in part
    # The one very long diff line is wrapped, never cut off.
    fenced = [line for part in parts for line in re.findall(r"```diff\n(.*?)\n```", part, re.S)]
    lines = [line for chunk in fenced for line in chunk.split("\n")]
    joined = "".join(line.removeprefix("+↪ ") for line in lines if line.startswith("+"))
    assert joined == f"+ catalog.json.child: [{', '.join(indices)}]"
    assert all(line.startswith(("+ ", "+↪ ", "- ")) for line in lines)


def test_a_long_table_repeats_its_header_in_every_part():
    text = "\n".join(["intro", "", "| a | b |", "|---|---|", *[f"| {i} | {'x' * 50} |" for i in range(400)]])
    parts = split_comment(text, 2000)
    check_parts(parts, 2000)
    rows = [line for part in parts for line in part.split("\n") if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 400
    assert all("| a | b |\n|---|---|\n" in part for part in parts[1:])


def test_a_long_mermaid_diagram_keeps_its_type_in_every_part():
    text = "```mermaid\nflowchart LR\n" + "\n".join(f'  a{i}["x"] --> b{i}["y"]' for i in range(300)) + "\n```"
    parts = split_comment(text, 1500)
    check_parts(parts, 1500)
    assert all("```mermaid\nflowchart LR\n" in part for part in parts)


def test_text_blocks_are_found_around_fences_and_details():
    fence = ["```", "x", "", "</details>", "```"]  # a blank line and </details> inside a fence
    details = ["<details><summary>s</summary>", "", "```", "<details>", "```", "", "</details>"]
    text = "\n".join(["a", "b", "", *fence, *details, "| h |", "|---|", "| r |", "tail"])
    kinds = [unit.kind for unit in blocks_of(text)]
    assert kinds == ["text", "fence", "details", "table", "text"]


def test_a_limit_too_small_is_refused():
    with pytest.raises(ValueError, match="too small"):
        split_comment("x" * 5000, 500)


def test_write_parts_replaces_an_earlier_split(tmp_path):
    folder = tmp_path / "comment"
    write_parts(["one", "two", "three"], folder)
    paths = write_parts(["only"], folder)
    assert paths == [folder / "comment-1.md"]
    assert sorted(p.name for p in folder.iterdir()) == ["comment-1.md"]
    assert (folder / "comment-1.md").read_text(encoding="utf-8") == "only"


# What the comment says -----------------------------------------------------------------------------


def test_dataset_rows_show_the_version_move_parts_and_source():
    text = render_plan(promotion_plan(2))
    assert (
        "| `ds-000000` | `v1` → `v2` | ~ stac, graph, search, cache on `local` | `desired/datasets-00000.yaml:3` |"
        in text
    )
    assert "| `ds-000001` | `v1` → `v3` |" in text


def test_changed_documents_are_listed_and_their_changes_marked():
    git = {"commit": "a" * 40, "branch": "b", "base": "origin/main"}
    git["changed_documents"] = ["desired/datasets-00001.yaml", "desired/datasets-00000.yaml"]
    text = render_plan(promotion_plan(150, git=git))
    assert "**Desired-state documents changed since `origin/main`**" in text
    assert "- ✎ `desired/datasets-00001.yaml`: 200 changes" in text
    assert "- ✎ `desired/datasets-00000.yaml`: 400 changes" in text
    assert "| `desired/datasets-00001.yaml:3` ✎ |" in text
    assert "· `desired/datasets-00000.yaml:3` ✎ ·" in text


def test_changed_documents_may_be_absolute_paths_under_the_workspace():
    git = {"commit": "a" * 40, "base": "origin/main", "changed_documents": [Path("/ws/desired/datasets-00000.yaml")]}
    text = render_plan(promotion_plan(1, git=git))
    assert "- ✎ `desired/datasets-00000.yaml`: 4 changes" in text
    assert "| `desired/datasets-00000.yaml:3` ✎ |" in text


def test_a_pointer_that_did_not_move_says_so():
    plan = promotion_plan(1)
    stac, *rest = plan.changes
    noops = [Change(c.reference, Action.NOOP, c.after, c.after, "up to date", c.source) for c in rest]
    text = render_plan(plan_of([stac, *noops], datasets=plan.datasets))
    assert "| `ds-000000` | `v2` (pointer unchanged) | ~ stac on `local` |" in text
    assert summary_addresses(text) == ["dataset.ds-000000.stac"]


def test_policy_findings_and_drift_are_shown():
    policy = {
        "decision": "deny",
        "findings": [
            {"rule": "deny_public", "address": "dataset.kaw", "message": "a|b <i>", "fix": "", "severity": "deny"},
            {"rule": "warn_x", "address": None, "message": "m", "fix": "f", "severity": "warn"},
        ],
    }
    drift = ({"address": "dataset.ds.cache", "type": "drift", "last_applied": "v1", "live": "v9", "message": "m"},)
    text = render_plan(plan_of([], policy=policy, drift=drift))
    assert "| 0 | 0 | 0 | 0 | ❌ deny (1 warning) | 1 | n/a | n/a |" in text
    assert "| deny | deny\\_public | `dataset.kaw` | a\\|b &lt;i&gt; |  |" in text
    assert "| `dataset.ds.cache` | drift | `v1` → `v9` | m |" in text
    check_part(text)


def test_values_cannot_break_tables_html_or_the_diagram():
    nasty = 'v|1 <script>alert("x")</script> `tick` [l](u) #1 ]"'
    changes = [
        raw("cache_key.nasty", "cache", {"key": "k", "invalidate": []}, nasty, nasty + "2", reason='<b>"why"</b> | x'),
        raw("search_alias.a", "search", {"alias": "a"}, None, {"indices": ["i|1"], "write_index": None}),
    ]
    text = render_plan(plan_of(changes))
    tokens = check_part(text)
    html = [t.content for t in tokens if t.type in {"html_block", "html_inline"}]
    html += [c.content for t in tokens if t.children for c in t.children if c.type == "html_inline"]
    assert not [h for h in html if "script" in h or "<b>" in h], html
    assert "<summary>~ <code>cache_key.nasty</code> — &lt;b&gt;&quot;why&quot;&lt;/b&gt; | x</summary>" in text
    # The summary table keeps its 8 columns and the raw table its 5 in every row.
    cells, table = [], -1
    for token in tokens:
        table += token.type == "table_open"
        cells += [table] if token.type in {"th_open", "td_open"} else []
    assert [cells.count(0), cells.count(1)] == [8 * 2, 5 * 3]
    inline = [t.content for t in tokens if t.type == "inline"]
    assert any("v|1 <script>" in content for content in inline)  # escaped pipe, inside a code span
    diagram = text.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    for line in diagram.split("\n")[1:]:
        labels = re.findall(r'\["(.*?)"\]', line)
        assert len(labels) == 2, line
        assert not any(ch in label for label in labels for ch in '"<>`'), line


# Through the real command line ---------------------------------------------------------------------


def test_kfmops_plan_prints_a_comment_that_splits(make_workspace, cli, tmp_path: Path):
    workspace = make_workspace(n=40)
    code, out, err = cli(workspace, "plan", "--format", "markdown", "--out", str(tmp_path / "plan.json"))
    assert code == 0, err
    assert out.startswith("### kfmops plan `plan-")
    assert "**Plan: 160 to create, 0 to update, 0 to delete, 0 unchanged.**" in out
    parts = split_comment(out, 6000)
    check_parts(parts, 6000)
    assert len({a for part in parts for a in summary_addresses(part)}) == 160


def test_write_comment_writes_valid_parts(tmp_path):
    plan = promotion_plan(60)
    paths = write_comment(plan, tmp_path / "comment", 4000)
    assert [p.name for p in paths] == [f"comment-{i}.md" for i in range(1, len(paths) + 1)]
    parts = [p.read_text(encoding="utf-8") for p in paths]
    check_parts(parts, 4000)
    assert parts == split_comment(render_blocks(plan), 4000)


def test_kfmops_plan_split_writes_the_comment_parts(make_workspace, cli, tmp_path: Path):
    workspace = make_workspace(n=400)
    code, out, _ = cli(workspace, "plan", "--help")
    if "--split" not in out:
        pytest.skip("kfmops plan has no --split option yet")
    folder = tmp_path / "comment"
    code, out, err = cli(  # the whole plan (a summary would fit one comment), split into parts
        workspace, "plan", "--out", str(tmp_path / "plan.json"), "--split", str(folder), "--detail", "full"
    )
    assert code == 0, err
    parts = [
        p.read_text(encoding="utf-8")
        for p in sorted(folder.glob("comment-*.md"), key=lambda p: int(p.stem.split("-")[1]))
    ]
    assert len(parts) > 1
    check_parts(parts, GITHUB_LIMIT)
    assert len({a for part in parts for a in summary_addresses(part)}) == 1600
