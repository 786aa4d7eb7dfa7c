"""The witness: signed checkpoints of the audit chains' heads and of the archive, kept outside the database.

A consistent rewrite of a household's chain (every hash recomputed, as only the schema owner can) passes the
chain check; the checkpoint, signed with a key the database never holds, names the household. Everything
here runs in a scratch database of the module's own; each tampering is rolled back. Each test starts with no
checkpoint in that database and a witness of its own (a fresh ring publishing to a fresh folder), and judges
the households and archived runs it finds there, whichever tests ran before it."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from structlog.testing import capture_logs

from archive.store import ArchivedHistory, PostgresArchive, archived, sha256
from archive.witness import (
    ARCHIVE_DIFFERS,
    BROKEN,
    CHAIN_DIFFERS,
    INVALID,
    MISSING,
    UNVERIFIABLE,
    WITNESS_KINDS,
    Checkpoint,
    Witness,
    canonical_bytes,
    check_witness,
    ensure_witness_keys,
    load_witness,
    read_public_keys,
)
from archive.workflow import HistoryArchiveWorkflow
from auditor.records import Records
from auditor.verify import KINDS, verify
from core import keyfiles
from core.signing import new_ring, read_ring
from db import audit, ledger
from db.schema import audit_log, witness_checkpoints
from db.schema import workflow_histories as wh
from models.archive import ArchiveSweepInput
from operations.seed import seed_demo
from tests.conftest import drive_one, enroll, make_households, running_worker, wait_until


async def _archive_run(client, archive: PostgresArchive, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    await handle.result()
    d = await handle.describe()
    history = await handle.fetch_history()
    await archive.put(
        archived(workflow_id, d.run_id, d.workflow_type, d.status.name, d.start_time, d.close_time, history)
    )


def _synthetic(tag: str) -> ArchivedHistory:
    """A run that is not a household's (no foreign key to satisfy): enough for the archive's order."""
    data = f"history of {tag}".encode()
    at = datetime.now(UTC)
    return ArchivedHistory(
        f"payout-batch-{tag}", f"run-{tag}", "PayoutBatchWorkflow", "COMPLETED", at, at, 1, data, sha256(data)
    )


@pytest.fixture(scope="module")
async def households(client, scratch, settings):
    """In the scratch database: `a` and `b` paid in full, their histories archived; `c` waiting for Finance
    (its worker keeps running for the module)."""
    await seed_demo(scratch)
    async with scratch() as s, s.begin():
        await ledger.receive(s, key="witness:topup", source="NS-TINH", amount=50_000_000_000, memo="tests")
    a, b, c = make_households(3, beneficiary_group="poor", support_type="new_build", programme="")
    archive = PostgresArchive(scratch)
    async with running_worker(client, scratch, settings) as tq:
        await enroll(client, scratch, tq, [a, b, c])
        for h in (a, b):
            await drive_one(client, scratch, h)
            await _archive_run(client, archive, h.workflow_id)
        await drive_one(client, scratch, c, payouts=False)
        yield {"a": a, "b": b, "c": c, "archive": archive}


@pytest.fixture
async def world(households, scratch, scratch_owner, tmp_path_factory):
    """The module's households, no checkpoint left in the database by the tests before (removed as the owner,
    the append-only triggers off), and a witness with a ring of its own publishing to a folder of its own."""
    async with scratch_owner.kw["bind"].begin() as conn:
        await conn.execute(text("ALTER TABLE witness_checkpoints DISABLE TRIGGER USER"))
        await conn.execute(text("DELETE FROM witness_checkpoints"))
        await conn.execute(text("ALTER TABLE witness_checkpoints ENABLE TRIGGER USER"))
    folder = tmp_path_factory.mktemp("witness")
    ring = new_ring("witness-test")
    archive = households["archive"]
    return {
        **households,
        "folder": folder,
        "ring": ring,
        "keys": folder / "witness-key.pub",
        "witness": Witness(scratch, archive, ring, folder),
    }


@asynccontextmanager
async def tampered(owner_sessions, *statements: tuple[str, dict], disable: tuple[str, ...] = ()):
    """What the schema owner could do: switch the append-only triggers off and edit, in a transaction that
    is rolled back; yields sessions bound to it (their commits are savepoints), to read what was done."""
    async with owner_sessions.kw["bind"].connect() as conn:
        tx = await conn.begin()
        try:
            for table in disable:
                await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            for sql, params in statements:
                await conn.execute(text(sql), params)
            yield async_sessionmaker(bind=conn, expire_on_commit=False, join_transaction_mode="create_savepoint")
        finally:
            await tx.rollback()


async def _rows(sessions, code: str) -> list[dict]:
    async with sessions() as s:
        q = select(audit_log).where(audit_log.c.household_code == code).order_by(audit_log.c.seq)
        return [dict(r) for r in (await s.execute(q)).mappings()]


async def _rewritten(sessions, code: str) -> list[tuple[str, dict]]:
    """The statements that rewrite the household's chain consistently: the allocation's amount raised, and
    every hash recomputed with db.audit.row_hash, and the chain's recorded head (audit_chain_heads, which
    moves only forward) set to the new last hash with its triggers off, so that the chain check passes."""
    statements, prev = [], audit.GENESIS
    for row in await _rows(sessions, code):
        if row["step"] == "allocate":
            row["amount"] += 10_000_000
        row["prev_hash"], row["hash"] = prev, audit.row_hash(prev, row)
        prev = row["hash"]
        params = {"amount": row["amount"], "prev": row["prev_hash"], "hash": row["hash"], "id": row["id"]}
        statements.append(
            ("UPDATE audit_log SET amount = :amount, prev_hash = :prev, hash = :hash WHERE id = :id", params)
        )
    head = (
        "UPDATE audit_chain_heads SET hash = :hash WHERE household_code = :code AND seq = :seq",
        {"hash": prev, "code": code, "seq": row["seq"]},
    )
    return [
        *statements,
        ("ALTER TABLE audit_chain_heads DISABLE TRIGGER USER", {}),
        head,
        ("ALTER TABLE audit_chain_heads ENABLE TRIGGER USER", {}),
    ]


async def _append_step(sessions, code: str) -> list:
    """A step more in the household's chain (a copy of its last row, linked and hashed as the engine does); its
    head [seq, hash]. The chain's recorded head moves with it, as the audit log's trigger moves it (by hand when
    the test has that trigger off)."""
    last = (await _rows(sessions, code))[-1]
    row = {k: v for k, v in last.items() if k not in ("id", "recorded_at")}
    row |= {
        "seq": last["seq"] + 1,
        "idempotency_key": f"witness-test:{uuid.uuid4().hex}",
        "prev_hash": last["hash"],
        "from_stage": last["to_stage"],
        "amount": None,
        "transfer_id": None,
        "occurred_at": datetime.now(UTC),
        "assertion": None,
        "signed_input": None,
    }
    row["hash"] = audit.row_hash(row["prev_hash"], row)
    moves = (
        "INSERT INTO audit_chain_heads (household_code, seq, hash) VALUES (:c, :s, :h) "
        "ON CONFLICT (household_code) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, moved_at = now() "
        "WHERE audit_chain_heads.seq < EXCLUDED.seq"
    )
    async with sessions() as s:
        await s.execute(audit_log.insert().values(**row))
        await s.execute(text(moves), {"c": code, "s": row["seq"], "h": row["hash"]})
        await s.commit()
    return [row["seq"], row["hash"]]


async def _more_households(sessions, template: str, n: int) -> list[str]:
    """`n` households more, copies of `template` with one audit row each (the copy of its first)."""
    first = (await _rows(sessions, template))[0]
    codes = [f"WT-{uuid.uuid4().hex[:12].upper()}" for _ in range(n)]
    base = 990_000_000_000 + uuid.uuid4().int % 10**8
    async with sessions() as s:
        q = (
            "SELECT attname FROM pg_attribute WHERE attrelid = 'households'::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum"
        )
        cols = (await s.execute(text(q))).scalars().all()
        picked = {"code": ":code", "cccd": ":cccd", "workflow_id": ":wf"}
        copy = (
            f"INSERT INTO households ({', '.join(cols)}) SELECT {', '.join(picked.get(c, c) for c in cols)} "
            "FROM households WHERE code = :t"
        )
        for i, code in enumerate(codes):
            await s.execute(text(copy), {"code": code, "cccd": str(base + i), "wf": f"household-{code}", "t": template})
            row = {k: v for k, v in first.items() if k not in ("id", "recorded_at")}
            row |= {
                "household_code": code,
                "idempotency_key": f"witness-test:{uuid.uuid4().hex}",
                "prev_hash": audit.GENESIS,
                "transfer_id": None,
            }
            row["hash"] = audit.row_hash(audit.GENESIS, row)
            await s.execute(audit_log.insert().values(**row))
        await s.commit()
    return codes


async def _check(bound, folder, *, published: bool = True) -> list:
    """check_witness on the bound sessions, with the key file the witness published to `folder`."""
    return await check_witness(
        bound, PostgresArchive(bound), public_keys=folder / "witness-key.pub", published=folder if published else None
    )


def _size(cp: Checkpoint) -> int:
    return len(canonical_bytes(cp.body))


async def _checkpoints(sessions) -> int:
    async with sessions() as s:
        return await s.scalar(select(func.count()).select_from(witness_checkpoints))


async def _found(sessions) -> tuple[int, int]:
    """How many households have an audit chain, and how many runs are archived: what a checkpoint covers."""
    async with sessions() as s:
        households = await s.scalar(select(func.count(func.distinct(audit_log.c.household_code))))
        return households, await s.scalar(select(func.count()).select_from(wh))


async def test_a_checkpoint_is_written_published_and_linked(world, scratch):
    w, folder, ring, a = world["witness"], world["folder"], world["ring"], world["a"]
    households, histories = await _found(scratch)  # 3 and 2 when no test before added any
    first = await w.checkpoint()
    assert first is not None and first.seq == 1 and first.prev_hash == audit.GENESIS
    async with scratch() as s:
        row = (await s.execute(select(witness_checkpoints))).mappings().one()
    assert (row["seq"], row["hash"], row["key_id"], row["signature"]) == (1, first.hash, ring.active, first.signature)
    assert Checkpoint.from_dict({**row, "body": row["body"]}) == first  # the body reads back from jsonb as signed
    last_of_a = (await _rows(scratch, a.code))[-1]
    assert first.full and first.changed[a.code] == [last_of_a["seq"], last_of_a["hash"]]
    assert first.body["chains"]["households"] == households and first.body["archive"]["histories"] == histories
    published = json.loads((folder / "checkpoint-000001.json").read_text())
    assert published == json.loads((folder / "latest.json").read_text()) == first.as_dict()
    assert json.loads((folder / "witness-key.pub").read_text()) == {ring.active: keyfiles.b64(ring.public())}
    assert read_public_keys(folder / "witness-key.pub") == {ring.active: ring.public()}

    assert await w.checkpoint() is None  # nothing changed
    assert await _checkpoints(scratch) == 1
    forced = await w.checkpoint(force=True)
    assert (forced.seq, forced.prev_hash) == (2, first.hash)
    assert forced.changed == {} and not forced.full  # nothing moved: no head carried
    assert json.loads((folder / "latest.json").read_text())["seq"] == 2
    later = Witness(scratch, world["archive"], ring, folder, clock=lambda: datetime.now(UTC) + timedelta(hours=25))
    aged = await later.checkpoint()  # nothing changed, but the last is older than the interval
    assert (aged.seq, aged.prev_hash) == (3, forced.hash)
    assert await check_witness(scratch, world["archive"], public_keys=world["keys"], published=folder) == []


async def test_two_workers_at_once_write_one_checkpoint_each_seq(world, scratch):
    before = await _checkpoints(scratch)
    results = await asyncio.gather(*(world["witness"].checkpoint(force=True) for _ in range(4)))
    written = [r.seq for r in results if r is not None]
    assert written and len(set(written)) == len(written)
    assert None in results  # the others found their seq taken: no error, nothing written twice
    assert await _checkpoints(scratch) == before + len(written)
    assert await check_witness(scratch, world["archive"], public_keys=world["keys"], published=world["folder"]) == []


async def test_a_consistently_rewritten_chain_passes_the_chain_check_but_not_the_witness(world, scratch, scratch_owner):
    a = world["a"]
    households, _ = await _found(scratch)
    await world["witness"].checkpoint(force=True)
    statements = await _rewritten(scratch, a.code)
    async with tampered(scratch_owner, *statements, disable=("audit_log",)) as bound:
        async with bound() as s:
            report = await audit.verify_chain(s)
        assert report.ok and report.households == households  # the chain alone sees nothing
        assert (await _rows(bound, a.code))[-1]["hash"] != (await _rows(scratch, a.code))[-1]["hash"]
        found = await check_witness(bound, PostgresArchive(bound), public_keys=world["keys"], published=world["folder"])
    assert [(f.kind, f.household) for f in found] == [(CHAIN_DIFFERS, a.code)]
    head = (await _rows(scratch, a.code))[-1]
    assert f"audit row seq {head['seq']}" == found[0].where
    assert f"holds hash {head['hash'][:16]}" in found[0].detail and "rewritten" in found[0].detail
    # `audit verify` adds what the witness found to its report.
    report = verify([], Records([], [], {}), witness=found)
    assert not report.ok and report.by_kind() == {CHAIN_DIFFERS: 1}


async def test_a_checkpoint_forged_in_the_database_is_refused(world, scratch, scratch_owner, tmp_path):
    """The forger rewrites a chain and writes a checkpoint that agrees, signed with a key of their own (or one
    under the witness key's id): the public key file refuses it, and the chain is judged against the last
    checkpoint that verifies."""
    a = world["a"]
    await world["witness"].checkpoint(force=True)
    statements = await _rewritten(scratch, a.code)
    impostor = new_ring(world["ring"].active)  # the witness key's id, another key
    for forger, why in (
        (new_ring("witness-forger"), "which the witness public key file does not hold"),
        (impostor, "signature does not verify"),
    ):
        async with tampered(scratch_owner, *statements, disable=("audit_log",)) as bound:
            forged = await Witness(bound, PostgresArchive(bound), forger, tmp_path / "forger").checkpoint(force=True)
            assert forged is not None
            found = await check_witness(bound, PostgresArchive(bound), public_keys=world["keys"], published=None)
        assert [(f.kind, f.household) for f in found] == [(INVALID, "-"), (CHAIN_DIFFERS, a.code)]
        assert f"database checkpoint {forged.seq}" in found[0].where and why in found[0].detail
    # The forger's published copy (seemingly newer than the database's) is refused as well, not taken for a rollback.
    found = await check_witness(scratch, world["archive"], public_keys=world["keys"], published=tmp_path / "forger")
    assert [f.kind for f in found] == [INVALID] and "published checkpoint" in found[0].where


async def test_a_checkpoint_row_that_is_not_a_checkpoint_is_named(world, scratch, scratch_owner, tmp_path):
    last = await world["witness"].checkpoint(force=True)
    junk = (
        "INSERT INTO witness_checkpoints (seq, made_at, body, prev_hash, hash, key_id, signature) "
        "VALUES (:s, now(), '{\"seq\": \"x\"}', :p, :h, 'k', 's')",
        {"s": last.seq + 1, "p": last.hash, "h": "d" * 64},
    )
    async with tampered(scratch_owner, junk) as bound:
        found = await check_witness(bound, PostgresArchive(bound), public_keys=world["keys"], published=None)
        # The witness is not stopped by it: it links its next checkpoint to that row, and says so.
        with capture_logs() as logs:
            w = Witness(bound, PostgresArchive(bound), world["ring"], tmp_path)
            after = await w.checkpoint()
        assert (after.seq, after.prev_hash) == (last.seq + 2, "d" * 64)
        assert "witness.last_not_verified" in [e["event"] for e in logs]
    assert [f.kind for f in found] == [INVALID] and "not a readable checkpoint" in found[0].detail


async def test_checkpoints_removed_from_the_database_are_caught_against_the_published_copy(
    world, scratch, scratch_owner
):
    w, folder = world["witness"], world["folder"]
    await w.checkpoint(force=True)  # the one the rolled-back database still ends at
    await w.checkpoint(force=True)
    latest = await w.checkpoint(force=True)
    statements = [("DELETE FROM witness_checkpoints WHERE seq >= :s", {"s": latest.seq - 1})]
    async with tampered(scratch_owner, *statements, disable=("witness_checkpoints",)) as bound:
        alone = await check_witness(bound, PostgresArchive(bound), public_keys=world["keys"], published=None)
        found = await check_witness(bound, PostgresArchive(bound), public_keys=world["keys"], published=folder)
        # The worker, on the rolled-back database, writes its next checkpoint again: the published copies of
        # those seqs are the evidence and stay as they are; the worker says so.
        published = {p.name: p.read_text() for p in folder.glob("*.json")}
        with capture_logs() as logs:
            again = await Witness(bound, PostgresArchive(bound), world["ring"], folder).checkpoint(force=True)
        assert (
            again.seq == latest.seq - 1
            and again.hash != json.loads(published[f"checkpoint-{again.seq:06d}.json"])["hash"]
        )
        assert {p.name: p.read_text() for p in folder.glob("*.json")} == published
        assert [e["event"] for e in logs] == ["witness.published_differs"]
    assert alone == []  # the database alone cannot show its own rollback
    assert [f.kind for f in found] == [MISSING]
    assert f"published checkpoint {latest.seq}" in found[0].where
    assert f"end at {latest.seq - 2}" in found[0].detail
    # A published checkpoint the database holds otherwise (checkpoints rewritten there) is named too.
    statements = [("UPDATE witness_checkpoints SET hash = :h WHERE seq = :s", {"h": "e" * 64, "s": latest.seq})]
    async with tampered(scratch_owner, *statements, disable=("witness_checkpoints",)) as bound:
        found = await check_witness(bound, PostgresArchive(bound), public_keys=world["keys"], published=folder)
    assert [f.kind for f in found] == [INVALID, MISSING]
    assert "another checkpoint" in found[1].detail


async def test_an_altered_or_removed_archived_history_is_named(world, scratch, scratch_owner):
    _, histories = await _found(scratch)  # 2 when no test before archived more
    assert (await world["witness"].checkpoint(force=True)).body["archive"]["histories"] == histories
    async with scratch() as s:
        first = await s.scalar(select(func.min(wh.c.seq)))
    altered = (
        "UPDATE workflow_histories SET history = history || '\\x00'::bytea, "
        "sha256 = encode(sha256(history || '\\x00'::bytea), 'hex') WHERE seq = :s",
        {"s": first},
    )
    removed = ("DELETE FROM workflow_histories WHERE seq = :s", {"s": first})
    for statement, said in (
        (altered, "are there, but one or more differ"),
        (removed, f"now has {histories - 1} of them"),
    ):
        async with tampered(scratch_owner, statement, disable=("workflow_histories",)) as bound:
            found = await check_witness(
                bound, PostgresArchive(bound), public_keys=world["keys"], published=world["folder"]
            )
        assert [f.kind for f in found] == [ARCHIVE_DIFFERS]
        assert said in found[0].detail


async def test_growth_after_a_checkpoint_is_not_a_discrepancy(world, client, scratch):
    """Steps recorded and runs archived since the last checkpoint; and a run whose transaction began before a
    checkpoint and committed after it, with a lower seq than the checkpoint's last."""
    w, archive = world["witness"], world["archive"]
    _, histories = await _found(scratch)  # 2 when no test before archived more
    await w.checkpoint(force=True)
    await drive_one(client, scratch, world["c"])
    await _archive_run(client, archive, world["c"].workflow_id)
    assert await check_witness(scratch, archive, public_keys=world["keys"], published=world["folder"]) == []
    grown = await w.checkpoint()
    assert grown is not None and grown.body["archive"]["histories"] == histories + 1

    late, early = _synthetic(uuid.uuid4().hex[:8]), _synthetic(uuid.uuid4().hex[:8])
    async with scratch() as slow:
        await slow.execute(
            wh.insert().values(
                workflow_id=late.workflow_id,
                run_id=late.run_id,
                workflow_type=late.workflow_type,
                status=late.status,
                started_at=late.started_at,
                closed_at=late.closed_at,
                events=1,
                history=late.history,
                sha256=late.sha256,
            )
        )
        await archive.put(early)  # a higher seq, committed first
        seen = await w.checkpoint()
        await slow.commit()
    assert seen is not None and seen.body["archive"]["gaps"]
    assert await check_witness(scratch, archive, public_keys=world["keys"], published=world["folder"]) == []
    assert (await w.checkpoint()).body["archive"]["histories"] == histories + 3  # the late run is covered from now on
    assert await check_witness(scratch, archive, public_keys=world["keys"], published=world["folder"]) == []


async def test_without_the_public_key_file_nothing_is_verified(world, scratch, scratch_owner, tmp_path):
    await world["witness"].checkpoint(force=True)  # a checkpoint to verify, in the database and published
    found = await check_witness(scratch, world["archive"], public_keys=tmp_path / "none.pub", published=world["folder"])
    assert [f.kind for f in found] == [UNVERIFIABLE]
    found = await check_witness(scratch, world["archive"], public_keys=world["keys"], published=tmp_path)
    assert [f.kind for f in found] == [UNVERIFIABLE] and "latest.json" in found[0].detail
    # No checkpoint anywhere: without a key file, no witness (nothing to judge); with one, the checkpoints
    # that should exist were never written or were all removed (with the published folder).
    gone = ("DELETE FROM witness_checkpoints", {})
    async with tampered(scratch_owner, gone, disable=("witness_checkpoints",)) as bound:
        assert await check_witness(bound, PostgresArchive(bound), public_keys=tmp_path / "none.pub") == []
        found = await check_witness(bound, PostgresArchive(bound), public_keys=world["keys"], published=tmp_path)
        assert [f.kind for f in found] == [MISSING] and "no checkpoint" in found[0].detail


def test_every_witness_kind_is_explained():
    assert set(WITNESS_KINDS) <= set(KINDS)


async def test_the_witness_ring_is_made_once_and_the_worker_loads_it(settings, scratch, tmp_path):
    s = settings.model_copy(
        update={"state_dir": tmp_path, "witness_keys_file": None, "witness_dir": None, "witness_public_key_file": None}
    )
    archive = PostgresArchive(scratch)
    assert load_witness(s, scratch, archive) is None  # no ring, none configured: the witness is off
    ring = ensure_witness_keys(s)
    assert stat.S_IMODE(s.witness_keys_path.stat().st_mode) == 0o600
    assert read_ring(s.witness_keys_path) == ring and ring.active.startswith("witness-")
    assert read_public_keys(s.witness_public_key_path) == {ring.active: ring.public()}
    assert ensure_witness_keys(s) == ring  # made once
    w = load_witness(s, scratch, archive)
    assert w is not None and w.ring == ring and w.publish_dir == s.witness_path and w.interval == timedelta(hours=24)
    # Workers starting at once all end up with the one ring.
    at_once = s.model_copy(update={"state_dir": tmp_path / "at-once"})
    rings = await asyncio.gather(*(asyncio.to_thread(ensure_witness_keys, at_once) for _ in range(8)))
    assert all(r == rings[0] for r in rings) and read_ring(at_once.witness_keys_path) == rings[0]
    assert [p.name for p in at_once.witness_keys_path.parent.iterdir() if p.name.startswith(".")] == []
    configured = s.model_copy(update={"witness_keys_file": tmp_path / "elsewhere" / "wk"})
    made = load_witness(configured, scratch, archive)
    assert made is not None and (tmp_path / "elsewhere" / "wk").exists() and made.ring != ring


async def test_the_archive_sweep_signs_a_checkpoint_after_archiving(world, client, scratch, settings):
    """The engine's own path: the scheduled sweep archives a closed history, then its witness signs a
    checkpoint that covers it (published as latest.json)."""
    w, folder = world["witness"], world["folder"]
    [d] = make_households(1, beneficiary_group="poor", support_type="new_build", programme="")
    async with running_worker(client, scratch, settings, witness=w) as tq:
        await enroll(client, scratch, tq, [d])
        await client.get_workflow_handle(d.workflow_id).terminate("closed, to be archived")

        async def listed() -> bool:
            return [wf async for wf in client.list_workflows(f"TaskQueue = '{tq}' AND ExecutionStatus != 'Running'")]

        await wait_until(listed, 30)
        result = await client.execute_workflow(
            HistoryArchiveWorkflow.run,
            ArchiveSweepInput(task_queue=tq),
            id=f"sweep-{uuid.uuid4().hex[:8]}",
            task_queue=tq,
        )
    assert result.archived_now == 1 and result.checkpoint_seq is not None
    latest = await w.latest()
    assert latest is not None and latest.seq == result.checkpoint_seq
    assert json.loads((folder / "latest.json").read_text())["hash"] == latest.hash
    kept = await world["archive"].get(d.workflow_id)
    assert latest.body["archive"]["last_seq"] >= kept.seq
    assert await check_witness(scratch, world["archive"], public_keys=world["keys"], published=folder) == []


async def test_a_checkpoint_carries_only_the_heads_that_changed(world, scratch_owner, tmp_path):
    """Its size follows the activity since the checkpoint before, not the number of households."""
    b = world["b"]
    async with tampered(scratch_owner) as bound:
        w = Witness(bound, PostgresArchive(bound), world["ring"], tmp_path)
        await w.checkpoint(force=True)
        head = await _append_step(bound, b.code)
        small = await w.checkpoint()
        assert small is not None and not small.full and small.changed == {b.code: head}
        households = small.body["chains"]["households"]
        codes = await _more_households(bound, world["a"].code, 40)
        grown = await w.checkpoint()  # the new households, once
        assert sorted(grown.changed) == sorted(codes) and grown.body["chains"]["households"] == households + 40
        head = await _append_step(bound, b.code)
        again = await w.checkpoint()
        assert again.changed == {b.code: head} and again.body["chains"]["households"] == households + 40
        # 40 more untouched households: a few digits more (seqs, counts), not 40 heads of ~90 bytes each.
        assert abs(_size(again) - _size(small)) <= 8 < 40 * 64 < _size(grown) - _size(small)
        assert json.loads((tmp_path / "latest.json").read_text())["body"] == again.body
        found = await _check(bound, tmp_path)
    assert found == []


async def test_a_head_signed_only_in_the_first_checkpoint_is_still_compared(world, scratch_owner, tmp_path):
    """Later checkpoints carry other households only: the rewritten chain is named from the fold of them all."""
    a, b = world["a"], world["b"]
    async with tampered(scratch_owner, disable=("audit_log",)) as bound:
        w = Witness(bound, PostgresArchive(bound), world["ring"], tmp_path)
        await w.checkpoint(force=True)
        for _ in range(3):
            head = await _append_step(bound, b.code)
            assert (await w.checkpoint()).changed == {b.code: head}
        async with bound() as s:
            bodies = (await s.execute(select(witness_checkpoints.c.body))).scalars().all()
        assert [cp["seq"] for cp in bodies if a.code in cp["changed"]] == [1]  # only the first holds a's head
        statements = await _rewritten(bound, a.code)
        async with bound() as s:
            for sql, params in statements:
                await s.execute(text(sql), params)
            await s.commit()
        async with bound() as s:
            assert (await audit.verify_chain(s)).ok  # the chain alone sees nothing
        found = await _check(bound, tmp_path)
        # A checkpoint written after the rewrite signs a's new head, at the same seq: it does not absolve it.
        with capture_logs() as logs:
            pinned = await w.checkpoint()
        assert list(pinned.changed) == [a.code] and "witness.chain_went_back" in [e["event"] for e in logs]
        still = await _check(bound, tmp_path)
    assert [(f.kind, f.household) for f in found] == [(CHAIN_DIFFERS, a.code)]
    assert "signed in checkpoint 1)" in found[0].detail and "rewritten" in found[0].detail
    assert [(f.kind, f.household, f.where) for f in still] == [(CHAIN_DIFFERS, a.code, found[0].where)]
    assert f"database checkpoint {pinned.seq}" in still[0].detail and "signed in checkpoint 1)" in still[0].detail


async def _three_more(bound, world, folder) -> list[Checkpoint]:
    """Three checkpoints more: the first carries a step of `a`, the two others steps of `b` only."""
    w = Witness(bound, PostgresArchive(bound), world["ring"], folder)
    await w.checkpoint(force=True)
    made = []
    for code in (world["a"].code, world["b"].code, world["b"].code):
        head = await _append_step(bound, code)
        made.append(cp := await w.checkpoint())
        assert cp.changed == {code: head}
    return made


async def test_a_checkpoint_removed_from_the_middle_is_named(world, scratch_owner, tmp_path):
    async with tampered(scratch_owner, disable=("witness_checkpoints",)) as bound:
        middle, after, last = await _three_more(bound, world, tmp_path)
        async with bound() as s:
            await s.execute(text("DELETE FROM witness_checkpoints WHERE seq = :s"), {"s": middle.seq})
            await s.commit()
        alone = await _check(bound, tmp_path, published=False)
        # The published folder still holds it: the fold takes it from there.
        found = await _check(bound, tmp_path)
    assert [f.kind for f in alone] == [BROKEN, UNVERIFIABLE]
    assert f"database checkpoint {after.seq}" in alone[0].where
    assert f"expected checkpoint {middle.seq}" in alone[0].detail
    assert f"database checkpoint {last.seq}" in alone[1].where and f"checkpoint(s) {middle.seq} " in alone[1].detail
    assert [f.kind for f in found] == [BROKEN] and found[0] == alone[0]


async def test_a_checkpoint_altered_and_re_signed_in_the_middle_is_named(world, scratch_owner, tmp_path):
    """The forger rewrites a's chain and puts its new head in the checkpoint that carried a's step, signed
    with a key of their own: refused, its link from the next one broken, and a's chain still named."""
    a = world["a"]
    async with tampered(scratch_owner, disable=("witness_checkpoints", "audit_log")) as bound:
        middle, after, _ = await _three_more(bound, world, tmp_path)
        statements = await _rewritten(bound, a.code)
        async with bound() as s:
            for sql, params in statements:
                await s.execute(text(sql), params)
            await s.commit()
        rewritten = (await _rows(bound, a.code))[-1]
        assert rewritten["seq"] == middle.changed[a.code][0] and rewritten["hash"] != middle.changed[a.code][1]
        forged = Checkpoint.signed(
            {**middle.body, "changed": {a.code: [rewritten["seq"], rewritten["hash"]]}}, new_ring("witness-forger")
        )
        edit = (
            "UPDATE witness_checkpoints SET body = CAST(:b AS jsonb), hash = :h, key_id = :k, signature = :sig "
            "WHERE seq = :s"
        )
        async with bound() as s:
            await s.execute(
                text(edit),
                {
                    "b": json.dumps(forged.body),
                    "h": forged.hash,
                    "k": forged.key_id,
                    "sig": forged.signature,
                    "s": middle.seq,
                },
            )
            await s.commit()
        alone = await _check(bound, tmp_path, published=False)
        found = await _check(bound, tmp_path)
    assert [(f.kind, f.household) for f in alone] == [
        (INVALID, "-"),
        (BROKEN, "-"),
        (UNVERIFIABLE, "-"),
        (CHAIN_DIFFERS, a.code),
    ]
    assert f"database checkpoint {middle.seq}" in alone[0].where and "does not hold" in alone[0].detail
    assert f"database checkpoint {after.seq}" in alone[1].where and "prev_hash" in alone[1].detail
    # Without the published copy, a is judged at its older signed head; with it, at the one the forger replaced.
    assert "signed in checkpoint 1)" in alone[3].detail
    assert [(f.kind, f.household) for f in found] == [
        (INVALID, "-"),
        (BROKEN, "-"),
        (MISSING, "-"),
        (CHAIN_DIFFERS, a.code),
    ]
    assert f"checkpoint-{middle.seq:06d}.json" in found[2].where and "another checkpoint" in found[2].detail
    assert f"signed in checkpoint {middle.seq})" in found[3].detail and f"seq {rewritten['seq']}" in found[3].where


async def test_a_rollback_past_published_checkpoints_compares_what_can_be_folded(world, scratch_owner, tmp_path):
    """The database lost its last checkpoints, and the published folder one of them too: the newest, the
    published one, is judged on the heads that can be folded, and the lost one is named."""
    a = world["a"]
    async with tampered(scratch_owner, disable=("witness_checkpoints", "audit_log")) as bound:
        middle, _, last = await _three_more(bound, world, tmp_path)
        (tmp_path / f"checkpoint-{middle.seq:06d}.json").unlink()
        statements = [
            ("DELETE FROM witness_checkpoints WHERE seq >= :s", {"s": middle.seq}),
            *await _rewritten(bound, a.code),
        ]
        async with bound() as s:
            for sql, params in statements:
                await s.execute(text(sql), params)
            await s.commit()
        found = await _check(bound, tmp_path)
    assert [(f.kind, f.household) for f in found] == [(MISSING, "-"), (UNVERIFIABLE, "-"), (CHAIN_DIFFERS, a.code)]
    assert f"published checkpoint {last.seq}" in found[0].where and found[1].where == found[0].where
    assert f"checkpoint(s) {middle.seq} are in neither" in found[1].detail
    assert "signed in checkpoint 1)" in found[2].detail  # a's older head: the newer one was lost


async def test_a_checkpoint_whose_heads_were_dropped_and_all_re_signed_is_named_by_its_root(
    world, scratch_owner, tmp_path
):
    """Even re-signed with the witness key itself (as only its holder could) and linked again, checkpoints that
    no longer carry a's step do not fold to the root they sign: the first of them is named."""
    async with tampered(scratch_owner, disable=("witness_checkpoints",)) as bound:
        made = await _three_more(bound, world, tmp_path)
        edit = (
            "UPDATE witness_checkpoints SET body = CAST(:b AS jsonb), prev_hash = :p, hash = :h, signature = :sig "
            "WHERE seq = :s"
        )
        async with bound() as s:
            q = select(witness_checkpoints.c.hash).where(witness_checkpoints.c.seq == made[0].seq - 1)
            prev = (await s.execute(q)).scalar_one()
            for cp in made:
                body = {**cp.body, "prev_hash": prev.strip()}
                if cp is made[0]:
                    body["changed"] = {}
                again = Checkpoint.signed(body, world["ring"])
                await s.execute(
                    text(edit),
                    {
                        "b": json.dumps(again.body),
                        "p": again.prev_hash,
                        "h": again.hash,
                        "sig": again.signature,
                        "s": cp.seq,
                    },
                )
                prev = again.hash
            await s.commit()
        found = await _check(bound, tmp_path, published=False)
    assert [f.kind for f in found] == [BROKEN]
    assert (
        f"database checkpoint {made[0].seq}" in found[0].where and "do not hash to its chains' root" in found[0].detail
    )
