"""Other programmes' beneficiary lists, our households' keyed hashes, and the overrides of the matches
between them (migration 0017). Matching is a join on the keyed hash of CCCD: no key and no number here.

The lists are written with the schema owner's sessions (the application's login may only read them); the
household keys and the overrides with the application's. Functions query and flush; the caller commits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Refusal
from db.schema import (
    double_support_overrides,
    household_match_keys,
    households,
    other_programme_beneficiaries,
    other_programme_lists,
)

L, B, K, OV = other_programme_lists, other_programme_beneficiaries, household_match_keys, double_support_overrides


@dataclass(frozen=True)
class Beneficiary:
    """One row of another programme's list, as stored: the keyed hash, never the number."""

    cccd_hmac: str
    supported_year: int | None = None
    note: str | None = None


@dataclass(frozen=True)
class Match:
    """A household of ours that another programme's list names, with the list that named it."""

    programme: str
    list_id: int
    file_sha256: str
    supported_year: int | None
    note: str | None


@dataclass(frozen=True)
class StoredList:
    id: int
    programme: str
    name: str | None
    file_name: str
    file_sha256: str
    row_count: int
    imported_by: str
    imported_at: datetime


async def find_list(session: AsyncSession, programme: str, file_sha256: str) -> StoredList | None:
    """The list of `programme` imported from a file with this SHA-256, if it was."""
    row = (await session.execute(select(L).where(L.c.programme == programme, L.c.file_sha256 == file_sha256))).first()
    return StoredList(**row._mapping) if row else None


async def add_list(
    session: AsyncSession,
    *,
    programme: str,
    name: str | None,
    file_name: str,
    file_sha256: str,
    row_count: int,
    imported_by: str,
) -> int:
    """Record an imported list's file (who imported it and when, its SHA-256); returns its id."""
    return await session.scalar(
        L.insert()
        .values(
            programme=programme,
            name=name,
            file_name=file_name,
            file_sha256=file_sha256,
            row_count=row_count,
            imported_by=imported_by,
        )
        .returning(L.c.id)
    )


async def add_beneficiaries(session: AsyncSession, list_id: int, programme: str, rows: Sequence[Beneficiary]) -> int:
    """Store the list's keyed hashes; returns how many were new. One already named by an earlier list of the
    programme is kept as that list has it (a programme's lists grow: the first list that named a citizen is
    the one a match cites)."""
    if not rows:
        return 0
    added = 0
    for start in range(0, len(rows), 5000):  # a list of tens of thousands, in statements of bounded size
        chunk = rows[start : start + 5000]
        result = await session.execute(
            insert(B)
            .values(
                [
                    {
                        "list_id": list_id,
                        "programme": programme,
                        "cccd_hmac": r.cccd_hmac,
                        "supported_year": r.supported_year,
                        "note": r.note,
                    }
                    for r in chunk
                ]
            )
            .on_conflict_do_nothing(index_elements=[B.c.programme, B.c.cccd_hmac])
            .returning(B.c.cccd_hmac)
        )
        added += len(result.all())
    return added


async def add_household_keys(session: AsyncSession, keys: Mapping[str, str]) -> int:
    """Store each household's keyed hash, by code; returns how many were new. A household keyed before keeps
    its hash (the table is append-only), so keying again is harmless."""
    if not keys:
        return 0
    items = list(keys.items())
    added = 0
    for start in range(0, len(items), 5000):
        result = await session.execute(
            insert(K)
            .values([{"household_code": code, "cccd_hmac": h} for code, h in items[start : start + 5000]])
            .on_conflict_do_nothing(index_elements=[K.c.household_code])
            .returning(K.c.household_code)
        )
        added += len(result.all())
    return added


async def unkeyed_households(session: AsyncSession, limit: int = 5000) -> list[tuple[str, str]]:
    """(code, CCCD) of registered households without a keyed hash yet, in code order, at most `limit`."""
    q = (
        select(households.c.code, households.c.cccd)
        .where(~exists().where(K.c.household_code == households.c.code))
        .order_by(households.c.code)
        .limit(limit)
    )
    return [(r.code, r.cccd) for r in await session.execute(q)]


async def household_keys(session: AsyncSession) -> list[str]:
    """Every keyed hash of our households, sorted (what another programme is given: no code, no name)."""
    return list(await session.scalars(select(K.c.cccd_hmac).distinct().order_by(K.c.cccd_hmac)))


def _not_overridden(code_column):
    return ~exists().where(OV.c.household_code == code_column, OV.c.programme == B.c.programme)


async def open_matches(session: AsyncSession, household_code: str) -> list[Match]:
    """The programmes whose lists name this household (by its keyed hash) and whose match no override has
    set aside, by programme. Empty for a household never keyed: keying is the import's part."""
    q = (
        select(B.c.programme, B.c.list_id, L.c.file_sha256, B.c.supported_year, B.c.note)
        .select_from(K.join(B, B.c.cccd_hmac == K.c.cccd_hmac).join(L, L.c.id == B.c.list_id))
        .where(K.c.household_code == household_code, _not_overridden(K.c.household_code))
        .order_by(B.c.programme)
    )
    return [Match(**r._mapping) for r in await session.execute(q)]


async def record_override(
    session: AsyncSession,
    *,
    household_code: str,
    programme: str,
    audit_id: int,
    user_id: str,
    reason: str,
    evidence: Iterable[str],
    at: datetime,
) -> int:
    """Set a match aside: the household is not barred by `programme`'s list, for the reason and on the
    evidence given, by the signed step whose audit row is `audit_id`. Returns the override's id. The same
    step recorded again (a retried transaction) returns the override it made; another override of the same
    match is refused (AlreadyOverridden), as is one where no list of the programme names the household
    (NoMatch)."""
    evidence = [e.strip() for e in evidence if e and e.strip()]
    if not reason or not reason.strip():
        raise Refusal("ReasonMissing", "overriding a double-support match needs the reason")
    if not evidence:
        raise Refusal("EvidenceMissing", "overriding a double-support match needs at least one piece of evidence")
    earlier = (
        await session.execute(
            select(OV.c.id, OV.c.audit_id).where(OV.c.household_code == household_code, OV.c.programme == programme)
        )
    ).first()
    if earlier is not None:
        if earlier.audit_id == audit_id:
            return earlier.id
        raise Refusal(
            "AlreadyOverridden", f"household {household_code}: the match with {programme} was overridden before"
        )
    matched = await session.scalar(
        select(func.count())
        .select_from(K.join(B, B.c.cccd_hmac == K.c.cccd_hmac))
        .where(K.c.household_code == household_code, B.c.programme == programme)
    )
    if not matched:
        raise Refusal("NoMatch", f"household {household_code} is on no list of {programme}: nothing to override")
    return await session.scalar(
        OV.insert()
        .values(
            household_code=household_code,
            programme=programme,
            audit_id=audit_id,
            by_user=user_id,
            reason=reason.strip(),
            evidence=evidence,
            at=at,
        )
        .returning(OV.c.id)
    )


@dataclass(frozen=True)
class MatchRow:
    """A line of the matches report: a household of ours on another programme's list, open or overridden."""

    household_code: str
    district: str | None
    commune: str
    stage: str
    programme: str
    list_id: int
    file_name: str
    supported_year: int | None
    note: str | None
    overridden_by: str | None
    reason: str | None
    overridden_at: datetime | None

    @property
    def open(self) -> bool:
        return self.overridden_by is None


async def matches_report(
    session: AsyncSession, *, programme: str | None = None, open_only: bool = False
) -> list[MatchRow]:
    """Every household of ours another programme's list names, with the override that set it aside if one
    did, by district, commune, household and programme."""
    q = (
        select(
            K.c.household_code,
            households.c.district,
            households.c.commune,
            households.c.stage,
            B.c.programme,
            B.c.list_id,
            L.c.file_name,
            B.c.supported_year,
            B.c.note,
            OV.c.by_user.label("overridden_by"),
            OV.c.reason,
            OV.c.at.label("overridden_at"),
        )
        .select_from(
            K.join(households, households.c.code == K.c.household_code)
            .join(B, B.c.cccd_hmac == K.c.cccd_hmac)
            .join(L, L.c.id == B.c.list_id)
            .outerjoin(OV, and_(OV.c.household_code == K.c.household_code, OV.c.programme == B.c.programme))
        )
        .order_by(households.c.district.nulls_last(), households.c.commune, K.c.household_code, B.c.programme)
    )
    if programme is not None:
        q = q.where(B.c.programme == programme)
    if open_only:
        q = q.where(OV.c.id.is_(None))
    return [MatchRow(**r._mapping) for r in await session.execute(q)]


LISTS_LOCK = 0x6F746872  # an advisory lock id of the lists' own ("othr")


async def lock_lists(session: AsyncSession) -> None:
    """Hold the lists' lock until the transaction ends (other programmes' lists are imported one at a time)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LISTS_LOCK})


async def list_matches(session: AsyncSession, list_id: int) -> int:
    """How many of our households (by keyed hash) the programme of this list names, on it or an earlier list."""
    programme = select(L.c.programme).where(L.c.id == list_id).scalar_subquery()
    return await session.scalar(
        select(func.count(func.distinct(K.c.household_code)))
        .select_from(K.join(B, B.c.cccd_hmac == K.c.cccd_hmac))
        .where(B.c.programme == programme)
    )
