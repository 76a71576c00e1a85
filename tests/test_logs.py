"""librdkafka's repeated messages are logged once per window."""

from __future__ import annotations

import logging

from kafka_bridge.logs import RepeatFilter
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
