"""Change-point detection: where the level of a series changes (E-Divisive means)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

# E-Divisive: permutations per test, their significance level, the shortest segment.
PERMUTATIONS = 199
CHANGE_ALPHA = 0.01
MIN_SEGMENT = 3


def change_points(
    values: Sequence[float],
    *,
    alpha: float = CHANGE_ALPHA,
    permutations: int = PERMUTATIONS,
    min_size: int = MIN_SEGMENT,
    seed: int = 0,
) -> list[int]:
    """Where the distribution of `values` changes: the indices at which new segments start.

    E-Divisive means (Matteson and James, 2014; as in Apache Otava and MongoDB's
    signal-processing-algorithms): the split of a segment that maximises the energy distance
    between its two sides, kept when a permutation test within the segment says it is
    significant at `alpha`; repeated, best split first, until one is not. Deterministic for a
    given `seed`. Permutations go in batches, and a test stops as soon as enough of them beat
    it to make it fail, so a flat series costs one batch.
    """
    x = np.asarray(values, dtype=np.float64)
    found: list[int] = []
    rng = np.random.default_rng(seed)
    most_beaten = math.floor(alpha * (permutations + 1)) - 1  # p = (beaten + 1) / (R + 1)
    while True:
        bounds = [0, *sorted(found), len(x)]
        best: tuple[int, int, int, float] | None = None  # (start, end, split, statistic)
        for start, end in itertools.pairwise(bounds):
            if end - start < 2 * min_size:
                continue
            stats = _split_statistics(x[None, start:end], min_size)[0]
            split = int(np.argmax(stats))
            if best is None or stats[split] > best[3]:
                best = (start, end, start + min_size + split, float(stats[split]))
        if best is None or best[3] <= 0:
            return sorted(found)
        start, end, split, statistic = best
        beaten, tried = 0, 0
        while tried < permutations:
            batch = min(_BATCH, permutations - tried)
            shuffled = rng.permuted(np.broadcast_to(x[start:end], (batch, end - start)), axis=1)
            beaten += int((_split_statistics(shuffled, min_size).max(axis=1) >= statistic).sum())
            tried += batch
            if beaten > most_beaten:
                return sorted(found)
        found.append(split)


_BATCH = 25  # permutations computed together


def _split_statistics(segments: np.ndarray, min_size: int) -> np.ndarray:
    """For each row of `segments`, the E-Divisive statistic of every split τ into m = τ and
    k = n − τ values (each side ≥ min_size):
    q(τ) = m·k/n · (2·mean|x−y| − mean|x−x'| − mean|y−y'|)."""
    n = segments.shape[1]
    distances = np.abs(segments[:, :, None] - segments[:, None, :])
    # Σ d[:m, :n] and Σ d[:m, :m] (= twice the sum below the diagonal) for every m.
    rows = np.cumsum(distances.sum(axis=2), axis=1)
    below = 2 * np.cumsum(np.tril(distances, -1).sum(axis=2), axis=1)
    m = np.arange(min_size, n - min_size + 1)
    k = n - m
    left = below[:, m - 1]
    cross = rows[:, m - 1] - left
    right = rows[:, n - 1][:, None] - 2 * rows[:, m - 1] + left
    energy = 2 * cross / (m * k) - left / (m * (m - 1)) - right / (k * (k - 1))
    result: np.ndarray = m * k / n * energy
    return result
