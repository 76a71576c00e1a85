"""The `kafka-bridge` command line: run the daemon, check a configuration.

Exit codes are part of the interface, for systemd and Kubernetes alike:
0 after a clean stop, 1 for a fatal runtime error, 2 for a bad
configuration or bad usage.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

import structlog

from kafka_bridge.config import Settings, load_settings, render_masked
from kafka_bridge.errors import ConfigError, ConfigProblem
from kafka_bridge.version import __version__

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

CONFIG_ENV = "KAFKA_BRIDGE_CONFIG"

_RUN_EXAMPLE = """\
example:
  kafka-bridge run --config /etc/kafka-bridge/config.yaml
  KAFKA_BRIDGE_CONFIG=config.yaml kafka-bridge run

Runs in the foreground until SIGTERM or SIGINT, then finishes the records
in flight, commits and exits 0. A second signal exits at once.
"""

_CHECK_EXAMPLE = """\
example:
  kafka-bridge check-config --config config.yaml

Prints the effective configuration with every secret masked; exits 0 if it
is valid, 2 with one line per problem if not.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with our code 2 and a hint."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.stderr.write(f"run '{self.prog} --help' for an example\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The command's parser with its two subcommands."""
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
    ):
        command = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=example,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_config_option(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `kafka-bridge`; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = _load(args.config)
    except ConfigError as error:
        sys.stderr.write(f"kafka-bridge: invalid configuration\n{error}\n")
        return EXIT_USAGE

    if args.command == "check-config":
        sys.stdout.write(render_masked(settings))
        return EXIT_OK
    return _run(settings)


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


def _run(settings: Settings) -> int:
    # Imported here so that check-config and --help stay light.
    from kafka_bridge.bridge import Bridge
    from kafka_bridge.logs import configure_logging

    configure_logging(settings.logging)
    log = structlog.get_logger("kafka_bridge")
    log.info("configuration", **settings.masked())

    try:
        bridge = Bridge(settings)
    except ConfigError as error:
        sys.stderr.write(f"kafka-bridge: invalid configuration\n{error}\n")
        return EXIT_USAGE
    _install_signal_handlers(bridge.request_stop)
    return bridge.run()


def _install_signal_handlers(request_stop: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: stop cleanly. Second: exit at once."""
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if received:
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
