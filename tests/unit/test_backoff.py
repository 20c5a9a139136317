"""Exponential backoff with equal jitter: bounds, growth, cap, determinism."""

from __future__ import annotations

import itertools
import random

import pytest

from pipeline.core.backoff import backoff_seconds

BASE = 2.0
CAP = 60.0


@pytest.mark.parametrize(("attempt", "ceiling"), [
    (0, 2.0),
    (1, 4.0),
    (2, 8.0),
    (3, 16.0),
    (4, 32.0),
    (5, 60.0),
    (6, 60.0),
    (30, 60.0),
], ids=["attempt-0", "attempt-1", "attempt-2", "attempt-3", "attempt-4", "attempt-5-capped",
        "attempt-6-capped", "attempt-30-capped"])
def test_delay_lies_between_half_ceiling_and_ceiling(attempt: int, ceiling: float) -> None:
    rng = random.Random(attempt)
    delays = [backoff_seconds(attempt=attempt, base_s=BASE, cap_s=CAP, rng=rng)
              for _ in range(200)]

    assert min(delays) >= ceiling / 2
    assert max(delays) <= ceiling
    # the jitter really spreads the delays over the upper half, not a constant
    assert max(delays) - min(delays) > ceiling / 4


@pytest.mark.parametrize(("draw", "expected"), [
    (0.0, 8.0),
    (1.0, 16.0),
    (0.5, 12.0),
], ids=["lowest-draw", "highest-draw", "middle-draw"])
def test_half_fixed_half_random(draw: float, expected: float) -> None:
    class FixedDraw(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a + draw * (b - a)

    assert backoff_seconds(attempt=3, base_s=BASE, cap_s=CAP, rng=FixedDraw()) == expected


def test_grows_exponentially_until_the_cap() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    delays = [backoff_seconds(attempt=a, base_s=BASE, cap_s=CAP, rng=Top()) for a in range(9)]

    assert delays[:5] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert all(later == 2 * earlier for earlier, later in itertools.pairwise(delays[:5]))
    assert delays[5:] == [CAP] * 4


def test_same_seed_same_delays() -> None:
    one = [backoff_seconds(attempt=a, base_s=BASE, cap_s=CAP, rng=random.Random(7))
           for a in range(6)]
    two = [backoff_seconds(attempt=a, base_s=BASE, cap_s=CAP, rng=random.Random(7))
           for a in range(6)]
    other = [backoff_seconds(attempt=a, base_s=BASE, cap_s=CAP, rng=random.Random(8))
             for a in range(6)]

    assert one == two
    assert one != other


def test_without_rng_uses_module_random() -> None:
    saved = random.getstate()
    try:
        random.seed(1234)
        first = backoff_seconds(attempt=2, base_s=BASE, cap_s=CAP)
        random.seed(1234)
        second = backoff_seconds(attempt=2, base_s=BASE, cap_s=CAP)
    finally:
        random.setstate(saved)

    assert first == second
    assert 4.0 <= first <= 8.0


def test_cap_below_base_caps_even_the_first_attempt() -> None:
    delay = backoff_seconds(attempt=0, base_s=10.0, cap_s=3.0, rng=random.Random(0))

    assert 1.5 <= delay <= 3.0


@pytest.mark.parametrize("attempt", [-1, -10], ids=["minus-one", "minus-ten"])
def test_negative_attempt_raises(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_seconds(attempt=attempt, base_s=BASE, cap_s=CAP, rng=random.Random(0))


def test_huge_attempt_is_still_capped() -> None:
    delay = backoff_seconds(attempt=1024, base_s=BASE, cap_s=CAP, rng=random.Random(0))

    assert CAP / 2 <= delay <= CAP
