"""SIGKILL campaign (benchmarks/kill_campaign.py): `apply PLANFILE`, `rollback --last` and `recover` killed
at random moments, most of them inside their write phase, then recovered: never a mixed outcome.

The quick test kills a handful; the `slow` one runs the acceptance campaign of issue 11 (200 kills) and
prints its figures (`pytest -m slow tests/test_kill_campaign.py -s`).
"""

from __future__ import annotations

import pytest

from benchmarks import kill_campaign


def assert_no_mixed_outcome(tally: kill_campaign.Tally, kills: int) -> None:
    print(tally.summary())
    assert tally.problems == []
    assert tally.ok and tally.mixed == 0
    assert tally.kills == kills
    assert sum(tally.outcomes.values()) == kills
    assert tally.landed >= kills * 0.8, "most kills must land before the command finishes"


def test_a_few_sigkills_of_apply_rollback_and_recover_leave_no_reference_half_changed(fork_cli, tmp_path):
    tally = kill_campaign.run(6, tmp_path, server=fork_cli.server, datasets=12, batch_size=6)
    assert_no_mixed_outcome(tally, 6)


@pytest.mark.campaign
def test_200_sigkills_of_apply_rollback_and_recover_leave_no_reference_half_changed(fork_cli, tmp_path):
    tally = kill_campaign.run(201, tmp_path, server=fork_cli.server)
    assert_no_mixed_outcome(tally, 201)
    assert tally.in_write_phase >= tally.landed / 2, "most kills land inside the write phase"
