"""The bench's 20 ms sink, over real sockets on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tools.nginx_sink import ArrivalLog
from tools.procfs import cpu_seconds
from tools.slow_sink import SlowSink, SlowSinkServer

_DELAY_SECONDS = 0.05
_TIMEOUT_SECONDS = 10.0
_HEAD_END = b"\r\n\r\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SlowSinkServer]:
    with SlowSinkServer(
        tmp_path / "arrivals.log", delay_seconds=_DELAY_SECONDS
    ) as running:
        yield running


def _request(
    key: str, body: bytes = b"{}", *, extra_headers: str = ""
) -> bytes:
    head = (
        f"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nIdempotency-Key: {key}\r\n"
        f"Content-Length: {len(body)}\r\n{extra_headers}\r\n"
    )
    return head.encode() + body


def _connect(server: SlowSinkServer) -> socket.socket:
    connection = socket.create_connection(
        ("127.0.0.1", server.port), timeout=_TIMEOUT_SECONDS
    )
    connection.settimeout(_TIMEOUT_SECONDS)
    return connection


def _read_heads(connection: socket.socket, count: int) -> list[bytes]:
    """The next `count` answer heads; the sink's answers have no body."""
    received = b""
    while received.count(_HEAD_END) < count:
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return received.split(_HEAD_END)[:count]


def test_it_answers_204_no_sooner_than_the_delay(
    server: SlowSinkServer,
) -> None:
    started = time.monotonic()
    response = requests.post(
        server.url, data=b"{}", timeout=_TIMEOUT_SECONDS
    )
    elapsed_seconds = time.monotonic() - started

    assert response.status_code == 204
    assert elapsed_seconds >= _DELAY_SECONDS


def test_one_connection_carries_request_after_request(
    server: SlowSinkServer,
) -> None:
    with _connect(server) as connection:
        connection.sendall(_request("a"))
        [first] = _read_heads(connection, 1)
        connection.sendall(_request("b"))
        [second] = _read_heads(connection, 1)

    assert first.startswith(b"HTTP/1.1 204 ")
    assert second.startswith(b"HTTP/1.1 204 ")
    assert server.connections_accepted == 1


def test_a_requests_session_keeps_its_connection(
    server: SlowSinkServer,
) -> None:
    with requests.Session() as session:
        statuses = [
            session.post(
                server.url, data=b"{}", timeout=_TIMEOUT_SECONDS
            ).status_code
            for _ in range(3)
        ]

    assert statuses == [204, 204, 204]
    assert server.connections_accepted == 1


def test_a_long_body_in_pieces_is_read_past_before_the_next_request(
    server: SlowSinkServer,
) -> None:
    body = b"x" * 200_000
    first = _request("long", body)
    with _connect(server) as connection:
        for start in range(0, len(first), 30_000):
            connection.sendall(first[start:start + 30_000])
        connection.sendall(_request("short"))
        heads = _read_heads(connection, 2)

    assert [head.split(b"\r\n")[0] for head in heads] == [
        b"HTTP/1.1 204 No Content", b"HTTP/1.1 204 No Content",
    ]


def test_each_answer_is_logged_with_its_time_and_key(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "arrivals.log"
    sent_at = time.time()
    with SlowSinkServer(log_path, delay_seconds=_DELAY_SECONDS) as server:
        for key in ("topic/0/1", "topic/0/2..topic/3/7"):
            requests.post(
                server.url, data=b"{}", headers={"Idempotency-Key": key},
                timeout=_TIMEOUT_SECONDS,
            )
    finished_at = time.time()
    arrivals = ArrivalLog(log_path).read()

    assert [a.idempotency_key for a in arrivals] == [
        "topic/0/1", "topic/0/2..topic/3/7",
    ]
    for arrival in arrivals:
        # Logged to the millisecond, so a millisecond of leeway.
        assert arrival.answered_at_seconds >= sent_at + _DELAY_SECONDS - 1e-3
        assert arrival.answered_at_seconds <= finished_at + 1e-3


def test_a_request_without_a_key_is_logged_with_a_dash(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "arrivals.log"
    with SlowSinkServer(log_path, delay_seconds=0.0) as server:
        requests.post(server.url, data=b"{}", timeout=_TIMEOUT_SECONDS)

    [arrival] = ArrivalLog(log_path).read()
    assert arrival.idempotency_key == "-"


def test_it_closes_the_connection_when_the_client_asks(
    server: SlowSinkServer,
) -> None:
    with _connect(server) as connection:
        connection.sendall(_request("a", extra_headers="Connection: close\r\n"))
        [head] = _read_heads(connection, 1)
        after_answer = connection.recv(1)

    assert b"Connection: close" in head
    assert after_answer == b""


def test_a_request_it_cannot_read_gets_400_and_a_closed_connection(
    server: SlowSinkServer,
) -> None:
    with _connect(server) as connection:
        connection.sendall(
            b"POST /ingest HTTP/1.1\r\nContent-Length: many\r\n\r\n"
        )
        [head] = _read_heads(connection, 1)
        after_answer = connection.recv(1)

    assert head.startswith(b"HTTP/1.1 400 ")
    assert after_answer == b""


def test_a_taken_port_is_an_os_error(
    server: SlowSinkServer, tmp_path: Path
) -> None:
    second = SlowSinkServer(tmp_path / "second.log", port=server.port)

    with pytest.raises(OSError):
        second.start()


def test_as_a_process_it_serves_logs_and_stops_by_its_pid(
    tmp_path: Path,
) -> None:
    sink = SlowSink(tmp_path / "sink", delay_seconds=_DELAY_SECONDS)
    with sink:
        [pid] = sink.process_ids()
        response = requests.post(
            sink.url, data=b"{}", headers={"Idempotency-Key": "k/0/0"},
            timeout=_TIMEOUT_SECONDS,
        )

    assert response.status_code == 204
    assert [a.idempotency_key for a in sink.arrivals.read()] == ["k/0/0"]
    assert sink.process_ids() == []
    assert cpu_seconds(pid) is None
