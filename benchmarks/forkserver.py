"""Run many `kfmops` commands fast: forked from one process that imported kfmops once (a zygote).

Starting the console script costs about 1.5 s of imports before kfmops does anything; the fault matrix
and the kill campaign run thousands of commands. Each command here is still a process of its own, with
its own pid, arguments, environment, working folder, stdin (/dev/null), stdout and stderr (files), exit
code and exit handlers, so it can be SIGKILLed and it exits as the console script does: only the imports
are shared (a PYTHONPATH the command adds is honoured, sitecustomize included). The server runs
`kfmops.cli.app.main`, the console script's entry point.

    with ForkServer() as server:
        process = server.start(["-C", "ws", "apply", "--auto-approve"], cwd=Path("."), env=dict(os.environ))
        code, out, err = process.wait_for()
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

# Modules a command imports lazily: loaded once by the server too (missing ones are skipped).
PRELOAD = (
    "kfmops.cli.app",
    "typer._adapters",
    "pydantic.fields",
    "sqlite3",
    "concurrent.futures",
    "opentelemetry.sdk.metrics",
    "opentelemetry.sdk.trace",
)


# The server side: a process that imports kfmops, then forks one child per request line on stdin.


def serve() -> None:
    """Read one JSON request per line on stdin; fork a child per request; report pids and exit statuses.

    Replies on stdout, one JSON line each: {"id", "pid"} once forked, {"id", "status"} once the child ended
    (its exit code, or -N if signal N ended it). No threads: a fork never copies a lock another thread holds.
    """
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    _warm()
    children: dict[int, str] = {}
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.005)
        if ready:
            chunk = os.read(0, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request)  # runs the command; the exception that ends it ends this process
                children[pid] = request["id"]
                _reply({"id": request["id"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            _reply({"id": children.pop(pid), "status": os.waitstatus_to_exitcode(status)})


def _warm() -> None:
    """Fill the per-process caches that every command fills the same way, from files only: the compiled
    JSON Schemas (their own check costs a second) and the PROV serializers (rdflib)."""
    with contextlib.suppress(Exception):
        from kfmops import schemas

        for path in sorted(schemas.SCHEMA_DIR.glob("*.schema.json")):
            schemas.validator(path.name.removesuffix(".schema.json"))
    with contextlib.suppress(Exception):
        from prov.serializers import Registry

        Registry.load_serializers()


def _reply(message: dict[str, Any]) -> None:
    os.write(1, json.dumps(message).encode() + b"\n")  # unbuffered: a child never inherits pending replies


def _child(request: dict[str, Any]) -> None:
    """Become the command: its fds, folder, environment and arguments; then run the console script's main."""
    try:
        for fd, (path, flags) in enumerate(
            [
                (os.devnull, os.O_RDONLY),
                (request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                (request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            ]
        ):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # found again from TMPDIR
        sys.argv = ["kfmops", *request["args"]]
        added = [f for f in request["env"].get("PYTHONPATH", "").split(os.pathsep) if f and f not in sys.path]
        sys.path[:0] = added
    except BaseException:
        os._exit(127)
    if added and importlib.util.find_spec("sitecustomize"):  # as a new interpreter would, for its PYTHONPATH
        importlib.import_module("sitecustomize")
    from kfmops.cli.app import main

    main()  # raises SystemExit, which unwinds `serve` and exits this process the way the console script exits
    sys.exit(0)


# The client side.


class ForkedProcess:
    """One command run by a ForkServer, with the parts of `subprocess.Popen` the tests use."""

    def __init__(self, server: ForkServer, key: str, folder: Path):
        self.server, self.key, self.folder = server, key, folder
        self.pid = server.wait_reply(key, "pid", None)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.wait_reply(self.key, "status", 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.wait_reply(self.key, "status", timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"kfmops (pid {self.pid})", timeout or 0)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, number)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """(stdout, stderr) once the command ended; its files are removed then."""
        self.wait(timeout)
        out, err = ((self.folder / name).read_text(errors="replace") for name in ("out", "err"))
        shutil.rmtree(self.folder, ignore_errors=True)
        return out, err

    def wait_for(self, timeout: float | None = 600) -> tuple[int, str, str]:
        out, err = self.communicate(timeout)
        assert self.returncode is not None
        return self.returncode, out, err


class ForkServer:
    """A zygote process serving `start` requests; use as a context manager (or call `close`)."""

    def __init__(self, env: dict[str, str] | None = None, cwd: Path | None = None):
        root = Path(__file__).resolve().parent.parent
        self.scratch = Path(tempfile.mkdtemp(prefix="kfmops-forkserver-"))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from benchmarks.forkserver import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd or root,
            env={**(env if env is not None else os.environ), "PYTHONPATH": str(root)},
        )
        self.replies: dict[tuple[str, str], int] = {}
        self.changed = threading.Condition()
        self.numbers = iter(range(1 << 62))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            kind = "pid" if "pid" in message else "status"
            with self.changed:
                self.replies[(message["id"], kind)] = message[kind]
                self.changed.notify_all()
        with self.changed:  # the server is gone: nobody waits forever
            self.replies[("", "gone")] = 1
            self.changed.notify_all()

    def wait_reply(self, key: str, kind: str, timeout: float | None) -> int | None:
        with self.changed:
            self.changed.wait_for(lambda: (key, kind) in self.replies or ("", "gone") in self.replies, timeout)
            if ("", "gone") in self.replies and (key, kind) not in self.replies:
                raise RuntimeError("the kfmops fork server died")
            return self.replies.pop((key, kind), None)

    def start(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> ForkedProcess:
        """Start `kfmops ARGS...` in `cwd` with exactly the environment `env`."""
        key = str(next(self.numbers))
        folder = self.scratch / key
        folder.mkdir()
        request = {"id": key, "args": args, "cwd": str(cwd), "env": env}
        request |= {"stdout": str(folder / "out"), "stderr": str(folder / "err")}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        return ForkedProcess(self, key, folder)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
