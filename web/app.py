"""The HTTP API (FastAPI; OpenAPI at /docs) on the same engine as the command line.

Every request acts as a signed-in user: a session cookie (pages; unsafe methods also need the session's
CSRF token in `X-CSRF-Token`) or an API token (`Authorization: Bearer …`, machine clients). An action is
the household workflow's Update for that step, sent as that user: the engine's validators decide, and the
API adds no rule of its own. Reads are limited to the user's jurisdiction: an officer of one district
neither sees nor acts on another district's households.

    uvicorn --factory web.app:create_app      # or: python starter.py web
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError

from archive.source import open_archive
from auditor import timeline as timeline_view
from auditor.history import read_trail
from core import metrics
from core.client import connect
from core.errors import Refusal
from core.matching import key_if_present
from core.settings import Settings, get_settings
from core.signing import load_ring
from db import households
from db.engine import Sessions, make_engine, make_sessions
from db.users import User
from finance import callbacks
from models.household import Stage, Step
from models.reorganisation import reorganisation_workflow_id
from operations import access, reform, reports
from operations.actions import UPDATES, household_history, household_state, next_actions, take_step
from web import codec, pages
from web.problems import STATUS, Problem, problem_handler, validation_handler
from web.security import BodyTooLarge, SecurityMiddleware, too_large
from workflows.reorganisation import ReorganisationWorkflow

COOKIE = "xnt_session"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class SignInInput(BaseModel):
    user_id: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class SignInResult(BaseModel):
    user: User
    csrf_token: str


class ReformBody(BaseModel):
    basis: str = "1672/NQ-UBTVQH15"
    policy_version: str = reform.TWO_TIER_VERSION


class HouseholdSummary(BaseModel):
    code: str
    head_of_household: str
    district: str | None  # None: moved to a commune of the two-tier map
    commune: str
    beneficiary_group: str
    support_type: str
    decision_ref: str
    stage: Stage
    stage_since: datetime | None
    reserved: int
    paid: int


class ActionBody(BaseModel):
    evidence: list[str] = Field(default_factory=list, max_length=20)
    reason: str | None = Field(default=None, max_length=2000)
    source: str | None = None
    tranche: int | None = None
    milestone: str | None = None
    # The step's own fields beyond these (a verification's findings, a posting, an objection, a change:
    # models/eligibility.py, models/review.py); the step's input model judges them.
    details: dict[str, Any] | None = Field(default=None, max_length=20)


async def signed_in(request: Request) -> access.SignedIn:
    auth = request.headers.get("authorization", "")
    cookie = request.cookies.get(COOKIE)
    async with request.app.state.sessions() as s, s.begin():
        if auth.lower().startswith("bearer "):
            who = await access.token_user(s, auth[7:].strip())
        elif cookie:
            who = await access.session_user(s, cookie)
            if (
                who
                and request.method not in SAFE_METHODS
                and not secrets.compare_digest(request.headers.get("x-csrf-token", ""), who.csrf_token or "")
            ):
                raise Problem("CsrfFailed", "this form is stale or was not sent by the application's page")
        else:
            who = None
    if who is None:
        raise Problem("NotSignedIn", "sign in first (session cookie or API token)")
    return who


Who = Annotated[access.SignedIn, Depends(signed_in)]


async def refused_page(request: Request, exc: Exception) -> Response:
    """A refusal raised under a page (a stale form, an attachment too large): shown, with its rule."""
    assert isinstance(exc, Refusal)
    metrics.refused(exc.rule, "web")
    words = pages.Words(request.cookies.get("lang", "vi"))
    context = {"t": words, "me": None, "rule": exc.rule, "message": exc.message}
    resp = pages.templates.TemplateResponse(request, "refused.html", context)
    resp.status_code = STATUS.get(exc.rule, 409)
    return resp


def create_app(
    settings: Settings | None = None, *, sessions: Sessions | None = None, client: Client | None = None
) -> FastAPI:
    """The app; `sessions` and `client` are made from the settings unless given (the tests give theirs)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Make what was not given: the database sessions and the Temporal client."""
        engine = None
        if sessions is None:
            engine = make_engine(settings)
            app.state.sessions = make_sessions(engine)
        if client is None:
            app.state.client = await connect(settings, metrics_port=settings.web_metrics_port)
        try:
            yield
        finally:
            if engine is not None:
                await engine.dispose()

    app = FastAPI(title="Xóa nhà tạm — engine API", version="1", lifespan=lifespan)
    # Given ones are usable at once, also where the lifespan does not run (in-process tests).
    if sessions is not None:
        app.state.sessions = sessions
    if client is not None:
        app.state.client = client
    # The web app is a front door: it signs each step of the user it has authenticated (core/signing.py).
    app.state.signer = load_ring(settings)
    app.state.match_key = key_if_present(settings.match_key_path)  # lists imported here are keyed with it
    app.add_exception_handler(Problem, problem_handler)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(pages.SignedOut, lambda request, exc: RedirectResponse("/login", status_code=303))
    app.add_exception_handler(Refusal, refused_page)
    app.add_middleware(SecurityMiddleware, max_body=settings.web_max_request_bytes)
    app.add_exception_handler(BodyTooLarge, lambda request, exc: too_large(exc))
    app.mount("/static", StaticFiles(directory=Path(pages.__file__).parent / "static"), name="static")
    app.include_router(pages.router(settings, COOKIE))
    app.include_router(callbacks.router(settings.callback_secret, lambda request: request.app.state.client))
    app.include_router(codec.router(settings, signed_in, COOKIE))  # /codec: the Temporal Web UI's and CLI's codec
    secure_cookie = settings.web_secure_cookie

    @app.post("/api/session", response_model=SignInResult, tags=["session"])
    async def sign_in(body: SignInInput, request: Request, response: Response) -> SignInResult:
        client_addr = request.client.host if request.client else "?"
        async with request.app.state.sessions() as s, s.begin():
            outcome = await access.sign_in(s, body.user_id, body.password, client_addr, signer=request.app.state.signer)
        if outcome.refusal is not None:
            raise Problem(outcome.refusal.rule, outcome.refusal.message)
        token, who = outcome.token, outcome.who
        assert token is not None and who is not None
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            secure=secure_cookie,
            samesite="strict",
            max_age=int(access.SESSION_TTL.total_seconds()),
            path="/",
        )
        return SignInResult(user=who.user, csrf_token=who.csrf_token or "")

    @app.delete("/api/session", status_code=204, tags=["session"])
    async def sign_out(request: Request, who: Who) -> Response:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            async with request.app.state.sessions() as s, s.begin():
                await access.sign_out(s, cookie)
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/api/me", response_model=User, tags=["session"])
    async def whoami(who: Who) -> User:
        return who.user

    @app.get("/api/households", response_model=list[HouseholdSummary], tags=["households"])
    async def list_households(
        request: Request,
        who: Who,
        stage: Stage | None = None,
        district: str | None = None,
        commune: str | None = None,
        group: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> list[HouseholdSummary]:
        async with request.app.state.sessions() as s:
            rows = await households.visible(
                s,
                who.user.jurisdiction,
                columns=list(HouseholdSummary.model_fields),
                stage=stage and stage.value,
                district=district,
                commune=commune,
                group=group,
                limit=limit,
                offset=offset,
            )
        return [HouseholdSummary(**r) for r in rows]

    @app.get("/api/households/{code}", tags=["households"])
    async def household(code: str, request: Request, who: Who) -> dict:
        summary = await _visible(request, who.user, code)
        db = request.app.state.sessions
        state = await household_state(
            request.app.state.client, summary.code, sessions=db, archive=open_archive(db, settings)
        )
        options = await next_actions(request.app.state.sessions, state, who.user.actor())
        return {
            "household": summary.model_dump(mode="json"),
            "state": state.model_dump(mode="json"),
            "actions": [
                {"step": o.step.value, "tranche": o.tranche, "milestone": o.milestone.value if o.milestone else None}
                for o in options
            ],
        }

    @app.get("/api/households/{code}/timeline", tags=["households", "audit"])
    async def household_timeline(
        code: str,
        request: Request,
        who: Who,
        lang: str = Query("vi", pattern="^(vi|en)$"),
    ) -> dict:
        summary = await _visible(request, who.user, code)
        c: Client = request.app.state.client
        db = request.app.state.sessions
        found = await household_history(c, db, summary.code, open_archive(db, settings))  # Temporal's, or archived
        trail = await read_trail(found.history, c.data_converter)
        return {"household": summary.code, "lines": [vars(line) for line in timeline_view.lines(trail, lang)]}

    @app.post("/api/households/{code}/actions/{step}", tags=["actions"])
    async def act(code: str, step: str, body: ActionBody, request: Request, who: Who) -> dict:
        try:
            chosen = Step(step)
        except ValueError:
            steps = ", ".join(s.value for s in UPDATES)
            raise Problem("UnknownStep", f"no step {step!r}; the steps are: {steps}") from None
        if chosen not in UPDATES:
            raise Problem("UnknownStep", f"{step!r} is recorded from the payment channel, not taken by an officer")
        try:
            result = await take_step(
                request.app.state.client,
                request.app.state.sessions,
                code,
                chosen,
                who.user.user_id,
                signer=request.app.state.signer,
                **body.model_dump(),
            )
        except Refusal as r:
            raise Problem.of(r) from None
        return result.model_dump(mode="json")

    @app.post("/api/reform/apply", tags=["reform"], status_code=202)
    async def reform_apply(body: ReformBody, request: Request, who: Who) -> dict:
        """Start the signed reorganisation of every household in flight (the policy version must be published:
        `reform apply` at the command line does both); follow it at GET /api/reform/{batch_id}."""
        try:
            handle = await reform.start_reorganisation(
                request.app.state.client,
                request.app.state.sessions,
                settings.temporal_task_queue,
                request.app.state.signer,
                who.user.user_id,
                basis=body.basis,
                policy_version=body.policy_version,
            )
        except Refusal as r:
            raise Problem.of(r) from None
        return {"batch_id": handle.id.removeprefix("reorganisation-"), "workflow_id": handle.id}

    @app.get("/api/reform/{batch_id}", tags=["reform"])
    async def reform_progress(batch_id: str, request: Request, who: Who) -> dict:
        """A reorganisation's progress: households moved, skipped (moved or closed before), failed, of all."""
        handle = request.app.state.client.get_workflow_handle(reorganisation_workflow_id(batch_id))
        try:
            return (await handle.query(ReorganisationWorkflow.progress)).model_dump()
        except RPCError:
            raise Problem("UnknownReorganisation", f"no reorganisation batch {batch_id!r}") from None

    @app.get("/api/reports/province", tags=["reports"])
    async def province_report(request: Request, who: Who) -> dict:
        if who.user.district is not None or who.user.commune is not None:
            raise Problem("ProvinceWideOnly", "the province's report is for users whose jurisdiction is the province")
        async with request.app.state.sessions() as s:
            return (await reports.build(s)).as_json()

    async def _visible(request: Request, user: User, code: str) -> HouseholdSummary:
        async with request.app.state.sessions() as s:
            row = await households.visible_one(
                s, user.jurisdiction, code.strip().upper(), columns=list(HouseholdSummary.model_fields)
            )
        if row is None:  # outside the user's jurisdiction reads exactly as not there
            raise Problem("UnknownHousehold", f"no household {code!r} in your jurisdiction")
        return HouseholdSummary(**row)

    return app
