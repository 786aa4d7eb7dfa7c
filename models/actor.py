"""Who acts: an officer with a role, an agency and a jurisdiction."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.household import Household


class Jurisdiction(BaseModel):
    """A province, optionally narrowed to a district and a commune. Empty parts mean 'all of it'."""

    model_config = ConfigDict(frozen=True)

    province: str
    district: str | None = None
    commune: str | None = None

    def covers(self, household: Household) -> bool:
        return (
            self.province == household.province
            and (self.district is None or self.district == household.district)
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
