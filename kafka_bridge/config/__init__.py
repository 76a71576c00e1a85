"""Loading and validating the bridge configuration.

`load_settings` turns the YAML file, environment overrides and secret
references into typed `Settings`, or raises `ConfigError` listing every
problem; `render_masked` shows the result with secrets hidden.
`load_contract_schema` reads the JSON Schema `api.contract_schema` names.
"""

from kafka_bridge.config.contract_schema import load_contract_schema
from kafka_bridge.config.loader import load_settings, settings_from_mapping
from kafka_bridge.config.settings import (
    ApiSettings,
    BreakerSettings,
    DedupSettings,
    DeliverySettings,
    DlqReplaySettings,
    DlqSettings,
    KafkaSettings,
    LibrdkafkaValue,
    LoggingSettings,
    MetricsSettings,
    PipelineSettings,
    RetrySettings,
    Settings,
    render_masked,
)
from kafka_bridge.errors import ConfigError, ConfigProblem

__all__ = [
    "ApiSettings",
    "BreakerSettings",
    "ConfigError",
    "ConfigProblem",
    "DedupSettings",
    "DeliverySettings",
    "DlqReplaySettings",
    "DlqSettings",
    "KafkaSettings",
    "LibrdkafkaValue",
    "LoggingSettings",
    "MetricsSettings",
    "PipelineSettings",
    "RetrySettings",
    "Settings",
    "load_contract_schema",
    "load_settings",
    "render_masked",
    "settings_from_mapping",
]
