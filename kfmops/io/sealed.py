"""Cache files that prove they are whole, and who wrote them when a secret is given.

A sealed file is one JSON header line, then the body. The header holds what the reader must find there
(the format, kfmops' version, the name of the entry...) and the digest of the body: SHA-256, or an HMAC
under `secret` (a key derived from KFMOPS_PLAN_KEY), so that only a key holder can write a file a keyed
reader believes. Anyone who can write the folder can compute an unkeyed digest: without a secret a file
proves only that it is whole and was written for this reader.

`program_digest` names the kfmops that wrote an entry: its version and the bytes of its code and schemas,
so that no cache outlives any change to the program that made it, a development build's included.

Must not: fail a command (a cache is never required: a file that cannot be written is skipped, one in
any doubt reads as absent); leave a torn file (written to a temporary file and renamed), or let the
temporary files of writers killed before their rename pile up (the next write removes them).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from kfmops import __version__
from kfmops.io.files import remove_stale_temporaries

PACKAGE = Path(__file__).resolve().parents[1]


@cache
def program_digest() -> str:
    """SHA-256 of kfmops' version and of every module and JSON schema of the package, by path."""
    digest = hashlib.sha256(f"kfmops {__version__}".encode())
    for file in sorted(PACKAGE.rglob("*")):
        if file.suffix in {".py", ".json"}:
            digest.update(b"\0" + file.relative_to(PACKAGE).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def write_sealed(file: Path, header: dict[str, Any], body: bytes, secret: bytes | None = None) -> None:
    """Replace `file` (not durably: a cache lost in a crash is only rebuilt); a failure only skips it."""
    line = json.dumps(header | {"digest": _digest(body, secret)}, separators=(",", ":")).encode()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries([file])  # what a writer killed before its rename left
        fd, temporary = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    except OSError:
        return  # a read-only workspace: the next command does the work again
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(line + b"\n" + body)
        os.replace(temporary, file)  # readers see the old file or the new one
    except OSError:  # a full disk
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def read_sealed(file: Path, header: dict[str, Any], secret: bytes | None = None) -> bytes | None:
    """The body of `file` when its header is `header` and its digest matches; None in any other case."""
    try:
        line, body = file.read_bytes().split(b"\n", 1)
        found = json.loads(line)
        digest = found.pop("digest")
        if found != header or not hmac.compare_digest(digest, _digest(body, secret)):
            return None
        return body
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # absent, unreadable, torn, not JSON, another shape


def _digest(body: bytes, secret: bytes | None) -> str:
    if secret is None:
        return "sha256:" + hashlib.sha256(body).hexdigest()
    return "hmac-sha256:" + hmac.new(secret, body, hashlib.sha256).hexdigest()
