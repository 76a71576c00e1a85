"""Loading the configuration: defaults, errors, secrets, overrides, docs."""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # the package ships no type hints
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafka_bridge.config import (
    BreakerSettings,
    ConfigError,
    ConfigProblem,
    DedupSettings,
    DlqReplaySettings,
    DlqSettings,
    PipelineSettings,
    RetrySettings,
    Settings,
    load_contract_schema,
    load_settings,
    render_masked,
    settings_from_mapping,
)
from kafka_bridge.config.schema import config_schema, iter_key_paths

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_FILE = REPOSITORY_ROOT / "config.example.yaml"
DOCS_FILE = REPOSITORY_ROOT / "docs" / "configuration.md"

CANARY = "canary-7Qx2-do-not-show"
CANARY_VARIABLE = "BRIDGE_TEST_CANARY"
CANARY_ENV_REFERENCE = f"env://{CANARY_VARIABLE}"

NO_ENVIRONMENT: dict[str, str] = {}

Config = dict[str, Any]


def minimal() -> Config:
    """A fresh copy of the smallest valid configuration."""
    return {
        "kafka": {"bootstrap_servers": "localhost:9092", "topics": ["orders"]},
        "api": {"primary_url": "https://api.example.com/records"},
    }


def with_section(section: str, **values: Any) -> Config:
    """The minimal configuration with `values` added to `section`."""
    data = minimal()
    data.setdefault(section, {}).update(values)
    return data


def with_value(dotted_path: str, value: Any) -> Config:
    """The minimal configuration with `value` at a dotted key path."""
    data = minimal()
    *sections, key = dotted_path.split(".")
    level = data
    for section in sections:
        level = level.setdefault(section, {})
    level[key] = value
    return data


def load_error(
    data: Mapping[str, Any], environ: Mapping[str, str] = NO_ENVIRONMENT
) -> ConfigError:
    """The ConfigError that loading `data` raises."""
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(data, environ)
    return caught.value


def load_error_from_file(path: Path) -> ConfigError:
    """The ConfigError that loading the file at `path` raises."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path, NO_ENVIRONMENT)
    return caught.value


def problem_at(error: ConfigError, path: str) -> ConfigProblem:
    """The one problem `error` reports at `path`."""
    found = [problem for problem in error.problems if problem.path == path]
    assert len(found) == 1, f"expected one problem at {path}: {error}"
    return found[0]


def schema_defaults() -> dict[tuple[str, ...], Any]:
    """Every leaf key with a default in the schema, and that default."""
    return {
        path: node["default"]
        for path, node in iter_key_paths()
        if "default" in node and "properties" not in node
    }


def value_at(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a key path of nested mappings."""
    level: Any = data
    for key in path:
        level = level[key]
    return level


def has_path(data: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """True when every key of `path` is present in the nested mappings."""
    level: Any = data
    for key in path:
        if not isinstance(level, Mapping) or key not in level:
            return False
        level = level[key]
    return True


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file holding the canary secret and the newline editors add."""
    path = tmp_path_factory.mktemp("secrets") / "canary"
    path.write_text(f"{CANARY}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def write_config(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Writes YAML text to a configuration file and returns its path."""
    directory = tmp_path_factory.mktemp("config")

    def write(text: str) -> Path:
        path = directory / "config.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


# Defaults


def test_every_default_from_the_schema_is_applied() -> None:
    loaded = settings_from_mapping(minimal(), NO_ENVIRONMENT).masked()

    for path, default in schema_defaults().items():
        assert value_at(loaded, path) == default, path


def test_settings_built_in_code_have_the_defaults_of_a_loaded_file() -> None:
    loaded = settings_from_mapping(minimal(), NO_ENVIRONMENT)

    assert loaded.pipeline == PipelineSettings()
    assert loaded.api.retry == RetrySettings()
    assert loaded.api.breaker == BreakerSettings()
    assert loaded.dlq == DlqSettings()
    assert loaded.dedup == DedupSettings()
    assert loaded.api.contract_schema is None


def test_the_failure_handling_defaults_are_the_documented_ones() -> None:
    loaded = settings_from_mapping(minimal(), NO_ENVIRONMENT)

    retry = loaded.api.retry
    assert retry.max_attempts == 5
    assert retry.max_elapsed_seconds == 300.0
    assert retry.retryable_statuses == frozenset(
        {408, 425, 429, 500, 502, 503, 504}
    )
    assert retry.max_retry_after_seconds == 60.0
    assert loaded.api.breaker == BreakerSettings(
        failure_threshold=5, cool_down_seconds=30.0
    )
    assert loaded.dlq == DlqSettings(
        topic=None, rate_per_second=100.0, burst=100, when_limited="block"
    )
    assert loaded.dedup == DedupSettings(
        enabled=False, key="key", capacity=100_000, max_age_seconds=3600.0
    )
    assert loaded.pipeline.ordering == "key"


def test_new_numbers_get_the_types_the_settings_declare() -> None:
    data = with_section("dlq", rate_per_second=5, burst=7.0)
    data["api"]["retry"] = {"max_attempts": 3.0, "retryable_statuses": [503.0]}

    loaded = settings_from_mapping(data, NO_ENVIRONMENT)

    assert isinstance(loaded.dlq.rate_per_second, float)
    assert isinstance(loaded.dlq.burst, int)
    assert isinstance(loaded.api.retry.max_attempts, int)
    assert [type(status) for status in loaded.api.retry.retryable_statuses] == [int]


def test_retryable_statuses_render_as_a_sorted_yaml_list() -> None:
    data = with_value("api.retry.retryable_statuses", [503, 429, 500])

    loaded = settings_from_mapping(data, NO_ENVIRONMENT)

    assert loaded.masked()["api"]["retry"]["retryable_statuses"] == [429, 500, 503]
    rendered = yaml.safe_load(render_masked(loaded))
    assert rendered["api"]["retry"]["retryable_statuses"] == [429, 500, 503]


def test_whole_numbers_become_floats_and_integral_floats_become_ints() -> None:
    data = with_section("pipeline", workers=4.0, poll_timeout_seconds=1)

    pipeline = settings_from_mapping(data, NO_ENVIRONMENT).pipeline

    assert isinstance(pipeline.workers, int)
    assert isinstance(pipeline.poll_timeout_seconds, float)


def test_log_level_is_accepted_in_any_case_and_stored_upper_case() -> None:
    data = with_section("logging", level="warning")

    assert settings_from_mapping(data, NO_ENVIRONMENT).logging.level == "WARNING"


# Schema problems


def test_a_misspelt_key_is_reported_with_its_path_and_the_likely_key() -> None:
    data = minimal()
    data["api"]["primry_url"] = data["api"].pop("primary_url")

    problem = problem_at(load_error(data), "api.primry_url")

    assert problem.rule == "additionalProperties"
    assert "did you mean 'primary_url'?" in problem.fix


def test_an_unknown_key_without_a_likely_match_lists_the_known_keys() -> None:
    problem = problem_at(
        load_error(with_section("metrics", colour="blue")), "metrics.colour"
    )

    assert "enabled, host, port" in problem.fix


def test_every_problem_is_reported_together_one_per_line() -> None:
    data = with_section("pipeline", workers=0, batch_size="many")
    data["logging"] = {"format": "xml"}
    del data["kafka"]["topics"]

    error = load_error(data)

    paths = {problem.path for problem in error.problems}
    assert paths == {
        "pipeline.workers",
        "pipeline.batch_size",
        "logging.format",
        "kafka.topics",
    }
    assert len(str(error).splitlines()) == len(error.problems)


def test_a_bound_problem_names_the_setting_rule_value_and_fix() -> None:
    problem = problem_at(
        load_error(with_section("pipeline", workers=1000)), "pipeline.workers"
    )

    assert problem.rule == "maximum"
    assert problem.value == "1000"
    assert problem.fix == "use a value >= 1 and <= 256"
    assert str(problem).startswith("pipeline.workers: must be <= 256")


def test_an_enum_problem_lists_the_allowed_values() -> None:
    problem = problem_at(
        load_error(with_section("logging", format="xml")), "logging.format"
    )

    assert problem.rule == "enum"
    assert "auto, json, console" in problem.fix


def test_a_missing_required_key_is_reported_with_an_example() -> None:
    data = minimal()
    del data["api"]["primary_url"]

    problem = problem_at(load_error(data), "api.primary_url")

    assert problem.rule == "required"
    assert "https://" in problem.fix


def test_a_url_without_http_scheme_is_refused() -> None:
    data = with_section("api", secondary_url="ftp://backup.example.com")

    problem = problem_at(load_error(data), "api.secondary_url")

    assert problem.rule == "pattern"
    assert "http://" in problem.fix


def test_a_librdkafka_property_name_that_cannot_exist_is_refused() -> None:
    data = with_section("kafka", consumer={"Fetch Wait": 5})

    problem = problem_at(load_error(data), "kafka.consumer.Fetch Wait")

    assert problem.rule == "propertyNames"


def test_a_mapping_that_is_not_a_mapping_at_all_is_refused() -> None:
    top: Any = ["kafka", "api"]

    error = load_error(top)

    assert error.problems[0].rule == "type"


@pytest.mark.parametrize(
    ("path", "value", "rule"),
    [
        ("api.retry.max_attempts", 0, "minimum"),
        ("api.retry.max_attempts", 1.5, "type"),
        ("api.retry.max_elapsed_seconds", 0, "exclusiveMinimum"),
        ("api.retry.retryable_statuses", "503", "type"),
        ("api.retry.retryable_statuses", [503, 503], "uniqueItems"),
        ("api.retry.max_retry_after_seconds", -1, "minimum"),
        ("api.breaker.failure_threshold", 0, "minimum"),
        ("api.breaker.cool_down_seconds", 0, "exclusiveMinimum"),
        ("api.contract_schema", "", "minLength"),
        ("dlq.topic", "orders dlq", "pattern"),
        ("dlq.topic", "..", "pattern"),
        ("dlq.topic", "t" * 250, "pattern"),
        ("dlq.rate_per_second", 0, "exclusiveMinimum"),
        ("dlq.burst", 0, "minimum"),
        ("dlq.when_limited", "wait", "enum"),
        ("dedup.enabled", "yes", "type"),
        ("dedup.key", "hash", "pattern"),
        ("dedup.capacity", 0, "minimum"),
        ("dedup.max_age_seconds", 0, "exclusiveMinimum"),
        ("pipeline.ordering", "random", "enum"),
    ],
)
def test_a_failure_handling_value_out_of_its_rule_is_refused(
    path: str, value: Any, rule: str
) -> None:
    problem = problem_at(load_error(with_value(path, value)), path)

    assert problem.rule == rule
    assert problem.fix


@pytest.mark.parametrize("status", [99, 600])
def test_a_retryable_status_outside_http_is_refused(status: int) -> None:
    data = with_value("api.retry.retryable_statuses", [503, status])

    error = load_error(data)

    problem = problem_at(error, "api.retry.retryable_statuses[1]")
    assert problem.rule in {"minimum", "maximum"}
    assert problem.value == str(status)


def test_a_success_status_is_refused_as_retryable() -> None:
    data = with_value("api.retry.retryable_statuses", [503, 200])

    problem = problem_at(load_error(data), "api.retry.retryable_statuses[1]")

    assert problem.rule == "not-a-success-status"


def test_an_empty_list_of_retryable_statuses_is_accepted() -> None:
    data = with_value("api.retry.retryable_statuses", [])

    loaded = settings_from_mapping(data, NO_ENVIRONMENT)

    assert loaded.api.retry.retryable_statuses == frozenset()


@pytest.mark.parametrize(
    "key", ["key", "value_hash", "header:Idempotency-Key", "field:order.id", "field:id"]
)
def test_each_form_of_dedup_key_is_accepted(key: str) -> None:
    data = with_value("dedup.key", key)

    assert settings_from_mapping(data, NO_ENVIRONMENT).dedup.key == key


@pytest.mark.parametrize(
    "key", ["hash", "header:", "field:", "field:a..b", "field:.a", "field:a b", "Key"]
)
def test_a_dedup_key_of_no_known_form_is_refused_listing_the_forms(
    key: str,
) -> None:
    problem = problem_at(load_error(with_value("dedup.key", key)), "dedup.key")

    assert problem.rule == "pattern"
    assert problem.value == f'"{key}"'
    for form in ("key", "header:NAME", "field:a.b.c", "value_hash"):
        assert form in problem.fix


def test_an_undeclared_key_that_hints_at_a_credential_stays_masked() -> None:
    data = with_value("dedup.api_key", "k-123")

    problem = problem_at(load_error(data), "dedup.api_key")

    assert problem.value == '"***"'


@pytest.mark.parametrize("ordering", ["key", "partition", "none"])
def test_each_ordering_is_accepted(ordering: str) -> None:
    data = with_value("pipeline.ordering", ordering)

    assert settings_from_mapping(data, NO_ENVIRONMENT).pipeline.ordering == ordering


# Semantic checks


def test_max_backoff_below_initial_backoff_is_refused() -> None:
    data = with_section(
        "api", retry={"initial_backoff_seconds": 5, "max_backoff_seconds": 1}
    )

    problem = problem_at(load_error(data), "api.retry.max_backoff_seconds")

    assert problem.rule == "max-backoff-at-least-initial"


@pytest.mark.parametrize(
    "transform", ["envelope", "passthrough", "my_pkg.transforms:to_order"]
)
def test_a_known_or_importable_transform_is_accepted(transform: str) -> None:
    data = with_section("pipeline", transform=transform)

    assert settings_from_mapping(data, NO_ENVIRONMENT).pipeline.transform == transform


@pytest.mark.parametrize("transform", ["json", "pkg.mod", "pkg:1func", "a b:c"])
def test_a_transform_that_is_neither_built_in_nor_importable_is_refused(
    transform: str,
) -> None:
    data = with_section("pipeline", transform=transform)

    assert problem_at(load_error(data), "pipeline.transform").rule == "transform"


def test_a_number_that_is_not_finite_is_refused() -> None:
    data = with_section("api", read_timeout_seconds=float("inf"))

    problem = problem_at(load_error(data), "api.read_timeout_seconds")

    assert problem.rule == "finite"


def test_connection_properties_the_bridge_sets_are_refused_in_the_map() -> None:
    data = with_section("kafka", consumer={"group.id": "other"})

    problem = problem_at(load_error(data), "kafka.consumer.group.id")

    assert "kafka.group_id" in problem.fix


def test_a_dead_letter_topic_that_is_also_consumed_is_refused() -> None:
    data = with_value("dlq.topic", "orders")

    problem = problem_at(load_error(data), "dlq.topic")

    assert problem.rule == "dead-letters-not-consumed"
    assert "kafka.topics[0]" in problem.message
    assert problem.fix == "name a separate topic such as orders.dlq"


def test_a_dead_letter_topic_a_consumed_pattern_matches_is_refused() -> None:
    data = with_value("dlq.topic", "orders.dlq")
    data["kafka"]["topics"] = ["refunds", "^orders.*"]

    problem = problem_at(load_error(data), "dlq.topic")

    assert "kafka.topics[1]" in problem.message


def test_a_separate_dead_letter_topic_is_accepted() -> None:
    data = with_value("dlq.topic", "orders.dlq")

    assert settings_from_mapping(data, NO_ENVIRONMENT).dlq.topic == "orders.dlq"


def test_the_replay_defaults_are_the_documented_ones() -> None:
    loaded = settings_from_mapping(minimal(), NO_ENVIRONMENT)

    assert loaded.dlq.replay == DlqReplaySettings(
        max_count=3, group_id=None, allowed_topics=()
    )


def test_replay_settings_are_read_from_the_file_and_the_environment() -> None:
    data = with_section(
        "dlq", topic="orders.dlq", replay={"allowed_topics": ["orders.retry"]}
    )
    environ = {"KAFKA_BRIDGE__DLQ__REPLAY__MAX_COUNT": "5"}

    replay = settings_from_mapping(data, environ).dlq.replay

    assert replay.allowed_topics == ("orders.retry",)
    assert replay.max_count == 5


def test_replaying_into_the_dead_letter_topic_is_refused() -> None:
    data = with_section(
        "dlq",
        topic="orders.dlq",
        replay={"allowed_topics": ["orders.retry", "orders.dlq"]},
    )

    problem = problem_at(load_error(data), "dlq.replay.allowed_topics[1]")

    assert problem.rule == "not-the-dead-letter-topic"
    assert "orders.dlq" in problem.value


def test_an_allowed_replay_topic_that_is_no_topic_name_is_refused() -> None:
    data = with_value("dlq.replay", {"allowed_topics": ["orders retry"]})

    problem = problem_at(load_error(data), "dlq.replay.allowed_topics[0]")

    assert problem.rule == "pattern"


def test_a_replay_group_that_is_the_bridge_group_is_refused() -> None:
    data = with_value("dlq.replay", {"group_id": "kafka-bridge"})

    problem = problem_at(load_error(data), "dlq.replay.group_id")

    assert problem.rule == "separate-replay-group"
    assert "kafka-bridge-dlq-replay" in problem.fix


def test_a_replay_max_count_below_one_is_refused() -> None:
    data = with_value("dlq.replay", {"max_count": 0})

    assert problem_at(load_error(data), "dlq.replay.max_count").rule == "minimum"


@pytest.mark.parametrize("key", ["enable.auto.commit", "enable.auto.offset.store"])
@pytest.mark.parametrize("value", [True, "true", "TRUE", 1, "1", "yes"])
def test_automatic_offset_handling_switched_on_is_refused(key: str, value: Any) -> None:
    data = with_section("kafka", consumer={key: value})

    problem = problem_at(load_error(data), f"kafka.consumer.{key}")

    assert problem.rule == "offsets-owned-by-bridge"
    assert problem.fix.startswith("remove it: the bridge stores and commits")
    assert "dead-lettered" in problem.fix


@pytest.mark.parametrize("value", [False, "false", 0, "0"])
def test_automatic_offset_handling_switched_off_is_accepted(value: Any) -> None:
    data = with_section("kafka", consumer={"enable.auto.commit": value})

    loaded = settings_from_mapping(data, NO_ENVIRONMENT)

    assert loaded.kafka.consumer == {"enable.auto.commit": value}


def test_automatic_commit_switched_on_by_an_override_names_the_variable() -> None:
    name = "KAFKA_BRIDGE__KAFKA__CONSUMER__ENABLE.AUTO.COMMIT"

    problem = problem_at(
        load_error(minimal(), {name: "true"}), "kafka.consumer.enable.auto.commit"
    )

    assert name in problem.message


# The contract schema


VALID_CONTRACT = {
    "type": "object",
    "required": ["id"],
    "properties": {"id": {"type": "string"}},
}


@pytest.fixture
def contract_file(tmp_path: Path) -> Callable[..., str]:
    """Writes a contract schema file and returns its path as text."""

    def write(text: str, name: str = "contract.json") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


def contract_problem(path: str) -> ConfigProblem:
    """The problem loading a configuration with this contract schema gives."""
    data = with_value("api.contract_schema", path)
    return problem_at(load_error(data), "api.contract_schema")


def test_a_valid_json_contract_schema_is_accepted_and_loads(
    contract_file: Callable[..., str],
) -> None:
    path = contract_file(json.dumps(VALID_CONTRACT))

    loaded = settings_from_mapping(
        with_value("api.contract_schema", path), NO_ENVIRONMENT
    )

    assert loaded.api.contract_schema == path
    assert load_contract_schema(path) == VALID_CONTRACT


def test_a_contract_schema_named_yaml_is_read_as_yaml(
    contract_file: Callable[..., str],
) -> None:
    path = contract_file(yaml.safe_dump(VALID_CONTRACT), "contract.yaml")

    assert load_contract_schema(path) == VALID_CONTRACT


def test_a_relative_contract_schema_path_is_read_from_the_current_directory(
    contract_file: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    absolute = Path(contract_file(json.dumps(VALID_CONTRACT)))
    monkeypatch.chdir(absolute.parent)

    assert load_contract_schema(absolute.name) == VALID_CONTRACT


def test_a_missing_contract_schema_file_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.json")

    problem = contract_problem(path)

    assert problem.rule == "contract-schema"
    assert problem.message == "file not found"
    assert path in problem.value


def test_a_directory_as_contract_schema_is_refused(tmp_path: Path) -> None:
    problem = contract_problem(str(tmp_path))

    assert problem.message == "is not a regular file"


def test_a_contract_schema_that_is_not_json_names_line_and_column(
    contract_file: Callable[..., str],
) -> None:
    path = contract_file('{\n  "type": "object",\n  "required": [id]\n}\n')

    problem = contract_problem(path)

    assert problem.message.startswith("invalid JSON at line 3, column 16")


def test_invalid_yaml_in_a_contract_schema_names_line_and_column(
    contract_file: Callable[..., str],
) -> None:
    path = contract_file("type: object\nrequired: [id\n", "contract.yml")

    problem = contract_problem(path)

    assert re.match(r"invalid YAML at line \d+, column \d+", problem.message)


def test_a_contract_schema_that_is_not_an_object_is_refused(
    contract_file: Callable[..., str],
) -> None:
    problem = contract_problem(contract_file('["type", "object"]'))

    assert problem.message == "the file holds an array, not an object"


def test_a_contract_that_is_not_a_json_schema_says_where_it_is_wrong(
    contract_file: Callable[..., str],
) -> None:
    broken = {"type": "object", "properties": {"id": {"type": "text"}}}

    problem = contract_problem(contract_file(json.dumps(broken)))

    assert "not a valid JSON Schema at $.properties.id.type" in problem.message
    assert "2020-12" in problem.fix


def test_a_contract_is_checked_by_the_draft_its_schema_keyword_names(
    contract_file: Callable[..., str],
) -> None:
    # A list under "items" is right in draft 7 and wrong in 2020-12.
    positional = {"items": [{"type": "string"}]}
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", **positional}

    loaded = load_contract_schema(contract_file(json.dumps(draft7), "draft7.json"))
    problem = contract_problem(contract_file(json.dumps(positional), "latest.json"))

    assert loaded == draft7
    assert "not a valid JSON Schema at $.items" in problem.message


def test_a_contract_naming_an_unknown_draft_is_refused(
    contract_file: Callable[..., str],
) -> None:
    unknown = {"$schema": "https://example.com/my-draft", "type": "object"}

    problem = contract_problem(contract_file(json.dumps(unknown)))

    assert "$schema" in problem.message
    assert "2020-12" in problem.fix


def test_load_contract_schema_raises_a_config_error_naming_the_setting(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_contract_schema(str(tmp_path / "absent.json"))

    assert caught.value.problems[0].path == "api.contract_schema"


# Secret references


def test_a_file_secret_is_read_without_its_trailing_newline(
    secret_file: Path,
) -> None:
    data = with_section("api", headers={"X-Token": f"file://{secret_file}"})

    loaded = settings_from_mapping(data, NO_ENVIRONMENT)

    assert loaded.api.headers["X-Token"] == CANARY
    assert ("api", "headers", "X-Token") in loaded.secret_paths


def test_an_env_secret_is_read_from_the_given_environment() -> None:
    data = with_section("kafka", consumer={"sasl.username": CANARY_ENV_REFERENCE})

    loaded = settings_from_mapping(data, {CANARY_VARIABLE: CANARY})

    assert loaded.kafka.consumer["sasl.username"] == CANARY


def test_resolved_secrets_appear_in_no_rendering(secret_file: Path) -> None:
    data = with_section("api", headers={"X-Trace": f"file://{secret_file}"})
    data["kafka"]["consumer"] = {"sasl.username": CANARY_ENV_REFERENCE}

    loaded = settings_from_mapping(data, {CANARY_VARIABLE: CANARY})

    rendered = render_masked(loaded)
    assert CANARY not in rendered
    assert "X-Trace: '***'" in rendered
    assert CANARY not in repr(loaded)
    assert CANARY not in repr(loaded.api)


def test_a_secret_that_fails_validation_is_not_quoted_in_the_error() -> None:
    data = with_section("pipeline", transform=CANARY_ENV_REFERENCE)
    data["metrics"] = {"port": CANARY_ENV_REFERENCE}

    error = load_error(data, {CANARY_VARIABLE: CANARY})

    assert {problem.path for problem in error.problems} == {
        "pipeline.transform",
        "metrics.port",
    }
    assert CANARY not in str(error)
    assert problem_at(error, "metrics.port").value == '"***"'


def test_a_missing_secret_file_names_the_key_and_the_reference(
    tmp_path: Path,
) -> None:
    reference = f"file://{tmp_path / 'absent'}"
    data = with_section("api", headers={"Authorization": reference})

    problem = problem_at(load_error(data), "api.headers.Authorization")

    assert problem.rule == "secret-reference"
    assert problem.value == reference
    assert "not found" in problem.message


def test_an_unset_secret_variable_names_the_key_and_the_reference() -> None:
    data = with_section("api", primary_url="env://API_URL")

    problem = problem_at(load_error(data), "api.primary_url")

    assert problem.value == "env://API_URL"
    assert "API_URL is not set" in problem.message


def test_a_relative_secret_file_reference_is_refused() -> None:
    data = with_section("api", headers={"X-Key": "file://secrets/key"})

    problem = problem_at(load_error(data), "api.headers.X-Key")

    assert "absolute path" in problem.message


# Masking by name and in URLs


def test_credential_named_values_are_masked_whatever_their_source() -> None:
    data = with_section(
        "api", headers={"X-Api-Key": "k1", "Proxy-Authorization": "p1", "Accept": "a1"}
    )
    data["kafka"]["consumer"] = {"sasl.password": "pw", "ssl.key.pem": "pem"}

    masked = settings_from_mapping(data, NO_ENVIRONMENT).masked()

    assert masked["api"]["headers"] == {
        "X-Api-Key": "***",
        "Proxy-Authorization": "***",
        "Accept": "a1",
    }
    assert masked["kafka"]["consumer"] == {"sasl.password": "***", "ssl.key.pem": "***"}


def test_the_password_in_a_url_is_masked() -> None:
    data = with_section("api", primary_url="https://bridge:hunter2@api.example.com/in")

    masked = settings_from_mapping(data, NO_ENVIRONMENT).masked()

    assert masked["api"]["primary_url"] == "https://bridge:***@api.example.com/in"


# Environment overrides


def test_an_override_replaces_a_file_value_and_is_read_as_yaml() -> None:
    data = with_section("pipeline", workers=8)

    loaded = settings_from_mapping(data, {"KAFKA_BRIDGE__PIPELINE__WORKERS": "4"})

    assert loaded.pipeline.workers == 4


def test_an_override_can_give_a_list_and_a_nested_setting() -> None:
    environ = {
        "KAFKA_BRIDGE__KAFKA__TOPICS": "[orders, refunds]",
        "KAFKA_BRIDGE__API__RETRY__MULTIPLIER": "3",
    }

    loaded = settings_from_mapping(minimal(), environ)

    assert loaded.kafka.topics == ("orders", "refunds")
    assert loaded.api.retry.multiplier == 3.0


def test_override_names_ignore_letter_case() -> None:
    environ = {"kafka_bridge__Metrics__ENABLED": "false"}

    assert settings_from_mapping(minimal(), environ).metrics.enabled is False


def test_free_map_overrides_take_the_rest_of_the_name_as_the_key() -> None:
    environ = {
        "KAFKA_BRIDGE__KAFKA__CONSUMER__FETCH.WAIT.MAX.MS": "50",
        "KAFKA_BRIDGE__KAFKA__PRODUCER__LINGER.MS": "0123",
        "KAFKA_BRIDGE__API__HEADERS__X-Source": "bridge",
    }

    loaded = settings_from_mapping(minimal(), environ)

    assert loaded.kafka.consumer == {"fetch.wait.max.ms": "50"}
    assert loaded.kafka.producer == {"linger.ms": "0123"}
    assert loaded.api.headers == {"X-Source": "bridge"}


def test_an_override_supplies_a_key_the_file_lacks() -> None:
    data = minimal()
    del data["api"]

    environ = {"KAFKA_BRIDGE__API__PRIMARY_URL": "http://127.0.0.1:8080/in"}

    assert settings_from_mapping(data, environ).api.primary_url.startswith("http:")


def test_an_override_may_hold_a_secret_reference() -> None:
    environ = {
        "KAFKA_BRIDGE__API__HEADERS__X-Signature": CANARY_ENV_REFERENCE,
        CANARY_VARIABLE: CANARY,
    }

    loaded = settings_from_mapping(minimal(), environ)

    assert loaded.api.headers["X-Signature"] == CANARY
    assert CANARY not in render_masked(loaded)


def test_an_override_for_an_unknown_key_is_reported_naming_the_variable() -> None:
    environ = {"KAFKA_BRIDGE__PIPELINE__WORKER": "4"}

    problem = problem_at(load_error(minimal(), environ), "pipeline.worker")

    assert problem.rule == "additionalProperties"
    assert "KAFKA_BRIDGE__PIPELINE__WORKER" in problem.message
    assert "did you mean 'workers'?" in problem.fix


def test_an_invalid_override_value_is_reported_naming_the_variable() -> None:
    environ = {"KAFKA_BRIDGE__METRICS__PORT": "[2112"}

    problem = problem_at(load_error(minimal(), environ), "metrics.port")

    assert problem.rule == "type"
    assert "KAFKA_BRIDGE__METRICS__PORT" in problem.message


def test_an_override_inside_a_value_that_is_not_a_mapping_is_reported() -> None:
    data = minimal()
    data["metrics"] = "on"

    error = load_error(data, {"KAFKA_BRIDGE__METRICS__PORT": "9000"})

    assert any(problem.rule == "override" for problem in error.problems)


def test_the_config_path_variable_is_not_an_override() -> None:
    environ = {"KAFKA_BRIDGE_CONFIG": "/etc/kafka-bridge/config.yaml"}

    assert settings_from_mapping(minimal(), environ) == settings_from_mapping(
        minimal(), NO_ENVIRONMENT
    )


def test_an_override_name_with_an_empty_level_is_reported() -> None:
    name = "KAFKA_BRIDGE__PIPELINE____WORKERS"

    problem = problem_at(load_error(minimal(), {name: "4"}), name)

    assert problem.rule == "override"


def test_the_dead_letter_topic_can_be_set_from_the_environment() -> None:
    environ = {"KAFKA_BRIDGE__DLQ__TOPIC": "orders.dlq"}

    assert settings_from_mapping(minimal(), environ).dlq.topic == "orders.dlq"


def test_retryable_statuses_can_be_set_from_the_environment() -> None:
    environ = {"KAFKA_BRIDGE__API__RETRY__RETRYABLE_STATUSES": "[500, 503]"}

    loaded = settings_from_mapping(minimal(), environ)

    assert loaded.api.retry.retryable_statuses == frozenset({500, 503})


# The file


def test_a_file_is_loaded(write_config: Callable[[str], Path]) -> None:
    path = write_config(yaml.safe_dump(with_section("pipeline", workers=3)))

    assert load_settings(path, NO_ENVIRONMENT).pipeline.workers == 3


def test_invalid_yaml_is_reported_with_line_and_column(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config("kafka:\n  topics: [orders\napi: {}\n")

    error = load_error_from_file(path)

    assert error.problems[0].rule == "yaml"
    assert re.search(r"line \d+, column \d+", error.problems[0].message)


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    error = load_error_from_file(tmp_path / "absent.yaml")

    assert error.problems[0].message == "file not found"


def test_a_directory_is_reported_as_unreadable(tmp_path: Path) -> None:
    error = load_error_from_file(tmp_path)

    assert error.problems[0].rule == "readable"


def test_a_top_level_list_is_refused(write_config: Callable[[str], Path]) -> None:
    error = load_error_from_file(write_config("- kafka\n- api\n"))

    assert "not a mapping" in error.problems[0].message


def test_an_empty_file_leaves_every_setting_to_the_environment(
    write_config: Callable[[str], Path],
) -> None:
    environ = {
        "KAFKA_BRIDGE__KAFKA__BOOTSTRAP_SERVERS": "localhost:9092",
        "KAFKA_BRIDGE__KAFKA__TOPICS": "[orders]",
        "KAFKA_BRIDGE__API__PRIMARY_URL": "http://127.0.0.1:8080/in",
    }

    loaded = load_settings(write_config(""), environ)

    assert loaded.kafka.topics == ("orders",)


def test_a_key_written_twice_is_refused(write_config: Callable[[str], Path]) -> None:
    text = "metrics:\n  port: 1\n  port: 2\n"

    error = load_error_from_file(write_config(text))

    assert "twice" in error.problems[0].message


def test_a_key_yaml_reads_as_a_boolean_is_reported(
    write_config: Callable[[str], Path],
) -> None:
    text = yaml.safe_dump(minimal()) + "metrics:\n  on: true\n"

    error = load_error_from_file(write_config(text))

    assert problem_at(error, "metrics.True").rule == "key-type"


def test_an_alias_expanding_without_bound_is_refused(
    write_config: Callable[[str], Path],
) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 8):
        previous = f"*a{level - 1}"
        levels.append(f"a{level}: &a{level} [{', '.join([previous] * 10)}]")

    error = load_error_from_file(write_config("\n".join(levels) + "\n"))

    assert error.problems[0].rule == "size"


# The error type


def test_a_config_error_survives_pickling() -> None:
    error = ConfigError.single("a.b", rule="r", value="v", fix="f")

    copied = pickle.loads(pickle.dumps(error))

    assert copied.problems == error.problems
    assert str(copied) == str(error)


# The schema, the example file and the documentation


def test_the_schema_is_valid_and_describes_every_key() -> None:
    jsonschema.Draft202012Validator.check_schema(config_schema())

    for path, node in iter_key_paths():
        assert node.get("description"), path
        if "properties" in node:
            assert node.get("additionalProperties") is False, path


def test_the_example_file_loads() -> None:
    loaded = load_settings(EXAMPLE_FILE, NO_ENVIRONMENT)

    assert isinstance(loaded, Settings)


def test_the_example_file_shows_every_key_at_its_default() -> None:
    example = yaml.safe_load(EXAMPLE_FILE.read_text(encoding="utf-8"))

    for path, _ in iter_key_paths():
        assert has_path(example, path), ".".join(path)
    for path, default in schema_defaults().items():
        assert value_at(example, path) == default, ".".join(path)


def test_the_documentation_covers_every_key_with_its_default() -> None:
    docs = DOCS_FILE.read_text(encoding="utf-8")
    # A key's heading, then its lines up to the next heading.
    documented = dict(
        re.findall(r"#### `([\w.]+)`\n(?:(?!#).*\n)*?- Default: (.*)", docs)
    )
    defaults = schema_defaults()

    for path, _ in iter_key_paths():
        dotted = ".".join(path)
        assert f"`{dotted}`" in docs, dotted
        if path in defaults:
            written = documented[dotted].strip("`")
            assert yaml.safe_load(written) == defaults[path], dotted


# Whatever the input: a result or a ConfigError, and the secret stays hidden


_KNOWN_KEYS = sorted({part for path, _ in iter_key_paths() for part in path})

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(
        [
            CANARY_ENV_REFERENCE,
            "env://BRIDGE_TEST_UNSET",
            "file://relative",
            "https://user:pw@host/path",
            "envelope",
            "INFO",
        ]
    )
)
_keys = st.sampled_from([*_KNOWN_KEYS, "sasl.password", "Authorization"]) | st.text(
    max_size=8
)
_nested: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_keys, children, max_size=4),
    max_leaves=20,
)
_override_names = st.sampled_from(
    ["KAFKA_BRIDGE__" + "__".join(path).upper() for path, _ in iter_key_paths()]
    + ["KAFKA_BRIDGE__API__HEADERS__X-Secret", "KAFKA_BRIDGE__NOPE", "KAFKA_BRIDGE__"]
)
_override_values = st.text(max_size=12) | st.sampled_from(
    [CANARY_ENV_REFERENCE, "4", "[a, b]", "{x: 1}", "true", ""]
)


@st.composite
def _configurations(draw: st.DrawFn, file_reference: str) -> Any:
    """Near-valid configurations with random values patched in, or anything."""
    if draw(st.booleans()):
        return draw(st.dictionaries(_keys, _nested, max_size=5))

    data: Any = minimal()
    paths = st.sampled_from([path for path, _ in iter_key_paths()])
    values = _nested | st.just(file_reference)
    for path, value in draw(st.lists(st.tuples(paths, values), max_size=4)):
        level = data
        for key in path[:-1]:
            level = level.setdefault(key, {})
            if not isinstance(level, dict):
                break
        else:
            level[path[-1]] = value
    return data


def _assert_canary_hidden(data: Any, environ: Mapping[str, str]) -> None:
    try:
        loaded = settings_from_mapping(data, environ)
    except ConfigError as error:
        assert CANARY not in str(error)
        return
    assert CANARY not in render_masked(loaded)
    assert CANARY not in repr(loaded)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_data_loads_or_raises_config_error_never_showing_a_secret(
    data: st.DataObject, secret_file: Path
) -> None:
    file_reference = f"file://{secret_file}"
    configuration = data.draw(_configurations(file_reference))
    overrides = data.draw(
        st.dictionaries(_override_names, _override_values, max_size=3)
    )
    environ = {**overrides, CANARY_VARIABLE: CANARY}

    _assert_canary_hidden(configuration, environ)


_YAML_FRAGMENTS = [
    "kafka:",
    "api:",
    "pipeline:",
    "\n",
    "\n  ",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!!set ",
    "!custom ",
    "2001-02-30",
    "1e999",
    ".nan",
    "---\n",
    "'",
    '"',
    "#",
    "\t",
    "? ",
    "on",
    "primary_url",
    "topics",
    "workers",
    "bootstrap_servers",
    CANARY_ENV_REFERENCE,
    "https://u:pw@h",
]
_yaml_texts = st.lists(
    st.sampled_from(_YAML_FRAGMENTS) | st.text(max_size=3), max_size=30
).map("".join)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=_yaml_texts)
def test_any_yaml_text_loads_or_raises_config_error_never_showing_a_secret(
    text: str, write_config: Callable[[str], Path]
) -> None:
    path = write_config(text)

    try:
        loaded = load_settings(path, {CANARY_VARIABLE: CANARY})
    except ConfigError as error:
        assert CANARY not in str(error)
        return
    assert CANARY not in render_masked(loaded)
