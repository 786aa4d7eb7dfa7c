"""Which funding sources cover a household, and how its entitlement splits across them and into tranches.

Pure functions over plain data: the activity that reserves locks the sources, reads their free balances,
calls `plan_allocation`, then writes one pending transfer per piece. Same input, same split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from core.errors import Refusal
from models.finance import TranchePlan
from models.household import Household


class SourceRules(BaseModel):
    """A funding source's own rules, stored with it as data. Empty lists mean 'no restriction'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    programmes: list[str] = Field(default_factory=list)  # only households of these national target programmes
    groups: list[str] = Field(default_factory=list)
    districts: list[str] = Field(default_factory=list)
    support_types: list[str] = Field(default_factory=list)
    # At most this much per house from this source, by support type (the central budget under the
    # poverty programme pays at most 40/20 million; the province tops up).
    max_per_house: dict[str, int] = Field(default_factory=dict)
    # A district's own advance for programme households, reimbursed later (cấp bù) by this source.
    reimbursed_by: str | None = None

    def accepts(self, h: Household) -> bool:
        return (
            (not self.programmes or h.programme in self.programmes)
            and (not self.groups or h.beneficiary_group.value in self.groups)
            and (not self.districts or h.district in self.districts)
            and (not self.support_types or h.support_type.value in self.support_types)
        )


@dataclass(frozen=True)
class SourceView:
    code: str
    category: str
    priority: int
    free: int
    rules: SourceRules = field(default_factory=SourceRules)


class Tier(BaseModel):
    """One step of the policy: sources of these categories (or these codes), in priority order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    categories: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    # Only for households already in a national target programme (their programme's sources first).
    programme_households_only: bool = False
    # At most this much per house from the tier as a whole, by support type (the central budget under
    # the poverty programme pays at most 40/20 million; the province tops up from the next tier).
    max_per_house: dict[str, int] = Field(default_factory=dict)

    def includes(self, s: SourceView, h: Household) -> bool:
        if self.programme_households_only and not h.programme:
            return False
        return s.code in self.sources or s.category in self.categories


class AllocationPolicy(BaseModel):
    """Per programme, the order in which sources cover a household. Data, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    programme: str = "default"
    tiers: list[Tier] = Field(min_length=1)


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
            (s for s in sources if s.code not in used and tier.includes(s, h) and s.rules.accepts(h)),
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
