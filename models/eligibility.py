"""What verification finds about a household's house, and the policy's criteria it is checked against
(Circular 01/2022/TT-BXD art. 3). The check itself is workflows/rules.check_eligibility."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Material(StrEnum):
    """The material a main part of the house is made of (Circular 01/2022/TT-BXD art. 3)."""

    DURABLE = "durable"  # bền chắc
    NON_DURABLE = "non_durable"  # không bền chắc (tre, nứa, lá, ván ghép, ...)


# The three main parts of a house, as the circular names them.
PARTS = ("foundation", "frame", "roof")  # nền-móng, khung-tường, mái


class EligibilityFindings(BaseModel):
    """What the commune's review found for one household (biên bản rà soát, bình xét)."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    has_house: bool = True
    foundation: Material | None = None
    frame: Material | None = None
    roof: Material | None = None
    floor_area_m2: float | None = Field(default=None, ge=0, le=10_000)
    household_size: int | None = Field(default=None, ge=1, le=60)
    # Earlier State housing support: None (none), else which programme or decision supported the household.
    earlier_support: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _complete(self) -> EligibilityFindings:
        if self.has_house:
            missing = [p for p in PARTS if getattr(self, p) is None]
            if missing:
                raise ValueError(f"a household with a house needs the material of {', '.join(missing)}")
            if self.floor_area_m2 is None or self.household_size is None:
                raise ValueError("a household with a house needs its floor area and household size")
        if self.earlier_support is not None and not self.earlier_support:
            object.__setattr__(self, "earlier_support", None)
        return self

    @property
    def non_durable_parts(self) -> list[str]:
        return [p for p in PARTS if getattr(self, p) is Material.NON_DURABLE]

    @property
    def area_per_person(self) -> float | None:
        if self.floor_area_m2 is None or not self.household_size:
            return None
        return self.floor_area_m2 / self.household_size


class EligibilityCriteria(BaseModel):
    """The policy's criteria: a household qualifies when it has no house, or at least `min_non_durable_parts` of
    the three main parts are of non-durable materials, or it has less than `area_per_person_below_m2` per person;
    and (with `earlier_support_excludes`) it has had no earlier State housing support."""

    model_config = ConfigDict(frozen=True)

    basis: str = "Thông tư 01/2022/TT-BXD, Điều 3"
    min_non_durable_parts: int = Field(default=2, ge=1, le=3)
    area_per_person_below_m2: float = Field(default=8, gt=0)
    earlier_support_excludes: bool = True
