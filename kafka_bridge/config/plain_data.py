"""Parsed input turned into plain data the rest of loading can trust.

YAML can produce keys that are not text (`on:` reads as `True`), nesting
without end (an alias to its own parent) and documents that expand to
millions of nodes (aliases of aliases). Every later step walks the data,
so it first passes through here: keys become text or are reported, tuples
become lists, and both depth and size are bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka_bridge.config.paths import KeyPath, dotted
from kafka_bridge.errors import ConfigError, ConfigProblem

_MAX_DEPTH = 32
_MAX_NODES = 100_000


@dataclass
class _Budget:
    nodes_left: int = _MAX_NODES
    problems: list[ConfigProblem] = field(default_factory=list)


def to_plain_data(value: Any, path: KeyPath = ()) -> tuple[Any, list[ConfigProblem]]:
    """Copy `value` as dicts with text keys, lists and scalars.

    Returns the copy and the problems found (keys that are not text, which
    are left out of the copy). Raises ConfigError at once when the data
    nests deeper or holds more values than any configuration needs, since
    nothing useful can be said about the rest of it.
    """
    budget = _Budget()
    plain = _copy(value, path, budget)
    return plain, budget.problems


def _copy(value: Any, path: KeyPath, budget: _Budget) -> Any:
    _spend(path, budget)

    if isinstance(value, Mapping):
        return _copy_mapping(value, path, budget)
    if isinstance(value, list | tuple):
        return [
            _copy(child, (*path, index), budget)
            for index, child in enumerate(value)
        ]
    return value


def _copy_mapping(
    value: Mapping[Any, Any], path: KeyPath, budget: _Budget
) -> dict[str, Any]:
    copied: dict[str, Any] = {}
    for key, child in value.items():
        if isinstance(key, str):
            copied[key] = _copy(child, (*path, key), budget)
        else:
            budget.problems.append(_key_not_text(key, path))
    return copied


def _key_not_text(key: Any, path: KeyPath) -> ConfigProblem:
    return ConfigProblem(
        path=dotted((*path, str(key))),
        rule="key-type",
        value="",
        message=f"key reads as {type(key).__name__}, not text",
        fix="quote the key in the file (YAML reads yes, on, no, off "
        "and numbers as values, not names)",
    )


def _spend(path: KeyPath, budget: _Budget) -> None:
    budget.nodes_left -= 1
    if len(path) > _MAX_DEPTH:
        raise ConfigError([_too_big(path, f"nests deeper than {_MAX_DEPTH} levels")])
    if budget.nodes_left < 0:
        raise ConfigError([_too_big(path, f"holds more than {_MAX_NODES} values")])


def _too_big(path: KeyPath, what: str) -> ConfigProblem:
    return ConfigProblem(
        path=dotted(path[:2]),
        rule="size",
        value="",
        message=f"the configuration {what}",
        fix="check for an alias that refers to itself or is repeated "
        "far more than intended",
    )
