"""A single-node Apache Kafka broker on loopback, for the demo and the tests.

kafka-bridge is only worth trusting when it runs against a real broker, and
such a broker should be one command away, without containers or a
system-wide install. This module gathers the Kafka jars from Maven Central
into a cache under the repository, formats a KRaft log directory and runs
one broker, which is also its own controller, as a background JVM. All of
the broker's state (configuration, data, log, PID and address) lives in one
state directory, so a later command, or another process, can find it.

From the shell::

    python tools/local_kafka.py start [--state-dir D] [--port P]
    python tools/local_kafka.py status|restart|stop [--state-dir D]
    python tools/local_kafka.py fetch

From Python::

    broker = LocalKafka(state_dir)
    bootstrap_servers = broker.start()
    broker.restart()
    broker.stop()

Needs a JDK 17 or newer and Maven on PATH (or Java in JAVA_HOME).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

KAFKA_VERSION = "4.1.1"
MINIMUM_JAVA_MAJOR = 17
LOOPBACK_HOST = "127.0.0.1"

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
POM_PATH = REPOSITORY_ROOT / "tools" / "kafka" / "pom.xml"
LOG_CONFIG_PATH = REPOSITORY_ROOT / "tools" / "kafka" / "log4j2.properties"
CACHE_DIR = REPOSITORY_ROOT / ".cache" / "kafka"
DEFAULT_LIBS_DIR = CACHE_DIR / f"libs-{KAFKA_VERSION}"
DEFAULT_STATE_DIR = CACHE_DIR / "run"

# Enough for the few topics of a demo or a test session, and small enough
# for a two-core laptop that also runs the bridge and its tests.
_BROKER_HEAP_OPTIONS = ("-Xms128m", "-Xmx512m")

_FETCH_TIMEOUT_SECONDS = 600.0
_FORMAT_TIMEOUT_SECONDS = 120.0
_JAVA_VERSION_TIMEOUT_SECONDS = 30.0
_READY_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 30.0
_KILL_TIMEOUT_SECONDS = 10.0
_PROBE_TIMEOUT_SECONDS = 1.0
_EXIT_CHECK_SECONDS = 0.2
_EXIT_POLL_SECONDS = 0.1
_PROBE_RECONNECT_BACKOFF_MAX_MS = 250
_OUTPUT_TAIL_LINES = 30

# The files of a state directory. stop() removes these and nothing else, so
# a state directory named by mistake (a home directory, say) loses nothing
# that was not the broker's.
_CONFIG_NAME = "server.properties"
_DATA_NAME = "data"
_LOG_NAME = "broker.log"
_PID_NAME = "broker.pid"
_BOOTSTRAP_NAME = "bootstrap_servers"

# Written into the jar directory after a complete copy; holds a digest of
# the pom so that a copy cut short, or made from another pom, is redone.
_COMPLETE_MARKER_NAME = ".complete"

_MAVEN_HINT = (
    "check that Maven Central (repo.maven.apache.org) is reachable, or that "
    "~/.m2/settings.xml names a mirror that is"
)

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_JAVA_STACK_FRAME = re.compile(r"\s+(at |\.\.\. \d+ more)")
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')

_log = logging.getLogger("local_kafka")


class LocalKafkaError(Exception):
    """The local broker could not be fetched, started or stopped."""


def parse_java_major(version_output: str) -> int:
    """Return the major version named in the output of ``java -version``.

    Java 8 and older call themselves "1.8"; later releases lead with the
    major number ("17.0.15").
    """
    match = _JAVA_VERSION.search(version_output)
    if match is None:
        raise LocalKafkaError(
            f"cannot read a Java version in the output of java -version: "
            f"{version_output.strip()!r}"
        )

    first, second = int(match.group(1)), match.group(2)
    if first == 1 and second is not None:
        return int(second)
    return first


def find_java() -> str:
    """Return the java command: JAVA_HOME's when set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        java = Path(java_home) / "bin" / "java"
        if not java.is_file():
            raise LocalKafkaError(
                f"JAVA_HOME is {java_home!r}, but {java} does not exist; "
                f"point JAVA_HOME at a JDK {MINIMUM_JAVA_MAJOR} or newer, "
                f"or unset it to use the java on PATH"
            )
        return str(java)

    found = shutil.which("java")
    if found is None:
        raise LocalKafkaError(
            f"java is not on PATH; install a JDK {MINIMUM_JAVA_MAJOR} or "
            f"newer (Debian: apt-get install openjdk-17-jdk-headless) or set "
            f"JAVA_HOME"
        )
    return found


def usable_java() -> str:
    """Return the java command after checking it is recent enough for Kafka."""
    java = find_java()
    result = _run([java, "-version"], _JAVA_VERSION_TIMEOUT_SECONDS)
    major = parse_java_major(result.stderr + result.stdout)

    if major < MINIMUM_JAVA_MAJOR:
        raise LocalKafkaError(
            f"Kafka {KAFKA_VERSION} needs Java {MINIMUM_JAVA_MAJOR} or newer, "
            f"but {java} is Java {major}; install a newer JDK and put it "
            f"first on PATH, or set JAVA_HOME to it"
        )
    return java


def fetch_jars(libs_dir: Path = DEFAULT_LIBS_DIR) -> Path:
    """Copy Kafka and its dependencies into libs_dir, unless already there.

    Maven keeps its own download cache in ~/.m2, so even a repeated copy
    costs seconds, not a download.
    """
    marker = libs_dir / _COMPLETE_MARKER_NAME
    expected_marker = _pom_digest()
    if _read_text(marker) == expected_marker:
        return libs_dir

    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "mvn is not on PATH; install Maven (Debian: apt-get install "
            "maven) to fetch the Kafka jars"
        )

    _log.info("fetching Kafka %s jars into %s", KAFKA_VERSION, libs_dir)
    _remove_jars(libs_dir)
    libs_dir.mkdir(parents=True, exist_ok=True)
    command = [
        mvn, "-q", "-B", "-f", str(POM_PATH),
        "dependency:copy-dependencies", f"-DoutputDirectory={libs_dir}",
    ]
    _run(command, _FETCH_TIMEOUT_SECONDS, hint=_MAVEN_HINT)

    marker.write_text(expected_marker)
    _log.info("Kafka jars fetched")
    return libs_dir


def find_free_ports(count: int) -> list[int]:
    """Return count distinct loopback ports that nothing listens on now.

    The ports are released before the broker binds them, so another program
    may take one in between; the broker then exits and start() says so.
    """
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((LOOPBACK_HOST, 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def new_cluster_id() -> str:
    """Return a random KRaft cluster id: a UUID in URL-safe base64.

    Kafka's own ids never start with a dash, which would read as an option
    on its command line, so a leading dash becomes another base64 letter.
    """
    encoded = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii")
    cluster_id = encoded.rstrip("=")
    if cluster_id.startswith("-"):
        return "A" + cluster_id[1:]
    return cluster_id


def broker_config(port: int, controller_port: int, data_dir: Path) -> str:
    """Return server.properties for one broker that is its own controller."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOOPBACK_HOST}:{controller_port}",
        "listeners": (
            f"PLAINTEXT://{LOOPBACK_HOST}:{port},"
            f"CONTROLLER://{LOOPBACK_HOST}:{controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK_HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        ),
        "log.dirs": str(data_dir),
        # Topics are created on purpose, as in production, so that a typo
        # in a topic name fails loudly instead of creating a new topic.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        # With one broker, every internal topic can only have one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Fifty offset partitions would make the first consumer group wait
        # for their creation; a local broker has few groups.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.num.partitions": "1",
        # Consumers in tests join one by one; waiting for more is wasted.
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class LocalKafka:
    """One local broker whose whole state lives in ``state_dir``.

    start() makes a fresh broker and stop() ends it and removes its state.
    halt() ends the process but keeps its ports and data, and resume() runs
    the same broker again, which is what an outage looks like to clients;
    restart() does both. Any LocalKafka on the same state directory, in
    this process or another, sees and controls the same broker.
    """

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        *,
        port: int | None = None,
        libs_dir: Path = DEFAULT_LIBS_DIR,
        ready_timeout_seconds: float = _READY_TIMEOUT_SECONDS,
        stop_timeout_seconds: float = _STOP_TIMEOUT_SECONDS,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.libs_dir = Path(libs_dir).resolve()
        self._port = port
        self._ready_timeout_seconds = ready_timeout_seconds
        self._stop_timeout_seconds = stop_timeout_seconds
        self._child: subprocess.Popen[bytes] | None = None

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
    def bootstrap_servers(self) -> str:
        """host:port of the broker, as recorded in the state directory."""
        address = _read_text(self._path(_BOOTSTRAP_NAME))
        if address is None:
            raise LocalKafkaError(
                f"no broker has been started in {self.state_dir}; "
                f"run start first"
            )
        return address

    @property
    def log_path(self) -> Path:
        """The broker's console output, kept across restarts."""
        return self._path(_LOG_NAME)

    def fetch(self) -> Path:
        """Make sure the Kafka jars are in the cache; return their folder."""
        return fetch_jars(self.libs_dir)

    def running_pid(self) -> int | None:
        """The PID of this state directory's broker if it runs, else None."""
        recorded = _read_text(self._path(_PID_NAME))
        if recorded is None or not recorded.isdigit():
            return None

        pid = int(recorded)
        if _pid_is_live(pid) and self._is_our_broker(pid):
            return pid
        return None

    def is_running(self) -> bool:
        """Whether this state directory's broker process is alive."""
        return self.running_pid() is not None

    def start(self) -> str:
        """Start a fresh broker and return its bootstrap address.

        When this state directory's broker already runs (and on the port
        asked for, if one was), it is kept and its address returned.
        Otherwise any state left by an earlier broker is discarded first.
        """
        if self.is_running():
            return self._address_of_running_broker()

        java = usable_java()
        self.fetch()
        self._remove_state()
        self._write_config()
        self._format_storage(java)

        self._launch(java)
        self._wait_until_ready()
        return self.bootstrap_servers

    def halt(self, *, graceful: bool = True) -> None:
        """End the broker process and keep its state for resume().

        Graceful means SIGTERM, so that Kafka closes its logs cleanly, then
        SIGKILL if it has not exited after stop_timeout_seconds. Otherwise
        SIGKILL at once, as in a crash.
        """
        pid = self.running_pid()
        if pid is not None:
            self._end_process(pid, graceful=graceful)

        self._path(_PID_NAME).unlink(missing_ok=True)
        self._forget_child()

    def resume(self) -> str:
        """Run the halted broker again, on its ports and with its data."""
        if self.is_running():
            return self.bootstrap_servers

        if not self._path(_CONFIG_NAME).is_file():
            raise LocalKafkaError(
                f"there is no broker to resume in {self.state_dir}; "
                f"run start first"
            )

        java = usable_java()
        self.fetch()
        self._launch(java)
        self._wait_until_ready()
        return self.bootstrap_servers

    def restart(self) -> str:
        """Stop the broker and run it again on the same port, keeping data."""
        self.halt()
        return self.resume()

    def stop(self) -> None:
        """End the broker and remove its state."""
        self.halt()
        self._remove_state()
        _log.info("broker state removed from %s", self.state_dir)

    def _path(self, name: str) -> Path:
        return self.state_dir / name

    def _address_of_running_broker(self) -> str:
        address = self.bootstrap_servers
        asked_for = f"{LOOPBACK_HOST}:{self._port}"
        if self._port is not None and address != asked_for:
            raise LocalKafkaError(
                f"a broker already runs from {self.state_dir} at {address}, "
                f"not at {asked_for}; stop it first, or use another state "
                f"directory"
            )

        _log.info("broker already running at %s", address)
        return address

    def _write_config(self) -> None:
        port, controller_port = self._choose_ports()
        data_dir = self._path(_DATA_NAME)
        config = broker_config(port, controller_port, data_dir)

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._path(_CONFIG_NAME).write_text(config)
        self._path(_BOOTSTRAP_NAME).write_text(f"{LOOPBACK_HOST}:{port}")

    def _choose_ports(self) -> tuple[int, int]:
        if self._port is None:
            port, controller_port = find_free_ports(2)
            return port, controller_port

        # Holding the asked-for port while picking the controller's keeps
        # the system from handing out the same one.
        with _bind_asked_for_port(self._port):
            (controller_port,) = find_free_ports(1)
        return self._port, controller_port

    def _format_storage(self, java: str) -> None:
        _log.info("formatting KRaft storage in %s", self._path(_DATA_NAME))
        command = [
            java, *_jvm_options(), "-cp", _classpath(self.libs_dir),
            "kafka.tools.StorageTool", "format",
            "-t", new_cluster_id(), "-c", str(self._path(_CONFIG_NAME)),
        ]
        _run(command, _FORMAT_TIMEOUT_SECONDS)

    def _launch(self, java: str) -> None:
        command = [
            java, *_BROKER_HEAP_OPTIONS, *_jvm_options(),
            "-cp", _classpath(self.libs_dir),
            "kafka.Kafka", str(self._path(_CONFIG_NAME)),
        ]

        # A session of its own keeps the broker out of the terminal's
        # process group: Ctrl-C on a later command does not reach it.
        with open(self.log_path, "ab") as log:
            self._child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
            )

        self._path(_PID_NAME).write_text(f"{self._child.pid}\n")
        _log.info(
            "broker starting at %s (pid %d, log %s)",
            self.bootstrap_servers, self._child.pid, self.log_path,
        )

    def _wait_until_ready(self) -> None:
        """Wait until the broker answers a metadata request.

        A JVM that exits meanwhile fails the start at once: that is how a
        bad configuration or a taken port shows itself. A broker that stays
        silent past the deadline is killed.
        """
        child = self._child
        assert child is not None, "_launch() sets the child"
        admin = AdminClient(_probe_config(self.bootstrap_servers))
        deadline = time.monotonic() + self._ready_timeout_seconds

        while time.monotonic() < deadline:
            if _exits_within(child, _EXIT_CHECK_SECONDS):
                self.halt()
                raise LocalKafkaError(
                    f"the broker exited with status {child.returncode} "
                    f"while starting; the end of {self.log_path}:\n"
                    f"{self._log_tail()}"
                )
            if _answers_metadata(admin):
                _log.info("broker ready at %s", self.bootstrap_servers)
                return

        self.halt(graceful=False)
        raise LocalKafkaError(
            f"the broker did not answer at {self.bootstrap_servers} within "
            f"{self._ready_timeout_seconds:.0f} s and was killed; the end of "
            f"{self.log_path}:\n{self._log_tail()}"
        )

    def _end_process(self, pid: int, *, graceful: bool) -> None:
        if graceful:
            _log.info("stopping broker (pid %d)", pid)
            _send_signal(pid, signal.SIGTERM)
            if self._exits_within(pid, self._stop_timeout_seconds):
                _log.info("broker stopped")
                return
            _log.warning(
                "broker did not stop within %.0f s; killing it",
                self._stop_timeout_seconds,
            )

        _send_signal(pid, signal.SIGKILL)
        if not self._exits_within(pid, _KILL_TIMEOUT_SECONDS):
            raise LocalKafkaError(
                f"broker pid {pid} is still alive after SIGKILL"
            )
        _log.info("broker killed (pid %d)", pid)

    def _exits_within(self, pid: int, timeout_seconds: float) -> bool:
        """Whether the broker exits within the timeout.

        Only the process that started the broker can wait for it; any other
        watches the PID.
        """
        child = self._child
        if child is not None and child.pid == pid:
            return _exits_within(child, timeout_seconds)

        deadline = time.monotonic() + timeout_seconds
        while _pid_is_live(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_EXIT_POLL_SECONDS)
        return True

    def _forget_child(self) -> None:
        # Waiting reaps a child that has exited, so no zombie is left.
        if self._child is not None and self._child.poll() is not None:
            self._child = None

    def _is_our_broker(self, pid: int) -> bool:
        """Whether pid runs kafka.Kafka on this state directory's config.

        A PID file can outlive its process, and the PID be given to another
        one; this keeps stop() from signalling a stranger. Without /proc
        (macOS), the PID file is trusted.
        """
        if not Path("/proc/self/cmdline").exists():
            return True

        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        config = os.fsencode(self._path(_CONFIG_NAME))
        return b"kafka.Kafka" in arguments and config in arguments

    def _remove_state(self) -> None:
        shutil.rmtree(self._path(_DATA_NAME), ignore_errors=True)
        for name in (_CONFIG_NAME, _LOG_NAME, _PID_NAME, _BOOTSTRAP_NAME):
            self._path(name).unlink(missing_ok=True)

        # Only an empty directory goes, in case it held other things too.
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

        # Java stack frames would push the line that names the cause (the
        # "Caused by:" of a taken port, say) out of the tail.
        lines = text.splitlines()
        kept = [line for line in lines if not _is_stack_frame(line)]
        return _tail("\n".join(kept))


def _jvm_options() -> list[str]:
    return [
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG_CONFIG_PATH}",
    ]


def _classpath(libs_dir: Path) -> str:
    # The JVM expands a trailing "*" itself, to every jar in the directory.
    return str(libs_dir / "*")


_ClientConfig = dict[str, str | int | float | bool]


def _probe_config(bootstrap_servers: str) -> _ClientConfig:
    return {
        "bootstrap.servers": bootstrap_servers,
        # The broker is expected to refuse connections for a while; the
        # default back-off would let it sit ready for seconds unnoticed.
        "reconnect.backoff.max.ms": _PROBE_RECONNECT_BACKOFF_MAX_MS,
        # Refused connections are expected until the broker listens, so
        # librdkafka's complaints about them would only be noise.
        "log_level": 0,
    }


def _answers_metadata(admin: AdminClient) -> bool:
    try:
        metadata = admin.list_topics(timeout=_PROBE_TIMEOUT_SECONDS)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def _exits_within(
    child: subprocess.Popen[bytes], timeout_seconds: float
) -> bool:
    try:
        child.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def _pid_is_live(pid: int) -> bool:
    """Whether pid names a running process; a zombie has stopped running.

    A broker started from the command line is adopted by init when that
    command exits, and not every init reaps at once, hence /proc.
    """
    if Path("/proc/self/stat").exists():
        stat = _read_text(Path(f"/proc/{pid}/stat"))
        if stat is None:
            return False
        state = stat.rpartition(")")[2].split()[0]
        return state != "Z"

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _send_signal(pid: int, signal_number: signal.Signals) -> None:
    # A process that exited on its own meanwhile is what we wanted anyway.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal_number)


def _bind_asked_for_port(port: int) -> socket.socket:
    """Bind the port a user asked for, or say why it cannot be used."""
    if not 1 <= port <= 65535:
        raise LocalKafkaError(
            f"--port must be between 1 and 65535, not {port}; leave it out "
            f"to pick a free one"
        )

    # SO_REUSEADDR as the broker sets it, so that connections of a broker
    # just stopped, still in TIME_WAIT, do not count as a taken port.
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((LOOPBACK_HOST, port))
    except OSError as error:
        probe.close()
        raise LocalKafkaError(
            f"--port {port} on {LOOPBACK_HOST} is not available ({error}); "
            f"choose another port, or leave it out to pick a free one"
        ) from error
    return probe


def _pom_digest() -> str:
    return hashlib.sha256(POM_PATH.read_bytes()).hexdigest()


def _remove_jars(libs_dir: Path) -> None:
    (libs_dir / _COMPLETE_MARKER_NAME).unlink(missing_ok=True)
    for jar in libs_dir.glob("*.jar"):
        jar.unlink()


def _run(
    command: Sequence[str], timeout_seconds: float, *, hint: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; if it fails, raise with its output's tail."""
    shown = shlex.join(command)
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise LocalKafkaError(
            f"{shown} did not finish within {timeout_seconds:.0f} s"
        ) from error

    if result.returncode != 0:
        advice = f"; {hint}" if hint else ""
        raise LocalKafkaError(
            f"{shown} failed with exit status {result.returncode}{advice}; "
            f"the end of its output:\n{_tail(result.stdout + result.stderr)}"
        )
    return result


def _tail(text: str) -> str:
    lines = _ANSI_ESCAPE.sub("", text).strip().splitlines()
    return "\n".join(lines[-_OUTPUT_TAIL_LINES:]) or "(no output)"


def _is_stack_frame(line: str) -> bool:
    return _JAVA_STACK_FRAME.match(line) is not None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _start_command(broker: LocalKafka) -> int:
    print(broker.start())
    return 0


def _stop_command(broker: LocalKafka) -> int:
    broker.stop()
    return 0


def _restart_command(broker: LocalKafka) -> int:
    print(broker.restart())
    return 0


def _status_command(broker: LocalKafka) -> int:
    pid = broker.running_pid()
    if pid is None:
        print("stopped")
        return 3  # "not running", as init scripts say it

    print(f"running {broker.bootstrap_servers} (pid {pid})")
    return 0


def _fetch_command(broker: LocalKafka) -> int:
    print(broker.fetch())
    return 0


_COMMANDS: dict[str, Callable[[LocalKafka], int]] = {
    "start": _start_command,
    "stop": _stop_command,
    "restart": _restart_command,
    "status": _status_command,
    "fetch": _fetch_command,
}


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="local_kafka",
        description=(
            f"Run a single-node Apache Kafka {KAFKA_VERSION} on loopback."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)

    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR,
        help="where the broker keeps its config, data, log and PID "
        "(default: %(default)s)",
    )

    start = commands.add_parser(
        "start", parents=[state],
        help="start a broker and print its bootstrap address",
    )
    start.add_argument(
        "--port", type=int, default=None,
        help="client port on 127.0.0.1 (default: a free one)",
    )
    commands.add_parser(
        "stop", parents=[state], help="stop it and remove its data"
    )
    commands.add_parser(
        "restart", parents=[state],
        help="stop it and start it again on the same port, keeping its data",
    )
    commands.add_parser("status", parents=[state], help="say whether it runs")
    commands.add_parser("fetch", help="only fetch the Kafka jars with Maven")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit status."""
    arguments = _parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="local_kafka: %(message)s")
    broker = LocalKafka(
        getattr(arguments, "state_dir", DEFAULT_STATE_DIR),
        port=getattr(arguments, "port", None),
    )

    try:
        return _COMMANDS[arguments.command](broker)
    except LocalKafkaError as error:
        print(f"local_kafka: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
