"""Hybrid search's fusion of a semantic and a lexical ranking, and the cap on chunks per
document. Pure functions over ranked lists, whatever engine produced them.

- `rrf`: weighted reciprocal rank fusion, Σ wᵢ / (k + rankᵢ). Only ranks count.
- `dbsf`: distribution-based score fusion, as Qdrant defines it: each list's scores are
  normalised by its own distribution (mean ± 3 standard deviations mapped to 0..1), then
  summed with their weights. A lexical list whose best match stands out keeps its lead; one
  of near-equal weak matches cannot push the semantic ranking around.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")
Ranked = Sequence[tuple[T, float]]  # best first


def rrf(lists: Sequence[Ranked[T]], weights: Sequence[float], k: int, key: Callable[[T], Hashable]) -> list[tuple[T, float]]:
    scores: dict[Hashable, float] = {}
    items: dict[Hashable, T] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        for rank, (item, _) in enumerate(ranked, start=1):
            identity = key(item)
            items.setdefault(identity, item)
            scores[identity] = scores.get(identity, 0.0) + weight / (k + rank)
    return sorted(((items[i], s) for i, s in scores.items()), key=lambda pair: -pair[1])


def _normalised(ranked: Ranked[T]) -> list[float]:
    values = [score for _, score in ranked]
    if len(values) < 2:
        return [1.0 for _ in values]
    mean, spread = statistics.fmean(values), statistics.pstdev(values)
    if spread == 0:
        return [1.0 for _ in values]
    low, high = mean - 3 * spread, mean + 3 * spread
    return [min(1.0, max(0.0, (value - low) / (high - low))) for value in values]


def dbsf(lists: Sequence[Ranked[T]], weights: Sequence[float], key: Callable[[T], Hashable]) -> list[tuple[T, float]]:
    scores: dict[Hashable, float] = {}
    items: dict[Hashable, T] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        for (item, _), normalised in zip(ranked, _normalised(ranked), strict=True):
            identity = key(item)
            items.setdefault(identity, item)
            scores[identity] = scores.get(identity, 0.0) + weight * normalised
    return sorted(((items[i], s) for i, s in scores.items()), key=lambda pair: -pair[1])


def cap_per_group(ranked: Ranked[T], cap: int | None, group: Callable[[T], Hashable]) -> list[tuple[T, float]]:
    """At most `cap` items of each group, best first (None: no cap)."""
    if cap is None:
        return list(ranked)
    taken: dict[Hashable, int] = {}
    kept = []
    for item, score in ranked:
        name = group(item)
        if taken.get(name, 0) < cap:
            taken[name] = taken.get(name, 0) + 1
            kept.append((item, score))
    return kept
