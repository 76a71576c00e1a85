"""The contract schema: a JSON Schema every transformed payload must meet.

`api.contract_schema` names a file the user writes. It is read twice:
once when the configuration is checked, so that a broken file stops the
bridge before it connects to anything, and again by the delivery pipeline.
Both go through `load_contract_schema`, so a file that passed
`check-config` is read the same way when the bridge runs.

Errors say what is wrong and where in the file, but neither quote the file
nor name its path in the message: the path is the problem's value, which
the loader masks when it came from a secret reference.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # the package ships no type hints
import yaml

from kafka_bridge.errors import ConfigError

SETTING = "api.contract_schema"
RULE = "contract-schema"

_YAML_SUFFIXES = (".yaml", ".yml")

# A schema is a few kilobytes; the bound keeps a path such as /dev/zero or
# a mistaken data file from being read into memory.
_MAX_SCHEMA_FILE_BYTES = 8 << 20

_SCHEMA_MESSAGE_MAX_CHARS = 160

_DEFAULT_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_LESS_NESTING = "write the schema with less nesting, using $defs and $ref"

_JSON_TYPE_WORDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


class _Unusable(Exception):
    """The file cannot serve as the contract schema; says why and the fix."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def load_contract_schema(path: str) -> dict[str, Any]:
    """The JSON Schema in the file at `path`, parsed and checked.

    `path` is absolute or relative to the current directory. A file named
    `*.yaml` or `*.yml` is read as YAML, any other as JSON. The schema is
    checked against the JSON Schema draft its `$schema` names, 2020-12 when
    it names none. Raises ConfigError naming `api.contract_schema` when the
    file cannot be read, does not parse to an object, or is not a valid
    schema of a known draft.
    """
    try:
        return _load(Path(path))
    except _Unusable as unusable:
        raise ConfigError.single(
            SETTING,
            rule=RULE,
            value=path,
            fix=unusable.fix,
            message=unusable.message,
        ) from None


def _load(file: Path) -> dict[str, Any]:
    text = _read_text(file)

    is_yaml = file.suffix.lower() in _YAML_SUFFIXES
    parsed = _parse_yaml(text) if is_yaml else _parse_json(text)

    schema = _as_object(parsed)
    _check_schema(schema)
    return schema


def _read_text(file: Path) -> str:
    try:
        info = file.stat()
        if not stat.S_ISREG(info.st_mode):
            raise _Unusable(
                "is not a regular file", "name a JSON Schema file, not a directory"
            )
        if info.st_size > _MAX_SCHEMA_FILE_BYTES:
            raise _Unusable(
                f"file is larger than {_MAX_SCHEMA_FILE_BYTES >> 20} MiB",
                "name the JSON Schema file, not a data file",
            )
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Unusable(
            "file not found",
            "check the path; a relative path is taken from the directory "
            "the bridge is started in",
        ) from None
    except UnicodeDecodeError:
        raise _Unusable("file is not UTF-8 text", "save the file as UTF-8") from None
    except (OSError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or "invalid path"
        raise _Unusable(
            f"file cannot be read ({detail})",
            "check the path and that the bridge may read the file",
        ) from None


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Unusable(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            f"correct the JSON at line {exc.lineno}; a YAML schema needs a "
            "file name ending in .yaml or .yml",
        ) from None
    except RecursionError:
        raise _Unusable("the file nests too deeply to read", _LESS_NESTING) from None


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_problem(exc) from None
    except (yaml.YAMLError, ValueError):
        raise _Unusable("the file is not valid YAML", "correct the YAML") from None
    except RecursionError:
        raise _Unusable("the file nests too deeply to read", _LESS_NESTING) from None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> _Unusable:
    # YAML's own description of the error, never the offending line.
    parts = [part for part in (exc.context, exc.problem) if part]
    what = ", ".join(parts) or "invalid YAML"
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return _Unusable(f"invalid YAML: {what}", "correct the YAML")

    line, column = mark.line + 1, mark.column + 1
    return _Unusable(
        f"invalid YAML at line {line}, column {column}: {what}",
        f"correct the YAML at line {line}",
    )


def _as_object(parsed: Any) -> dict[str, Any]:
    if isinstance(parsed, dict):
        return parsed

    found = _JSON_TYPE_WORDS.get(type(parsed), f"a {type(parsed).__name__}")
    raise _Unusable(
        f"the file holds {found}, not an object",
        'write the schema as an object, e.g. {"type": "object"}',
    )


def _check_schema(schema: dict[str, Any]) -> None:
    draft = _draft(schema)
    try:
        draft.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise _Unusable(
            f"is not a valid JSON Schema at {error.json_path}: "
            f"{_short(error.message)}",
            "correct the schema; it is read as JSON Schema draft 2020-12 "
            "unless its $schema names another draft",
        ) from None
    except RecursionError:
        raise _Unusable("the schema nests too deeply to check", _LESS_NESTING) from None


def _draft(schema: dict[str, Any]) -> Any:
    """The validator class for the draft the schema declares, 2020-12 if none.

    Payloads are validated with the same choice, so the schema is checked
    by the rules it will be applied with.
    """
    declared = schema.get("$schema", _DEFAULT_DIALECT)
    draft = None
    if isinstance(declared, str):
        # With a default given, an unknown $schema returns it instead of
        # warning that a future jsonschema will refuse it.
        draft = jsonschema.validators.validator_for({"$schema": declared}, default=None)

    if draft is None:
        raise _Unusable(
            "its $schema names no JSON Schema draft the bridge knows",
            f"remove $schema, or set it to a draft such as {_DEFAULT_DIALECT}",
        )
    return draft


def _short(text: str) -> str:
    if len(text) <= _SCHEMA_MESSAGE_MAX_CHARS:
        return text
    return text[: _SCHEMA_MESSAGE_MAX_CHARS - 3] + "..."
