"""Errors a user can cause, each mapped to one exit code, and diagnostics that name file and line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes, the same meaning for every command (documented in the README)."""

    OK = 0
    ERROR = 1
    CHANGES = 2
    POLICY_DENIED = 3
    LOCKED = 4
    STALE = 5
    RECOVERY_REQUIRED = 6


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in user input: a short summary, a detail that names the fix, and where."""

    summary: str
    detail: str = ""
    file: str | None = None
    line: int | None = None
    severity: str = "error"

    def location(self) -> str:
        if self.file is None:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        where = self.location()
        text = f"{where}: {self.summary}" if where else self.summary
        return f"{text}. {self.detail}" if self.detail else text


class KfmopsError(Exception):
    """An error the user can act on; the CLI prints it as one message and exits with `exit_code`."""

    exit_code: ExitCode = ExitCode.ERROR


class InputError(KfmopsError):
    """Desired state, workspace config or a plan file is invalid; carries every problem found."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class BackendError(KfmopsError):
    """A backend could not be reached or refused an operation; the message names the backend."""

    def __init__(self, backend: str, message: str, *, retryable: bool = False):
        self.backend = backend
        self.retryable = retryable
        super().__init__(f"backend {backend!r}: {message}")


class MissingTargetError(KfmopsError):
    """A reference would point at an immutable target (version, node, index) that does not exist."""


class PolicyDenied(KfmopsError):
    exit_code = ExitCode.POLICY_DENIED


class GateClosed(KfmopsError):
    """An operational gate (freeze, SLO error budget, data-quality checks) refuses the operation; the message
    names the gate and how to lift it."""

    exit_code = ExitCode.POLICY_DENIED


class LockHeld(KfmopsError):
    exit_code = ExitCode.LOCKED


class StalePlan(KfmopsError):
    """The plan no longer matches the state or live values it was made against."""

    exit_code = ExitCode.STALE


class RecoveryRequired(KfmopsError):
    exit_code = ExitCode.RECOVERY_REQUIRED
