"""What a command pays before it starts working: the imports it cannot avoid."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from conftest import ROOT


def test_validation_does_not_import_the_format_checkers_jsonschema_would_import() -> None:
    # cyclonedx-bom (a dev dependency) installs jsonschema[format-nongpl], so rfc3987_syntax is importable here,
    # as it is wherever jupyter and many other tools are installed; importing it costs 2.3 s of lark grammars.
    assert importlib.util.find_spec("rfc3987_syntax") is not None
    script = (
        "import sys\n"
        "from kfmops import schemas\n"
        "assert schemas.validator('workspace').is_valid({}) is False\n"
        "from kfmops.providers.stac_check import validators_of\n"
        "from kfmops.schemas import FORMAT_CHECKERS\n"
        "assert not set(FORMAT_CHECKERS) & set(sys.modules), set(FORMAT_CHECKERS) & set(sys.modules)\n"
        "import rfc3987_syntax\n"  # still importable afterwards, for anything else in the process
        "print(rfc3987_syntax.is_valid_syntax('iri', 'https://example.org/a'))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
