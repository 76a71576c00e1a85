"""From a YAML file (or parsed data) and the environment to Settings.

Loading is a fixed sequence, and the order matters:

1. the data is copied as plain data, so later steps can walk it safely;
2. environment variables override it, before anything is checked, so an
   override can supply a key the file lacks;
3. secret references are resolved, after overrides, so that a variable may
   itself hold a reference such as `env://API_TOKEN`;
4. defaults are filled in from the schema;
5. the result is checked against the schema and the rules it cannot state.

Every problem found on the way is collected, and all are raised together
in one ConfigError, so a broken file is fixed in one pass, not one error
per restart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kafka_bridge.config.overrides import apply_overrides
from kafka_bridge.config.paths import dotted
from kafka_bridge.config.plain_data import to_plain_data
from kafka_bridge.config.references import resolve_references
from kafka_bridge.config.schema import node_at, with_defaults
from kafka_bridge.config.settings import Settings, build_settings
from kafka_bridge.config.validation import Context, schema_problems, semantic_problems
from kafka_bridge.config.yaml_file import read_yaml_file
from kafka_bridge.errors import ConfigError, ConfigProblem


def load_settings(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the YAML file at `path` and build Settings from it.

    `environ` supplies overrides and `env://` secrets; it defaults to the
    process environment. Raises ConfigError, listing every problem found.
    """
    return settings_from_mapping(read_yaml_file(path), environ)


def settings_from_mapping(
    data: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Settings:
    """Build Settings from already parsed data, as `load_settings` does."""
    environment = os.environ if environ is None else environ
    top: object = data
    if not isinstance(top, Mapping):
        raise ConfigError([_not_a_mapping(top)])

    plain, problems = to_plain_data(top)
    overridden = apply_overrides(plain, environment)
    resolved = resolve_references(overridden.data, environment)
    problems += overridden.problems + resolved.problems

    complete = with_defaults(_upper_case_level(resolved.data))
    context = Context(
        secret_paths=resolved.secret_paths,
        origins=overridden.origins,
        reported_paths=resolved.failed_paths,
    )
    problems += _check(complete, context)

    if problems:
        raise ConfigError(sorted(problems, key=lambda problem: problem.path))
    return build_settings(complete, frozenset(resolved.secret_paths))


def _check(data: Mapping[str, Any], context: Context) -> list[ConfigProblem]:
    found = schema_problems(data, context)
    reported = {problem.path for problem in found}
    reported.update(dotted(path) for path in context.reported_paths)
    return found + semantic_problems(data, context, reported)


def _upper_case_level(data: dict[str, Any]) -> dict[str, Any]:
    # The level is accepted in any letter case and stored in upper case. A
    # level that is not known in any case is left as written, so that the
    # error quotes what the user wrote.
    logging = data.get("logging")
    level = logging.get("level") if isinstance(logging, dict) else None
    if not isinstance(level, str) or not isinstance(logging, dict):
        return data

    known_levels = (node_at(("logging", "level")) or {}).get("enum", [])
    if level.upper() not in known_levels:
        return data
    return {**data, "logging": {**logging, "level": level.upper()}}


def _not_a_mapping(data: object) -> ConfigProblem:
    return ConfigProblem(
        path="(top level)",
        rule="type",
        value="",
        message=f"the configuration is a {type(data).__name__}, not a mapping",
        fix="pass a mapping with sections such as kafka and api",
    )
