"""How many paid households a verification plan asks, and which: the sample size from a confidence level and a
margin of error, and a reproducible draw that always takes the households whose payment carries a risk.

The size is Cochran's for a proportion at its most uncertain (p = 0.5), corrected for the finite list, then
multiplied by a design factor (1.5, as UNICEF HOPE's post-distribution monitoring does) and capped at the list:
6,508 households at 95 % and 5 % give 545. The draw is `random.Random(seed)` over the codes in sorted order, so
the same seed and list draw the same households on any machine; the seed is recorded with the plan.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

DESIGN_FACTOR = 1.5


def sample_size(population: int, confidence: float, margin: float, factor: float = DESIGN_FACTOR) -> int:
    """Households to ask out of `population` for `confidence` (0.80–0.999) within `margin` (0.01–0.20)."""
    if population < 0:
        raise ValueError("population: a number of households, not negative")
    if not 0.8 <= confidence < 1:
        raise ValueError(f"confidence {confidence}: between 0.80 and 0.999")
    if not 0.01 <= margin <= 0.2:
        raise ValueError(f"margin {margin}: between 0.01 and 0.20")
    if population == 0:
        return 0
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    n0 = z * z * 0.25 / (margin * margin)
    corrected = n0 / (1 + (n0 - 1) / population)
    return min(population, math.ceil(round(corrected * factor, 9)))


@dataclass(frozen=True)
class Drawn:
    """The households drawn: each with why (a risk named, or `sampled`)."""

    reasons: dict[str, str]
    risk: int
    sampled: int


def draw(codes: Iterable[str], risks: Mapping[str, str], *, size_of_rest: int | None, seed: int) -> Drawn:
    """Every household in `risks` (code → the risk, e.g. 'payee changed'), then `size_of_rest` of the others
    drawn with `seed` (None: all of them, a full-list plan)."""
    population = sorted(set(codes))
    risky = {c: risks[c] for c in population if c in risks}
    rest = [c for c in population if c not in risky]
    k = len(rest) if size_of_rest is None else min(size_of_rest, len(rest))
    chosen = random.Random(seed).sample(rest, k)
    reasons = dict(risky) | {c: "sampled" for c in sorted(chosen)}
    return Drawn(reasons, len(risky), len(chosen))
