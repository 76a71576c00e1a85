"""Structured logging for the bridge and for librdkafka through one path.

structlog renders every event as one JSON line by default, or readably on a
terminal. The standard library's logging is routed through the same
renderer, so librdkafka's own messages (handed to a stdlib logger) come out
in the same format and on the same stream.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import Processor

from kafka_bridge.config import LoggingSettings

_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(
    settings: LoggingSettings, stream: TextIO | None = None
) -> None:
    """Set the level and renderer for structlog and the stdlib alike."""
    stream = stream or sys.stderr
    level = logging.getLevelName(settings.level)

    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
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

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


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
