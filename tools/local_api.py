"""A small, real HTTP API on loopback for kafka-bridge to deliver to.

The demo and the tests need an endpoint that behaves like the API records
are delivered to, and that can be told to fail, throttle or stall on cue:
that is how retries, Retry-After and back-pressure are shown to work over a
real socket rather than against a mock. It records every delivery so that a
test can check what arrived, in which order and when.

Use it from Python as ``LocalApi``, or run it as a process::

    python tools/local_api.py --port 0 --ready-file /tmp/local-api.port

Deliveries are POSTs to any path outside ``/_control/``. Other processes
steer the API over HTTP; control requests are never recorded:

``POST /_control/behaviour``
    JSON such as ``{"status": 503, "count": 5, "delay_seconds": 0.5,
    "retry_after": "2"}``. With ``count``, the next ``count`` deliveries get
    this answer (after any answers scheduled before); without it, every
    delivery gets it until a reset. ``status`` defaults to 200, so
    ``{"delay_seconds": 0.5}`` only slows the answers down.
``POST /_control/reset``
    Back to answering 200 at once.
``POST /_control/clear-received``
    Forget the deliveries received so far, and their counts.
``GET /_control/received``
    How many deliveries arrived; ``?bodies=1`` adds their bodies (parsed as
    JSON, or as text when they are not JSON), ``?headers=1`` their headers.
``GET /_control/stats``
    Deliveries per answered status, the span of arrival times and the
    behaviour in force.

It listens on IPv4 loopback addresses only: it answers anything it is sent
and exists for local tests, never for a network.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import math
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeGuard, cast
from urllib.parse import parse_qs, urlsplit

if not __package__:
    # Run as a script: make the `tools` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.serve_until_signalled import serve_until_signalled

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_RECORDED = 1_000_000
INGEST_PATH = "/ingest"
CONTROL_PREFIX = "/_control/"

_MAX_BODY_BYTES = 64 * 1024 * 1024
_IDLE_CONNECTION_TIMEOUT_SECONDS = 60.0
# How long serve_forever may take to notice a shutdown; it bounds stop().
_SHUTDOWN_POLL_INTERVAL_SECONDS = 0.05
_STOP_JOIN_TIMEOUT_SECONDS = 5.0
# Several delivery workers may connect at once; the stdlib default is 5.
_LISTEN_BACKLOG = 128
# HTTP forbids a body, and so a Content-Length, on these answers.
_BODYLESS_STATUSES = frozenset({204, 304})
_BEHAVIOUR_FIELDS = ("status", "count", "delay_seconds", "retry_after")


@dataclass(frozen=True)
class ReceivedRequest:
    """One delivery as the API saw it, and the status it was answered with.

    ``path`` is the request target as sent, query included. The times are
    taken once the whole body has been read.
    """

    path: str
    headers: Mapping[str, str]
    body: bytes
    received_monotonic: float
    received_wall: float
    answered_status: int

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class _Reply:
    """How to answer one delivery."""

    status: int = 200
    delay_seconds: float = 0.0
    retry_after: str | None = None

    def describe(self) -> dict[str, object]:
        return dataclasses.asdict(self)


_PLAIN_REPLY = _Reply()


@dataclass
class _ScheduledReplies:
    reply: _Reply
    remaining: int


class _ReplyPlan:
    """Chooses the answer to each delivery.

    Scheduled answers are used up first, in the order they were scheduled;
    then the standing answer applies, if one is set; then a plain 200.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scheduled: deque[_ScheduledReplies] = deque()
        self._standing: _Reply | None = None

    def apply(self, reply: _Reply, count: int | None) -> None:
        """Schedule ``reply`` for the next ``count`` deliveries, or for all."""
        with self._lock:
            if count is None:
                self._standing = reply
            else:
                self._scheduled.append(_ScheduledReplies(reply, count))

    def reset(self) -> None:
        with self._lock:
            self._scheduled.clear()
            self._standing = None

    def next_reply(self) -> _Reply:
        with self._lock:
            if not self._scheduled:
                return self._standing or _PLAIN_REPLY

            batch = self._scheduled[0]
            batch.remaining -= 1
            if batch.remaining == 0:
                self._scheduled.popleft()
            return batch.reply

    def describe(self) -> dict[str, object]:
        with self._lock:
            scheduled = [
                {**batch.reply.describe(), "remaining": batch.remaining}
                for batch in self._scheduled
            ]
            standing = self._standing
        return {
            "scheduled": scheduled,
            "standing": None if standing is None else standing.describe(),
        }


class _DeliveryLog:
    """The deliveries received, in arrival order.

    At most ``max_recorded`` are kept so that a long demo cannot exhaust
    memory; the counts go on past that bound.
    """

    def __init__(self, max_recorded: int) -> None:
        self._max_recorded = max_recorded
        self._changed = threading.Condition()
        self._recorded: list[ReceivedRequest] = []
        self._count = 0
        self._answered: Counter[int] = Counter()
        self._first: ReceivedRequest | None = None
        self._last: ReceivedRequest | None = None

    def add(self, request: ReceivedRequest) -> None:
        with self._changed:
            self._count += 1
            self._answered[request.answered_status] += 1
            if self._first is None:
                self._first = request
            self._last = request
            if len(self._recorded) < self._max_recorded:
                self._recorded.append(request)
            self._changed.notify_all()

    def clear(self) -> None:
        with self._changed:
            self._recorded = []
            self._count = 0
            self._answered.clear()
            self._first = None
            self._last = None

    def snapshot(self) -> list[ReceivedRequest]:
        with self._changed:
            return list(self._recorded)

    def count(self) -> int:
        with self._changed:
            return self._count

    def wait_for_count(self, count: int, timeout_seconds: float) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: self._count >= count, timeout_seconds
            )

    def summary(self, bodies: bool, headers: bool) -> dict[str, object]:
        """What arrived, shaped for the ``/_control/received`` answer."""
        with self._changed:
            result: dict[str, object] = {
                "count": self._count,
                "recorded": len(self._recorded),
            }
            recorded = list(self._recorded)
        if bodies:
            result["bodies"] = [_body_as_json(r.body) for r in recorded]
        if headers:
            result["headers"] = [dict(r.headers) for r in recorded]
        return result

    def stats(self) -> dict[str, object]:
        with self._changed:
            first, last = self._first, self._last
            answered = sorted(self._answered.items())
            count, recorded = self._count, len(self._recorded)
        return {
            "received": count,
            "recorded": recorded,
            "answered": {str(status): n for status, n in answered},
            "first_received_wall": first.received_wall if first else None,
            "last_received_wall": last.received_wall if last else None,
            "arrival_span_seconds": _arrival_span_seconds(first, last),
        }


def _arrival_span_seconds(
    first: ReceivedRequest | None, last: ReceivedRequest | None
) -> float | None:
    if first is None or last is None:
        return None
    return last.received_monotonic - first.received_monotonic


def _body_as_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")


class _Server(ThreadingHTTPServer):
    """The HTTP server, holding what its request handlers share."""

    daemon_threads = True
    request_queue_size = _LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        plan: _ReplyPlan,
        log: _DeliveryLog,
        stopping: threading.Event,
    ) -> None:
        self.plan = plan
        self.log = log
        self.stopping = stopping
        self._connections_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)
            # Accepted just before the stop: it must not outlive it.
            if self.stopping.is_set():
                _end_connection(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def end_connections(self) -> None:
        """End open keep-alive connections; their threads then close them."""
        with self._connections_lock:
            for connection in self._connections:
                _end_connection(connection)


def _end_connection(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Answers one connection's requests, deliveries and control alike."""

    protocol_version = "HTTP/1.1"
    server_version = "kafka-bridge-local-api"
    # Headers and body go out in two writes; without this, Nagle's
    # algorithm and the client's delayed ACK stall every answer.
    disable_nagle_algorithm = True
    timeout = _IDLE_CONNECTION_TIMEOUT_SECONDS

    @property
    def _shared(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        self._shared.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._shared.untrack(self.connection)

    def version_string(self) -> str:
        """The Server header, without the Python version in it."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: a line per delivery would drown the demo's output."""

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return

        if self.path.startswith(CONTROL_PREFIX):
            self._control_post(body)
        else:
            self._deliver(body)

    def do_GET(self) -> None:
        if self.path.startswith(CONTROL_PREFIX):
            self._control_get()
            return

        error = {"error": "deliveries are POST requests"}
        self._send_json(405, error, [("Allow", "POST")])

    def _read_body(self) -> bytes | None:
        """The whole body, or None once a body that is not read is refused."""
        refusal = self._body_refusal()
        if refusal is not None:
            # The unread body would be taken for the next request.
            self.close_connection = True
            self._send_json(refusal[0], {"error": refusal[1]})
            return None

        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _body_refusal(self) -> tuple[int, str] | None:
        """The status and reason to refuse the body with, if it is refused."""
        encoding = self.headers.get("Transfer-Encoding", "")
        if "chunked" in encoding.lower():
            return 411, "chunked bodies are not read; send a Content-Length"

        length_text = self.headers.get("Content-Length", "0")
        if not length_text.isdigit():
            bad = f"Content-Length must be a byte count, got {length_text!r}"
            return 400, bad
        if int(length_text) > _MAX_BODY_BYTES:
            return 413, f"bodies over {_MAX_BODY_BYTES} bytes are refused"
        return None

    def _deliver(self, body: bytes) -> None:
        received_monotonic = time.monotonic()
        received_wall = time.time()
        reply = self._shared.plan.next_reply()
        request = ReceivedRequest(
            path=self.path,
            headers=dict(self.headers.items()),
            body=body,
            received_monotonic=received_monotonic,
            received_wall=received_wall,
            answered_status=reply.status,
        )
        self._shared.log.add(request)

        # A stop cuts the delay short, and a server going down answers
        # nothing more.
        stopping = self._shared.stopping
        if reply.delay_seconds > 0 and stopping.wait(reply.delay_seconds):
            self.close_connection = True
            return

        extra_headers = []
        if reply.retry_after is not None:
            extra_headers.append(("Retry-After", reply.retry_after))
        self._send_json(reply.status, {"status": reply.status}, extra_headers)

    def _control_post(self, body: bytes) -> None:
        route = urlsplit(self.path).path
        plan = self._shared.plan
        if route == CONTROL_PREFIX + "behaviour":
            try:
                plan.apply(*_parse_behaviour(body))
            except ValueError as error:
                self._send_json(400, {"error": str(error)})
                return
            self._send_json(200, plan.describe())
        elif route == CONTROL_PREFIX + "reset":
            plan.reset()
            self._send_json(200, plan.describe())
        elif route == CONTROL_PREFIX + "clear-received":
            self._shared.log.clear()
            self._send_json(200, {"count": 0})
        else:
            self._send_json(404, {"error": f"no control action at {route}"})

    def _control_get(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        log = self._shared.log
        if parts.path == CONTROL_PREFIX + "received":
            bodies = query.get("bodies") == ["1"]
            headers = query.get("headers") == ["1"]
            self._send_json(200, log.summary(bodies, headers))
        elif parts.path == CONTROL_PREFIX + "stats":
            behaviour = self._shared.plan.describe()
            self._send_json(200, {**log.stats(), "behaviour": behaviour})
        else:
            missing = f"no control report at {parts.path}"
            self._send_json(404, {"error": missing})

    def _send_json(
        self,
        status: int,
        document: object,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        for name, value in extra_headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        if status in _BODYLESS_STATUSES:
            self.end_headers()
            return

        payload = json.dumps(document).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _parse_behaviour(body: bytes) -> tuple[_Reply, int | None]:
    """The reply and count a ``/_control/behaviour`` request asks for."""
    document = _json_object(body)
    unknown = sorted(set(document) - set(_BEHAVIOUR_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown behaviour fields {unknown}; "
            f"the fields are {list(_BEHAVIOUR_FIELDS)}"
        )

    reply = _checked_reply(
        document.get("status", 200),
        document.get("delay_seconds", 0.0),
        document.get("retry_after"),
    )
    return reply, _checked_count(document.get("count"))


def _json_object(body: bytes) -> dict[str, object]:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        return document
    raise ValueError(
        'the behaviour must be a JSON object such as {"status": 503}; '
        f"got {body[:200].decode('utf-8', errors='replace')!r}"
    )


def _checked_reply(
    status: object, delay_seconds: object, retry_after: object
) -> _Reply:
    return _Reply(
        _checked_status(status),
        _checked_delay_seconds(delay_seconds),
        _checked_retry_after(retry_after),
    )


def _is_integer(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an int; JSON's true and false do not count."""
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_status(status: object) -> int:
    if _is_integer(status) and 200 <= status <= 599:
        return status
    raise ValueError(
        "status must be an HTTP status code from 200 to 599, "
        f"got {status!r}; pass a code such as 503"
    )


def _checked_count(count: object) -> int | None:
    if count is None:
        return None
    if _is_integer(count) and count >= 1:
        return count
    raise ValueError(
        "count must be a positive integer, or absent to apply to every "
        f"delivery until a reset; got {count!r}"
    )


def _checked_delay_seconds(delay_seconds: object) -> float:
    if _is_integer(delay_seconds) or isinstance(delay_seconds, float):
        seconds = float(delay_seconds)
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    raise ValueError(
        "delay_seconds must be a finite number of seconds, zero or more; "
        f"got {delay_seconds!r}; pass e.g. 0.5"
    )


def _checked_retry_after(retry_after: object) -> str | None:
    if retry_after is None:
        return None
    if _is_integer(retry_after) and retry_after >= 0:
        return str(retry_after)
    if isinstance(retry_after, str) and _is_header_value(retry_after):
        return retry_after
    raise ValueError(
        "retry_after must be a Retry-After header value: seconds such as "
        f'"2", or an HTTP date; got {retry_after!r}'
    )


def _is_header_value(text: str) -> bool:
    # Printable excludes CR and LF, which would end the header early.
    return bool(text.strip()) and text.isprintable()


def _checked_host(host: str) -> str:
    try:
        is_loopback = ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ValueError(
            f"host must be an IPv4 loopback address, got {host!r}: this API "
            "answers anything it is sent and is for local tests only; "
            f"use {DEFAULT_HOST}"
        )
    return host


def _checked_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(
            f"port must be from 0 to 65535, got {port}; use 0 for any free port"
        )
    return port


def _checked_max_recorded(max_recorded: int) -> int:
    if max_recorded < 0:
        raise ValueError(
            f"max_recorded must be zero or more, got {max_recorded}; "
            f"the default is {DEFAULT_MAX_RECORDED}"
        )
    return max_recorded


class LocalApi:
    """A real HTTP API on loopback: records deliveries, misbehaves on cue.

    ``start()`` binds and serves on a daemon thread; ``stop()`` refuses new
    connections, ends open ones and answers nothing more, delayed answers
    included. An instance starts once. As a context manager it starts on
    entry and stops on exit.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        max_recorded: int = DEFAULT_MAX_RECORDED,
    ) -> None:
        self._address = (_checked_host(host), _checked_port(port))
        self._plan = _ReplyPlan()
        self._log = _DeliveryLog(_checked_max_recorded(max_recorded))
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Listen and serve; the API accepts connections once this returns."""
        if self._server is not None:
            raise RuntimeError(
                "this LocalApi was started already; create a new one"
            )

        # Binding and listening happen here, so connections made from now
        # on wait in the backlog until the serving thread takes them.
        server = _Server(self._address, self._plan, self._log, self._stopping)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _SHUTDOWN_POLL_INTERVAL_SECONDS},
            name="local-api-server",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving; stopping twice, or before a start, does nothing."""
        server, thread = self._server, self._thread
        if server is None or thread is None or self._stopping.is_set():
            return

        # First release the handlers waiting out a delay, so none holds
        # the stop up; they close their connection without answering.
        self._stopping.set()

        # Then accept no more connections, and close the listening socket
        # so that new ones are refused rather than left waiting.
        server.shutdown()
        server.server_close()

        # Last, end the keep-alive connections still open: their threads
        # would otherwise answer the next request sent on them.
        server.end_connections()
        thread.join(_STOP_JOIN_TIMEOUT_SECONDS)

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
        return self._running_server().server_port

    @property
    def base_url(self) -> str:
        return f"http://{self._address[0]}:{self.port}"

    @property
    def url(self) -> str:
        """Where to deliver: any path works, this one reads well in configs."""
        return self.base_url + INGEST_PATH

    def received(self) -> list[ReceivedRequest]:
        """A copy of the deliveries recorded so far, in arrival order."""
        return self._log.snapshot()

    def received_count(self) -> int:
        """Deliveries received, counting those beyond ``max_recorded``."""
        return self._log.count()

    def wait_for_count(self, n: int, timeout_seconds: float) -> bool:
        """Wait until ``n`` deliveries have arrived; False if time ran out."""
        return self._log.wait_for_count(n, timeout_seconds)

    def clear_received(self) -> None:
        self._log.clear()

    def respond_with(
        self,
        status: int,
        count: int | None = None,
        delay_seconds: float = 0.0,
        retry_after: str | None = None,
    ) -> None:
        """Set how deliveries are answered from now on.

        With a ``count``, the next ``count`` deliveries are answered so,
        after any answers scheduled before with a count; without one, every
        delivery is, until a reset, once the counted answers are used up.
        An answer without a count replaces the previous one without a count.
        """
        reply = _checked_reply(status, delay_seconds, retry_after)
        self._plan.apply(reply, _checked_count(count))

    def reset_behaviour(self) -> None:
        """Answer 200 at once again, forgetting all scheduled answers."""
        self._plan.reset()

    def stats(self) -> dict[str, object]:
        """The ``/_control/stats`` report."""
        return {**self._log.stats(), "behaviour": self._plan.describe()}

    def _running_server(self) -> _Server:
        if self._server is None:
            raise RuntimeError(
                "the LocalApi has no port until start() is called"
            )
        return self._server


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="local_api.py",
        description=(
            "Serve the local API that kafka-bridge delivers to in the demo "
            "and the tests, until SIGTERM or SIGINT."
        ),
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="a loopback address"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="0 picks a free port"
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        help="once listening, write the port here (removed on exit)",
    )
    parser.add_argument(
        "--max-recorded",
        type=int,
        default=DEFAULT_MAX_RECORDED,
        help="deliveries kept in memory; later ones are only counted",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _argument_parser()
    args = parser.parse_args(argv)
    try:
        api = LocalApi(args.host, args.port, args.max_recorded)
    except ValueError as error:
        parser.error(str(error))

    return serve_until_signalled(
        api.start,
        api.stop,
        port=lambda: api.port,
        url=lambda: api.base_url,
        address=f"{args.host}:{args.port}",
        ready_file=args.ready_file,
    )


if __name__ == "__main__":
    sys.exit(main())
