"""Reading the configuration file, with every failure turned into a
ConfigError that says where the file is wrong.

PyYAML keeps the last of two equal keys without a word, which turns a
pasted section into a silently ignored one, so duplicates are refused here.
Messages quote YAML's own description of a syntax error and its position,
never the line itself, because that line may hold a credential.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode

from kafka_bridge.errors import ConfigError, ConfigProblem

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DuplicateKeyError(ConstructorError):
    """A mapping in the file holds the same key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a mapping that repeats a key."""

    def construct_mapping(
        self, node: MappingNode, deep: bool = False
    ) -> dict[Hashable, Any]:
        # Checked before merge keys (<<) are expanded: a key that
        # overrides a merged one is intended, a key written twice is not.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise _DuplicateKeyError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_file(path: str | os.PathLike[str]) -> dict[Any, Any]:
    """The mapping at the top of the YAML file at `path`.

    An empty file reads as an empty mapping, so that every setting can come
    from the environment. Raises ConfigError when the file cannot be read,
    is not YAML, or its top level is not a mapping.
    """
    name = os.fspath(path)
    text = _read_text(name)
    data = _parse(name, text)

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([_not_a_mapping(name, data)])
    return data


def _read_text(name: str) -> str:
    try:
        return Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        reason, fix = "file not found", "check the path to the configuration file"
    except UnicodeDecodeError:
        reason, fix = "file is not UTF-8 text", "save the file as UTF-8"
    except (OSError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        reason = f"file cannot be read ({detail})"
        fix = "check the path and that the bridge may read the file"
    raise ConfigError(
        [ConfigProblem(path=name, rule="readable", value="", message=reason, fix=fix)]
    )


def _parse(name: str, text: str) -> Any:
    try:
        # _UniqueKeyLoader derives from SafeLoader: no arbitrary objects.
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        problem = _syntax_problem(name, exc)
    except yaml.YAMLError:
        problem = _problem(name, "the file holds a character YAML does not allow")
    except ValueError:
        # The constructor raises ValueError for values such as 2023-02-30.
        problem = _problem(
            name, "a value looks like a date or number but is not a valid one"
        )
    except RecursionError:
        problem = _problem(name, "the file nests too deeply to read")
    raise ConfigError([problem])


def _syntax_problem(name: str, exc: yaml.MarkedYAMLError) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    # PyYAML splits its sentences: "expected a single document in the
    # stream" (context), "but found another document" (problem).
    parts = [part for part in (exc.context, exc.problem) if part]
    what = ", ".join(parts) or "invalid YAML"
    if mark is None:
        return _problem(name, f"invalid YAML: {what}")

    line, column = mark.line + 1, mark.column + 1
    if isinstance(exc, _DuplicateKeyError):
        fix = f"keep one of the two; the second is at line {line}"
    else:
        fix = f"correct the YAML at line {line}; quote values that hold : # or {{"
    return ConfigProblem(
        path=name,
        rule="yaml",
        value="",
        message=f"invalid YAML at line {line}, column {column}: {what}",
        fix=fix,
    )


def _problem(name: str, what: str) -> ConfigProblem:
    return ConfigProblem(
        path=name,
        rule="yaml",
        value="",
        message=what,
        fix="correct the file; quote values that should stay text",
    )


def _not_a_mapping(name: str, data: Any) -> ConfigProblem:
    return ConfigProblem(
        path=name,
        rule="type",
        value="",
        message=f"the top level is a {type(data).__name__}, not a mapping",
        fix="start the file with sections such as kafka: and api:",
    )
