"""POSTing request bodies to the API through one shared `requests` session.

The session's connection pool is sized to the worker count, so each worker
keeps a warm keep-alive connection; every request has explicit (connect,
read) timeouts and follows no redirect, since a redirected POST would either
lose its body or deliver it somewhere nobody configured.

Per request, `requests` spends more CPU than the network does: a plain
`Session.post` reads the proxy environment twice, merges session settings
and prepares headers, about half of its cost on a small POST. None of that
changes between records, so each endpoint's request is prepared once and
every POST copies it, sets its body and key, and goes through
`Session.send`, which keeps the session's adapters, hooks and cookie jar.
The environment (proxies, `REQUESTS_CA_BUNDLE`) is therefore read once,
like the rest of the configuration, and cookies the API sets are not sent
back: an ingest API that needs a sticky-session cookie is not supported.

This module makes single attempts and reports what came back; deciding
whether and where to try again is `failover`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from kafka_bridge.config import ApiSettings
from kafka_bridge.version import __version__

USER_AGENT = f"kafka-bridge/{__version__}"

# Errors are described by kind, never by requests' message, which quotes
# the URL (and so any token in its query string).
_ERROR_KINDS: tuple[tuple[type[requests.RequestException], str], ...] = (
    (requests.ConnectTimeout, "connect timeout"),
    (requests.ReadTimeout, "read timeout"),
    (requests.exceptions.SSLError, "TLS error"),
    (requests.exceptions.ChunkedEncodingError, "connection broken mid-answer"),
    (requests.ConnectionError, "connection failed"),
)


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
    retry_after: str | None = None

    @property
    def delivered(self) -> bool:
        """The API accepted the record (any 2xx answer)."""
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        """A short reason for logs: `HTTP 503` or the kind of error."""
        if self.status is not None:
            return f"HTTP {self.status}"
        return self.error or "no answer"


class HttpSender:
    """One `requests` session shared by all workers; one POST per call."""

    def __init__(self, settings: ApiSettings, pool_size: int) -> None:
        self._timeout = (
            settings.connect_timeout_seconds,
            settings.read_timeout_seconds,
        )
        self._session = _session(settings, pool_size)
        self._targets: dict[str, _Target] = {}

    def post(
        self,
        endpoint: Endpoint,
        body: bytes,
        idempotency_key: str,
        content_type: str | None = None,
    ) -> AttemptOutcome:
        """POST the body once and report the answer or the error.

        The session sends `Content-Type: application/json`; batches in
        another format name theirs.
        """
        target = self._target(endpoint.url)
        request = target.prepared.copy()
        request.body = body
        request.headers["Content-Length"] = str(len(body))
        request.headers["Idempotency-Key"] = idempotency_key
        if content_type is not None:
            request.headers["Content-Type"] = content_type
        try:
            response = self._session.send(
                request,
                timeout=self._timeout,
                allow_redirects=False,
                **target.send_options,
            )
        except requests.RequestException as error:
            return AttemptOutcome(endpoint, None, _kind_of(error))

        # Reading the body lets the connection go back to the pool.
        _ = response.content
        response.close()
        return AttemptOutcome(
            endpoint,
            response.status_code,
            retry_after=response.headers.get("Retry-After"),
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def _target(self, url: str) -> _Target:
        # Two workers may prepare the same URL at once; either copy serves.
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _Target.of(self._session, url)
        return target


@dataclass(frozen=True, slots=True)
class _Target:
    """A POST to one URL, prepared once: what `Session.post` would build
    for every request, from the session's headers, auth and environment."""

    prepared: requests.PreparedRequest
    send_options: dict[str, Any]

    @classmethod
    def of(cls, session: requests.Session, url: str) -> _Target:
        prepared = session.prepare_request(requests.Request("POST", url))
        options = session.merge_environment_settings(
            url, proxies={}, stream=None, verify=None, cert=None
        )
        return cls(prepared, dict(options))


def endpoints(settings: ApiSettings) -> list[Endpoint]:
    """The configured endpoints, primary first."""
    found = [Endpoint("primary", settings.primary_url)]
    if settings.secondary_url:
        found.append(Endpoint("secondary", settings.secondary_url))
    return found


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


def _kind_of(error: requests.RequestException) -> str:
    for error_class, kind in _ERROR_KINDS:
        if isinstance(error, error_class):
            return kind
    return type(error).__name__
