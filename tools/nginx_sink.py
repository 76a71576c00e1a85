"""An nginx on loopback that answers 204 to every POST, for `make bench`.

A benchmark of the bridge needs an API that is never the slowest part, or
it measures the API. A Python server saturates long before the bridge does;
nginx, with one worker, answers far more requests per second than a Python
client can send. It keeps connections alive, discards the bodies without
writing them to disk, and logs for each request only the time it was
answered and its Idempotency-Key header: enough to count deliveries, find
duplicates and time each record from produce to POST.

nginx runs in the foreground under our own process with a configuration
generated into a work directory, so it touches nothing of a system-wide
nginx; stop() ends it by its PID.

From Python::

    with NginxSink(work_dir) as sink:
        post_to(sink.url)
        arrivals = sink.arrivals.read()

From the shell, serving until Ctrl-C::

    python tools/nginx_sink.py [--work-dir D] [--port P]

Needs nginx; as root on Debian it is installed with apt-get when missing.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.local_kafka import find_free_ports  # noqa: E402
from tools.procfs import children_of  # noqa: E402

LOOPBACK_HOST = "127.0.0.1"
INGEST_PATH = "/ingest"
DEBIAN_PACKAGE = "nginx-light"

# Where Debian puts nginx; not on PATH for every user.
_SYSTEM_NGINX = Path("/usr/sbin/nginx")

_INSTALL_TIMEOUT_SECONDS = 600.0
_READY_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 10.0
_KILL_TIMEOUT_SECONDS = 5.0
_READY_POLL_SECONDS = 0.05
_VERSION_TIMEOUT_SECONDS = 10.0
_ERROR_LOG_TAIL_LINES = 20

_CONFIG_NAME = "nginx.conf"
_ARRIVALS_NAME = "arrivals.log"
_ERROR_LOG_NAME = "error.log"
_PID_NAME = "nginx.pid"
_STDERR_NAME = "stderr.log"

# One line per request: when nginx answered it (seconds since the epoch,
# to the millisecond) and its Idempotency-Key ("-" when it had none).
_CONFIG_TEMPLATE = """\
{user_line}daemon off;
master_process on;
worker_processes 1;
pid {prefix}/{pid_name};
error_log {prefix}/{error_log_name} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    log_format arrivals '$msec $http_idempotency_key';

    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    server {{
        listen {host}:{port} backlog=512;
        keepalive_requests 1000000;
        keepalive_timeout 75s;
        # Large enough that a record's body never goes to a temp file.
        client_body_buffer_size 64k;
        client_max_body_size 16m;

        location / {{
            access_log {prefix}/{arrivals_name} arrivals buffer=64k flush=1s;
            return 204;
        }}
    }}
}}
"""


class NginxSinkError(Exception):
    """nginx could not be found, installed, started or stopped."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request as nginx logged it."""

    answered_at_seconds: float
    idempotency_key: str


class ArrivalLog:
    """Reads the sink's access log from where the last read stopped.

    nginx writes its buffer at least once a second, so a request shows up
    in the file up to a second after it was answered; the time logged is
    the time it was answered all the same.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read(self) -> list[Arrival]:
        """The requests logged since the previous read, in file order."""
        try:
            with self.path.open("rb") as log_file:
                log_file.seek(self._offset)
                chunk = log_file.read()
        except FileNotFoundError:
            return []

        # A line still being written is left for the next read.
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        return [_parse_line(line) for line in complete.splitlines() if line]


class NginxSink:
    """One nginx master with one worker, answering 204 on loopback."""

    def __init__(self, work_dir: Path, *, port: int | None = None) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.port = port or find_free_ports(1)[0]
        self.arrivals = ArrivalLog(self.work_dir / _ARRIVALS_NAME)
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Where to POST; every path answers the same."""
        return f"http://{LOOPBACK_HOST}:{self.port}{INGEST_PATH}"

    @property
    def pid(self) -> int | None:
        """The nginx master's PID while it runs."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def process_ids(self) -> list[int]:
        """The master's PID and its workers', while it runs."""
        master = self.pid
        if master is None:
            return []
        return [master, *children_of(master)]

    def start(self) -> str:
        """Start nginx, wait until it accepts connections; return the URL."""
        nginx = find_nginx()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config_path = self._write_config()

        # nginx writes to stderr only what comes before its error log opens.
        with (self.work_dir / _STDERR_NAME).open("wb") as stderr:
            self._process = subprocess.Popen(
                [nginx, "-c", str(config_path), "-p", str(self.work_dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            self._wait_until_listening()
        except BaseException:
            # Ctrl-C while waiting, too: nobody else knows the PID yet.
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """End nginx: a graceful quit, which writes out the log buffer;
        SIGKILL for the master and its workers if it does not exit."""
        process = self._process
        if process is None:
            return

        workers = children_of(process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            _kill(process, workers)
        self._process = None

    def error_log_tail(self) -> str:
        """The last lines nginx wrote to its error log and stderr."""
        lines: list[str] = []
        for name in (_ERROR_LOG_NAME, _STDERR_NAME):
            with contextlib.suppress(OSError):
                text = (self.work_dir / name).read_text(errors="replace")
                lines.extend(text.splitlines())
        return "\n".join(lines[-_ERROR_LOG_TAIL_LINES:]) or "(nothing)"

    def _write_config(self) -> Path:
        path = self.work_dir / _CONFIG_NAME
        path.write_text(
            _CONFIG_TEMPLATE.format(
                user_line=_user_line(),
                prefix=self.work_dir,
                host=LOOPBACK_HOST,
                port=self.port,
                pid_name=_PID_NAME,
                error_log_name=_ERROR_LOG_NAME,
                arrivals_name=_ARRIVALS_NAME,
            )
        )
        return path

    def _wait_until_listening(self) -> None:
        """Bounded wait for the port; an nginx that exits fails at once."""
        process = self._process
        assert process is not None, "start() launches the process first"
        pause = threading.Event()
        deadline = time.monotonic() + _READY_TIMEOUT_SECONDS

        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._process = None
                raise NginxSinkError(
                    f"nginx exited with status {process.returncode} while "
                    f"starting; its error log:\n{self.error_log_tail()}"
                )
            if _accepts_connections(self.port):
                return
            pause.wait(_READY_POLL_SECONDS)

        raise NginxSinkError(
            f"nginx did not listen on {LOOPBACK_HOST}:{self.port} within "
            f"{_READY_TIMEOUT_SECONDS:.0f} s; its error log:\n"
            f"{self.error_log_tail()}"
        )


def find_nginx() -> str:
    """The nginx command; installed with apt-get, as root, when missing."""
    found = _located_nginx()
    if found is not None:
        return found

    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise NginxSinkError(
            f"nginx is not installed; install it (Debian or Ubuntu: sudo "
            f"apt-get install {DEBIAN_PACKAGE}) and run again"
        )

    _install_nginx()
    found = _located_nginx()
    if found is None:
        raise NginxSinkError(
            f"apt-get installed {DEBIAN_PACKAGE}, but no nginx command is "
            f"on PATH or at {_SYSTEM_NGINX}; check the package's files with "
            f"dpkg -L {DEBIAN_PACKAGE}"
        )
    return found


def nginx_version() -> str:
    """What `nginx -v` says, such as "nginx/1.22.1"."""
    result = subprocess.run(
        [find_nginx(), "-v"],
        capture_output=True,
        text=True,
        timeout=_VERSION_TIMEOUT_SECONDS,
        check=False,
    )
    output = (result.stderr or result.stdout).strip()
    return output.rpartition("version: ")[2] or output


def _located_nginx() -> str | None:
    found = shutil.which("nginx")
    if found is not None:
        return found
    if _SYSTEM_NGINX.is_file():
        return str(_SYSTEM_NGINX)
    return None


def _install_nginx() -> None:
    """apt-get install; if that fails, refresh the package lists once and
    try again, since a fresh machine often has none."""
    print(f"nginx is missing; installing {DEBIAN_PACKAGE} with apt-get")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", DEBIAN_PACKAGE]

    if _apt_get(install, environment).returncode == 0:
        return
    _apt_get(["apt-get", "update", "-q"], environment)
    result = _apt_get(install, environment)
    if result.returncode != 0:
        raise NginxSinkError(
            f"apt-get install {DEBIAN_PACKAGE} failed with status "
            f"{result.returncode}:\n{result.stdout[-2000:]}\n"
            f"install nginx by hand and run again"
        )


def _apt_get(
    command: list[str], environment: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_INSTALL_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise NginxSinkError(
            f"{' '.join(command)} did not finish within "
            f"{_INSTALL_TIMEOUT_SECONDS:.0f} s; install nginx by hand"
        ) from error


def _user_line() -> str:
    """A `user` directive when running as root, else nothing.

    A root master starts its workers as an unprivileged user; nginx's
    built-in choice, "nobody" in group "nobody", has no such group on
    Debian, so the group is looked up.
    """
    if os.geteuid() != 0:
        return ""
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    return f"user nobody {group};\n"


def _parse_line(line: bytes) -> Arrival:
    seconds, _, key = line.decode("ascii", "replace").partition(" ")
    return Arrival(float(seconds), key)


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _kill(process: subprocess.Popen[bytes], workers: list[int]) -> None:
    # A worker outlives a killed master, so each is killed by its PID.
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
    process.kill()
    try:
        process.wait(timeout=_KILL_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as error:
        raise NginxSinkError(
            f"nginx pid {process.pid} is still alive after SIGKILL"
        ) from error


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; print the URL and the access log's path."""
    parser = argparse.ArgumentParser(
        prog="nginx_sink",
        description="Run nginx on loopback answering 204 to every POST.",
    )
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--port", type=int, default=None)
    arguments = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        work_dir = arguments.work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="sink-"))
        )
        try:
            sink = NginxSink(work_dir, port=arguments.port)
            stack.enter_context(sink)
        except NginxSinkError as error:
            print(f"nginx_sink: error: {error}", file=sys.stderr)
            return 1

        print(f"{sink.url} (access log {sink.arrivals.path}); Ctrl-C stops")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
