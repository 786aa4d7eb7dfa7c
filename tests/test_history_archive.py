"""Histories that outlive Temporal's retention: a settled household's history is archived by the engine's
sweep; once Temporal has deleted it, `status`, `audit timeline`, `audit replay` and `audit verify` read it
from the archive; a run closed while nothing archived (or an attempt cut short) is archived by the next
sweep, once; the archive refuses a rewrite; and a household in neither place is named as such."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from archive.schedule import archive_status, retention, set_retention
from archive.store import ArchivedHistory, ArchiveUntrusted, PostgresArchive, sha256
from archive.sweep import archive_run, backlog
from archive.witness import Witness
from archive.workflow import HistoryArchiveWorkflow
from cli import archive as archive_cli
from core.errors import Refusal
from core.settings import ROOT
from core.signing import new_ring
from models.archive import ArchiveSweepInput, ArchiveSweepResult
from operations import sample
from operations.actions import household_history, household_state
from operations.csv_list import to_csv
from operations.imports import register
from operations.seed import seed_demo
from tests.conftest import (
    TEST_KEYS_FILE,
    drive_one,
    enroll,
    make_households,
    running_worker,
    token_for,
    wait_until,
)


async def sweep(client: Client, task_queue: str) -> ArchiveSweepResult:
    """The sweep as the schedule runs it, on this test's workflows only."""
    return await client.execute_workflow(
        HistoryArchiveWorkflow.run,
        ArchiveSweepInput(task_queue=task_queue, checkpoint=False),
        id=f"archive-test-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


async def closed(client: Client, workflow_id: str) -> bool:
    return (await client.get_workflow_handle(workflow_id).describe()).status != WorkflowExecutionStatus.RUNNING


async def listed_closed(client: Client, task_queue: str, n: int) -> None:
    """Visibility catches up with a close a moment later: wait until it lists `n` closed runs."""

    async def enough() -> bool:
        return len((await backlog(client, _NoArchive(), task_queue=task_queue)).closed) >= n

    await wait_until(enough, 30)


class _NoArchive:
    async def archived_runs(self, run_ids):
        return set()


async def delete_from_temporal(client: Client, workflow_id: str) -> None:
    """What retention does to a closed workflow: its history and its visibility record are gone."""
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id),
        )
    )

    async def gone() -> bool:
        try:
            await client.get_workflow_handle(workflow_id).fetch_history()
        except RPCError as e:
            return e.status == RPCStatusCode.NOT_FOUND
        return False

    await wait_until(gone, 120)


def cli(client: Client, settings, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "PAYLOAD_KEYS_FILE": str(TEST_KEYS_FILE),
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "COLUMNS": "200",
        "STATE_DIR": str(settings.state_dir),
    }
    env.pop("PAYLOAD_KEYS", None)
    return subprocess.run(
        [sys.executable, "starter.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
async def retained(client, sessions, settings):
    """Two households whose histories Temporal has deleted, as retention does: `settled`, paid and closed,
    archived by the sweep before; `lost`, closed and deleted before any sweep ran. Deleted together: the
    dev server takes about half a minute to delete."""
    archive = PostgresArchive(sessions)
    async with running_worker(client, sessions, settings) as tq:
        settled, lost = await enroll(client, sessions, tq, make_households(2))
        await drive_one(client, sessions, settled)
        await wait_until(lambda: closed(client, settled.workflow_id))
        state = await household_state(client, settled.code)
        history = await client.get_workflow_handle(settled.workflow_id).fetch_history()
        await listed_closed(client, tq, 1)
        assert (await archive.get(settled.workflow_id)) is None  # nothing archives it but the sweep
        first = await sweep(client, tq)
        again = await sweep(client, tq)
        await client.get_workflow_handle(lost.workflow_id).terminate("retention came before any sweep")
        await wait_until(lambda: closed(client, lost.workflow_id))
    await asyncio.gather(*(delete_from_temporal(client, h.workflow_id) for h in (settled, lost)))
    return {"settled": settled, "lost": lost, "state": state, "history": history, "sweeps": (first, again)}


async def test_the_sweep_archives_a_closed_history_once_as_temporal_held_it(retained, sessions):
    first, again = retained["sweeps"]
    assert first.archived_now == 1 and first.waiting == 0 and not first.failed
    assert again.archived_now == 0 and again.already == 1  # idempotent: the run is archived once
    h, history = retained["settled"], retained["history"]
    kept = await PostgresArchive(sessions).get(h.workflow_id)
    assert kept is not None and kept.events == len(history.events) and kept.status == "COMPLETED"
    assert kept.workflow_history().events == history.events  # the bytes read back are Temporal's history
    assert kept.key_ids  # payloads sealed as stored: the archive names the keys, holds no clear text
    assert h.head_of_household.encode() not in kept.history


async def test_a_settled_household_is_read_from_the_archive_once_temporal_deleted_it(
    client, sessions, settings, retained
):
    h, before = retained["settled"], retained["state"]
    assert before.stage.terminal and before.paid > 0
    archive = PostgresArchive(sessions)  # the suite's workers archive without a witness: nothing to trust
    after = await household_state(client, h.code, sessions=sessions, archive=archive)  # replayed from it
    assert after == before
    assert (await household_history(client, sessions, h.code, archive)).where == "archive"

    status = await asyncio.to_thread(cli, client, settings, "status", h.code)
    assert status.returncode == 0, status.stderr
    assert h.code in status.stdout and before.stage.value in status.stdout and "read from the archive" in status.stderr
    timeline = await asyncio.to_thread(cli, client, settings, "audit", "timeline", h.code, "--lang", "en")
    assert timeline.returncode == 0, timeline.stderr
    assert "read from the archive" in timeline.stderr and "settle" in timeline.stdout.lower()
    verify = await asyncio.to_thread(cli, client, settings, "audit", "verify", "--code", h.code)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "0 discrepancies" in verify.stdout and "1 histories read from the archive" in verify.stderr
    replay = await asyncio.to_thread(cli, client, settings, "audit", "replay", "--code", h.code)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "replayed 1 histories" in replay.stdout and "0 not reproduced" in replay.stdout


async def test_a_household_in_neither_place_is_named_as_such(client, sessions, settings, retained):
    h = retained["lost"]
    with pytest.raises(Refusal) as lost:
        await household_state(client, h.code, sessions=sessions, archive=PostgresArchive(sessions))
    assert lost.value.rule == "HistoryMissing"
    assert "neither on the Temporal server nor in the archive" in str(lost.value)
    with pytest.raises(Refusal) as unknown:
        await household_history(client, sessions, "NO-SUCH-CODE", PostgresArchive(sessions))
    assert unknown.value.rule == "UnknownHousehold"
    status = await asyncio.to_thread(cli, client, settings, "status", h.code)
    assert status.returncode == 1 and "HistoryMissing" in status.stderr and "imported list" not in status.stderr
    timeline = await asyncio.to_thread(cli, client, settings, "audit", "timeline", h.code)
    assert timeline.returncode == 1 and "neither on the Temporal server nor in the archive" in timeline.stderr


async def test_runs_closed_while_nothing_archived_are_archived_by_the_next_sweep_once(client, sessions, settings):
    """A crash between close and archive: the sweep keeps no watermark, so whatever closed while no sweep
    ran, and whatever an interrupted attempt left undone, is still missing at the next sweep and copied
    then; what the interrupted attempt did write is not written again."""
    archive = PostgresArchive(sessions)
    async with running_worker(client, sessions, settings) as tq:
        items = await enroll(client, sessions, tq, make_households(3))
        for h in items:
            await client.get_workflow_handle(h.workflow_id).terminate("closed while the archiver was down")
        await listed_closed(client, tq, 3)
    # The worker is gone. An attempt that copied one run and crashed before the others:
    found = await backlog(client, archive, task_queue=tq)
    assert len(found.missing) == 3
    assert await archive_run(client, archive, found.missing[0]) is True
    assert await archive_run(client, archive, found.missing[0]) is False  # a retried copy writes nothing
    # A new worker starts; its sweep finds the two the crash left.
    async with running_worker(client, sessions, settings) as tq2:
        result = await client.execute_workflow(
            HistoryArchiveWorkflow.run,
            ArchiveSweepInput(task_queue=tq, checkpoint=False),
            id=f"archive-test-{uuid.uuid4().hex[:8]}",
            task_queue=tq2,
        )
    assert result.archived_now == 2 and result.already == 1 and result.waiting == 0
    assert (await backlog(client, archive, task_queue=tq)).missing == []
    async with sessions() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT workflow_id, count(*) FROM workflow_histories WHERE workflow_id = ANY(:w) "
                    "GROUP BY workflow_id"
                ),
                {"w": [h.workflow_id for h in items]},
            )
        ).all()
    assert sorted(n for _, n in rows) == [1, 1, 1]


async def test_the_archive_is_append_only_and_checks_its_hashes(client, sessions, owner_sessions, settings):
    archive = PostgresArchive(sessions)
    async with running_worker(client, sessions, settings) as tq:
        [h] = await enroll(client, sessions, tq, make_households(1))
        await client.get_workflow_handle(h.workflow_id).terminate("to archive")
        await listed_closed(client, tq, 1)
        assert (await sweep(client, tq)).archived_now == 1
    kept = await archive.get(h.workflow_id)
    for sql in (
        "UPDATE workflow_histories SET history = '\\x00' WHERE run_id = :r",
        "DELETE FROM workflow_histories WHERE run_id = :r",
    ):
        for who in (sessions, owner_sessions):  # the application's login, and the owner's
            async with who() as s:
                with pytest.raises(Exception, match="append-only|permission denied"):
                    await s.execute(text(sql), {"r": kept.run_id})
    forged = kept.__class__(**{**kept.__dict__, "run_id": f"forged-{uuid.uuid4()}", "history": kept.history + b"\x00"})
    with pytest.raises(Exception, match="workflow_histories_sha256"):
        await archive.put(forged)  # bytes that do not hash to the SHA-256 written with them


async def test_retention_is_set_from_the_setting(client):
    was = await retention(client, client.namespace)
    try:
        assert await set_retention(client, client.namespace, timedelta(days=45)) == timedelta(days=45)
    finally:
        assert await set_retention(client, client.namespace, was) == was


async def test_status_counts_what_is_archived_and_what_waits(client, sessions, settings):
    archive = PostgresArchive(sessions)
    async with running_worker(client, sessions, settings) as tq:
        [h] = await enroll(client, sessions, tq, make_households(1))
        await client.get_workflow_handle(h.workflow_id).terminate("to count")
        await listed_closed(client, tq, 1)
        before = await archive_status(client, archive, client.namespace)
        assert before.waiting >= 1
        await sweep(client, tq)
        after = await archive_status(client, archive, client.namespace)
    assert after.counts.histories == before.counts.histories + 1
    assert after.counts.households == before.counts.households + 1
    assert not (await backlog(client, archive, task_queue=tq)).missing


async def test_the_web_app_shows_an_archived_household_and_names_a_lost_one(web, sessions, retained):
    token = await token_for(sessions, sample.AUDITOR_USER)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=web["app"]), base_url="https://testserver", headers=headers
    ) as c:
        h = retained["settled"]
        page = await c.get(f"/api/households/{h.code}")
        assert page.status_code == 200, page.text
        assert page.json()["state"]["stage"] == retained["state"].stage.value and page.json()["actions"] == []
        timeline = await c.get(f"/api/households/{h.code}/timeline", params={"lang": "en"})
        assert timeline.status_code == 200, timeline.text
        assert len(timeline.json()["lines"]) >= len(retained["state"].timeline)
        lost = await c.get(f"/api/households/{retained['lost'].code}/timeline")
        assert lost.status_code == 410 and "neither on the Temporal server nor in the archive" in lost.text


@pytest.fixture(scope="module")
async def seeded_scratch(scratch):
    """A database of this module's own: the witness-signed rows below must not reach the suite's database,
    whose readers hold no witness key (and would then refuse to read the archive at all)."""
    await seed_demo(scratch)
    return scratch


async def test_a_row_planted_with_the_application_login_is_not_read_nor_stands_for_a_run(
    client, seeded_scratch, settings, tmp_path
):
    """The sweep signs each copy with the witness's ring; an archive opened with its public keys reads only
    what it signed. A forged history planted for a household whose real one is gone is not read; one planted
    ahead of a run's close does not keep the run's real copy out; and a reader without the witness's key
    refuses the signed archive instead of reading the planted rows."""
    db = seeded_scratch
    ring = new_ring("witness-archive-test")
    trusted = PostgresArchive(db, trusted={k: ring.public(k) for k in ring.keys})
    planter = PostgresArchive(db)  # the application's login, as the worker and web app hold it
    at = datetime.now(UTC)

    def forged(workflow_id: str, run_id: str) -> ArchivedHistory:
        data = b"a history nobody recorded"
        return ArchivedHistory(workflow_id, run_id, "HouseholdWorkflow", "COMPLETED", at, at, 1, data, sha256(data))

    # Registered, its workflow not on the server (as after retention): a forged copy is planted.
    _, [gone], _ = await register(db, to_csv(make_households(1)), "gone.csv", sample.PROVINCE_USER)
    assert await planter.put(forged(gone.workflow_id, f"planted-{uuid.uuid4()}"))
    assert (await planter.get(gone.workflow_id)) is not None  # an archive that trusts every row is fooled
    assert (await trusted.get(gone.workflow_id)) is None
    with pytest.raises(Refusal) as missing:
        await household_history(client, db, gone.code, trusted)
    assert missing.value.rule == "HistoryMissing"

    witness = Witness(db, planter, ring, tmp_path)
    async with running_worker(client, db, settings, witness=witness) as tq:
        [h] = await enroll(client, db, tq, make_households(1))
        run_id = (await client.get_workflow_handle(h.workflow_id).describe()).run_id
        assert await planter.put(forged(h.workflow_id, run_id))  # ahead of the close, the run's own id
        await client.get_workflow_handle(h.workflow_id).terminate("closed after a forged copy was planted")
        await listed_closed(client, tq, 1)
        result = await sweep(client, tq)  # signed copies
    assert result.archived_now == 1 and not result.failed
    kept = await trusted.get(h.workflow_id)
    history = await client.get_workflow_handle(h.workflow_id).fetch_history()
    assert kept is not None and kept.run_id == run_id and kept.key_id == ring.active
    assert kept.workflow_history().events == history.events
    assert (await trusted.archived_runs([run_id])) == {run_id}
    assert await trusted.workflow_ids() == [h.workflow_id]  # the planted ones are not listed either
    planted = {(r.workflow_id, r.run_id) for r in await trusted.unsigned()}  # what `audit verify` names
    assert (h.workflow_id, run_id) in planted and gone.workflow_id in {w for w, _ in planted}
    # Signed rows, and a reader without the witness's key: refused, not fooled.
    with pytest.raises(ArchiveUntrusted):
        await PostgresArchive(db, strict=True).get(gone.workflow_id)
    with pytest.raises(Refusal) as untrusted:
        await household_history(client, db, gone.code, PostgresArchive(db, strict=True))
    assert untrusted.value.rule == "WitnessKeyMissing"


async def test_stack_status_and_archive_status_show_retention_and_counts(client, sessions, settings, retained):
    want = await archive_status(client, PostgresArchive(sessions), client.namespace)
    for args in (("archive", "status"), ("stack", "status")):
        got = await asyncio.to_thread(cli, client, settings, *args)
        assert "Retention" in got.stdout, got.stdout + got.stderr
        assert archive_cli.days(want.retention) in got.stdout
        assert f"{want.counts.histories} closed histories archived" in got.stdout
        assert f"{want.waiting} of the {want.closed_in_temporal} closed histories" in got.stdout
