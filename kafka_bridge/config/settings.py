"""The validated configuration as typed, immutable settings.

The rest of the bridge reads these classes and never the raw file. Their
defaults are read from the schema, the one place they are written, so a
setting built in code and one loaded from a file agree. Build them with
keyword arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import yaml

from kafka_bridge.config.masking import (
    Predicate,
    error_predicate,
    mask_tree,
    settings_predicate,
)
from kafka_bridge.config.paths import KeyPath
from kafka_bridge.config.schema import default_at

LibrdkafkaValue = str | int | float | bool


def _default_factory(*path: str) -> Any:
    return field(default_factory=functools.partial(default_at, *path))


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSettings:
    """Where records come from: the cluster, the group and the topics."""

    bootstrap_servers: str
    group_id: str = default_at("kafka", "group_id")
    topics: tuple[str, ...]
    consumer: Mapping[str, LibrdkafkaValue] = _default_factory("kafka", "consumer")
    producer: Mapping[str, LibrdkafkaValue] = _default_factory("kafka", "producer")

    def __repr__(self) -> str:
        # A section does not know which of its values came from secret
        # references, so it hides everything that may be one.
        return _masked_repr(self, ("kafka",), error_predicate(()))


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrySettings:
    """When a failed delivery is tried again, how often, and how long."""

    initial_backoff_seconds: float = default_at(
        "api", "retry", "initial_backoff_seconds"
    )
    max_backoff_seconds: float = default_at("api", "retry", "max_backoff_seconds")
    multiplier: float = default_at("api", "retry", "multiplier")
    max_attempts: int = default_at("api", "retry", "max_attempts")
    max_elapsed_seconds: float = default_at("api", "retry", "max_elapsed_seconds")
    retryable_statuses: frozenset[int] = frozenset(
        default_at("api", "retry", "retryable_statuses")
    )
    max_retry_after_seconds: float = default_at(
        "api", "retry", "max_retry_after_seconds"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerSettings:
    """When an endpoint's circuit breaker opens, and how long it stays open."""

    failure_threshold: int = default_at("api", "breaker", "failure_threshold")
    cool_down_seconds: float = default_at("api", "breaker", "cool_down_seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiSettings:
    """Where records go: the HTTP endpoint and how to talk to it."""

    primary_url: str
    secondary_url: str | None = default_at("api", "secondary_url")
    connect_timeout_seconds: float = default_at("api", "connect_timeout_seconds")
    read_timeout_seconds: float = default_at("api", "read_timeout_seconds")
    headers: Mapping[str, str] = _default_factory("api", "headers")
    contract_schema: str | None = default_at("api", "contract_schema")
    retry: RetrySettings = field(default_factory=RetrySettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)

    def __repr__(self) -> str:
        return _masked_repr(self, ("api",), error_predicate(()))


@dataclass(frozen=True, slots=True, kw_only=True)
class DlqReplaySettings:
    """How `kafka-bridge dlq-replay` puts dead letters back to work.

    `group_id` None means `<kafka.group_id>-dlq-replay`.
    """

    max_count: int = default_at("dlq", "replay", "max_count")
    group_id: str | None = default_at("dlq", "replay", "group_id")
    allowed_topics: tuple[str, ...] = tuple(
        default_at("dlq", "replay", "allowed_topics")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DlqSettings:
    """Where undeliverable records go, and how fast they may be written.

    `when_limited` is `block` or `drop`; with `topic` None there is no
    dead-letter topic.
    """

    topic: str | None = default_at("dlq", "topic")
    rate_per_second: float = default_at("dlq", "rate_per_second")
    burst: int = default_at("dlq", "burst")
    when_limited: str = default_at("dlq", "when_limited")
    replay: DlqReplaySettings = field(default_factory=DlqReplaySettings)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    """One record per POST (`record`), or batches of them (`batch`)."""

    mode: str = default_at("delivery", "mode")
    batch_max_records: int = default_at("delivery", "batch_max_records")
    batch_max_bytes: int = default_at("delivery", "batch_max_bytes")
    batch_max_wait_ms: int = default_at("delivery", "batch_max_wait_ms")
    batch_format: str = default_at("delivery", "batch_format")


@dataclass(frozen=True, slots=True, kw_only=True)
class DedupSettings:
    """Whether records seen recently are skipped, and what identifies one.

    `key` is `key`, `value_hash`, `header:NAME` or `field:a.b.c`.
    """

    enabled: bool = default_at("dedup", "enabled")
    key: str = default_at("dedup", "key")
    capacity: int = default_at("dedup", "capacity")
    max_age_seconds: float = default_at("dedup", "max_age_seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineSettings:
    """How records move from the poll thread through the queue to workers.

    `ordering` is `key`, `partition` or `none`.
    """

    queue_capacity: int = default_at("pipeline", "queue_capacity")
    resume_at_fraction: float = default_at("pipeline", "resume_at_fraction")
    workers: int = default_at("pipeline", "workers")
    ordering: str = default_at("pipeline", "ordering")
    batch_size: int = default_at("pipeline", "batch_size")
    poll_timeout_seconds: float = default_at("pipeline", "poll_timeout_seconds")
    shutdown_deadline_seconds: float = default_at(
        "pipeline", "shutdown_deadline_seconds"
    )
    transform: str = default_at("pipeline", "transform")


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSettings:
    """The Prometheus endpoint."""

    enabled: bool = default_at("metrics", "enabled")
    host: str = default_at("metrics", "host")
    port: int = default_at("metrics", "port")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingSettings:
    """Log level (upper case) and output format."""

    level: str = default_at("logging", "level")
    format: str = default_at("logging", "format")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The whole configuration, and which of its values are secret."""

    kafka: KafkaSettings
    api: ApiSettings
    dlq: DlqSettings = field(default_factory=DlqSettings)
    dedup: DedupSettings = field(default_factory=DedupSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    secret_paths: frozenset[tuple[str, ...]] = frozenset()

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets as `***`.

        Safe to print and to log: values from secret references, values of
        credential-named keys and URL passwords are all replaced.
        """
        predicate = settings_predicate(self.secret_paths)
        masked: dict[str, Any] = mask_tree(_plain(self), (), predicate)
        return masked

    def __repr__(self) -> str:
        return _masked_repr(self, (), settings_predicate(self.secret_paths))


def render_masked(settings: Settings) -> str:
    """The effective configuration as YAML text, secrets masked."""
    return yaml.safe_dump(
        settings.masked(), sort_keys=False, allow_unicode=True, width=1 << 16
    )


def _masked_repr(settings: Any, path: KeyPath, is_secret: Predicate) -> str:
    # A repr ends up in logs and test reports, so it hides what masked()
    # hides.
    shown = mask_tree(_plain(settings), path, is_secret)
    inner = ", ".join(f"{key}={value!r}" for key, value in shown.items())
    return f"{type(settings).__name__}({inner})"


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {
            spec.name: _plain(getattr(value, spec.name))
            for spec in fields(value)
            if spec.name != "secret_paths"
        }
    if isinstance(value, Mapping):
        return {key: _plain(child) for key, child in value.items()}
    if isinstance(value, tuple):
        return [_plain(child) for child in value]
    if isinstance(value, frozenset):
        # A set has no order of its own; sorted, it renders the same way
        # every time and is a list that YAML and JSON can both write.
        return sorted(value)
    return value


def build_settings(
    data: Mapping[str, Any], secret_paths: frozenset[tuple[str, ...]]
) -> Settings:
    """Settings from data that passed validation with defaults filled in.

    Numbers are converted because YAML's `30` is an int where a float is
    meant, and JSON Schema counts `4.0` as an integer.
    """
    return Settings(
        kafka=_kafka(data["kafka"]),
        api=_api(data["api"]),
        dlq=_dlq(data["dlq"]),
        dedup=_dedup(data["dedup"]),
        delivery=_delivery(data["delivery"]),
        pipeline=_pipeline(data["pipeline"]),
        metrics=_metrics(data["metrics"]),
        logging=LoggingSettings(
            level=data["logging"]["level"], format=data["logging"]["format"]
        ),
        secret_paths=secret_paths,
    )


def _kafka(section: Mapping[str, Any]) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=section["bootstrap_servers"],
        group_id=section["group_id"],
        topics=tuple(section["topics"]),
        consumer=dict(section["consumer"]),
        producer=dict(section["producer"]),
    )


def _api(section: Mapping[str, Any]) -> ApiSettings:
    breaker = section["breaker"]
    return ApiSettings(
        primary_url=section["primary_url"],
        secondary_url=section["secondary_url"],
        connect_timeout_seconds=float(section["connect_timeout_seconds"]),
        read_timeout_seconds=float(section["read_timeout_seconds"]),
        headers=dict(section["headers"]),
        contract_schema=section["contract_schema"],
        retry=_retry(section["retry"]),
        breaker=BreakerSettings(
            failure_threshold=int(breaker["failure_threshold"]),
            cool_down_seconds=float(breaker["cool_down_seconds"]),
        ),
    )


def _retry(section: Mapping[str, Any]) -> RetrySettings:
    return RetrySettings(
        initial_backoff_seconds=float(section["initial_backoff_seconds"]),
        max_backoff_seconds=float(section["max_backoff_seconds"]),
        multiplier=float(section["multiplier"]),
        max_attempts=int(section["max_attempts"]),
        max_elapsed_seconds=float(section["max_elapsed_seconds"]),
        retryable_statuses=frozenset(
            int(status) for status in section["retryable_statuses"]
        ),
        max_retry_after_seconds=float(section["max_retry_after_seconds"]),
    )


def _dlq(section: Mapping[str, Any]) -> DlqSettings:
    replay = section["replay"]
    return DlqSettings(
        topic=section["topic"],
        rate_per_second=float(section["rate_per_second"]),
        burst=int(section["burst"]),
        when_limited=section["when_limited"],
        replay=DlqReplaySettings(
            max_count=int(replay["max_count"]),
            group_id=replay["group_id"],
            allowed_topics=tuple(replay["allowed_topics"]),
        ),
    )


def _delivery(section: Mapping[str, Any]) -> DeliverySettings:
    return DeliverySettings(
        mode=section["mode"],
        batch_max_records=int(section["batch_max_records"]),
        batch_max_bytes=int(section["batch_max_bytes"]),
        batch_max_wait_ms=int(section["batch_max_wait_ms"]),
        batch_format=section["batch_format"],
    )


def _dedup(section: Mapping[str, Any]) -> DedupSettings:
    return DedupSettings(
        enabled=section["enabled"],
        key=section["key"],
        capacity=int(section["capacity"]),
        max_age_seconds=float(section["max_age_seconds"]),
    )


def _pipeline(section: Mapping[str, Any]) -> PipelineSettings:
    return PipelineSettings(
        queue_capacity=int(section["queue_capacity"]),
        resume_at_fraction=float(section["resume_at_fraction"]),
        workers=int(section["workers"]),
        ordering=section["ordering"],
        batch_size=int(section["batch_size"]),
        poll_timeout_seconds=float(section["poll_timeout_seconds"]),
        shutdown_deadline_seconds=float(section["shutdown_deadline_seconds"]),
        transform=section["transform"],
    )


def _metrics(section: Mapping[str, Any]) -> MetricsSettings:
    return MetricsSettings(
        enabled=section["enabled"],
        host=section["host"],
        port=int(section["port"]),
    )
