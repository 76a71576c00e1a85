"""Checking each transformed payload against the API's JSON Schema.

An API's contract is better enforced before the POST than discovered in a
400 answer: a payload that breaks it is dead-lettered with the rule it broke
and where, and the API never sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # ships no type hints
import orjson

from kafka_bridge.errors import ContractError

# Enough to locate the fault; a violating value may be personal data, so
# the message names the place and the rule, never the value.
_MAX_REPORTED = 3


class Contract:
    """A compiled JSON Schema that payloads must satisfy."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        validator_class = jsonschema.validators.validator_for(schema)
        self._validator = validator_class(schema)

    def check(self, body: bytes) -> None:
        """Raise ContractError naming the broken rules, or return."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ContractError("the payload is not JSON") from None

        errors = sorted(
            self._validator.iter_errors(payload),
            key=lambda error: list(error.absolute_path),
        )
        if errors:
            raise ContractError(_describe(errors))


def _describe(errors: list[Any]) -> str:
    shown = [
        f"{_location(error)}: breaks '{error.validator}'"
        for error in errors[:_MAX_REPORTED]
    ]
    more = len(errors) - len(shown)
    if more:
        shown.append(f"and {more} more")
    return "; ".join(shown)


def _location(error: Any) -> str:
    path = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}"
        for part in error.absolute_path
    )
    return f"${path}"
