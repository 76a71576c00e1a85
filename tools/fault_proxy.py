"""A TCP proxy on loopback that breaks the connections through it on cue.

The local API fails at the HTTP level: it answers 503, or answers late. A
network fails below that: an answer slowed down chunk by chunk, a
connection closed as soon as it is accepted, one reset in the middle of an
answer, a server that accepts and then never says a word. This proxy sits
between the bridge and the local API and does those things, so that the
tests can show that no record is lost when they happen.

Each connection is given its fault when it is accepted: the next fault
scheduled for a number of connections, else the standing fault, else none
(pass-through). ``clear()`` lifts every fault: new connections pass
through, and added latency stops at once on the connections already open.
A connection that was accepted and never answered stays that way until its
client gives up on it, as it would with a server that hung.

Use it from Python as ``FaultProxy``, or run it as a process with one
fault for its lifetime::

    python tools/fault_proxy.py --upstream-port 8080 --fault reset \\
        --after-bytes 20 --connections 5 --ready-file /tmp/proxy.port

It listens on IPv4 loopback addresses only and forwards to one as well: it
exists for local tests, never for a network.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import math
import selectors
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

if not __package__:
    # Run as a script: make the `tools` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.serve_until_signalled import serve_until_signalled

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_CONNECTIONS = 256

_CHUNK_BYTES = 64 * 1024
# How long a blocked loop waits before it looks up to see whether the
# proxy is stopping; it bounds how long stop() takes.
_POLL_SECONDS = 0.05
_UPSTREAM_CONNECT_TIMEOUT_SECONDS = 5.0
# A peer that stops reading cannot hold a connection thread for longer.
_SEND_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 5.0
_LISTEN_BACKLOG = 128
# SO_LINGER on with a zero timeout: close() then sends a RST, not a FIN.
_LINGER_THEN_RESET = struct.pack("ii", 1, 0)


# -- the faults ------------------------------------------------------------


@dataclass(frozen=True)
class PassThrough:
    """Forward both ways, untouched."""

    kind: ClassVar[str] = "pass"


@dataclass(frozen=True)
class Latency:
    """Wait ``seconds`` once before connecting upstream, or, with
    ``per_chunk``, before forwarding every chunk either way."""

    seconds: float
    per_chunk: bool = False
    kind: ClassVar[str] = "latency"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(
                "Latency.seconds must be a finite number of seconds, zero "
                f"or more; got {self.seconds!r}; pass e.g. 0.05"
            )


@dataclass(frozen=True)
class CloseOnAccept:
    """Close the connection as soon as it is accepted."""

    kind: ClassVar[str] = "close"


@dataclass(frozen=True)
class ResetMidResponse:
    """Forward the request; forward ``after_bytes`` bytes of what comes
    back, then reset the client's connection (RST) and close upstream's."""

    after_bytes: int
    kind: ClassVar[str] = "reset"

    def __post_init__(self) -> None:
        if isinstance(self.after_bytes, bool) or self.after_bytes < 0:
            raise ValueError(
                "ResetMidResponse.after_bytes must be a byte count, zero or "
                f"more; got {self.after_bytes!r}; pass e.g. 20 to cut the "
                "status line"
            )


@dataclass(frozen=True)
class NeverAnswer:
    """Accept, read and discard what the client sends, answer nothing;
    the connection stays open until the client closes it."""

    kind: ClassVar[str] = "never-answer"


Fault = PassThrough | Latency | CloseOnAccept | ResetMidResponse | NeverAnswer

FAULT_KINDS = tuple(
    fault.kind
    for fault in (
        PassThrough, Latency, CloseOnAccept, ResetMidResponse, NeverAnswer
    )
)


@dataclass(frozen=True)
class ProxyStats:
    """What the proxy did so far.

    ``injected`` counts the connections given each fault kind, ``pass``
    included; ``resets`` the answers cut by a RST; ``refused`` the
    connections closed at once because ``max_connections`` were open.
    """

    accepted: int
    injected: Mapping[str, int]
    resets: int
    refused: int
    open_connections: int


# -- which fault the next connection gets ---------------------------------


@dataclass
class _Scheduled:
    fault: Fault
    remaining: int


class _FaultPlan:
    """Scheduled faults first, in order; then the standing one; then none.

    Every fault handed out comes with the event that ``clear`` sets, so a
    connection can tell, at any time, whether its fault was lifted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scheduled: deque[_Scheduled] = deque()
        self._standing: Fault | None = None
        self._lifted = threading.Event()

    def inject(self, fault: Fault, connections: int | None) -> None:
        with self._lock:
            if connections is None:
                self._standing = fault
            else:
                self._scheduled.append(_Scheduled(fault, connections))

    def clear(self) -> None:
        with self._lock:
            self._scheduled.clear()
            self._standing = None
            self._lifted.set()
            self._lifted = threading.Event()

    def next_fault(self) -> tuple[Fault, threading.Event]:
        with self._lock:
            if not self._scheduled:
                return self._standing or PassThrough(), self._lifted

            batch = self._scheduled[0]
            batch.remaining -= 1
            if batch.remaining == 0:
                self._scheduled.popleft()
            return batch.fault, self._lifted


# -- the connections -------------------------------------------------------


class _Traffic:
    """The open connections and the counts, shared by all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[_Connection] = set()
        self._accepted = 0
        self._injected: Counter[str] = Counter()
        self._resets = 0
        self._refused = 0

    def admitted(self, connection: _Connection) -> int:
        """Count the connection in; its number, from 1."""
        with self._lock:
            self._accepted += 1
            self._injected[connection.fault.kind] += 1
            self._open.add(connection)
            return self._accepted

    def refused(self) -> None:
        with self._lock:
            self._accepted += 1
            self._refused += 1

    def reset_sent(self) -> None:
        with self._lock:
            self._resets += 1

    def ended(self, connection: _Connection) -> None:
        with self._lock:
            self._open.discard(connection)

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def open_connections(self) -> list[_Connection]:
        with self._lock:
            return list(self._open)

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                accepted=self._accepted,
                injected=dict(self._injected),
                resets=self._resets,
                refused=self._refused,
                open_connections=len(self._open),
            )


class _Connection:
    """One client connection, served on a thread of its own by its fault."""

    def __init__(
        self,
        client: socket.socket,
        fault: Fault,
        lifted: threading.Event,
        upstream: tuple[str, int],
        stopping: threading.Event,
        traffic: _Traffic,
    ) -> None:
        self.fault = fault
        self._client = client
        self._lifted = lifted
        self._upstream_address = upstream
        self._stopping = stopping
        self._traffic = traffic
        self._upstream: socket.socket | None = None
        self._answered_bytes = 0

    def serve(self) -> None:
        try:
            self._serve()
        except OSError:
            # A peer that resets, vanishes or stops reading ends the
            # connection: the traffic this proxy exists to cause.
            pass
        finally:
            self._close()
            self._traffic.ended(self)

    def interrupt(self) -> None:
        """Wake the thread from any wait on its sockets, for a stop."""
        for sock in (self._client, self._upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        fault = self.fault
        if isinstance(fault, CloseOnAccept):
            return
        if isinstance(fault, NeverAnswer):
            self._swallow()
            return
        if isinstance(fault, Latency) and not fault.per_chunk:
            self._delay(fault.seconds)
        if self._stopping.is_set():
            return

        upstream = socket.create_connection(
            self._upstream_address, _UPSTREAM_CONNECT_TIMEOUT_SECONDS
        )
        self._upstream = upstream
        for sock in (self._client, upstream):
            sock.settimeout(_SEND_TIMEOUT_SECONDS)
            # Chunks go on as they come: the faults are about timing.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._relay(upstream)

    def _swallow(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._client, selectors.EVENT_READ)
            while not self._stopping.is_set():
                readable = selector.select(_POLL_SECONDS)
                if readable and not self._client.recv(_CHUNK_BYTES):
                    return

    def _relay(self, upstream: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._client, selectors.EVENT_READ, True)
            selector.register(upstream, selectors.EVENT_READ, False)
            while not self._stopping.is_set():
                for key, _ in selector.select(_POLL_SECONDS):
                    if not self._forward(upstream, asking=key.data):
                        return

    def _forward(self, upstream: socket.socket, *, asking: bool) -> bool:
        """Pass one chunk on; False once the connection is over.

        ``asking``: the chunk is the client's, going upstream.
        """
        source = self._client if asking else upstream
        data = source.recv(_CHUNK_BYTES)
        if not data:
            return False
        if isinstance(self.fault, Latency) and self.fault.per_chunk:
            self._delay(self.fault.seconds)

        if asking:
            upstream.sendall(data)
            return True
        return self._answer(data)

    def _answer(self, data: bytes) -> bool:
        fault = self.fault
        if isinstance(fault, ResetMidResponse):
            allowed = fault.after_bytes - self._answered_bytes
            if len(data) > allowed:
                if allowed > 0:
                    self._client.sendall(data[:allowed])
                self._reset_client()
                return False

        self._client.sendall(data)
        self._answered_bytes += len(data)
        return True

    def _reset_client(self) -> None:
        # Counted first, so the count is there when the client sees it.
        self._traffic.reset_sent()
        self._client.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_THEN_RESET
        )
        self._client.close()

    def _delay(self, seconds: float) -> None:
        # Lifting the fault (or stopping, which lifts it) ends the wait.
        if not self._lifted.is_set():
            self._lifted.wait(seconds)

    def _close(self) -> None:
        self._client.close()
        if self._upstream is not None:
            self._upstream.close()


# -- the proxy -------------------------------------------------------------


class FaultProxy:
    """Forwards loopback TCP connections to ``upstream_port``, with faults.

    ``start()`` listens and accepts on a thread named after the port;
    every connection is served on a thread of its own. ``stop()`` accepts
    no more, ends every open connection and joins every thread within one
    time budget. An instance starts once. As a context manager it starts
    on entry and stops on exit.
    """

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = DEFAULT_HOST,
        host: str = DEFAULT_HOST,
        port: int = 0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._upstream = (
            _checked_host(upstream_host, "upstream_host"),
            _checked_port(upstream_port, "upstream_port", allow_zero=False),
        )
        self._address = (
            _checked_host(host, "host"),
            _checked_port(port, "port", allow_zero=True),
        )
        self._max_connections = _checked_max_connections(max_connections)
        self._plan = _FaultPlan()
        self._traffic = _Traffic()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._acceptor: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()

    def start(self) -> Self:
        """Listen and accept; connections are taken once this returns."""
        if self._listener is not None:
            raise RuntimeError(
                "this FaultProxy was started already; create a new one"
            )

        listener = socket.create_server(
            self._address, backlog=_LISTEN_BACKLOG, reuse_port=False
        )
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop,
            name=f"{self.thread_prefix}-acceptor",
            daemon=True,
        )
        self._acceptor.start()
        return self

    def stop(self, timeout_seconds: float = _STOP_TIMEOUT_SECONDS) -> bool:
        """Stop within ``timeout_seconds``; True if every thread ended.

        Stopping twice, or before a start, does nothing and returns True.
        """
        listener, acceptor = self._listener, self._acceptor
        if listener is None or acceptor is None or self._stopping.is_set():
            return True
        deadline = _Deadline(timeout_seconds)

        # First lift every fault, so no connection sits out a latency, and
        # tell every loop to end at its next look-up.
        self._stopping.set()
        self._plan.clear()

        # Then stop accepting: once the acceptor has ended, the set of
        # connections to end can only shrink.
        acceptor.join(deadline.remaining())
        listener.close()

        # Last, wake every connection thread from its sockets and wait for
        # it to close them.
        for connection in self._traffic.open_connections():
            connection.interrupt()
        with self._threads_lock:
            threads = [acceptor, *self._threads]
        for thread in threads:
            thread.join(deadline.remaining())
        return not any(thread.is_alive() for thread in threads)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port listened on; known once started."""
        if self._port is None:
            raise RuntimeError(
                "the FaultProxy has no port until start() is called"
            )
        return self._port

    @property
    def thread_prefix(self) -> str:
        """The start of every thread name of this proxy, once started."""
        return f"fault-proxy-{self.port}"

    def url(self, path: str = "/") -> str:
        """An http:// URL through the proxy to ``path`` upstream."""
        return f"http://{self._address[0]}:{self.port}{path}"

    def inject(self, fault: Fault, connections: int | None = None) -> None:
        """Give ``fault`` to the next ``connections`` connections accepted,
        after those scheduled before; or, without a count, to every
        connection from then on until ``clear()``, once the counted faults
        are used up. A fault without a count replaces the previous one."""
        self._plan.inject(fault, _checked_connections(connections))

    def clear(self) -> None:
        """Lift every fault: new connections pass through, and latency on
        open ones stops. Connections never answered stay so until their
        client closes them."""
        self._plan.clear()

    def stats(self) -> ProxyStats:
        """The counts so far."""
        return self._traffic.stats()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not selector.select(_POLL_SECONDS):
                    continue
                try:
                    client, _ = listener.accept()
                except OSError:
                    # The client gave up before being accepted.
                    continue
                self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        if self._traffic.open_count() >= self._max_connections:
            client.close()
            self._traffic.refused()
            return

        fault, lifted = self._plan.next_fault()
        connection = _Connection(
            client, fault, lifted, self._upstream, self._stopping,
            self._traffic,
        )
        number = self._traffic.admitted(connection)
        thread = threading.Thread(
            target=connection.serve,
            name=f"{self.thread_prefix}-connection-{number}",
            daemon=True,
        )
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()


class _Deadline:
    """One time budget shared by several waits; the proxy keeps to the
    standard library, so it does not borrow the bridge's own."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._ends - time.monotonic())


# -- checks with the fix in the message ------------------------------------


def _checked_host(host: str, name: str) -> str:
    try:
        is_loopback = ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ValueError(
            f"{name} must be an IPv4 loopback address, got {host!r}: the "
            f"proxy is for local tests only; use {DEFAULT_HOST}"
        )
    return host


def _checked_port(port: int, name: str, *, allow_zero: bool) -> int:
    lowest = 0 if allow_zero else 1
    if not lowest <= port <= 65535:
        hint = "; use 0 for any free port" if allow_zero else ""
        raise ValueError(
            f"{name} must be from {lowest} to 65535, got {port}{hint}"
        )
    return port


def _checked_max_connections(max_connections: int) -> int:
    if max_connections < 1:
        raise ValueError(
            f"max_connections must be 1 or more, got {max_connections}; "
            f"the default is {DEFAULT_MAX_CONNECTIONS}"
        )
    return max_connections


def _checked_connections(connections: int | None) -> int | None:
    if connections is None or connections >= 1:
        return connections
    raise ValueError(
        f"connections must be 1 or more, got {connections}; leave it out "
        "to apply the fault to every connection until clear()"
    )


# -- the command line ------------------------------------------------------


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fault_proxy.py",
        description=(
            "Forward loopback TCP connections to a local server, breaking "
            "them in one chosen way, until SIGTERM or SIGINT."
        ),
    )
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--upstream-host", default=DEFAULT_HOST)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument(
        "--port", type=int, default=0, help="0 picks a free port"
    )
    parser.add_argument("--fault", choices=FAULT_KINDS, default="pass")
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="latency: the delay"
    )
    parser.add_argument(
        "--per-chunk",
        action="store_true",
        help="latency: delay every chunk, not only the connection",
    )
    parser.add_argument(
        "--after-bytes",
        type=int,
        default=0,
        help="reset: bytes of the answer forwarded before the reset",
    )
    parser.add_argument(
        "--connections",
        type=int,
        help="apply the fault to this many connections only",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        help="once listening, write the port here (removed on exit)",
    )
    return parser


def _fault_of(args: argparse.Namespace) -> Fault:
    match args.fault:
        case "latency":
            return Latency(args.seconds, per_chunk=args.per_chunk)
        case "reset":
            return ResetMidResponse(args.after_bytes)
        case "close":
            return CloseOnAccept()
        case "never-answer":
            return NeverAnswer()
        case _:
            return PassThrough()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _argument_parser()
    args = parser.parse_args(argv)
    try:
        proxy = FaultProxy(
            args.upstream_port, args.upstream_host, args.host, args.port
        )
        fault = _fault_of(args)
        proxy.inject(fault, args.connections)
    except ValueError as error:
        parser.error(str(error))

    return serve_until_signalled(
        proxy.start,
        proxy.stop,
        port=lambda: proxy.port,
        url=proxy.url,
        address=f"{args.host}:{args.port}",
        ready_file=args.ready_file,
    )


if __name__ == "__main__":
    sys.exit(main())
