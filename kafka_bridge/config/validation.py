"""Checking configuration data, and saying what is wrong in a user's terms.

The JSON Schema does most of the checking. jsonschema's own messages quote
the whole offending value (secrets included) and speak of "additional
properties"; each error is translated here into a ConfigProblem that names
the setting, the rule, the value (masked where it may be secret) and a fix.
The few rules a schema cannot state are checked here as well.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # the package ships no type hints

from kafka_bridge.config.contract_schema import load_contract_schema
from kafka_bridge.config.masking import describe_value
from kafka_bridge.config.overrides import origin_of
from kafka_bridge.config.paths import KeyPath, dotted
from kafka_bridge.config.schema import SchemaNode, config_schema, known_keys, node_at
from kafka_bridge.errors import ConfigError, ConfigProblem

BUILT_IN_TRANSFORMS = ("envelope", "passthrough")
IMPORTED_TRANSFORM = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# Keys the bridge sets itself from its own settings.
_OWNED_KAFKA_KEYS = {
    "consumer": {"bootstrap.servers": "bootstrap_servers", "group.id": "group_id"},
    "producer": {"bootstrap.servers": "bootstrap_servers"},
}

# Consumer keys that would let librdkafka store or commit an offset before
# its record is delivered, losing the record if the bridge stops then.
_OFFSET_KEYS = ("enable.auto.commit", "enable.auto.offset.store")
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})

_SUCCESS_STATUSES = range(200, 300)

_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping of keys to values",
    "null": "null",
}

_BOUND_WORDS = {
    "minimum": ">=",
    "exclusiveMinimum": ">",
    "maximum": "<=",
    "exclusiveMaximum": "<",
}


@dataclass(frozen=True)
class Context:
    """What a problem needs beyond the data: which values are secret, which
    came from environment variables, and which were already reported."""

    secret_paths: Collection[tuple[str, ...]]
    origins: Mapping[KeyPath, str]
    reported_paths: Collection[KeyPath]

    def problem(
        self,
        path: KeyPath,
        rule: str,
        message: str,
        fix: str,
        value: Any = None,
        *,
        has_value: bool = True,
    ) -> ConfigProblem:
        """A problem at `path`, its value masked and its source named."""
        variable = origin_of(path, self.origins)
        if variable is not None:
            message = f"{message} (set by {variable})"

        shown = describe_value(value, path, self.secret_paths) if has_value else ""
        return ConfigProblem(
            path=dotted(path), rule=rule, value=shown, fix=fix, message=message
        )

    def already_reported(self, path: KeyPath) -> bool:
        return any(path[: len(done)] == done for done in self.reported_paths)


def schema_problems(data: Mapping[str, Any], context: Context) -> list[ConfigProblem]:
    """Every way `data` breaks the schema, in key order."""
    problems: list[ConfigProblem] = []
    for error in _validator().iter_errors(data):
        path: KeyPath = tuple(error.absolute_path)
        if not context.already_reported(path):
            problems.extend(_translate(error, path, context))
    return problems


@functools.cache
def _validator() -> Any:
    return jsonschema.Draft202012Validator(config_schema())


def semantic_problems(
    data: Mapping[str, Any], context: Context, reported: Collection[str]
) -> list[ConfigProblem]:
    """Rules the schema cannot state, skipping settings already reported."""
    found = [
        *_backoff_order(data, context),
        *_transform(data, context),
        *_owned_keys(data, context),
        *_offset_keys(data, context),
        *_success_statuses(data, context),
        *_dead_letter_loop(data, context),
        *_replay_into_dead_letters(data, context),
        *_replay_group(data, context),
        *_contract_schema(data, context),
        *_non_finite(data, (), context),
    ]
    return [p for p in found if p.path not in reported]


def _translate(
    error: jsonschema.ValidationError, path: KeyPath, context: Context
) -> list[ConfigProblem]:
    keyword: str = error.validator
    if keyword == "additionalProperties":
        extra = _unknown_keys(path, error.instance)
        return [_unknown_key(path, key, error.instance, context) for key in extra]
    if keyword == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        return [_missing_key(path, key, context) for key in missing]
    if "propertyNames" in error.schema_path:
        return [_bad_key_name(path, error, context)]
    return [_bad_value(path, error, context)]


def _unknown_keys(path: KeyPath, instance: Mapping[str, Any]) -> list[str]:
    node = node_at(path) or {}
    known = set(known_keys(node))
    return [key for key in instance if key not in known]


def _unknown_key(
    path: KeyPath, key: str, instance: Mapping[str, Any], context: Context
) -> ConfigProblem:
    known = known_keys(node_at(path) or {})
    close = difflib.get_close_matches(key, known, n=1)
    suggestion = f"did you mean '{close[0]}'?" if close else ""
    fix = suggestion or f"known keys here: {', '.join(known)}"

    return context.problem(
        (*path, key), "additionalProperties", "unknown key", fix, instance[key]
    )


def _missing_key(path: KeyPath, key: str, context: Context) -> ConfigProblem:
    full = (*path, key)
    fix = f"set {dotted(full)}"
    example = _example(node_at(full) or {})
    if example:
        fix += f", e.g. {key}: {example}"
    return context.problem(
        full, "required", "required key is missing", fix, has_value=False
    )


def _bad_key_name(
    path: KeyPath, error: jsonschema.ValidationError, context: Context
) -> ConfigProblem:
    name = str(error.instance)
    fix = error.schema.get("x-fix", f"use a name matching {error.validator_value}")
    return context.problem(
        (*path, name), "propertyNames", "key name is not allowed", fix,
        has_value=False,
    )


def _bad_value(
    path: KeyPath, error: jsonschema.ValidationError, context: Context
) -> ConfigProblem:
    keyword: str = error.validator
    schema: SchemaNode = error.schema
    message, fix = _explain(keyword, error.validator_value, schema)
    return context.problem(path, keyword, message, fix, error.instance)


def _explain(keyword: str, expected: Any, schema: SchemaNode) -> tuple[str, str]:
    if keyword == "type":
        words = _type_words(expected)
        return f"must be {words}", f"write {words} here{_example_suffix(schema)}"
    if keyword == "enum":
        allowed = ", ".join(str(item) for item in expected)
        return "is not one of the allowed values", f"use one of: {allowed}"
    if keyword in _BOUND_WORDS:
        bound = f"{_BOUND_WORDS[keyword]} {expected}"
        return f"must be {bound}", f"use a value {_bounds(schema)}"
    if keyword == "pattern":
        fix = schema.get("x-fix", f"use a value matching {expected}")
        return "does not have the expected form", fix
    if keyword == "minLength":
        return "must not be empty", "write a non-empty value"
    if keyword == "minItems":
        entries = f"{expected} {'entry' if expected == 1 else 'entries'}"
        return f"must list at least {entries}", (
            f"list at least {entries}{_example_suffix(schema)}"
        )
    if keyword == "uniqueItems":
        return "lists an entry more than once", "remove the repeated entries"
    return f"breaks the {keyword} rule", f"make it satisfy {keyword}: {expected}"


def _type_words(expected: str | list[str]) -> str:
    kinds = [expected] if isinstance(expected, str) else list(expected)
    if "number" in kinds and "integer" in kinds:
        kinds.remove("integer")

    words = [_TYPE_WORDS.get(kind, kind) for kind in kinds]
    if len(words) == 1:
        return words[0]
    return f"{', '.join(words[:-1])} or {words[-1]}"


def _bounds(schema: SchemaNode) -> str:
    parts = [
        f"{word} {schema[keyword]}"
        for keyword, word in _BOUND_WORDS.items()
        if keyword in schema
    ]
    return " and ".join(parts)


def _example(schema: SchemaNode) -> str:
    examples = schema.get("examples")
    if not examples:
        return ""
    return describe_value(examples[0], (), ())


def _example_suffix(schema: SchemaNode) -> str:
    example = _example(schema)
    return f", e.g. {example}" if example else ""


def _section(data: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    level: Any = data
    for key in path:
        level = level.get(key) if isinstance(level, Mapping) else None
    return level if isinstance(level, Mapping) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _backoff_order(data: Mapping[str, Any], context: Context) -> list[ConfigProblem]:
    retry = _section(data, "api", "retry")
    initial: Any = retry.get("initial_backoff_seconds")
    maximum: Any = retry.get("max_backoff_seconds")
    comparable = _is_number(initial) and _is_number(maximum)
    if not comparable or maximum >= initial:
        return []

    path: KeyPath = ("api", "retry", "max_backoff_seconds")
    return [
        context.problem(
            path,
            "max-backoff-at-least-initial",
            "is below api.retry.initial_backoff_seconds",
            "raise max_backoff_seconds or lower initial_backoff_seconds "
            "so that max >= initial",
            maximum,
        )
    ]


def _transform(data: Mapping[str, Any], context: Context) -> list[ConfigProblem]:
    transform = _section(data, "pipeline").get("transform")
    if not isinstance(transform, str) or not transform:
        return []
    if transform in BUILT_IN_TRANSFORMS or IMPORTED_TRANSFORM.match(transform):
        return []

    return [
        context.problem(
            ("pipeline", "transform"),
            "transform",
            "is neither a built-in transform nor module:function",
            "use envelope, passthrough, or an import reference such as "
            "mycompany.transforms:to_order",
            transform,
        )
    ]


def _owned_keys(data: Mapping[str, Any], context: Context) -> list[ConfigProblem]:
    problems = []
    for map_name, owned in _OWNED_KAFKA_KEYS.items():
        properties = _section(data, "kafka", map_name)
        for key, setting in owned.items():
            if key in properties:
                problems.append(
                    context.problem(
                        ("kafka", map_name, key),
                        "set-by-bridge",
                        f"is set from kafka.{setting}",
                        f"remove it here and set kafka.{setting} instead",
                        properties[key],
                    )
                )
    return problems


def _offset_keys(data: Mapping[str, Any], context: Context) -> list[ConfigProblem]:
    consumer = _section(data, "kafka", "consumer")
    return [
        context.problem(
            ("kafka", "consumer", key),
            "offsets-owned-by-bridge",
            "would let librdkafka store or commit offsets on its own",
            "remove it: the bridge stores and commits offsets itself, only "
            "after a record is delivered or dead-lettered",
            consumer[key],
        )
        for key in _OFFSET_KEYS
        if key in consumer and not _is_false(consumer[key])
    ]


def _is_false(value: Any) -> bool:
    # librdkafka reads text; overrides inside the map stay text too.
    if isinstance(value, str):
        return value.strip().lower() in _FALSE_WORDS
    return value is False or (_is_number(value) and value == 0)


def _success_statuses(
    data: Mapping[str, Any], context: Context
) -> list[ConfigProblem]:
    statuses = _section(data, "api", "retry").get("retryable_statuses")
    if not isinstance(statuses, list):
        return []

    return [
        context.problem(
            ("api", "retry", "retryable_statuses", index),
            "not-a-success-status",
            "is a success status, which is never retried",
            "remove it; list only failure statuses such as 429 or 503",
            status,
        )
        for index, status in enumerate(statuses)
        if _is_number(status) and status in _SUCCESS_STATUSES
    ]


def _dead_letter_loop(
    data: Mapping[str, Any], context: Context
) -> list[ConfigProblem]:
    dead_letters = _section(data, "dlq").get("topic")
    topics = _section(data, "kafka").get("topics")
    if not isinstance(dead_letters, str) or not isinstance(topics, list):
        return []

    for index, consumed in enumerate(topics):
        found = _consumption(consumed, dead_letters, f"kafka.topics[{index}]")
        if found is not None:
            message, fix = found
            return [
                context.problem(
                    ("dlq", "topic"),
                    "dead-letters-not-consumed",
                    f"{message}: dead letters would be consumed and delivered again",
                    fix,
                    dead_letters,
                )
            ]
    return []


def _consumption(subscription: Any, topic: str, where: str) -> tuple[str, str] | None:
    """How `subscription` would consume `topic`, and the fix; None if not."""
    if subscription == topic:
        return (
            f"is also consumed, as {where}",
            f"name a separate topic such as {topic}.dlq",
        )
    if _pattern_matches(subscription, topic):
        return (
            f"is also consumed, matching the pattern {where}",
            f"name a separate topic that {where} does not match",
        )
    return None


def _pattern_matches(subscription: Any, topic: str) -> bool:
    # librdkafka reads a subscription that starts with ^ as a regular
    # expression; Python's dialect agrees on the patterns people write.
    if not isinstance(subscription, str) or not subscription.startswith("^"):
        return False
    try:
        return re.search(subscription, topic) is not None
    except re.error:
        return False


def _replay_into_dead_letters(
    data: Mapping[str, Any], context: Context
) -> list[ConfigProblem]:
    dead_letters = _section(data, "dlq").get("topic")
    allowed = _section(data, "dlq", "replay").get("allowed_topics")
    if not isinstance(dead_letters, str) or not isinstance(allowed, list):
        return []

    return [
        context.problem(
            ("dlq", "replay", "allowed_topics", index),
            "not-the-dead-letter-topic",
            "is dlq.topic: replayed letters would land among the dead "
            "letters they came from",
            "remove it; list the topics records are replayed into, such as "
            "the ones in kafka.topics",
            topic,
        )
        for index, topic in enumerate(allowed)
        if topic == dead_letters
    ]


def _replay_group(data: Mapping[str, Any], context: Context) -> list[ConfigProblem]:
    group = _section(data, "dlq", "replay").get("group_id")
    bridge_group = _section(data, "kafka").get("group_id")
    if not isinstance(group, str) or group != bridge_group:
        return []

    return [
        context.problem(
            ("dlq", "replay", "group_id"),
            "separate-replay-group",
            "is kafka.group_id: the running bridges' group would refuse "
            "the replay's commits",
            f"name a group of its own, such as {group}-dlq-replay, or null "
            "for that default",
            group,
        )
    ]


def _contract_schema(
    data: Mapping[str, Any], context: Context
) -> list[ConfigProblem]:
    path = _section(data, "api").get("contract_schema")
    if not isinstance(path, str) or not path:
        return []

    try:
        load_contract_schema(path)
    except ConfigError as error:
        return [
            context.problem(
                ("api", "contract_schema"), found.rule, found.message, found.fix, path
            )
            for found in error.problems
        ]
    return []


def _non_finite(value: Any, path: KeyPath, context: Context) -> Iterator[ConfigProblem]:
    if isinstance(value, float) and not math.isfinite(value):
        yield context.problem(
            path, "finite", "must be a finite number", "write an ordinary number",
            value,
        )
    elif isinstance(value, Mapping):
        for key, child in value.items():
            yield from _non_finite(child, (*path, key), context)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _non_finite(child, (*path, index), context)
