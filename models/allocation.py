"""Funding sources' rules and the allocation policy, as data: stored as JSON documents beside each source
and each programme, validated here. What they mean for a household is decided in finance/allocation.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


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


@dataclass(frozen=True)
class SourceRow:
    """A funding source as stored: its rules and the ledger account that holds its money."""

    code: str
    category: str
    priority: int
    account_id: int
    rules: SourceRules = field(default_factory=SourceRules)


@dataclass(frozen=True)
class SourceView:
    """A source as the allocation sees it: its free balance read under the account's row lock."""

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


class AllocationPolicy(BaseModel):
    """Per programme, the order in which sources cover a household. Data, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    programme: str = "default"
    tiers: list[Tier] = Field(min_length=1)
