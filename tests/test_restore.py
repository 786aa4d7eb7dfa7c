"""Recovery after a database restore: a scratch database is put back to an older state (a backup taken before
some steps, the rest of the ledger, audit log, outbox, payments and read model gone), `audit verify` names
each lost step, `audit restore` re-records exactly those from the histories, and the three records agree
again; a second restore does nothing, a fork is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from auditor.history import read_trails
from auditor.records import fetch_histories, household_workflow_ids, read_records
from auditor.restore import RestoreRefused, recorded_steps, restore
from auditor.verify import verify
from core.settings import ROOT
from db import ledger
from db.audit import verify_chain
from models.finance import TrancheStatus
from models.household import Step
from operations import sample
from operations.actions import household_state
from operations.demo import next_action
from operations.seed import seed_demo
from tests.conftest import (
    SEALED,
    TEST_KEYS_FILE,
    drive_one,
    enroll,
    make_households,
    running_worker,
    take_step,
    token_for,
    tranche_is,
    wait_until,
)

SNAPSHOT_TABLES = ("households", "household_tranches", "payments", "audit_chain_heads")
LEDGER_TOTALS = """
UPDATE ledger_accounts a SET
  debits_pending = COALESCE((SELECT sum(t.amount) FROM ledger_transfers t WHERE t.kind = 'pending'
      AND t.debit_account_id = a.id AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id)), 0),
  credits_pending = COALESCE((SELECT sum(t.amount) FROM ledger_transfers t WHERE t.kind = 'pending'
      AND t.credit_account_id = a.id AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id)), 0),
  debits_posted = COALESCE((SELECT sum(t.amount) FROM ledger_transfers t WHERE t.kind IN ('posted', 'post_pending')
      AND t.debit_account_id = a.id), 0),
  credits_posted = COALESCE((SELECT sum(t.amount) FROM ledger_transfers t WHERE t.kind IN ('posted', 'post_pending')
      AND t.credit_account_id = a.id), 0)
"""


async def rows_of(sessions, table: str, codes: list[str], order: str) -> list[dict]:
    async with sessions() as s:
        column = "code" if table == "households" else "household_code"
        found = await s.execute(text(f"SELECT * FROM {table} WHERE {column} = ANY(:c) ORDER BY {order}"), {"c": codes})
        return [dict(r) for r in found.mappings()]


async def take_backup(sessions, codes: list[str]) -> dict:
    """What a backup taken now would hold of these households, and where each id sequence stood."""
    async with sessions() as s:
        tops = {
            t: await s.scalar(text(f"SELECT COALESCE(max(id), 0) FROM {t}"))
            for t in ("audit_log", "ledger_transfers", "outbox")
        }
    order = {
        "households": "code",
        "household_tranches": "household_code, tranche",
        "payments": "payment_id",
        "audit_chain_heads": "household_code",
    }
    return {"tops": tops, **{t: await rows_of(sessions, t, codes, order[t]) for t in SNAPSHOT_TABLES}}


async def put_back(sessions, backup: dict, codes: list[str]) -> None:
    """Simulate the restore from that backup, as the tables' owner with the append-only triggers off:
    everything written since is gone, the read model is as it was, the id sequences are where they stood."""
    engine = sessions.kw["bind"]
    tops = backup["tops"]
    async with engine.begin() as conn:
        for table in ("audit_log", "ledger_transfers", "ledger_accounts", "audit_chain_heads"):
            await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        await conn.execute(text("DELETE FROM payments WHERE household_code = ANY(:c)"), {"c": codes})
        # The chains' heads as they were (a head moves only forward: the restore puts its table back too).
        await conn.execute(text("DELETE FROM audit_chain_heads WHERE household_code = ANY(:c)"), {"c": codes})
        await conn.execute(text("DELETE FROM household_tranches WHERE household_code = ANY(:c)"), {"c": codes})
        for table in ("audit_log", "outbox", "ledger_transfers"):
            await conn.execute(text(f"DELETE FROM {table} WHERE id > :top"), {"top": tops[table]})
        await conn.execute(text(LEDGER_TOTALS))
        for row in backup["households"]:
            cols = ("stage", "stage_since", "last_seq", "entitlement", "reserved", "paid", "funding_source")
            sets = ", ".join(f"{c} = :{c}" for c in cols)
            await conn.execute(
                text(f"UPDATE households SET {sets} WHERE code = :code"), {c: row[c] for c in (*cols, "code")}
            )
        for table in ("household_tranches", "payments", "audit_chain_heads"):
            for row in backup[table]:
                await conn.execute(
                    text(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(f':{c}' for c in row)})"), row
                )
        for table in ("audit_log", "ledger_transfers", "ledger_accounts", "audit_chain_heads"):
            await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        for table, top in tops.items():
            await conn.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {max(top, 1)}, {top > 0})")
            )


async def trails(client, codes):
    return await read_trails(fetch_histories(client, household_workflow_ids(codes)), SEALED)


async def up_to(client, sessions, h, step: Step) -> None:
    """Take the household's steps until `step` is next."""
    while True:
        action = next_action(await household_state(client, h.code), h)
        assert isinstance(action, tuple), action
        if action[0] is step:
            return
        await take_step(client, sessions, h.code, action[0], action[1], **action[2])


@pytest.fixture(scope="module")
async def world(client, scratch, scratch_owner, settings):
    """In the scratch database: `tail` (A) took its first steps before the backup, then allocation and a
    first tranche paid after it (still running); `whole` (B) took every step after the backup (closed);
    `kept` (C) took two steps, all before it. Then the database is put back to the backup, and a receipt
    taken since takes the first id the lost allocation had."""
    await seed_demo(scratch)
    async with scratch() as s, s.begin():
        await ledger.receive(s, key="restore:topup", source="NS-TINH", amount=50_000_000_000, memo="tests")
    tail, whole, kept = make_households(3, beneficiary_group="poor", support_type="new_build", programme="")
    whole = whole.model_copy(update={"programme": "MTQG-GNBV"})  # its allocation draws on two sources
    codes = [tail.code, whole.code, kept.code]
    async with running_worker(client, scratch, settings) as tq:  # the suite's bank process
        await enroll(client, scratch, tq, [tail, whole, kept])
        await up_to(client, scratch, tail, Step.ALLOCATE)
        await up_to(client, scratch, kept, Step.ALLOCATE)
        backup = await take_backup(scratch, codes)
        await drive_one(client, scratch, tail, payouts=False)
        await take_step(client, scratch, tail.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
        await take_step(
            client, scratch, tail.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U"]
        )
        await wait_until(tranche_is(client, tail.code, TrancheStatus.PAID))
        await drive_one(client, scratch, whole)
        await client.get_workflow_handle(whole.workflow_id).result()
        before = {
            t: await rows_of(scratch, t, codes, o)
            for t, o in (
                ("audit_log", "id"),
                ("ledger_transfers", "id"),
                ("households", "code"),
                ("household_tranches", "household_code, tranche"),
                ("payments", "payment_id"),
            )
        }
        histories = {t.household_code: t for t in await trails(client, codes)}
        await put_back(scratch_owner, backup, codes)  # as the owner: the application's role cannot
        async with scratch() as s, s.begin():  # the engine ran on after the restore: this takes a lost id
            taken = await ledger.receive(s, key="restore:after", source="NS-TINH", amount=1_000_000, memo="tests")
        yield {
            "h": (tail, whole, kept),
            "codes": codes,
            "backup": backup,
            "before": before,
            "histories": histories,
            "taken": taken,
            "tq": tq,
        }


async def _verify_names_each_lost_step(client, scratch, world):
    tail, whole, kept = world["h"]
    report = verify(await trails(client, world["codes"]), await read_records(scratch, world["codes"]))
    assert set(report.by_kind()) == {"step_lost"}, report.discrepancies
    backed_up = {r["code"]: r["last_seq"] for r in world["backup"]["households"]}
    lost = {(d.household, int(d.where.split(" seq ")[1].split()[0])) for d in report.discrepancies}
    history = world["histories"]
    expected = {
        (t.record.household_code, t.record.seq)
        for code in (tail.code, whole.code)
        for t in recorded_steps(history[code])
        if t.record.seq > backed_up[code]
    }
    assert lost == expected and kept.code not in {d.household for d in report.discrepancies}
    alloc = next(t for t in recorded_steps(history[tail.code]) if t.record.step is Step.ALLOCATE)
    line = next(d for d in report.discrepancies if d.household == tail.code and f"seq {alloc.record.seq} " in d.where)
    assert f"allocate by {alloc.record.actor.user_id}" in line.detail and alloc.outcome.audit_hash in line.detail


def audit_cli(client, scratch, scratch_owner, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": scratch.kw["bind"].url.render_as_string(hide_password=False),
        "DATABASE_OWNER_URL": scratch_owner.kw["bind"].url.render_as_string(hide_password=False),
        "PAYLOAD_KEYS_FILE": str(TEST_KEYS_FILE),
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("PAYLOAD_KEYS", None)
    env.pop("HOUSING_TOKEN", None)

    def cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess:
        """`starter.py audit …`; `token` proves the `--as` operator (operations/credentials.py)."""
        return subprocess.run(
            [sys.executable, "starter.py", "audit", *args],
            cwd=ROOT,
            env=env | ({"HOUSING_TOKEN": token} if token else {}),
            capture_output=True,
            text=True,
            timeout=120,
        )

    return cli


async def _the_commands_name_the_loss_and_a_dry_run_writes_nothing(client, scratch, scratch_owner, world, tmp_path):
    cli = audit_cli(client, scratch, scratch_owner, tmp_path)
    admin, finance = [await token_for(scratch, u) for u in (sample.ADMIN_USER, sample.FINANCE_USERS[0])]
    codes = [a for c in world["codes"] for a in ("--code", c)]
    verified = cli("verify", *codes, "--json")
    assert verified.returncode == 1, verified.stderr
    kinds = json.loads(verified.stdout)["by_kind"]
    assert list(kinds) == ["step_lost"]
    unproved = cli("restore", *world["codes"], "--as", sample.ADMIN_USER, "--reason", "thử", "--dry-run")
    assert unproved.returncode == 1 and "Unauthenticated" in unproved.stderr
    dry = cli("restore", *world["codes"], "--as", sample.ADMIN_USER, "--reason", "thử", "--dry-run", token=admin)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"dry run: {kinds['step_lost']} steps over 2 households to re-record" in dry.stdout
    refused = cli("restore", "--all", "--as", sample.FINANCE_USERS[0], "--reason", "thử", token=finance)
    assert refused.returncode == 1 and "OperatorNotAllowed" in refused.stderr
    assert json.loads(cli("verify", *codes, "--json").stdout)["by_kind"] == kinds  # nothing was written


async def _restore_re_records_exactly_the_lost_steps_then_everything_agrees(client, scratch, scratch_owner, world):
    """Run as the owner, as `audit restore` is: the application's role may not write restore marks."""
    tail, whole, kept = world["h"]
    codes, before = world["codes"], world["before"]
    with pytest.raises(RestoreRefused) as refused:
        await restore(scratch_owner, await trails(client, codes), operator=sample.FINANCE_USERS[0], reason="x")
    assert refused.value.rule == "OperatorNotAllowed"

    dry = await restore(
        scratch_owner, await trails(client, codes), operator=sample.ADMIN_USER, reason="backup", dry_run=True
    )
    done = await restore(
        scratch_owner,
        await trails(client, codes),
        operator=sample.ADMIN_USER,
        reason="khôi phục CSDL từ bản sao lưu 01/12",
    )
    assert not done.refused and done.up_to_date == [kept.code]
    assert [(r.household, r.seq) for r in done.restored] == [(r.household, r.seq) for r in dry.restored]
    lost_rows = [r for r in before["audit_log"] if r["id"] > world["backup"]["tops"]["audit_log"]]
    assert sorted((r.household, r.seq) for r in done.restored) == sorted(
        (r["household_code"], r["seq"]) for r in lost_rows
    )

    alloc = next(t for t in recorded_steps(world["histories"][whole.code]) if t.record.step is Step.ALLOCATE)
    assert len({p.source for a in alloc.outcome.allocation for p in a.pieces}) == 2, alloc.outcome.allocation
    # The whole chain: every row written again is the row the engine first wrote, hash for hash.
    by_key = {r["idempotency_key"]: r for r in before["audit_log"]}
    for r in done.restored:
        if r.household == whole.code:
            assert r.same_hash and r.audit_hash == by_key[f"household-{r.household}#{r.seq}"]["hash"]
    # The tail: its allocation's first piece lost its id to a receipt taken since; it was given a new id,
    # mapped, and so that row and the ones after it hash otherwise (each mark holds both hashes).
    remapped = [r for r in done.restored if r.transfer_ids]
    assert [r.household for r in remapped] == [tail.code]
    assert str(world["taken"].id) in remapped[0].transfer_ids

    async with scratch() as s:
        assert await ledger.check_invariants(s) == []
        assert (await verify_chain(s)).ok
        marks = (await s.execute(text("SELECT * FROM restored_steps ORDER BY household_code, seq"))).mappings().all()
    assert {m["restored_by"] for m in marks} == {sample.ADMIN_USER} and len(marks) == len(done.restored)
    assert {m["run_id"] for m in marks} == {world["histories"][c].run_id for c in (tail.code, whole.code)}
    report = verify(await trails(client, codes), await read_records(scratch, codes))
    assert report.ok, report.discrepancies

    # Nothing double: the same transfers (by key and amount), the same read model, the same tranches.
    after = {
        t: await rows_of(scratch, t, codes, o)
        for t, o in (
            ("ledger_transfers", "id"),
            ("households", "code"),
            ("household_tranches", "household_code, tranche"),
            ("payments", "payment_id"),
        )
    }

    def money(rows):
        return sorted((r["idempotency_key"].split(":")[0], r["kind"], r["amount"]) for r in rows)

    assert money(after["ledger_transfers"]) == money(before["ledger_transfers"])
    skip = {"updated_at", "created_at", "stage_since", "sent_at", "resolved_at"}

    def plain(rows):
        return [{k: v for k, v in r.items() if k not in skip} for r in rows]

    assert plain(after["households"]) == plain(before["households"])
    assert plain(after["household_tranches"]) == plain(before["household_tranches"])
    assert [(p["payment_id"], p["status"]) for p in after["payments"]] == [
        (p["payment_id"], p["status"]) for p in before["payments"]
    ]

    again = await restore(scratch_owner, await trails(client, codes), operator=sample.ADMIN_USER, reason="again")
    assert again.restored == [] and sorted(again.up_to_date) == sorted(codes)


async def _after_the_restore_the_commands_find_nothing_to_do(client, scratch, scratch_owner, world, tmp_path):
    cli = audit_cli(client, scratch, scratch_owner, tmp_path)
    again = cli(
        "restore",
        *world["codes"],
        "--as",
        sample.ADMIN_USER,
        "--reason",
        "lần hai",
        token=await token_for(scratch, sample.ADMIN_USER),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 steps over 0 households re-recorded" in again.stdout and "3 households had lost nothing" in again.stdout
    chain = cli("chain")
    assert chain.returncode == 0 and "no break" in chain.stdout
    codes = [a for c in world["codes"] for a in ("--code", c)]
    verified = cli("verify", *codes)
    assert verified.returncode == 0 and "0 discrepancies" in verified.stdout, verified.stdout
    # An export carries the marks, so the offline check agrees too (a remapped row's hash included).
    assert cli("export", str(tmp_path / "x")).returncode == 0
    offline = cli("verify", "--from", str(tmp_path / "x"), *codes, "--json")
    assert offline.returncode == 0 and json.loads(offline.stdout)["discrepancies"] == [], offline.stdout


async def _the_restored_household_goes_on_and_its_remapped_pieces_are_paid(client, scratch, settings, world):
    tail = world["h"][0]
    async with running_worker(client, scratch, settings):
        await drive_one(client, scratch, tail)
        await client.get_workflow_handle(tail.workflow_id).result()
    report = verify(await trails(client, world["codes"]), await read_records(scratch, world["codes"]))
    assert report.ok, report.discrepancies
    async with scratch() as s:
        assert await ledger.check_invariants(s) == []
        pending = await s.scalar(
            text(
                "SELECT count(*) FROM ledger_transfers t WHERE household_code = :c AND "
                "kind = 'pending' AND NOT EXISTS (SELECT 1 FROM ledger_transfers r "
                "WHERE r.pending_id = t.id)"
            ),
            {"c": tail.code},
        )
    assert pending == 0


async def test_the_restore_story(client, scratch, scratch_owner, settings, world, tmp_path):
    """The phases of one recovery, in order, on the database the fixture put back: `audit verify` names each
    lost step; the commands name the loss and a dry run writes nothing; `audit restore` re-records exactly the
    lost steps and the three records agree again (a second restore does nothing); after it the commands find
    nothing to do; and the restored household goes on, its remapped pieces paid."""
    for phase in ("before", "after"):
        (tmp_path / phase).mkdir()
    await _verify_names_each_lost_step(client, scratch, world)
    await _the_commands_name_the_loss_and_a_dry_run_writes_nothing(
        client, scratch, scratch_owner, world, tmp_path / "before"
    )
    await _restore_re_records_exactly_the_lost_steps_then_everything_agrees(client, scratch, scratch_owner, world)
    await _after_the_restore_the_commands_find_nothing_to_do(client, scratch, scratch_owner, world, tmp_path / "after")
    await _the_restored_household_goes_on_and_its_remapped_pieces_are_paid(client, scratch, settings, world)


async def test_a_household_whose_rows_contradict_its_history_is_refused_as_a_fork(client, scratch_owner, world):
    kept = world["h"][2]
    engine = scratch_owner.kw["bind"]  # the forger has the owner's rights: the application's role has none
    async with engine.connect() as conn:
        tx = await conn.begin()
        await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        await conn.execute(
            text("UPDATE audit_log SET hash = repeat('f', 64) WHERE household_code = :c AND seq = 1"), {"c": kept.code}
        )
        from sqlalchemy.ext.asyncio import async_sessionmaker

        bound = async_sessionmaker(bind=conn, expire_on_commit=False, join_transaction_mode="create_savepoint")
        report = await restore(bound, await trails(client, [kept.code]), operator=sample.ADMIN_USER, reason="x")
        await tx.rollback()
    assert report.restored == [] and [(c, e.rule) for c, e in report.refused] == [(kept.code, "RestoreFork")]
    assert "forked" in str(report.refused[0][1])
