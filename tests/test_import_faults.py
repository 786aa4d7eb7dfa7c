"""An import that fails in the middle of its database write leaves nothing half-written, and two imports of the
same list at once register each household once and start one workflow for it.

The failure is PostgreSQL's own: in a database of this module's own (the `scratch` fixtures, seeded as the
demo is), the owner puts a trigger on `households` that raises on the third row of the list, so the import's
one transaction has already written the batch, the decision and two households when the database refuses.
Nothing of it may remain, and no workflow may be started for any row; with the trigger gone the same file
imports whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from db.schema import decisions, households, import_batches
from models.household import Stage
from operations import sample
from operations.actions import household_state
from operations.imports import ImportReport, import_file
from operations.seed import seed_demo
from tests.conftest import make_households, running_worker, to_csv, wait_until

FAULT = "import_fault_on_row"


@pytest.fixture(scope="module")
async def db(scratch):
    """The scratch database with the demo's officers, policies and sources."""
    await seed_demo(scratch)
    return scratch


@pytest.fixture(scope="module")
async def worker(client, db, settings):
    async with running_worker(client, db, settings) as tq:
        yield tq


async def _written(db, data: bytes, codes: list[str], decision_ref: str) -> dict:
    """What the database holds of this file: its households, its import batch, its decision."""
    async with db() as s:
        return {
            "households": await s.scalar(select(func.count()).where(households.c.code.in_(codes))),
            "batches": await s.scalar(
                select(func.count()).where(import_batches.c.file_sha256 == hashlib.sha256(data).hexdigest())
            ),
            "decisions": await s.scalar(select(func.count()).where(decisions.c.ref == decision_ref)),
        }


async def _no_workflow(client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        return err.status is RPCStatusCode.NOT_FOUND
    return False


async def _runs(client, workflow_id: str) -> int:
    return len([w async for w in client.list_workflows(f"WorkflowId='{workflow_id}'")])


async def test_a_list_the_database_refuses_at_its_third_row_leaves_nothing_and_then_imports_whole(
    client, db, scratch_owner, worker, tmp_csv
):
    ref = f"F-{uuid.uuid4().hex[:6]}/QĐ-UBND"  # a decision of this file's own: its registration is part of the write
    items = make_households(5, decision_ref=ref)
    codes = [h.code for h in items]
    data = to_csv(items)
    tmp_csv.write_bytes(data)
    async with scratch_owner() as s, s.begin():
        await s.execute(
            text(f"""
            CREATE FUNCTION {FAULT}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.code = TG_ARGV[0] THEN
                    RAISE EXCEPTION 'test fault: household % refused by the database', NEW.code;
                END IF;
                RETURN NEW;
            END $$""")
        )
        await s.execute(
            text(
                f"CREATE TRIGGER {FAULT} BEFORE INSERT ON households FOR EACH ROW "
                f"EXECUTE FUNCTION {FAULT}('{codes[2]}')"
            )
        )
    try:
        with pytest.raises(DBAPIError) as failed:
            await import_file(db, client, worker, tmp_csv, sample.PROVINCE_USER)
        # The database's own refusal reaches the importer, naming the row it refused.
        assert type(failed.value) is DBAPIError  # not an integrity or data error: the trigger's own
        assert isinstance(failed.value.orig.__cause__, asyncpg.exceptions.RaiseError)
        assert failed.value.orig.sqlstate == "P0001"
        assert f"test fault: household {codes[2]} refused by the database" in str(failed.value)
        assert await _written(db, data, codes, ref) == {"households": 0, "batches": 0, "decisions": 0}
        for h in items:
            assert await _no_workflow(client, h.workflow_id), f"{h.code}: a workflow was started for a refused list"
    finally:
        async with scratch_owner() as s, s.begin():
            await s.execute(text(f"DROP TRIGGER {FAULT} ON households"))
            await s.execute(text(f"DROP FUNCTION {FAULT}()"))

    report = await import_file(db, client, worker, tmp_csv, sample.PROVINCE_USER)
    assert (report.rows, report.registered, report.unchanged, report.workflows_started, report.workflows_existing) == (
        5,
        5,
        0,
        5,
        0,
    )
    assert await _written(db, data, codes, ref) == {"households": 5, "batches": 1, "decisions": 1}
    for h in items:
        assert (await household_state(client, h.code)).stage is Stage.VERIFICATION


async def test_two_imports_of_the_same_list_at_once_register_each_household_once(
    client, db, scratch_owner, worker, tmp_csv
):
    """Both imports start at once (the owner slows the batch insert by half a second, so without the registry's
    lock the two transactions would overlap for certain): one registers the list; the other waits for it, finds
    every row registered and starts nothing twice; one batch, and one workflow per household."""
    items = make_households(4)
    codes = [h.code for h in items]
    data = to_csv(items)
    tmp_csv.write_bytes(data)
    async with scratch_owner() as s, s.begin():
        await s.execute(
            text("""
            CREATE FUNCTION import_fault_slow() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$""")
        )
        await s.execute(
            text(
                "CREATE TRIGGER import_fault_slow BEFORE INSERT ON import_batches FOR EACH ROW "
                "EXECUTE FUNCTION import_fault_slow()"
            )
        )
    try:
        results = await asyncio.gather(
            *(import_file(db, client, worker, tmp_csv, sample.PROVINCE_USER) for _ in range(2)), return_exceptions=True
        )
    finally:
        async with scratch_owner() as s, s.begin():
            await s.execute(text("DROP TRIGGER import_fault_slow ON import_batches"))
            await s.execute(text("DROP FUNCTION import_fault_slow()"))

    assert all(isinstance(r, ImportReport) for r in results), results  # neither fails half-way
    (winner,) = [r for r in results if r.registered]
    (loser,) = [r for r in results if not r.registered]
    assert (winner.registered, loser.registered, loser.unchanged) == (4, 0, 4)
    # Each starts the workflows its list names once registered; whichever comes first starts each, once.
    assert winner.workflows_started + loser.workflows_started == 4
    for r in (winner, loser):
        assert r.workflows_started + r.workflows_existing == 4
    async with db() as s:
        assert await s.scalar(select(func.count()).where(households.c.code.in_(codes))) == 4
        assert (
            await s.scalar(select(func.count()).where(import_batches.c.file_sha256 == hashlib.sha256(data).hexdigest()))
            == 1
        )
    for h in items:
        described = await client.get_workflow_handle(h.workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.RUNNING
        assert await wait_until(lambda wid=h.workflow_id: _runs(client, wid)) == 1, h.code

    # The same list once more, alone: every row unchanged, every workflow existing, nothing started.
    again = await import_file(db, client, worker, tmp_csv, sample.PROVINCE_USER)
    assert (again.registered, again.unchanged, again.workflows_started, again.workflows_existing) == (0, 4, 0, 4)
