"""Rollup rebuilds on the real Redis: none is dropped when a day is being rebuilt already."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.tasks.stages import ROLLUP_DUE
from tests.conftest import Stack


@pytest.fixture
def rebuilt(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The days rebuilt, in order (the rebuild itself is the aggregates' own test's)."""
    days: list[str] = []
    monkeypatch.setattr("pipeline.analytics.aggregates.aggregate_day",
                        lambda store, bucket, day: days.append(day) or {})
    for key in stack.redis.scan_iter(match=f"{ROLLUP_DUE}*"):
        stack.redis.delete(key)
    return days


def test_a_rebuild_asked_for_while_one_runs_is_asked_for_again_not_dropped(
        stack: Stack, rebuilt: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tasks.runtime import get_runtime
    from pipeline.tasks.stages import _rebuild, schedule_aggregate

    rt = get_runtime()
    day = "2025-03-02"  # an old day: beat's run of today and yesterday never covers it
    asked: list[tuple[Any, ...]] = []

    class Signature:
        def __init__(self, name: str, args: tuple[Any, ...], **_: Any) -> None:
            self.args = args

        def apply_async(self) -> None:
            asked.append(self.args)

    monkeypatch.setattr("pipeline.tasks.stages.app.signature", Signature)

    def rebuild_while_a_photo_ends(store: Any, bucket: str, d: str) -> dict[str, int]:
        rebuilt.append(d)
        if len(rebuilt) == 1:
            # Given a photo of that day ending while the rebuild runs (its debounced request
            # already spent), whose own rebuild finds the day busy
            stack.redis.delete(f"shelf:aggregate-pending:{d}")
            schedule_aggregate(rt, d)
            _rebuild(rt, d)
        return {}

    monkeypatch.setattr("pipeline.analytics.aggregates.aggregate_day",
                        rebuild_while_a_photo_ends)
    _rebuild(rt, day)
    # Then the busy rebuild did not run, and the day is still due
    assert rebuilt == [day] and stack.redis.exists(ROLLUP_DUE + day)
    # And one more rebuild is asked for: the photo's own, debounced (the running one's
    # finds it asked for already), which then rebuilds the day and leaves nothing due
    assert asked == [(day,)]
    _rebuild(rt, day)
    assert rebuilt == [day, day] and not stack.redis.exists(ROLLUP_DUE + day)


def test_the_running_rebuild_asks_again_when_the_photos_request_was_spent(
        stack: Stack, rebuilt: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tasks.runtime import get_runtime
    from pipeline.tasks.stages import _rebuild

    rt = get_runtime()
    day = "2025-03-03"
    asked: list[tuple[Any, ...]] = []
    monkeypatch.setattr("pipeline.tasks.stages.app.signature", lambda name, args, **_: type(
        "S", (), {"apply_async": lambda self: asked.append(args)})())

    def marked_meanwhile(store: Any, bucket: str, d: str) -> dict[str, int]:
        rebuilt.append(d)
        stack.redis.set(ROLLUP_DUE + d, "1")  # a photo ended; its request ran and returned
        return {}

    monkeypatch.setattr("pipeline.analytics.aggregates.aggregate_day", marked_meanwhile)
    stack.redis.delete(f"shelf:aggregate-pending:{day}")
    _rebuild(rt, day)
    assert rebuilt == [day] and asked == [(day,)]
    stack.redis.delete(ROLLUP_DUE + day, f"shelf:aggregate-pending:{day}")


def test_beat_rebuilds_a_day_whose_rebuild_was_asked_for_and_never_ran(
        stack: Stack, rebuilt: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tasks.runtime import get_runtime
    from pipeline.tasks.stages import aggregate, schedule_aggregate

    # Given a photo of an old day whose rollup request never reached the broker
    def broker_down(*_a: Any, **_k: Any) -> Any:
        raise OSError("broker unreachable")

    monkeypatch.setattr("pipeline.tasks.stages.app.signature", broker_down)
    schedule_aggregate(get_runtime(), "2025-03-01")
    # When beat's periodic rollup runs
    aggregate.apply().get()
    # Then that day is rebuilt with today and yesterday, and is due no more
    assert "2025-03-01" in rebuilt and len(rebuilt) == 3
    assert not stack.redis.exists(ROLLUP_DUE + "2025-03-01")
    aggregate.apply().get()
    assert len(rebuilt) == 5  # today and yesterday only, from then on


def test_a_rebuild_that_fails_leaves_its_day_due(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.errors import PermanentError
    from pipeline.tasks.runtime import get_runtime
    from pipeline.tasks.stages import _rebuild

    def unreadable(*_a: Any) -> None:
        raise PermanentError("a result that does not read")

    monkeypatch.setattr("pipeline.analytics.aggregates.aggregate_day", unreadable)
    stack.redis.set(ROLLUP_DUE + "2025-02-28", "1")
    with pytest.raises(PermanentError):
        _rebuild(get_runtime(), "2025-02-28")
    assert stack.redis.exists(ROLLUP_DUE + "2025-02-28")
    stack.redis.delete(ROLLUP_DUE + "2025-02-28")


def test_a_day_whose_rebuild_fails_holds_back_no_other_day(
        stack: Stack, rebuilt: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.errors import PermanentError
    from pipeline.tasks.stages import aggregate

    # Given an old day still due, whose rebuild fails (its results' prefix refused, say)
    def fails_on_the_old_day(store: Any, bucket: str, day: str) -> dict[str, int]:
        if day == "2025-01-01":
            raise PermanentError("AccessDenied")
        rebuilt.append(day)
        return {}

    monkeypatch.setattr("pipeline.analytics.aggregates.aggregate_day", fails_on_the_old_day)
    stack.redis.set(ROLLUP_DUE + "2025-01-01", "1")
    # When beat's periodic rollup runs, then today and yesterday are rebuilt all the same,
    # and the old day stays due (and the run fails, saying why)
    with pytest.raises(PermanentError):
        aggregate.apply().get()
    assert len(rebuilt) == 2 and "2025-01-01" not in rebuilt
    assert stack.redis.exists(ROLLUP_DUE + "2025-01-01")
    stack.redis.delete(ROLLUP_DUE + "2025-01-01")
