"""Find promtool, installing Debian's `prometheus` package when it is missing.

The alert rules in chart/prometheus_alerts.yaml are checked and unit-tested
with promtool, Prometheus's own command-line tool. It is a Go program, not a
Python package, so the virtualenv cannot provide it. On Debian and Ubuntu it
comes with the `prometheus` package; this command installs that package when
it runs as root and promtool is not on PATH, and otherwise says what to do.

From the shell::

    python tools/promtool.py        # prints promtool's path, exit 1 if none

From Python::

    path = ensure_promtool()        # raises PromtoolUnavailable with the fix
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

PROMTOOL = "promtool"
DEBIAN_PACKAGE = "prometheus"

_APT_UPDATE_TIMEOUT_SECONDS = 300.0
_APT_INSTALL_TIMEOUT_SECONDS = 900.0
_MANUAL_FIX = (
    "install promtool and put it on PATH: `apt-get install prometheus` on "
    "Debian or Ubuntu, or the prometheus release archive from "
    "https://prometheus.io/download/ (promtool is in it)"
)


class PromtoolUnavailable(Exception):
    """promtool is not on PATH and could not be installed."""


def find_promtool() -> str | None:
    """The path of promtool on PATH, or None."""
    return shutil.which(PROMTOOL)


def ensure_promtool() -> str:
    """The path of promtool, installing Debian's package first if needed."""
    found = find_promtool()
    if found is not None:
        return found

    _check_can_install()
    _install_package()

    found = find_promtool()
    if found is None:
        raise PromtoolUnavailable(
            f"the {DEBIAN_PACKAGE} package is installed but {PROMTOOL} is "
            f"still not on PATH ({os.environ.get('PATH', '')}); {_MANUAL_FIX}"
        )
    return found


def _check_can_install() -> None:
    if shutil.which("apt-get") is None:
        raise PromtoolUnavailable(
            f"{PROMTOOL} is not on PATH and apt-get is not available to "
            f"install it; {_MANUAL_FIX}"
        )
    if os.geteuid() != 0:
        raise PromtoolUnavailable(
            f"{PROMTOOL} is not on PATH and installing the {DEBIAN_PACKAGE} "
            f"package needs root; run `sudo apt-get install "
            f"{DEBIAN_PACKAGE}`, or {_MANUAL_FIX}"
        )


def _install_package() -> None:
    """apt-get install, refreshing the package lists first when apt does
    not know the package, or once more when the install fails on lists that
    point at files the mirror no longer has."""
    updated = False
    if not _apt_knows_package():
        _apt_get("update", timeout_seconds=_APT_UPDATE_TIMEOUT_SECONDS)
        updated = True

    install = ("install", "-y", "--no-install-recommends", DEBIAN_PACKAGE)
    try:
        _apt_get(*install, timeout_seconds=_APT_INSTALL_TIMEOUT_SECONDS)
    except PromtoolUnavailable:
        if updated:
            raise
        _apt_get("update", timeout_seconds=_APT_UPDATE_TIMEOUT_SECONDS)
        _apt_get(*install, timeout_seconds=_APT_INSTALL_TIMEOUT_SECONDS)


def _apt_knows_package() -> bool:
    result = subprocess.run(
        ["apt-cache", "show", DEBIAN_PACKAGE],
        capture_output=True,
        timeout=_APT_UPDATE_TIMEOUT_SECONDS,
        check=False,
    )
    return result.returncode == 0


def _apt_get(*arguments: str, timeout_seconds: float) -> None:
    command = ["apt-get", "-q", *arguments]
    print(f"running: {' '.join(command)}", file=sys.stderr)
    # Non-interactive so that a configuration question never hangs a build.
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = subprocess.run(
            command,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise PromtoolUnavailable(
            f"`{' '.join(command)}` did not finish within "
            f"{timeout_seconds:.0f} s; {_MANUAL_FIX}"
        ) from error

    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise PromtoolUnavailable(
            f"`{' '.join(command)}` failed with exit code "
            f"{result.returncode}:\n{output}\n{_MANUAL_FIX}"
        )


def main() -> int:
    try:
        path = ensure_promtool()
    except PromtoolUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
