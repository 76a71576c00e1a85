"""The local Kafka broker that the tests and the demo run against."""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from tests.conftest import NewTopicFactory, create_topic, unique_topic_name
from tools.local_kafka import (
    LOOPBACK_HOST,
    LocalKafka,
    LocalKafkaError,
    broker_config,
    fetch_jars,
    find_java,
    new_cluster_id,
    parse_java_major,
    usable_java,
)

_WAIT_SECONDS = 30.0
_POLL_SECONDS = 0.5
_MAX_POLLS = 100


def produce_values(
    bootstrap_servers: str, topic: str, values: list[bytes]
) -> None:
    """Produce values in order and wait until the broker acknowledged all."""
    failures: list[KafkaError] = []

    def remember_failure(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(error)

    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "acks": "all"}
    )
    for value in values:
        producer.produce(topic, value=value, on_delivery=remember_failure)
    unsent = producer.flush(_WAIT_SECONDS)

    assert unsent == 0, f"{unsent} records not acknowledged"
    assert failures == []


def consume_values(
    bootstrap_servers: str, topic: str, count: int
) -> list[bytes | None]:
    """Read up to count values from partition 0 of topic, from its start."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique_topic_name("local-kafka-test"),
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    values: list[bytes | None] = []
    deadline = time.monotonic() + _WAIT_SECONDS

    try:
        for _ in range(_MAX_POLLS):
            if len(values) == count or time.monotonic() > deadline:
                break
            message = consumer.poll(_POLL_SECONDS)
            if message is None:
                continue
            if message.error() is not None:
                raise KafkaException(message.error())
            values.append(message.value())
    finally:
        consumer.close()
    return values


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A started broker of the test's own, for tests that stop or halt it."""
    broker = LocalKafka(tmp_path / "kafka")
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def _without_tools_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Leave PATH naming only an empty directory, and JAVA_HOME unset."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("JAVA_HOME", raising=False)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
    ],
)
def test_java_major_is_read_from_both_version_styles(
    output: str, major: int
) -> None:
    assert parse_java_major(output) == major


def test_unreadable_java_version_is_reported_with_the_output() -> None:
    with pytest.raises(LocalKafkaError, match="no version here"):
        parse_java_major("no version here")


def test_java_older_than_17_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    java = tmp_path / "jdk8" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk8"))

    with pytest.raises(LocalKafkaError, match=r"needs Java 17 .* is Java 8;"):
        usable_java()


def test_missing_java_is_reported_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _without_tools_on_path(monkeypatch, tmp_path)

    with pytest.raises(LocalKafkaError, match="java is not on PATH; install"):
        find_java()


def test_cluster_id_is_a_uuid_in_url_safe_base64() -> None:
    cluster_id = new_cluster_id()

    assert len(cluster_id) == 22
    assert not cluster_id.startswith("-")
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_config_advertises_the_client_port_on_loopback(tmp_path: Path) -> None:
    lines = broker_config(40123, 40124, tmp_path).splitlines()
    settings = dict(line.split("=", 1) for line in lines)

    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:40123"
    assert settings["controller.quorum.voters"] == "1@127.0.0.1:40124"
    assert settings["log.dirs"] == str(tmp_path)


def test_complete_jar_cache_is_reused_without_maven(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    libs_dir = fetch_jars()
    _without_tools_on_path(monkeypatch, tmp_path)

    assert fetch_jars() == libs_dir


def test_half_copied_jar_cache_is_fetched_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    libs_dir = tmp_path / "libs"
    libs_dir.mkdir()
    (libs_dir / "kafka-clients-4.1.1.jar").write_bytes(b"cut short")
    _without_tools_on_path(monkeypatch, tmp_path)

    with pytest.raises(LocalKafkaError, match="mvn is not on PATH"):
        fetch_jars(libs_dir)


def test_port_out_of_range_is_refused_by_name(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka", port=70000)

    with pytest.raises(LocalKafkaError, match="--port must be between 1 and"):
        broker.start()


def test_taken_port_is_refused_before_the_broker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK_HOST, 0))
        port = taken.getsockname()[1]
        broker = LocalKafka(tmp_path / "kafka", port=port)

        refusal = f"--port {port} on {LOOPBACK_HOST} is not available"
        with pytest.raises(LocalKafkaError, match=refusal):
            broker.start()


@pytest.mark.kafka
def test_session_broker_answers_metadata(kafka_bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    metadata = admin.list_topics(timeout=_WAIT_SECONDS)

    assert len(metadata.brokers) >= 1


@pytest.mark.kafka
def test_new_topic_has_the_partitions_asked_for(
    kafka_admin: AdminClient, new_topic: NewTopicFactory
) -> None:
    topic = new_topic(partitions=3)

    metadata = kafka_admin.list_topics(topic, timeout=_WAIT_SECONDS)

    assert len(metadata.topics[topic].partitions) == 3


@pytest.mark.kafka
def test_record_produced_to_a_new_topic_is_consumed_back(
    kafka_bootstrap: str, new_topic: NewTopicFactory
) -> None:
    topic = new_topic()
    value = uuid.uuid4().bytes

    produce_values(kafka_bootstrap, topic, [value])

    assert consume_values(kafka_bootstrap, topic, 1) == [value]


@pytest.mark.kafka
def test_restart_keeps_the_port_and_the_records(own_broker: LocalKafka) -> None:
    before = own_broker.bootstrap_servers
    topic = unique_topic_name("restart")
    create_topic(AdminClient({"bootstrap.servers": before}), topic)
    values = [b"first", b"second"]
    produce_values(before, topic, values)

    after = own_broker.restart()

    assert after == before
    assert consume_values(after, topic, len(values)) == values


@pytest.mark.kafka
def test_stop_ends_the_broker_and_removes_its_state(
    own_broker: LocalKafka,
) -> None:
    pid = own_broker.running_pid()
    assert pid is not None

    own_broker.stop()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not own_broker.state_dir.exists()


@pytest.mark.kafka
def test_broker_that_dies_while_starting_fails_at_once_with_its_log(
    own_broker: LocalKafka,
) -> None:
    own_broker.halt()
    port = int(own_broker.bootstrap_servers.rpartition(":")[2])

    # SO_REUSEADDR: the halted broker's closed connections may still hold
    # the port in TIME_WAIT, which must not keep this socket from it.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((LOOPBACK_HOST, port))
        squatter.listen()
        with pytest.raises(LocalKafkaError, match=r"(?s)exited.*already in use"):
            own_broker.resume()

    assert not own_broker.is_running()
