"""What a replay did, counted, and the summary it prints at the end.

The same counts go into the audit log line, so the printed summary and
the record of the run agree. Nothing here holds a payload: a letter is
counted by how it failed, never by what it carries.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from kafka_bridge.stored_letters import StoredLetter

# Shown in the table for a letter that lacks the header.
_ABSENT = "-"
_TIME_SPEC = "milliseconds"

LetterKind = tuple[str, str, str]


@dataclass(slots=True)
class ReplayTally:
    """Running counts of one replay.

    `replayed` counts letters sent out whose outcome is final (in a dry
    run: that would be sent out): delivered, dead-lettered again or
    failed. `kinds` breaks them down by stage, error class and status.
    """

    letters_to_read: int = 0
    letters_read: int = 0
    replayed: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    failed: int = 0
    skipped_by_filter: int = 0
    skipped_by_max_count: int = 0
    not_letters: int = 0
    kinds: Counter[LetterKind] = field(default_factory=Counter)
    oldest: datetime | None = None
    newest: datetime | None = None
    interrupted: bool = False
    stopped_at_limit: bool = False

    def count_replayed(self, letter: StoredLetter) -> None:
        """Count a letter taken for replay, by kind and failure time."""
        self.replayed += 1
        self.kinds[_kind(letter)] += 1
        moment = letter.failed_at
        if moment is None:
            return
        if self.oldest is None or moment < self.oldest:
            self.oldest = moment
        if self.newest is None or moment > self.newest:
            self.newest = moment

    @property
    def complete(self) -> bool:
        """Every letter selected went where it was sent: none failed, none
        came back to the DLQ, and the run was not interrupted."""
        return not (self.failed or self.dead_lettered or self.interrupted)

    def counts(self) -> dict[str, object]:
        """The counts as plain data, for the audit log."""
        return {
            "letters_to_read": self.letters_to_read,
            "letters_read": self.letters_read,
            "replayed": self.replayed,
            "delivered": self.delivered,
            "dead_lettered_again": self.dead_lettered,
            "failed": self.failed,
            "skipped_by_filter": self.skipped_by_filter,
            "skipped_by_max_count": self.skipped_by_max_count,
            "skipped_not_letters": self.not_letters,
            "oldest_failure": _time(self.oldest),
            "newest_failure": _time(self.newest),
            "interrupted": self.interrupted,
            "stopped_at_limit": self.stopped_at_limit,
        }


def render_summary(tally: ReplayTally, heading: str, *, dry_run: bool) -> str:
    """The summary printed at the end of a replay, as text lines."""
    lines = [heading, ""]
    lines += _counts(tally, dry_run=dry_run)
    lines += ["", *_kinds_table(tally.kinds)]
    if tally.oldest is not None:
        lines += [
            "",
            f"oldest failure  {_time(tally.oldest)}",
            f"newest failure  {_time(tally.newest)}",
        ]
    lines += _ending(tally)
    return "\n".join(lines) + "\n"


def _counts(tally: ReplayTally, *, dry_run: bool) -> list[str]:
    rows: list[tuple[str, int]] = [("letters read", tally.letters_read)]
    if dry_run:
        rows.append(("would replay", tally.replayed))
    else:
        rows += [
            ("replayed", tally.replayed),
            ("  delivered", tally.delivered),
            ("  re-dead-lettered", tally.dead_lettered),
            ("  failed", tally.failed),
        ]
    rows += [
        ("skipped by filter", tally.skipped_by_filter),
        ("skipped by max count", tally.skipped_by_max_count),
        ("skipped, not a letter", tally.not_letters),
    ]
    width = max(len(label) for label, _ in rows)
    return [f"{label:<{width}}  {count:>7}" for label, count in rows]


def _kinds_table(kinds: Counter[LetterKind]) -> list[str]:
    header = ("stage", "error class", "status", "letters")
    rows = [
        (*kind, str(count))
        for kind, count in sorted(kinds.items(), key=lambda item: item[0])
    ]
    if not rows:
        return ["no letter selected"]
    widths = [
        max(len(row[column]) for row in (header, *rows))
        for column in range(len(header))
    ]
    return [_table_line(row, widths) for row in (header, *rows)]


def _table_line(row: tuple[str, ...], widths: list[int]) -> str:
    """Text columns aligned left, the count (last) aligned right."""
    *texts, count = row
    cells = [
        text.ljust(width)
        for text, width in zip(texts, widths[:-1], strict=True)
    ]
    return "  ".join([*cells, count.rjust(widths[-1])])


def _ending(tally: ReplayTally) -> list[str]:
    if tally.interrupted:
        return ["", "interrupted: run the same command again to resume"]
    if tally.stopped_at_limit:
        return ["", "stopped at --limit: run again to go on"]
    return []


def _kind(letter: StoredLetter) -> LetterKind:
    return (
        letter.stage or _ABSENT,
        letter.error_class or _ABSENT,
        str(letter.status) if letter.status is not None else _ABSENT,
    )


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec=_TIME_SPEC) if moment else None
