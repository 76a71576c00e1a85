"""The `kafka-bridge` command line: run the daemon, check a configuration,
replay dead letters.

Exit codes are part of the interface, for systemd and Kubernetes alike:
0 after a clean stop, 1 for a fatal runtime error, 2 for a bad
configuration or bad usage. `dlq-replay` also exits 1 when a letter it
selected was not delivered.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from kafka_bridge.config import Settings, load_settings, render_masked
from kafka_bridge.errors import BridgeError, ConfigError, ConfigProblem
from kafka_bridge.replay_filters import STAGES
from kafka_bridge.version import __version__

if TYPE_CHECKING:
    from kafka_bridge.replay import Replay, ReplayOptions

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

CONFIG_ENV = "KAFKA_BRIDGE_CONFIG"

# Gentle enough for an API that has just recovered; --rate raises it.
DEFAULT_REPLAY_RATE_PER_SECOND = 10.0

_RUN_EXAMPLE = """\
examples:
  kafka-bridge run --config /etc/kafka-bridge/config.yaml
  KAFKA_BRIDGE_CONFIG=config.yaml kafka-bridge run
  # one bridge process per CPU, all in the configured consumer group
  kafka-bridge run --config config.yaml --processes auto

Runs in the foreground until SIGTERM or SIGINT, then finishes the records
in flight, commits and exits 0. A second signal exits at once. With
--processes, a supervisor passes signals on, restarts a crashed process
after a backoff, exits 1 when one keeps crashing, and serves the metrics
of all of them on the metrics port. See docs/processes.md.
"""

_CHECK_EXAMPLE = """\
example:
  kafka-bridge check-config --config config.yaml

Prints the effective configuration with every secret masked; exits 0 if it
is valid, 2 with one line per problem if not.
"""

_REPLAY_EXAMPLE = """\
examples:
  # what would be replayed, counted by stage, error class and status
  kafka-bridge dlq-replay --config config.yaml --to-api --dry-run \\
      --since 2025-05-01T10:00:00Z --status 503
  # deliver those records to the API again, 5 a second
  kafka-bridge dlq-replay --config config.yaml --to-api --rate 5 \\
      --since 2025-05-01T10:00:00Z --status 503
  # publish records refused for good back to their original topics
  kafka-bridge dlq-replay --config config.yaml --to-topic --error-class Refused

Reads dlq.topic from where the replay group (dlq.replay.group_id) stopped
up to the end it has at start. SIGTERM or SIGINT stops after the record in
flight; the same command resumes. Exits 0 when every letter selected was
delivered; 1 when one failed or came back to the DLQ, when interrupted, or
on a runtime error; 2 for a bad configuration or command line.
Times are ISO 8601 with a UTC offset, compared with when a record last
failed. See docs/replay.md.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with our code 2 and a hint."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.stderr.write(f"run '{self.prog} --help' for an example\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The command's parser with its subcommands."""
    parser = _Parser(
        prog="kafka-bridge",
        description="Deliver Apache Kafka records, transformed, to an HTTP "
        "API, losing nothing.",
        epilog="example:\n  kafka-bridge run --config config.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"kafka-bridge {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    for name, help_text, example in (
        ("run", "run the bridge until SIGTERM or SIGINT", _RUN_EXAMPLE),
        ("check-config", "validate a configuration and print it, "
         "secrets masked", _CHECK_EXAMPLE),
        ("dlq-replay", "send dead letters out again once their cause is "
         "fixed", _REPLAY_EXAMPLE),
    ):
        command = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=example,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_config_option(command)
        if name == "run":
            _add_process_options(command)
        if name == "dlq-replay":
            _add_replay_options(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `kafka-bridge`; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "dlq-replay" and args.topic and not args.to_topic:
        parser.error("--topic names the topic of --to-topic; add --to-topic")
    try:
        settings = _load(args.config)
    except ConfigError as error:
        return _invalid_configuration(error)

    if args.command == "check-config":
        return _check_config(settings)
    if args.command == "dlq-replay":
        return _replay(settings, args)
    if args.processes > 1:
        return _supervise(settings, args)
    return _run(settings)


def _invalid_configuration(error: ConfigError) -> int:
    sys.stderr.write(f"kafka-bridge: invalid configuration\n{error}\n")
    return EXIT_USAGE


def run_alias() -> int:
    """Entry point of `kafka-consumer`, kept for existing deployments."""
    return main(["run", *sys.argv[1:]])


def _add_config_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get(CONFIG_ENV),
        help=f"the YAML configuration file (default: ${CONFIG_ENV})",
    )


def _load(path: str | None) -> Settings:
    if not path:
        raise ConfigError([ConfigProblem(
            "--config",
            rule="required",
            value="(none)",
            fix=f"pass --config PATH or set {CONFIG_ENV}",
        )])
    return load_settings(path)


def _add_process_options(command: argparse.ArgumentParser) -> None:
    from kafka_bridge.supervisor import RestartPolicy

    defaults = RestartPolicy()
    command.add_argument(
        "--processes", metavar="N", type=_process_count, default=1,
        help="bridge processes to run in the consumer group: a count, or "
        "'auto' for one per usable CPU (default: 1, no supervisor)",
    )
    command.add_argument(
        "--max-restarts", metavar="N", type=_non_negative_int,
        default=defaults.max_restarts,
        help="with --processes: crashes in a row of one process before "
        "the supervisor gives up and exits 1 (default: %(default)s)",
    )
    command.add_argument(
        "--restart-backoff", metavar="SECONDS", type=_positive_float,
        default=defaults.initial_backoff_seconds,
        help="with --processes: wait before the first restart, doubled "
        "with each crash in a row (default: %(default)s)",
    )


def _process_count(value: str) -> int:
    from kafka_bridge.supervisor import process_count

    try:
        return process_count(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a count of processes; give a whole number "
            "of at least 1, or 'auto' for one per CPU"
        ) from None


def _non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a whole number of at least 0"
        )
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of seconds above 0"
        )
    return number


def _check_config(settings: Settings) -> int:
    """What `run` would refuse at start-up, short of reaching the broker
    and the API; the settings, secrets masked, when it would refuse none."""
    # Imported here so that --help stays light.
    from kafka_bridge.bridge import check_settings

    try:
        check_settings(settings)
    except ConfigError as error:
        return _invalid_configuration(error)
    sys.stdout.write(render_masked(settings))
    return EXIT_OK


def _run(settings: Settings) -> int:
    # Imported here so that --help stays light.
    from kafka_bridge.bridge import Bridge
    from kafka_bridge.logs import configure_logging
    from kafka_bridge.supervisor import (
        process_fields,
        supervised_settings,
        watch_supervisor,
    )

    configure_logging(settings.logging, fields=process_fields())
    log = structlog.get_logger("kafka_bridge")
    log.info("configuration", **settings.masked())

    try:
        bridge = Bridge(supervised_settings(settings))
    except ConfigError as error:
        return _invalid_configuration(error)
    _install_signal_handlers(bridge.request_stop)
    watch_supervisor(bridge.request_stop)
    return bridge.run()


def _supervise(settings: Settings, args: argparse.Namespace) -> int:
    from kafka_bridge.logs import configure_logging
    from kafka_bridge.supervisor import RestartPolicy, Supervisor

    configure_logging(settings.logging)
    structlog.get_logger("kafka_bridge").info(
        "configuration", **settings.masked()
    )
    policy = RestartPolicy(
        initial_backoff_seconds=args.restart_backoff,
        max_restarts=args.max_restarts,
    )
    try:
        supervisor = Supervisor(
            settings, args.config, args.processes, policy=policy
        )
    except ConfigError as error:
        return _invalid_configuration(error)
    _install_signal_handlers(supervisor.request_stop, exit_on_second=False)
    return supervisor.run()


def _add_replay_options(command: argparse.ArgumentParser) -> None:
    target = command.add_argument_group("target (one of the two)")
    where = target.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--to-api", action="store_true",
        help="deliver through the API, as the bridge does, with the "
        "original Idempotency-Key",
    )
    where.add_argument(
        "--to-topic", action="store_true",
        help="publish to the original topic, or to --topic",
    )
    target.add_argument(
        "--topic", metavar="NAME",
        help="with --to-topic: the topic to publish to; it must be in "
        "kafka.topics or dlq.replay.allowed_topics",
    )

    selection = command.add_argument_group(
        "filters (a letter must pass all; a repeated option takes any)"
    )
    selection.add_argument(
        "--since", metavar="TIME",
        help="last failure at or after TIME (ISO 8601 with offset)",
    )
    selection.add_argument(
        "--until", metavar="TIME", help="last failure before TIME"
    )
    selection.add_argument(
        "--partition", metavar="N", type=int,
        help="original partition of the record",
    )
    selection.add_argument(
        "--from-offset", metavar="N", type=int,
        help="original offset at least N",
    )
    selection.add_argument(
        "--to-offset", metavar="N", type=int, help="original offset at most N"
    )
    selection.add_argument(
        "--stage", action="append", default=[], choices=STAGES,
        help="stage the record failed at",
    )
    selection.add_argument(
        "--error-class", metavar="NAME", action="append", default=[],
        help="e.g. Refused, DeliveryFailed, DecodeError",
    )
    selection.add_argument(
        "--status", metavar="CODE", action="append", default=[], type=int,
        help="last HTTP status, e.g. 503",
    )

    run = command.add_argument_group("how")
    run.add_argument(
        "--dry-run", action="store_true",
        help="count what would be replayed; write and commit nothing",
    )
    run.add_argument(
        "--limit", metavar="N", type=int, help="replay at most N letters"
    )
    run.add_argument(
        "--rate", metavar="PER_SECOND", type=float,
        default=DEFAULT_REPLAY_RATE_PER_SECOND,
        help="most records sent per second (default: %(default)s)",
    )
    run.add_argument(
        "--force", action="store_true",
        help="replay letters at dlq.replay.max_count too",
    )
    run.add_argument(
        "--group", metavar="NAME",
        help="consumer group for this run, instead of dlq.replay.group_id",
    )
    run.add_argument(
        "--from-beginning", action="store_true",
        help="read the DLQ from its start, not from where the group stopped",
    )


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    # Imported here so that --help stays light.
    from confluent_kafka import KafkaException

    from kafka_bridge.logs import configure_logging
    from kafka_bridge.replay import Replay

    configure_logging(settings.logging)
    stop = threading.Event()
    try:
        replay = Replay(settings, _replay_options(args), stop=stop)
    except ConfigError as error:
        _cannot_replay(error)
        return EXIT_USAGE

    code = EXIT_FAILURE
    with _stopped_by_signals(stop.set):
        try:
            tally = replay.run()
            code = EXIT_OK if tally.complete else EXIT_FAILURE
        except ConfigError as error:
            _cannot_replay(error)
            code = EXIT_USAGE
        except (BridgeError, KafkaException) as error:
            structlog.get_logger("kafka_bridge").error(
                "dlq_replay_failed", error=str(error)
            )
        finally:
            _print_summary(replay, dry_run=args.dry_run)
    return code


def _cannot_replay(error: ConfigError) -> None:
    sys.stderr.write(f"kafka-bridge dlq-replay: cannot replay\n{error}\n")


def _print_summary(replay: Replay, *, dry_run: bool) -> None:
    from kafka_bridge.replay_summary import render_summary

    heading = (
        f"kafka-bridge dlq-replay{' (dry run)' if dry_run else ''}: "
        f"{replay.dlq_topic} to {replay.target_name}, group {replay.group_id}"
    )
    sys.stdout.write(render_summary(replay.tally, heading, dry_run=dry_run))


def _replay_options(args: argparse.Namespace) -> ReplayOptions:
    from kafka_bridge.replay import ReplayOptions
    from kafka_bridge.replay_filters import build_filter

    return ReplayOptions(
        to_topic=args.to_topic,
        topic=args.topic,
        selection=build_filter(
            since=args.since,
            until=args.until,
            partition=args.partition,
            from_offset=args.from_offset,
            to_offset=args.to_offset,
            stages=args.stage,
            error_classes=args.error_class,
            statuses=args.status,
        ),
        limit=args.limit,
        rate_per_second=args.rate,
        dry_run=args.dry_run,
        force=args.force,
        group_id=args.group,
        from_beginning=args.from_beginning,
    )


@contextlib.contextmanager
def _stopped_by_signals(request_stop: Callable[[], None]) -> Iterator[None]:
    """Signal handlers as `run` has them, for the span of a command; the
    ones before are put back after it."""
    previous = {
        signum: signal.getsignal(signum)
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    _install_signal_handlers(request_stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _install_signal_handlers(
    request_stop: Callable[[], None], *, exit_on_second: bool = True
) -> None:
    """First SIGTERM/SIGINT: stop cleanly. Second: exit at once, or, for
    a supervisor, `request_stop` again, which passes it on."""
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if received and exit_on_second:
            os._exit(128 + signum)
        received.append(signum)
        structlog.get_logger("kafka_bridge").info(
            "signal_received", signal=signal.Signals(signum).name
        )
        request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


if __name__ == "__main__":
    sys.exit(main())
