"""Auditors verify who signed each step: `audit verify`, live and from an export, checks every audit row's signed
assertion against the front doors' public keys, and names a step whose signature is missing, does not hold,
was signed by a key not valid then, or was forged by someone with the database's owner login."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from auditor import archive
from auditor.history import read_trail
from auditor.verify import KINDS, VerifyReport, _check_signatures, verify
from core import signing
from core.settings import ROOT
from db import users
from db.audit import row_hash
from db.policy import current_workflow_policy
from models.assertion import digest_of
from models.finance import BatchAction, BatchSelection, PayoutBatchInput, TrancheStatus
from models.household import Step
from operations import payouts, policies, sample
from operations.payouts import run_batch
from tests.conftest import (
    FRONT_DOOR,
    SEALED,
    TEST_KEYS_FILE,
    drive_one,
    enroll,
    make_households,
    running_worker,
    take_step,
    tranche_is,
    wait_until,
)
from tests.test_audit import reseal, tampered, verify_live

SIGNATURE_KINDS = {"signature_missing", "signature_invalid", "signature_key_not_valid", "assertion_differs"}


@pytest.fixture(scope="module")
async def run(client, sessions, owner_sessions, settings):
    """Two households signed by the suite's front door: `paid` driven to settlement (every tranche paid through
    the bank) with a policy change by the administrator on the way; `batched` whose first tranche is
    authorised and released by payout batches (each step carrying its batch's assertion)."""
    paid, batched = make_households(2, beneficiary_group="poor", support_type="new_build", programme="")
    async with running_worker(client, sessions, settings) as tq:
        await enroll(client, sessions, tq, [paid, batched])
        await take_step(
            client,
            sessions,
            paid.code,
            Step.VERIFY,
            sample.commune_user(paid.district, paid.commune),
            evidence=["BB-1"],
        )
        async with sessions() as s:
            current = await current_workflow_policy(s, date.today())
        newer = current.model_copy(update={"version": f"sig-{uuid.uuid4().hex[:8]}"})
        await policies.add_version(owner_sessions, newer, date.today(), sample.ADMIN_USER)
        pushed = await policies.push(
            client, sessions, newer, sample.ADMIN_USER, signer=FRONT_DOOR, query=f"WorkflowId = '{paid.workflow_id}'"
        )
        assert (pushed.applied, pushed.refused) == (1, 0)
        await drive_one(client, sessions, paid)
        await client.get_workflow_handle(paid.workflow_id).result()

        await drive_one(client, sessions, batched, payouts=False)
        selection = BatchSelection(codes=[batched.code])
        for action, user in ((BatchAction.AUTHORISE, "tc.hoang"), (BatchAction.RELEASE, sample.TREASURY_USER)):
            async with sessions() as s:
                actor = await users.require_actor(s, user)
            result = await run_batch(
                client,
                tq,
                payouts.sign_batch(
                    FRONT_DOOR,
                    PayoutBatchInput(
                        batch_id=payouts.batch_id_for(action, 1, selection, uuid.uuid4().hex[:6]),
                        action=action,
                        tranche=1,
                        selection=selection,
                        actor=actor,
                        evidence=["BATCH"],
                    ),
                ),
            )
            assert result.progress.done == 1, result
        await wait_until(tranche_is(client, batched.code, TrancheStatus.PAID), seconds=30)
    return {"paid": paid, "batched": batched, "policy": newer.version}


@pytest.fixture(scope="module")
def paid(run):
    return run["paid"]


async def rows_of(sessions, code: str) -> list[dict]:
    async with sessions() as s:
        found = await s.execute(text("SELECT * FROM audit_log WHERE household_code = :c ORDER BY seq"), {"c": code})
        return [dict(r) for r in found.mappings()]


def of_kinds(report, *kinds: str) -> list:
    return [d for d in report.discrepancies if d.kind in kinds]


def sql_json(value) -> str:
    return "'" + json.dumps(value, ensure_ascii=False).replace("'", "''") + "'::jsonb"


async def test_every_step_is_signed_and_verifies(client, sessions, run):
    assert SIGNATURE_KINDS <= set(KINDS)
    paid, batched = run["paid"], run["batched"]
    rows = await rows_of(sessions, paid.code)
    assert rows and all(r["assertion"] and r["signed_input"] for r in rows)
    steps = {r["step"] for r in rows}
    assert {"verify", "set_policy", "allocate", "release_payout", "payment_confirmed", "settle"} <= steps
    report = await verify_live(client, sessions, [paid.code])
    assert report.discrepancies == [] and report.transitions == len(rows)
    # The batch's steps carry the batch's assertion, signed for the batch's workflow, and verify as such.
    batch_rows = [r for r in await rows_of(sessions, batched.code) if r["step"].endswith("_payout")]
    assert [r["assertion"]["step"] for r in batch_rows] == ["payout_batch:authorise", "payout_batch:release"]
    assert (await verify_live(client, sessions, [batched.code])).discrepancies == []


async def test_an_edited_evidence_is_not_what_was_signed(client, sessions, owner_sessions, paid):
    async with tampered(
        owner_sessions,
        f"UPDATE audit_log SET evidence = '[\"BB-GIA\"]' WHERE household_code = '{paid.code}' AND seq = 1",
    ) as bound:
        report = await verify_live(client, sessions, [paid.code], bound)
    [bad] = of_kinds(report, *SIGNATURE_KINDS)
    assert bad.kind == "signature_invalid" and "seq 1, verify" in bad.where
    assert "evidence" in bad.detail and "is not what" in bad.detail


async def test_a_rewritten_signed_input_or_signature_does_not_verify(client, sessions, owner_sessions, paid):
    """The owner rewrites the row and its signed input together (so they agree), or swaps the signature:
    without the front door's private key neither verifies."""
    rows = await rows_of(sessions, paid.code)
    row = rows[1]
    forged_input = row["signed_input"] | {"evidence": ["QD-GIA"]}
    statements = [
        f"UPDATE audit_log SET evidence = '[\"QD-GIA\"]', signed_input = {sql_json(forged_input)} "
        f"WHERE id = {row['id']}",
        f"UPDATE audit_log SET assertion = jsonb_set(assertion, '{{signature}}', '\"{'A' * 86}\"') "
        f"WHERE id = {rows[2]['id']}",
    ]
    async with tampered(owner_sessions, *statements) as bound:
        report = await verify_live(client, sessions, [paid.code], bound)
    found = {(d.kind, d.where.split(",")[0]) for d in of_kinds(report, *SIGNATURE_KINDS)}
    assert ("signature_invalid", f"audit row id={row['id']} (seq 2") in found
    assert ("signature_invalid", f"audit row id={rows[2]['id']} (seq 3") in found
    # The history holds the assertions the engine was given: the rows no longer carry the same.
    assert ("assertion_differs", f"audit row id={row['id']} (seq 2") in found
    assert ("assertion_differs", f"audit row id={rows[2]['id']} (seq 3") in found
    details = {d.where.split(",")[0]: d.detail for d in of_kinds(report, "signature_invalid")}
    assert "not the input the assertion was signed for" in details[f"audit row id={row['id']} (seq 2"]
    assert "signature does not verify" in details[f"audit row id={rows[2]['id']} (seq 3"]


async def test_a_removed_signature_is_named_missing(client, sessions, owner_sessions, paid):
    rows = await rows_of(sessions, paid.code)
    last = rows[-1]
    async with tampered(
        owner_sessions, f"UPDATE audit_log SET assertion = NULL, signed_input = NULL WHERE id = {last['id']}"
    ) as bound:
        report = await verify_live(client, sessions, [paid.code], bound)
    [missing] = of_kinds(report, *SIGNATURE_KINDS)
    assert missing.kind == "signature_missing" and f"seq {last['seq']}" in missing.where
    assert "its history's record carries one" in missing.detail


async def test_a_forged_row_signed_with_a_key_the_engine_never_trusted(client, sessions, owner_sessions, paid):
    """The owner inserts a step, chained correctly, signed by a ring of their own: the key is not among the
    public keys (and the history has no such step)."""
    rows = await rows_of(sessions, paid.code)
    last = rows[-1]
    seq = last["seq"] + 1
    forger = signing.new_ring("forger-1")
    signed_input = last["signed_input"] | {"evidence": ["QT-GIA"]}
    a = forger.sign(
        workflow_id=paid.workflow_id,
        step="settle",
        input_digest=digest_of(signed_input),
        user_id=last["actor_user_id"],
        now=last["occurred_at"],
    )
    forged = last | {
        "seq": seq,
        "idempotency_key": f"{paid.workflow_id}#{seq}",
        "step": "settle",
        "evidence": ["QT-GIA"],
        "amount": None,
        "transfer_id": None,
        "assertion": a.model_dump(mode="json"),
        "signed_input": signed_input,
    }
    forged["prev_hash"], forged["hash"] = last["hash"], row_hash(last["hash"], forged)
    sql = (
        "INSERT INTO audit_log (household_code, seq, idempotency_key, step, from_stage, to_stage, actor_user_id, "
        "actor_role, actor_agency, evidence, reason, amount, transfer_id, occurred_at, prev_hash, hash, assertion, "
        f"signed_input) VALUES ('{paid.code}', {seq}, '{forged['idempotency_key']}', 'settle', "
        f"'{last['from_stage']}', '{last['to_stage']}', '{last['actor_user_id']}', '{last['actor_role']}', "
        f"'{last['actor_agency']}', '[\"QT-GIA\"]', NULL, NULL, NULL, '{last['occurred_at'].isoformat()}', "
        f"'{last['hash']}', '{forged['hash']}', {sql_json(forged['assertion'])}, "
        f"{sql_json(signed_input)})"
    )
    async with tampered(owner_sessions, sql) as bound:
        report = await verify_live(client, sessions, [paid.code], bound)
    assert report.by_kind() == {"audit_without_history": 1, "signature_key_not_valid": 1}, report.discrepancies
    [bad] = of_kinds(report, "signature_key_not_valid")
    assert f"seq {seq}, settle" in bad.where and "'forger-1', which is not among the public keys" in bad.detail


async def test_a_key_not_valid_when_it_signed_is_named(client, sessions, owner_sessions, paid):
    """Every step was signed with the front door's key; if the table says that key only became valid after
    (a key registered late, or back-dated assertions from a rotated-out key), each step is named."""
    later = datetime.now(UTC) + timedelta(days=1)
    sql = f"UPDATE signing_keys SET valid_from = '{later.isoformat()}' WHERE key_id = '{FRONT_DOOR.active}'"
    async with tampered(owner_sessions, sql, disable=()) as bound:
        report = await verify_live(client, sessions, [paid.code], bound)
    bad = of_kinds(report, *SIGNATURE_KINDS)
    officer_rows = [r for r in await rows_of(sessions, paid.code) if not r["step"].startswith("payment_")]
    assert {d.kind for d in bad} == {"signature_key_not_valid"} and len(bad) == len(officer_rows)
    assert all(f"key {FRONT_DOOR.active!r}, which was not valid at" in d.detail for d in bad)


async def test_from_an_export_the_public_keys_go_with_it_and_a_forged_row_is_found(
    client, sessions, settings, paid, tmp_path
):
    """`audit export` writes the public keys with the manifest; `audit verify --from` checks each step against
    them. A forger who rewrites the exported audit log (evidence, the chain re-hashed) and reseals the manifest
    is still named: the signature covers what the officer signed."""
    directory = tmp_path / "x"
    await archive.export(client, sessions, directory, namespace="default", codes=[paid.code])
    manifest = json.loads((directory / "manifest.json").read_text())
    assert FRONT_DOOR.active in manifest["signing_key_ids"] and "records/signing_keys.json" in manifest["files"]
    arch = archive.Archive.open(directory)
    records = arch.records()
    assert FRONT_DOOR.active in records.keys.keys
    trails = [await read_trail(h, SEALED) for h in arch.histories()]
    assert verify(trails, records).discrepancies == []

    path = directory / "records" / "audit_log.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    prev = rows[0]["prev_hash"]
    for row in rows:
        if row["seq"] == 1:
            row["evidence"] = ["BB-GIA"]
        row["prev_hash"], row["hash"] = prev, row_hash(prev, row)
        prev = row["hash"]
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
    reseal(directory)
    forged = archive.Archive.open(directory)
    assert forged.problems == []  # the hashes were redone …
    report = verify([await read_trail(h, SEALED) for h in forged.histories()], forged.records())
    assert "chain_broken" not in report.by_kind()  # … and the chain is whole again …
    [bad] = of_kinds(report, *SIGNATURE_KINDS)  # … but the signature says what was signed
    assert bad.kind == "signature_invalid" and "seq 1, verify" in bad.where

    # The auditor's command line says the same, from the export alone.
    done = _cli(settings, client, tmp_path, "verify", "--from", str(directory), "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    kinds = {d["kind"] for d in json.loads(done.stdout)["discrepancies"]}
    assert "signature_invalid" in kinds


async def test_an_export_without_its_public_keys_names_every_signed_step(client, sessions, paid, tmp_path):
    directory = tmp_path / "x"
    await archive.export(client, sessions, directory, namespace="default", codes=[paid.code])
    (directory / "records" / "signing_keys.json").write_text("[]")
    reseal(directory)
    arch = archive.Archive.open(directory)
    report = verify([await read_trail(h, SEALED) for h in arch.histories()], arch.records())
    assert set(report.by_kind()) == {"signature_key_not_valid"}
    assert report.by_kind()["signature_key_not_valid"] == len(await rows_of(sessions, paid.code))


def _cli(settings, client, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "PAYLOAD_KEYS_FILE": str(TEST_KEYS_FILE),
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("PAYLOAD_KEYS", None)
    return subprocess.run(
        [sys.executable, "starter.py", "audit", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


async def test_a_payment_answer_edited_is_not_what_the_channel_signed(client, sessions, owner_sessions, paid):
    """The channel signs its answers with a key of its own: a confirmation's bank reference edited in the row,
    or the answer's key registered for the officers instead, is named."""
    [confirmed, *_] = [r for r in await rows_of(sessions, paid.code) if r["step"] == "payment_confirmed"]
    async with tampered(
        owner_sessions, f"UPDATE audit_log SET evidence = '[\"SIM-GIA\"]' WHERE id = {confirmed['id']}"
    ) as bound:
        report = await verify_live(client, sessions, [paid.code], bound)
    [bad] = of_kinds(report, *SIGNATURE_KINDS)
    assert bad.kind == "signature_invalid" and "bank reference the channel signed" in bad.detail
    key_id = confirmed["assertion"]["key_id"]
    sql = f"UPDATE signing_keys SET holder = 'officers' WHERE key_id = '{key_id}'"
    async with tampered(owner_sessions, sql, disable=()) as bound:
        report = await verify_live(client, sessions, [paid.code], bound)
    bad = of_kinds(report, *SIGNATURE_KINDS)
    channel_rows = [r for r in await rows_of(sessions, paid.code) if r["step"].startswith("payment_")]
    assert {d.kind for d in bad} == {"signature_key_not_valid"} and len(bad) == len(channel_rows)
    assert all("is a key of officers, not of channel" in d.detail for d in bad)


def test_steps_before_signing_began_need_no_signature_but_none_after():
    """A household whose first steps predate signed actions: those rows carry nothing and are fine; from its
    first signed row on, a row without a signature is named."""
    code = "LS270-00001"
    keys = signing.TrustedKeys.of(
        [signing.PublicKey(FRONT_DOOR.active, "officers", FRONT_DOOR.public(), datetime(2020, 1, 1, tzinfo=UTC))]
    )
    at = datetime(2026, 6, 1, 3, tzinfo=UTC)
    signed_input = {"actor": {"user_id": "u.allocate"}, "evidence": ["QD"], "reason": None, "source": None}
    a = FRONT_DOOR.sign(
        workflow_id=f"household-{code}",
        step="allocate",
        input_digest=digest_of(signed_input),
        user_id="u.allocate",
        now=at,
    )

    def row(seq: int, step: str, signed: bool) -> dict:
        return {
            "id": seq,
            "household_code": code,
            "seq": seq,
            "idempotency_key": f"household-{code}#{seq}",
            "step": step,
            "actor_user_id": "u.allocate" if signed else "u.old",
            "evidence": ["QD"],
            "reason": None,
            "occurred_at": at.isoformat(),
            "assertion": a.model_dump(mode="json") if signed else None,
            "signed_input": signed_input if signed else None,
        }

    rows = [row(1, "verify", False), row(2, "approve", False), row(3, "allocate", True), row(4, "settle", False)]
    report = VerifyReport()
    _check_signatures(report, rows, {}, keys, {code})
    found = [(d.kind, d.where) for d in report.discrepancies]
    assert found == [("signature_missing", "audit row id=4 (seq 4, settle)")]
    assert "signed from seq 3 on" in report.discrepancies[0].detail
    untouched = VerifyReport()
    _check_signatures(untouched, rows[:3], {}, keys, {code})
    assert untouched.discrepancies == []
