"""The offset tracker never offers a commit past an unfinished record."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from kafka_bridge.offsets import OffsetTracker

TOPIC = "orders"


def _tracked(offsets: list[int]) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.track(TOPIC, 0, offset)
    return tracker


def _finish(tracker: OffsetTracker, offset: int, done: bool = True) -> None:
    claim = tracker.begin(TOPIC, 0)
    assert claim is not None
    tracker.finish(claim, offset, done=done)


def test_nothing_is_committable_before_any_record_finishes() -> None:
    tracker = _tracked([0, 1, 2])

    committable = tracker.committable()

    assert committable == {(TOPIC, 0): 0}


def test_a_finished_later_record_does_not_pass_an_unfinished_one() -> None:
    tracker = _tracked([10, 11, 12])

    _finish(tracker, 11)
    _finish(tracker, 12)

    assert tracker.committable() == {(TOPIC, 0): 10}


def test_the_commit_offset_is_one_past_the_last_contiguous_finished() -> None:
    tracker = _tracked([10, 11, 12])

    for offset in (12, 10, 11):
        _finish(tracker, offset)

    assert tracker.committable() == {(TOPIC, 0): 13}


def test_gaps_in_offsets_are_allowed() -> None:
    tracker = _tracked([3, 7, 20])

    _finish(tracker, 3)
    _finish(tracker, 7)

    assert tracker.committable() == {(TOPIC, 0): 20}


def test_an_abandoned_record_holds_its_partition_back() -> None:
    tracker = _tracked([0, 1])

    _finish(tracker, 0, done=False)
    _finish(tracker, 1)

    assert tracker.committable() == {(TOPIC, 0): 0}


def test_committed_offsets_are_not_offered_again() -> None:
    tracker = _tracked([0])
    _finish(tracker, 0)

    tracker.mark_committed(tracker.committable())

    assert tracker.committable() == {}


def test_a_failed_commit_is_offered_again() -> None:
    tracker = _tracked([0])
    _finish(tracker, 0)
    tracker.mark_committed(tracker.committable())

    tracker.forget_commits([(TOPIC, 0)])

    assert tracker.committable() == {(TOPIC, 0): 1}


def test_records_of_an_abandoned_partition_cannot_be_claimed() -> None:
    tracker = _tracked([0])

    tracker.abandon([(TOPIC, 0)])

    assert tracker.begin(TOPIC, 0) is None


def test_a_claim_on_a_forgotten_partition_does_not_touch_its_successor(
) -> None:
    tracker = _tracked([5])
    old_claim = tracker.begin(TOPIC, 0)
    assert old_claim is not None
    tracker.forget([(TOPIC, 0)])
    tracker.track(TOPIC, 0, 5)

    tracker.finish(old_claim, 5, done=True)

    assert tracker.committable() == {(TOPIC, 0): 5}


def test_wait_idle_returns_once_the_last_claim_is_released() -> None:
    tracker = _tracked([0])
    claim = tracker.begin(TOPIC, 0)
    assert claim is not None
    release = threading.Timer(0.05, tracker.finish, (claim, 0), {"done": True})

    release.start()
    idle = tracker.wait_idle(None, timeout_seconds=5)
    release.join()

    assert idle


def test_wait_idle_gives_up_after_its_timeout() -> None:
    tracker = _tracked([0])
    assert tracker.begin(TOPIC, 0) is not None

    assert not tracker.wait_idle([(TOPIC, 0)], timeout_seconds=0.01)


def test_offsets_must_increase_within_a_partition() -> None:
    tracker = _tracked([4])

    try:
        tracker.track(TOPIC, 0, 4)
    except ValueError as error:
        assert "not above" in str(error)
    else:
        raise AssertionError("a repeated offset was accepted")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=60),
    st.data(),
)
def test_the_commit_offset_never_passes_an_unfinished_record(
    gaps: list[int], data: st.DataObject
) -> None:
    offsets = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    tracker = _tracked(offsets)
    order = data.draw(st.permutations(offsets))
    outcomes = data.draw(
        st.lists(st.booleans(), min_size=len(order), max_size=len(order))
    )
    finished: set[int] = set()

    for offset, done in zip(order, outcomes, strict=True):
        _finish(tracker, offset, done=done)
        if done:
            finished.add(offset)
        commit = tracker.committable().get((TOPIC, 0), offsets[0])

        below = [o for o in offsets if o < commit]
        assert all(o in finished for o in below)
        unfinished = [o for o in offsets if o not in finished]
        if unfinished:
            assert commit <= min(unfinished)
        else:
            assert commit == offsets[-1] + 1


def test_positions_include_offsets_already_committed() -> None:
    tracker = _tracked([0, 1])
    _finish(tracker, 0)
    tracker.mark_committed(tracker.committable())

    assert tracker.committable() == {}
    assert tracker.positions() == {(TOPIC, 0): 1}


def test_a_partition_is_settled_once_every_record_handed_out_is_finished(
) -> None:
    tracker = _tracked([0, 1, 2])
    key = (TOPIC, 0)
    _finish(tracker, 0)
    _finish(tracker, 2)

    waiting = tracker.wait_settled([key], timeout_seconds=0)
    finisher = threading.Timer(0.05, _finish, (tracker, 1))
    finisher.start()
    settled = tracker.wait_settled([key], timeout_seconds=10)
    finisher.join()

    assert not waiting
    assert settled
    assert tracker.committable() == {key: 3}


def test_released_records_leave_nothing_to_wait_for() -> None:
    """A record dropped by the poll thread, or one a worker let go
    without delivering it, holds the commit but is not waited for."""
    tracker = _tracked([0, 1, 2])
    key = (TOPIC, 0)
    _finish(tracker, 0, done=False)
    _finish(tracker, 1)
    tracker.release(key, 1)

    settled = tracker.wait_settled([key], timeout_seconds=0)

    assert settled
    assert tracker.committable() == {key: 0}


def test_only_the_named_partitions_are_waited_for() -> None:
    tracker = _tracked([0])
    tracker.track(TOPIC, 1, 0)
    claim = tracker.begin(TOPIC, 1)
    assert claim is not None
    tracker.finish(claim, 0, done=True)

    settled = tracker.wait_settled([(TOPIC, 1)], timeout_seconds=0)

    assert settled
    assert not tracker.wait_settled([(TOPIC, 0)], timeout_seconds=0)


def test_records_claimed_and_finished_together_commit_as_one_by_one() -> None:
    tracker = OffsetTracker()
    tracker.track_all([(TOPIC, 0, 5), (TOPIC, 1, 7), (TOPIC, 0, 6)])

    claims = tracker.begin_all([(TOPIC, 0), (TOPIC, 1), (TOPIC, 0)])
    assert all(claim is not None for claim in claims)
    first, other, second = claims
    assert first is not None and other is not None and second is not None
    current = tracker.finish_all([(second, 6), (other, 7)], done=True)

    assert current == [True, True]
    assert tracker.committable() == {(TOPIC, 0): 5, (TOPIC, 1): 8}
    assert not tracker.wait_idle([(TOPIC, 0)], timeout_seconds=0)
    assert tracker.finish_all([(first, 5)], done=True) == [True]
    assert tracker.committable() == {(TOPIC, 0): 7, (TOPIC, 1): 8}
    assert tracker.wait_idle(None, timeout_seconds=0)


def test_a_batch_claim_skips_only_the_partitions_that_are_gone() -> None:
    tracker = OffsetTracker()
    tracker.track_all([(TOPIC, 0, 0), (TOPIC, 1, 0)])
    tracker.abandon([(TOPIC, 1)])

    claims = tracker.begin_all([(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)])

    assert claims[0] is not None
    assert claims[1:] == [None, None]


def test_a_finish_after_the_partition_was_forgotten_is_reported_late() -> None:
    tracker = _tracked([0, 1])
    first, second = tracker.begin_all([(TOPIC, 0), (TOPIC, 0)])
    assert first is not None and second is not None
    tracker.forget([(TOPIC, 0)])

    current = tracker.finish_all([(first, 0), (second, 1)], done=True)

    assert current == [False, False]
    assert tracker.committable() == {}
