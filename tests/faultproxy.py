"""A TCP fault proxy for the tests: put it between kfmops and a real server, then break the network.

    with FaultProxy(("127.0.0.1", 6379)) as proxy:   # listens on 127.0.0.1:<free port>
        url = f"redis://127.0.0.1:{proxy.port}/0"
        proxy.set_mode("refuse")                        # the server is gone
        proxy.set_mode("pass")                          # it is back

Modes, switchable at any time from any thread:

- `pass`: bytes flow both ways unchanged.
- `delay`: every chunk is held `delay_ms` before it is forwarded (order is kept per direction).
- `drop`: a black hole. New connections are accepted and never answered; established ones stop
  moving bytes (nothing is read, nothing is lost: the kernel buffers fill up, as on a partitioned
  network). Back in `pass`, held connections resume where they stopped, as after a partition heals.
- `cut`: every established connection is reset (RST), and so is every new one right after accept.
- `refuse`: the listener is closed (a connect is refused with RST) and established connections are
  reset, which is what a client sees when the server process dies. Leaving `refuse` listens again on
  the same port.

The proxy is bounded: one thread, at most `max_connections` client connections (more are reset),
and it stops by itself after `lifetime` seconds even if a test forgets to stop it.

`DedicatedRedis` is the other half of fault injection: a Redis server of one test (its own port and
folder) that can really be stopped and started again, for the cases a proxy only imitates.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("pass", "delay", "drop", "cut", "refuse")
CHUNK = 65536


def reset(sock: socket.socket) -> None:
    """Close `sock` with an RST instead of a FIN (SO_LINGER 0), as a crashed peer or a middlebox would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass(eq=False)
class _Pair:
    client: socket.socket
    upstream: socket.socket | None = None
    last_due: dict[int, float] = field(default_factory=dict)

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]

    def peer(self, sock: socket.socket) -> socket.socket | None:
        return self.upstream if sock is self.client else self.client


@dataclass
class ProxyStats:
    accepted: int = 0
    forwarded_bytes: int = 0
    resets: int = 0
    refused_upstream: int = 0
    mode_changes: list[tuple[float, str]] = field(default_factory=list)


class FaultProxy:
    """One TCP listener on 127.0.0.1 forwarding to `target`, with faults switchable at runtime."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        lifetime: float = 600.0,
        max_connections: int = 256,
        connect_timeout: float = 2.0,
    ):
        self.target = target
        self.lifetime = lifetime
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.mode = "pass"
        self.delay_ms = 0.0
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._pending_mode: tuple[str, float] | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._listener: socket.socket | None = None
        self._pairs: dict[socket.socket, _Pair] = {}
        self._held: list[_Pair] = []  # accepted in drop mode, not connected upstream yet
        self._queue: list[tuple[float, int, socket.socket, bytes]] = []  # delayed chunks: (due, seq, dst, data)
        self._seq = itertools.count()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"faultproxy->{target[1]}", daemon=True)
        self.port = self._listen(0)

    # control ----------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def set_mode(self, mode: str, delay_ms: float = 0.0) -> None:
        """Switch to `mode` (see the module docstring); returns once the proxy thread has applied it."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        done = threading.Event()
        with self._lock:
            self._pending_mode = (mode, delay_ms)
            self._applied = done
        self._wake()
        if not done.wait(timeout=5):
            raise RuntimeError("the fault proxy thread did not apply the mode change (stopped?)")

    # event loop -------------------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        return listener.getsockname()[1]

    def _run(self) -> None:
        deadline = time.monotonic() + self.lifetime
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        try:
            while not self._stopping.is_set() and time.monotonic() < deadline:
                timeout = min(0.5, max(0.0, deadline - time.monotonic()))
                if self._queue:
                    timeout = min(timeout, max(0.0, self._queue[0][0] - time.monotonic()))
                for key, _ in self._selector.select(timeout):
                    if key.data == "wake":
                        self._drain_wake()
                    elif key.data == "accept":
                        self._accept()
                    elif key.fileobj in self._pairs:  # a socket closed earlier in this round is skipped
                        self._forward(key.fileobj)
                self._apply_pending_mode()
                self._deliver_due()
        finally:
            self._shutdown()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _apply_pending_mode(self) -> None:
        with self._lock:
            pending, self._pending_mode = self._pending_mode, None
            applied = getattr(self, "_applied", None)
        if pending is None:
            return
        mode, delay_ms = pending
        previous, self.mode, self.delay_ms = self.mode, mode, delay_ms
        self.stats.mode_changes.append((time.monotonic(), mode))
        if mode in ("cut", "refuse"):
            for pair in list(self._held) + list({id(p): p for p in self._pairs.values()}.values()):
                self._close(pair, rst=True)
            self._held.clear()
            self._queue.clear()
        if mode == "refuse" and self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        if previous == "refuse" and mode != "refuse":
            self._listen(self.port)
            self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._set_interest()
        if mode in ("pass", "delay"):
            held, self._held = self._held, []
            for pair in held:
                self._connect_upstream(pair)
        if applied is not None:
            applied.set()

    def _set_interest(self) -> None:
        """Read from connections unless the network is a black hole (drop)."""
        for sock in list(self._pairs):
            registered = sock in self._selector.get_map()
            if self.mode == "drop" and registered:
                self._selector.unregister(sock)
            elif self.mode != "drop" and not registered:
                self._selector.register(sock, selectors.EVENT_READ, "data")

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        self.stats.accepted += 1
        if self.mode == "cut" or len(self._pairs) // 2 + len(self._held) >= self.max_connections:
            self.stats.resets += 1
            reset(client)
            return
        pair = _Pair(client)
        if self.mode == "drop":
            self._held.append(pair)
            return
        self._connect_upstream(pair)

    def _connect_upstream(self, pair: _Pair) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
        except OSError:
            self.stats.refused_upstream += 1
            reset(pair.client)  # the server is down behind the proxy: the client sees a reset
            return
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for sock in (pair.client, upstream):
            sock.settimeout(5.0)  # sends block at most this long; reads only happen when readable
        pair.upstream = upstream
        for sock in pair.sockets():
            self._pairs[sock] = pair
            if self.mode != "drop":
                self._selector.register(sock, selectors.EVENT_READ, "data")

    def _forward(self, sock: socket.socket) -> None:
        pair = self._pairs[sock]
        try:
            data = sock.recv(CHUNK)
        except OSError:
            data = b""
        if not data:
            self._close(pair, rst=False)
            return
        destination = pair.peer(sock)
        if self.mode == "delay" and self.delay_ms > 0:
            lane = id(destination)
            due = max(time.monotonic() + self.delay_ms / 1000, pair.last_due.get(lane, 0.0))
            pair.last_due[lane] = due
            heapq.heappush(self._queue, (due, next(self._seq), destination, data))
            return
        self._send(destination, data)

    def _send(self, destination: socket.socket, data: bytes) -> None:
        pair = self._pairs.get(destination)
        if pair is None:
            return
        try:
            destination.sendall(data)
            self.stats.forwarded_bytes += len(data)
        except OSError:
            self._close(pair, rst=True)

    def _deliver_due(self) -> None:
        now = time.monotonic()
        while self._queue and self._queue[0][0] <= now and self.mode != "drop":
            _, _, destination, data = heapq.heappop(self._queue)
            self._send(destination, data)

    def _close(self, pair: _Pair, *, rst: bool) -> None:
        for sock in pair.sockets():
            self._pairs.pop(sock, None)
            if sock in self._selector.get_map():
                self._selector.unregister(sock)
            if rst:
                self.stats.resets += 1
                reset(sock)
            else:
                sock.close()

    def _shutdown(self) -> None:
        for pair in list(self._held) + list({id(p): p for p in self._pairs.values()}.values()):
            self._close(pair, rst=True)
        self._held.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        with self._lock:
            applied = getattr(self, "_applied", None)
        if applied is not None:
            applied.set()  # nobody waits forever on a stopped proxy


class DedicatedRedis:
    """A redis-server of one test: its own port and folder, and an fsynced append-only file, so that what it
    acknowledged survives a stop or a kill. Never the shared server; `stop` only signals its own process."""

    def __init__(self, directory: Path, password: str | None = None):
        self.directory = directory
        self.password = password
        directory.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> float:
        """Start it; returns time.monotonic() at the moment it answers PING."""
        import redis

        arguments = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        arguments += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"]
        if self.password:
            arguments += ["--requirepass", self.password]
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", *arguments], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while True:
            client = redis.Redis(port=self.port, password=self.password, socket_timeout=1, socket_connect_timeout=1)
            try:
                client.ping()
                return time.monotonic()
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.01)
            finally:
                client.close()

    def stop(self, signal_number: int = 15) -> None:
        """SIGTERM (a clean shutdown) by default; 9 to kill it as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal_number)
            self.process.wait(timeout=20)
        self.process = None
