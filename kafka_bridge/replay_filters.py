"""Which dead letters a replay takes: the operator's selection.

After an outage, the dead-letter topic holds the letters of that outage
and older ones whose cause is not fixed yet. A filter picks the first kind
by when the record last failed, where it came from, and how it failed, so
that only records whose cause is gone are sent out again.

Times are compared with the letter's `kafka-bridge.failure.last` header
(the record's last failed attempt), or with the letter's Kafka timestamp
(when it was written to the DLQ) for a letter without that header. They
must carry a UTC offset: a time without one would be read in whichever
zone the replay happens to run in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from kafka_bridge.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    # Only for hints: the command line reads STAGES without the Kafka client.
    from kafka_bridge.stored_letters import StoredLetter

STAGES = ("decode", "transform", "contract", "delivery")

_LOWEST_STATUS = 100
_HIGHEST_STATUS = 599
_TIME_EXAMPLE = "2025-05-01T10:00:00Z or 2025-05-01T12:00:00+02:00"


@dataclass(frozen=True, slots=True, kw_only=True)
class LetterFilter:
    """What a letter must satisfy to be replayed; an empty filter takes all.

    `since` is inclusive and `until` exclusive; `from_offset` and
    `to_offset` are both inclusive and, like `partition`, refer to the
    record's original place. Each set of stages, error classes and
    statuses takes a letter with any of them.
    """

    since: datetime | None = None
    until: datetime | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    stages: frozenset[str] = frozenset()
    error_classes: frozenset[str] = frozenset()
    statuses: frozenset[int] = frozenset()

    def matches(self, letter: StoredLetter) -> bool:
        """True when the letter satisfies every condition set."""
        return (
            self._in_time(letter)
            and self._in_place(letter)
            and self._of_kind(letter)
        )

    def describe(self) -> dict[str, object]:
        """The conditions set, as plain data for the audit log."""
        shown: dict[str, object] = {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "partition": self.partition,
            "from_offset": self.from_offset,
            "to_offset": self.to_offset,
            "stages": sorted(self.stages),
            "error_classes": sorted(self.error_classes),
            "statuses": sorted(self.statuses),
        }
        return {name: value for name, value in shown.items() if value}

    def _in_time(self, letter: StoredLetter) -> bool:
        if self.since is None and self.until is None:
            return True
        moment = letter.failed_at
        if moment is None:
            return False
        after_start = self.since is None or moment >= self.since
        before_end = self.until is None or moment < self.until
        return after_start and before_end

    def _in_place(self, letter: StoredLetter) -> bool:
        record = letter.original
        if self.partition is not None and record.partition != self.partition:
            return False
        if self.from_offset is not None and record.offset < self.from_offset:
            return False
        return self.to_offset is None or record.offset <= self.to_offset

    def _of_kind(self, letter: StoredLetter) -> bool:
        return (
            _any_of(self.stages, letter.stage)
            and _any_of(self.error_classes, letter.error_class)
            and _any_of(self.statuses, letter.status)
        )


def build_filter(
    *,
    since: str | None = None,
    until: str | None = None,
    partition: int | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
    stages: Iterable[str] = (),
    error_classes: Iterable[str] = (),
    statuses: Iterable[int] = (),
) -> LetterFilter:
    """A filter from command-line values; ConfigError lists every problem,
    each naming its option."""
    problems: list[ConfigProblem] = []
    start = _time("--since", since, problems)
    end = _time("--until", until, problems)
    stage_set = frozenset(stages)
    status_set = frozenset(statuses)

    problems += _empty_ranges(start, end, from_offset, to_offset)
    problems += _not_negative("--partition", partition)
    problems += _not_negative("--from-offset", from_offset)
    problems += _not_negative("--to-offset", to_offset)
    problems += [
        _unknown_stage(stage) for stage in sorted(stage_set - set(STAGES))
    ]
    problems += [
        _not_a_status(status)
        for status in sorted(status_set)
        if not _is_status(status)
    ]
    if problems:
        raise ConfigError(problems)

    return LetterFilter(
        since=start,
        until=end,
        partition=partition,
        from_offset=from_offset,
        to_offset=to_offset,
        stages=stage_set,
        error_classes=frozenset(error_classes),
        statuses=status_set,
    )


def parse_time(option: str, text: str) -> datetime:
    """An ISO 8601 time with a UTC offset; ConfigError naming `option`."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError.single(
            option,
            rule="iso-8601",
            value=text,
            message="is not an ISO 8601 time",
            fix=f"write a date and time such as {_TIME_EXAMPLE}",
        ) from None
    if moment.tzinfo is None:
        raise ConfigError.single(
            option,
            rule="utc-offset",
            value=text,
            message="has no UTC offset",
            fix="add Z for UTC or the offset of your zone, e.g. "
            + _TIME_EXAMPLE,
        )
    return moment


def _time(
    option: str, text: str | None, problems: list[ConfigProblem]
) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(option, text)
    except ConfigError as error:
        problems.extend(error.problems)
        return None


def _empty_ranges(
    start: datetime | None,
    end: datetime | None,
    from_offset: int | None,
    to_offset: int | None,
) -> list[ConfigProblem]:
    """A range no letter can fall in is a mistake, not a selection."""
    problems = []
    if start is not None and end is not None and end <= start:
        problems.append(
            ConfigProblem(
                "--until",
                rule="after-since",
                value=end.isoformat(),
                message=f"is not after --since ({start.isoformat()})",
                fix="give --until a later time than --since (it is exclusive)",
            )
        )
    if (
        from_offset is not None
        and to_offset is not None
        and to_offset < from_offset
    ):
        problems.append(
            ConfigProblem(
                "--to-offset",
                rule="at-least-from-offset",
                value=str(to_offset),
                message=f"is below --from-offset ({from_offset})",
                fix="give --to-offset a value >= --from-offset "
                "(both are inclusive)",
            )
        )
    return problems


def _not_negative(option: str, value: int | None) -> list[ConfigProblem]:
    if value is None or value >= 0:
        return []
    return [
        ConfigProblem(
            option,
            rule="minimum",
            value=str(value),
            message="must be >= 0",
            fix="partitions and offsets count from 0",
        )
    ]


def _unknown_stage(stage: str) -> ConfigProblem:
    return ConfigProblem(
        "--stage",
        rule="enum",
        value=stage,
        message="is not a stage a record fails at",
        fix=f"use one of: {', '.join(STAGES)}",
    )


def _is_status(status: int) -> bool:
    return _LOWEST_STATUS <= status <= _HIGHEST_STATUS


def _not_a_status(status: int) -> ConfigProblem:
    return ConfigProblem(
        "--status",
        rule="http-status",
        value=str(status),
        message="is not an HTTP status",
        fix=f"use a status from {_LOWEST_STATUS} to {_HIGHEST_STATUS}, "
        "e.g. 503",
    )


def _any_of(
    wanted: frozenset[str] | frozenset[int], found: str | int | None
) -> bool:
    return not wanted or found in wanted
