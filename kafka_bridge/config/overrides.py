"""Environment variables that override settings from the file.

Containers are configured through their environment more easily than
through a mounted file, so `KAFKA_BRIDGE__PIPELINE__WORKERS=4` replaces
`pipeline.workers`. Two underscores separate levels, and section and key
names ignore letter case. Values are read as YAML, so `4` is a number,
`true` a boolean and `[a, b]` a list.

Inside the free-form maps (`kafka.consumer`, `kafka.producer`,
`api.headers`) the rest of the variable name is the key, taken literally:
an environment variable name cannot tell `_` from `.` portably, so none is
guessed. librdkafka keys are lower-cased (`...__CONSUMER__FETCH.WAIT.MAX.MS`
sets `fetch.wait.max.ms`); header names keep their case. Values in these
maps stay text, which is what librdkafka and HTTP expect anyway, and keeps
a password such as `0123` from turning into a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from kafka_bridge.config.paths import KeyPath, dotted
from kafka_bridge.config.plain_data import to_plain_data
from kafka_bridge.config.schema import is_pass_through, node_at
from kafka_bridge.errors import ConfigProblem

PREFIX = "KAFKA_BRIDGE__"

_CASE_KEEPING_MAPS = frozenset({("api", "headers")})


@dataclass
class Overridden:
    """The data after overrides, and which variable set which key."""

    data: dict[str, Any]
    origins: dict[KeyPath, str] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)


@dataclass(frozen=True)
class _Target:
    path: KeyPath
    in_free_map: bool


def apply_overrides(
    data: Mapping[str, Any], environ: Mapping[str, str]
) -> Overridden:
    """Apply every `KAFKA_BRIDGE__...` variable in `environ` to `data`.

    `data` is plain data and is not changed; variables are applied in name
    order so that the result does not depend on the environment's order.
    """
    result = Overridden(data=_copy_sections(data))
    for name in sorted(environ):
        if name.upper().startswith(PREFIX):
            _apply_one(name, environ[name], result)
    return result


def origin_of(path: KeyPath, origins: Mapping[KeyPath, str]) -> str | None:
    """The variable that set `path` or a section holding it, if any."""
    for length in range(len(path), 0, -1):
        name = origins.get(path[:length])
        if name is not None:
            return name
    return None


def _copy_sections(data: Mapping[str, Any]) -> dict[str, Any]:
    # Overrides write into nested dicts; copying the dict levels keeps the
    # caller's data as it was.
    return {
        key: _copy_sections(value) if isinstance(value, dict) else value
        for key, value in data.items()
    }


def _apply_one(name: str, text: str, into: Overridden) -> None:
    target = _target(name[len(PREFIX) :])
    if target is None:
        into.problems.append(_malformed(name))
        return

    raw = text if target.in_free_map else _parse_value(text)
    value, problems = to_plain_data(raw, target.path)
    into.problems.extend(problems)

    blocked_at = _store(into.data, target.path, value)
    if blocked_at is not None:
        into.problems.append(_blocked(name, blocked_at))
        return
    into.origins[target.path] = name


def _target(rest: str) -> _Target | None:
    parts = rest.split("__")
    path: list[str] = []
    for index, part in enumerate(parts):
        node = node_at(tuple(path))
        if node is not None and path and is_pass_through(node):
            return _free_map_target(path, "__".join(parts[index:]))
        if not part:
            return None
        path.append(part.lower())
    return _Target(tuple(path), in_free_map=False)


def _free_map_target(map_path: list[str], key: str) -> _Target | None:
    if not key:
        return None
    if tuple(map_path) not in _CASE_KEEPING_MAPS:
        key = key.lower()
    return _Target((*map_path, key), in_free_map=True)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError):
        # Not YAML (an unbalanced bracket, say): the text is the value, and
        # validation reports it if that is not what the setting takes.
        return text


def _store(data: dict[str, Any], path: KeyPath, value: Any) -> KeyPath | None:
    """Set `path` to `value`; return the path that blocks it, if any."""
    level = data
    for depth, key in enumerate(path[:-1]):
        child = level.get(str(key))
        if child is None:
            child = level[str(key)] = {}
        elif not isinstance(child, dict):
            return path[: depth + 1]
        level = child

    level[str(path[-1])] = value
    return None


def _malformed(name: str) -> ConfigProblem:
    return ConfigProblem(
        path=name,
        rule="override",
        value="",
        message="environment variable name has an empty level",
        fix="separate levels with exactly two underscores, "
        "e.g. KAFKA_BRIDGE__PIPELINE__WORKERS",
    )


def _blocked(name: str, blocked_at: KeyPath) -> ConfigProblem:
    where = dotted(blocked_at)
    return ConfigProblem(
        path=where,
        rule="override",
        value="",
        message=f"{name} sets a key inside {where}, which is not a mapping",
        fix=f"make {where} a mapping in the file, or unset {name}",
    )
