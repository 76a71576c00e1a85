"""`kafka-bridge dlq-replay`: filters, headers, and replays end to end.

The end-to-end tests dead-letter records by running a bridge against a
real broker and a real HTTP API that refuses them, fix the API, and replay
the dead letters with the command, in this process or in a child process
that is interrupted with SIGTERM.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from kafka_bridge.cli import main
from kafka_bridge.config import LoggingSettings, Settings, settings_from_mapping
from kafka_bridge.dead_letters import REPLAY_COUNT_HEADER, DeadLetter
from kafka_bridge.errors import ConfigError
from kafka_bridge.logs import configure_logging
from kafka_bridge.records import Header, Record
from kafka_bridge.replay import replay_group_id
from kafka_bridge.replay_filters import LetterFilter, build_filter, parse_time
from kafka_bridge.replay_progress import ReplayProgress
from kafka_bridge.replay_targets import check_topic_allowed
from kafka_bridge.stored_letters import NotALetter, StoredLetter
from tests.conftest import NewTopicFactory, create_topic, unique_topic_name
from tests.pipeline_support import (
    WAIT_SECONDS,
    bridge_settings,
    committed_offsets,
    produce,
    read_topic,
    running,
    wait_until,
)
from tools.local_api import LocalApi

# Letters in the shared dead-letter topic, by how their records failed.
DECODE_OFFSETS = range(0, 2)
REFUSED_OFFSETS = range(2, 6)
UNAVAILABLE_OFFSETS = range(6, 12)
RECORDS = 12
FAST = "1000"


@pytest.fixture(autouse=True)
def _logging_restored(restore_logging: None) -> None:
    """The command configures logging for the process."""


# -- reading a letter back ------------------------------------------------


@dataclass
class _Message:
    """A consumed message as the Kafka client hands it over."""

    header_list: list[Header]
    key_bytes: bytes | None = b"k"
    value_bytes: bytes | None = b'{"id": 1}'
    timestamp_ms: int = 1_700_000_000_000

    def topic(self) -> str:
        return "orders.dlq"

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return 40

    def key(self) -> bytes | None:
        return self.key_bytes

    def value(self) -> bytes | None:
        return self.value_bytes

    def headers(self) -> list[Header]:
        return self.header_list

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms)


def _record(headers: tuple[Header, ...] = ()) -> Record:
    return Record(
        topic="orders",
        partition=3,
        offset=42,
        key=b"customer-7",
        value=b'{"id": 7}',
        headers=headers,
        timestamp_ms=1_690_000_000_000,
    )


def _stored_headers(letter: DeadLetter) -> list[Header]:
    """The letter's headers as a consumer receives them: bytes."""
    return [
        (name, value if isinstance(value, bytes | None) else value.encode())
        for name, value in letter.headers()
    ]


def _stored(letter: DeadLetter) -> StoredLetter:
    """The letter as the replay reads it from the dead-letter topic."""
    return StoredLetter.from_message(
        _Message(_stored_headers(letter), letter.record.key, letter.record.value)
    )


def _refused(record: Record, **fields: Any) -> DeadLetter:
    return DeadLetter(
        record=record,
        stage="delivery",
        error_class="Refused",
        error_message="HTTP 400",
        status=400,
        endpoint="primary",
        attempts=1,
        **fields,
    )


def test_a_letter_read_back_gives_the_original_record() -> None:
    record = _record(headers=(("trace-id", b"abc"), ("empty", None)))

    letter = _stored(_refused(record, last_failure_wall=1_700_000_000.5))

    assert letter.original == record
    assert (letter.stage, letter.error_class, letter.status) == (
        "delivery",
        "Refused",
        400,
    )
    assert letter.failed_at == datetime(2023, 11, 14, 22, 13, 20, 500_000, UTC)
    assert (letter.dlq_partition, letter.dlq_offset) == (1, 40)
    assert letter.replay_count == 0


def test_a_replayed_record_keeps_its_coordinates_and_counts_one_replay() -> None:
    record = _record(headers=(("trace-id", b"abc"),))

    replayed = _stored(_refused(record)).replayed_record()

    assert replayed.coordinates == "orders/3/42"
    assert replayed.headers == (
        ("trace-id", b"abc"),
        (REPLAY_COUNT_HEADER, b"1"),
    )


def test_the_replay_count_travels_with_a_record_dead_lettered_again() -> None:
    replayed = _record(headers=(("trace-id", b"abc"), (REPLAY_COUNT_HEADER, b"2")))

    letter = _stored(_refused(replayed))

    assert letter.replay_count == 2
    assert letter.original.headers == (("trace-id", b"abc"),)
    assert dict(letter.replayed_headers())[REPLAY_COUNT_HEADER] == b"3"


def test_a_message_without_original_coordinates_is_not_a_letter() -> None:
    message = _Message([("kafka-bridge.original.topic", b"orders")])

    with pytest.raises(NotALetter, match=r"kafka-bridge\.original\.partition"):
        StoredLetter.from_message(message)


def test_a_letter_without_a_failure_time_is_dated_by_its_kafka_timestamp() -> None:
    headers = [
        (name, value)
        for name, value in _stored_headers(_refused(_record()))
        if name != "kafka-bridge.failure.last"
    ]

    letter = StoredLetter.from_message(_Message(headers, timestamp_ms=1_000))

    assert letter.failed_at == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)


# -- filters --------------------------------------------------------------


def test_times_are_read_with_their_utc_offset() -> None:
    assert parse_time("--since", "2025-05-01T12:00:00+02:00") == datetime(
        2025, 5, 1, 10, tzinfo=UTC
    )
    assert parse_time("--since", "2025-05-01T10:00:00Z") == datetime(
        2025, 5, 1, 10, tzinfo=UTC
    )


def test_a_time_without_an_offset_is_refused_saying_how_to_write_one() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_time("--until", "2025-05-01T10:00:00")

    problem = caught.value.problems[0]
    assert (problem.path, problem.rule) == ("--until", "utc-offset")
    assert "2025-05-01T10:00:00" in problem.value
    assert "Z" in problem.fix


def test_every_bad_filter_value_is_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        build_filter(
            since="2025-05-02T00:00:00Z",
            until="2025-05-01T00:00:00Z",
            partition=-1,
            from_offset=10,
            to_offset=5,
            stages=["delivery", "sending"],
            statuses=[503, 42],
        )

    assert sorted(problem.path for problem in caught.value.problems) == [
        "--partition",
        "--stage",
        "--status",
        "--to-offset",
        "--until",
    ]


def _letter_at(
    failed_at: datetime | None = None,
    *,
    partition: int = 3,
    offset: int = 42,
    status: int | None = 400,
) -> StoredLetter:
    return StoredLetter(
        dlq_partition=0,
        dlq_offset=0,
        original=Record("orders", partition, offset, None, b"{}"),
        stage="delivery",
        error_class="Refused",
        status=status,
        failed_at=failed_at,
        replay_count=0,
    )


def test_since_is_inclusive_and_until_exclusive() -> None:
    start = datetime(2025, 5, 1, 10, tzinfo=UTC)
    selection = build_filter(
        since="2025-05-01T10:00:00Z", until="2025-05-01T11:00:00Z"
    )

    assert selection.matches(_letter_at(start))
    assert selection.matches(_letter_at(start + timedelta(minutes=59)))
    assert not selection.matches(_letter_at(start + timedelta(hours=1)))
    assert not selection.matches(_letter_at(start - timedelta(seconds=1)))
    assert not selection.matches(_letter_at(None))


def test_offsets_are_an_inclusive_range_of_the_original_partition() -> None:
    selection = build_filter(partition=3, from_offset=10, to_offset=12)

    assert [
        selection.matches(_letter_at(offset=offset)) for offset in (9, 10, 12, 13)
    ] == [False, True, True, False]
    assert not selection.matches(_letter_at(partition=2, offset=11))


def test_a_repeated_status_takes_any_of_them_and_none_takes_all() -> None:
    either = build_filter(statuses=[500, 503])

    assert either.matches(_letter_at(status=503))
    assert not either.matches(_letter_at(status=400))
    assert not either.matches(_letter_at(status=None))
    assert LetterFilter().matches(_letter_at(status=None))


# -- settings, topics, progress -------------------------------------------


def _settings(**dlq: Any) -> Settings:
    return settings_from_mapping(
        {
            "kafka": {
                "bootstrap_servers": "127.0.0.1:9",
                "group_id": "billing",
                "topics": ["orders", "^audit-.*"],
            },
            "api": {"primary_url": "http://127.0.0.1:9/ingest"},
            "dlq": {"topic": "orders.dlq", **dlq},
        },
        environ={},
    )


def test_the_replay_group_defaults_to_the_bridge_group_with_a_suffix() -> None:
    assert replay_group_id(_settings()) == "billing-dlq-replay"
    assert replay_group_id(_settings(replay={"group_id": "r"})) == "r"
    assert replay_group_id(_settings(), override="once") == "once"


@pytest.mark.parametrize("topic", ["orders", "audit-eu", "orders.retry"])
def test_consumed_and_listed_topics_may_be_replayed_into(topic: str) -> None:
    settings = _settings(replay={"allowed_topics": ["orders.retry"]})

    check_topic_allowed(settings, topic, given=True)


@pytest.mark.parametrize("topic", ["payments", "orders.dlq"])
def test_other_topics_and_the_dead_letter_topic_are_refused(topic: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_topic_allowed(_settings(), topic, given=True)

    problem = caught.value.problems[0]
    assert problem.path == "dlq.replay.allowed_topics"
    assert topic in problem.value


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _show_progress(stream: io.StringIO) -> None:
    """Fifty letters read over 25 seconds, then the end."""
    clock = _Clock()
    progress = ReplayProgress(50, stream, clock=clock)
    for read in range(1, 51):
        clock.now = read * 0.5
        progress.update(read, read // 2)
    progress.finish(50, 25)


def test_progress_on_a_terminal_is_a_bar_redrawn_in_place() -> None:
    terminal = _Terminal()

    _show_progress(terminal)

    shown = terminal.getvalue()
    assert shown.count("\r") > 10
    assert shown.endswith("100%  50/50 letters, 25 replayed\n")


def test_progress_off_a_terminal_is_a_log_event_now_and_then() -> None:
    logged = io.StringIO()
    configure_logging(LoggingSettings(level="INFO", format="json"), logged)

    _show_progress(io.StringIO())

    lines = [json.loads(line) for line in logged.getvalue().splitlines()]
    events = [line for line in lines if line["event"] == "dlq_replay_progress"]
    assert 2 < len(events) < 10
    assert events[-1]["letters_read"] == 50
    assert events[-1]["replayed"] == 25


# -- end to end -----------------------------------------------------------


@dataclass(frozen=True)
class DeadLettered:
    """A topic whose records were dead-lettered, in a mix of ways."""

    topic: str
    dlq: str


@pytest.fixture(scope="module")
def dead_lettered(
    kafka_bootstrap: str, kafka_admin: AdminClient, _session_topics: list[str]
) -> DeadLettered:
    """Twelve records: two unreadable, four refused with 400, six that met a
    503 and ran out of attempts; all in the DLQ, spread over 2 partitions."""
    topic, dlq = unique_topic_name("replay-source"), unique_topic_name("replay-dlq")
    create_topic(kafka_admin, topic, 1)
    create_topic(kafka_admin, dlq, 2)
    _session_topics.extend([topic, dlq])
    produce(
        kafka_bootstrap,
        topic,
        RECORDS,
        values={index: b"{unreadable" for index in DECODE_OFFSETS},
    )

    with LocalApi() as api:
        api.respond_with(400, count=len(REFUSED_OFFSETS))
        api.respond_with(503)
        settings = bridge_settings(
            kafka_bootstrap,
            topic,
            api.url,
            api=_failing_fast(),
            dlq={"topic": dlq},
            pipeline={"workers": 1, "ordering": "partition"},
        )
        with running(settings):
            letters = read_topic(kafka_bootstrap, dlq, RECORDS, WAIT_SECONDS)
    assert len(letters) == RECORDS
    return DeadLettered(topic, dlq)


def _failing_fast() -> dict[str, Any]:
    return {
        "retry": {"max_attempts": 1, "initial_backoff_seconds": 0.01},
        # The breaker would hold the 503 records back for a cool-down.
        "breaker": {"failure_threshold": 1000},
    }


def _config(
    tmp_path: Path,
    bootstrap: str,
    topics: list[str],
    dlq: str,
    api_url: str,
    **replay: Any,
) -> Path:
    data = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"bridge-{uuid.uuid4().hex[:8]}",
            "topics": topics,
        },
        "api": {"primary_url": api_url, **_failing_fast()},
        "dlq": {"topic": dlq, "replay": replay},
        "metrics": {"enabled": False},
        "logging": {"format": "json"},
    }
    path = tmp_path / f"config-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _group() -> str:
    return f"replay-{uuid.uuid4().hex[:8]}"


def _replay(
    capsys: pytest.CaptureFixture[str], config: Path, *arguments: str
) -> tuple[int, str, str]:
    """Run `dlq-replay` in this process: exit code, stdout, stderr."""
    code = main(["dlq-replay", "--config", str(config), "--rate", FAST, *arguments])
    out, err = capsys.readouterr()
    return code, out, err


def _keys(api: LocalApi) -> list[str]:
    return [request.headers["Idempotency-Key"] for request in api.received()]


def _keys_of(topic: str, offsets: range) -> set[str]:
    return {f"{topic}/0/{offset}" for offset in offsets}


def _topic_size(bootstrap: str, topic: str, partitions: int = 1) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": _group()})
    try:
        return sum(
            consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=WAIT_SECONDS
            )[1]
            for partition in range(partitions)
        )
    finally:
        consumer.close()


def _nothing_committed(bootstrap: str, group: str, dlq: str) -> bool:
    offsets = committed_offsets(bootstrap, group, dlq, 2)
    return all(offset < 0 for offset in offsets.values())


@pytest.mark.kafka
def test_a_replay_to_the_api_delivers_each_selected_letter_once(
    kafka_bootstrap: str,
    dead_lettered: DeadLettered,
    api: LocalApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(
        tmp_path, kafka_bootstrap, [dead_lettered.topic], dead_lettered.dlq, api.url
    )
    group = ("--group", _group(), "--status", "503")

    first = _replay(capsys, config, "--to-api", "--limit", "2", *group)
    after_first = len(_keys(api))
    rest = _replay(capsys, config, "--to-api", *group)
    again = _replay(capsys, config, "--to-api", *group)

    assert [run[0] for run in (first, rest, again)] == [0, 0, 0]
    assert after_first == 2
    assert "stopped at --limit" in first[1]
    assert sorted(_keys(api)) == sorted(
        _keys_of(dead_lettered.topic, UNAVAILABLE_OFFSETS)
    )
    assert [request.json()["value"]["id"] for request in api.received()] == [
        f"r-{int(key.rsplit('/', 1)[1]):06d}" for key in _keys(api)
    ]
    assert _count(again[1], "replayed") == 0


@pytest.mark.kafka
def test_a_replay_to_a_topic_publishes_the_records_without_bridge_headers(
    kafka_bootstrap: str,
    dead_lettered: DeadLettered,
    new_topic: NewTopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = new_topic(1)
    config = _config(
        tmp_path,
        kafka_bootstrap,
        [dead_lettered.topic],
        dead_lettered.dlq,
        "http://127.0.0.1:9/ingest",
        allowed_topics=[target],
    )

    code, out, _ = _replay(
        capsys, config, "--to-topic", "--topic", target,
        "--error-class", "Refused", "--group", _group(),
    )
    published = read_topic(kafka_bootstrap, target, len(REFUSED_OFFSETS))

    assert code == 0, out
    assert _topic_size(kafka_bootstrap, target) == len(REFUSED_OFFSETS)
    assert sorted(record.key or b"" for record in published) == [
        f"r-{offset:06d}".encode() for offset in REFUSED_OFFSETS
    ]
    assert sorted(record.value or b"" for record in published) == [
        json.dumps({"id": f"r-{offset:06d}", "n": offset}).encode()
        for offset in REFUSED_OFFSETS
    ]
    assert all(
        record.headers == {REPLAY_COUNT_HEADER: "1"} for record in published
    )


@pytest.mark.kafka
def test_a_dry_run_counts_the_letters_and_writes_nothing(
    kafka_bootstrap: str,
    dead_lettered: DeadLettered,
    new_topic: NewTopicFactory,
    api: LocalApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = new_topic(1)
    config = _config(
        tmp_path,
        kafka_bootstrap,
        [dead_lettered.topic],
        dead_lettered.dlq,
        api.url,
        allowed_topics=[target],
    )
    group = _group()

    to_api = _replay(capsys, config, "--to-api", "--dry-run", "--group", group)
    to_topic = _replay(
        capsys, config, "--to-topic", "--topic", target, "--dry-run",
        "--group", group, "--stage", "delivery",
    )

    assert (to_api[0], to_topic[0]) == (0, 0)
    assert api.received_count() == 0
    assert _topic_size(kafka_bootstrap, target) == 0
    assert _nothing_committed(kafka_bootstrap, group, dead_lettered.dlq)
    table = _table(to_api[1])
    assert table == {
        ("decode", "DecodeError", "-"): len(DECODE_OFFSETS),
        ("delivery", "Refused", "400"): len(REFUSED_OFFSETS),
        ("delivery", "DeliveryFailed", "503"): len(UNAVAILABLE_OFFSETS),
    }
    assert _count(to_api[1], "would replay") == RECORDS
    assert "oldest failure" in to_api[1] and "newest failure" in to_api[1]
    assert _count(to_topic[1], "would replay") == RECORDS - len(DECODE_OFFSETS)
    assert _count(to_topic[1], "skipped by filter") == len(DECODE_OFFSETS)


def _count(summary: str, label: str) -> int:
    """A count of a printed summary, by its label."""
    for line in summary.splitlines():
        if line.strip().startswith(label + "  "):
            return int(line.split()[-1])
    raise AssertionError(f"no {label!r} in the summary:\n{summary}")


def _table(summary: str) -> dict[tuple[str, str, str], int]:
    """The stage / error class / status table of a printed summary."""
    lines = summary.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stage"))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        stage, error_class, status, count = line.split()
        rows[(stage, error_class, status)] = int(count)
    return rows


@pytest.mark.kafka
def test_an_interrupted_replay_resumes_without_losing_or_repeating_a_record(
    kafka_bootstrap: str,
    dead_lettered: DeadLettered,
    api: LocalApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(
        tmp_path, kafka_bootstrap, [dead_lettered.topic], dead_lettered.dlq, api.url
    )
    selection = ("--to-api", "--group", _group(), "--status", "503")
    output = tmp_path / "interrupted.out"
    with output.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "kafka_bridge.cli", "dlq-replay",
             "--config", str(config), "--rate", "2", *selection],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        started = api.wait_for_count(2, WAIT_SECONDS)
        child.send_signal(signal.SIGTERM)
        interrupted_code = child.wait(timeout=WAIT_SECONDS)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    delivered_before = len(_keys(api))

    resumed_code, summary, _ = _replay(capsys, config, *selection)

    log = output.read_text()
    assert started, log
    assert interrupted_code == 1, log
    assert "interrupted" in log
    assert delivered_before < len(UNAVAILABLE_OFFSETS)
    assert resumed_code == 0, summary
    assert sorted(_keys(api)) == sorted(
        _keys_of(dead_lettered.topic, UNAVAILABLE_OFFSETS)
    )


@pytest.mark.kafka
def test_a_letter_whose_original_topic_is_not_allowed_stops_the_replay_with_2(
    kafka_bootstrap: str,
    dead_lettered: DeadLettered,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(
        tmp_path,
        kafka_bootstrap,
        ["elsewhere"],
        dead_lettered.dlq,
        "http://127.0.0.1:9/ingest",
    )
    group = _group()

    code, _, err = _replay(capsys, config, "--to-topic", "--group", group)

    assert code == 2
    assert "dlq.replay.allowed_topics" in err
    assert dead_lettered.topic in err
    assert _topic_size(kafka_bootstrap, dead_lettered.topic) == RECORDS
    assert _nothing_committed(kafka_bootstrap, group, dead_lettered.dlq)


def test_a_target_topic_that_is_not_allowed_exits_2_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(
        tmp_path, "127.0.0.1:9", ["orders"], "orders.dlq",
        "http://127.0.0.1:9/ingest", allowed_topics=["orders.retry"],
    )

    code, _, err = _replay(capsys, config, "--to-topic", "--topic", "payments")

    assert code == 2
    assert "dlq.replay.allowed_topics" in err
    assert "payments" in err
    assert "add payments to dlq.replay.allowed_topics" in err


def test_topic_without_to_topic_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(
        tmp_path, "127.0.0.1:9", ["orders"], "orders.dlq", "http://127.0.0.1:9/i"
    )

    with pytest.raises(SystemExit) as exit_info:
        main(["dlq-replay", "--config", str(config), "--to-api", "--topic", "x"])

    assert exit_info.value.code == 2
    assert "--to-topic" in capsys.readouterr().err


@pytest.mark.kafka
def test_a_record_failing_again_returns_counted_and_stops_at_the_maximum(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, dlq = new_topic(1), new_topic(1)
    api.respond_with(400)
    produce(kafka_bootstrap, topic, 1)
    config = _config(
        tmp_path, kafka_bootstrap, [topic], dlq, api.url, max_count=2
    )
    group = ("--group", _group())
    settings = bridge_settings(
        kafka_bootstrap, topic, api.url, api=_failing_fast(), dlq={"topic": dlq}
    )

    with running(settings):
        assert len(_counts(kafka_bootstrap, dlq, 1)) == 1
        # The API still refuses: the replay dead-letters the record again.
        by_api = _replay(capsys, config, "--to-api", *group)
        # The bridge consumes the republished record and dead-letters it.
        by_topic = _replay(capsys, config, "--to-topic", *group)
        assert wait_until(lambda: _topic_size(kafka_bootstrap, dlq) == 3)
        posts_before_maximum = api.received_count()
        at_maximum = _replay(capsys, config, "--to-api", *group)
        forced = _replay(
            capsys, config, "--to-api", "--force", "--from-beginning",
            "--from-offset", "1", *group,
        )
        counts = _counts(kafka_bootstrap, dlq, 4)

    assert (by_api[0], by_topic[0], at_maximum[0], forced[0]) == (1, 0, 0, 1)
    assert _count(by_api[1], "re-dead-lettered") == 1
    assert counts == [None, "1", "2", "3"]
    assert _count(at_maximum[1], "skipped by max count") == 1
    assert _count(forced[1], "re-dead-lettered") == 1
    # The first delivery, the replay to the API, the bridge's delivery of
    # the republished record; nothing at the maximum; one when forced.
    assert posts_before_maximum == 3
    assert api.received_count() == 4


def _counts(bootstrap: str, dlq: str, expected: int) -> list[str | None]:
    """The replay count of each letter in the DLQ, in offset order."""
    letters = read_topic(bootstrap, dlq, expected, WAIT_SECONDS)
    return [letter.headers.get(REPLAY_COUNT_HEADER) for letter in letters]
