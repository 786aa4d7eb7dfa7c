"""Which funding sources cover a household, and how its entitlement splits across them and into tranches.

Pure functions over plain data: the activity that reserves locks the sources, reads their free balances,
calls `plan_allocation`, then writes one pending transfer per piece. Same input, same split.
"""

from __future__ import annotations

from core.errors import Refusal
from models.allocation import AllocationPolicy, SourceRow, SourceRules, SourceView, Tier
from models.finance import TranchePlan
from models.household import Household


def covers(rules: SourceRules, h: Household) -> bool:
    """Whether a source's own rules let it pay for this household. Empty lists mean 'no restriction'."""
    return (
        (not rules.programmes or h.programme in rules.programmes)
        and (not rules.groups or h.beneficiary_group.value in rules.groups)
        and (not rules.districts or h.district in rules.districts)
        and (not rules.support_types or h.support_type.value in rules.support_types)
    )


def in_tier(tier: Tier, s: SourceView, h: Household) -> bool:
    """Whether the policy's tier draws on this source for this household."""
    if tier.programme_households_only and not h.programme:
        return False
    return s.code in tier.sources or s.category in tier.categories


def eligible(sources: list[SourceRow], h: Household, *, only: str | None = None) -> list[SourceRow]:
    """The sources whose rules cover the household (only the one Finance named, if it named one): refused
    when the named source does not exist or its rules do not cover the household."""
    chosen = [r for r in sources if (only is None or r.code == only) and covers(r.rules, h)]
    if only is not None and not chosen:
        known = any(r.code == only for r in sources)
        raise Refusal(
            "SourceNotEligible" if known else "UnknownFundingSource",
            f"funding source {only!r} "
            + ("does not cover household " + h.code + " by its rules" if known else "does not exist"),
        )
    return chosen


def from_one_source(source: SourceView, h: Household, need: int) -> list[tuple[str, int]]:
    """The whole entitlement from the source Finance named; refused when its free balance is short."""
    if source.free < need:
        raise Refusal(
            "InsufficientFunds",
            f"funding source {source.code} has {source.free:,} đồng free; household {h.code} needs {need:,}",
        )
    return [(source.code, need)]


def plan_allocation(
    h: Household, need: int, sources: list[SourceView], policy: AllocationPolicy
) -> list[tuple[str, int]]:
    """(source, amount) pieces adding up to `need`, drawn tier by tier; refused if the eligible sources
    together hold less than `need`."""
    if need <= 0:
        raise Refusal("InvalidAmount", f"entitlement must be positive, got {need}")
    pieces: list[tuple[str, int]] = []
    used: set[str] = set()
    remaining = need
    for tier in policy.tiers:
        eligible = sorted(
            (s for s in sources if s.code not in used and in_tier(tier, s, h) and covers(s.rules, h)),
            key=lambda s: (s.priority, s.code),
        )
        tier_left = tier.max_per_house.get(h.support_type.value, need)
        for s in eligible:
            cap = min(s.rules.max_per_house.get(h.support_type.value, need), tier_left)
            take = min(s.free, remaining, cap)
            tier_left -= max(take, 0)
            used.add(s.code)
            if take > 0:
                pieces.append((s.code, take))
                remaining -= take
            if remaining == 0:
                return pieces
    eligible_codes = sorted(used)
    raise Refusal(
        "InsufficientFunds",
        f"household {h.code} needs {need:,} đồng; the sources policy {policy.programme}/{policy.version} allows "
        f"({', '.join(eligible_codes) or 'none'}) have {need - remaining:,} free for it",
    )


def split_into_tranches(
    pieces: list[tuple[str, int]], plan: TranchePlan, entitlement: int
) -> list[list[tuple[str, int]]]:
    """Cut the source pieces, in order, into the plan's tranches: tranche 1 draws first on the first source."""
    amounts = plan.amounts(entitlement)
    if sum(a for _, a in pieces) != entitlement:
        raise ValueError("pieces do not add up to the entitlement")
    queue = [list(p) for p in pieces]
    out: list[list[tuple[str, int]]] = []
    for amount in amounts:
        tranche: list[tuple[str, int]] = []
        left = amount
        while left > 0:
            source, available = queue[0]
            take = min(available, left)
            tranche.append((source, take))
            left -= take
            if take == available:
                queue.pop(0)
            else:
                queue[0][1] = available - take
        out.append(tranche)
    return out
