"""Finance on the real engine: allocation across sources under concurrency, tranches, separation of duties
for money, batches, supplementary decisions, cấp bù, VBSP loans and the reconciliation."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import date

import asyncpg
import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, ProgrammingError
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.batches import BatchActivities
from core.errors import Refusal
from db import finance as finance_db
from db import ledger
from db import users as users_db
from db.schema import (
    audit_log,
    household_loans,
    household_tranches,
    households,
    ledger_transfers,
    outbox,
    payout_batch_runs,
)
from models.allocation import AllocationPolicy, Tier
from models.finance import (
    BatchAction,
    BatchSelection,
    PayoutBatchInput,
    ReleasePayoutInput,
    SelectPayoutsInput,
    TranchePlan,
    TrancheSpec,
    TrancheStatus,
)
from models.household import BeneficiaryGroup, Stage, Step, SupportType
from operations import finance_ops, payouts, reconciliation, sample
from operations.actions import household_state
from operations.payouts import run_batch
from operations.seed import seed_demo
from tests.conftest import (
    FRONT_DOOR,
    SEALED,
    drive_one,
    enroll,
    make_households,
    running_worker,
    take_step,
    tranche_is,
    wait_until,
)
from workflows.household import HouseholdWorkflow

M = 1_000_000


def tag() -> str:
    return uuid.uuid4().hex[:6].upper()


async def own_programme(sessions, sources: list[tuple[str, int]], *, category="national_target_programme") -> str:
    """A programme of the test's own, covered only by its own sources (in this order): other tests' money
    never hides a shortage."""
    programme = f"P-{tag()}"
    async with sessions() as s, s.begin():
        for code, budget in sources:
            await ledger.create_source(
                s, code=code, name=code, category=category, is_state_budget=True, rules={"programmes": [programme]}
            )
            if budget:
                await ledger.receive(s, key=f"t:{code}", source=code, amount=budget, memo="test budget")
        await finance_db.put_allocation_policy(
            s,
            AllocationPolicy(
                version="t",
                programme=programme,
                tiers=[Tier(name=f"tier {i}", sources=[code]) for i, (code, _) in enumerate(sources)],
            ),
            date(2024, 1, 1),
        )
    return programme


async def to_allocation(client, sessions, h) -> None:
    await take_step(client, sessions, h.code, Step.VERIFY, sample.commune_user(h.district, h.commune), evidence=["B"])
    await take_step(client, sessions, h.code, Step.APPROVE, sample.district_user(h.district), evidence=["QĐ"])


async def free_of(sessions, code: str) -> int:
    async with sessions() as s:
        return {b.code: b.free for b in await ledger.source_balances(s)}[code]


# ------------------------------------------------------------------ allocation


async def test_many_allocations_at_once_never_overcommit_a_small_source(client, sessions, task_queue):
    code = f"RACE-{tag()}"
    programme = await own_programme(sessions, [(code, 150 * M)])
    items = await enroll(
        client, sessions, task_queue, make_households(8, support_type="new_build", programme=programme)
    )
    await asyncio.gather(*(to_allocation(client, sessions, h) for h in items))

    async def allocate(h):
        try:
            return await take_step(client, sessions, h.code, Step.ALLOCATE, "tc.hoang", evidence=["PB"])
        except Refusal as r:
            return r

    results = await asyncio.gather(*(allocate(h) for h in items))
    done = [r for r in results if not isinstance(r, Refusal)]
    refused = [r for r in results if isinstance(r, Refusal)]
    # 150 M holds two 60 M houses, not three: exactly two succeed, whatever the interleaving.
    assert len(done) == 2 and {r.rule for r in refused} == {"InsufficientFunds"}
    assert await free_of(sessions, code) == 30 * M
    async with sessions() as s:
        assert await ledger.check_invariants(s) == []
        refused_codes = {h.code for h, r in zip(items, results, strict=True) if isinstance(r, Refusal)}
        assert (
            await s.scalar(
                select(func.count())
                .select_from(ledger_transfers)
                .where(ledger_transfers.c.household_code.in_(refused_codes))
            )
            == 0
        )
    for h, r in zip(items, results, strict=True):
        state = await household_state(client, h.code)
        assert state.stage is (Stage.FUND_ALLOCATION if isinstance(r, Refusal) else Stage.CONSTRUCTION)


async def test_one_household_is_split_across_sources_when_the_first_runs_short(client, sessions, task_queue):
    first, second = f"SPLIT-A-{tag()}", f"SPLIT-B-{tag()}"
    programme = await own_programme(sessions, [(first, 100 * M), (second, 100 * M)])
    a, b = await enroll(client, sessions, task_queue, make_households(2, support_type="new_build", programme=programme))
    for h in (a, b):
        await to_allocation(client, sessions, h)
        result = await take_step(client, sessions, h.code, Step.ALLOCATE, "tc.hoang", evidence=["PB"])
        assert result.amount == 60 * M
    state = await household_state(client, b.code)
    pieces = [(t.n, p.source, p.amount) for t in state.tranches for p in t.pieces]
    # 40 M left in the first source; the second covers the rest. Tranche 1 (70%) draws on the first first.
    assert pieces == [(1, first, 40 * M), (1, second, 2 * M), (2, second, 18 * M)]
    assert state.funding_source == f"{first}+{second}"
    assert (await free_of(sessions, first), await free_of(sessions, second)) == (0, 80 * M)


async def test_a_source_whose_rules_do_not_cover_the_household_is_refused_by_name(client, sessions, task_queue):
    code = f"ONLY-{tag()}"
    await own_programme(sessions, [(code, 100 * M)])
    (h,) = await enroll(client, sessions, task_queue, make_households(1))  # not in that programme
    await to_allocation(client, sessions, h)
    with pytest.raises(Refusal) as e:
        await take_step(client, sessions, h.code, Step.ALLOCATE, "tc.hoang", evidence=["PB"], source=code)
    assert e.value.rule == "SourceNotEligible" and code in e.value.message


# ------------------------------------------------------------------ tranches


@pytest.fixture(scope="module")
async def one_tranche_disaster_repairs(scratch):
    """Data, not code: from this date repairs for disaster-hit households are paid in one tranche. The plan is
    put in a database of this module's own (seeded as the demo is, with money for the test), never in the
    suite's: tranche plans are versions nobody deletes, and every other test assumes the two-tranche plans."""
    await seed_demo(scratch)
    async with scratch() as s, s.begin():
        await ledger.receive(s, key="tests:topup", source="NS-TINH", amount=1_000 * M, memo="tests")
        await finance_db.put_tranche_plan(
            s,
            SupportType.REPAIR,
            BeneficiaryGroup.DISASTER,
            TranchePlan(tranches=[TrancheSpec(percent=100, milestone="acceptance")], legal_basis="test"),
            date(2024, 6, 1),
        )
    return scratch


async def test_a_group_with_its_own_tranche_plan_is_paid_as_that_plan_says(
    client, sessions, settings, one_tranche_disaster_repairs
):
    db = one_tranche_disaster_repairs
    async with running_worker(client, db, settings) as tq:
        (h,) = await enroll(client, db, tq, make_households(1, support_type="repair", beneficiary_group="disaster"))
        await to_allocation(client, db, h)
        await take_step(client, db, h.code, Step.ALLOCATE, "tc.hoang", evidence=["PB"])
        state = await household_state(client, h.code)
        assert [(t.percent, t.milestone.value, t.amount) for t in state.tranches] == [(100, "acceptance", 30 * M)]
        with pytest.raises(Refusal) as e:
            await take_step(
                client,
                db,
                h.code,
                Step.REPORT_PROGRESS,
                sample.commune_user(h.district, h.commune),
                milestone="progress_30",
                evidence=["BB"],
            )
        assert e.value.rule == "UnknownMilestone"
        await drive_one(client, db, h)
        state = await household_state(client, h.code)
        assert state.stage is Stage.CLOSED and state.paid == 30 * M
    # The suite's database never held the plan: a disaster-hit household's repair there is paid in two tranches.
    async with sessions() as s:
        plan = await finance_db.tranche_plan(s, SupportType.REPAIR, BeneficiaryGroup.DISASTER, date.today())
    assert [t.milestone for t in plan.tranches] != ["acceptance"] and len(plan.tranches) == 2, plan


async def test_cancelling_after_the_first_tranche_releases_only_what_is_left(client, sessions, task_queue):
    (h,) = await enroll(
        client, sessions, task_queue, make_households(1, support_type="new_build", beneficiary_group="poor")
    )
    district = sample.district_user(h.district)
    await drive_one(client, sessions, h, payouts=False)  # to tranche 1 due
    with pytest.raises(Refusal) as e:
        await take_step(client, sessions, h.code, Step.SETTLE, "tc.nong", evidence=["QT"])
    assert e.value.rule == "OutOfOrder"
    await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
    await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U"])
    await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
    with pytest.raises(Refusal) as e:
        await take_step(
            client, sessions, h.code, Step.SEND_BACK, sample.commune_user(h.district, h.commune), reason="đổi nguồn"
        )
    assert e.value.rule == "PaymentsMade"
    result = await take_step(client, sessions, h.code, Step.CANCEL, district, reason="hộ chuyển đi nơi khác")
    assert result.released == 18 * M
    state = await household_state(client, h.code)
    assert (state.stage, state.paid, state.reserved) == (Stage.CANCELLED, 42 * M, 0)
    assert [t.status for t in state.tranches] == [TrancheStatus.PAID, TrancheStatus.VOIDED]
    async with sessions() as s:
        row = (
            await s.execute(select(households.c.paid, households.c.reserved).where(households.c.code == h.code))
        ).one()
        transfers = [
            tuple(r)
            for r in await s.execute(
                select(ledger_transfers.c.kind, ledger_transfers.c.tranche, ledger_transfers.c.amount)
                .where(ledger_transfers.c.household_code == h.code)
                .order_by(ledger_transfers.c.id)
            )
        ]
    assert tuple(row) == (42 * M, 0)
    # One pending transfer per (tranche, source) piece at allocation; tranche 1's pieces posted when paid,
    # tranche 2's voided by the cancellation: nothing else, nothing twice.
    first, second = state.tranches
    pieces = {n: [p.amount for p in t.pieces] for n, t in ((1, first), (2, second))}
    assert (sum(pieces[1]), sum(pieces[2])) == (42 * M, 18 * M)
    assert sorted(transfers) == sorted(
        [("pending", n, a) for n in (1, 2) for a in pieces[n]]
        + [("post_pending", 1, a) for a in pieces[1]]
        + [("void_pending", 2, a) for a in pieces[2]]
    )
    assert [k for k, _, _ in transfers] == (
        ["pending"] * (len(pieces[1]) + len(pieces[2]))
        + ["post_pending"] * len(pieces[1])
        + ["void_pending"] * len(pieces[2])
    )  # in that order


# ------------------------------------------------------------------ separation of duties for money


async def test_the_person_who_authorises_a_payout_may_not_release_it(client, sessions, task_queue):
    async with sessions() as s:
        from db.policy import current_workflow_policy

        current = await current_workflow_policy(s, date.today())
    # Even a policy that lets Finance officers release (a treasury inside Finance) keeps the two people apart.
    steps = dict(current.steps)
    steps[Step.RELEASE_PAYOUT] = steps[Step.RELEASE_PAYOUT].model_copy(update={"roles": ["finance_officer"]})
    lenient = current.model_copy(update={"version": "test-release-by-finance", "steps": steps})
    (h,) = await enroll(client, sessions, task_queue, make_households(1, beneficiary_group="poor"), policy=lenient)
    await drive_one(client, sessions, h, payouts=False)
    await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
    with pytest.raises(Refusal) as e:
        await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, "tc.hoang", tranche=1, evidence=["U"])
    assert e.value.rule == "SegregationOfDuties" and "tc.hoang" in e.value.message
    # A commune officer may not release under this policy at all; another Finance officer may.
    with pytest.raises(Refusal) as e:
        await take_step(
            client,
            sessions,
            h.code,
            Step.RELEASE_PAYOUT,
            sample.commune_user(h.district, h.commune),
            tranche=1,
            evidence=["U"],
        )
    assert e.value.rule == "RoleNotAllowed"
    released = await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, "tc.nong", tranche=1, evidence=["U"])
    assert released.status is TrancheStatus.RELEASED
    # PostgreSQL holds the same rule for the read model whatever writes it.
    async with sessions() as s, s.begin():
        with pytest.raises(IntegrityError, match='violates check constraint "household_tranches_two_people"') as e:
            await s.execute(
                household_tranches.update()
                .where(household_tranches.c.household_code == h.code, household_tranches.c.tranche == 1)
                .values(released_by="tc.hoang", authorised_by="tc.hoang")
            )
    assert isinstance(e.value.orig.__cause__, asyncpg.exceptions.CheckViolationError)


# ------------------------------------------------------------------ batches


async def test_a_batch_authorises_many_payouts_and_running_it_again_changes_nothing(client, sessions, task_queue):
    items = await enroll(client, sessions, task_queue, make_households(6, beneficiary_group="poor"))
    await asyncio.gather(*(drive_one(client, sessions, h, payouts=False) for h in items))
    codes = [h.code for h in items]

    async def batch(action, user, ref="r1"):
        async with sessions() as s:
            from db import users

            actor = await users.require_actor(s, user)
        selection = BatchSelection(codes=codes)
        seen = []
        result = await run_batch(
            client,
            task_queue,
            payouts.sign_batch(
                FRONT_DOOR,
                PayoutBatchInput(
                    batch_id=payouts.batch_id_for(action, 1, selection, ref),
                    action=action,
                    tranche=1,
                    selection=selection,
                    actor=actor,
                    evidence=["BATCH"],
                    concurrency=3,
                ),
            ),
            on_progress=seen.append,
        )
        return result, seen

    async def audit_rows():
        async with sessions() as s:
            return await s.scalar(select(func.count()).where(audit_log.c.household_code.in_(codes)))

    first, seen = await batch(BatchAction.AUTHORISE, "tc.hoang")
    assert (first.progress.total, first.progress.done, first.progress.failed) == (6, 6, 0)
    # Tranche 1 is 70% of each household's entitlement.
    assert first.amount == sum((42 if h.support_type.value == "new_build" else 21) * M for h in items)
    assert seen[-1].finished == 6
    rows = await audit_rows()
    again, _ = await batch(BatchAction.AUTHORISE, "tc.hoang")
    assert (again.progress.done, again.progress.skipped) == (0, 6)
    assert await audit_rows() == rows  # nothing written twice
    # A commune officer may not release another commune's households: per-household failures, each named.
    ours = {(h.district, h.commune) for h in items}
    outsider = next(sample.commune_user(d, c) for d, cs in sample.UNITS.items() for c in cs if (d, c) not in ours)
    refused, _ = await batch(BatchAction.RELEASE, outsider)
    assert (refused.progress.failed, refused.progress.done) == (6, 0)
    assert {i.rule for i in refused.items} == {"OutsideJurisdiction"}
    released, _ = await batch(BatchAction.RELEASE, sample.TREASURY_USER)
    assert released.progress.done == 6
    assert await payouts.wait_for_payments(sessions, codes, within=20) == 0
    for h in items:
        assert (await household_state(client, h.code)).tranches[0].status is TrancheStatus.PAID


async def test_a_signed_batch_copied_out_of_its_history_and_started_again_takes_no_step(client, sessions, task_queue):
    """Someone who reaches the frontend, holding no key, copies a finished release batch's sealed start input out
    of its history and starts `payout-batch-<id>` again (a finished batch id may run again): within BATCH_TTL it
    would release the households Finance authorised since, in the treasury officer's name. The batch's selection
    records which run took the signed batch; another run is refused before it selects anything. Signed again
    by the front door, the same batch runs again."""
    a, b = await enroll(client, sessions, task_queue, make_households(2, beneficiary_group="poor"))
    await asyncio.gather(*(drive_one(client, sessions, h, payouts=False) for h in (a, b)))
    await take_step(client, sessions, a.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
    selection = BatchSelection(codes=[a.code, b.code])
    async with sessions() as s:
        actor = await users_db.require_actor(s, sample.TREASURY_USER)
    signed = payouts.sign_batch(
        FRONT_DOOR,
        PayoutBatchInput(
            batch_id=payouts.batch_id_for(BatchAction.RELEASE, 1, selection, tag()),
            action=BatchAction.RELEASE,
            tranche=1,
            selection=selection,
            actor=actor,
            evidence=["UNC"],
        ),
    )
    first = await run_batch(client, task_queue, signed)
    assert {i.household_code: i.outcome for i in first.items} == {a.code: "done", b.code: "failed"}
    wid = f"payout-batch-{signed.batch_id}"
    first_run = (await client.get_workflow_handle(wid).describe()).run_id
    # Later Finance authorises b; the treasury officer does nothing more.
    await take_step(client, sessions, b.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D2"])
    async with sessions() as s:
        rows = await s.scalar(select(func.count()).where(audit_log.c.household_code == b.code))

    history = await client.get_workflow_handle(wid).fetch_history()
    sealed = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    keyless = Client(client.service_client, namespace=client.namespace, data_converter=DataConverter.default)
    copied = await keyless.start_workflow("PayoutBatchWorkflow", RawValue(sealed), id=wid, task_queue=task_queue)
    with pytest.raises(WorkflowFailureError) as failed:
        await client.get_workflow_handle(wid, run_id=copied.result_run_id).result()
    cause = failed.value.cause.cause
    assert isinstance(cause, ApplicationError) and cause.type == "Unauthenticated" and cause.non_retryable
    assert f"already ran in run {first_run}" in cause.message and "sign it again" in cause.message
    assert (await household_state(client, b.code)).tranches[0].status is TrancheStatus.AUTHORISED
    async with sessions() as s:
        assert await s.scalar(select(func.count()).where(audit_log.c.household_code == b.code)) == rows
        taken = (
            (await s.execute(select(payout_batch_runs).where(payout_batch_runs.c.nonce == signed.assertion.nonce)))
            .mappings()
            .all()
        )
    assert [(r["run_id"], r["batch_id"], r["signed_by"]) for r in taken] == [
        (first_run, signed.batch_id, sample.TREASURY_USER)
    ]

    # Nor can a's step, copied out of a's history, be sent to b: the batch's assertion rides on it, b is in the
    # signed selection and now authorised, but only the batch's own run writes a household its ticket.
    a_history = await client.get_workflow_handle(a.workflow_id).fetch_history()
    [a_release] = [
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input.args.payloads[0]
        for e in a_history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        and e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name == "release_payout"
    ]
    # Sent as it is (what a keyless client does with the sealed bytes); decoded here only to read the answer.
    [a_input] = await SEALED.decode([a_release], [ReleasePayoutInput])
    assert a_input.batch == signed
    with pytest.raises(WorkflowUpdateFailedError) as copied_step:
        await client.get_workflow_handle(b.workflow_id).execute_update(HouseholdWorkflow.release_payout, a_input)
    assert copied_step.value.cause.type == "Unauthenticated" and "ticket" in copied_step.value.cause.message
    assert (await household_state(client, b.code)).tranches[0].status is TrancheStatus.AUTHORISED
    async with sessions() as s:
        assert await s.scalar(select(func.count()).where(audit_log.c.household_code == b.code)) == rows

    # The officer runs the batch again: the front door signs it afresh (a new one-time id), a re-run as ever.
    again = await run_batch(client, task_queue, payouts.sign_batch(FRONT_DOOR, signed))
    assert {i.household_code: i.outcome for i in again.items} == {a.code: "skipped", b.code: "done"}


async def test_a_signed_batch_is_taken_by_its_first_run_and_a_retry_of_that_run_selects_again(client, sessions):
    """The selecting activity retried within its run (same run id) selects as before; any other run of the batch
    is refused, through the selection of batches started before `select_payout_candidates` too."""
    async with sessions() as s:
        actor = await users_db.require_actor(s, "tc.hoang")
    selection = BatchSelection(codes=[f"NONE-{tag()}"])
    signed = payouts.sign_batch(
        FRONT_DOOR,
        PayoutBatchInput(
            batch_id=f"claim-{tag()}",
            action=BatchAction.AUTHORISE,
            tranche=1,
            selection=selection,
            actor=actor,
            evidence=["B"],
        ),
    )
    ask = SelectPayoutsInput(selection=selection, tranche=1, actor=actor, batch=signed)
    batches = BatchActivities(client, sessions)

    def run_as(run_id: str, fn=batches.select_payout_candidates):
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, workflow_id=f"payout-batch-{signed.batch_id}", workflow_run_id=run_id)
        return env.run(fn, ask)

    assert await run_as("run-1") == []
    assert await run_as("run-1") == []  # the activity retried
    for fn in (batches.select_payout_candidates, batches.select_payouts):
        with pytest.raises(ApplicationError) as refused:
            await run_as("run-2", fn)
        assert refused.value.type == "Unauthenticated" and refused.value.non_retryable
        assert f"signed batch {signed.batch_id} already ran in run run-1" in refused.value.message


# ------------------------------------------------------------------ decisions, cấp bù, loans


async def test_a_supplementary_list_is_imported_and_reported_under_its_own_decision(client, sessions, task_queue):
    ref = f"{tag()}/QĐ-UBND"
    # The decision it supplements, registered here (an import of its list registers it too; this test runs alone).
    await finance_ops.add_decision(
        sessions, sample.PROVINCE_USER, "270/QĐ-UBND", supplements=None, decided_on=None, note=None
    )
    assert await finance_ops.add_decision(
        sessions, sample.PROVINCE_USER, ref, supplements="270/QĐ-UBND", decided_on=date(2025, 6, 30), note="bổ sung"
    )
    with pytest.raises(Refusal) as e:
        await finance_ops.add_decision(
            sessions, sample.PROVINCE_USER, f"X{ref}", supplements="NO-SUCH", decided_on=None, note=None
        )
    assert e.value.rule == "UnknownDecision"
    items = await enroll(client, sessions, task_queue, make_households(3, decision_ref=ref, support_type="repair"))
    async with sessions() as s:
        rec = await reconciliation.reconcile(s)
    line = next(d for d in rec.decisions if d.key == ref)
    assert (line.kind, line.households, line.repairs) == ("supplementary to 270/QĐ-UBND", 3, 3)
    # Three repairs, none allocated yet: no entitlement fixed, nothing reserved or paid.
    assert (line.new_builds, line.entitlement, line.reserved, line.paid) == (0, 0, 0, 0)
    async with sessions() as s:
        assert await s.scalar(select(func.count()).where(households.c.decision_ref == ref)) == len(items) == 3


async def test_a_districts_advance_is_a_receivable_until_the_programme_reimburses_it(client, sessions, task_queue):
    payer, advance = f"PAYER-{tag()}", f"ADV-{tag()}"
    programme = f"P-{tag()}"
    async with sessions() as s, s.begin():
        await ledger.create_source(
            s,
            code=payer,
            name=payer,
            category="national_target_programme",
            is_state_budget=True,
            priority=10,
            rules={"programmes": [programme]},
        )
        await ledger.create_source(
            s,
            code=advance,
            name=advance,
            category="district_advance",
            is_state_budget=True,
            priority=20,
            rules={"programmes": [programme], "districts": ["Chi Lăng"], "reimbursed_by": payer},
        )
        await ledger.receive(s, key=f"t:{advance}", source=advance, amount=100 * M, memo="district budget")
        await finance_db.put_allocation_policy(
            s,
            AllocationPolicy(
                version="t",
                programme=programme,
                tiers=[Tier(name="programme", categories=["national_target_programme", "district_advance"])],
            ),
            date(2024, 1, 1),
        )
    (h,) = await enroll(
        client,
        sessions,
        task_queue,
        make_households(
            1,
            programme=programme,
            district="Chi Lăng",
            commune="Vân An",
            support_type="new_build",
            beneficiary_group="poor",
        ),
    )
    await drive_one(client, sessions, h)  # the programme has no money yet: the district advances all of it

    async def owed():
        async with sessions() as s:
            return next(r for r in await finance_db.receivables(s) if r.advance_source == advance)

    assert (await owed()).outstanding == 60 * M
    assert await finance_ops.reimburse(sessions, "tc.nong", advance_source=advance, ref="r0") == (None, False)
    await finance_ops.receive(sessions, "tc.nong", source=payer, amount=100 * M, ref="giao dự toán")
    with pytest.raises(Refusal) as e:
        await finance_ops.reimburse(sessions, "tc.nong", advance_source=advance, ref="r1", amount=70 * M)
    assert e.value.rule == "OverReimbursement"
    with pytest.raises(Refusal) as e:
        await finance_ops.reimburse(sessions, sample.VBSP_USER, advance_source=advance, ref="r1")
    assert e.value.rule == "RoleNotAllowed"
    paid_back, new = await finance_ops.reimburse(sessions, "tc.nong", advance_source=advance, ref="r1")
    assert (paid_back.amount, paid_back.code, new) == (60 * M, "reimbursement", True)
    again, new = await finance_ops.reimburse(sessions, "tc.nong", advance_source=advance, ref="r1")
    assert (again.id, new) == (paid_back.id, False)  # the same reference twice is one transfer
    assert (await owed()).outstanding == 0 and (await owed()).reimbursed == 60 * M
    assert await free_of(sessions, payer) == 40 * M


async def test_vbsp_loans_are_co_financing_recorded_apart_from_grant_money(
    client, sessions, owner_sessions, task_queue
):
    (h,) = await enroll(client, sessions, task_queue, make_households(1, beneficiary_group="poor"))

    async def transfers():
        async with sessions() as s:
            return await s.scalar(select(func.count()).select_from(ledger_transfers))

    before = await transfers()
    async with sessions() as s:
        lent_before = next(
            (d.vbsp_loans for d in (await reconciliation.reconcile(s)).districts if d.key == h.district), 0
        )
    assert await finance_ops.record_loan(
        sessions, sample.VBSP_USER, household_code=h.code, amount=40 * M, status="approved", ref="HĐ-1"
    )
    assert not await finance_ops.record_loan(
        sessions, sample.VBSP_USER, household_code=h.code, amount=40 * M, status="approved", ref="HĐ-1"
    )  # the same event twice: once
    assert await finance_ops.record_loan(
        sessions, sample.VBSP_USER, household_code=h.code, amount=40 * M, status="disbursed", ref="HĐ-1/giải ngân"
    )
    for kwargs, rule in (
        (dict(amount=0, status="approved"), "InvalidAmount"),
        (dict(amount=10 * M, status="forgiven"), "InvalidLoanStatus"),
    ):
        with pytest.raises(Refusal) as e:
            await finance_ops.record_loan(sessions, sample.VBSP_USER, household_code=h.code, ref="bad", **kwargs)
        assert e.value.rule == rule
    with pytest.raises(Refusal) as e:
        await finance_ops.record_loan(
            sessions,
            sample.commune_user(h.district, h.commune),
            household_code=h.code,
            amount=M,
            status="approved",
            ref="x",
        )
    assert e.value.rule == "RoleNotAllowed"
    assert await transfers() == before  # loans never touch the grant ledger
    async with sessions() as s:
        rec = await reconciliation.reconcile(s)
        statuses = [
            r
            for (r,) in await s.execute(
                select(household_loans.c.status)
                .where(household_loans.c.household_code == h.code)
                .order_by(household_loans.c.id)
            )
        ]
    # Even as the owner (the application has no UPDATE): the append-only trigger refuses.
    with pytest.raises(
        ProgrammingError,
        match=r"household_loans is append-only: UPDATE refused \(corrections are "
        r"new entries\)",
    ) as e:
        async with owner_sessions() as s, s.begin():
            await s.execute(text("UPDATE household_loans SET amount = 1 WHERE household_code = :c"), {"c": h.code})
    assert isinstance(e.value.orig.__cause__, asyncpg.exceptions.InsufficientPrivilegeError)  # the trigger's ERRCODE
    assert statuses == ["approved", "disbursed"]
    district = next(d for d in rec.districts if d.key == h.district)
    assert district.vbsp_loans - lent_before == 40 * M  # the loan as its latest event says: approved, then disbursed


# ------------------------------------------------------------------ reconciliation


async def test_the_reconciliation_balances_after_a_run_with_cancellations_and_names_any_difference(
    client, sessions, task_queue, tmp_path
):
    items = await enroll(client, sessions, task_queue, make_households(5, beneficiary_group="poor"))
    closed, cancelled_early, cancelled_paid, sent_back, half = items
    district = sample.district_user
    await drive_one(client, sessions, closed)
    await to_allocation(client, sessions, cancelled_early)
    await take_step(client, sessions, cancelled_early.code, Step.ALLOCATE, "tc.hoang", evidence=["PB"])
    await take_step(
        client,
        sessions,
        cancelled_early.code,
        Step.CANCEL,
        district(cancelled_early.district),
        reason="không đủ điều kiện",
    )
    for h in (cancelled_paid, half):
        await drive_one(client, sessions, h, payouts=False)
        await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
        await take_step(client, sessions, h.code, Step.RELEASE_PAYOUT, sample.TREASURY_USER, tranche=1, evidence=["U"])
        await wait_until(tranche_is(client, h.code, TrancheStatus.PAID))
    await take_step(
        client,
        sessions,
        cancelled_paid.code,
        Step.CANCEL,
        district(cancelled_paid.district),
        reason="hộ tự xây bằng nguồn khác",
    )
    await to_allocation(client, sessions, sent_back)
    await take_step(client, sessions, sent_back.code, Step.ALLOCATE, "tc.hoang", evidence=["PB"])
    await take_step(
        client,
        sessions,
        sent_back.code,
        Step.SEND_BACK,
        sample.commune_user(sent_back.district, sent_back.commune),
        reason="sai nguồn",
    )

    async with sessions() as s:
        rec = await reconciliation.reconcile(s)
    assert rec.problems == [] and rec.balanced
    ours = {h.code for h in items}
    async with sessions() as s:
        paid = await s.scalar(select(func.sum(households.c.paid)).where(households.c.code.in_(ours)))
    amounts = {h.code: (60 if h.support_type.value == "new_build" else 30) * M for h in items}
    first = {c: a * 70 // 100 for c, a in amounts.items()}
    assert paid == amounts[closed.code] + first[cancelled_paid.code] + first[half.code]
    totals = rec.totals(rec.sources)
    assert totals["paid"] == sum(d.paid for d in rec.districts) == sum(d.paid for d in rec.decisions)
    assert (
        totals["free"]
        == totals["received"] - totals["reserved"] - totals["released"] - totals["paid"] - totals["reimbursed_out"]
    )

    # Exports open in Excel: a workbook with one sheet per view and the totals as numbers.
    book = load_workbook(reconciliation.write_xlsx(rec, tmp_path / "r.xlsx"))
    assert book.sheetnames == ["Theo nguồn", "Theo huyện", "Theo xã (mới)", "Theo quyết định", "Cấp bù", "Kiểm tra"]
    last = [c.value for c in book["Theo nguồn"][book["Theo nguồn"].max_row]]
    assert last[0] == "Tổng cộng" and last[7] == totals["paid"]
    assert book["Kiểm tra"]["A1"].value == "Cân đối đến từng đồng"
    csv_files = reconciliation.write_csv(rec, tmp_path / "csv")
    assert csv_files[0].read_bytes().startswith("\ufeffMã nguồn".encode())

    # A difference anywhere is named: here the read model says one đồng more than the ledger paid.
    async with sessions() as s, s.begin():
        await s.execute(households.update().where(households.c.code == half.code).values(paid=households.c.paid + 1))
        broken = await reconciliation.reconcile(s)
        await s.rollback()
    paid_half = first[half.code]
    assert broken.problems == [f"household {half.code}: read model paid {paid_half + 1:,}, ledger posted {paid_half:,}"]
    # Source money reserved by hand for nobody on the list is named too (and the views then disagree).
    async with sessions() as s, s.begin():
        await ledger.reserve(s, key=f"orphan-{tag()}", source="NS-TINH", household_code=None, amount=5, memo="x")
        broken = await reconciliation.reconcile(s)
        await s.rollback()
    views, orphan = broken.problems
    assert re.fullmatch(r"1 transfers reserve or pay source money for no registered household \(ids \d+\)", orphan)
    sources, districts, decisions, communes = (
        int(n.replace(",", ""))
        for n in re.fullmatch(
            r"reserved differs between views: sources ([\d,]+), districts ([\d,]+), decisions ([\d,]+), "
            r"communes ([\d,]+)",
            views,
        ).groups()
    )
    assert (
        sources - districts == 5 and districts == decisions == communes
    )  # the 5 đồng reserved for nobody, nothing else


async def test_report_command_exports_and_exits_zero_when_balanced(settings, sessions, tmp_path):
    env = {**os.environ, "DATABASE_URL": settings.database_url, "COLUMNS": "200"}
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "starter.py",
            "report",
            "--json",
            "--xlsx",
            str(tmp_path / "r.xlsx"),
            "--csv",
            str(tmp_path / "csv"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["reconciliation"]
    assert report["balanced"] is True and report["problems"] == []
    assert {"state_budget", "not_state_budget", "all"} == set(report["source_totals"])
    assert (tmp_path / "r.xlsx").exists() and (tmp_path / "csv" / "reconciliation_by_district.csv").exists()
    bad = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "starter.py", "finance", "receive", "NS-TINH", "1.200,5", "--ref", "x", "--as", "tc.hoang"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode != 0 and "InvalidAmount" in bad.stderr


async def test_the_outbox_tells_finance_a_tranche_is_due_and_the_paying_unit_it_is_authorised(
    client, sessions, task_queue
):
    (h,) = await enroll(client, sessions, task_queue, make_households(1, beneficiary_group="poor"))
    await drive_one(client, sessions, h, payouts=False)
    await take_step(client, sessions, h.code, Step.AUTHORISE_PAYOUT, "tc.hoang", tranche=1, evidence=["D"])
    async with sessions() as s:
        subjects = [
            r
            for (r,) in await s.execute(
                select(outbox.c.subject)
                .where(outbox.c.household_code == h.code, outbox.c.kind == "task")
                .order_by(outbox.c.id)
            )
        ]
    # One hand-over per stage reached, then the tranche due (to Finance) and authorised (to the paying unit).
    assert subjects == [
        f"Hộ {h.code}: {x}"
        for x in (
            "chờ bước phê duyệt",
            "chờ bước phân bổ kinh phí",
            "chờ bước thi công",
            "đợt 1 đến hạn chi, đề nghị duyệt chi",
            "đợt 1 đã được duyệt chi, đề nghị chuyển tiền",
        )
    ]
