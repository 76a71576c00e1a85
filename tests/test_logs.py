"""librdkafka's repeated messages are logged once per window."""

from __future__ import annotations

import io
import json
import logging

import structlog

from kafka_bridge.config import LoggingSettings
from kafka_bridge.logs import RepeatFilter, configure_logging
from tests.manual_clock import ManualClock


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", logging.ERROR, "", 0, message, None, None)


def test_a_message_repeated_within_the_window_is_held_back(
    clock: ManualClock,
) -> None:
    repeats = RepeatFilter(10.0, clock)

    shown = [repeats.filter(_record("broker down")) for _ in range(5)]

    assert shown == [True, False, False, False, False]


def test_after_the_window_the_message_shows_how_often_it_was_held_back(
    clock: ManualClock,
) -> None:
    repeats = RepeatFilter(10.0, clock)
    for _ in range(4):
        repeats.filter(_record("broker down"))
    clock.now += 10.0
    record = _record("broker down")

    shown = repeats.filter(record)

    assert shown
    assert record.getMessage() == "broker down (and 3 times more)"


def test_different_messages_are_not_held_back(clock: ManualClock) -> None:
    repeats = RepeatFilter(10.0, clock)

    shown = [repeats.filter(_record(f"broker {n} down")) for n in range(3)]

    assert shown == [True, True, True]


def test_fields_given_at_configuration_are_in_every_event_of_every_source(
    restore_logging: None,
) -> None:
    """A supervised bridge names its process in each line, its own events
    and the standard library's (librdkafka's) alike."""
    stream = io.StringIO()
    configure_logging(
        LoggingSettings(level="INFO", format="json"),
        stream,
        fields={"process": 1, "pid": 4242},
    )

    structlog.get_logger("kafka_bridge").info("bridge_started", workers=8)
    logging.getLogger("librdkafka").warning("broker down")

    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [event["event"] for event in events] == [
        "bridge_started", "broker down",
    ]
    assert all(
        (event["process"], event["pid"]) == (1, 4242) for event in events
    )
