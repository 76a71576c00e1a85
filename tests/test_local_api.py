"""The local API that the demo and the tests deliver to, over real HTTP."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tools.local_api import LocalApi

_SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "local_api.py"
_TIMEOUT_SECONDS = 10.0


@pytest.fixture
def api() -> Iterator[LocalApi]:
    with LocalApi() as running:
        yield running


def _post(url: str, body: bytes = b'{"id": 1}') -> requests.Response:
    headers = {"Content-Type": "application/json"}
    return requests.post(
        url, data=body, headers=headers, timeout=_TIMEOUT_SECONDS
    )


def _statuses(api: LocalApi, count: int) -> list[int]:
    return [_post(api.url).status_code for _ in range(count)]


def test_a_post_is_recorded_with_its_path_body_and_headers(
    api: LocalApi,
) -> None:
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": "t-0-42",
    }
    requests.post(
        api.url, data=b'{"id": 7}', headers=headers, timeout=_TIMEOUT_SECONDS
    )

    [request] = api.received()
    assert request.path == "/ingest"
    assert request.body == b'{"id": 7}'
    assert request.json() == {"id": 7}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "t-0-42"
    assert request.answered_status == 200


def test_posts_to_any_path_are_recorded_in_arrival_order(api: LocalApi) -> None:
    _post(api.base_url + "/first", b"1")
    _post(api.base_url + "/second?x=1", b"2")

    assert [r.path for r in api.received()] == ["/first", "/second?x=1"]
    assert api.received_count() == 2


def test_the_default_answer_is_200_with_a_json_body(api: LocalApi) -> None:
    response = _post(api.url)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"status": 200}


def test_answers_are_http_1_1_with_a_content_length(api: LocalApi) -> None:
    with requests.Session() as session:
        responses = [
            session.post(api.url, data=b"{}", timeout=_TIMEOUT_SECONDS)
            for _ in range(2)
        ]

    assert all(r.raw.version == 11 for r in responses)
    assert all(
        r.headers["Content-Length"] == str(len(r.content)) for r in responses
    )
    assert all(r.headers.get("Connection") != "close" for r in responses)


def test_respond_with_a_count_answers_so_that_many_times_then_200(
    api: LocalApi,
) -> None:
    api.respond_with(503, count=2)

    assert _statuses(api, 3) == [503, 503, 200]
    assert [r.answered_status for r in api.received()] == [503, 503, 200]


def test_counted_answers_are_used_up_in_the_order_given(api: LocalApi) -> None:
    api.respond_with(503, count=1)
    api.respond_with(429, count=2)

    assert _statuses(api, 4) == [503, 429, 429, 200]


def test_respond_with_no_count_lasts_until_a_reset(api: LocalApi) -> None:
    api.respond_with(500)
    before_reset = _statuses(api, 3)
    api.reset_behaviour()

    assert before_reset == [500, 500, 500]
    assert _statuses(api, 1) == [200]


def test_retry_after_is_sent_when_asked_for(api: LocalApi) -> None:
    api.respond_with(429, count=1, retry_after="2")

    throttled = _post(api.url)
    plain = _post(api.url)

    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2"
    assert "Retry-After" not in plain.headers


def test_a_delay_holds_the_answer_back_at_least_that_long(
    api: LocalApi,
) -> None:
    delay_seconds = 0.2
    api.respond_with(200, count=1, delay_seconds=delay_seconds)

    started = time.monotonic()
    response = _post(api.url)
    elapsed_seconds = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed_seconds >= delay_seconds


def test_a_delayed_answer_does_not_hold_up_other_requests(
    api: LocalApi,
) -> None:
    api.respond_with(200, count=1, delay_seconds=60.0)
    outcome: list[object] = []
    slow = threading.Thread(
        target=_post_recording_outcome, args=(api.url, outcome)
    )
    slow.start()
    assert api.wait_for_count(1, _TIMEOUT_SECONDS)

    fast = _post(api.url)
    slow_still_waiting = slow.is_alive()
    api.stop()
    slow.join(_TIMEOUT_SECONDS)

    assert fast.status_code == 200
    assert slow_still_waiting
    assert not slow.is_alive()
    assert isinstance(outcome[0], requests.ConnectionError)


def _post_recording_outcome(url: str, outcome: list[object]) -> None:
    try:
        outcome.append(_post(url))
    except requests.RequestException as error:
        outcome.append(error)


def test_stop_ends_open_keep_alive_connections() -> None:
    api = LocalApi().start()
    with requests.Session() as session:
        first = session.post(api.url, data=b"{}", timeout=_TIMEOUT_SECONDS)
        api.stop()

        assert first.status_code == 200
        with pytest.raises(requests.ConnectionError):
            session.post(api.url, data=b"{}", timeout=_TIMEOUT_SECONDS)


def test_the_control_endpoint_sets_and_resets_behaviour(api: LocalApi) -> None:
    control = api.base_url + "/_control/"
    behaviour = {"status": 503, "count": 5, "retry_after": "2"}
    set_answer = requests.post(
        control + "behaviour", json=behaviour, timeout=_TIMEOUT_SECONDS
    )
    throttled = _post(api.url)
    reset_answer = requests.post(control + "reset", timeout=_TIMEOUT_SECONDS)

    assert set_answer.status_code == 200
    assert set_answer.json()["scheduled"][0]["remaining"] == 5
    assert throttled.status_code == 503
    assert throttled.headers["Retry-After"] == "2"
    assert reset_answer.json() == {"scheduled": [], "standing": None}
    assert _post(api.url).status_code == 200


def test_the_control_endpoint_rejects_a_bad_value_naming_it(
    api: LocalApi,
) -> None:
    answer = requests.post(
        api.base_url + "/_control/behaviour",
        json={"status": 503, "delay_seconds": -1},
        timeout=_TIMEOUT_SECONDS,
    )

    assert answer.status_code == 400
    assert "delay_seconds" in answer.json()["error"]
    assert _post(api.url).status_code == 200


def test_the_control_endpoint_rejects_an_unknown_field(api: LocalApi) -> None:
    answer = requests.post(
        api.base_url + "/_control/behaviour",
        json={"status": 503, "delay": 1},
        timeout=_TIMEOUT_SECONDS,
    )

    assert answer.status_code == 400
    assert "'delay'" in answer.json()["error"]


def test_received_reports_the_count_and_on_request_the_bodies(
    api: LocalApi,
) -> None:
    _post(api.url, b'{"id": 1}')
    _post(api.url, b"not json")
    received = api.base_url + "/_control/received"

    summary = requests.get(received, timeout=_TIMEOUT_SECONDS).json()
    detailed = requests.get(
        received, params={"bodies": "1"}, timeout=_TIMEOUT_SECONDS
    ).json()

    assert summary == {"count": 2, "recorded": 2}
    assert detailed["bodies"] == [{"id": 1}, "not json"]


def test_stats_count_the_answers_by_status(api: LocalApi) -> None:
    api.respond_with(503, count=1)
    _statuses(api, 3)

    stats = requests.get(
        api.base_url + "/_control/stats", timeout=_TIMEOUT_SECONDS
    ).json()

    assert stats["received"] == 3
    assert stats["answered"] == {"200": 2, "503": 1}
    assert stats["arrival_span_seconds"] >= 0


def test_control_requests_are_not_recorded_as_deliveries(api: LocalApi) -> None:
    control = api.base_url + "/_control/"
    behaviour = {"status": 200}
    requests.post(
        control + "behaviour", json=behaviour, timeout=_TIMEOUT_SECONDS
    )
    requests.post(control + "reset", timeout=_TIMEOUT_SECONDS)
    requests.get(control + "received", timeout=_TIMEOUT_SECONDS)
    requests.get(control + "stats", timeout=_TIMEOUT_SECONDS)

    assert api.received_count() == 0
    assert api.received() == []


def test_clear_received_forgets_the_deliveries(api: LocalApi) -> None:
    _statuses(api, 2)
    requests.post(
        api.base_url + "/_control/clear-received", timeout=_TIMEOUT_SECONDS
    )

    assert api.received_count() == 0
    assert api.received() == []


def test_wait_for_count_is_false_when_time_runs_out(api: LocalApi) -> None:
    _post(api.url)

    assert api.wait_for_count(2, timeout_seconds=0.05) is False


def test_wait_for_count_is_true_once_the_count_is_reached(
    api: LocalApi,
) -> None:
    sender = threading.Thread(target=_statuses, args=(api, 2))
    sender.start()

    reached = api.wait_for_count(2, timeout_seconds=_TIMEOUT_SECONDS)
    sender.join(_TIMEOUT_SECONDS)

    assert reached is True


def test_deliveries_beyond_max_recorded_are_counted_not_kept() -> None:
    with LocalApi(max_recorded=2) as api:
        _statuses(api, 3)

        assert api.received_count() == 3
        assert [r.body for r in api.received()] == [b'{"id": 1}'] * 2


def test_respond_with_rejects_a_status_outside_200_to_599(
    api: LocalApi,
) -> None:
    with pytest.raises(ValueError, match="status must be an HTTP status code"):
        api.respond_with(42)


def test_a_non_loopback_host_is_refused() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalApi(host="0.0.0.0")


def test_the_cli_refuses_a_non_loopback_host_with_exit_code_2() -> None:
    finished = subprocess.run(
        [sys.executable, str(_SCRIPT), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_SECONDS,
        check=False,
    )

    assert finished.returncode == 2
    assert "loopback" in finished.stderr


def test_the_cli_serves_until_sigterm_and_writes_the_ready_file(
    tmp_path: Path,
) -> None:
    ready_file = tmp_path / "port"
    command = [sys.executable, str(_SCRIPT), "--ready-file", str(ready_file)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            announcement = _first_line(process, _TIMEOUT_SECONDS)
            port = int(ready_file.read_text())
            answer = _post(f"http://127.0.0.1:{port}/ingest")
            process.send_signal(signal.SIGTERM)
            exit_code = process.wait(_TIMEOUT_SECONDS)
        finally:
            process.kill()

    assert announcement == f"listening on http://127.0.0.1:{port}\n"
    assert answer.status_code == 200
    assert exit_code == 0
    assert not ready_file.exists()


def _first_line(process: subprocess.Popen[str], timeout_seconds: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_seconds):
            raise TimeoutError(f"no output within {timeout_seconds} s")
    return process.stdout.readline()
