"""Server-rendered pages (Jinja2 + htmx, no build step) for committees, Finance and auditors.

The pages use the same session, jurisdiction and engine path as the API: a form's step goes to the
workflow's Update as the signed-in user, and a refusal is shown with the engine's rule and message. A page
offers only the steps the engine would accept (rules.allowed_actions).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import tempfile
import time
import unicodedata
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import UploadFile

from archive.source import open_archive
from auditor import timeline as timeline_view
from auditor.history import read_trail
from auditor.live import verify_live
from core.errors import Refusal
from core.formatting import amount, day, dong, today
from core.settings import Settings
from db import households
from db import policy as policy_db
from models.finance import BatchAction, BatchSelection
from models.household import Stage, Step
from operations import access, dossier, payouts, receipts, reconciliation, reports
from operations.actions import household_state, household_view, next_actions, take_step
from operations.csv_list import parse, template_xlsx
from operations.imports import ImportRejected, register, start_workflows
from operations.tables import MAX_BYTES as MAX_LIST
from web.i18n import Words
from web.step_forms import details_from_form
from workflows import rules

__all__ = ["Words", "router", "templates"]

HERE = Path(__file__).parent
LOGIN_CSRF = "xnt_login_csrf"
MAX_ATTACHMENT = 10 * 1024 * 1024
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# An uploaded list waits for its confirmation this long, then is removed (it names people and their CCCD).
HELD_FOR = 24 * 3600
PROBLEMS_SHOWN = 500

log = structlog.get_logger(__name__)

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["dong"] = amount
templates.env.filters["vn_date"] = day


class SignedOut(Exception):
    """No session: the page handler sends the browser to the sign-in page."""


def router(settings: Settings, cookie: str) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    def words(request: Request) -> Words:
        return Words(request.cookies.get("lang", "vi"))

    async def who(request: Request) -> access.SignedIn:
        """The signed-in user, and (on request.state.policy) the policy in effect today, whose role sets say
        which pages the user may open."""
        token = request.cookies.get(cookie)
        if token:
            async with request.app.state.sessions() as s, s.begin():
                signed = await access.session_user(s, token)
                if signed:
                    request.state.policy = await policy_db.policy_today(s)
            if signed:
                return signed
        raise SignedOut()

    def may_see_finance(request: Request, signed: access.SignedIn | None) -> bool:
        return signed is not None and signed.user.role in request.state.policy.finance_view_roles

    def may_see_audit(request: Request, signed: access.SignedIn | None) -> bool:
        return signed is not None and signed.user.role in request.state.policy.audit_view_roles

    def may_import(request: Request, signed: access.SignedIn | None) -> bool:
        return signed is not None and signed.user.role in request.state.policy.import_roles

    def page(request: Request, name: str, signed: access.SignedIn | None, **ctx) -> HTMLResponse:
        return templates.TemplateResponse(
            request,
            name,
            {
                "t": words(request),
                "me": signed and signed.user,
                "csrf": signed and signed.csrf_token,
                "Stage": Stage,
                "may_see_finance": may_see_finance(request, signed),
                "may_see_audit": may_see_audit(request, signed),
                "may_import": may_import(request, signed),
                **ctx,
            },
        )

    def check_csrf(signed: access.SignedIn, sent: str) -> None:
        if not secrets.compare_digest(sent or "", signed.csrf_token or ""):
            raise Refusal("CsrfFailed", "this form is stale or was not sent by the application's page; reload it")

    # ------------------------------------------------------------------ session

    @r.get("/login")
    async def login_form(request: Request, error: str | None = None) -> Response:
        token = secrets.token_urlsafe(24)
        resp = page(request, "login.html", None, login_csrf=token, error=error)
        resp.set_cookie(LOGIN_CSRF, token, httponly=True, secure=settings.web_secure_cookie, samesite="strict")
        return resp

    @r.post("/login")
    async def login(
        request: Request, user_id: str = Form(...), password: str = Form(...), csrf: str = Form(...)
    ) -> Response:
        if not secrets.compare_digest(csrf, request.cookies.get(LOGIN_CSRF, "")):
            return RedirectResponse("/login?error=" + quote("CsrfFailed"), status_code=303)
        client = request.client.host if request.client else "?"
        async with request.app.state.sessions() as s, s.begin():
            outcome = await access.sign_in(s, user_id.strip(), password, client, signer=request.app.state.signer)
        if outcome.refusal is not None:
            message = f"{outcome.refusal.rule}: {outcome.refusal.message}"
            return RedirectResponse("/login?error=" + quote(message), status_code=303)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(
            cookie,
            outcome.token or "",
            httponly=True,
            secure=settings.web_secure_cookie,
            samesite="strict",
            max_age=int(access.SESSION_TTL.total_seconds()),
        )
        resp.delete_cookie(LOGIN_CSRF)
        return resp

    @r.post("/logout")
    async def logout(request: Request, csrf: str = Form("")) -> Response:
        signed = await who(request)
        check_csrf(signed, csrf)
        async with request.app.state.sessions() as s, s.begin():
            await access.sign_out(s, request.cookies.get(cookie, ""))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(cookie)
        return resp

    @r.get("/lang/{lang}")
    async def switch_language(lang: str, request: Request) -> Response:
        back = request.headers.get("referer") or "/"
        resp = RedirectResponse(back if back.startswith(str(request.base_url)) else "/", status_code=303)
        resp.set_cookie("lang", "en" if lang == "en" else "vi", samesite="lax", max_age=365 * 24 * 3600)
        return resp

    # ------------------------------------------------------------------ dashboard

    @r.get("/")
    async def dashboard(request: Request) -> Response:
        signed = await who(request)
        user = signed.user
        mine = user.jurisdiction  # a commune officer's counts are their commune's
        async with request.app.state.sessions() as s:
            rep = await reports.build(s)
            deadlines = await reports.deadline_progress(s, today(), mine)
            # An officer of a commune of the two-tier map reads it by commune; everyone else by district.
            rows = await reports.district_stages(s, mine, new_map=user.district is None and user.commune is not None)
        districts = sorted({x.district for x in rows})
        by = {(x.district, x.stage): x.households for x in rows}
        stages = [st for st in Stage if st is not Stage.CANCELLED]
        bars = [
            (d, [(st, by.get((d, st.value), 0)) for st in stages], sum(by.get((d, st.value), 0) for st in Stage))
            for d in districts
        ]
        sources = rep.by_source if user.district is None and user.commune is None else []
        top = max([s.received for s in sources] or [1])
        return page(
            request,
            "dashboard.html",
            signed,
            bars=bars,
            stages=stages,
            sources=sources,
            top=top,
            decisions=rep.by_decision if user.district is None and user.commune is None else [],
            deadlines=deadlines,
        )

    # ------------------------------------------------------------------ households

    @r.get("/households")
    async def household_list(
        request: Request, stage: str = "", commune: str = "", q: str = "", message: str = ""
    ) -> Response:
        signed = await who(request)
        user = signed.user
        columns = [
            "code",
            "head_of_household",
            "district",
            "commune",
            "stage",
            "stage_since",
            "beneficiary_group",
            "support_type",
            "paid",
        ]
        wanted = {"stage": stage, "commune": commune, "code_like": q.strip()}
        async with request.app.state.sessions() as s:
            rows = await households.visible(
                s, user.jurisdiction, columns=columns, order="stage_since", limit=300, **wanted
            )
            total = await households.count_visible(s, user.jurisdiction, **wanted)
        now = datetime.now(UTC)
        items = []
        for row in rows:
            due = rules.sla_due(request.state.policy, Stage(row["stage"]), row["stage_since"])
            items.append({**row, "due": due, "overdue": bool(due and due < now)})
        return page(
            request,
            "households.html",
            signed,
            items=items,
            total=total,
            stage=stage,
            commune=commune,
            q=q,
            steps=[s for s in Step if s in BULK_STEPS],
            message=message,
        )

    @r.post("/households/bulk")
    async def bulk(request: Request) -> Response:
        signed = await who(request)
        form = await request.form()
        check_csrf(signed, str(form.get("csrf", "")))
        try:
            step = Step(str(form.get("step")))
        except ValueError:
            raise Refusal("UnknownStep", f"no step {str(form.get('step'))[:40]!r}") from None
        evidence = _refs(form.get("evidence"))
        results = []
        for code in form.getlist("code"):
            try:
                await take_step(
                    request.app.state.client,
                    request.app.state.sessions,
                    str(code),
                    step,
                    signed.user.user_id,
                    evidence=evidence,
                    signer=request.app.state.signer,
                )
                results.append((code, "ok", ""))
            except Refusal as e:
                results.append((code, e.rule, e.message))
        return page(request, "bulk.html", signed, step=step, results=results)

    @r.get("/households/{code}")
    async def household_page(code: str, request: Request, message: str = "", error: str = "") -> Response:
        signed = await who(request)
        user = signed.user
        async with request.app.state.sessions() as s:
            row = await households.visible_one(s, user.jurisdiction, code.strip().upper())
        if row is None:
            return page(request, "missing.html", signed, code=code)
        client, db = request.app.state.client, request.app.state.sessions
        # A closed file Temporal no longer holds is read from the archive (its history replayed for the state).
        state, found = await household_view(client, db, row["code"], open_archive(db, settings))
        options = await next_actions(db, state, user.actor())
        lines = timeline_view.lines(await read_trail(found.history, client.data_converter), words(request).lang)
        return page(
            request,
            "household.html",
            signed,
            h=row,
            state=state,
            options=options,
            lines=lines,
            message=message,
            error=error,
        )

    @r.post("/households/{code}/act")
    async def act(code: str, request: Request) -> Response:
        signed = await who(request)
        form = await request.form()
        check_csrf(signed, str(form.get("csrf", "")))
        evidence = _refs(form.get("evidence"))
        step = str(form.get("step", ""))
        uploads = [u for u in form.getlist("files") if isinstance(u, UploadFile) and u.filename]
        if uploads:
            # An attachment is kept only from an officer who may take this step on this household now: a
            # stranger's upload is never kept (it never reaches evidence/). The engine still decides the step itself.
            await _may_attach(request, signed, code, step)
        for upload in uploads:
            evidence.append(await _store(settings, upload))
        try:
            tranche = int(str(form["tranche"])) if form.get("tranche") else None
        except ValueError:
            raise Refusal("InvalidInput", "tranche: a whole number") from None
        milestone = str(form["milestone"]) if form.get("milestone") else None
        reason = str(form.get("reason") or "") or None
        back = f"/households/{quote(code)}"
        try:
            done = await take_step(
                request.app.state.client,
                request.app.state.sessions,
                code,
                Step(step),
                signed.user.user_id,
                evidence=evidence,
                reason=reason,
                tranche=tranche,
                milestone=milestone,
                details=details_from_form(Step(step), form),
                signer=request.app.state.signer,
            )
        except Refusal as e:
            return RedirectResponse(f"{back}?error={quote(f'{e.rule}: {e.message}')}", status_code=303)
        except ValueError:
            return RedirectResponse(f"{back}?error={quote(f'UnknownStep: {step}')}", status_code=303)
        return RedirectResponse(f"{back}?message={quote(f'{step} #{done.seq}')}", status_code=303)

    # ------------------------------------------------------------------ importing a list

    def require_import(request: Request, signed: access.SignedIn) -> None:
        """Refuse, before a byte is kept, an officer whose role the policy does not let import (as `register`
        refuses, in the same words)."""
        if not may_import(request, signed):
            policy = request.state.policy
            raise Refusal("RoleNotAllowed", f"role {signed.user.role!r} may not import lists (policy {policy.version})")

    @r.get("/imports")
    async def import_form(request: Request) -> Response:
        signed = await who(request)
        if not may_import(request, signed):
            return page(request, "forbidden.html", signed)
        return page(request, "import.html", signed)

    @r.get("/imports/template.xlsx")
    async def import_template(request: Request) -> Response:
        await who(request)
        return Response(
            template_xlsx(),
            media_type=XLSX,
            headers={"Content-Disposition": 'attachment; filename="mau-danh-sach.xlsx"'},
        )

    @r.post("/imports/preview")
    async def import_preview(request: Request) -> Response:
        """Read the uploaded list and show its problems by line and field, or what it would register, with the
        button that confirms it. Nothing is registered here; the file is held server-side by its SHA-256 for the
        confirmation, which reads and checks it again."""
        signed = await who(request)
        form = await request.form()
        check_csrf(signed, str(form.get("csrf", "")))
        require_import(request, signed)
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise Refusal("InvalidInput", "choose the list's file (.xlsx or .csv) to upload")
        data = await upload.read(MAX_LIST + 1)
        name = unicodedata.normalize("NFC", Path(upload.filename).name)[:120]
        rows, problems = await asyncio.to_thread(parse, data, name)  # a big list: seconds, off the loop
        log.info("list_previewed", user=signed.user.user_id, file=name, rows=len(rows), problems=len(problems))
        if problems:
            return _problems_page(request, signed, name, problems)
        digest = _hold(settings, data, name, signed.user.user_id)
        return page(request, "import_preview.html", signed, **_summary(name, digest, [r.household for r in rows]))

    @r.post("/imports/confirm")
    async def import_confirm(request: Request, csrf: str = Form(...), sha256: str = Form(...)) -> Response:
        """Register the held list exactly as the command line does (every row checked again, against the
        register too; signed by this front door for the signed-in officer), then start its workflows."""
        signed = await who(request)
        check_csrf(signed, csrf)
        require_import(request, signed)
        user_id = signed.user.user_id
        data, name = _held(settings, sha256, user_id)
        db = request.app.state.sessions
        try:
            report, items, current = await register(
                db, data, name, user_id, signer=request.app.state.signer, match_key=request.app.state.match_key
            )
        except ImportRejected as rejected:  # against the register: the mended file is uploaded anew
            _release(settings, sha256, user_id)
            return _problems_page(request, signed, name, rejected.problems)
        report.workflows_started, report.workflows_existing = await start_workflows(
            request.app.state.client,
            settings.temporal_task_queue,
            items,
            current,
            importers=report.importers,
            sessions=db,
        )
        _release(settings, sha256, user_id)
        log.info("list_imported", user=user_id, file=name, batch=report.batch_id, registered=report.registered)
        return page(request, "import_done.html", signed, report=report, file_name=name, summary=report.describe(name))

    def _problems_page(request: Request, signed: access.SignedIn, name: str, problems: list) -> HTMLResponse:
        resp = page(
            request,
            "import_preview.html",
            signed,
            file_name=name,
            problems=problems[:PROBLEMS_SHOWN],
            more=max(0, len(problems) - PROBLEMS_SHOWN),
            count=len(problems),
        )
        resp.status_code = 422
        return resp

    # ------------------------------------------------------------------ finance

    @r.get("/finance")
    async def finance(request: Request, message: str = "") -> Response:
        signed = await who(request)
        if not may_see_finance(request, signed):
            return page(request, "forbidden.html", signed)
        async with request.app.state.sessions() as s:
            rec = await reconciliation.reconcile(s)
            # A batch selects by the district a household is in now (none after the 2025 reform: by decision).
            districts = await households.current_districts(s)
        waiting = await payouts.tranche_counts(request.app.state.sessions, None, ("due", "authorised"))
        return page(
            request,
            "finance.html",
            signed,
            rec=rec,
            waiting=sorted(waiting.items()),
            message=message,
            districts=districts,
            decisions=[d.key for d in rec.decisions],
        )

    @r.post("/finance/batch")
    async def batch(
        request: Request,
        csrf: str = Form(...),
        action: str = Form(...),
        tranche: int = Form(...),
        district: str = Form(""),
        decision: str = Form(""),
        evidence: str = Form(...),
    ) -> Response:
        signed = await who(request)
        check_csrf(signed, csrf)
        selection = BatchSelection(district=district or None, decision_ref=decision or None)
        ref = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        result = await payouts.start_batch(
            request.app.state.client,
            settings.temporal_task_queue,
            request.app.state.signer,
            signed.user.actor(),
            BatchAction(action),
            tranche,
            selection,
            evidence=_refs(evidence),
            ref=f"web-{ref}",
        )
        p = result.progress
        message = f"{action} t{tranche}: {p.done} done ({dong(result.amount)}), {p.skipped} skipped, {p.failed} failed"
        failures = [i for i in result.items if i.outcome == "failed"]
        return page(request, "batch.html", signed, message=message, failures=failures)

    @r.get("/finance/reconciliation.xlsx")
    async def export(request: Request) -> Response:
        signed = await who(request)
        if not (may_see_finance(request, signed) or may_see_audit(request, signed)):
            return page(request, "forbidden.html", signed)
        async with request.app.state.sessions() as s:
            rec = await reconciliation.reconcile(s)
        path = Path(tempfile.mkdtemp(prefix="xnt-")) / "doi-chieu.xlsx"
        reconciliation.write_xlsx(rec, path)
        return FileResponse(
            path,
            filename="doi-chieu.xlsx",
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )

    # ------------------------------------------------------------------ audit

    @r.get("/audit")
    async def audit(request: Request, code: str = "") -> Response:
        signed = await who(request)
        if not may_see_audit(request, signed):
            return page(request, "forbidden.html", signed)
        if code:
            return RedirectResponse(f"/households/{quote(code.strip().upper())}", status_code=303)
        return page(request, "audit.html", signed, report=None)

    @r.post("/audit/verify")
    async def audit_verify(request: Request, csrf: str = Form(...)) -> Response:
        signed = await who(request)
        check_csrf(signed, csrf)
        if not may_see_audit(request, signed):
            return page(request, "forbidden.html", signed)
        client, db = request.app.state.client, request.app.state.sessions
        report, _ = await verify_live(client, db, settings, client.data_converter)
        return page(request, "audit.html", signed, report=report)

    # ------------------------------------------------------------------ after the money

    def back_to(url: str, *, error: Refusal | None = None, message: str | None = None) -> RedirectResponse:
        said = f"error={quote(f'{error.rule}: {error.message}')}" if error else f"message={quote(message or '')}"
        return RedirectResponse(f"{url}?{said}", status_code=303)

    @r.get("/receipts")
    async def receipt_plans(request: Request) -> Response:
        signed = await who(request)
        return page(
            request,
            "receipts.html",
            signed,
            plans=await receipts.plans(request.app.state.sessions),
            may_plan=signed.user.role in request.state.policy.finance_roles,
            message=request.query_params.get("message"),
            error=request.query_params.get("error"),
        )

    @r.post("/receipts")
    async def receipt_plan_create(request: Request) -> Response:
        """Finance draws a plan (operations/receipts.create_plan refuses anyone else)."""
        signed = await who(request)
        form = await request.form()
        check_csrf(signed, str(form.get("csrf", "")))

        def text(name: str) -> str | None:
            return str(form.get(name) or "").strip() or None

        try:
            plan = await receipts.create_plan(
                request.app.state.sessions,
                signed.user.user_id,
                text("name") or "",
                decision_ref=text("decision"),
                district=text("district"),
                commune=text("commune"),
                confidence=float(text("confidence") or 0.95),
                margin=float(text("margin") or 0.05),
                full_list=form.get("full") == "on",
            )
        except ValueError as e:
            return back_to("/receipts", error=Refusal("InvalidInput", str(e)))
        except Refusal as e:
            return back_to("/receipts", error=e)
        return back_to(f"/receipts/{plan.id}", message=plan.describe())

    @r.get("/receipts/{plan_id}")
    async def receipt_plan(plan_id: int, request: Request) -> Response:
        signed = await who(request)
        try:
            report = await receipts.plan_report(request.app.state.sessions, signed.user.user_id, plan_id)
        except Refusal:
            return page(request, "forbidden.html", signed)
        return page(
            request,
            "receipt_plan.html",
            signed,
            report=report,
            message=request.query_params.get("message"),
            error=request.query_params.get("error"),
        )

    @r.post("/receipts/{plan_id}/answer")
    async def receipt_answer(plan_id: int, request: Request) -> Response:
        signed = await who(request)
        form = await request.form()
        check_csrf(signed, str(form.get("csrf", "")))
        back = f"/receipts/{plan_id}"
        try:
            amount = int(str(form["amount"]).replace(".", "")) if form.get("amount") else None
            done = await receipts.record_answer(
                request.app.state.sessions,
                signed.user.user_id,
                plan_id,
                str(form.get("code", "")),
                str(form.get("answer", "")),
                str(form.get("channel", "")),
                amount=amount,
                note=str(form.get("note") or "") or None,
            )
        except ValueError as e:
            return back_to(back, error=Refusal("InvalidInput", str(e)))
        except Refusal as e:
            return back_to(back, error=e)
        opened = f"; grievance {done.grievance}" if done.grievance else ""
        return back_to(back, message=f"{done.household_code}: {done.answer.value}{opened}")

    @r.get("/grievances")
    async def grievance_queue(request: Request) -> Response:
        signed = await who(request)
        lines = await receipts.grievances(request.app.state.sessions, signed.user.user_id)
        return page(
            request,
            "grievances.html",
            signed,
            lines=lines,
            overdue=receipts.overdue,
            message=request.query_params.get("message"),
            error=request.query_params.get("error"),
        )

    @r.post("/grievances/{grievance_id}/resolve")
    async def grievance_resolve(grievance_id: int, request: Request) -> Response:
        signed = await who(request)
        form = await request.form()
        check_csrf(signed, str(form.get("csrf", "")))
        try:
            await receipts.resolve_grievance(
                request.app.state.sessions,
                signed.user.user_id,
                grievance_id,
                str(form.get("outcome", "")),
                str(form.get("resolution", "")),
                evidence=_refs(form.get("evidence")),
            )
        except ValueError as e:
            return back_to("/grievances", error=Refusal("InvalidInput", str(e)))
        except Refusal as e:
            return back_to("/grievances", error=e)
        return back_to("/grievances", message=f"#{grievance_id}")

    @r.get("/dossier.xlsx")
    async def dossier_download(request: Request, source: str | None = None, commune: str | None = None) -> Response:
        """The settlement dossier, after the three-way verification it prints (Finance and auditors)."""
        signed = await who(request)
        client, db = request.app.state.client, request.app.state.sessions
        try:
            built = await dossier.build_verified(
                client, db, settings, signed.user.user_id, source=source or None, commune=commune or None
            )
        except Refusal:
            return page(request, "forbidden.html", signed)
        data = dossier.to_xlsx(built)
        name = f"ho-so-quyet-toan-{built.source or 'tat-ca'}.xlsx"
        return Response(data, media_type=XLSX, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return r


def _refs(text: object) -> list[str]:
    """Document references as an officer types them in one field, separated by ';'."""
    return [e.strip() for e in str(text or "").split(";") if e.strip()]


BULK_STEPS = {Step.VERIFY, Step.APPROVE, Step.COMPLETE_CONSTRUCTION, Step.ACCEPT}


async def _may_attach(request: Request, signed: access.SignedIn, code: str, step: str) -> None:
    """Refuse, before anything is stored, an upload for a household outside the officer's jurisdiction or for
    a step the engine would not accept from this officer now."""
    async with request.app.state.sessions() as s:
        row = await households.visible_one(s, signed.user.jurisdiction, code.strip().upper())
    if row is None:
        raise Refusal("OutsideJurisdiction", f"{code}: not a household of your jurisdiction")
    db = request.app.state.sessions
    state = await household_state(request.app.state.client, row["code"])
    options = await next_actions(db, state, signed.user.actor())
    if step not in {o.step.value for o in options}:
        raise Refusal(
            "AttachmentRefused", f"{code}: {step or 'this step'} is not yours to take now; nothing was attached"
        )


def _summary(name: str, digest: str, items: list) -> dict:
    """What a good list would register: its households by unit, group and support type."""
    units = Counter((h.district or "", h.commune) for h in items)
    return {
        "file_name": name,
        "sha256": digest,
        "rows": len(items),
        "units": sorted(units.items()),
        "groups": sorted(Counter(h.beneficiary_group.value for h in items).items()),
        "supports": sorted(Counter(h.support_type.value for h in items).items()),
        "decisions": sorted({h.decision_ref for h in items}),
        "first": items[:10],
    }


def _held_folder(settings: Settings) -> Path:
    folder = settings.state_dir / "imports"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def _held_name(digest: str, user_id: str) -> str:
    """One officer's upload of one file: another officer uploading the same bytes holds a copy of their own."""
    return f"{digest}.{hashlib.sha256(user_id.encode()).hexdigest()[:16]}"


def _hold(settings: Settings, data: bytes, name: str, user_id: str) -> str:
    """Keep an uploaded list, readable by the web app alone, until it is confirmed (or a day has passed);
    returns its SHA-256, by which the confirmation names it."""
    folder = _held_folder(settings)
    cutoff = time.time() - HELD_FOR
    for old in folder.iterdir():  # lists nobody confirmed: they name people, they do not stay
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
        except FileNotFoundError:  # confirmed (and removed) meanwhile
            pass
    digest = hashlib.sha256(data).hexdigest()
    held = folder / _held_name(digest, user_id)
    meta = json.dumps({"file_name": name, "uploaded_by": user_id, "sha256": digest}, ensure_ascii=False).encode()
    for path, content in ((held, data), (held.with_suffix(held.suffix + ".json"), meta)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
    return digest


def _held(settings: Settings, digest: str, user_id: str) -> tuple[bytes, str]:
    """The list this officer uploaded with this SHA-256, checked against it, and its file name."""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise Refusal("InvalidInput", "sha256: 64 lower-case hexadecimal digits")
    held = _held_folder(settings) / _held_name(digest, user_id)
    try:
        data = held.read_bytes()
        meta = json.loads(held.with_suffix(held.suffix + ".json").read_bytes())
    except (FileNotFoundError, ValueError):
        raise Refusal(
            "UploadMissing",
            "no list of yours with this SHA-256 is waiting (confirmed already, or over a day old): upload it again",
        ) from None
    if hashlib.sha256(data).hexdigest() != digest or meta.get("uploaded_by") != user_id:
        raise Refusal("UploadMissing", "the held list is not the one previewed: upload it again")
    return data, str(meta["file_name"])


def _release(settings: Settings, digest: str, user_id: str) -> None:
    held = _held_folder(settings) / _held_name(digest, user_id)
    held.unlink(missing_ok=True)
    held.with_suffix(held.suffix + ".json").unlink(missing_ok=True)


async def _store(settings: Settings, upload: UploadFile) -> str:
    """Keep an attachment by its SHA-256 and return the evidence reference the audit trail records. The
    folder and the files are the web app's alone (0700 / 0600): evidence names households and their CCCD."""
    data = await upload.read(MAX_ATTACHMENT + 1)
    if len(data) > MAX_ATTACHMENT:
        raise Refusal("AttachmentTooLarge", f"{upload.filename}: larger than {MAX_ATTACHMENT // 2**20} MB")
    digest = hashlib.sha256(data).hexdigest()
    folder = settings.state_dir / "evidence"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # also a folder made before (an image's, a volume's)
    fd = os.open(folder / digest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    name = Path(upload.filename or "file").name[:80]
    return f"{name} sha256:{digest}"
