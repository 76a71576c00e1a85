"""An HTTP sink on loopback that answers 204 after a fixed delay.

A real API takes milliseconds to answer, and what the bridge does with
that wait (how many requests it keeps open at once) decides its rate more
than its CPU does. `make bench` therefore measures against a sink that
takes 20 ms as well as against nginx, which answers at once. nginx cannot
hold an answer back (nginx-light has no echo module), and a thread per
waiting request (tools/local_api.py) would take from the two shared cores
what the bridge needs. So this sink is one asyncio event loop speaking
HTTP/1.1 with keep-alive, where a waiting request costs a timer
(`call_later`), not a thread or a task, and bodies are counted off and
dropped, never parsed.

It logs each answer as tools/nginx_sink.py does: the time it answered
(seconds since the epoch, to the millisecond) and the request's
Idempotency-Key, one line each, so the bench reads both sinks with one
`ArrivalLog`. Lines are written out four times a second, and at stop.

From Python, in this process (as the tests do) or as a process of its
own (as the bench does, so that its CPU is counted apart)::

    with SlowSinkServer(log_path, delay_seconds=0.02) as server:
        post_to(server.url)
    with SlowSink(work_dir, delay_seconds=0.02) as sink:
        arrivals = sink.arrivals.read()

From the shell, serving until SIGTERM or Ctrl-C::

    python tools/slow_sink.py --log arrivals.log [--delay-ms 20] [--port P]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

if not __package__:
    # Run as a script: make the `tools` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.nginx_sink import INGEST_PATH, LOOPBACK_HOST, ArrivalLog
from tools.serve_until_signalled import serve_until_signalled

DEFAULT_DELAY_SECONDS = 0.020

_FLUSH_INTERVAL_SECONDS = 0.25
_LISTEN_BACKLOG = 512
# Far more than any client of ours sends; a longer head is refused.
_MAX_HEAD_BYTES = 64 * 1024
_START_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 10.0
_READY_POLL_SECONDS = 0.02
_KILL_TIMEOUT_SECONDS = 5.0
_ARRIVALS_NAME = "arrivals.log"
_READY_NAME = "port"
_STDERR_NAME = "stderr.log"

_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
_NO_CONTENT_THEN_CLOSE = (
    b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
)
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


class SlowSinkError(Exception):
    """The sink process could not be started."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the sink needs from a request's head."""

    content_length: int
    idempotency_key: str
    closes: bool

    @classmethod
    def parse(cls, head: bytes) -> RequestHead:
        """Read a head without its final blank line; ValueError if it is
        not HTTP/1.x or does not say how long its body is."""
        request_line, *header_lines = head.split(b"\r\n")
        version = request_line.split(b" ")[-1]
        if not version.startswith(b"HTTP/1."):
            raise ValueError("not an HTTP/1.x request")

        headers = {}
        for line in header_lines:
            name, colon, value = line.partition(b":")
            if not colon:
                raise ValueError("a header line without a colon")
            headers[name.strip().lower()] = value.strip()

        # A chunked body would need parsing; no client of ours sends one.
        if headers.get(b"transfer-encoding", b"identity") != b"identity":
            raise ValueError("only bodies with a Content-Length are read")
        length = int(headers.get(b"content-length", b"0"))
        if length < 0:
            raise ValueError("a negative Content-Length")

        connection = headers.get(b"connection", b"").lower()
        keeps_alive_by_default = version != b"HTTP/1.0"
        closes = connection == b"close" or (
            not keeps_alive_by_default and connection != b"keep-alive"
        )
        key = headers.get(b"idempotency-key", b"").decode("latin-1")
        return cls(length, key or "-", closes)


class SlowSinkServer:
    """The sink's event loop in a thread of its own, until stop()."""

    def __init__(
        self,
        log_path: Path,
        *,
        delay_seconds: float = DEFAULT_DELAY_SECONDS,
        port: int = 0,
    ) -> None:
        self.log_path = Path(log_path)
        self.delay_seconds = delay_seconds
        self.port = port
        self.connections_accepted = 0
        self._connections: set[_Connection] = set()
        self._ready = threading.Event()
        self._start_error: OSError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._log_file: BinaryIO | None = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve()),
            name="slow-sink",
            daemon=True,
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Where to POST; every path answers the same."""
        return f"http://{LOOPBACK_HOST}:{self.port}{INGEST_PATH}"

    def start(self) -> str:
        """Listen; return the URL. OSError if the port cannot be bound."""
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_SECONDS):
            raise OSError("the slow sink's event loop did not start")
        if self._start_error is not None:
            self._thread.join(_STOP_TIMEOUT_SECONDS)
            raise self._start_error
        return self.url

    def stop(self) -> bool:
        """Answer what is waiting, close every connection, write out the
        log; False if the loop did not end in time."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            self._thread.join(_STOP_TIMEOUT_SECONDS)
        return not self._thread.is_alive()

    # -- on the event loop --------------------------------------------

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._stopping = loop, asyncio.Event()
        try:
            server = await loop.create_server(
                lambda: _Connection(self), LOOPBACK_HOST, self.port,
                backlog=_LISTEN_BACKLOG,
            )
        except OSError as error:
            self._start_error = error
            self._ready.set()
            return

        self.port = server.sockets[0].getsockname()[1]
        with self.log_path.open("ab") as log_file:
            self._log_file = log_file
            flusher = loop.create_task(self._flush_now_and_then(log_file))
            self._ready.set()
            await self._stopping.wait()
            await self._shut_down(server)
            flusher.cancel()
        self._log_file = None

    async def _shut_down(self, server: asyncio.Server) -> None:
        """Stop listening, let the answers already due go out, close."""
        server.close()
        await asyncio.sleep(self.delay_seconds)
        for connection in list(self._connections):
            connection.close()
        await server.wait_closed()
        # One turn of the loop, for the transports to finish closing.
        await asyncio.sleep(0)

    async def _flush_now_and_then(self, log_file: BinaryIO) -> None:
        while True:
            await asyncio.sleep(_FLUSH_INTERVAL_SECONDS)
            log_file.flush()

    def opened(self, connection: _Connection) -> None:
        self.connections_accepted += 1
        self._connections.add(connection)

    def closed(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    def answer_later(self, connection: _Connection, head: RequestHead) -> None:
        assert self._loop is not None, "requests arrive once the loop runs"
        self._loop.call_later(self.delay_seconds, self._answer, connection, head)

    def _answer(self, connection: _Connection, head: RequestHead) -> None:
        if not connection.answer(head) or self._log_file is None:
            return
        line = f"{time.time():.3f} {head.idempotency_key}\n"
        self._log_file.write(line.encode("latin-1"))


class _Connection(asyncio.Protocol):
    """One client connection: heads parsed, bodies counted off, answers
    left to the server's timers. Answers keep the order of requests,
    since every one waits the same delay."""

    def __init__(self, server: SlowSinkServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: RequestHead | None = None
        self._body_left = 0
        self._done_reading = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server.closed(self)

    def data_received(self, data: bytes) -> None:
        if self._done_reading:
            return
        self._buffer += data
        try:
            while self._take_request():
                pass
        except ValueError:
            self._refuse()

    def answer(self, head: RequestHead) -> bool:
        """Send the 204; False when the client has gone meanwhile."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        transport.write(_NO_CONTENT_THEN_CLOSE if head.closes else _NO_CONTENT)
        if head.closes:
            transport.close()
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _take_request(self) -> bool:
        """Take one request off the buffer if it is all there."""
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD_BYTES:
                    raise ValueError("the request head is too long")
                return False
            self._head = RequestHead.parse(bytes(self._buffer[:end]))
            self._body_left = self._head.content_length
            del self._buffer[: end + 4]

        # The body is only counted; what has come of it is dropped at once.
        taken = min(self._body_left, len(self._buffer))
        del self._buffer[:taken]
        self._body_left -= taken
        if self._body_left:
            return False

        head, self._head = self._head, None
        self._server.answer_later(self, head)
        # After a request that closes, nothing more is read.
        self._done_reading = head.closes
        return not head.closes

    def _refuse(self) -> None:
        self._done_reading = True
        if self._transport is not None:
            self._transport.write(_BAD_REQUEST)
            self._transport.close()


class SlowSink:
    """The sink as a process of its own, started and stopped by PID.

    The bench runs it so: its CPU is then counted apart from the bench's,
    and it holds no lock the bench's own threads need.
    """

    def __init__(
        self, work_dir: Path, *, delay_seconds: float = DEFAULT_DELAY_SECONDS
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.delay_seconds = delay_seconds
        self.arrivals = ArrivalLog(self.work_dir / _ARRIVALS_NAME)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Where to POST; every path answers the same."""
        return f"http://{LOOPBACK_HOST}:{self.port}{INGEST_PATH}"

    def process_ids(self) -> list[int]:
        """The sink's PID while it runs."""
        process = self._process
        if process is None or process.poll() is not None:
            return []
        return [process.pid]

    def start(self) -> str:
        """Start the process, wait until it listens; return the URL."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ready_file = self.work_dir / _READY_NAME
        ready_file.unlink(missing_ok=True)
        delay_ms = f"{self.delay_seconds * 1000:g}"
        command = [
            sys.executable, str(Path(__file__).resolve()),
            "--delay-ms", delay_ms,
            "--log", str(self.arrivals.path),
            "--ready-file", str(ready_file),
        ]
        with (self.work_dir / _STDERR_NAME).open("wb") as stderr:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        try:
            self.port = self._wait_for_port(ready_file)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """SIGTERM, which writes out the log; SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_KILL_TIMEOUT_SECONDS)

    def _wait_for_port(self, ready_file: Path) -> int:
        process = self._process
        assert process is not None, "start() launches the process first"
        pause = threading.Event()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS

        while time.monotonic() < deadline:
            if ready_file.exists():
                return int(ready_file.read_text())
            if process.poll() is not None:
                raise SlowSinkError(
                    f"the slow sink exited with status {process.returncode} "
                    f"while starting: {self._stderr_tail()}"
                )
            pause.wait(_READY_POLL_SECONDS)
        raise SlowSinkError(
            f"the slow sink did not listen within "
            f"{_START_TIMEOUT_SECONDS:.0f} s: {self._stderr_tail()}"
        )

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            text = (self.work_dir / _STDERR_NAME).read_text(errors="replace")
            return text[-2000:].strip() or "(nothing on stderr)"
        return "(no stderr)"


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="slow_sink",
        description="Answer 204 to every POST after a fixed delay, on "
        "loopback, logging when each was answered.",
    )
    parser.add_argument("--log", type=Path, required=True,
                        help="the arrival log, appended to")
    parser.add_argument("--delay-ms", type=float, default=20.0,
                        help="wait before each answer (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0,
                        help="port to listen on; 0 picks a free one")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="written with the port once listening")
    arguments = parser.parse_args(argv)

    server = SlowSinkServer(
        arguments.log,
        delay_seconds=arguments.delay_ms / 1000,
        port=arguments.port,
    )
    return serve_until_signalled(
        server.start,
        server.stop,
        port=lambda: server.port,
        url=lambda: server.url,
        address=f"{LOOPBACK_HOST}:{arguments.port}",
        ready_file=arguments.ready_file,
    )


if __name__ == "__main__":
    sys.exit(main())
