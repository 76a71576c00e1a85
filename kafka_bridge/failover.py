"""Delivering one record: retries, Retry-After, breakers and failover.

A record is tried on the primary until it is accepted, refused for good,
or out of attempts there; then on the secondary. An endpoint whose circuit
breaker is open is skipped without costing the record any time, so a dead
primary sends traffic straight to the secondary, and the breaker's probe
brings it back once the primary answers again. A server that asks for a
pause with Retry-After gets it from every worker, not just the one that was
told. Each record has a total time budget over all endpoints; past it, or
once every endpoint has used up its attempts, the record is given up on and
the caller dead-letters it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from kafka_bridge import metrics
from kafka_bridge.breaker import BreakerState, CircuitBreaker
from kafka_bridge.delivery import AttemptOutcome, Endpoint, HttpSender
from kafka_bridge.retry import EndpointThrottle, RetryPolicy, parse_retry_after

log = structlog.get_logger(__name__)

# Statuses whose Retry-After asks the whole client to slow down.
_THROTTLING_STATUSES = frozenset({429, 503})


class Cancel(Protocol):
    """Anything a delivery can wait on that says "give up" once set."""

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(slots=True)
class Route:
    """An endpoint with the state all workers share for it."""

    endpoint: Endpoint
    breaker: CircuitBreaker
    throttle: EndpointThrottle = field(default_factory=EndpointThrottle)


@dataclass(slots=True)
class DeliveryReport:
    """How delivering one record ended.

    `delivered`: the API accepted it. Otherwise `cancelled` says the record
    was abandoned (revocation or shutdown) and must stay uncommitted; if
    not cancelled, it failed and `reason` says why: for good if not
    `retryable`, or because its time or attempts ran out.
    """

    delivered: bool = False
    cancelled: bool = False
    retryable: bool = True
    reason: str = ""
    attempts: int = 0
    last: AttemptOutcome | None = None
    first_failure_wall: float | None = None
    last_failure_wall: float | None = None

    def failed_attempt(self, outcome: AttemptOutcome) -> None:
        """Note a failed attempt and when it happened."""
        now = time.time()
        self.last = outcome
        self.last_failure_wall = now
        if self.first_failure_wall is None:
            self.first_failure_wall = now


class FailoverDelivery:
    """Delivers bodies through the routes, primary first, by the policy."""

    def __init__(
        self, sender: HttpSender, routes: list[Route], policy: RetryPolicy
    ) -> None:
        self._sender = sender
        self.routes = routes
        self._policy = policy
        for route in routes:
            route.breaker.on_change(_report_breaker)
            metrics.BREAKER_STATE.labels(route.endpoint.name).set(0)

    def deliver(
        self,
        body: bytes,
        idempotency_key: str,
        cancel: Cancel,
        *,
        content_type: str | None = None,
    ) -> DeliveryReport:
        """Try until accepted, refused for good, out of budget or cancelled.

        `cancel` is waited on between attempts: once it is set, the body is
        given up, uncommitted.
        """
        report = DeliveryReport()
        started = time.monotonic()
        attempts = [0] * len(self.routes)

        while True:
            index = self._pick(attempts)
            if index is None:
                if self._out_of_attempts(attempts, started):
                    report.reason = "attempts exhausted on every endpoint"
                    return report
                # Every endpoint left is behind an open breaker: wait for a
                # probe to be let through rather than give the record up.
                if cancel.wait(self._policy.next_delay(max(1, sum(attempts)))):
                    report.cancelled = True
                    return report
                continue

            route = self.routes[index]
            if cancel.wait(route.throttle.wait_seconds()):
                report.cancelled = True
                return report

            if index > 0 and attempts[index] == 0:
                metrics.FAILED_OVER.labels(route.endpoint.name).inc()
            attempts[index] += 1
            report.attempts += 1
            posted_at = time.monotonic()
            outcome = self._sender.post(
                route.endpoint, body, idempotency_key, content_type
            )
            metrics.child(metrics.ATTEMPT_SECONDS, route.endpoint.name).observe(
                time.monotonic() - posted_at
            )
            metrics.child(
                metrics.POSTED,
                route.endpoint.name,
                metrics.status_class(outcome.status),
            ).inc()

            if outcome.delivered:
                route.breaker.record_success()
                report.delivered = True
                report.last = outcome
                return report

            report.failed_attempt(outcome)
            verdict = self._policy.classify(outcome.status)
            if not verdict.retryable:
                # The endpoint answered, and sensibly: it is healthy, the
                # record is what it refuses.
                route.breaker.record_success()
                report.retryable = False
                report.reason = verdict.reason
                return report

            route.breaker.record_failure()
            self._honour_retry_after(route, outcome)
            elapsed = time.monotonic() - started
            if elapsed >= self._policy.max_elapsed_seconds:
                report.reason = (
                    f"gave up after {elapsed:.0f} s; last: {outcome.describe()}"
                )
                return report
            if self._policy.exhausted(attempts[index], elapsed):
                continue

            delay = self._policy.next_delay(
                attempts[index], _throttling_retry_after(outcome)
            )
            log.warning(
                "delivery_failed",
                error=outcome.describe(),
                reason=verdict.reason,
                endpoint=route.endpoint.name,
                attempt=report.attempts,
                retry_in_seconds=round(delay, 3),
            )
            metrics.RETRIED.labels(route.endpoint.name).inc()
            if cancel.wait(delay):
                report.cancelled = True
                return report

    def _pick(self, attempts: list[int]) -> int | None:
        """The first endpoint with attempts left whose breaker lets us in."""
        for index, route in enumerate(self.routes):
            if attempts[index] >= self._policy.max_attempts:
                continue
            if route.breaker.allow():
                return index
        return None

    def _out_of_attempts(self, attempts: list[int], started: float) -> bool:
        elapsed = time.monotonic() - started
        return elapsed >= self._policy.max_elapsed_seconds or all(
            count >= self._policy.max_attempts for count in attempts
        )

    def _honour_retry_after(
        self, route: Route, outcome: AttemptOutcome
    ) -> None:
        retry_after = _throttling_retry_after(outcome)
        if retry_after is None:
            return
        seconds = parse_retry_after(retry_after, time.time())
        if seconds is None:
            return
        route.throttle.hold_off(
            min(seconds, self._policy.max_retry_after_seconds)
        )


def _throttling_retry_after(outcome: AttemptOutcome) -> str | None:
    """Retry-After counts on 429 and 503, the statuses that define it as
    "come back later"; elsewhere it is ignored."""
    if outcome.status in _THROTTLING_STATUSES and outcome.retry_after:
        return outcome.retry_after
    return None


_STATE_VALUES = {
    BreakerState.CLOSED: 0,
    BreakerState.HALF_OPEN: 1,
    BreakerState.OPEN: 2,
}


def _report_breaker(name: str, state: BreakerState) -> None:
    metrics.BREAKER_STATE.labels(name).set(_STATE_VALUES[state])
    log.warning("breaker_changed", endpoint=name, state=state.value)
