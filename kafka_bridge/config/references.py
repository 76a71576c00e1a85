"""Secret references: `file:///abs/path` and `env://NAME` in place of a value.

Credentials belong in mounted secret files or in the environment, not in a
configuration file kept in version control. Any text value may therefore
name where its real value lives; this module fetches it and remembers the
key path, so that the value is masked wherever it is shown afterwards.
The reference itself is not secret and is quoted in errors; the value is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka_bridge.config.paths import KeyPath, SecretKey, dotted, secret_key
from kafka_bridge.errors import ConfigProblem

FILE_SCHEME = "file://"
ENV_SCHEME = "env://"

# A secret is a password or a key, never a stream such as /dev/zero.
_MAX_SECRET_FILE_BYTES = 1 << 20


@dataclass
class Resolution:
    """The data with its references replaced, and what that involved."""

    data: Any
    secret_paths: set[SecretKey] = field(default_factory=set)
    failed_paths: set[KeyPath] = field(default_factory=set)
    problems: list[ConfigProblem] = field(default_factory=list)


class _Unresolved(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def resolve_references(data: Any, environ: Mapping[str, str]) -> Resolution:
    """Replace every reference in `data` (plain data) by the value it names.

    A reference that cannot be resolved stays in place, is reported, and
    its path is listed in `failed_paths` so that validation does not
    complain about it a second time.
    """
    resolution = Resolution(data=None)
    resolution.data = _resolve(data, (), environ, resolution)
    return resolution


def is_reference(value: object) -> bool:
    """True for text that names a secret instead of holding a value."""
    return isinstance(value, str) and value.startswith((FILE_SCHEME, ENV_SCHEME))


def _resolve(
    value: Any, path: KeyPath, environ: Mapping[str, str], into: Resolution
) -> Any:
    if isinstance(value, dict):
        return {
            key: _resolve(child, (*path, key), environ, into)
            for key, child in value.items()
        }
    if isinstance(value, list):
        return [
            _resolve(child, (*path, index), environ, into)
            for index, child in enumerate(value)
        ]
    if not is_reference(value):
        return value

    try:
        secret = _fetch(value, environ)
    except _Unresolved as exc:
        into.failed_paths.add(path)
        into.problems.append(_problem(path, value, exc))
        return value

    into.secret_paths.add(secret_key(path))
    return secret


def _fetch(reference: str, environ: Mapping[str, str]) -> str:
    if reference.startswith(ENV_SCHEME):
        return _from_environment(reference.removeprefix(ENV_SCHEME), environ)
    return _from_file(reference.removeprefix(FILE_SCHEME))


def _from_environment(name: str, environ: Mapping[str, str]) -> str:
    if not name:
        raise _Unresolved(
            "secret reference names no variable", "write env://VARIABLE_NAME"
        )
    if name not in environ:
        raise _Unresolved(
            f"environment variable {name} is not set",
            f"set {name} in the bridge's environment, or change the reference",
        )
    return environ[name]


def _from_file(file_path: str) -> str:
    if not file_path.startswith("/"):
        raise _Unresolved(
            "secret file reference is not an absolute path",
            "write file:// followed by an absolute path, e.g. "
            "file:///run/secrets/api-token",
        )

    raw = _read_bounded(file_path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Unresolved(
            "secret file is not UTF-8 text", "store the secret as UTF-8 text"
        ) from None

    # Files written by editors and `echo` end with a newline that is not
    # part of the secret; only that one is dropped (CRLF counts as one).
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


def _read_bounded(file_path: str) -> bytes:
    try:
        with open(file_path, "rb") as secret_file:
            raw = secret_file.read(_MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _Unresolved(
            "secret file not found",
            "mount the secret at that path, or change the reference",
        ) from None
    except (OSError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        raise _Unresolved(
            f"secret file cannot be read ({detail})",
            "check that the path is a file the bridge may read",
        ) from None

    if len(raw) > _MAX_SECRET_FILE_BYTES:
        raise _Unresolved(
            "secret file is larger than 1 MiB",
            "point the reference at the file holding only the secret",
        )
    return raw


def _problem(path: KeyPath, reference: str, exc: _Unresolved) -> ConfigProblem:
    return ConfigProblem(
        path=dotted(path),
        rule="secret-reference",
        value=reference,
        message=exc.message,
        fix=exc.fix,
    )
