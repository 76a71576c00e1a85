"""The offset tracker, the dedup cache and the token bucket, each driven by
random sequences of operations next to a plain model of what it documents.

Example-based tests check one path at a time; the paths that break shared
state are the odd interleavings (a commit answered after a partition was
forgotten, a lookup that rotates a generation, a clock that steps back).
Each machine below keeps its own model, a plain restatement of what the
class documents, and compares it with the real object after every step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from kafka_bridge.dedup import DedupCache
from kafka_bridge.offsets import OffsetTracker, PartitionProgress
from kafka_bridge.token_bucket import TokenBucket
from tests.manual_clock import ManualClock

STATE_MACHINE_SETTINGS = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)

# ---------------------------------------------------------------------------
# The offset tracker

TopicPartitionKey = tuple[str, int]

PARTITION_KEYS: list[TopicPartitionKey] = [
    ("orders", 0),
    ("orders", 1),
    ("refunds", 0),
]
partition_keys = st.sampled_from(PARTITION_KEYS)
# The partitions a wait may name: each alone, or all of them.
KEY_LISTS: list[list[TopicPartitionKey]] = [
    *([key] for key in PARTITION_KEYS),
    PARTITION_KEYS,
]


def tracking_is_refused(
    tracker: OffsetTracker, key: TopicPartitionKey, offset: int
) -> bool:
    try:
        tracker.track(*key, offset)
    except ValueError as error:
        return "not above" in str(error)
    return False


@dataclass(eq=False)
class AssignmentModel:
    """What the tracker should know of one assignment of a partition."""

    tracked: list[int] = field(default_factory=list)
    done: set[int] = field(default_factory=set)
    claimed: set[int] = field(default_factory=set)
    # Records nobody will finish here: dropped before a worker took them,
    # or let go by a worker undone.
    released: set[int] = field(default_factory=set)
    committed: int | None = None
    abandoned: bool = False

    def unfinished(self) -> list[int]:
        return [offset for offset in self.tracked if offset not in self.done]

    def claimable(self) -> list[int]:
        """Records waiting for a worker."""
        return [
            offset
            for offset in self.unfinished()
            if offset not in self.claimed and offset not in self.released
        ]

    def settled(self) -> bool:
        """Nothing is left for a worker to finish."""
        return set(self.unfinished()) <= self.released

    def position(self) -> int:
        """The lowest offset not done, or one past the last when all are."""
        unfinished = self.unfinished()
        return min(unfinished) if unfinished else self.tracked[-1] + 1


@dataclass(eq=False)
class ClaimModel:
    """A record a worker took with `begin` and has not finished yet."""

    key: TopicPartitionKey
    offset: int
    progress: PartitionProgress
    assignment: AssignmentModel


class OffsetTrackerMachine(RuleBasedStateMachine):
    """Each partition's commit offset is its lowest tracked offset not yet
    finished, or one past the last when all are: never beyond a record in
    flight, and never lower than before while the partition stays assigned.
    Only offsets that moved since the last accepted commit are committable,
    a refused commit offers its offsets again, pending_count is tracked
    minus finished, and records of an abandoned or forgotten partition
    cannot be claimed, while a claim made before that can still be
    finished without touching a later assignment of the partition. The
    named partitions are settled when every record not done was released,
    by the poll thread or by a worker."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = OffsetTracker()
        self.assignments: dict[TopicPartitionKey, AssignmentModel] = {}
        self.claims: list[ClaimModel] = []
        self.commits_in_flight: list[dict[TopicPartitionKey, int]] = []
        self.last_positions: dict[TopicPartitionKey, int] = {}
        self.forgotten: set[TopicPartitionKey] = set()

    def claimable_keys(self) -> list[TopicPartitionKey]:
        return [
            key
            for key, assignment in self.assignments.items()
            if not assignment.abandoned and assignment.claimable()
        ]

    def gone_keys(self) -> list[TopicPartitionKey]:
        """Partitions abandoned, or forgotten and not tracked since."""
        abandoned = {
            key
            for key, assignment in self.assignments.items()
            if assignment.abandoned
        }
        return sorted(abandoned | (self.forgotten - set(self.assignments)))

    def keys_in_use(self) -> list[TopicPartitionKey]:
        return [
            key
            for key, assignment in self.assignments.items()
            if not assignment.abandoned
        ]

    def keys_with_records_pending(self) -> list[TopicPartitionKey]:
        return [
            key
            for key, assignment in self.assignments.items()
            # With every record finished the offset is not refused: the
            # machine below shows that apart.
            if assignment.unfinished()
        ]

    def is_current(self, claim: ClaimModel) -> bool:
        return self.assignments.get(claim.key) is claim.assignment

    @initialize(data=st.data())
    def track_a_first_batch_everywhere(self, data: st.DataObject) -> None:
        for key in PARTITION_KEYS:
            self.track_a_batch_of(key, data)

    @rule(data=st.data())
    def track_a_batch(self, data: st.DataObject) -> None:
        self.track_a_batch_of(data.draw(partition_keys), data)

    def track_a_batch_of(
        self, key: TopicPartitionKey, data: st.DataObject
    ) -> None:
        first_offset = data.draw(st.integers(0, 30))
        gaps = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
        assignment = self.assignments.get(key)
        if assignment is None:
            assignment = self.assignments[key] = AssignmentModel()
        last = assignment.tracked[-1] if assignment.tracked else first_offset
        offsets = [last + sum(gaps[: index + 1]) for index in range(len(gaps))]

        for offset in offsets:
            self.tracker.track(*key, offset)

        assignment.tracked.extend(offsets)

    @precondition(lambda self: bool(self.keys_with_records_pending()))
    @rule(data=st.data(), below_last=st.integers(0, 3))
    def refuse_an_offset_not_above_the_last(
        self, data: st.DataObject, below_last: int
    ) -> None:
        key = data.draw(st.sampled_from(self.keys_with_records_pending()))
        offset = self.assignments[key].tracked[-1] - below_last

        refused = tracking_is_refused(self.tracker, key, offset)

        assert refused, f"offset {offset} of {key} was tracked again"

    @precondition(lambda self: bool(self.claimable_keys()))
    @rule(data=st.data())
    def begin(self, data: st.DataObject) -> None:
        self.claims.append(self.claim_a_record(data))

    @precondition(lambda self: bool(self.claimable_keys()))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Claim a record and finish it straight away, as most go."""
        claim = self.claim_a_record(data)

        self.finish_claim(claim, done=data.draw(st.booleans(), label="done"))

    def claim_a_record(self, data: st.DataObject) -> ClaimModel:
        key = data.draw(st.sampled_from(self.claimable_keys()))
        assignment = self.assignments[key]
        offset = data.draw(st.sampled_from(assignment.claimable()))

        progress = self.tracker.begin(*key)

        assert progress is not None
        assignment.claimed.add(offset)
        return ClaimModel(key, offset, progress, assignment)

    @precondition(lambda self: bool(self.gone_keys()))
    @rule(data=st.data())
    def begin_on_a_partition_that_is_gone(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.gone_keys()))

        assert self.tracker.begin(*key) is None

    @precondition(lambda self: bool(self.claims))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.claims) - 1))
        claim = self.claims.pop(index)

        self.finish_claim(claim, done=data.draw(st.booleans(), label="done"))

    def finish_claim(self, claim: ClaimModel, *, done: bool) -> None:
        still_current = self.tracker.finish(
            claim.progress, claim.offset, done=done
        )

        assert still_current == self.is_current(claim)
        claim.assignment.claimed.discard(claim.offset)
        if done:
            claim.assignment.done.add(claim.offset)
        else:
            claim.assignment.released.add(claim.offset)

    @precondition(lambda self: bool(self.claimable_keys()))
    @rule(data=st.data())
    def release_records_never_handed_out(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.claimable_keys()))
        waiting = self.assignments[key].claimable()
        count = data.draw(st.integers(1, len(waiting)))

        self.tracker.release(key, count)

        # What the poll thread holds back is the newest records.
        self.assignments[key].released.update(waiting[-count:])

    # `positions` is what the last commit before a revoke sends.
    @rule(
        what=st.sampled_from(
            [OffsetTracker.committable, OffsetTracker.positions]
        ),
        answer=st.sampled_from(["accepted", "refused", "later"]),
    )
    def commit(
        self,
        what: Callable[[OffsetTracker], dict[TopicPartitionKey, int]],
        answer: str,
    ) -> None:
        offsets = what(self.tracker)

        if answer == "later":
            self.commits_in_flight.append(offsets)
            return
        self.answer_commit(offsets, accepted=answer == "accepted")

        if answer == "accepted":
            assert not set(offsets) & set(self.tracker.committable())

    @precondition(lambda self: bool(self.commits_in_flight))
    @rule(data=st.data(), accepted=st.booleans())
    def answer_a_commit_sent_earlier(
        self, data: st.DataObject, accepted: bool
    ) -> None:
        index = data.draw(st.integers(0, len(self.commits_in_flight) - 1))
        offsets = self.commits_in_flight.pop(index)

        self.answer_commit(offsets, accepted=accepted)

    def answer_commit(
        self, offsets: dict[TopicPartitionKey, int], *, accepted: bool
    ) -> None:
        if accepted:
            self.tracker.mark_committed(offsets)
        else:
            self.tracker.forget_commits(list(offsets))

        for key, offset in offsets.items():
            if key in self.assignments:
                self.assignments[key].committed = offset if accepted else None

    # One partition, as on a revoke, or every one, as at shutdown.
    @precondition(lambda self: bool(self.keys_in_use()))
    @rule(data=st.data(), every_partition=st.booleans())
    def abandon(self, data: st.DataObject, every_partition: bool) -> None:
        in_use = st.sampled_from(self.keys_in_use())
        keys = None if every_partition else [data.draw(in_use)]

        self.tracker.abandon(keys)

        for key, assignment in self.assignments.items():
            if keys is None or key in keys:
                assignment.abandoned = True

    @precondition(lambda self: bool(self.assignments))
    @rule(data=st.data())
    def forget(self, data: st.DataObject) -> None:
        assigned = st.sampled_from(sorted(self.assignments))
        keys = data.draw(st.lists(assigned, min_size=1, unique=True))

        self.tracker.forget(keys)

        for key in keys:
            del self.assignments[key]
        self.forgotten.update(keys)

    @invariant()
    def positions_are_the_lowest_offsets_not_done(self) -> None:
        expected = {
            key: assignment.position()
            for key, assignment in self.assignments.items()
        }

        assert self.tracker.positions() == expected

    @invariant()
    def committable_omits_what_was_committed(self) -> None:
        expected = {
            key: assignment.position()
            for key, assignment in self.assignments.items()
            if assignment.position() != assignment.committed
        }

        assert self.tracker.committable() == expected

    @invariant()
    def no_position_passes_a_record_in_flight(self) -> None:
        positions = self.tracker.positions()

        for claim in self.claims:
            if self.is_current(claim):
                assert positions[claim.key] <= claim.offset

    @invariant()
    def positions_never_go_back_while_assigned(self) -> None:
        positions = self.tracker.positions()

        for key, position in positions.items():
            assert position >= self.last_positions.get(key, position)
        # A forgotten partition is absent here, so its next assignment
        # may start anywhere.
        self.last_positions = positions

    @invariant()
    def idle_exactly_when_no_claim_is_held(self) -> None:
        for keys in [*KEY_LISTS, None]:
            busy = any(
                self.is_current(claim) and (keys is None or claim.key in keys)
                for claim in self.claims
            )

            idle = self.tracker.wait_idle(keys, timeout_seconds=0.0)

            assert idle == (not busy), keys

    @invariant()
    def settled_exactly_when_all_not_done_were_released(self) -> None:
        for keys in KEY_LISTS:
            expected = all(
                self.assignments[key].settled()
                for key in keys
                if key in self.assignments
            )

            settled = self.tracker.wait_settled(keys, timeout_seconds=0.0)

            assert settled == expected, keys

    @invariant()
    def pending_count_is_tracked_minus_done(self) -> None:
        expected = sum(
            len(assignment.unfinished())
            for assignment in self.assignments.values()
        )

        assert self.tracker.pending_count() == expected


class OffsetTrackerRewindMachine(RuleBasedStateMachine):
    """`track` refuses an offset not above the last one tracked for its
    partition whether records of the partition are still pending or all
    are finished, so that a partition's commit offset never goes back."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = OffsetTracker()
        self.tracked: dict[TopicPartitionKey, list[int]] = {}
        self.pending: dict[TopicPartitionKey, list[int]] = {}

    def tracked_keys(self) -> list[TopicPartitionKey]:
        return sorted(self.tracked)

    @rule(
        key=partition_keys,
        first_offset=st.integers(0, 30),
        gap=st.integers(1, 3),
    )
    def track(
        self, key: TopicPartitionKey, first_offset: int, gap: int
    ) -> None:
        tracked = self.tracked.setdefault(key, [])
        offset = tracked[-1] + gap if tracked else first_offset

        self.tracker.track(*key, offset)

        tracked.append(offset)
        self.pending.setdefault(key, []).append(offset)

    @precondition(lambda self: bool(self.tracked_keys()))
    @rule(data=st.data())
    def deliver_every_pending_record(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.tracked_keys()))

        for offset in self.pending.pop(key, []):
            progress = self.tracker.begin(*key)
            assert progress is not None
            self.tracker.finish(progress, offset, done=True)

    @precondition(lambda self: bool(self.tracked_keys()))
    @rule(data=st.data(), below_last=st.integers(0, 3))
    def refuse_an_offset_not_above_the_last(
        self, data: st.DataObject, below_last: int
    ) -> None:
        key = data.draw(st.sampled_from(self.tracked_keys()))
        offset = self.tracked[key][-1] - below_last

        refused = tracking_is_refused(self.tracker, key, offset)

        assert refused, f"offset {offset} of {key} was tracked again"

    @invariant()
    def positions_are_the_lowest_offsets_pending(self) -> None:
        expected = {
            key: min(self.pending.get(key) or [tracked[-1] + 1])
            for key, tracked in self.tracked.items()
        }

        assert self.tracker.positions() == expected


TestOffsetTracker = STATE_MACHINE_SETTINGS(OffsetTrackerMachine).TestCase

TestOffsetTrackerRewind = STATE_MACHINE_SETTINGS(
    OffsetTrackerRewindMachine
).TestCase

# ---------------------------------------------------------------------------
# The dedup cache

ADDED_KEYS = [f"order-{index}".encode() for index in range(8)]
NEVER_ADDED_KEYS = [f"refund-{index}".encode() for index in range(3)]
# Shares of max_age that land on and around the rotation boundary.
AGE_SHARES = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]) | st.floats(0.0, 2.5)


class DedupModel:
    """Two generations as the cache documents them: lookups see both,
    additions go to the current one, and the current one becomes the
    previous one once it holds `capacity` keys or is `max_age` old, an age
    noticed at the next lookup or addition."""

    def __init__(
        self, capacity: int, max_age_seconds: float, now: float
    ) -> None:
        self.capacity = capacity
        self.max_age_seconds = max_age_seconds
        self.current: set[bytes] = set()
        self.previous: set[bytes] = set()
        self.started_at = now
        self.hits = 0
        self.additions = 0
        self.rotations = 0
        # For the documented lower bound on memory: when each key was last
        # added, and the additions count just after.
        self.last_added: dict[bytes, tuple[float, int]] = {}

    def seen(self, key: bytes, now: float) -> bool:
        self.rotate_if_old(now)
        found = key in self.current or key in self.previous
        self.hits += found
        return found

    def add(self, key: bytes, now: float) -> None:
        self.rotate_if_old(now)
        self.current.add(key)
        self.additions += 1
        self.last_added[key] = (now, self.additions)
        if len(self.current) == self.capacity:
            self.rotate(now)

    def must_remember(self, key: bytes, now: float) -> bool:
        """At least the lesser of `capacity` further additions and
        `max_age` seconds, as the cache promises."""
        if key not in self.last_added:
            return False
        added_at, additions_then = self.last_added[key]
        young = now - added_at < self.max_age_seconds
        return young and self.additions - additions_then < self.capacity

    def rotate_if_old(self, now: float) -> None:
        if now - self.started_at >= self.max_age_seconds:
            self.rotate(now)

    def rotate(self, now: float) -> None:
        self.previous, self.current = self.current, set()
        self.started_at = now
        self.rotations += 1

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)


class DedupCacheMachine(RuleBasedStateMachine):
    """A key added is seen until its generation is pushed out by capacity
    or age, and always for at least the lesser of `capacity` further
    additions and `max_age_seconds`; a key never added is never seen; the
    length counts both generations and stays within twice the capacity;
    hits, additions and rotations count what the model counts."""

    clock: ManualClock
    cache: DedupCache
    model: DedupModel

    @initialize(
        capacity=st.integers(1, 6),
        max_age_seconds=st.sampled_from([1.0, 7.5, 60.0]),
    )
    def start(self, capacity: int, max_age_seconds: float) -> None:
        self.clock = ManualClock()
        self.cache = DedupCache(capacity, max_age_seconds, self.clock)
        self.model = DedupModel(capacity, max_age_seconds, self.clock.now)

    @rule(share_of_max_age=AGE_SHARES)
    def time_passes(self, share_of_max_age: float) -> None:
        self.clock.now += share_of_max_age * self.model.max_age_seconds

    @rule(key=st.sampled_from(ADDED_KEYS))
    def add(self, key: bytes) -> None:
        self.cache.add(key)

        self.model.add(key, self.clock.now)

    @rule(key=st.sampled_from(ADDED_KEYS))
    def look_up(self, key: bytes) -> None:
        self.check_lookup(key)

    @rule(key=st.sampled_from(NEVER_ADDED_KEYS))
    def look_up_a_key_never_added(self, key: bytes) -> None:
        assert not self.check_lookup(key)

    @rule()
    def look_up_every_key(self) -> None:
        for key in ADDED_KEYS:
            self.check_lookup(key)

    def check_lookup(self, key: bytes) -> bool:
        now = self.clock.now
        promised = self.model.must_remember(key, now)

        found = self.cache.seen(key)

        assert found == self.model.seen(key, now)
        assert found or not promised
        return found

    @invariant()
    def length_counts_both_generations(self) -> None:
        assert len(self.cache) == len(self.model)
        assert len(self.cache) <= 2 * self.model.capacity

    @invariant()
    def counters_match(self) -> None:
        assert self.cache.hits == self.model.hits
        assert self.cache.additions == self.model.additions
        assert self.cache.rotations == self.model.rotations


TestDedupCache = STATE_MACHINE_SETTINGS(DedupCacheMachine).TestCase

# ---------------------------------------------------------------------------
# The token bucket

# The bucket sums floats; the model is exact, so they differ by rounding.
TOLERANCE_TOKENS = 1e-6

rates_per_second = st.sampled_from([0.5, 2.0, 4.0]) | st.floats(0.1, 100.0)
capacities = st.sampled_from([1.0, 3.0, 5.0]) | st.floats(1.0, 50.0)
# Shares of the capacity, so that a request is always one that could fit.
request_shares = st.sampled_from([1.0, 0.5, 0.2]) | st.floats(0.01, 1.0)
# Nothing, less than nothing, or more than the bucket can hold.
impossible_shares = st.sampled_from([0.0, -0.5]) | st.floats(1.01, 3.0)
seconds_forward = st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0.0, 3.0)


class TokenBucketModel:
    """A full bucket that earns `rate` tokens a second up to `capacity`,
    counted exactly. Time is earned only beyond the latest clock reading
    seen, so a clock that steps back neither takes tokens away nor earns
    the same time twice."""

    def __init__(
        self, rate_per_second: float, capacity: float, now: float
    ) -> None:
        self.rate_per_second = Fraction(rate_per_second)
        self.capacity = Fraction(capacity)
        self.tokens = self.capacity
        self.latest_reading = Fraction(now)

    def observe(self, now: float) -> None:
        reading = Fraction(now)
        if reading <= self.latest_reading:
            return
        earned = (reading - self.latest_reading) * self.rate_per_second
        self.tokens = min(self.capacity, self.tokens + earned)
        self.latest_reading = reading

    def holds(self, tokens: float) -> bool | None:
        """Whether `tokens` are there; None when too close to tell."""
        surplus = self.tokens - Fraction(tokens)
        if abs(surplus) <= TOLERANCE_TOKENS:
            return None
        return surplus > 0

    def seconds_until(self, tokens: float) -> Fraction:
        missing = Fraction(tokens) - self.tokens
        return max(Fraction(0), missing / self.rate_per_second)


class TokenBucketMachine(RuleBasedStateMachine):
    """The bucket grants a request exactly when the exact model holds the
    tokens after refilling at the rate for the time passed on its clock;
    seconds_until_available is the missing tokens over the rate; the level
    stays between empty and full; a clock that steps back takes nothing
    away; a token already there is taken even when stop is set; a request
    that could never fit is refused without touching the level."""

    clock: ManualClock
    bucket: TokenBucket
    model: TokenBucketModel

    @initialize(rate_per_second=rates_per_second, capacity=capacities)
    def start(self, rate_per_second: float, capacity: float) -> None:
        self.clock = ManualClock()
        self.bucket = TokenBucket(rate_per_second, capacity, self.clock)
        self.model = TokenBucketModel(
            rate_per_second, capacity, self.clock.now
        )

    def request(self, share_of_capacity: float) -> float:
        return share_of_capacity * float(self.model.capacity)

    @rule(seconds=seconds_forward)
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(seconds=st.floats(0.0, 10.0))
    def clock_steps_back(self, seconds: float) -> None:
        self.clock.now -= seconds

    @rule(share_of_capacity=request_shares)
    def try_acquire(self, share_of_capacity: float) -> None:
        tokens = self.request(share_of_capacity)
        self.model.observe(self.clock.now)
        expected = self.model.holds(tokens)

        granted = self.bucket.try_acquire(tokens)

        assert expected is None or granted == expected
        if granted:
            self.model.tokens -= Fraction(tokens)

    @rule(share_of_capacity=request_shares)
    def seconds_until_available(self, share_of_capacity: float) -> None:
        tokens = self.request(share_of_capacity)
        self.model.observe(self.clock.now)
        expected = self.model.seconds_until(tokens)

        seconds = self.bucket.seconds_until_available(tokens)

        self.assert_close_in_tokens(seconds, expected)

    @rule(timeout_seconds=st.none() | st.just(0.0))
    def acquire_with_stop_already_set(
        self, timeout_seconds: float | None
    ) -> None:
        stop = threading.Event()
        stop.set()
        self.acquire_without_waiting(stop, timeout_seconds)

    @rule()
    def acquire_with_no_time_to_wait(self) -> None:
        self.acquire_without_waiting(threading.Event(), 0.0)

    def acquire_without_waiting(
        self, stop: threading.Event, timeout_seconds: float | None
    ) -> None:
        self.model.observe(self.clock.now)
        expected = self.model.holds(1.0)

        granted = self.bucket.acquire(stop, timeout_seconds)

        assert expected is None or granted == expected
        if granted:
            self.model.tokens -= 1

    @rule(share_of_capacity=impossible_shares)
    def refuse_a_request_that_could_never_fit(
        self, share_of_capacity: float
    ) -> None:
        tokens = self.request(share_of_capacity)

        with pytest.raises(ValueError, match="can never be granted"):
            self.bucket.try_acquire(tokens)
        with pytest.raises(ValueError, match="can never be granted"):
            self.bucket.seconds_until_available(tokens)

    @invariant()
    def level_stays_between_empty_and_full(self) -> None:
        capacity = float(self.model.capacity)
        self.model.observe(self.clock.now)

        seconds_to_full = self.bucket.seconds_until_available(capacity)

        self.assert_close_in_tokens(
            seconds_to_full, self.model.seconds_until(capacity)
        )
        level = capacity - seconds_to_full * float(self.model.rate_per_second)
        assert -TOLERANCE_TOKENS <= level <= capacity

    def assert_close_in_tokens(
        self, seconds: float, expected_seconds: Fraction
    ) -> None:
        difference = abs(Fraction(seconds) - expected_seconds)
        assert difference * self.model.rate_per_second <= TOLERANCE_TOKENS


TestTokenBucket = STATE_MACHINE_SETTINGS(TokenBucketMachine).TestCase
