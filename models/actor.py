"""Who acts: an officer with a role, an agency and a jurisdiction."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.household import Household

# The programme's roles, the ones the workflow policy names and those that only read or manage. A user's role is
# one of these (`starter.py users add --role`); which role may take which step is the policy's (data, versioned).
ROLES: tuple[str, ...] = (
    "admin",  # administrator: accounts, new policy versions, a restore of lost audit rows; reads every view
    "auditor",  # inspector (Thanh tra): reads histories, timelines and the three-way check; changes nothing
    "commune_officer",  # UBND cấp xã: verifies, reports construction progress, completes it, accepts; may release
    "district_officer",  # UBND cấp huyện: verifies, approves, accepts, cancels; imports lists, registers decisions
    "finance_officer",  # Sở Tài chính: funding sources, allocation, payout authorisation, settlement, loans
    "payment_channel",  # the system user that records the payment channel's answers (paid, failed)
    "province_officer",  # UBND tỉnh: imports the approved lists, approves, cancels, registers decisions
    "treasury_officer",  # Kho bạc Nhà nước: releases authorised tranches to the payment channel
    "vbsp_officer",  # Ngân hàng Chính sách xã hội: records preferential loans (co-financing, never grant money)
)

# Who administers accounts (add, reset, disable, enable, tokens: `starter.py users …`) and who the first
# administrator is. Fixed, not a policy field: a policy version must never be able to lock every
# administrator out, and the first administrator is set up before any policy is read.
ACCOUNT_ADMIN_ROLE = "admin"


class Jurisdiction(BaseModel):
    """A province, optionally narrowed to a district and a commune. Empty parts mean 'all of it'."""

    model_config = ConfigDict(frozen=True)

    province: str
    district: str | None = None
    commune: str | None = None

    @property
    def province_wide(self) -> bool:
        return self.district is None and self.commune is None

    def covers(self, household: Household) -> bool:
        # A commune of the two-tier map (no district) is not the commune of the same name of an old district.
        district_ok = (
            self.district == household.district
            if self.commune is not None
            else (self.district is None or self.district == household.district)
        )
        return (
            self.province == household.province
            and district_ok
            and (self.commune is None or self.commune == household.commune)
        )

    def __str__(self) -> str:
        return " / ".join(p for p in (self.province, self.district, self.commune) if p)


class Actor(BaseModel):
    """The officer taking an action, as resolved from the users table by the caller.

    The engine re-checks the user against the table inside the transaction that records the step.
    """

    model_config = ConfigDict(frozen=True)

    user_id: str = Field(min_length=1, max_length=64)
    role: str = Field(pattern=r"^[a-z][a-z_]{1,39}$")
    agency: str = Field(min_length=1, max_length=120)
    jurisdiction: Jurisdiction
