"""What each transform posts, byte for byte, and the envelope's contract.

Snapshots: a fixed set of records (integers, floats, unicode, nesting, a
null key, a binary key, headers, no timestamp) goes through `envelope`,
`passthrough` and a sample user transform; each body must equal, byte for
byte, the one stored under tests/snapshots/, one file per transform, as a
JSON object from record name to body text. A change in what the API
receives then shows up as a failing test and a readable diff.

The stored files change only on purpose. After checking that a new output
is right, rewrite them with::

    UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_payload_snapshots.py

which writes every file and skips the comparisons; run again without the
variable to see them pass, and commit the files with the change that
explains them.

Contract: every envelope built from those records satisfies the JSON
Schema of the envelope in tests/contract/envelope.schema.json, checked
with the bridge's own contract checker, and the schema refuses envelopes
that break it. The other transforms do not post envelopes, so their
bodies are held to their snapshots only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from kafka_bridge.config import load_contract_schema
from kafka_bridge.contract import Contract
from kafka_bridge.errors import ContractError
from kafka_bridge.records import Record
from kafka_bridge.transforms import Transform, load_transform

TESTS_DIR = Path(__file__).resolve().parent
SNAPSHOTS_DIR = TESTS_DIR / "snapshots"
ENVELOPE_SCHEMA = TESTS_DIR / "contract" / "envelope.schema.json"
UPDATE_VARIABLE = "UPDATE_SNAPSHOTS"

TIMESTAMP_MS = 1_700_000_000_000

# The transforms under test, by the name a configuration gives them, and
# the snapshot file of each.
TRANSFORMS = {
    "envelope": "envelope.json",
    "passthrough": "passthrough.json",
    "tests.sample_transforms.shapes:upper_name": "user-upper-name.json",
}


def _record(
    offset: int,
    value: Any,
    *,
    key: bytes | None = b"order-1",
    headers: tuple[tuple[str, bytes | None], ...] = (),
    timestamp_ms: int | None = TIMESTAMP_MS,
) -> Record:
    text = value if isinstance(value, str) else json.dumps(value)
    return Record(
        topic="orders",
        partition=offset % 3,
        offset=offset,
        key=key,
        value=text.encode(),
        headers=headers,
        timestamp_ms=timestamp_ms,
    )


# Values are written as JSON text where the exact spelling matters.
RECORDS: dict[str, Record] = {
    "ints": _record(
        0,
        '{"name": "ints", "zero": 0, "negative": -42, '
        '"beyond_double": 9007199254740993, '
        '"int64_max": 9223372036854775807, '
        '"uint64_max": 18446744073709551615}',
    ),
    "floats": _record(
        1,
        '{"name": "floats", "tenth": 0.1, "whole": 3.0, "tiny": 1e-300, '
        '"largest": 1.7976931348623157e308, "negative_zero": -0.0, '
        '"avogadro": 6.02214076E23}',
    ),
    "unicode": _record(
        2,
        '{"name": "unicod\u00e9", "text": "caf\u00e9 \u2615 \u65e5\u672c '
        '\U0001f680", "escaped": "\\u00e9\\ud83d\\ude80", '
        '"controls": "tab\\tnewline\\n", "separator": "\u2028"}',
        key="cl\u00e9-\u2615".encode(),
    ),
    "nested": _record(
        3,
        {
            "name": "nested",
            "order": {
                "lines": [
                    {"sku": "a-1", "quantity": 1},
                    {"sku": "b-2", "quantity": 2, "tags": []},
                ],
                "meta": {"empty": {}, "nothing": None, "flag": True},
            },
        },
    ),
    "null-key": _record(4, {"name": "null key"}, key=None),
    "binary-key": _record(5, {"name": "binary key"}, key=b"\xff\x00\xfe\x80"),
    "headers": _record(
        6,
        {"name": "headers"},
        headers=(
            ("trace-id", b"4bf92f35"),
            ("empty", None),
            ("binary", b"\xff\xfe"),
        ),
    ),
    "no-timestamp": _record(7, {"name": "no timestamp"}, timestamp_ms=None),
}


def _bodies(transform: Transform) -> dict[str, str]:
    """Each record's body as text; every transform here posts UTF-8."""
    return {
        name: transform(record).decode("utf-8")
        for name, record in RECORDS.items()
    }


def _write_snapshot(path: Path, bodies: dict[str, str]) -> None:
    SNAPSHOTS_DIR.mkdir(exist_ok=True)
    text = json.dumps(bodies, indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


@pytest.mark.parametrize("transform_name", sorted(TRANSFORMS))
def test_each_transform_posts_exactly_its_stored_snapshot(
    transform_name: str,
) -> None:
    path = SNAPSHOTS_DIR / TRANSFORMS[transform_name]
    bodies = _bodies(load_transform(transform_name))
    if os.environ.get(UPDATE_VARIABLE) == "1":
        _write_snapshot(path, bodies)
        pytest.skip(f"{UPDATE_VARIABLE}=1: wrote {path.name}, compared nothing")
    if not path.exists():
        pytest.fail(
            f"no snapshot at {path}; check the output, then write it with "
            f"{UPDATE_VARIABLE}=1"
        )

    stored = json.loads(path.read_text(encoding="utf-8"))

    assert bodies == stored


@pytest.fixture(scope="module")
def envelope_contract() -> Contract:
    """The envelope's schema, read the way the bridge reads a contract."""
    return Contract(load_contract_schema(str(ENVELOPE_SCHEMA)))


@pytest.mark.parametrize("record_name", list(RECORDS))
def test_every_envelope_satisfies_the_envelope_schema(
    record_name: str, envelope_contract: Contract
) -> None:
    body = load_transform("envelope")(RECORDS[record_name])

    envelope_contract.check(body)


def _valid_envelope() -> dict[str, Any]:
    body = load_transform("envelope")(RECORDS["nested"])
    envelope: dict[str, Any] = orjson.loads(body)
    return envelope


@pytest.mark.parametrize(
    ("change", "broken_rule"),
    [
        ({"offset": None}, "$.offset: breaks 'type'"),
        ({"partition": -1}, "$.partition: breaks 'minimum'"),
        ({"topic": ""}, "$.topic: breaks 'pattern'"),
        ({"timestamp_ms": 1.5}, "$.timestamp_ms: breaks 'type'"),
        ({"key_encoding": "latin-1"}, "$.key_encoding: breaks 'enum'"),
        ({"key": None}, "$.key_encoding: breaks 'const'"),
        ({"key_encoding": None}, "$.key_encoding: breaks 'enum'"),
        (
            {"key": "not base64!", "key_encoding": "base64"},
            "$.key: breaks 'pattern'",
        ),
        ({"headers": []}, "$: breaks 'additionalProperties'"),
    ],
)
def test_the_envelope_schema_refuses_a_broken_envelope(
    change: dict[str, Any], broken_rule: str, envelope_contract: Contract
) -> None:
    envelope = {**_valid_envelope(), **change}

    with pytest.raises(ContractError) as refused:
        envelope_contract.check(orjson.dumps(envelope))

    assert broken_rule in str(refused.value)


@pytest.mark.parametrize(
    "field",
    ["topic", "partition", "offset", "timestamp_ms", "key", "key_encoding",
     "value"],
)
def test_the_envelope_schema_requires_every_field(
    field: str, envelope_contract: Contract
) -> None:
    envelope = _valid_envelope()
    del envelope[field]

    with pytest.raises(ContractError, match="breaks 'required'"):
        envelope_contract.check(orjson.dumps(envelope))
