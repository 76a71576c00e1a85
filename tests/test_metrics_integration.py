"""The metrics endpoint tells the truth: scraped over HTTP during a real run."""

from __future__ import annotations

import pytest
import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from kafka_bridge.bridge import Bridge
from tests.conftest import NewTopicFactory
from tests.pipeline_support import (
    WAIT_SECONDS,
    bridge_settings,
    produce,
    read_topic,
    running,
    wait_until,
)
from tools.local_api import LocalApi
from tools.local_kafka import find_free_ports

METRICS = {"enabled": True, "host": "127.0.0.1", "port": 0}


def _get(bridge: Bridge, path: str) -> requests.Response:
    return requests.get(
        f"http://127.0.0.1:{bridge.metrics_port}{path}", timeout=5
    )


def _scrape(bridge: Bridge) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on /metrics, keyed by name and labels."""
    text = _get(bridge, "/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and wanted <= sample_labels
    )


def test_readyz_answers_503_until_the_bridge_is_assigned() -> None:
    (unused_port,) = find_free_ports(1)
    settings = bridge_settings(
        f"127.0.0.1:{unused_port}",
        "nowhere",
        "http://127.0.0.1:9/ingest",
        metrics=METRICS,
        pipeline={"shutdown_deadline_seconds": 2},
    )
    bridge = Bridge(settings)
    bridge.start()
    try:
        ready = _get(bridge, "/readyz")
        healthy = _get(bridge, "/healthz")
        exposed = _get(bridge, "/metrics")
    finally:
        bridge.stop()

    assert ready.status_code == 503
    assert "not assigned" in ready.text
    assert healthy.status_code == 200
    assert "kafka_bridge_build_info" in exposed.text


@pytest.mark.kafka
def test_the_counters_match_what_happened(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    standby: LocalApi,
) -> None:
    topic, dlq = new_topic(2), new_topic(1)
    poison = {index: b"{broken" for index in (3, 11, 17, 29)}
    produced = produce(kafka_bootstrap, topic, 40, values=poison)
    # The first record POSTed fails twice on the primary: one retry, then
    # a failover to the secondary.
    api.respond_with(503, count=2)
    retried_before = REGISTRY.get_sample_value(
        "kafka_bridge_messages_retried_total", {"endpoint": "primary"}
    ) or 0.0
    failed_over_before = REGISTRY.get_sample_value(
        "kafka_bridge_messages_failed_over_total", {"endpoint": "secondary"}
    ) or 0.0
    settings = bridge_settings(
        kafka_bootstrap,
        topic,
        api.url,
        metrics=METRICS,
        api={
            "secondary_url": standby.url,
            "retry": {
                "initial_backoff_seconds": 0.01,
                "max_backoff_seconds": 0.05,
                "max_attempts": 2,
            },
        },
        kafka={
            "consumer": {
                "statistics.interval.ms": 500,
                "heartbeat.interval.ms": 500,
            }
        },
        dlq={"topic": dlq},
        pipeline={"workers": 1, "ordering": "partition"},
    )

    with running(settings) as bridge:
        assert _get(bridge, "/readyz").status_code == 200
        assert len(read_topic(kafka_bootstrap, dlq, 4, WAIT_SECONDS)) == 4
        assert wait_until(
            lambda: _total(
                _scrape(bridge), "kafka_bridge_consumer_lag", topic=topic
            )
            == 0
            and _total(
                _scrape(bridge), "kafka_bridge_committed_offset", topic=topic
            )
            == len(produced)
        )
        samples = _scrape(bridge)

    consumed = _total(samples, "kafka_bridge_messages_consumed_total", topic=topic)
    delivered = _total(
        samples, "kafka_bridge_messages_delivered_total", topic=topic
    )
    dead_lettered = _total(
        samples, "kafka_bridge_messages_dead_lettered_total", topic=topic
    )
    dropped = _total(samples, "kafka_bridge_dlq_limiter_drops_total", topic=topic)
    assert consumed == len(produced) == delivered + dead_lettered + dropped
    assert (delivered, dead_lettered) == (36, 4)
    assert _total(
        samples, "kafka_bridge_messages_retried_total", endpoint="primary"
    ) == retried_before + 1
    assert _total(
        samples,
        "kafka_bridge_messages_failed_over_total",
        endpoint="secondary",
    ) == failed_over_before + 1
    assert _total(
        samples,
        "kafka_bridge_messages_posted_total",
        endpoint="primary",
        status_class="5xx",
    ) >= 2
