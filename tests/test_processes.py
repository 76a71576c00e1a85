"""`kafka-bridge run --processes N`: N bridges in one group under one
supervisor, run as a user runs them, on the real broker and a real API."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kafka_bridge.supervisor import RestartPolicy, process_count
from tests.chaos_scenarios import (
    BridgeProcess,
    bridge_config,
    sigkill_process_restarts,
    sigterm_under_load,
)
from tests.conftest import NewTopicFactory
from tests.pipeline_support import (
    WAIT_SECONDS,
    committed_offsets,
    produce,
    wait_until,
)
from tools.local_api import LocalApi

RECORDS = 300
DEADLINE_SECONDS = 10.0
# The supervisor waits out its bridges' deadline and a grace of its own.
EXIT_BOUND_SECONDS = DEADLINE_SECONDS + 10.0
_HTTP_TIMEOUT_SECONDS = 5.0


def _write_config(
    path: Path, bootstrap: str, topic: str, api_url: str, **sections: Any
) -> Path:
    config = bridge_config(
        bootstrap,
        topic,
        f"processes-{topic}",
        api_url,
        dlq_topic=None,
        pipeline={"workers": 4, "shutdown_deadline_seconds": DEADLINE_SECONDS},
    )
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def _supervisor(
    config: Path, log_path: Path, *options: str
) -> Iterator[BridgeProcess]:
    """A running supervisor; killed with its bridges if a test fails."""
    supervisor = BridgeProcess(config, log_path, options)
    try:
        yield supervisor
    finally:
        for pid in supervisor.children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        supervisor.kill()


def _ids(api: LocalApi) -> list[str]:
    """Record ids in what the API received, one per record, in batches
    (JSON arrays) or not."""
    ids = []
    for request in api.received():
        body = request.json()
        for envelope in body if isinstance(body, list) else [body]:
            ids.append(envelope["value"]["id"])
    return ids


def _series(url: str, name: str) -> dict[str, float]:
    """The samples of one metric, by their `pid` label."""
    text = requests.get(f"{url}/metrics", timeout=_HTTP_TIMEOUT_SECONDS).text
    return {
        sample.labels.get("pid", ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def _ready(url: str | None) -> bool:
    if url is None:
        return False
    answer = requests.get(f"{url}/readyz", timeout=_HTTP_TIMEOUT_SECONDS)
    return answer.status_code == 200


@pytest.mark.kafka
@pytest.mark.parametrize(
    "delivery",
    [{"mode": "record"}, {"mode": "batch", "batch_max_records": 20}],
    ids=["per-record", "batch"],
)
def test_two_processes_deliver_every_record_once_and_stop_on_sigterm(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    tmp_path: Path,
    delivery: dict[str, Any],
) -> None:
    topic = new_topic(4)
    produced = produce(kafka_bootstrap, topic, RECORDS)
    config = _write_config(
        tmp_path / "config.yaml", kafka_bootstrap, topic, api.url,
        delivery=delivery,
    )

    with _supervisor(config, tmp_path / "run.log", "--processes", "2") as run:
        assert wait_until(lambda: _ready(run.metrics_url)), run.log_tail()
        url = run.metrics_url
        assert url is not None
        assert wait_until(
            lambda: _committed(kafka_bootstrap, topic) == RECORDS
        ), run.log_tail()
        children = run.children()
        ready = _series(url, "kafka_bridge_process_ready")
        delivered = _series(url, "kafka_bridge_messages_delivered_total")
        exit_seconds = run.terminate(patience_seconds=EXIT_BOUND_SECONDS)

    started = {
        (event.get("process"), event.get("pid")) for event in run.events()
        if event.get("event") == "bridge_started"
    }
    assert sorted(_ids(api)) == sorted(p.record_id for p in produced)
    assert len(children) == 2
    assert started == {(0, children[0]), (1, children[1])}
    assert ready == {str(pid): 1.0 for pid in children}
    assert delivered == {"": RECORDS}
    assert exit_seconds is not None and run.exit_code == 0


@pytest.mark.kafka
def test_a_killed_process_is_started_again_and_nothing_is_lost(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = sigkill_process_restarts(
        kafka_bootstrap, tmp_path, rate_per_second=150, kills=1
    )

    assert result.passed, result.problems
    assert result.figures["restarts"] == 1


@pytest.mark.kafka
def test_sigterm_to_the_supervisor_under_load_loses_and_repeats_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The processes' own rebalances (a second one joining, one leaving
    before the other at a stop) repeat nothing either, in the default
    `key` ordering."""
    result = sigterm_under_load(
        kafka_bootstrap, tmp_path, rate_per_second=150, stops=2,
        ordering="key", processes=2,
    )

    assert result.passed, result.problems


@pytest.mark.kafka
def test_processes_that_keep_crashing_make_the_supervisor_exit_1(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    tmp_path: Path,
) -> None:
    topic = new_topic(2)
    produce(kafka_bootstrap, topic, 10)
    config = _write_config(
        tmp_path / "config.yaml", kafka_bootstrap, topic, api.url,
        pipeline={"transform": "tests.sample_transforms.shapes:exit_process"},
    )

    with _supervisor(
        config, tmp_path / "run.log",
        "--processes", "2", "--max-restarts", "1", "--restart-backoff", "0.1",
    ) as run:
        assert wait_until(lambda: not run.running()), run.log_tail()
        started = [
            event["pid"] for event in run.events()
            if event.get("event") == "process_started"
        ]

    assert run.exit_code == 1
    assert run.has_logged("processes_keep_crashing")
    assert len(started) >= 3
    assert not any(_alive(pid) for pid in started)
    assert api.received_count() == 0


@pytest.mark.kafka
def test_a_process_refusing_the_configuration_stops_all_with_exit_2(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    tmp_path: Path,
) -> None:
    """librdkafka refuses an unknown property only when a bridge process
    makes its consumer; no restart can fix that."""
    topic = new_topic(1)
    config = _write_config(
        tmp_path / "config.yaml", kafka_bootstrap, topic, api.url,
        kafka={"consumer": {"no.such.property": 1}},
    )

    with _supervisor(
        config, tmp_path / "run.log", "--processes", "2"
    ) as run:
        assert wait_until(lambda: not run.running()), run.log_tail()

    assert run.exit_code == 2
    assert run.has_logged("process_refused_configuration")
    assert "no.such.property" in run.log_path.read_text()
    assert not run.has_logged("process_exited")


@pytest.mark.kafka
def test_bridge_processes_stop_when_their_supervisor_is_killed(
    kafka_bootstrap: str,
    new_topic: NewTopicFactory,
    api: LocalApi,
    tmp_path: Path,
) -> None:
    topic = new_topic(2)
    config = _write_config(
        tmp_path / "config.yaml", kafka_bootstrap, topic, api.url
    )

    with _supervisor(config, tmp_path / "run.log", "--processes", "2") as run:
        assert wait_until(lambda: _ready(run.metrics_url)), run.log_tail()
        children = run.children()
        run.kill()
        stopped = wait_until(
            lambda: not any(_alive(pid) for pid in children),
            timeout_seconds=DEADLINE_SECONDS + WAIT_SECONDS,
        )

    assert len(children) == 2
    assert stopped
    assert run.has_logged("supervisor_gone")


def test_the_restart_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(initial_backoff_seconds=0.5,
                           max_backoff_seconds=3.0)

    delays = [policy.backoff_seconds(crashes) for crashes in range(1, 6)]

    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_supervisor_gives_up_after_max_restarts_crashes_in_a_row() -> None:
    policy = RestartPolicy(max_restarts=2)

    assert not policy.gives_up(2)
    assert policy.gives_up(3)


def test_auto_processes_is_at_most_the_cpus_this_process_may_run_on() -> None:
    assert 1 <= process_count("auto") <= len(os.sched_getaffinity(0))
    assert process_count("3") == 3


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_a_count_of_processes_that_is_not_positive_is_refused(
    value: str,
) -> None:
    with pytest.raises(ValueError):
        process_count(value)


def _committed(bootstrap: str, topic: str) -> int:
    offsets = committed_offsets(bootstrap, f"processes-{topic}", topic, 4)
    return sum(max(0, offset) for offset in offsets.values())


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
