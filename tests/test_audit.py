"""Auditors' tools: export with a manifest, offline replay, the timeline from the history alone, and the
three-way verification — clean on an honest run, and naming each kind of tampering in each record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.client import WorkflowHistory

from auditor import archive, timeline
from auditor.history import LOCAL_ACTIVITY_MARKER, read_trail, read_trails
from auditor.records import fetch_histories, household_workflow_ids, read_records
from auditor.replay import replay
from auditor.verify import verify
from core.converter import DATA_CONVERTER
from core.settings import ROOT
from db.audit import row_hash
from models.household import Step
from operations import sample
from tests.conftest import (
    SEALED,
    TEST_KEYS_FILE,
    bank_process,
    drive_one,
    enroll,
    make_households,
    running_worker,
    take_step,
)


@pytest.fixture(scope="module")
async def run(client, sessions, settings, tmp_path_factory):
    """Three households through three paths: paid in full, a payment failed then paid, cancelled after
    allocation. Returns their households and codes."""
    paid, retried, cancelled = make_households(3, beneficiary_group="poor", support_type="new_build", programme="")
    # The bank process refuses the first attempt of `retried`'s instructions and pays everything else.
    with bank_process(tmp_path_factory.mktemp("bank"), delay=0.02, fail_match=(f"^{retried.code}-",)) as bank:
        return await _run(client, sessions, settings, bank, paid, retried, cancelled)


async def _run(client, sessions, settings, bank, paid, retried, cancelled):
    async with running_worker(client, sessions, settings, bank=bank) as tq:
        await enroll(client, sessions, tq, [paid, retried, cancelled])
        await drive_one(client, sessions, paid)
        await drive_one(client, sessions, retried)
        await drive_one(client, sessions, cancelled, payouts=False)
        await take_step(
            client,
            sessions,
            cancelled.code,
            Step.CANCEL,
            sample.district_user(cancelled.district),
            reason="hộ chuyển đi nơi khác",
        )
        for h in (paid, retried, cancelled):
            await client.get_workflow_handle(h.workflow_id).result()
    return {"households": (paid, retried, cancelled), "codes": [paid.code, retried.code, cancelled.code]}


async def trails_of(client, codes, converter=SEALED):
    return await read_trails(fetch_histories(client, household_workflow_ids(codes)), converter)


@asynccontextmanager
async def tampered(sessions, *statements: str, disable: tuple[str, ...] = ("audit_log", "ledger_transfers")):
    """Run raw statements with the append-only triggers off, inside a transaction that is rolled back; yields
    a session maker bound to that transaction, so the verifier reads the tampered records. `sessions` are the
    owner's (owner_sessions): the application's role may neither switch a trigger off nor edit these rows."""
    engine = sessions.kw["bind"]
    async with engine.connect() as conn:
        tx = await conn.begin()
        try:
            for table in disable:
                await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            for sql in statements:
                await conn.execute(text(sql))
            yield async_sessionmaker(bind=conn, expire_on_commit=False)
        finally:
            await tx.rollback()


async def verify_live(client, sessions, codes, bound=None):
    return verify(await trails_of(client, codes), await read_records(bound or sessions, codes))


async def test_a_clean_run_has_zero_discrepancies_and_every_step_is_accounted_for(client, sessions, run):
    report = await verify_live(client, sessions, run["codes"])
    assert report.discrepancies == []
    assert report.households == 3
    assert report.transitions == report.audit_rows > 30
    # Paid: 60 M reserved + 60 M posted; retried the same; cancelled: 60 M reserved, 60 M voided.
    assert report.amount_checked == 6 * 60_000_000


async def test_timeline_from_the_history_alone_in_both_languages(client, run):
    paid = run["households"][0]
    [trail] = await trails_of(client, [paid.code])
    vi = timeline.lines(trail, "vi")
    en = timeline.lines(trail, "en")
    steps = [t.record.step for t in trail.transitions]
    assert steps[:4] == ["verify", "post_list", "approve", "allocate"] and steps[-1] == "settle"
    allocate = next(line for line in vi if line.detail.get("step") == "allocate")
    assert allocate.who == "tc.hoang" and allocate.role == "cán bộ Sở Tài chính"
    assert allocate.money.startswith("giữ chỗ 60.000.000 đ") and "42.000.000 đ (đợt 1)" in allocate.money
    assert allocate.evidence == [f"QD-PHAN-BO/{paid.code}"]
    assert any(line.what.startswith("Funds allocated") and "60,000,000 VND" in line.money for line in en)
    assert any("Payment confirmed" in line.what and line.money.startswith("paid 42,000,000") for line in en)
    head = dict(timeline.header(trail, "en"))
    assert head["Head of household"] == paid.head_of_household and head["CCCD"] == paid.cccd
    data = timeline.as_json(trail)
    assert [t["seq"] for t in data["transitions"]] == list(range(1, len(steps) + 1))
    assert data["sealed_key_ids"] == ["test-2026a"] and data["opened_with_key"] is True


async def test_without_the_key_a_history_shows_ciphertext(client, sessions, run):
    paid = run["households"][0]
    history = await client.get_workflow_handle(paid.workflow_id).fetch_history()
    raw = history.to_json()
    start = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert start.metadata["encoding"] == b"binary/encrypted"
    assert start.metadata["encryption-key-id"] == b"test-2026a"
    for secret in (paid.head_of_household, paid.cccd):
        assert secret not in raw and secret.encode() not in start.data
    trail = await read_trail(history, DATA_CONVERTER)  # no codec: no key
    assert not trail.opened and str(trail.household) == "[encrypted, key test-2026a]"
    shown = json.dumps(timeline.as_json(trail), ensure_ascii=False) + str(timeline.lines(trail, "vi"))
    assert paid.head_of_household not in shown and paid.cccd not in shown
    # And verify refuses to vouch for what it cannot read.
    report = verify([trail], await read_records(sessions, [paid.code]))
    assert report.by_kind() == {"history_sealed": 1}


async def test_search_attributes_carry_no_personal_data(client, run):
    paid = run["households"][0]
    described = await client.get_workflow_handle(paid.workflow_id).describe()
    attrs = {k: v for k, v in described.search_attributes.items()}
    assert {"Stage", "District", "Commune", "BeneficiaryGroup", "SupportType"} <= set(attrs)
    flat = json.dumps(attrs, ensure_ascii=False, default=str)
    assert paid.head_of_household not in flat and paid.cccd not in flat


async def test_export_then_offline_replay_and_verify(client, sessions, run, tmp_path, settings):
    result = await archive.export(client, sessions, tmp_path / "x", namespace="default", codes=run["codes"])
    assert (result.histories, result.households, result.key_ids) == (3, 3, ["test-2026a"])
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    # Per household a JSON and a binary history; audit log, ledger, policies and the public signing keys.
    assert manifest["audit_rows"] == result.audit_rows and len(manifest["files"]) == 3 + 3 + 4
    arch = archive.Archive.open(tmp_path / "x")
    assert arch.problems == []
    report = await replay(arch.histories(), SEALED)
    assert (report.replayed, report.failures) == (3, [])
    # What 'audit replay --from' reads: the binary copies, the same events as the JSON.
    binary = arch.history_files(binary=True)
    assert [p.suffix for _, p in binary] == [".binpb"] * 3
    copies = [archive.read_history(w, p) for w, p in binary]
    assert [c.events for c in copies] == [h.events for h in arch.histories()] and arch.problems == []
    report = await replay(copies, SEALED)
    assert (report.replayed, report.failures) == (3, [])
    sandboxed = await replay(arch.histories(), SEALED, sandbox=True)
    assert (sandboxed.replayed, sandboxed.failures) == (3, [])
    trails = [await read_trail(h, SEALED) for h in arch.histories()]
    assert verify(trails, arch.records()).discrepancies == []

    # One byte changed in a history file after export: the manifest names the file.
    path = tmp_path / "x" / "histories" / f"household-{run['codes'][0]}.json"
    path.write_text(path.read_text().replace('"eventId": "5"', '"eventId": "5" '))
    altered = archive.Archive.open(tmp_path / "x")
    assert altered.problems == [
        f"histories/{path.name}: content differs from the manifest's SHA-256 (edited after export)"
    ]
    assert verify([], arch.records(), archive_problems=altered.problems).by_kind()["archive_altered"] == 1
    (tmp_path / "x" / "SHA256SUMS").unlink()
    assert "SHA256SUMS: missing (it holds the manifest's own hash)" in archive.Archive.open(tmp_path / "x").problems


def reseal(directory: Path) -> None:
    """What a careful forger does after editing an export: recompute the manifest and SHA256SUMS."""
    manifest = json.loads((directory / "manifest.json").read_text())
    for rel, about in manifest["files"].items():
        about["sha256"] = archive.sha256((directory / rel).read_bytes())
    body = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    (directory / "manifest.json").write_bytes(body)
    sums = "".join(f"{f['sha256']}  {rel}\n" for rel, f in manifest["files"].items())
    (directory / "SHA256SUMS").write_text(sums + f"{archive.sha256(body)}  manifest.json\n")


async def test_a_forged_history_in_a_resealed_export_is_named(client, sessions, run, tmp_path):
    """History tampered with the key in hand and the manifest redone: the other two records name it."""
    paid = run["households"][0]
    await archive.export(client, sessions, tmp_path / "x", namespace="default", codes=[paid.code])
    path = tmp_path / "x" / "histories" / f"household-{paid.code}.json"
    history = WorkflowHistory.from_json(paid.workflow_id, path.read_text())
    # The first step's record, in the marker of the local activity that wrote it.
    ev = next(
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and "result" in e.marker_recorded_event_attributes.details
    )
    payloads = ev.marker_recorded_event_attributes.details["result"].payloads
    [outcome] = await SEALED.decode(list(payloads))
    record = outcome["record"]
    assert record["seq"] == 1
    outcome["record"] = record | {"actor": record["actor"] | {"user_id": "ke.gia.mao", "role": "citizen"}}
    [forged] = await SEALED.encode([outcome])
    payloads[0].CopyFrom(forged)
    path.write_text(history.to_json())
    path.with_suffix(".binpb").write_bytes(History(events=history.events).SerializeToString())  # both copies
    reseal(tmp_path / "x")

    arch = archive.Archive.open(tmp_path / "x")
    assert arch.problems == []  # the forger redid the hashes …
    report = verify([await read_trail(h, SEALED) for h in arch.histories()], arch.records())
    kinds = report.by_kind()
    assert kinds == {"record_differs": 1, "role_not_allowed": 1}, report.discrepancies  # … the records disagree
    differs = next(d for d in report.discrepancies if d.kind == "record_differs")
    assert "actor_user_id: history 'ke.gia.mao'" in differs.detail and "actor_role: history 'citizen'" in differs.detail
    assert "seq 1 (verify" in next(d.where for d in report.discrepancies if d.kind == "role_not_allowed")


async def test_a_binary_copy_that_differs_from_its_json_is_named(client, sessions, run, tmp_path):
    """Replay reads the binary copies; a copy changed and resealed is named by 'audit verify --from', which
    reads the JSON and compares each copy with it."""
    paid = run["households"][0]
    await archive.export(client, sessions, tmp_path / "x", namespace="default", codes=[paid.code])
    binary = tmp_path / "x" / "histories" / f"household-{paid.code}.binpb"
    history = History.FromString(binary.read_bytes())
    history.events[4].event_time.seconds += 3600  # one event an hour later, in the binary copy only
    binary.write_bytes(history.SerializeToString())
    reseal(tmp_path / "x")

    arch = archive.Archive.open(tmp_path / "x")
    assert arch.problems == []  # the hashes were redone …
    trails = [await read_trail(h, SEALED) for h in arch.histories()]
    assert arch.problems == [
        f"histories/{binary.name}: not the same history as histories/household-{paid.code}"
        f".json (event {history.events[4].event_id} differs)"
    ]
    report = verify(trails, arch.records(), archive_problems=arch.problems)
    assert report.by_kind() == {"archive_altered": 1}
    arch.compare_copies()  # what verify does after reading: each copy is compared once
    assert len(arch.problems) == 1
    again = archive.Archive.open(tmp_path / "x")  # for the histories it does not read
    again.compare_copies()
    assert again.problems == arch.problems


async def test_an_export_without_binary_copies_is_still_read(client, sessions, run, tmp_path):
    """Format 1 (before the binary copies): replay falls back to the JSON."""
    paid = run["households"][0]
    await archive.export(client, sessions, tmp_path / "x", namespace="default", codes=[paid.code])
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    for rel in [r for r in manifest["files"] if r.endswith(".binpb")]:
        (tmp_path / "x" / rel).unlink()
        del manifest["files"][rel]
    manifest["format"] = "housing-audit-archive/1"
    (tmp_path / "x" / "manifest.json").write_text(json.dumps(manifest))
    reseal(tmp_path / "x")

    arch = archive.Archive.open(tmp_path / "x")
    assert arch.problems == []
    [(workflow_id, path)] = arch.history_files(binary=True)
    assert (workflow_id, path.suffix) == (paid.workflow_id, ".json")
    report = await replay([archive.read_history(workflow_id, path)], SEALED)
    assert (report.replayed, report.failures) == (1, [])


async def test_a_deleted_audit_row_is_a_step_without_audit_and_a_chain_gap(client, sessions, owner_sessions, run):
    code = run["codes"][0]
    async with tampered(owner_sessions, f"DELETE FROM audit_log WHERE household_code = '{code}' AND seq = 3") as bound:
        report = await verify_live(client, sessions, run["codes"], bound)
    assert report.by_kind() == {"history_without_audit": 1, "chain_broken": 1}
    assert {d.household for d in report.discrepancies} == {code}
    assert "expected seq 3, found 4" in next(d.detail for d in report.discrepancies if d.kind == "chain_broken")


async def test_an_edited_audit_row_breaks_its_hash_and_disagrees_with_the_history(
    client, sessions, owner_sessions, run
):
    code = run["codes"][1]
    async with tampered(
        owner_sessions, f"UPDATE audit_log SET reason = 'sửa sau' WHERE household_code = '{code}' AND seq = 2"
    ) as bound:
        report = await verify_live(client, sessions, run["codes"], bound)
    # The officer signed no such reason either (tests/test_audit_signatures.py checks signatures in depth).
    assert report.by_kind() == {"record_differs": 1, "chain_broken": 1, "signature_invalid": 1}
    assert "reason: history None, audit 'sửa sau'" in report.discrepancies[0].detail
    assert "content does not match its hash" in report.discrepancies[1].detail


async def test_a_rewritten_and_rechained_audit_log_is_caught_by_the_hashes_in_the_history(
    client, sessions, owner_sessions, run
):
    """The forger edits the allocation's amount and recomputes every hash after it: the chain is whole again,
    but the history still holds the hashes the engine was handed back, and the ledger the real amount."""
    code = run["codes"][0]
    async with sessions() as s:
        found = await s.execute(text("SELECT * FROM audit_log WHERE household_code = :c ORDER BY seq"), {"c": code})
        rows = [dict(r) for r in found.mappings()]
    statements, prev = [], rows[0]["prev_hash"]
    for row in rows:
        if row["step"] == "allocate":
            row["amount"] = 70_000_000
        row["prev_hash"], row["hash"] = prev, row_hash(prev, row)
        prev = row["hash"]
        statements.append(
            f"UPDATE audit_log SET amount = {row['amount'] or 'NULL'}, prev_hash = '{row['prev_hash']}', "
            f"hash = '{row['hash']}' WHERE id = {row['id']}"
        )
    async with tampered(owner_sessions, *statements) as bound:
        report = await verify_live(client, sessions, run["codes"], bound)
    kinds = report.by_kind()
    assert "chain_broken" not in kinds  # the chain alone would not see it
    assert kinds["audit_hash_differs"] == len(rows) - 3  # every row from the allocation (seq 4) on
    assert kinds["amount_differs"] == 1
    assert "audit amount 70000000, history 60000000 (allocate)" in next(
        d.detail for d in report.discrepancies if d.kind == "amount_differs"
    )


async def test_a_forged_audit_row_chained_correctly_has_no_step_in_the_history(client, sessions, owner_sessions, run):
    code = run["codes"][2]
    async with sessions() as s:
        last = (
            (
                await s.execute(
                    text("SELECT * FROM audit_log WHERE household_code = :c ORDER BY seq DESC LIMIT 1"), {"c": code}
                )
            )
            .mappings()
            .one()
        )
    forged = dict(last) | {
        "seq": last["seq"] + 1,
        "idempotency_key": f"household-{code}#{last['seq'] + 1}",
        "step": "settle",
        "reason": None,
        "evidence": ["QT-GIA"],
        "amount": None,
        "transfer_id": None,
        "assertion": None,
        "signed_input": None,
    }
    forged["hash"] = row_hash(last["hash"], forged)
    sql = (
        "INSERT INTO audit_log (household_code, seq, idempotency_key, step, from_stage, to_stage, actor_user_id, "
        "actor_role, actor_agency, evidence, reason, amount, transfer_id, occurred_at, prev_hash, hash) VALUES "
        f"('{code}', {forged['seq']}, '{forged['idempotency_key']}', 'settle', '{last['from_stage']}', "
        f"'{last['to_stage']}', '{last['actor_user_id']}', '{last['actor_role']}', '{last['actor_agency']}', "
        f"'[\"QT-GIA\"]', NULL, NULL, NULL, '{last['occurred_at'].isoformat()}', '{last['hash']}', "
        f"'{forged['hash']}')"
    )
    async with tampered(owner_sessions, sql) as bound:
        report = await verify_live(client, sessions, run["codes"], bound)
    # The chain is whole: only the history can tell, and the missing signature (the forger holds no front
    # door's private key; tests/test_audit_signatures.py forges one with a key of their own).
    assert report.by_kind() == {"audit_without_history": 1, "signature_missing": 1}
    assert f"household-{code}#{forged['seq']}" in next(
        d.detail for d in report.discrepancies if d.kind == "audit_without_history"
    )


async def test_a_forged_ledger_transfer_and_an_edited_amount_are_named(client, sessions, owner_sessions, run):
    code = run["codes"][0]
    async with sessions() as s:
        post_id = await s.scalar(
            text(
                "SELECT id FROM ledger_transfers WHERE household_code = :c "
                "AND kind = 'post_pending' ORDER BY id LIMIT 1"
            ),
            {"c": code},
        )
    forge = (
        "INSERT INTO ledger_transfers (idempotency_key, kind, debit_account_id, credit_account_id, amount, "
        "pending_id, household_code, memo, code, tranche) SELECT 'household-' || household_code || '#99:post', "
        f"'posted', debit_account_id, credit_account_id, amount, NULL, household_code, 'forged', code, tranche "
        f"FROM ledger_transfers WHERE id = {post_id}"
    )
    async with tampered(owner_sessions, forge) as bound:
        report = await verify_live(client, sessions, run["codes"], bound)
    assert report.by_kind() == {"ledger_without_history": 1}
    assert f"household-{code}#99:post" in report.discrepancies[0].detail

    edit = f"UPDATE ledger_transfers SET amount = amount - 1 WHERE id = {post_id}"
    async with tampered(owner_sessions, edit) as bound:
        report = await verify_live(client, sessions, run["codes"], bound)
    assert report.by_kind() == {"amount_differs": 1}
    assert "ledger moved 41,999,999 đ" in report.discrepancies[0].detail


async def test_a_role_the_policy_of_the_day_did_not_allow_is_named(client, sessions, owner_sessions, run):
    """Rewriting the policy table after the fact (only district officers verify): every commune verification
    is now a step by a role the policy did not allow, and the history's copy of the policy disagrees."""
    [version] = {t.policy_version for trail in await trails_of(client, run["codes"]) for t in trail.transitions}
    sql = (
        "UPDATE workflow_policies SET document = jsonb_set(document, '{steps,verify,roles}', "
        f"'[\"district_officer\"]') WHERE version = '{version}'"
    )
    async with tampered(owner_sessions, sql, disable=()) as bound:
        report = await verify_live(client, sessions, run["codes"], bound)
    kinds = report.by_kind()
    assert kinds == {"role_not_allowed": 3, "policy_unknown": 3}
    assert all(
        "took 'verify' as 'commune_officer'" in d.detail and "allows district_officer" in d.detail
        for d in report.discrepancies
        if d.kind == "role_not_allowed"
    )


async def test_replay_names_a_history_the_code_does_not_reproduce(client, run):
    paid = run["households"][0]
    history = await client.get_workflow_handle(paid.workflow_id).fetch_history()
    # The first step's local activity, renamed in its marker: the code would run another activity there.
    ev = next(
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER
    )
    [data] = ev.marker_recorded_event_attributes.details["data"].payloads
    marker = json.loads(data.data)
    name = marker["activity_type"]
    data.data = json.dumps(marker | {"activity_type": f"{name}_v0"}).encode()
    report = await replay([history], SEALED)
    assert report.replayed == 1 and len(report.failures) == 1
    failure = report.failures[0]
    assert failure.workflow_id == paid.workflow_id and name in failure.reason


def test_the_audit_commands_end_to_end(client, settings, run, tmp_path):
    """The command line an auditor runs: export, then replay, verify and timeline from the export alone."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "PAYLOAD_KEYS_FILE": str(TEST_KEYS_FILE),
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("PAYLOAD_KEYS", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "starter.py", "audit", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    codes = [a for c in run["codes"] for a in ("--code", c)]
    done = cli("export", str(tmp_path / "x"))
    assert done.returncode == 0, done.stderr
    assert "histories" in done.stdout and "test-2026a" in done.stdout
    replayed = cli("replay", "--from", str(tmp_path / "x"), *codes)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replayed 3 histories" in replayed.stdout and "0 not reproduced" in replayed.stdout
    verified = cli("verify", "--from", str(tmp_path / "x"), *codes, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["discrepancies"] == []
    shown = cli("timeline", run["codes"][0], "--lang", "en", "--from", str(tmp_path / "x"))
    assert shown.returncode == 0 and "Funds allocated" in shown.stdout and "tc.hoang" in shown.stdout
    sealed = cli("timeline", run["codes"][0], "--from", str(tmp_path / "x"), "--no-key", "--json")
    assert "[encrypted, key test-2026a]" in sealed.stdout
    assert run["households"][0].head_of_household not in sealed.stdout
