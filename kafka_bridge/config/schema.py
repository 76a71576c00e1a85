"""The JSON Schema shipped with the package, and questions asked of it.

The schema is the single written source of the configuration's keys, their
rules and their defaults: the settings classes, the defaults filled into a
loaded file, the override parser and the error messages all read it here
rather than repeating it.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from kafka_bridge.config.paths import KeyPath

SchemaNode = Mapping[str, Any]


@functools.cache
def config_schema() -> SchemaNode:
    """The parsed `schema.json`, read once per process."""
    source = resources.files("kafka_bridge.config").joinpath("schema.json")
    text = source.read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def node_at(path: KeyPath) -> SchemaNode | None:
    """The schema of the key at `path`, or None when no such key exists.

    Keys inside a pass-through map (librdkafka properties, headers) share
    the map's `additionalProperties` schema.
    """
    node: SchemaNode = config_schema()
    for part in path:
        child = _child(node, part)
        if child is None:
            return None
        node = child
    return node


def _child(node: SchemaNode, part: str | int) -> SchemaNode | None:
    if isinstance(part, int):
        items = node.get("items")
        return items if isinstance(items, Mapping) else None

    properties: Mapping[str, SchemaNode] = node.get("properties", {})
    if part in properties:
        return properties[part]

    extra = node.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def is_declared(path: KeyPath) -> bool:
    """True when every key of `path` is one the schema names in a section.

    Keys inside pass-through maps and list entries are not declared: their
    names come from the user, not from the schema.
    """
    node: SchemaNode = config_schema()
    for part in path:
        properties: Mapping[str, SchemaNode] = node.get("properties", {})
        if not isinstance(part, str) or part not in properties:
            return False
        node = properties[part]
    return True


def is_pass_through(node: SchemaNode) -> bool:
    """True for a map whose keys are free (librdkafka properties, headers)."""
    return node.get("type") == "object" and "properties" not in node


def known_keys(node: SchemaNode) -> list[str]:
    """The keys a section declares, in schema order."""
    properties: Mapping[str, SchemaNode] = node.get("properties", {})
    return list(properties)


def default_at(*path: str) -> Any:
    """A fresh copy of the default the schema declares for `path`.

    Raises KeyError when the key has no default, so a typo in the settings
    classes fails at import time instead of passing None along.
    """
    node = node_at(path)
    if node is None or "default" not in node:
        raise KeyError(".".join(path))
    return copy.deepcopy(node["default"])


def with_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with every absent key that has a default filled in.

    Sections that are absent but have a default (`{}`) are filled in turn,
    so an empty `pipeline` section ends up holding every pipeline default.
    A section that is present but is not a mapping is left alone for the
    validator to report.
    """
    return _fill(config_schema(), data)


def _fill(node: SchemaNode, data: Mapping[str, Any]) -> dict[str, Any]:
    filled = dict(data)
    properties: Mapping[str, SchemaNode] = node.get("properties", {})

    for key, child in properties.items():
        if key not in filled and "default" in child:
            filled[key] = copy.deepcopy(child["default"])

        value = filled.get(key)
        if "properties" in child and isinstance(value, Mapping):
            filled[key] = _fill(child, value)

    return filled


def iter_key_paths() -> Iterator[tuple[tuple[str, ...], SchemaNode]]:
    """Every key the schema declares, sections first, in schema order."""
    yield from _walk((), config_schema())


def _walk(
    prefix: tuple[str, ...], node: SchemaNode
) -> Iterator[tuple[tuple[str, ...], SchemaNode]]:
    properties: Mapping[str, SchemaNode] = node.get("properties", {})
    for key, child in properties.items():
        path = (*prefix, key)
        yield path, child
        yield from _walk(path, child)
