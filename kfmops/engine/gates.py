"""Gates every mutating command passes before it takes the lock: the kill switch ("red state").

Plans are never gated: seeing what would change is always allowed.
"""

from __future__ import annotations

import os
from typing import Any

from kfmops.errors import KfmopsError

KILL_SWITCH_VARIABLE = "KFMOPS_KILL_SWITCH"
OFF = {"", "0", "false", "off", "no"}


def kill_switch(config: dict[str, Any]) -> str | None:
    """Why mutations are refused ("red state"), or None. Set by KFMOPS_KILL_SWITCH or `apply.kill_switch`.

    Fails closed: any value of the variable other than empty, 0, false, off or no turns it on.
    """
    reason = os.environ.get(KILL_SWITCH_VARIABLE)
    if reason is not None and reason.strip().lower() not in OFF:
        return f"{KILL_SWITCH_VARIABLE} is set ({reason})"
    if config.get("kill_switch"):
        return f"kfmops.yaml apply.kill_switch is on ({config['kill_switch']})"
    return None


def refuse_if_red(config: dict[str, Any], operation: str) -> None:
    """Raise while the kill switch is on: every mutation is refused, plans still work."""
    reason = kill_switch(config)
    if reason:
        raise KfmopsError(
            f"red state: every mutation is refused ({reason}); {operation} did nothing. "
            "Plans still work; clear the kill switch to change references again"
        )
