"""Needleman-Wunsch global alignment of observed and planned sequences."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from pipeline.core.shelf.common import DEFAULT_TUNING, Pair, ShelfTuning


def align_sequences(*, observed: Sequence[str], planned: Sequence[str],
                    tuning: ShelfTuning = DEFAULT_TUNING) -> list[Pair]:
    """Needleman-Wunsch global alignment of two label sequences, as index pairs in order.

    Scored by ``tuning.match``, ``.mismatch`` and ``.gap``: the defaults prefer a substitution
    (-1) to a deletion plus an insertion (-2).
    """
    match, mismatch = tuning.match, tuning.mismatch
    return align_rows(len(observed), len(planned),
                  lambda i, j: match if observed[i] == planned[j] else mismatch, tuning.gap)


def align_rows(n: int, m: int, pair: Callable[[int, int], float], gap: float,
           absorb: Callable[[int, int, int], float | None] | None = None) -> list[Pair]:
    """Global alignment maximising summed ``pair(i, j)`` scores, ``gap`` per unaligned element.

    ``absorb(i, j, t)`` scores observed ``i`` standing for the ``t`` planned elements from
    ``j`` (an empty stretch of shelf where several facings belong), None once ``t`` is too
    many; such an ``i`` appears once per planned element in the result. Ties leave the last
    elements of a run unpaired (an extra facing stands at the end of its block).
    """
    H = [[-math.inf] * (m + 1) for _ in range(n + 1)]
    move = [[0] * (m + 1) for _ in range(n + 1)]  # 1 pair, 2 skip i, 3 skip j, 3+t absorb t
    H[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 and j == 0:
                continue
            cands = []
            if i:
                cands.append((H[i - 1][j] + gap, 2))
            if j:
                cands.append((H[i][j - 1] + gap, 3))
            if i and j:
                cands.append((H[i - 1][j - 1] + pair(i - 1, j - 1), 1))
            for t in range(1, j + 1):
                s = absorb(i - 1, j - t, t) if absorb is not None and i else None
                if s is None:
                    break
                cands.append((H[i - 1][j - t] + s, 3 + t))
            best = cands[0]
            for c in cands[1:]:
                if c[0] > best[0] + 1e-9:
                    best = c
            H[i][j], move[i][j] = best
    out: list[Pair] = []
    i, j = n, m
    while i > 0 or j > 0:
        mv = move[i][j]
        if mv == 1:
            i, j = i - 1, j - 1
            out.append((i, j))
        elif mv == 2:
            i -= 1
            out.append((i, None))
        elif mv == 3:
            j -= 1
            out.append((None, j))
        else:
            i, j = i - 1, j - (mv - 3)
            out.extend((i, k) for k in range(j + mv - 4, j - 1, -1))
    return out[::-1]
