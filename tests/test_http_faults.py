"""Nothing is lost when the network between the bridge and the API breaks.

The bridge delivers to a local API through the fault proxy, which slows
the connections down, closes them as they open, resets them in the middle
of an answer, or accepts them and never answers. Each scenario injects one
fault before the bridge starts, lifts it once it has bitten, and then
checks that every record is accounted for: delivered to the API, and
committed. The retry budget is set far beyond the length of a test, so a
transient fault must dead-letter nothing, and the dead-letter topic must
stay empty.

A record reaches the API twice only when the API processed it and its
answer was lost on the way back: the proxy counts the answers it cut, and
the API's extra receptions must match that count exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import NewTopicFactory
from tests.pipeline_support import (
    WAIT_SECONDS,
    Produced,
    bridge_settings,
    committed_offsets,
    committed_total,
    ids_received,
    produce,
    record_count,
    running,
    wait_until,
)
from tools.fault_proxy import (
    CloseOnAccept,
    Fault,
    FaultProxy,
    Latency,
    NeverAnswer,
    ProxyStats,
    ResetMidResponse,
)
from tools.local_api import LocalApi

pytestmark = pytest.mark.kafka

RECORDS = 300
PARTITIONS = 2
WORKERS = 4
# Retries outlast any test: a transient fault must never dead-letter.
PATIENT_RETRY = {
    "initial_backoff_seconds": 0.01,
    "max_backoff_seconds": 0.1,
    "max_attempts": 10_000,
    "max_elapsed_seconds": 600,
}
# The fault opens the breaker; its probe should find the API soon after.
QUICK_BREAKER = {"failure_threshold": 5, "cool_down_seconds": 0.2}
# Long enough that a slow but healthy answer is never cut by the client.
PATIENT_READ_TIMEOUT_SECONDS = 5.0
# Short, so that a connection never answered costs the test little.
SHORT_READ_TIMEOUT_SECONDS = 0.5
# Faults that apply to a number of connections use this many.
FAULTY_CONNECTIONS = 20


@pytest.fixture
def proxy(api: LocalApi) -> Iterator[FaultProxy]:
    """A fault proxy in front of the local API, passing through for now."""
    running_proxy = FaultProxy(api.port).start()
    yield running_proxy
    assert running_proxy.stop(), "a proxy thread outlived stop()"


@dataclass(frozen=True)
class Outcome:
    """What a run through a fault left behind."""

    produced: list[Produced]
    received_ids: list[str]
    committed: dict[int, int]
    dead_letters: int
    proxy: ProxyStats

    @property
    def expected_ids(self) -> set[str]:
        return {p.record_id for p in self.produced}

    @property
    def extra_receptions(self) -> int:
        """Receptions beyond the first of each record."""
        counts = Counter(self.received_ids)
        return sum(count - 1 for count in counts.values())

    @property
    def end_offsets(self) -> dict[int, int]:
        return {
            partition: 1 + max(
                p.offset for p in self.produced if p.partition == partition
            )
            for partition in range(PARTITIONS)
        }


def _run_through(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    proxy: FaultProxy,
    fault: Fault,
    *,
    connections: int | None,
    lift_when: Callable[[], bool],
    read_timeout_seconds: float = PATIENT_READ_TIMEOUT_SECONDS,
) -> Outcome:
    """Produce, inject the fault, run the bridge until `lift_when` holds,
    lift the fault, and wait until every record is delivered and
    committed."""
    topic, dlq = new_topic(PARTITIONS), new_topic(1)
    produced = produce(kafka_bootstrap, topic, RECORDS)
    proxy.inject(fault, connections)
    settings = bridge_settings(
        kafka_bootstrap,
        topic,
        proxy.url("/ingest"),
        api={
            "read_timeout_seconds": read_timeout_seconds,
            "retry": PATIENT_RETRY,
            "breaker": QUICK_BREAKER,
        },
        dlq={"topic": dlq},
        pipeline={"workers": WORKERS, "shutdown_deadline_seconds": 10},
    )
    expected = {p.record_id for p in produced}

    with running(settings):
        assert wait_until(lift_when, WAIT_SECONDS), proxy.stats()
        proxy.clear()
        assert wait_until(lambda: expected <= set(_ids(api)))
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, settings, topic)
            == RECORDS
        )

    return Outcome(
        produced=produced,
        received_ids=_ids(api),
        committed=committed_offsets(
            kafka_bootstrap, settings.kafka.group_id, topic, PARTITIONS
        ),
        dead_letters=record_count(kafka_bootstrap, dlq),
        proxy=proxy.stats(),
    )


def _ids(api: LocalApi) -> list[str]:
    return ids_received([request.json() for request in api.received()])


def _injected(proxy: FaultProxy, kind: str) -> int:
    return proxy.stats().injected.get(kind, 0)


def test_added_latency_delays_records_but_loses_none(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    proxy: FaultProxy,
) -> None:
    outcome = _run_through(
        kafka_bootstrap,
        new_topic,
        api,
        proxy,
        Latency(0.02, per_chunk=True),
        connections=None,
        # A sixth of the records go through the slow network.
        lift_when=lambda: api.received_count() >= RECORDS // 6,
    )

    assert outcome.proxy.injected.get("latency", 0) >= 1
    assert sorted(outcome.received_ids) == sorted(outcome.expected_ids)
    assert outcome.dead_letters == 0
    assert outcome.committed == outcome.end_offsets


def test_connections_closed_on_accept_lose_nothing(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    proxy: FaultProxy,
) -> None:
    outcome = _run_through(
        kafka_bootstrap,
        new_topic,
        api,
        proxy,
        CloseOnAccept(),
        connections=FAULTY_CONNECTIONS,
        lift_when=lambda: _injected(proxy, "close") == FAULTY_CONNECTIONS,
    )

    # The API never saw the closed attempts: each record arrived once.
    assert sorted(outcome.received_ids) == sorted(outcome.expected_ids)
    assert outcome.dead_letters == 0
    assert outcome.committed == outcome.end_offsets


def test_resets_mid_response_duplicate_only_the_answers_they_cut(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    proxy: FaultProxy,
) -> None:
    outcome = _run_through(
        kafka_bootstrap,
        new_topic,
        api,
        proxy,
        # 20 bytes: the status line is cut, after the API has processed
        # the request.
        ResetMidResponse(after_bytes=20),
        connections=FAULTY_CONNECTIONS,
        lift_when=lambda: proxy.stats().resets == FAULTY_CONNECTIONS,
    )

    assert outcome.proxy.resets == FAULTY_CONNECTIONS
    assert set(outcome.received_ids) == outcome.expected_ids
    assert outcome.extra_receptions == outcome.proxy.resets
    assert outcome.dead_letters == 0
    assert outcome.committed == outcome.end_offsets


def test_a_server_that_never_answers_costs_read_timeouts_not_records(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    proxy: FaultProxy,
) -> None:
    outcome = _run_through(
        kafka_bootstrap,
        new_topic,
        api,
        proxy,
        NeverAnswer(),
        connections=None,
        # More connections than workers: they timed out and came back.
        lift_when=lambda: _injected(proxy, "never-answer") >= 2 * WORKERS,
        read_timeout_seconds=SHORT_READ_TIMEOUT_SECONDS,
    )

    # Nothing sent to the silent server reached the API.
    assert sorted(outcome.received_ids) == sorted(outcome.expected_ids)
    assert outcome.dead_letters == 0
    assert outcome.committed == outcome.end_offsets
