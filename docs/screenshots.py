"""Screenshots of the main pages, as each kind of user sees them, into docs/screenshots/.

    make demo                                 # the stack, the web app and 132 households
    .venv/bin/python docs/screenshots.py      # Chromium from Debian, as the browser tests use it

Sessions are opened for the demo's officers directly in the database (their passwords are left as the
demo printed them). The pages are the running web app's, with the demo's data.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings import get_settings  # noqa: E402
from core.signing import load_ring  # noqa: E402
from db import households, users  # noqa: E402
from db.engine import make_engine, make_sessions  # noqa: E402
from operations import (
    access,
    sample,  # noqa: E402
)
from runtime.stack import Stack  # noqa: E402
from web.app import COOKIE  # noqa: E402

OUT = Path(__file__).parent / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
OPEN = "LS270W-00001"  # left at verification by the demo for the web app


async def main() -> None:
    settings = get_settings()
    signer = load_ring(settings)  # the web app's ring: a session is good only with its signature
    url = Stack(settings).web().url
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    tokens = {}
    async with sessions() as s, s.begin():
        district, commune = await households.place(s, OPEN)
        closed = await households.first_in_stage(s, district, "closed")
        for user_id in (
            sample.PROVINCE_USER,
            sample.district_user(district),
            sample.commune_user(district, commune),
            sample.FINANCE_USERS[0],
            sample.AUDITOR_USER,
        ):
            tokens[user_id], _ = await access.open_session(s, await users.get(s, user_id), signer=signer)
    await engine.dispose()
    OUT.mkdir(exist_ok=True)
    shots = [
        (None, "/login", "01-dang-nhap.png", "vi"),
        (sample.PROVINCE_USER, "/", "02-tong-quan.png", "vi"),
        (sample.district_user(district), "/households", "03-hang-doi-huyen.png", "vi"),
        (sample.commune_user(district, commune), f"/households/{OPEN}", "04-ho-gia-dinh-xac-minh.png", "vi"),
        (sample.FINANCE_USERS[0], "/finance", "05-tai-chinh.png", "vi"),
        (sample.AUDITOR_USER, f"/households/{closed}", "06-auditor-timeline-en.png", "en"),
    ]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        for user, path, name, lang in shots:
            context = await browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
            cookies = [{"name": "lang", "value": lang, "url": url}]
            if user:
                cookies.append({"name": COOKIE, "value": tokens[user], "url": url})
            await context.add_cookies(cookies)
            page = await context.new_page()
            await page.goto(path)
            await page.screenshot(path=str(OUT / name), full_page=True)
            await context.close()
            print(f"docs/screenshots/{name}")
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
