"""The librdkafka consumer settings the bridge builds: its defaults, the
user's overrides, and the keys it owns."""

from __future__ import annotations

from typing import Any

from kafka_bridge.bridge import consumer_config
from kafka_bridge.config import Settings, settings_from_mapping


def _settings(**kafka: Any) -> Settings:
    return settings_from_mapping(
        {
            "kafka": {
                "bootstrap_servers": "127.0.0.1:9092",
                "group_id": "g",
                "topics": ["t"],
                **kafka,
            },
            "api": {"primary_url": "http://127.0.0.1:8080/"},
        },
        environ={},
    )


def test_the_consumer_prefetches_a_bounded_amount_by_default() -> None:
    config = consumer_config(_settings())

    assert config["queued.max.messages.kbytes"] == 16384
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False


def test_a_users_consumer_setting_overrides_the_default() -> None:
    settings = _settings(consumer={"queued.max.messages.kbytes": 4096})

    assert consumer_config(settings)["queued.max.messages.kbytes"] == 4096

