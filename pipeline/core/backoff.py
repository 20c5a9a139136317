"""Exponential backoff with jitter."""

from __future__ import annotations

import random


def backoff_seconds(*, attempt: int, base_s: float, cap_s: float,
                    rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (0-based): half of min(cap, base * 2**attempt) fixed,
    the other half random ("equal jitter"), so retries spread out yet never come back at once."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = min(cap_s, base_s * (2.0 ** min(attempt, 60)))
    r = rng or random
    return ceiling / 2 + r.uniform(0, ceiling / 2)
