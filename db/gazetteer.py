"""The gazetteer as PostgreSQL holds it: versions loaded whole, units, reorganisations and their successions
(never edited), the households a reorganisation has still to move, and the handover records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Row, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Refusal
from db.schema import admin_units, gazetteers, handovers, households, reorganisations, successions
from models.actor import Jurisdiction
from models.gazetteer import Gazetteer

TERMINAL = ("closed", "cancelled")


# The merged gazetteer by the digests of the versions it was made from, in loading order. Every move's record,
# import and reconciliation asks for it; parsing every stored document each time was work repeated on the hot
# path. Content-addressed, so a cache entry can never stand for another set of versions (nor another database).
_MERGED: dict[tuple[str, ...], Gazetteer] = {}


async def stored(session: AsyncSession) -> Gazetteer | None:
    """Every version loaded, as one gazetteer (units and reorganisations of all versions); None: none loaded."""
    digests = tuple(await session.scalars(select(gazetteers.c.sha256).order_by(gazetteers.c.loaded_at)))
    if not digests:
        return None
    if (hit := _MERGED.get(digests)) is not None:
        return hit  # frozen, as are its units and reorganisations: shared, never changed by a caller
    docs = list(await session.scalars(select(gazetteers.c.document).order_by(gazetteers.c.loaded_at)))
    units: dict[str, dict] = {}
    reorgs: dict[str, dict] = {}
    for d in docs:
        units |= {u["code"]: u for u in d["units"]}
        reorgs |= {r["basis"]: r for r in d.get("reorganisations", [])}
    last = docs[-1]
    merged = Gazetteer.model_validate({**last, "units": list(units.values()), "reorganisations": list(reorgs.values())})
    if len(_MERGED) > 16:
        _MERGED.clear()
    _MERGED[digests] = merged
    return merged


async def version_digest(session: AsyncSession, version: str) -> str | None:
    return await session.scalar(select(gazetteers.c.sha256).where(gazetteers.c.version == version))


async def insert_version(session: AsyncSession, g: Gazetteer, sha256: str, loaded_by: str) -> None:
    """Store a checked version: the document, its new units, reorganisations and successions. A unit another
    version holds must be the same unit (units are never edited)."""
    await session.execute(
        insert(gazetteers).values(
            version=g.version,
            province=g.province,
            source=g.source,
            sha256=sha256,
            document=g.model_dump(mode="json"),
            loaded_by=loaded_by,
        )
    )
    known = {
        r.code: r
        for r in await session.execute(select(admin_units).where(admin_units.c.code.in_([u.code for u in g.units])))
    }
    new_units = []
    for u in g.units:
        old = known.get(u.code)
        if old is None:
            new_units.append({**u.model_dump(mode="python"), "gazetteer": g.version})
        elif (old.name, old.level, old.parent, old.valid_from, old.valid_until) != (
            u.name,
            u.level.value,
            u.parent,
            u.valid_from,
            u.valid_until,
        ):
            raise Refusal("UnitChanged", f"unit {u.code} is stored (version {old.gazetteer}) as another unit")
    # Parents first: each row's foreign key points at a unit stored already.
    parents = {u.code: u.parent for u in g.units}

    def depth(code: str | None) -> int:
        return 0 if code is None else 1 + depth(parents.get(code))

    if new_units:
        await session.execute(insert(admin_units), sorted(new_units, key=lambda r: depth(r["parent"])))
    for r in g.reorganisations:
        if await session.scalar(select(reorganisations.c.basis).where(reorganisations.c.basis == r.basis)):
            raise Refusal("ReorganisationExists", f"reorganisation {r.basis} is stored; it is never edited")
        await session.execute(
            insert(reorganisations).values(basis=r.basis, title=r.title, effective=r.effective, gazetteer=g.version)
        )
        await session.execute(
            insert(successions),
            [
                dict(
                    basis=r.basis,
                    from_unit=s.from_unit,
                    to_unit=s.to_unit,
                    households=list(s.households),
                    generated=s.generated,
                )
                for s in r.successions
            ],
        )


@dataclass(frozen=True)
class Ended:
    """An actor's unit that no longer exists on the day of a step."""

    unit: str
    name: str
    valid_until: date
    basis: str | None


async def ended_unit(session: AsyncSession, j: Jurisdiction, on: date) -> Ended | None:
    """The unit of an actor's jurisdiction (its commune, else its district) that has ceased to exist by `on`,
    with the reorganisation that ended it; None if it exists (or the gazetteer does not know it)."""
    if j.district is None and j.commune is None:
        return None
    u, parent = admin_units.alias("u"), admin_units.alias("p")
    if j.commune is not None:
        q = select(u.c.code, u.c.name, u.c.valid_until).where(u.c.name == j.commune, u.c.level != "district")
        if j.district is not None:
            q = q.join(parent, parent.c.code == u.c.parent).where(parent.c.name == j.district)
        else:
            q = q.where(u.c.valid_from.is_not(None))
    else:
        q = select(u.c.code, u.c.name, u.c.valid_until).where(u.c.name == j.district, u.c.level == "district")
    rows = (await session.execute(q)).all()
    if not rows or any(r.valid_until is None or r.valid_until > on for r in rows):
        return None
    r = rows[0]
    basis = await session.scalar(
        select(successions.c.basis)
        .join(reorganisations, reorganisations.c.basis == successions.c.basis)
        .where(successions.c.from_unit == r.code)
        .limit(1)
    )
    return Ended(r.code, r.name, r.valid_until, basis)


async def reorganisation(session: AsyncSession, basis: str) -> Row | None:
    return (await session.execute(select(reorganisations).where(reorganisations.c.basis == basis))).one_or_none()


async def to_move(session: AsyncSession, basis: str, province: str, after: str = "", limit: int = 500) -> list[Row]:
    """A page (by code, after `after`) of the province's households not closed (nor cancelled): (code, district,
    commune, old_district, old_commune, moved_under). Those recorded moved under `basis` are in it too: a crash
    between the move's record and its workflow is mended by asking again (the workflow refuses a second move)."""
    h = households.c
    q = (
        select(h.code, h.district, h.commune, h.old_district, h.old_commune, h.moved_under)
        .where(h.province == province, h.stage.not_in(TERMINAL), h.code > after)
        .order_by(h.code)
        .limit(limit)
    )
    return list((await session.execute(q)).all())


async def moved_count(session: AsyncSession, basis: str) -> int:
    return int(
        await session.scalar(select(func.count()).select_from(households).where(households.c.moved_under == basis)) or 0
    )


async def old_and_new(session: AsyncSession) -> dict[str, tuple[str | None, str, str | None]]:
    """Per household: (old district, old commune, new commune) — the new commune is where a reorganisation
    moved it, else (closed before it, or not yet moved) where the newest succession sends its old unit; None
    when no succession covers it."""
    h = households.c
    rows = (await session.execute(select(h.code, h.old_district, h.old_commune, h.moved_under, h.commune))).all()
    g = await stored(session)
    split = {s.from_unit for r in (g.reorganisations if g else []) for s in r.successions if s.households}
    known: dict[tuple[str | None, str], str | None] = {}
    out = {}
    for r in rows:
        new = r.commune if r.moved_under or r.old_district is None else None  # moved, or imported on the new map
        place = (r.old_district, r.old_commune)
        if new is None and g is not None:
            if place not in known or split:  # a unit split by household list: asked per household
                last = g.last_successor(r.old_district, r.old_commune, r.code)
                known[place] = last.name if last else None
            new = known[place]
        out[r.code] = (r.old_district, r.old_commune, new)
    return out


async def add_handover(session: AsyncSession, **values: object) -> Row:
    return (await session.execute(insert(handovers).values(**values).returning(handovers))).one()


async def handover(session: AsyncSession, basis: str, source: str) -> Row | None:
    q = select(handovers).where(handovers.c.basis == basis, handovers.c.source == source)
    return (await session.execute(q)).one_or_none()


async def all_handovers(session: AsyncSession) -> list[Row]:
    return list((await session.execute(select(handovers).order_by(handovers.c.id))).all())
