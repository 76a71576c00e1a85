"""How far a replay has got, shown while it runs.

A replay of a large dead-letter topic at a gentle rate takes a while; an
operator wants to see it move. On a terminal a bar is redrawn in place.
Elsewhere (a job, a file, a pipe) the stream is a log, so progress goes
into it as a log event now and then, in the log's own format, rather than
as redraws or as lines a JSON log reader could not parse.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

import structlog

log = structlog.get_logger(__name__)

_BAR_CELLS = 30
# A terminal is redrawn at most this often; a log gets an event this often.
_REDRAW_SECONDS = 0.1
_LOG_EVERY_SECONDS = 10.0


class ReplayProgress:
    """Letters read out of the total to read, and how many were sent out
    (`verb` says how: `replayed`, or `selected` in a dry run)."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        *,
        verb: str = "replayed",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total = total
        self._stream = stream
        self._verb = verb
        self._clock = clock
        self._on_terminal = stream.isatty()
        self._shown_at: float | None = None
        self._shown: tuple[int, int] | None = None

    def update(self, read: int, sent: int) -> None:
        """Show the new counts, if it is time to."""
        now = self._clock()
        interval = _REDRAW_SECONDS if self._on_terminal else _LOG_EVERY_SECONDS
        if self._shown_at is not None and now - self._shown_at < interval:
            return
        self._shown_at = now
        self._show(read, sent)

    def finish(self, read: int, sent: int) -> None:
        """Show the final counts, unless they are shown already, and end
        the bar's line."""
        if self._shown is None and self._total == 0:
            return
        if self._shown != (read, sent):
            self._show(read, sent)
        if self._on_terminal:
            self._stream.write("\n")
            self._stream.flush()

    def _show(self, read: int, sent: int) -> None:
        self._shown = (read, sent)
        if not self._on_terminal:
            log.info(
                "dlq_replay_progress",
                letters_read=read,
                letters_to_read=self._total,
                **{self._verb: sent},
            )
            return
        self._stream.write("\r" + self._bar(read, sent))
        self._stream.flush()

    def _bar(self, read: int, sent: int) -> str:
        fraction = min(1.0, read / self._total) if self._total else 1.0
        filled = round(fraction * _BAR_CELLS)
        cells = "#" * filled + "-" * (_BAR_CELLS - filled)
        return (
            f"[{cells}] {fraction:4.0%}  {read}/{self._total} letters, "
            f"{sent} {self._verb}"
        )
