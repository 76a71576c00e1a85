"""How a place in the configuration is named.

Every step of loading (overrides, secret references, validation, masking)
reports and looks up settings by their key path, so the two spellings of a
path live here: the tuple the code walks with and the dotted text people
read.
"""

from __future__ import annotations

KeyPath = tuple[str | int, ...]
"""Mapping keys and list indexes from the top of the configuration down."""

SecretKey = tuple[str, ...]
"""A key path with list indexes written as text, as `Settings.secret_paths`
stores it."""


def dotted(path: KeyPath) -> str:
    """Render a key path for people: `kafka.topics[0]`, `api.retry`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def secret_key(path: KeyPath) -> SecretKey:
    """The form of `path` stored in `Settings.secret_paths`."""
    return tuple(str(part) for part in path)
