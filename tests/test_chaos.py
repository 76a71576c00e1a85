"""The bridge killed, stopped, starved and cut off from its broker loses
nothing: short runs of the chaos scenarios, judged by the ledger.

`make chaos` runs the same scenarios longer (tools/chaos.py). The first
tests check the ledger itself on records whose fate is known, so that a
verdict of "nothing missing" from the scenarios means something.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.chaos_scenarios import (
    UNBINDABLE_METRICS_CONFIGS,
    bad_configurations,
    broker_outage,
    group_churn,
    sigkill_restarts,
    sigterm_under_load,
    sigterm_with_broker_down,
    slow_api,
)
from tests.ledger import (
    Entry,
    Receipt,
    dropped_coordinates,
    judge,
    receipts_from_url,
    receipts_of,
)
from tools.local_api import LocalApi
from tools.local_kafka import LocalKafka

TOPIC = "orders"


def _entries(count: int, partitions: int = 2) -> list[Entry]:
    return [
        Entry(f"r-{n}", TOPIC, n % partitions, n // partitions)
        for n in range(count)
    ]


def _receipt(entry: Entry, status: int = 200) -> Receipt:
    return Receipt(entry.record_id, entry.idempotency_key, status)


@pytest.fixture(scope="module")
def dedicated_kafka(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalKafka]:
    """A broker of this module's own, for the scenarios that stop it."""
    broker = LocalKafka(tmp_path_factory.mktemp("chaos-kafka"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


# -- the ledger ----------------------------------------------------------


def test_the_verdict_names_missing_records_by_partition() -> None:
    produced = _entries(6)
    receipts = [_receipt(e) for e in produced if e.record_id != "r-3"]

    verdict = judge(produced, receipts)

    assert verdict.missing == {1: ["r-3"]}
    with pytest.raises(AssertionError, match="partition 1: r-3"):
        verdict.assert_sound(max_duplicates=0)


def test_a_refused_request_does_not_count_as_a_delivery() -> None:
    produced = _entries(2)
    receipts = [_receipt(produced[0]), _receipt(produced[1], status=503)]

    verdict = judge(produced, receipts)

    assert verdict.missing == {1: ["r-1"]}


def test_dead_lettered_and_dropped_records_are_accounted_for() -> None:
    produced = _entries(4)
    receipts = [_receipt(produced[0]), _receipt(produced[1])]
    letters = [(produced[2].partition, produced[2].offset)]
    dropped = [(produced[3].partition, produced[3].offset)]

    verdict = judge(produced, receipts, letters, dropped)

    assert verdict.missing == {}
    assert (verdict.delivered, verdict.dead_lettered, verdict.dropped) == (
        2, 1, 1,
    )
    verdict.assert_sound(max_duplicates=0)


def test_copies_beyond_the_first_count_as_duplicates_within_a_bound() -> None:
    produced = _entries(3)
    receipts = [_receipt(e) for e in produced] + [_receipt(produced[2])] * 2
    letters = [(produced[0].partition, produced[0].offset)]

    verdict = judge(produced, receipts, letters)

    assert verdict.duplicates == {0: ["r-0", "r-2", "r-2"]}
    verdict.assert_sound(max_duplicates=3)
    with pytest.raises(AssertionError, match="3 duplicates"):
        verdict.assert_sound(max_duplicates=2)


def test_requests_for_records_never_produced_are_unexpected() -> None:
    produced = _entries(1)
    receipts = [
        _receipt(produced[0]),
        Receipt("r-99", f"{TOPIC}/0/99", 200),
        Receipt(None, None, 200),
    ]

    verdict = judge(produced, receipts, dead_letters=[(5, 5)])

    assert len(verdict.unexpected) == 3
    with pytest.raises(AssertionError, match="r-99"):
        verdict.assert_sound(max_duplicates=0)


def test_a_request_cut_off_mid_body_counts_as_no_delivery() -> None:
    produced = _entries(2)
    receipts = [
        _receipt(produced[0]),
        Receipt(None, produced[1].idempotency_key, 200, complete=False),
    ]

    verdict = judge(produced, receipts)

    assert verdict.missing == {1: ["r-1"]}
    assert (verdict.unexpected, verdict.cut_off) == ([], 1)


def test_a_wrong_idempotency_key_is_reported() -> None:
    produced = _entries(2)
    receipts = [
        _receipt(produced[0]),
        Receipt(produced[1].record_id, produced[0].idempotency_key, 200),
    ]

    verdict = judge(produced, receipts)

    assert verdict.mislabelled == [
        f"r-1 sent as {TOPIC}/0/0, stored at {TOPIC}/1/0"
    ]


def test_receipts_read_over_http_match_those_read_in_process(
    api: LocalApi,
) -> None:
    for n, key in ((1, f"{TOPIC}/0/1"), (2, f"{TOPIC}/1/0")):
        requests.post(
            api.url,
            json={"value": {"id": f"r-{n}"}},
            headers={"Idempotency-Key": key},
            timeout=10,
        ).raise_for_status()

    over_http = receipts_from_url(api.base_url)

    in_process = receipts_of(api)
    assert [(r.record_id, r.idempotency_key) for r in over_http] == [
        (r.record_id, r.idempotency_key) for r in in_process
    ] == [("r-1", f"{TOPIC}/0/1"), ("r-2", f"{TOPIC}/1/0")]


def test_a_body_shorter_than_its_content_length_is_marked_cut_off(
    api: LocalApi,
) -> None:
    head = (
        "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: 100\r\nIdempotency-Key: {TOPIC}/0/0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", api.port), 10) as sender:
        sender.sendall(head.encode() + b'{"value": {"id"')
        sender.shutdown(socket.SHUT_WR)
        answer = sender.recv(1024)

    assert answer.startswith(b"HTTP/1.1 200")  # recorded and answered
    assert [r.complete for r in receipts_of(api)] == [False]
    assert [r.complete for r in receipts_from_url(api.base_url)] == [False]


def test_dropped_records_are_read_from_the_bridge_log() -> None:
    log = "\n".join([
        '{"event": "dead_letter_dropped", "topic": "orders", '
        '"partition": 1, "offset": 7}',
        '{"event": "dead_letter_dropped", "topic": "other", '
        '"partition": 0, "offset": 3}',
        "not json",
    ])

    assert dropped_coordinates(log, TOPIC) == [(1, 7)]


# -- the scenarios -----------------------------------------------------------


@pytest.mark.kafka
def test_sigkill_at_random_moments_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = sigkill_restarts(
        kafka_bootstrap, tmp_path, records=600, kills=2, seed=11
    )

    result.assert_passed()
    assert result.verdict is not None
    assert result.verdict.dead_lettered > 0  # the DLQ side was exercised


@pytest.mark.kafka
def test_sigterm_under_steady_load_loses_and_repeats_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = sigterm_under_load(
        kafka_bootstrap, tmp_path, rate_per_second=100, stops=2, seed=12
    )

    result.assert_passed()
    assert result.verdict is not None
    assert result.verdict.duplicate_count == 0
    assert len(result.exit_seconds) == 3  # two stops and the final one


@pytest.mark.kafka
def test_sigterm_with_the_broker_unreachable_exits_within_the_deadline(
    dedicated_kafka: LocalKafka, tmp_path: Path
) -> None:
    result = sigterm_with_broker_down(
        dedicated_kafka, tmp_path, records=400, seed=13
    )

    result.assert_passed()
    assert len(result.exit_seconds) == 2


@pytest.mark.kafka
def test_a_broker_restart_mid_run_loses_nothing(
    dedicated_kafka: LocalKafka, tmp_path: Path
) -> None:
    result = broker_outage(
        dedicated_kafka, tmp_path, rate_per_second=80,
        outage_seconds=4, seed=14,
    )

    result.assert_passed()


@pytest.mark.kafka
def test_a_slow_api_pauses_partitions_without_a_rebalance(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = slow_api(kafka_bootstrap, tmp_path, slow_seconds=9)

    result.assert_passed()
    assert result.figures["pauses"] > 0
    assert result.figures["rebalances"] == 0


@pytest.mark.kafka
def test_three_bridges_stopped_and_started_in_one_group_lose_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = group_churn(
        kafka_bootstrap, tmp_path, rate_per_second=150, instances=3,
        cycles=3, seed=15,
    )

    result.assert_passed()


def test_broken_configurations_exit_2_without_traceback_or_secret(
    tmp_path: Path,
) -> None:
    result = bad_configurations(tmp_path)

    result.assert_passed()
    assert set(result.figures.values()) == {2}


def test_a_metrics_address_that_cannot_be_bound_exits_2(
    tmp_path: Path,
) -> None:
    result = bad_configurations(tmp_path, UNBINDABLE_METRICS_CONFIGS)

    result.assert_passed()
