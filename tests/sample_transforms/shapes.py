"""Example user transforms: each shows one thing a transform may do."""

from __future__ import annotations

import json
import os
from typing import Any

from kafka_bridge.records import Record


def upper_name(record: Record) -> dict[str, Any]:
    """Returns a dict: the bridge encodes it as JSON."""
    value = json.loads(record.value or b"{}")
    return {"name": value["name"].upper(), "offset": record.offset}


def as_bytes(record: Record) -> bytes:
    """Returns bytes: the bridge posts them as they are."""
    return f"{record.topic}:{record.offset}".encode()


def explode(record: Record) -> Any:
    """Raises, as a buggy transform would."""
    value: dict[str, Any] = json.loads(record.value or b"{}")
    return value["missing"]


def not_json(record: Record) -> Any:
    """Returns something JSON cannot encode."""
    return {1, 2}


def exit_process(record: Record) -> Any:
    """Ends its process at once, as a crash in native code would."""
    os._exit(3)
