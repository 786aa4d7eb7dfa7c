"""How the engine writes money and dates for people: one helper, used by the command line, the pages, the
timeline, the notifications and the reports (exports keep raw integers and ISO dates for Excel to read, and
write their cells through `core.cells`, so that text stays text).

Money is an integer number of đồng, grouped with dots as Vietnamese writes it: ``1.200.000.000 đ``; in
English ``1,200,000,000 VND``. Dates are Vietnam's local time (UTC+7), ``dd/mm/yyyy``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Literal

Lang = Literal["vi", "en"]
VIETNAM = timezone(timedelta(hours=7))


def amount(n: int | None, lang: Lang = "vi") -> str:
    """The number alone, grouped: ``1.200.000`` (vi) or ``1,200,000`` (en); None is 0."""
    text = f"{int(n or 0):,}"
    return text.replace(",", ".") if lang == "vi" else text


def dong(n: int | None, lang: Lang = "vi") -> str:
    """An amount of money with its unit: ``1.200.000 đ`` (vi) or ``1,200,000 VND`` (en)."""
    return f"{amount(n, lang)} đ" if lang == "vi" else f"{amount(n, lang)} VND"


def today() -> date:
    """Today's date in Vietnam: the day a policy is in force, a deadline is counted, a batch is named."""
    return datetime.now(VIETNAM).date()


def local(at: datetime) -> datetime:
    """`at` in Vietnam's time (a naive datetime is taken as UTC, as PostgreSQL and Temporal give it)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(VIETNAM)


def day(d: date | datetime | None) -> str:
    """``dd/mm/yyyy``; a datetime is shown on Vietnam's calendar; None is empty."""
    if d is None:
        return ""
    if isinstance(d, datetime):
        d = local(d)
    return d.strftime("%d/%m/%Y")


def moment(at: datetime | None, *, seconds: bool = False) -> str:
    """``dd/mm/yyyy HH:MM`` (or with seconds) in Vietnam's time; None is empty."""
    if at is None:
        return ""
    return local(at).strftime("%d/%m/%Y %H:%M:%S" if seconds else "%d/%m/%Y %H:%M")


def days(d: timedelta) -> str:
    """A retention or an interval: '30 days', '1 day', or '12 hours' when not whole days."""
    if d.days and not d.seconds:
        return f"{d.days} day{'s' if d.days != 1 else ''}"
    return f"{d.total_seconds() / 3600:g} hours"


def place(*units: str | None) -> str:
    """A household's or officer's units joined, the missing ones left out: 'Lộc Bình / Tú Mịch', or 'Mẫu Sơn'
    after the reform (no district)."""
    return " / ".join(u for u in units if u)
