"""The fault proxy breaks real loopback connections the way it is told to.

Each test sends real HTTP through the proxy to a local API with
`requests`, and checks what the client sees and what reached the API.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.pipeline_support import wait_until
from tools.fault_proxy import (
    CloseOnAccept,
    FaultProxy,
    Latency,
    NeverAnswer,
    PassThrough,
    ResetMidResponse,
)
from tools.local_api import LocalApi

_SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "fault_proxy.py"
_TIMEOUT_SECONDS = 10.0
_WAIT_SECONDS = 10.0
_REQUEST = (
    b"POST /ingest HTTP/1.1\r\nHost: proxy\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


@pytest.fixture
def proxy(api: LocalApi) -> Iterator[FaultProxy]:
    running = FaultProxy(api.port).start()
    yield running
    assert running.stop(), "a proxy thread outlived stop()"


def _post(
    proxy: FaultProxy, read_timeout_seconds: float = _TIMEOUT_SECONDS
) -> requests.Response:
    """One POST on a connection of its own."""
    return requests.post(
        proxy.url("/ingest"),
        data=b'{"id": 1}',
        timeout=(_TIMEOUT_SECONDS, read_timeout_seconds),
    )


def _timed_post(proxy: FaultProxy) -> float:
    started = time.monotonic()
    _post(proxy).raise_for_status()
    return time.monotonic() - started


def _threads_of(proxy: FaultProxy) -> list[str]:
    prefix = proxy.thread_prefix
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


def test_without_a_fault_requests_and_answers_pass_through(
    proxy: FaultProxy, api: LocalApi
) -> None:
    response = _post(proxy)

    assert response.status_code == 200
    assert response.json() == {"status": 200}
    assert [r.body for r in api.received()] == [b'{"id": 1}']
    assert proxy.stats().injected == {"pass": 1}


def test_latency_per_connection_delays_the_exchange_by_at_least_that(
    proxy: FaultProxy,
) -> None:
    proxy.inject(Latency(0.3))

    elapsed = _timed_post(proxy)

    assert elapsed >= 0.3


def test_latency_per_chunk_delays_every_exchange_on_a_kept_connection(
    proxy: FaultProxy,
) -> None:
    proxy.inject(Latency(0.1, per_chunk=True))

    with requests.Session() as session:
        elapsed = []
        for _ in range(2):
            started = time.monotonic()
            session.post(
                proxy.url("/ingest"), data=b"{}", timeout=_TIMEOUT_SECONDS
            ).raise_for_status()
            elapsed.append(time.monotonic() - started)

    assert proxy.stats().accepted == 1
    assert min(elapsed) >= 0.1


def test_clear_ends_the_latency_of_open_connections(proxy: FaultProxy) -> None:
    # Far longer than the client waits: only clear() can let it through.
    proxy.inject(Latency(60.0, per_chunk=True))
    answers: list[int] = []
    client = threading.Thread(
        target=lambda: answers.append(_post(proxy).status_code)
    )
    client.start()
    assert wait_until(lambda: proxy.stats().accepted == 1, _WAIT_SECONDS)

    proxy.clear()
    client.join(_TIMEOUT_SECONDS + 1)

    assert answers == [200]


def test_close_on_accept_fails_the_request_before_the_api_sees_it(
    proxy: FaultProxy, api: LocalApi
) -> None:
    proxy.inject(CloseOnAccept())

    with pytest.raises(requests.ConnectionError):
        _post(proxy)

    assert api.received_count() == 0
    assert proxy.stats().injected == {"close": 1}


def test_a_reset_mid_response_fails_a_request_the_api_did_process(
    proxy: FaultProxy, api: LocalApi
) -> None:
    proxy.inject(ResetMidResponse(after_bytes=20))

    with pytest.raises(requests.ConnectionError):
        _post(proxy)

    assert api.received_count() == 1
    assert proxy.stats().resets == 1


def test_a_reset_comes_after_exactly_the_bytes_it_lets_through(
    proxy: FaultProxy,
) -> None:
    proxy.inject(ResetMidResponse(after_bytes=12))
    received = b""

    with socket.create_connection(("127.0.0.1", proxy.port)) as client:
        client.settimeout(_TIMEOUT_SECONDS)
        client.sendall(_REQUEST)
        with pytest.raises(ConnectionResetError):
            for _ in range(100):
                chunk = client.recv(1024)
                if not chunk:
                    break
                received += chunk

    assert received == b"HTTP/1.1 200"


def test_answers_within_the_byte_count_pass_untouched(
    proxy: FaultProxy,
) -> None:
    proxy.inject(ResetMidResponse(after_bytes=100_000))

    with requests.Session() as session:
        statuses = [
            session.post(
                proxy.url("/ingest"), data=b"{}", timeout=_TIMEOUT_SECONDS
            ).status_code
            for _ in range(2)
        ]

    assert statuses == [200, 200]
    assert proxy.stats().resets == 0


def test_never_answer_trips_the_clients_read_timeout(
    proxy: FaultProxy, api: LocalApi
) -> None:
    proxy.inject(NeverAnswer())

    with pytest.raises(requests.ReadTimeout):
        _post(proxy, read_timeout_seconds=0.3)

    assert api.received_count() == 0


def test_a_connection_never_answered_ends_when_its_client_closes_it(
    proxy: FaultProxy,
) -> None:
    proxy.inject(NeverAnswer())

    with socket.create_connection(("127.0.0.1", proxy.port)) as client:
        client.sendall(_REQUEST)
        assert wait_until(
            lambda: proxy.stats().open_connections == 1, _WAIT_SECONDS
        )

    assert wait_until(
        lambda: proxy.stats().open_connections == 0, _WAIT_SECONDS
    )


def test_a_counted_fault_applies_to_that_many_connections_only(
    proxy: FaultProxy,
) -> None:
    proxy.inject(CloseOnAccept(), connections=2)
    outcomes: list[int | None] = []

    for _ in range(3):
        try:
            outcomes.append(_post(proxy).status_code)
        except requests.ConnectionError:
            outcomes.append(None)

    assert outcomes == [None, None, 200]


def test_counted_faults_come_first_then_the_standing_one_until_clear(
    proxy: FaultProxy,
) -> None:
    proxy.inject(CloseOnAccept())
    proxy.inject(PassThrough(), connections=1)

    first = _post(proxy).status_code
    with pytest.raises(requests.ConnectionError):
        _post(proxy)
    proxy.clear()
    after_clear = _post(proxy).status_code

    assert (first, after_clear) == (200, 200)
    assert proxy.stats().injected == {"pass": 2, "close": 1}


def test_connections_beyond_the_limit_are_closed_at_once(
    api: LocalApi,
) -> None:
    with FaultProxy(api.port, max_connections=1) as proxy:
        proxy.inject(NeverAnswer(), connections=1)
        with socket.create_connection(("127.0.0.1", proxy.port)):
            assert wait_until(
                lambda: proxy.stats().open_connections == 1, _WAIT_SECONDS
            )
            with pytest.raises(requests.ConnectionError):
                _post(proxy)

        assert proxy.stats().refused == 1


def test_stop_ends_every_thread_and_closes_every_socket(
    api: LocalApi,
) -> None:
    proxy = FaultProxy(api.port).start()
    proxy.inject(NeverAnswer(), connections=1)
    proxy.inject(Latency(60.0))
    held = socket.create_connection(("127.0.0.1", proxy.port))
    delayed = socket.create_connection(("127.0.0.1", proxy.port))
    assert wait_until(
        lambda: proxy.stats().open_connections == 2, _WAIT_SECONDS
    )
    port = proxy.port

    try:
        stopped = proxy.stop()
        held.settimeout(_TIMEOUT_SECONDS)
        delayed.settimeout(_TIMEOUT_SECONDS)
        held_end, delayed_end = held.recv(1), delayed.recv(1)
    finally:
        held.close()
        delayed.close()

    assert stopped
    assert _threads_of(proxy) == []
    assert (held_end, delayed_end) == (b"", b"")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()


def test_stopping_twice_or_before_a_start_does_nothing(api: LocalApi) -> None:
    never_started = FaultProxy(api.port)
    proxy = FaultProxy(api.port).start()

    assert never_started.stop()
    assert proxy.stop()
    assert proxy.stop()


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: Latency(-1.0), "Latency.seconds"),
        (lambda: Latency(float("inf")), "Latency.seconds"),
        (lambda: ResetMidResponse(-5), "ResetMidResponse.after_bytes"),
        (lambda: FaultProxy(8080, host="0.0.0.0"), "host"),
        (lambda: FaultProxy(8080, upstream_host="10.0.0.1"), "upstream_host"),
        (lambda: FaultProxy(0), "upstream_port"),
        (lambda: FaultProxy(8080, max_connections=0), "max_connections"),
    ],
)
def test_bad_arguments_are_refused_with_the_setting_named(
    build: Callable[[], object], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        build()


def test_a_fault_for_no_connection_is_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="connections must be 1 or more"):
        proxy.inject(CloseOnAccept(), connections=0)


def test_the_command_line_proxy_applies_its_fault_and_stops_on_sigterm(
    api: LocalApi, tmp_path: Path
) -> None:
    ready_file = tmp_path / "proxy.port"
    command = [
        sys.executable, str(_SCRIPT), "--upstream-port", str(api.port),
        "--fault", "close", "--connections", "1",
        "--ready-file", str(ready_file),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert wait_until(ready_file.exists, _WAIT_SECONDS)
        url = f"http://127.0.0.1:{ready_file.read_text().strip()}/ingest"
        with pytest.raises(requests.ConnectionError):
            requests.post(url, data=b"{}", timeout=_TIMEOUT_SECONDS)
        second = requests.post(url, data=b"{}", timeout=_TIMEOUT_SECONDS)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=_TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=_TIMEOUT_SECONDS)

    assert second.status_code == 200
    assert code == 0
    assert not ready_file.exists()
