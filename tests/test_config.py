"""Loading the configuration: defaults, errors, secrets, overrides, docs."""

from __future__ import annotations

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
    ConfigError,
    ConfigProblem,
    PipelineSettings,
    RetrySettings,
    Settings,
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
