"""The HTTP sender alone: what one POST carries and how it reports back."""

from __future__ import annotations

import pytest
import requests
import responses

from kafka_bridge.config import ApiSettings
from kafka_bridge.delivery import USER_AGENT, Endpoint, HttpSender

URL = "https://api.example.test/ingest?token=s3cret"
ENDPOINT = Endpoint("primary", URL)


def _sender(headers: dict[str, str] | None = None) -> HttpSender:
    settings = ApiSettings(primary_url=URL, headers=headers or {})
    return HttpSender(settings, pool_size=2)


@responses.activate
def test_each_post_carries_its_own_body_key_and_length() -> None:
    responses.post(URL, status=204)
    sender = _sender(headers={"Authorization": "Bearer abc"})

    sender.post(ENDPOINT, b'{"n":1}', "t/0/1")
    sender.post(ENDPOINT, b'{"n":22}', "t/0/2")

    first, second = (call.request for call in responses.calls)
    assert (first.body, second.body) == (b'{"n":1}', b'{"n":22}')
    assert first.headers["Idempotency-Key"] == "t/0/1"
    assert second.headers["Idempotency-Key"] == "t/0/2"
    assert second.headers["Content-Length"] == "8"
    assert second.headers["Content-Type"] == "application/json"
    assert second.headers["User-Agent"] == USER_AGENT
    assert second.headers["Authorization"] == "Bearer abc"


@responses.activate
def test_a_content_type_given_for_one_post_does_not_stick() -> None:
    responses.post(URL, status=204)
    sender = _sender()

    sender.post(ENDPOINT, b"{}\n{}\n", "t/0/0..t/0/1", "application/x-ndjson")
    sender.post(ENDPOINT, b"{}", "t/0/2")

    first, second = (call.request for call in responses.calls)
    assert first.headers["Content-Type"] == "application/x-ndjson"
    assert second.headers["Content-Type"] == "application/json"


@responses.activate
def test_a_redirect_is_reported_not_followed() -> None:
    responses.post(URL, status=307, headers={"Location": "https://x.test/"})

    outcome = _sender().post(ENDPOINT, b"{}", "k")

    assert outcome.status == 307 and not outcome.delivered
    assert len(responses.calls) == 1


@responses.activate
def test_retry_after_comes_back_with_the_status() -> None:
    responses.post(URL, status=429, headers={"Retry-After": "7"})

    outcome = _sender().post(ENDPOINT, b"{}", "k")

    assert (outcome.status, outcome.retry_after) == (429, "7")
    assert outcome.describe() == "HTTP 429"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (requests.ConnectTimeout("to " + URL), "connect timeout"),
        (requests.ReadTimeout("from " + URL), "read timeout"),
        (requests.ConnectionError("to " + URL), "connection failed"),
    ],
)
@responses.activate
def test_errors_are_named_by_kind_without_the_url(
    error: requests.RequestException, kind: str
) -> None:
    responses.post(URL, body=error)

    outcome = _sender().post(ENDPOINT, b"{}", "k")

    assert outcome.status is None
    assert outcome.describe() == kind
    assert "s3cret" not in outcome.describe()


def test_the_proxy_environment_is_read_once_not_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    sender = _sender()

    with responses.RequestsMock() as mocked:
        mocked.post(URL, status=204)
        sender.post(ENDPOINT, b"{}", "k")
        monkeypatch.setenv("HTTPS_PROXY", "http://other.example.test:3128")
        sender.post(ENDPOINT, b"{}", "k2")
        proxies = [
            call.request.req_kwargs["proxies"]  # type: ignore[attr-defined]
            for call in mocked.calls
        ]

    assert proxies == [{"https": "http://proxy.example.test:3128"}] * 2
