"""The 1 July 2025 reform applied to households in flight, in a database of the module's own: the gazetteer
refused whole when it is wrong, a household moved mid-construction and finished by the new commune's officers
(and refused to the old district's), a re-run that moves nothing twice, a forged move refused, the district's
money handed over by a balanced transfer, and the reports under the old and the new map agreeing to the đồng.

The tests run in order on one database: the district officers act first (before the gazetteer says their
district has ended), then the reform is loaded and applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.errors import Refusal
from db import gazetteer as gazetteer_db
from db import households, ledger, users
from db.schema import audit_log
from models.gazetteer import Gazetteer
from models.household import Stage, Step
from models.reorganisation import MoveInput, ReorganiseInput, reorganisation_workflow_id
from operations import reform, sample
from operations.actions import household_state
from operations.reconciliation import reconcile
from operations.seed import seed_demo
from tests.conftest import drive_one, enroll, front_door, make_households, running_worker, take_step

BASIS = sample.REFORM_2025
TWO_TIER = reform.TWO_TIER_VERSION


def lang_son() -> dict:
    return sample.gazetteer()


def test_the_gazetteer_file_is_the_generators():
    """data/gazetteer/lang-son-2025.json is what `operations.sample.gazetteer()` writes
    (`python -m operations.sample`)."""
    path = Path(__file__).parents[1] / "data" / "gazetteer" / "lang-son-2025.json"
    assert json.loads(path.read_text(encoding="utf-8")) == lang_son()


# ------------------------------------------------------------------------------------------- pure: the file


def test_the_sample_gazetteer_has_65_units_after_the_reform_and_a_successor_for_every_old_one():
    g = Gazetteer.model_validate(lang_son())
    assert g.problems() == []
    new = [u for u in g.units if u.valid_from is not None]
    assert len(new) == 65 and sorted(u.name for u in new if u.level == "ward") == sorted(sample.WARDS)
    assert g.successor(BASIS, "Lộc Bình", "Tú Mịch", "X")[1].name == "Mẫu Sơn"
    assert g.successor(BASIS, "Lộc Bình", "Khánh Xuân", "X")[1].name == "Lộc Bình"
    assert g.successor(sample.REFORM_2024, "Văn Quan", "Tràng Các", "X")[1].name == "Khánh Khê"
    # Followed through both reorganisations: to Khánh Khê of the two-tier map.
    assert g.last_successor("Văn Quan", "Tràng Các", "X").code == sample.unit_code("X", "Khánh Khê")
    assert g.last_successor("Lộc Bình", "Tú Mịch", "X").name == "Mẫu Sơn"
    for district, communes in sample.UNITS.items():  # every commune the sample lists exists on 24/01/2025
        for c in communes:
            assert g.successor(BASIS, district, c, "X") is not None, (district, c)


def test_a_succession_to_an_unknown_unit_or_a_unit_left_without_successor_is_refused_whole():
    doc = lang_son()
    doc["reorganisations"][1]["successions"][-1]["to_unit"] = "LS-X-NOWHERE"
    found = Gazetteer.model_validate(doc).problems()
    assert any(p.startswith("UnknownUnit") and "LS-X-NOWHERE" in p for p in found)
    doc = lang_son()
    dropped = doc["reorganisations"][1]["successions"].pop()
    found = Gazetteer.model_validate(doc).problems()
    assert found == [
        f"UnitWithoutSuccessor: unit {dropped['from_unit']} (Hữu Liên) ends on 2025-07-01 under {BASIS} "
        "without a successor"
    ]
    with pytest.raises(Refusal) as err:
        Gazetteer.model_validate(doc).check()
    assert err.value.rule == "InvalidGazetteer"


def test_a_split_unit_must_say_which_households_go_where():
    doc = lang_son()
    succ = doc["reorganisations"][1]["successions"]
    tu_mich = next(s for s in succ if s["from_unit"] == sample.unit_code("Lộc Bình", "Tú Mịch"))
    succ.append(dict(from_unit=tu_mich["from_unit"], to_unit=sample.unit_code("X", "Lộc Bình")))
    assert any(p.startswith("SplitUnassigned") for p in Gazetteer.model_validate(doc).problems())
    succ[-1]["households"] = ["LS-1"]
    g = Gazetteer.model_validate(doc)
    assert g.problems() == []
    assert g.successor(BASIS, "Lộc Bình", "Tú Mịch", "LS-1")[1].name == "Lộc Bình"
    assert g.successor(BASIS, "Lộc Bình", "Tú Mịch", "LS-2")[1].name == "Mẫu Sơn"


# ------------------------------------------------------------------------------------------ in the database


@pytest.fixture(scope="module")
async def db(scratch):
    await seed_demo(scratch)
    async with scratch() as s, s.begin():
        await ledger.receive(s, key="reform:topup", source="NS-TINH", amount=50_000_000_000, memo="tests")
        await users.upsert(s, sample.new_commune_users())
    return scratch


@pytest.fixture(scope="module")
async def reformed(client, db, scratch_owner, scratch_settings, tmp_path_factory):
    """The story up to the reform, told once for the module (its tests run in any order): two households of Tú
    Mịch (Lộc Bình) imported; before the reform the old commune verifies one, the district approves it, Finance
    allocates, the commune reports its foundation; the district cancels the other (it keeps its old units). Then
    the gazetteer is loaded, the two-tier policy published and the reorganisation applied, twice."""
    async with running_worker(client, db, scratch_settings) as tq:
        moving, cancelled = make_households(2, district="Lộc Bình", commune="Tú Mịch", support_type="new_build")
        (half,) = make_households(1, district="Lộc Bình", commune="Khuất Xá")
        await enroll(client, db, tq, [moving, cancelled, half])
        await drive_one(client, db, moving, payouts=False)
        await take_step(
            client, db, cancelled.code, Step.CANCEL, sample.district_user("Lộc Bình"), reason="không đủ điều kiện"
        )
        path = tmp_path_factory.mktemp("gazetteer") / "lang-son.json"
        path.write_text(json.dumps(lang_son(), ensure_ascii=False), encoding="utf-8")
        loaded = await reform.load_gazetteer(scratch_owner, path, sample.ADMIN_USER)
        loaded_again = await reform.load_gazetteer(scratch_owner, path, sample.ADMIN_USER)
        policy = await reform.publish_two_tier(scratch_owner, TWO_TIER, sample.ADMIN_USER)
        signer = await front_door(client)
        await _recorded_but_not_applied(client, db, signer, half)
        first = await reform.apply_reorganisation(
            client, db, tq, signer, sample.ADMIN_USER, basis=BASIS, policy_version=TWO_TIER
        )
        again = await reform.apply_reorganisation(
            client, db, tq, signer, sample.ADMIN_USER, basis=BASIS, policy_version=TWO_TIER
        )
        yield dict(
            tq=tq,
            half=half,
            moving=moving,
            cancelled=cancelled,
            loaded=(loaded, loaded_again),
            policy=policy,
            runs=(first, again),
        )


async def _recorded_but_not_applied(client, db, signer, h) -> None:
    """A crash between a move's record and its workflow: the recording transaction commits the move (as the
    recording activity would), and the workflow never hears of it."""
    from datetime import UTC, datetime

    from activities.household import HouseholdActivities
    from core.signing import BATCH_TTL, sign_input
    from models.assertion import signed_input
    from models.records import MoneyOp, TransitionRecord
    from models.reorganisation import move_reason

    async with db() as s:
        admin = await users.require_actor(s, sample.ADMIN_USER)
    batch_id = reform.reorganisation_batch_id(BASIS, TWO_TIER)
    batch = ReorganiseInput(batch_id=batch_id, basis=BASIS, policy_version=TWO_TIER, actor=admin, evidence=[BASIS])
    batch = sign_input(
        signer,
        batch,
        workflow_id=reorganisation_workflow_id(batch_id),
        step="reorganise",
        user_id=admin.user_id,
        ttl=BATCH_TTL,
    )
    state = await household_state(client, h.code)
    rec = TransitionRecord(
        idempotency_key=f"{h.workflow_id}#1",
        workflow_id=h.workflow_id,
        household_code=h.code,
        seq=1,
        step=Step.MOVE,
        from_stage=Stage.VERIFICATION,
        to_stage=Stage.VERIFICATION,
        at=datetime.now(UTC),
        actor=admin,
        evidence=[BASIS],
        reason=move_reason(h.district, h.commune, "Khuất Xá", BASIS),
        money=MoneyOp.NONE,
        support_type=h.support_type,
        beneficiary_group=h.beneficiary_group,
        assertion=batch.assertion,
        signed_input=signed_input(batch),
        policy_version=state.policy_version,
        batch_id=batch_id,
        moved_to="Khuất Xá",
        moved_policy=TWO_TIER,
    )
    async with db() as s, s.begin():
        await HouseholdActivities(db)._record(s, rec)


async def test_a_move_recorded_but_not_applied_by_its_workflow_is_mended_by_the_reorganisation(client, db, reformed):
    """The reorganisation asks again a household the register shows moved: its workflow, still at its old unit,
    takes the move, and the recording activity hands back what the first attempt recorded (nothing twice)."""
    half = reformed["half"]
    state = await household_state(client, half.code)
    assert state.policy_version == TWO_TIER
    assert [t.step for t in state.timeline] == [Step.MOVE]
    async with db() as s:
        row = await households.get(s, half.code)
        moves = await s.scalar(
            select(func.count()).select_from(audit_log).where(audit_log.c.household_code == half.code)
        )
    assert (row.district, row.commune, row.moved_under, moves) == (None, "Khuất Xá", BASIS, 1)
    # The history names the signature the audit row keeps (the first, crashed attempt's), not the mending batch's:
    # the three-way check finds them the same.
    from auditor.history import read_trail
    from db.audit import rows as audit_rows
    from tests.conftest import SEALED

    trail = await read_trail(await client.get_workflow_handle(half.workflow_id).fetch_history(), SEALED)
    (move,) = [t for t in trail.transitions if t.record.step is Step.MOVE]
    async with db() as s:
        (recorded,) = [r for r in await audit_rows(s, [half.code]) if r["step"] == "move"]
    assert move.outcome.record.assertion.nonce == recorded["assertion"]["nonce"]
    await take_step(client, db, half.code, Step.VERIFY, sample.new_commune_user("Khuất Xá"), evidence=["BB-BX"])


async def test_a_wrong_gazetteer_is_refused_and_nothing_is_stored(db, scratch_owner, tmp_path):
    doc = lang_son() | {"version": "lang-son-wrong"}
    doc["reorganisations"][1]["successions"].pop()
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(Refusal) as err:
        await reform.load_gazetteer(scratch_owner, path, sample.ADMIN_USER)
    assert err.value.rule == "InvalidGazetteer" and "UnitWithoutSuccessor" in err.value.message
    async with db() as s:
        assert await gazetteer_db.version_digest(s, "lang-son-wrong") is None


async def test_the_reform_moves_households_in_flight_once_and_the_new_commune_finishes_them(client, db, reformed):
    moving, cancelled = reformed["moving"], reformed["cancelled"]
    loaded, loaded_again = reformed["loaded"]
    assert loaded.new and loaded.reorganisations == [sample.REFORM_2024, BASIS] and not loaded_again.new
    policy = reformed["policy"]
    for step in (Step.APPROVE, Step.ACCEPT, Step.CANCEL):  # the district's steps: the commune's or the province's
        assert "district_officer" not in policy.rule(step).roles and "commune_officer" in policy.rule(step).roles
        assert "huyện" not in policy.rule(step).responsible_agency  # reminders go to the commune
    first, again = reformed["runs"]
    assert (first.progress.done, first.progress.failed) == (2, 0), first.failed  # `moving`, and `half` mended
    # A re-run moves nothing twice: the household moved is asked again (a crash may have come between its record
    # and its workflow) and refuses, as moved already.
    assert (again.progress.done, again.progress.skipped, again.progress.failed) == (0, 2, 0), again
    async with db() as s:
        row = await households.get(s, moving.code)
        kept = await households.get(s, cancelled.code)
        moves = await s.scalar(
            select(func.count())
            .select_from(audit_log)
            .where(audit_log.c.step == "move", audit_log.c.household_code == moving.code)
        )
    assert moves == 1
    assert (row.stage, row.district, row.commune, row.moved_under, row.old_district, row.old_commune) == (
        Stage.CONSTRUCTION.value,
        None,
        "Mẫu Sơn",
        BASIS,
        "Lộc Bình",
        "Tú Mịch",
    )
    assert (kept.district, kept.commune, kept.moved_under) == ("Lộc Bình", "Tú Mịch", None)
    state = await household_state(client, moving.code)
    assert state.policy_version == TWO_TIER
    assert state.timeline[-1].step is Step.MOVE
    assert state.timeline[-1].reason == f"moved from Lộc Bình / Tú Mịch to Mẫu Sơn under {BASIS}"

    # After the date: the old district's and the old commune's officers are refused, naming the rule; the new
    # commune's officers finish the file.
    await take_step(client, db, moving.code, Step.COMPLETE_CONSTRUCTION, "x.mauson", evidence=["BC-HT"])
    for old, unit in (
        (sample.district_user("Lộc Bình"), "Lộc Bình"),
        (sample.commune_user("Lộc Bình", "Tú Mịch"), "Tú Mịch"),
    ):
        with pytest.raises(Refusal) as err:
            await take_step(client, db, moving.code, Step.ACCEPT, old, evidence=["BB-NT", "BB-SD"])
        assert err.value.rule == "UnitAbolished" and unit in err.value.message
    done = await take_step(client, db, moving.code, Step.ACCEPT, "ct.mauson", evidence=["BB-NT", "BB-SD"])
    assert done.to_stage is Stage.SETTLEMENT


async def test_a_move_the_gazetteer_does_not_make_is_refused_by_the_engine(client, db, reformed):
    """An update sent with a signed reorganisation but another destination than the succession's: the recording
    activity, reading the gazetteer in PostgreSQL, refuses it; the household stays where it is."""
    tq = reformed["tq"]
    (h,) = make_households(1, district="", commune="Khuất Xá")  # imported on the two-tier map, after the reform
    await enroll(client, db, tq, [h])
    async with db() as s:
        admin = await users.require_actor(s, sample.ADMIN_USER)
    batch = ReorganiseInput(batch_id="forged-1", basis=BASIS, policy_version=TWO_TIER, actor=admin, evidence=[BASIS])
    from core.signing import BATCH_TTL, sign_input

    signer = await front_door(client)
    batch = sign_input(
        signer,
        batch,
        workflow_id=reorganisation_workflow_id(batch.batch_id),
        step="reorganise",
        user_id=admin.user_id,
        ttl=BATCH_TTL,
    )
    move = MoveInput(
        actor=admin,
        basis=BASIS,
        from_district=None,
        from_commune="Khuất Xá",
        to_commune="Mẫu Sơn",
        policy_version=TWO_TIER,
        batch=batch,
    )
    from temporalio.client import WorkflowUpdateFailedError

    with pytest.raises(WorkflowUpdateFailedError) as err:
        await client.get_workflow_handle(h.workflow_id).execute_update("move", move)
    assert err.value.cause.type == "NotTheSuccessor"
    async with db() as s:
        row = await households.get(s, h.code)
    assert (row.district, row.commune, row.moved_under) == (None, "Khuất Xá", None)


async def test_a_list_naming_a_unit_that_no_longer_exists_is_refused_with_its_successor(db, reformed):
    from operations.csv_list import to_csv
    from operations.imports import ImportRejected, register

    old, new = make_households(2, district="Lộc Bình", commune="Tú Mịch")
    new = new.model_copy(update={"district": None, "commune": "Mẫu Sơn"})
    with pytest.raises(ImportRejected) as err:
        await register(db, to_csv([new, old]), "after-the-reform.csv", sample.PROVINCE_USER)
    (problem,) = err.value.problems
    assert (problem.line, problem.field) == (3, "commune")
    assert problem.message == f"Lộc Bình / Tú Mịch ceased to exist on 01/07/2025 under {BASIS}: it is Mẫu Sơn now"


async def test_district_money_is_handed_over_and_both_maps_report_the_same_totals(db, reformed, tmp_path):
    async with db() as s:
        before = {b.code: b for b in await ledger.source_balances(s)}
    made = await reform.hand_over(db, sample.FINANCE_USERS[1], basis=BASIS)
    (adv,) = made
    assert (adv.source, adv.to_source, adv.new) == ("ADV-LOCBINH", "NS-TINH", True)
    assert adv.handed_over == before["ADV-LOCBINH"].free > 0
    assert [h.new for h in await reform.hand_over(db, sample.FINANCE_USERS[1], basis=BASIS)] == [False]
    async with db() as s:
        after = {b.code: b for b in await ledger.source_balances(s)}
        assert await ledger.check_invariants(s) == []
        r = await reconcile(s)
    assert after["ADV-LOCBINH"].free == 0
    assert after["NS-TINH"].free == before["NS-TINH"].free + adv.handed_over
    assert r.problems == []
    old, new = r.totals(r.districts), r.totals(r.communes)
    for figure in ("households", "entitlement", "reserved", "released", "paid", "cancelled"):
        assert old[figure] == new[figure], figure
    communes = {c.key for c in r.communes}
    assert "Mẫu Sơn" in communes and "Tú Mịch" not in communes  # the cancelled file reads under its successor
    xlsx = reform.write_handover_xlsx(made, tmp_path / "ban-giao.xlsx", BASIS)
    from openpyxl import load_workbook

    ws = load_workbook(xlsx).active
    assert ws.cell(3, 1).value == "ADV-LOCBINH" and ws.cell(3, 9).value == adv.handed_over


async def test_the_moved_households_history_and_the_reorganisations_replay(client, reformed):
    """Both histories replay against the code as it is (the move is deterministic). With CAPTURE_HISTORIES set,
    the household's is written to tests/histories/, where tests/test_replay.py replays it on every run."""
    import os

    from temporalio.worker import Replayer

    from core.codec import for_reading
    from tests.conftest import SEALED
    from workflows.batch import PayoutBatchWorkflow
    from workflows.household import HouseholdWorkflow
    from workflows.reorganisation import ReorganisationWorkflow
    from workflows.runner import workflow_runner

    moving = reformed["moving"]
    household = await client.get_workflow_handle(moving.workflow_id).fetch_history()
    batch_id = reform.reorganisation_batch_id(BASIS, TWO_TIER)
    batch = await client.get_workflow_handle(reorganisation_workflow_id(batch_id)).fetch_history()
    replayer = Replayer(
        workflows=[HouseholdWorkflow, PayoutBatchWorkflow, ReorganisationWorkflow],
        data_converter=for_reading(SEALED),
        workflow_runner=workflow_runner(SEALED),
    )
    for history in (household, batch):
        assert (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure is None
    if os.environ.get("CAPTURE_HISTORIES"):
        out = Path(__file__).parent / "histories" / "reform_moved_mid_construction.json"
        out.write_text(household.to_json(), encoding="utf-8")


def test_a_commune_of_the_new_map_is_not_the_old_commune_of_the_same_name():
    """Lộc Bình is a town of the old district Lộc Bình and a commune of the two-tier map: the new commune's officer
    covers the households moved there, not those still under the old district (nor the other way round)."""
    from models.actor import Jurisdiction

    (old,) = make_households(1, district="Lộc Bình", commune="Lộc Bình")
    moved = old.model_copy(update={"district": None})
    new_commune = Jurisdiction(province=sample.PROVINCE, commune="Lộc Bình")
    old_commune = Jurisdiction(province=sample.PROVINCE, district="Lộc Bình", commune="Lộc Bình")
    province = Jurisdiction(province=sample.PROVINCE)
    assert (new_commune.covers(moved), new_commune.covers(old)) == (True, False)
    assert (old_commune.covers(moved), old_commune.covers(old)) == (False, True)
    assert province.covers(moved) and province.covers(old)


async def test_the_api_starts_a_reorganisation_for_an_administrator_only(client, db, scratch_settings, reformed):
    import httpx

    from tests.conftest import token_for
    from web.app import create_app

    settings = scratch_settings.model_copy(update={"temporal_task_queue": reformed["tq"]})
    app = create_app(settings, sessions=db, client=client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as http:

        async def post(user: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {await token_for(db, user)}"}
            return await http.post("/api/reform/apply", json={"basis": BASIS}, headers=headers)

        refused = await post(sample.chair_user("Mẫu Sơn"))
        assert (refused.status_code, refused.json()["type"]) == (403, "RoleNotAllowed")
        started = await post(sample.ADMIN_USER)
        assert started.status_code == 202, started.text
        batch_id = started.json()["batch_id"]
        headers = {"Authorization": f"Bearer {await token_for(db, sample.ADMIN_USER)}"}
        from models.reorganisation import ReorganiseResult

        handle = client.get_workflow_handle(started.json()["workflow_id"], result_type=ReorganiseResult)
        result = await handle.result()
        assert result.progress.done == 0  # everything in flight was moved already
        progress = await http.get(f"/api/reform/{batch_id}", headers=headers)
        assert progress.status_code == 200 and progress.json()["total"] == result.progress.total
