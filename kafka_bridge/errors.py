"""The exceptions kafka-bridge raises, under one root class.

Callers that only want to know "did the bridge fail in a way it
understands" catch `BridgeError`; everything raised on purpose derives
from it, and third-party errors are translated into it where they enter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class BridgeError(Exception):
    """Root of every error kafka-bridge raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration, and how to put it right.

    `path` names the setting (`api.primary_url`, `kafka.topics[0]`), or the
    file when the file itself is at fault. `rule` is the rule that failed:
    a JSON Schema keyword such as `minimum`, or a named check such as
    `secret-reference`. `value` is the offending value as text, `***` when
    it is or may be a secret, and empty when there is no value to show
    (a missing key). `fix` says what to change. `message` states the
    problem in a few words.
    """

    path: str
    rule: str
    value: str
    fix: str
    message: str = ""

    def __str__(self) -> str:
        what = self.message or "invalid value"
        line = f"{self.path}: {what} (rule: {self.rule})"
        if self.value:
            line += f"; got {self.value}"
        return f"{line}; {self.fix}"


class ConfigError(BridgeError):
    """The configuration cannot be used; `problems` lists every reason."""

    problems: list[ConfigProblem]

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(
        cls, path: str, *, rule: str, value: str, fix: str, message: str = ""
    ) -> ConfigError:
        """An error with one problem, for checks made outside the loader."""
        return cls([ConfigProblem(path, rule, value, fix, message)])

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigProblem]]]:
        # The default would rebuild the error from its rendered text.
        return (type(self), (self.problems,))


class RecordError(BridgeError):
    """One record cannot be delivered; `stage` says where it failed.

    The stage goes into the dead-letter record, so an operator can tell a
    bad payload (decode) from a bug in a transform or a broken contract.
    """

    stage = "record"


class DecodeError(RecordError):
    """The record's value is not what the transform reads: not UTF-8, not
    JSON, or missing."""

    stage = "decode"


class TransformError(RecordError):
    """The transform failed on a record it could read; says why."""

    stage = "transform"


class ContractError(RecordError):
    """The transformed payload breaks the API's JSON Schema contract."""

    stage = "contract"
