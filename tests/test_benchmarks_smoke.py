"""The floor benchmark runs end to end at 500 references on every server backend and prints its table.

A smoke run for CI: it proves the benchmark and the providers it drives work together on the real
servers. It asserts no timing: the machine is shared, and the figures are recorded by hand
(benchmarks/results/), not judged by a test.
"""

from __future__ import annotations

import re

import pytest

from benchmarks import backend_floor

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
