"""Fuzzing the four kinds of file kfmops reads: desired YAML documents, plan files, the state file and WAL files.

Hypothesis mutates a valid file of each kind (flipped, inserted, deleted or duplicated bytes; a truncation;
garbage; a node of the parsed document replaced, removed or nested thousands deep), re-sealing plan
digests and WAL hash chains half of the time so that the mutation reaches past the integrity checks.
kfmops must then succeed (the file is still valid) or exit non-zero with a clear message
(`Error: ...`), and never print a traceback or "internal error".

Examples run in this process through the console script's own error handling (`kfmops.cli.errors.run`
over the typer app), thousands per minute; a handful also run through the real console script.
`KFMOPS_FUZZ_EXAMPLES=10000` runs that many examples spread over the four kinds (the acceptance
campaign of issue 11); the default is a quick sample.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.generate import generate, promote
from kfmops.cli.app import app
from kfmops.cli.errors import run
from kfmops.io import chain
from kfmops.io.canonical import digest

SEED = 1854
KINDS = 4
EXAMPLES = max(1, int(os.environ.get("KFMOPS_FUZZ_EXAMPLES", "0")) // KINDS) or 40
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("KFMOPS_FUZZ_EXAMPLES"),  # the quick run is the same every time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
CliResult = tuple[int, str, str]


class InProcess:
    """Runs `kfmops -C WORKSPACE ARGS...` in this process, through the same `run` the console script uses
    (so an unexpected exception becomes "internal error" exactly as it would there), capturing both streams."""

    def __init__(self, scratch: Path):
        self.command = typer.main.get_command(app)
        self.scratch = scratch

    def __call__(self, workspace: Path, *args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        cwd, tempdir = os.getcwd(), tempfile.tempdir
        tempfile.tempdir = str(self.scratch)  # debug logs of unexpected errors land here
        code: Any = 0
        try:
            with redirect_stdout(out), redirect_stderr(err):
                run(
                    lambda standalone_mode: self.command(["-C", str(workspace), *args], standalone_mode=standalone_mode)
                )
        except SystemExit as exit_:
            code = exit_.code
        finally:
            os.chdir(cwd)
            tempfile.tempdir = tempdir
        return int(code or 0), out.getvalue(), err.getvalue()


def judged(result: CliResult, what: str) -> int:
    """Success, or a non-zero exit with a clear message; never a traceback or an internal error. Exit 3 (a
    policy deny, e.g. of mutated CARE metadata) says so in its own words; every other failure with `Error:`."""
    code, out, err = result
    assert "Traceback" not in out + err, (what, err)
    assert "internal error" not in err, (what, err)
    if code == 3:
        assert re.search("policy denies", out + err, re.IGNORECASE), (what, out, err)
    elif code != 0:
        assert code in (1, 4, 5, 6), (what, code, err)
        assert re.search(r"^Error:", err, re.MULTILINE), (what, code, out, err)
    return code


# Mutations ---------------------------------------------------------------------------------------------

NEST = "kfmops-fuzz-nest-here"  # a placeholder that a nesting mutation replaces in the dumped text
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def byte_edits(draw: st.DrawFn, data: bytes) -> bytes:
    """1-4 edits: a byte replaced, bytes inserted, a range deleted or duplicated."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        end = min(len(data), at + draw(st.integers(1, 64)))
        how = draw(st.sampled_from(["replace", "insert", "delete", "duplicate"]))
        if how == "replace" and at < len(data):
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif how == "insert":
            data = (
                data[:at]
                + draw(st.binary(min_size=1, max_size=16) | st.sampled_from([b"\n", b"{", b"[", b'"', b"\xff", b": "]))
                + data[at:]
            )
        elif how == "delete":
            data = data[:at] + data[end:]
        else:
            data = data[:end] + data[at:end] + data[end:]
    return data


@st.composite
def tree_edit(draw: st.DrawFn, document: Any) -> Any:
    """The document with one node replaced by another value, removed, or replaced by the nesting placeholder."""
    path: list[Any] = []
    node = document
    while isinstance(node, dict | list) and node and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(node, key=str) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    how = draw(st.sampled_from(["replace", "remove", "nest", "retype"]))
    new: Any = {
        "replace": lambda: draw(values),
        "nest": lambda: NEST,
        "retype": lambda: draw(st.sampled_from([[], {}, None, "", 0, True, [node], {"x": node}, str(node)])),
        "remove": lambda: None,
    }[how]()
    if not path:
        return new
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if how == "remove":
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return document


def nested(text: str, depth: int) -> str:
    return text.replace(json.dumps(NEST), NEST).replace(NEST, "[" * depth + "]" * depth)


@dataclass(frozen=True)
class Kind:
    """How one kind of file is parsed, dumped and re-sealed (made to pass its integrity check again)."""

    parse: Callable[[bytes], Any]
    dump: Callable[[Any], str]
    reseal: Callable[[Any], Any] = lambda document: document


def reseal_plan(body: Any) -> Any:
    if isinstance(body, dict):
        body["digest"] = digest({k: v for k, v in body.items() if k not in {"digest", "signature"}})
    return body


def reseal_wal(records: Any) -> list[Any]:
    previous, sealed = chain.GENESIS, []
    for record in as_list(records):
        if isinstance(record, dict):
            record = chain.link({k: v for k, v in record.items() if k not in {"prev_hash", "hash"}}, previous)
            previous = record["hash"]
        sealed.append(record)
    return sealed


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


YAML = Kind(
    lambda data: list(yaml.safe_load_all(data)), lambda docs: yaml.safe_dump_all(as_list(docs), sort_keys=False)
)
JSON = Kind(json.loads, lambda doc: json.dumps(doc, indent=1))
PLAN = Kind(json.loads, json.dumps, reseal_plan)
WAL = Kind(
    lambda data: [json.loads(line) for line in data.splitlines()],
    lambda records: "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in as_list(records)),
    reseal_wal,
)


@st.composite
def mutated(draw: st.DrawFn, original: bytes, kind: Kind) -> bytes:
    """A mutation of a valid file's bytes: edited bytes, a truncation, garbage, or an edited document."""
    how = draw(st.sampled_from(["bytes", "truncate", "garbage", "tree", "tree", "tree"]))
    if how == "bytes":
        return draw(byte_edits(original))
    if how == "truncate":
        return original[: draw(st.integers(0, len(original)))]
    if how == "garbage":
        return draw(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
    document = draw(tree_edit(kind.parse(original)))
    if draw(st.booleans()):
        with contextlib.suppress(TypeError, ValueError, OverflowError):  # not canonical JSON: left unsealed
            document = kind.reseal(document)
    try:
        text = kind.dump(document)
    except (TypeError, ValueError, OverflowError, yaml.YAMLError):
        return original
    return nested(text, draw(st.sampled_from([1, 50, 1000, 100_000]))).encode()


# Workspaces ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bases:
    """Valid workspaces, built once: `planned` (applied, then promoted, its plan in plan.json) and
    `crashed` (that plan's apply killed half-way: an unfinished WAL)."""

    planned: Path
    crashed: Path
    wal: Path


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory, fork_cli: Any) -> Bases:
    folder = tmp_path_factory.mktemp("fuzz")
    planned = folder / "planned"
    generate(planned, 2, 3, SEED)
    assert fork_cli(planned, "apply", "--auto-approve")[0] == 0
    promote(planned, 1.0, SEED)
    assert fork_cli(planned, "plan", "--out", str(planned / "plan.json"))[0] == 0
    crashed = folder / "crashed"
    shutil.copytree(planned, crashed)
    code, _, err = fork_cli(crashed, "apply", str(crashed / "plan.json"), env={"KFMOPS_CRASH_AT": "wal:5"})
    assert code == -signal.SIGKILL, err
    (wal,) = (crashed / "state" / "wal").glob("*.jsonl")
    return Bases(planned, crashed, wal.relative_to(crashed))


@pytest.fixture(scope="module")
def kfmops_in_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    saved = os.environ.pop("KFMOPS_PLAN_KEY", None)
    try:
        yield InProcess(tmp_path_factory.mktemp("debug-logs"))
    finally:
        if saved is not None:
            os.environ["KFMOPS_PLAN_KEY"] = saved


class Sandbox:
    """A fresh copy of a base workspace per example (commands may write), in one scratch folder."""

    def __init__(self, root: Path):
        self.root = root
        self.count = 0

    def copy(self, base: Path) -> Path:
        shutil.rmtree(self.root / "ws", ignore_errors=True)
        self.count += 1
        return Path(shutil.copytree(base, self.root / "ws"))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("sandbox"))


def desired_file(base: Path) -> Path:
    return base / "desired" / "datasets-00000.yaml"


# The four kinds ------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzzed_desired_documents_are_valid_or_one_clear_error(data, bases, kfmops_in_process, sandbox):
    original = desired_file(bases.planned).read_bytes()
    workspace = sandbox.copy(bases.planned)
    desired_file(workspace).write_bytes(data.draw(mutated(original, YAML)))
    if judged(kfmops_in_process(workspace, "validate"), "validate") == 0:
        judged(kfmops_in_process(workspace, "plan", "--out", str(workspace / "new-plan.json")), "plan")


@FUZZ
@given(data=st.data())
def test_fuzzed_state_files_are_read_or_one_clear_error(data, bases, kfmops_in_process, sandbox):
    state = Path("state") / "state.json"
    workspace = sandbox.copy(bases.planned)
    (workspace / state).write_bytes(data.draw(mutated((bases.planned / state).read_bytes(), JSON)))
    judged(kfmops_in_process(workspace, "state", "list"), "state list")
    judged(kfmops_in_process(workspace, "plan", "--out", str(workspace / "new-plan.json")), "plan")


@FUZZ
@given(data=st.data())
def test_fuzzed_plan_files_are_applied_or_refused_with_one_clear_error(data, bases, kfmops_in_process, sandbox):
    workspace = sandbox.copy(bases.planned)
    plan = workspace / "plan.json"
    plan.write_bytes(data.draw(mutated((bases.planned / "plan.json").read_bytes(), PLAN)))
    if judged(kfmops_in_process(workspace, "show", str(plan)), "show") == 0:
        judged(kfmops_in_process(workspace, "apply", str(plan)), "apply")


@FUZZ
@given(data=st.data())
def test_fuzzed_wal_files_are_recovered_or_one_clear_error(data, bases, kfmops_in_process, sandbox):
    workspace = sandbox.copy(bases.crashed)
    (workspace / bases.wal).write_bytes(data.draw(mutated((bases.crashed / bases.wal).read_bytes(), WAL)))
    judged(kfmops_in_process(workspace, "recover"), "recover")


# A handful through the real console script ---------------------------------------------------------------

BROKEN_FILES = [  # each one was an internal error or a traceback once
    ("desired", b"apiVersion: kfmops/v1\nkind: Dataset\nmetadata: {name: [[[\n"),
    ("desired", b"apiVersion: kfmops/v1\nkind: []\nmetadata: {name: x}\nspec: {}\n"),
    ("state", b"[" * 100_000 + b"]" * 100_000),
    ("state", '{"format_version": 1, "lineage": "x", "serial": "\udcff"}'.encode(errors="surrogateescape")),
    (
        "state",
        b'{"format_version": 1, "lineage": "x", "serial": 1, "resources": {"nope": {"kind": "cache", '
        b'"backend": "local", "locator": {"key": "k"}, "value": "v"}}}',
    ),
    ("plan", b'{"format_version": 1, "digest": 0}'),
    ("wal", b'{"seq":1,"type":"BEGIN"}\n'),
]


@pytest.mark.parametrize(("kind", "content"), BROKEN_FILES)
def test_broken_files_through_the_console_script_give_one_clear_error(kind, content, bases, cli, tmp_path):
    workspace = Path(shutil.copytree(bases.crashed if kind == "wal" else bases.planned, tmp_path / "ws"))
    target = {
        "desired": desired_file(workspace),
        "state": workspace / "state" / "state.json",
        "plan": workspace / "plan.json",
        "wal": workspace / bases.wal,
    }[kind]
    target.write_bytes(content)
    command = {"desired": ("validate",), "state": ("plan",), "plan": ("apply", str(target)), "wal": ("recover",)}
    code = judged(cli(workspace, *command[kind]), kind)
    assert code != 0


def test_a_rechained_wal_with_a_mistyped_field_is_one_clear_error(bases, cli, tmp_path):
    """The chain is unkeyed: whoever can write the file can re-hash it. Recover still judges every field."""
    workspace = Path(shutil.copytree(bases.crashed, tmp_path / "ws"))
    records = WAL.parse((workspace / bases.wal).read_bytes())
    intent = next(r for r in records if r["type"] == "INTENT")
    intent["backend"] = [intent["backend"]]
    (workspace / bases.wal).write_text(WAL.dump(reseal_wal(records)))
    code, _, err = cli(workspace, "recover")
    assert judged((code, "", err), "recover") == 1
    assert "WAL record 2 (INTENT) lacks its field 'backend' or it is not a str" in err
