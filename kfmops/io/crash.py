"""A crash hook for tests: off unless KFMOPS_CRASH_AT names a step, then the process dies by SIGKILL there.

Steps are `wal:<seq>` (right after WAL record <seq> is durable), `write:<batch>` (right after
batch <batch> was written to its backend, before its DONE record) and `seed` (the local backend's
seed, its catalog copied, before its tables and rows commit).
"""

from __future__ import annotations

import os
import signal

VARIABLE = "KFMOPS_CRASH_AT"


def reached(step: str) -> None:
    if os.environ.get(VARIABLE) == step:
        os.kill(os.getpid(), signal.SIGKILL)
