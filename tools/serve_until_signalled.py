"""Running a local test server as a process until SIGTERM or SIGINT.

The local API and the fault proxy both run as processes for tests that
steer them from outside; they start, say where they listen, and stop on a
signal in the same way.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path


def serve_until_signalled(
    start: Callable[[], object],
    stop: Callable[[], bool | None],
    *,
    port: Callable[[], int],
    url: Callable[[], str],
    address: str,
    ready_file: Path | None,
) -> int:
    """Start, announce, wait for SIGTERM or SIGINT, stop; an exit code.

    The signals are blocked before any thread starts, so that every thread
    inherits the mask and only this thread's sigwait receives them.
    """
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        start()
    except OSError as error:
        print(f"error: cannot listen on {address}: {error}", file=sys.stderr)
        return 1

    try:
        _announce(port(), url(), ready_file)
        signal.sigwait(stop_signals)
    finally:
        stopped = stop()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
    return 0 if stopped is not False else 1


def _announce(port: int, url: str, ready_file: Path | None) -> None:
    if ready_file is not None:
        # Written whole and then renamed, so a reader never sees half a port.
        partial = ready_file.with_name(ready_file.name + ".partial")
        partial.write_text(f"{port}\n")
        partial.replace(ready_file)
    print(f"listening on {url}", flush=True)
