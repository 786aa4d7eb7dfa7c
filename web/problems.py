"""Errors as RFC 9457 problem details: `type` is the engine's rule name, `detail` its message."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from core import metrics
from core.errors import Refusal

# The HTTP status for each rule the engine (or the sign-in) can answer with; anything else is 409: the
# request was understood and the household's state does not allow it.
STATUS = {
    "NotSignedIn": 401,
    "BadCredentials": 401,
    "Unauthenticated": 401,
    "RoleNotAllowed": 403,
    "OutsideJurisdiction": 403,
    "SegregationOfDuties": 403,
    "UserDisabled": 403,
    "UnknownUser": 403,
    "ActorMismatch": 403,
    "CsrfFailed": 403,
    "ProvinceWideOnly": 403,
    "UnitAbolished": 403,
    "UnknownReorganisation": 404,
    "UnknownHousehold": 404,
    "UnknownStep": 404,
    "UnknownTranche": 404,
    "HistoryMissing": 410,
    "ReplayFailed": 500,
    "EvidenceMissing": 422,
    "ReasonMissing": 422,
    "InvalidInput": 422,
    "UnknownMilestone": 422,
    "TooManyAttempts": 429,
    "PayloadsTooLarge": 413,
    "RequestTooLarge": 413,
    "AttachmentRefused": 403,
}


class Problem(Exception):
    def __init__(self, rule: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.rule, self.detail, self.status = rule, detail, status or STATUS.get(rule, 409)

    @classmethod
    def of(cls, refusal: Refusal) -> Problem:
        return cls(refusal.rule, refusal.message)


def response(p: Problem) -> JSONResponse:
    metrics.refused(p.rule, "web")
    return JSONResponse(
        {"type": p.rule, "title": p.rule, "status": p.status, "detail": p.detail},
        status_code=p.status,
        media_type="application/problem+json",
    )


async def problem_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return response(exc)


async def validation_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return response(Problem("InvalidInput", detail))
