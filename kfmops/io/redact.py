"""Redaction: no credential reaches anything kfmops prints or keeps.

Secrets reach kfmops only through environment variables named in `kfmops.yaml` (`*_env` settings) and
its own key variables. Two layers keep them out of every output:
- `Redactor` masks the known secret values and anything shaped like a credential (a URL with a
  password, a bearer token, a private key...) in free text: error messages, the debug log, spans,
  ledger reasons.
- `refuse_secrets` refuses structured records (ledger entries, telemetry attributes) that carry a field
  named like a credential or a value shaped like one.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

# Key names are split into words ("apiKey", "api-key", "API_KEY" -> api, key) before matching.
_SECRET_WORDS = {
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "secrets",
    "token",
    "tokens",
    "apikey",
    "credential",
    "credentials",
    "authorization",
    "cookie",
    "privatekey",
    "accesskey",
    "secretkey",
}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("client", "secret")}
_SECRET_VALUES = (
    ("a URL with a password", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.I)),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("an HTTP credential", re.compile(r"\b(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{12,}")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    (
        "a GitHub or Slack token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{20,}|xox[abprs]-[\w-]{10,})"),
    ),
    ("a password assignment", re.compile(r"\b(?:password|passwd|secret|token|api[_-]?key)\s*=\s*\S+", re.I)),
)


def refuse_secrets(value: Any, where: str = "entry") -> None:
    """Raise ValueError if `value` holds a key named like a credential or a string shaped like one.

    The message names the field, never the value. Used for ledger entries, telemetry attributes and lineage records.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}"
            if _secret_key(str(key)):
                raise ValueError(
                    f"{path}: a field named like a credential is refused; governance records hold no secrets"
                )
            refuse_secrets(item, path)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            refuse_secrets(item, f"{where}[{index}]")
    elif isinstance(value, str):
        for what, pattern in _SECRET_VALUES:
            if pattern.search(value):
                raise ValueError(
                    f"{where}: the value looks like {what} and is refused; governance records hold no secrets"
                )


def _url_password(text: str) -> str | None:
    try:
        return urlsplit(text).password
    except ValueError:
        return None


def _secret_key(key: str) -> bool:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key).lower()
    words = [word for word in re.split(r"[^a-z0-9]+", spaced) if word]
    if any(word in _SECRET_WORDS for word in words) or "".join(words) in _SECRET_WORDS:
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


REDACTED = "[redacted]"


class Redactor:
    """Masks `secrets` (exact values, longest first) and credential-shaped text."""

    def __init__(self, secrets: Iterable[str] = ()):
        known = set(secrets)
        known |= {password for secret in known if (password := _url_password(secret))}  # a URL's password alone
        self.secrets = sorted({s for s in known if len(s) >= 4}, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for _, pattern in _SECRET_VALUES:
            text = pattern.sub(REDACTED, text)
        return text

    def value(self, value: Any) -> Any:
        """`value` with every string in it (keys included) passed through `text`."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value
