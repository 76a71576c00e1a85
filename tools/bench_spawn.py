"""Running a measuring loop in several processes that start together.

A ceiling for a bridge of N processes has to come from N processes too:
one Python process runs its threads about one core's worth at a time. The
loops therefore run in processes started fresh ("spawn": a fork would copy
the bench's Kafka clients and their threads), each getting ready on its
own (imports, bodies, connections), then all released at once by a barrier
so that their clocks start together. Each returns a picklable result;
time.monotonic() is the same clock in every process on Linux, so their
start and end times can be compared.

The bench's own process waits at the start line too, and the loops wait
at a finish line after they have reported, so that the bench can look at
them (their CPU in /proc) just as they start and just before they exit.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any, Protocol, TypeVar

Result = TypeVar("Result")

# Time allowed for a process to start and get ready, besides its work.
_START_ALLOWANCE_SECONDS = 60.0
_FINISH_ALLOWANCE_SECONDS = 30.0
_JOIN_SECONDS = 10.0


class SpawnError(Exception):
    """A measuring process failed or did not finish in time."""


# In a measuring process: what to do once it has reported and passed the
# finish line.
_after_reporting: list[Callable[[], None]] = []


def after_reporting(cleanup: Callable[[], None]) -> None:
    """Leave a slow cleanup (a consumer's close, say) until the bench has
    taken its last look, so that it does not count as part of the loop."""
    _after_reporting.append(cleanup)


class LoopWatch(Protocol):
    """Told when the loops are released, and when all have reported."""

    def started(self) -> None: ...

    def ended(self) -> None: ...


@dataclass(frozen=True)
class _Lines:
    """The barriers every loop passes, with the bench's process."""

    start: Barrier
    finish: Barrier


def run_together(
    loop: Callable[..., Result],
    arguments: Sequence[tuple[Any, ...]],
    *,
    timeout_seconds: float,
    watch: LoopWatch | None = None,
) -> list[Result]:
    """Run loop(start_line, *args) in one process per tuple of arguments;
    their results, in the same order.

    `loop` must call start_line.wait() once it is ready to be timed.
    """
    context = multiprocessing.get_context("spawn")
    parties = len(arguments) + 1
    lines = _Lines(context.Barrier(parties), context.Barrier(parties))
    results: multiprocessing.Queue[tuple[int, Any, str | None]] = (
        context.Queue()
    )
    processes = [
        context.Process(
            target=_run_one,
            args=(loop, index, lines, results, args),
            name=f"bench-{getattr(loop, '__name__', 'loop')}-{index}",
        )
        for index, args in enumerate(arguments)
    ]
    for process in processes:
        process.start()
    try:
        return _watch_over(lines, results, len(processes), timeout_seconds,
                           watch)
    finally:
        lines.start.abort()
        lines.finish.abort()
        _end_all(processes)


def _watch_over(
    lines: _Lines,
    results: multiprocessing.Queue[tuple[int, Any, str | None]],
    count: int,
    timeout_seconds: float,
    watch: LoopWatch | None,
) -> list[Any]:
    with _unless_broken():
        lines.start.wait(_START_ALLOWANCE_SECONDS)
        if watch is not None:
            watch.started()

    collected = _collect(results, count, timeout_seconds)

    if watch is not None:
        watch.ended()
    with _unless_broken():
        lines.finish.wait(_FINISH_ALLOWANCE_SECONDS)
    return collected


def _unless_broken() -> contextlib.suppress:
    """Go on past a barrier that a failing loop broke: its result, or the
    lack of one, says what went wrong."""
    return contextlib.suppress(threading.BrokenBarrierError)


def _run_one(
    loop: Callable[..., Any],
    index: int,
    lines: _Lines,
    results: multiprocessing.Queue[tuple[int, Any, str | None]],
    args: tuple[Any, ...],
) -> None:
    # Ctrl-C reaches the whole process group; the parent ends this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        value = loop(lines.start, *args)
    except Exception as error:
        # The others must not wait at the barriers for this one.
        lines.start.abort()
        lines.finish.abort()
        results.put((index, None, f"{type(error).__name__}: {error}"))
    else:
        results.put((index, value, None))
        with _unless_broken():
            lines.finish.wait(_FINISH_ALLOWANCE_SECONDS)
    for cleanup in _after_reporting:
        cleanup()


def _collect(
    results: multiprocessing.Queue[tuple[int, Any, str | None]],
    count: int,
    timeout_seconds: float,
) -> list[Any]:
    deadline = time.monotonic() + timeout_seconds + _START_ALLOWANCE_SECONDS
    collected: dict[int, Any] = {}
    while len(collected) < count:
        try:
            index, value, failure = results.get(
                timeout=max(0.1, deadline - time.monotonic())
            )
        except queue.Empty:
            raise SpawnError(
                f"{count - len(collected)} of {count} measuring processes "
                f"did not finish within {timeout_seconds:.0f} s"
            ) from None
        if failure is not None:
            raise SpawnError(f"a measuring process failed: {failure}")
        collected[index] = value
    return [collected[index] for index in range(count)]


def _end_all(
    processes: Sequence[multiprocessing.process.BaseProcess],
) -> None:
    """Join each; one still alive is terminated by its PID."""
    for process in processes:
        process.join(_JOIN_SECONDS)
        if process.is_alive():
            process.terminate()
            process.join(_JOIN_SECONDS)
