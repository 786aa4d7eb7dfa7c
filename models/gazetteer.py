"""The dated gazetteer: administrative units with their levels and validity, and the reorganisations that
replace old units by new ones (the succession), each with its legal basis.

Pure data and rules (no I/O). A gazetteer is loaded from a file (`starter.py reform load FILE`), checked whole
by `Gazetteer.problems` before anything is stored, and stored as a version that is never edited
(db/gazetteer.py). Households carry the names of their units as imported (district, commune); `unit_at`
finds the unit those names meant on a date, `successor` where a reorganisation sends it.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from core.errors import Refusal


class Level(StrEnum):
    PROVINCE = "province"  # tỉnh
    DISTRICT = "district"  # huyện, thành phố thuộc tỉnh (until 1 July 2025)
    COMMUNE = "commune"  # xã
    WARD = "ward"  # phường
    TOWN = "town"  # thị trấn (a commune-level unit of a district, until 1 July 2025)


# The old map's name for a household that never had a district (imported on the two-tier map).
NO_DISTRICT = "(không có huyện)"

COMMUNE_LEVELS = frozenset({Level.COMMUNE, Level.WARD, Level.TOWN})


class Unit(BaseModel):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    code: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]{1,39}$")
    name: str = Field(min_length=2, max_length=80)
    level: Level
    parent: str | None = None  # the unit it belongs to (a commune: its district, or the province after 2025)
    valid_from: date | None = None  # None: before anything this gazetteer knows
    valid_until: date | None = None  # the first day it no longer exists; None: it still does
    generated: bool = False  # invented for the generated province: plausible, not the legal list

    def valid_on(self, on: date) -> bool:
        return (self.valid_from is None or self.valid_from <= on) and (
            self.valid_until is None or on < self.valid_until
        )


class Succession(BaseModel):
    """An old unit's records, households and money go to `to_unit`. A unit split in several goes by list: each
    succession but one names the households it takes (`households`), the one without a list takes the rest."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    from_unit: str
    to_unit: str
    households: list[str] = Field(default_factory=list)
    generated: bool = False


class Reorganisation(BaseModel):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    basis: str = Field(min_length=3, max_length=80)  # the resolution, e.g. 1672/NQ-UBTVQH15
    title: str = ""
    effective: date  # the first day the new units exist
    successions: list[Succession] = Field(min_length=1)


class Gazetteer(BaseModel):
    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    version: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,39}$")
    province: str
    source: str = ""  # where the lists come from (the resolutions; what is generated)
    units: list[Unit] = Field(min_length=1)
    reorganisations: list[Reorganisation] = Field(default_factory=list)

    # ------------------------------------------------------------------------------------------ checks

    def problems(self) -> list[str]:
        """Everything wrong with the file, each naming its rule and unit; empty: it may be loaded."""
        out: list[str] = []
        units: dict[str, Unit] = {}
        for u in self.units:
            if u.code in units:
                out.append(f"DuplicateUnit: unit {u.code} is listed twice")
            units[u.code] = u
        for u in self.units:
            if u.parent is not None and u.parent not in units:
                out.append(f"UnknownUnit: unit {u.code}'s parent {u.parent} is not in the gazetteer")
            if u.valid_from and u.valid_until and u.valid_until <= u.valid_from:
                out.append(f"InvalidDates: unit {u.code} ends ({u.valid_until}) before it begins ({u.valid_from})")
        bases = [r.basis for r in self.reorganisations]
        for b in {b for b in bases if bases.count(b) > 1}:
            out.append(f"DuplicateReorganisation: {b} is listed twice")
        for r in self.reorganisations:
            out.extend(self._reorganisation_problems(r, units))
        return out

    def _reorganisation_problems(self, r: Reorganisation, units: dict[str, Unit]) -> list[str]:
        out: list[str] = []
        by_from: dict[str, list[Succession]] = {}
        for s in r.successions:
            by_from.setdefault(s.from_unit, []).append(s)
            old, new = units.get(s.from_unit), units.get(s.to_unit)
            if old is None:
                out.append(f"UnknownUnit: {r.basis} moves unit {s.from_unit}, which is not in the gazetteer")
            elif old.valid_until != r.effective:
                out.append(
                    f"InvalidDates: {r.basis} takes effect on {r.effective}, but unit {s.from_unit} ends on "
                    f"{old.valid_until or 'no date'}"
                )
            if new is None:
                out.append(
                    f"UnknownUnit: {r.basis} moves unit {s.from_unit} to {s.to_unit}, which is not in the gazetteer"
                )
            elif not new.valid_on(r.effective):
                out.append(f"InvalidDates: {r.basis}: successor {s.to_unit} does not exist on {r.effective}")
        for u in units.values():
            if u.valid_until == r.effective and u.level is not Level.PROVINCE and u.code not in by_from:
                out.append(
                    f"UnitWithoutSuccessor: unit {u.code} ({u.name}) ends on {r.effective} under {r.basis} "
                    "without a successor"
                )
        for code, ss in by_from.items():
            unlisted = [s for s in ss if not s.households]
            if len(ss) > 1 and len(unlisted) > 1:
                out.append(
                    f"SplitUnassigned: {r.basis} splits unit {code} in {len(ss)}; all but one successor must "
                    "list its households"
                )
            seen: set[str] = set()
            for s in ss:
                twice = seen & set(s.households)
                if twice:
                    out.append(
                        f"SplitOverlap: {r.basis} gives household(s) {', '.join(sorted(twice))} of {code} "
                        "to two successors"
                    )
                seen |= set(s.households)
        return out

    def check(self) -> None:
        """Refuse the whole file (rule `InvalidGazetteer`) if anything in it is wrong."""
        found = self.problems()
        if found:
            raise Refusal("InvalidGazetteer", f"the gazetteer {self.version} is refused whole: " + "; ".join(found))

    # ----------------------------------------------------------------------------------------- lookups

    def unit(self, code: str) -> Unit:
        for u in self.units:
            if u.code == code:
                return u
        raise KeyError(code)

    def reorganisation(self, basis: str) -> Reorganisation:
        for r in self.reorganisations:
            if r.basis == basis:
                return r
        raise Refusal("UnknownReorganisation", f"the gazetteer {self.version} holds no reorganisation {basis!r}")

    def unit_at(self, district: str | None, commune: str, on: date) -> Unit | None:
        """The commune-level unit named `commune` (of district `district`, if the household still has one)
        that exists on `on`."""
        for u in self.units:
            if u.level not in COMMUNE_LEVELS or u.name != commune or not u.valid_on(on):
                continue
            parent = self.unit(u.parent) if u.parent else None
            if district is None:
                if parent is None or parent.level is Level.PROVINCE:
                    return u
            elif parent is not None and parent.name == district:
                return u
        return None

    def successor(self, basis: str, district: str | None, commune: str, household: str) -> tuple[Unit, Unit] | None:
        """(old unit, new unit) for a household of `district` / `commune` under reorganisation `basis`; None if
        the reorganisation does not move its unit (already moved, or not a unit it ends)."""
        r = self.reorganisation(basis)
        on = date.fromordinal(r.effective.toordinal() - 1)
        old = self.unit_at(district, commune, on)
        if old is None:
            return None
        ss = [s for s in r.successions if s.from_unit == old.code]
        if not ss:
            return None
        chosen = next((s for s in ss if household in s.households), None) or next(
            (s for s in ss if not s.households), None
        )
        if chosen is None:
            raise Refusal(
                "SplitUnassigned",
                f"{basis} splits unit {old.code} by household lists, and none names household {household}",
            )
        return old, self.unit(chosen.to_unit)

    def last_successor(self, district: str | None, commune: str, household: str) -> Unit | None:
        """Where the unit `district` / `commune` is now, followed through every reorganisation since (Tràng Các →
        Khánh Khê in 2024 → Khánh Khê of the two-tier map in 2025); None if none moved it."""
        found: Unit | None = None
        for r in sorted(self.reorganisations, key=lambda x: x.effective):
            step = self.successor(r.basis, district, commune, household)
            if step is not None:
                found = step[1]
                parent = self.unit(found.parent) if found.parent else None
                district = parent.name if parent is not None and parent.level is Level.DISTRICT else None
                commune = found.name
        return found
