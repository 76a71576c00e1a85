"""Which configuration values are secret, and how they are hidden.

The effective configuration is printed by `check-config` and logged at
start, and bad values are quoted in error messages; all three go through
this module so that a credential never reaches a terminal or a log.

A value is secret when it came from a secret reference (`file://`,
`env://`), when its key names a credential (a librdkafka `*password*`
property, an `Authorization` header), or, inside a URL, when it is the
userinfo before the `@`. Error messages are more cautious still: there the
value may sit under a mistyped key, so any key the schema does not declare
that merely hints at a credential is masked, and so is every header value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from kafka_bridge.config.paths import KeyPath, secret_key
from kafka_bridge.config.schema import is_declared

MASK = "***"

_KAFKA_MAPS = frozenset({("kafka", "consumer"), ("kafka", "producer")})
_HEADERS = ("api", "headers")

_KAFKA_SECRET_MARKS = (
    "password",
    "secret",
    "sasl.oauthbearer.config",
    "ssl.key.pem",
)
_HEADER_SECRET_MARKS = ("auth", "key", "token", "secret", "password", "cookie")
_CAUTIOUS_MARKS = (*_KAFKA_SECRET_MARKS, *_HEADER_SECRET_MARKS, "credential")

# The authority ends at the first / ? or #; userinfo is everything in it up
# to the last @, so a password holding an unescaped @ is still covered.
_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#]*)@"
)

_RENDERED_VALUE_MAX_CHARS = 120

Predicate = Callable[[KeyPath], bool]


def is_named_secret(path: KeyPath) -> bool:
    """True where the key's name marks a credential, whatever its source."""
    if len(path) != 3 or not isinstance(path[2], str):
        return False

    name = path[2].lower()
    section = path[:2]
    if section in _KAFKA_MAPS:
        return any(mark in name for mark in _KAFKA_SECRET_MARKS)
    if section == _HEADERS:
        return any(mark in name for mark in _HEADER_SECRET_MARKS)
    return False


def may_be_secret(path: KeyPath) -> bool:
    """The cautious test used for values quoted in error messages."""
    if is_named_secret(path) or path[: len(_HEADERS)] == _HEADERS:
        return True
    if path and is_declared(path):
        # A key the schema names, such as dedup.key, says what it holds;
        # a secret in it comes from a reference and is masked as one.
        return False

    names = (part.lower() for part in path if isinstance(part, str))
    return any(mark in name for name in names for mark in _CAUTIOUS_MARKS)


def mask_userinfo(text: str) -> str:
    """Hide URL credentials: `https://u:pw@h` becomes `https://u:***@h`."""
    return _USERINFO.sub(_masked_userinfo, text)


def _masked_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match.group("userinfo").partition(":")
    hidden = f"{user}:{MASK}" if colon else MASK
    return f"{match.group('scheme')}{hidden}@"


def mask_tree(value: Any, path: KeyPath, is_secret: Predicate) -> Any:
    """A copy of `value` with each secret replaced by `MASK`.

    `is_secret` is asked about every key path from `path` down; a secret
    container is replaced whole. URL credentials are hidden in every string.
    """
    if is_secret(path):
        return MASK
    if isinstance(value, Mapping):
        return {
            key: mask_tree(child, (*path, key), is_secret)
            for key, child in value.items()
        }
    if isinstance(value, list | tuple):
        return [
            mask_tree(child, (*path, index), is_secret)
            for index, child in enumerate(value)
        ]
    if isinstance(value, str):
        return mask_userinfo(value)
    return value


def settings_predicate(secret_paths: Collection[tuple[str, ...]]) -> Predicate:
    """What `Settings.masked()` hides: references and credential names."""

    def is_secret(path: KeyPath) -> bool:
        return secret_key(path) in secret_paths or is_named_secret(path)

    return is_secret


def error_predicate(secret_paths: Collection[tuple[str, ...]]) -> Predicate:
    """What an error message hides: references and anything that may be."""

    def is_secret(path: KeyPath) -> bool:
        return secret_key(path) in secret_paths or may_be_secret(path)

    return is_secret


def describe_value(
    value: Any, path: KeyPath, secret_paths: Collection[tuple[str, ...]]
) -> str:
    """`value` as short one-line text for an error message, secrets masked."""
    masked = mask_tree(value, path, error_predicate(secret_paths))
    return _short(_as_text(masked))


def _as_text(value: Any) -> str:
    # JSON is YAML's flow style and always one line, which keeps one
    # problem per line however the value was written.
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return f"a {type(value).__name__}"


def _short(text: str) -> str:
    if len(text) <= _RENDERED_VALUE_MAX_CHARS:
        return text
    return text[: _RENDERED_VALUE_MAX_CHARS - 3] + "..."
