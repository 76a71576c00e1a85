"""POSTing request bodies to the API through one shared `requests` session.

The session's connection pool is sized to the worker count, so each worker
keeps a warm keep-alive connection; every request has explicit (connect,
read) timeouts and follows no redirect, since a redirected POST would either
lose its body or deliver it somewhere nobody configured.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from kafka_bridge.config import ApiSettings
from kafka_bridge.version import __version__

USER_AGENT = f"kafka-bridge/{__version__}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A named target URL: `primary` or `secondary`."""

    name: str
    url: str


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one POST came back with: a status, or the error that stopped it."""

    endpoint: Endpoint
    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        """The API accepted the record (any 2xx answer)."""
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        """A short reason for logs: `HTTP 503` or the error's class."""
        if self.status is not None:
            return f"HTTP {self.status}"
        return self.error or "no answer"


class HttpDelivery:
    """Sends one body per POST to the configured endpoints.

    Each attempt tries the primary and then, if one is configured and the
    primary did not accept the record, the secondary.
    """

    def __init__(self, settings: ApiSettings, pool_size: int) -> None:
        self._timeout = (
            settings.connect_timeout_seconds,
            settings.read_timeout_seconds,
        )
        self.endpoints = [Endpoint("primary", settings.primary_url)]
        if settings.secondary_url:
            self.endpoints.append(
                Endpoint("secondary", settings.secondary_url)
            )
        self._session = _session(settings, pool_size)

    def attempt(self, body: bytes, idempotency_key: str) -> AttemptOutcome:
        """POST to each endpoint in turn until one accepts the body."""
        headers = {"Idempotency-Key": idempotency_key}
        outcome = None
        for endpoint in self.endpoints:
            outcome = self._post(endpoint, body, headers)
            if outcome.delivered:
                break
        assert outcome is not None
        return outcome

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def _post(
        self, endpoint: Endpoint, body: bytes, headers: dict[str, str]
    ) -> AttemptOutcome:
        try:
            response = self._session.post(
                endpoint.url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            return AttemptOutcome(endpoint, None, _describe(error))

        # Reading the body lets the connection go back to the pool.
        _ = response.content
        response.close()
        return AttemptOutcome(endpoint, response.status_code)


def _session(settings: ApiSettings, pool_size: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=2, pool_maxsize=pool_size, max_retries=0
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **settings.headers,
        }
    )
    return session


def _describe(error: requests.RequestException) -> str:
    """The error's class and its first line: no URL query, no body."""
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line}"[:300]
