"""Structured logging for the bridge and for librdkafka through one path.

structlog renders every event as one JSON line by default, or readably on a
terminal. The standard library's logging is routed through the same
renderer, so librdkafka's own messages (handed to a stdlib logger) come out
in the same format and on the same stream.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor

from kafka_bridge.config import LoggingSettings

# librdkafka messages repeated within this window are logged once.
_REPEAT_WINDOW_SECONDS = 10.0
# Distinct messages remembered before the filter starts afresh.
_MAX_REMEMBERED = 1000

_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(
    settings: LoggingSettings,
    stream: TextIO | None = None,
    *,
    fields: Mapping[str, object] | None = None,
) -> None:
    """Set the level and renderer for structlog and the stdlib alike.

    `fields` go into every event, from every thread: the process index of
    a bridge under a supervisor, whose log shares a stream with others.
    """
    stream = stream or sys.stderr
    level = logging.getLevelName(settings.level)
    shared = [*_SHARED, _adding(fields)] if fields else _SHARED

    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_exception_renderer(settings, stream),
                _renderer(settings, stream),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    librdkafka = logging.getLogger("librdkafka")
    librdkafka.filters[:] = [RepeatFilter(_REPEAT_WINDOW_SECONDS)]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _adding(fields: Mapping[str, object]) -> Processor:
    def add_fields(
        logger: object, method: str, event: EventDict
    ) -> EventDict:
        for name, value in fields.items():
            event.setdefault(name, value)
        return event

    return add_fields


class RepeatFilter(logging.Filter):
    """Lets a message through once per window and counts the repeats.

    librdkafka reports every failed reconnect, many times a second while a
    broker is down; one line per window says the same and keeps the log
    readable. The next line that passes tells how many were held back.
    """

    def __init__(
        self, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._window_seconds = window_seconds
        self._clock = clock
        self._last_shown: dict[str, float] = {}
        self._held_back: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        now = self._clock()
        shown = self._last_shown.get(message)
        if shown is not None and now - shown < self._window_seconds:
            self._held_back[message] = self._held_back.get(message, 0) + 1
            return False

        self._last_shown[message] = now
        repeats = self._held_back.pop(message, 0)
        if repeats:
            record.msg = f"{message} (and {repeats} times more)"
            record.args = None
        if len(self._last_shown) > _MAX_REMEMBERED:
            self._last_shown.clear()
        return True


def _uses_console(settings: LoggingSettings, stream: TextIO) -> bool:
    if settings.format == "auto":
        return stream.isatty()
    return settings.format == "console"


def _renderer(settings: LoggingSettings, stream: TextIO) -> Processor:
    if _uses_console(settings, stream):
        return structlog.dev.ConsoleRenderer()
    return structlog.processors.JSONRenderer()


def _exception_renderer(
    settings: LoggingSettings, stream: TextIO
) -> list[Processor]:
    # The console renderer prints tracebacks itself; JSON needs them
    # turned into a field first.
    if _uses_console(settings, stream):
        return []
    return [structlog.processors.format_exc_info]
