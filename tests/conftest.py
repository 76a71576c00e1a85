"""Fixtures shared by the test suite: a real Kafka broker and its topics.

Tests that need Kafka take ``kafka_bootstrap`` and are marked
``@pytest.mark.kafka``. The broker is the one KAFKA_BOOTSTRAP_SERVERS names
when that is set; otherwise the session starts a local broker in a temporary
directory and stops it at the end, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
import structlog
from confluent_kafka import KafkaException

# NewTopic lives here in the documentation; the stubs do not re-export it.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
)

# The tests import the developer commands in tools/, which are not installed.
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
if str(REPOSITORY_ROOT) not in sys.path:
    sys.path.insert(0, str(REPOSITORY_ROOT))

from kafka_bridge.config import LoggingSettings  # noqa: E402
from kafka_bridge.logs import configure_logging  # noqa: E402
from tests.manual_clock import ManualClock  # noqa: E402
from tools.local_api import LocalApi  # noqa: E402
from tools.local_kafka import LocalKafka  # noqa: E402  (needs the path above)

BOOTSTRAP_SERVERS_VARIABLE = "KAFKA_BOOTSTRAP_SERVERS"

_TOPIC_CREATE_TIMEOUT_SECONDS = 30.0
_TOPIC_DELETE_TIMEOUT_SECONDS = 10.0
_TOPIC_NAME_PREFIX_LENGTH = 60
_NOT_ALLOWED_IN_TOPIC_NAMES = re.compile(r"[^a-zA-Z0-9._-]+")


class NewTopicFactory(Protocol):
    """Creates a topic with a fresh name and returns the name."""

    def __call__(self, partitions: int = 1) -> str: ...


def create_topic(admin: AdminClient, name: str, partitions: int = 1) -> None:
    """Create a topic and wait until the broker confirms it."""
    topic = NewTopic(name, num_partitions=partitions)
    futures = admin.create_topics(
        [topic], request_timeout=_TOPIC_CREATE_TIMEOUT_SECONDS
    )
    futures[name].result(timeout=_TOPIC_CREATE_TIMEOUT_SECONDS)


def unique_topic_name(hint: str) -> str:
    """Return a topic name that starts with hint, made safe, and is unique."""
    prefix = _NOT_ALLOWED_IN_TOPIC_NAMES.sub("-", hint)
    return f"{prefix[:_TOPIC_NAME_PREFIX_LENGTH]}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test sets `clock.now`."""
    return ManualClock()


@pytest.fixture
def api() -> Iterator[LocalApi]:
    """A local HTTP API on loopback, the bridge's primary endpoint."""
    with LocalApi() as server:
        yield server


@pytest.fixture
def standby() -> Iterator[LocalApi]:
    """A second local HTTP API, the bridge's secondary endpoint."""
    with LocalApi() as server:
        yield server


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what a command under test did to the process's logging."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


@pytest.fixture(scope="session", autouse=True)
def _quiet_logging() -> None:
    """Bridge logs at INFO, as in production: per-record DEBUG lines would
    bury a failing test's story."""
    configure_logging(LoggingSettings(level="INFO", format="console"))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address of the session's Kafka broker."""
    external = os.environ.get(BOOTSTRAP_SERVERS_VARIABLE)
    if external:
        yield external
        return

    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    """An admin client of the session's broker."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture(scope="session")
def _session_topics(kafka_admin: AdminClient) -> Iterator[list[str]]:
    """Names of the topics created by new_topic, deleted at the session end.

    Deleting is best effort: the topics have unique names, so one left
    behind on a shared broker disturbs no later run.
    """
    created: list[str] = []
    yield created

    if not created:
        return
    futures = kafka_admin.delete_topics(
        created, request_timeout=_TOPIC_DELETE_TIMEOUT_SECONDS
    )
    for future in futures.values():
        with contextlib.suppress(KafkaException, TimeoutError):
            future.result(timeout=_TOPIC_DELETE_TIMEOUT_SECONDS)


@pytest.fixture
def new_topic(
    kafka_admin: AdminClient,
    _session_topics: list[str],
    request: pytest.FixtureRequest,
) -> NewTopicFactory:
    """Make topics named after the test, as ``new_topic(partitions=1)``."""

    def create(partitions: int = 1) -> str:
        name = unique_topic_name(request.node.name)
        create_topic(kafka_admin, name, partitions)
        _session_topics.append(name)
        return name

    return create
