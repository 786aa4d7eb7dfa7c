"""The household registry and read model: who is on the list and where each household stands now."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.schema import household_tranches, households, import_batches
from models.actor import Jurisdiction
from models.household import Household


@dataclass(frozen=True)
class HouseholdRow:
    code: str
    province: str
    district: str | None  # None: moved to a commune of the two-tier map (after 1 July 2025)
    commune: str
    beneficiary_group: str
    support_type: str
    decision_ref: str
    workflow_id: str
    stage: str
    stage_since: datetime
    last_seq: int
    entitlement: int
    reserved: int
    paid: int
    funding_source: str | None
    old_district: str | None  # where the household was imported (the old map): never changes
    old_commune: str
    moved_under: str | None  # the reorganisation that moved it, if one did


_ROW_COLUMNS = [households.c[name] for name in HouseholdRow.__dataclass_fields__]


def to_household(m) -> Household:
    return Household(**{name: m[name] for name in Household.model_fields})


async def existing(session: AsyncSession, codes: list[str], cccds: list[str]) -> tuple[dict, dict]:
    """Registered households whose code or CCCD is among these: (by code, as imported: a household a
    reorganisation moved reads with the units of its list; by CCCD)."""
    rows = (
        (await session.execute(select(households).where(households.c.code.in_(codes) | households.c.cccd.in_(cccds))))
        .mappings()
        .all()
    )
    as_imported = [{**r, "district": r["old_district"], "commune": r["old_commune"]} for r in rows]
    return {r["code"]: to_household(r) for r in as_imported}, {r["cccd"]: r["code"] for r in rows}


async def insert_many(session: AsyncSession, items: list[Household], batch_id: int) -> None:
    if not items:
        return
    await session.execute(
        households.insert(),
        [
            {
                **h.model_dump(mode="json"),
                "workflow_id": h.workflow_id,
                "import_batch_id": batch_id,
            }
            for h in items
        ],
    )


async def importers(session: AsyncSession, codes: list[str]) -> dict[str, str]:
    """Who imported each of these registered households' list (`import_batches.imported_by`), by code."""
    if not codes:
        return {}
    rows = await session.execute(
        select(households.c.code, import_batches.c.imported_by)
        .join(import_batches, import_batches.c.id == households.c.import_batch_id)
        .where(households.c.code.in_(codes))
    )
    return {r.code: r.imported_by for r in rows}


REGISTRY_LOCK = 0x686F7573  # an advisory lock id of the registry's own ("hous")


async def lock_registry(session: AsyncSession) -> None:
    """Hold the registry's lock until the transaction ends (imports register one list at a time)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": REGISTRY_LOCK})


async def registered(session: AsyncSession, codes: list[str] | None = None) -> set[str]:
    """The codes of the registered households (of `codes`, when given)."""
    q = select(households.c.code)
    if codes is not None:
        q = q.where(households.c.code.in_(codes))
    return set((await session.execute(q)).scalars())


async def get(session: AsyncSession, code: str) -> HouseholdRow | None:
    row = (await session.execute(select(*_ROW_COLUMNS).where(households.c.code == code))).one_or_none()
    return HouseholdRow(**row._mapping) if row else None


async def get_household(session: AsyncSession, code: str) -> Household | None:
    row = (await session.execute(select(households).where(households.c.code == code))).mappings().one_or_none()
    return to_household(row) if row else None


async def get_households(session: AsyncSession, codes: list[str]) -> dict[str, Household]:
    """The registered households among `codes`, by code, in one query."""
    rows = (await session.execute(select(households).where(households.c.code.in_(codes)))).mappings().all()
    return {r["code"]: to_household(r) for r in rows}


async def lock(session: AsyncSession, code: str) -> HouseholdRow | None:
    """Lock the household's row for this transaction: its transitions are recorded one at a time."""
    row = (
        await session.execute(select(*_ROW_COLUMNS).where(households.c.code == code).with_for_update())
    ).one_or_none()
    return HouseholdRow(**row._mapping) if row else None


async def list_rows(
    session: AsyncSession, *, stage: str | None = None, district: str | None = None, limit: int = 1000
) -> list[HouseholdRow]:
    query = select(*_ROW_COLUMNS).order_by(households.c.district, households.c.code).limit(limit)
    if stage:
        query = query.where(households.c.stage == stage)
    if district:
        query = query.where(households.c.district == district)
    return [HouseholdRow(**r._mapping) for r in await session.execute(query)]


def in_jurisdiction(j: Jurisdiction) -> list:
    """`Jurisdiction.covers` as SQL conditions on the register: what an officer may read."""
    h = households.c
    where = [h.province == j.province]
    if j.district:
        where.append(h.district == j.district)
    elif j.commune:  # a commune of the two-tier map: not the commune of the same name of an old district
        where.append(h.district.is_(None))
    if j.commune:
        where.append(h.commune == j.commune)
    return where


def _visible_query(
    jurisdiction: Jurisdiction,
    columns: Sequence[str] | None,
    *,
    code: str | None,
    stage: str | None,
    district: str | None,
    commune: str | None,
    group: str | None,
    code_like: str | None,
):
    h = households.c
    query = select(*(h[c] for c in columns)) if columns is not None else select(households)
    query = query.where(*in_jurisdiction(jurisdiction))
    if code is not None:  # a code asked for, even a blank one, is a filter: '' matches no household
        query = query.where(h.code == code)
    for column, value in (
        (h.stage, stage),
        (h.district, district),
        (h.commune, commune),
        (h.beneficiary_group, group),
    ):
        if value:
            query = query.where(column == value)
    if code_like:
        query = query.where(h.code.ilike(f"%{code_like}%"))
    return query


async def visible(
    session: AsyncSession,
    jurisdiction: Jurisdiction,
    *,
    columns: Sequence[str] | None = None,
    code: str | None = None,
    stage: str | None = None,
    district: str | None = None,
    commune: str | None = None,
    group: str | None = None,
    code_like: str | None = None,
    order: str = "code",
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The households a user of `jurisdiction` may see, filtered (empty filters are ignored), as rows of
    `columns` (every column when None), ordered by code or by `order="stage_since"` (oldest first)."""
    h = households.c
    query = _visible_query(
        jurisdiction,
        columns,
        code=code,
        stage=stage,
        district=district,
        commune=commune,
        group=group,
        code_like=code_like,
    )
    query = query.order_by(h.stage_since, h.code) if order == "stage_since" else query.order_by(h.code)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return [dict(r) for r in (await session.execute(query)).mappings().all()]


async def count_visible(
    session: AsyncSession,
    jurisdiction: Jurisdiction,
    *,
    stage: str | None = None,
    commune: str | None = None,
    code_like: str | None = None,
) -> int:
    """How many households `visible` would give with these filters and no limit."""
    query = _visible_query(
        jurisdiction,
        ["code"],
        code=None,
        stage=stage,
        district=None,
        commune=commune,
        group=None,
        code_like=code_like,
    )
    return await session.scalar(select(func.count()).select_from(query.subquery()))


async def visible_one(
    session: AsyncSession, jurisdiction: Jurisdiction, code: str, *, columns: Sequence[str] | None = None
) -> dict[str, Any] | None:
    """The household `code` if a user of `jurisdiction` may see it (outside it reads as not there)."""
    rows = await visible(session, jurisdiction, columns=columns, code=code)
    return rows[0] if rows else None


async def place(session: AsyncSession, code: str) -> tuple[str, str]:
    """The household's (district, commune)."""
    return tuple(
        (
            await session.execute(select(households.c.district, households.c.commune).where(households.c.code == code))
        ).one()
    )


async def current_districts(session: AsyncSession) -> list[str]:
    """The districts households are in now (a payout batch selects by these): none once the reform moved them."""
    q = (
        select(households.c.district)
        .where(households.c.district.is_not(None))
        .distinct()
        .order_by(households.c.district)
    )
    return list(await session.scalars(q))


async def first_moved(session: AsyncSession, basis: str) -> str | None:
    """The first code (in code order) of a household moved under reorganisation `basis`, not yet closed."""
    return await session.scalar(
        select(households.c.code)
        .where(households.c.moved_under == basis, households.c.stage.not_in(("closed", "cancelled")))
        .order_by(households.c.code)
        .limit(1)
    )


async def first_in_stage(session: AsyncSession, district: str, stage: str) -> str | None:
    """The first code (in code order) of the district's households at `stage`."""
    return await session.scalar(
        select(households.c.code)
        .where(households.c.district == district, households.c.stage == stage)
        .order_by(households.c.code)
        .limit(1)
    )


async def rows_of(session: AsyncSession, codes: list[str]) -> list[Row]:
    """The registry's whole rows (every column) of these households."""
    return list(await session.execute(select(households).where(households.c.code.in_(codes))))


async def tranche_rows_of(session: AsyncSession, codes: list[str]) -> list[Row]:
    """Every tranche row (every column) of these households."""
    t = household_tranches
    return list(await session.execute(select(t).where(t.c.household_code.in_(codes))))


async def add_import_batch(
    session: AsyncSession,
    *,
    file_name: str,
    file_sha256: str,
    row_count: int,
    imported_by: str,
    assertion: dict[str, Any] | None = None,
) -> int:
    """Record an imported list's file, with the front door's assertion over it (None: imported around the
    front doors, as before 0018); returns its batch id."""
    return await session.scalar(
        import_batches.insert()
        .values(
            file_name=file_name,
            file_sha256=file_sha256,
            row_count=row_count,
            imported_by=imported_by,
            assertion=assertion,
        )
        .returning(import_batches.c.id)
    )


async def import_batch(session: AsyncSession, batch_id: int) -> dict[str, Any] | None:
    """One import batch's row (file, SHA-256, rows, importer, when, assertion), or None."""
    row = (await session.execute(select(import_batches).where(import_batches.c.id == batch_id))).mappings().first()
    return dict(row) if row else None
